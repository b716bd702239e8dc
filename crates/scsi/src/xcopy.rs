//! EXTENDED COPY (stub).
use std::sync::Arc;

use crate::lu::{Fail, LogicalUnit, Outcome};
use crate::nexus::Request;
use crate::sense::Sense;

#[derive(Debug, Default)]
pub(crate) struct CopyState {}

pub(crate) fn register(_lu: &Arc<LogicalUnit>) {}
pub(crate) fn unregister(_naa: &[u8; 16]) {}

impl LogicalUnit {
    pub(crate) fn extended_copy(&self, _r: &Request<'_>, _l: u32) -> Outcome {
        Err(Sense::invalid_opcode().into())
    }
    pub(crate) fn receive_copy_results(&self, _r: &Request<'_>, _sa: u8, _id: u8, _o: &mut Vec<u8>) -> Result<(), Fail> {
        Err(Sense::invalid_opcode().into())
    }
    pub(crate) fn third_party_copy_vpd(&self, _o: &mut Vec<u8>) {}
}
