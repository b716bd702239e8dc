//! Reservations (stub, replaced below).
use std::path::Path;

use crate::cdb::{Command, PrInAction, PrOutAction};
use crate::lu::{Fail, LogicalUnit, Outcome};
use crate::nexus::{Nexus, Request};
use crate::sense::Sense;
use crate::status::Status;

#[derive(Debug, Default)]
pub(crate) struct PrState {}

pub(crate) enum ReservationCheck {
    Allowed,
    #[allow(dead_code)]
    Conflict,
}

impl PrState {
    pub(crate) fn load(_p: Option<&Path>) -> Result<PrState, crate::Error> {
        Ok(PrState {})
    }
    pub(crate) fn check(&self, _n: &Nexus, _c: &Command) -> ReservationCheck {
        ReservationCheck::Allowed
    }
    pub(crate) fn reserve_in(&self, _n: &Nexus, _a: PrInAction, _o: &mut Vec<u8>) -> Result<(), Fail> {
        Err(Sense::invalid_opcode().into())
    }
    pub(crate) fn reserve_spc2(&self, _n: &Nexus) -> Outcome {
        Ok(Status::Good)
    }
    pub(crate) fn release_spc2(&self, _n: &Nexus) -> Outcome {
        Ok(Status::Good)
    }
    pub(crate) fn reset(&self) {}
    pub(crate) fn nexus_lost(&self, _n: &Nexus) {}
}

impl LogicalUnit {
    pub(crate) fn persistent_reserve_out(&self, _r: &Request<'_>, _a: PrOutAction, _s: u8, _t: u8, _l: u32) -> Outcome {
        Err(Sense::invalid_opcode().into())
    }
}
