//! PERSISTENT RESERVE OUT (SPC-4 6.16, 5.13.5-5.13.11): one function per service
//! action. Each computes the new [`ReservationState`] from a copy; the dispatcher
//! commits it through the store ([`super::PrState::update`]) and then raises the unit
//! attentions the action produced.

use crate::cdb::PrOutAction;
use crate::lu::{Fail, LogicalUnit, Outcome};
use crate::nexus::{Nexus, Request};
use crate::sense::Sense;
use crate::status::Status;
use crate::transport::TransportId;

use super::state::{Registration, Reservation, ReservationState, MAX_REGISTRATIONS};
use super::PrType;

/// Unit attentions to raise after a commit: for the nexuses of a registration.
type Uas = Vec<(Registration, Sense)>;

/// What an action does to the state: `Some(uas)` commits the edited copy, `None` leaves
/// the state alone (the command still ends GOOD).
type Change = Result<Option<Uas>, Fail>;

const CONFLICT: Fail = Fail::Status(Status::ReservationConflict);

/// The 24-byte PERSISTENT RESERVE OUT parameter list (SPC-4 6.16.3).
#[derive(Debug, Clone, Copy)]
struct PrOutParams {
    key: u64,
    sa_key: u64,
    spec_i_pt: bool,
    all_tg_pt: bool,
    aptpl: bool,
}

impl PrOutParams {
    /// Parses the basic parameter list. SPEC_I_PT is not supported, so every list is
    /// exactly 24 bytes; a longer one with SPEC_I_PT set reports the bit.
    fn parse(p: &[u8]) -> Result<PrOutParams, Fail> {
        if p.len() != 24 {
            if p.len() > 24 && p[20] & 0x08 != 0 {
                return Err(Sense::invalid_field_in_param(20, Some(3)).into());
            }
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        Ok(PrOutParams {
            key: be64(&p[0..8]),
            sa_key: be64(&p[8..16]),
            spec_i_pt: p[20] & 0x08 != 0,
            all_tg_pt: p[20] & 0x04 != 0,
            aptpl: p[20] & 0x01 != 0,
        })
    }
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// TYPE and SCOPE matter for RESERVE, RELEASE, PREEMPT (AND ABORT) and REGISTER AND
/// MOVE (SPC-4 6.16.2); only LU_SCOPE exists.
fn reservation_type(action: PrOutAction, scope: u8, pr_type: u8) -> Result<Option<PrType>, Fail> {
    let needs_type = matches!(
        action,
        PrOutAction::Reserve
            | PrOutAction::Release
            | PrOutAction::Preempt
            | PrOutAction::PreemptAndAbort
            | PrOutAction::RegisterAndMove
    );
    if !needs_type {
        return Ok(None);
    }
    if scope != 0 {
        return Err(Sense::invalid_field_in_cdb(2, Some(7)).into());
    }
    PrType::from_u8(pr_type)
        .map(Some)
        .ok_or(Fail::Check(Sense::invalid_field_in_cdb(2, Some(3))))
}

/// The registration of `nexus`, which must carry `key` (every action but the REGISTER
/// kinds, SPC-4 5.13.5-5.13.11).
fn registered_with_key(s: &ReservationState, nexus: &Nexus, key: u64) -> Result<usize, Fail> {
    let i = s.registration(nexus).ok_or(CONFLICT)?;
    if key != s.registrations[i].key {
        return Err(CONFLICT);
    }
    Ok(i)
}

/// APTPL records are space separated: refuse names that would break them.
fn name_is_persistable(n: &Nexus) -> bool {
    let ok = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    ok(&n.initiator().to_string()) && ok(&n.target().name.to_string())
}

/// REGISTER and REGISTER AND IGNORE EXISTING KEY (SPC-4 5.13.7, 5.13.11.2).
fn register(s: &mut ReservationState, nexus: &Nexus, p: &PrOutParams, ignore: bool) -> Change {
    if p.spec_i_pt {
        return Err(Sense::invalid_field_in_param(20, Some(3)).into());
    }
    let mut ua = Uas::new();
    match s.registration(nexus) {
        None => {
            if !ignore && p.key != 0 {
                return Err(CONFLICT);
            }
            if p.sa_key == 0 {
                return Ok(None);
            }
            if s.registrations.len() >= MAX_REGISTRATIONS {
                return Err(Sense::INSUFFICIENT_REGISTRATION_RESOURCES.into());
            }
            if p.aptpl && !name_is_persistable(nexus) {
                return Err(Sense::invalid_field_in_param(20, Some(0)).into());
            }
            if p.all_tg_pt {
                // One registration for the initiator port on all target ports replaces
                // per-port ones.
                while let Some(i) = s
                    .registrations
                    .iter()
                    .position(|r| &r.initiator == nexus.initiator())
                {
                    s.remove_registration(i);
                }
            }
            s.registrations
                .push(Registration::of(nexus, p.sa_key, p.all_tg_pt));
        }
        Some(i) => {
            if !ignore && p.key != s.registrations[i].key {
                return Err(CONFLICT);
            }
            if p.sa_key == 0 {
                unregister(s, i, &mut ua);
            } else {
                s.registrations[i].key = p.sa_key;
            }
        }
    }
    s.aptpl = p.aptpl;
    s.bump();
    Ok(Some(ua))
}

/// Unregistering (SPC-4 5.13.11.2.3): a registrants-only reservation its holder leaves
/// is released, which the other registrants learn through RESERVATIONS RELEASED.
fn unregister(s: &mut ReservationState, i: usize, ua: &mut Uas) {
    let res_before = s.reservation.clone();
    let was_holder = s.is_holder_index(i);
    s.remove_registration(i);
    if let Some(res) = res_before {
        let released = s.reservation.is_none();
        if was_holder
            && released
            && matches!(
                res.pr_type,
                PrType::WriteExclusiveRegistrantsOnly | PrType::ExclusiveAccessRegistrantsOnly
            )
        {
            for r in &s.registrations {
                ua.push((r.clone(), Sense::UA_RESERVATIONS_RELEASED));
            }
        }
    }
}

/// RESERVE (SPC-4 5.13.9): the same holder asking again for the same type is GOOD.
fn reserve(s: &mut ReservationState, nexus: &Nexus, p: &PrOutParams, ty: Option<PrType>) -> Change {
    let i = registered_with_key(s, nexus, p.key)?;
    let ty = ty.ok_or(CONFLICT)?;
    match &s.reservation {
        Some(res) if s.is_holder(nexus) && res.pr_type == ty => Ok(None),
        Some(_) => Err(CONFLICT),
        None => {
            s.reservation = Some(Reservation {
                pr_type: ty,
                holder: i,
            });
            Ok(Some(Uas::new()))
        }
    }
}

/// RELEASE (SPC-4 5.13.10): only the holder releases, with the reservation's type;
/// registrants of registrants-only and all-registrants types get RESERVATIONS RELEASED.
fn release(s: &mut ReservationState, nexus: &Nexus, p: &PrOutParams, ty: Option<PrType>) -> Change {
    let i = registered_with_key(s, nexus, p.key)?;
    let Some(res) = s.reservation.clone() else {
        return Ok(None);
    };
    if !s.is_holder(nexus) {
        return Ok(None);
    }
    if Some(res.pr_type) != ty {
        return Err(Sense::INVALID_RELEASE_OF_PERSISTENT_RESERVATION.into());
    }
    s.reservation = None;
    let mut ua = Uas::new();
    if res.pr_type.registrants_have_access() {
        for (j, r) in s.registrations.iter().enumerate() {
            if j != i {
                ua.push((r.clone(), Sense::UA_RESERVATIONS_RELEASED));
            }
        }
    }
    Ok(Some(ua))
}

/// CLEAR (SPC-4 5.13.11.3): every registration and the reservation go; the others get
/// RESERVATIONS PREEMPTED.
fn clear(s: &mut ReservationState, nexus: &Nexus, p: &PrOutParams) -> Change {
    let i = registered_with_key(s, nexus, p.key)?;
    let ua = s
        .registrations
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(_, r)| (r.clone(), Sense::UA_RESERVATIONS_PREEMPTED))
        .collect();
    s.registrations.clear();
    s.reservation = None;
    s.bump();
    Ok(Some(ua))
}

/// PREEMPT (SPC-4 5.13.11.4).
fn preempt_action(
    s: &mut ReservationState,
    nexus: &Nexus,
    p: &PrOutParams,
    ty: Option<PrType>,
) -> Change {
    let i = registered_with_key(s, nexus, p.key)?;
    let ty = ty.ok_or(CONFLICT)?;
    let mut ua = Uas::new();
    preempt(s, i, p.sa_key, ty, &mut ua)?;
    s.bump();
    Ok(Some(ua))
}

/// PREEMPT AND ABORT (SPC-4 5.13.11.5): PREEMPT plus aborting the preempted nexuses'
/// tasks, of which there are none: commands execute synchronously, so none is in
/// progress by the time this one runs.
fn preempt_and_abort(
    s: &mut ReservationState,
    nexus: &Nexus,
    p: &PrOutParams,
    ty: Option<PrType>,
) -> Change {
    preempt_action(s, nexus, p, ty)
}

impl LogicalUnit {
    /// PERSISTENT RESERVE OUT (SPC-4 6.16, 5.13.5-5.13.11).
    pub(crate) fn persistent_reserve_out(
        &self,
        req: &Request<'_>,
        action: PrOutAction,
        scope: u8,
        pr_type: u8,
        len: u32,
    ) -> Outcome {
        let nexus = req.nexus;
        let ty = reservation_type(action, scope, pr_type)?;
        let p = req
            .data_out
            .get(..len as usize)
            .ok_or(Fail::Check(Sense::PARAMETER_LIST_LENGTH_ERROR))?;
        if action == PrOutAction::RegisterAndMove {
            return self.register_and_move(req, ty, p);
        }
        let params = PrOutParams::parse(p)?;
        if params.aptpl
            && !self.pr.persists()
            && matches!(
                action,
                PrOutAction::Register | PrOutAction::RegisterAndIgnore
            )
        {
            return Err(Sense::invalid_field_in_param(20, Some(0)).into());
        }
        let ua = self.pr.update(|s| {
            if s.spc2.as_ref().is_some_and(|h| h != nexus) {
                return Err(CONFLICT);
            }
            let ua = match action {
                PrOutAction::Register => register(s, nexus, &params, false),
                PrOutAction::RegisterAndIgnore => register(s, nexus, &params, true),
                PrOutAction::Reserve => reserve(s, nexus, &params, ty),
                PrOutAction::Release => release(s, nexus, &params, ty),
                PrOutAction::Clear => clear(s, nexus, &params),
                PrOutAction::Preempt => preempt_action(s, nexus, &params, ty),
                PrOutAction::PreemptAndAbort => preempt_and_abort(s, nexus, &params, ty),
                PrOutAction::RegisterAndMove => Err(Sense::INVALID_FIELD_IN_CDB.into()),
            }?;
            // Logged in the committed state too: the other units of a shared store
            // raise them for their nexuses.
            if let Some(ua) = &ua {
                s.log_events(ua);
            }
            Ok(ua)
        });
        // Attentions of other writers' commits met while retrying, then ours.
        self.raise_reservation_events();
        for (r, sense) in ua?.unwrap_or_default() {
            self.ua.raise_where(sense, |n| r.matches(n) && n != nexus);
        }
        Ok(Status::Good)
    }

    /// REGISTER AND MOVE (SPC-4 5.13.8, parameter list 6.16.4).
    fn register_and_move(&self, req: &Request<'_>, ty: Option<PrType>, p: &[u8]) -> Outcome {
        let nexus = req.nexus;
        if p.len() < 24 {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let key = be64(&p[0..8]);
        let sa_key = be64(&p[8..16]);
        let unreg = p[17] & 0x02 != 0;
        let aptpl = p[17] & 0x01 != 0;
        let rtpi = u16::from_be_bytes([p[18], p[19]]);
        let tid_len = u32::from_be_bytes([p[20], p[21], p[22], p[23]]) as usize;
        if tid_len.checked_add(24).is_none_or(|end| end > p.len()) {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        if aptpl && !self.pr.persists() {
            return Err(Sense::invalid_field_in_param(17, Some(0)).into());
        }
        self.pr.update(|s| {
            let i = registered_with_key(s, nexus, key)?;
            let res = s.reservation.clone().ok_or(CONFLICT)?;
            if res.pr_type.all_registrants() || res.holder != i {
                return Err(CONFLICT);
            }
            if sa_key == 0 {
                return Err(Sense::invalid_field_in_param(8, None).into());
            }
            let (dest_port, _) = TransportId::parse(&p[24..24 + tid_len])
                .map_err(|_| Fail::Check(Sense::invalid_field_in_param(24, None)))?;
            // Find the destination I_T nexus among those that have talked to us through
            // the given relative target port.
            // In a gateway group, the port may be another gateway's: its nexus is named
            // from the group's configuration (it may never have talked to this one).
            let dest = self
                .known_nexus(|n| {
                    n.target().relative_id == rtpi && dest_port.designates(n.initiator())
                })
                .or_else(|| self.group_nexus(&dest_port, rtpi, nexus.target()))
                .ok_or(Fail::Check(Sense::invalid_field_in_param(18, None)))?;
            if &dest == nexus {
                return Err(Sense::invalid_field_in_param(24, None).into());
            }
            let d = match s.registration(&dest) {
                Some(d) => {
                    s.registrations[d].key = sa_key;
                    d
                }
                None => {
                    if s.registrations.len() >= MAX_REGISTRATIONS {
                        return Err(Sense::INSUFFICIENT_REGISTRATION_RESOURCES.into());
                    }
                    s.registrations.push(Registration::of(&dest, sa_key, false));
                    s.registrations.len() - 1
                }
            };
            s.reservation = Some(Reservation {
                pr_type: ty.unwrap_or(res.pr_type),
                holder: d,
            });
            if unreg {
                s.remove_registration(i);
            }
            s.aptpl = aptpl;
            s.bump();
            Ok(Some(()))
        })?;
        Ok(Status::Good)
    }

    /// A nexus that has sent commands to this unit and satisfies `pred`.
    fn known_nexus(&self, pred: impl Fn(&Nexus) -> bool) -> Option<Nexus> {
        self.ua.find(pred)
    }
}

/// PREEMPT semantics (SPC-4 5.13.11.4).
fn preempt(
    new: &mut ReservationState,
    me: usize,
    sa_key: u64,
    ty: PrType,
    ua: &mut Uas,
) -> Result<(), Fail> {
    let my_reg = new.registrations[me].clone();
    let remove_matching =
        |new: &mut ReservationState, pred: &dyn Fn(&Registration) -> bool, ua: &mut Uas| {
            let mut removed = 0;
            let mut j = 0;
            while j < new.registrations.len() {
                let r = &new.registrations[j];
                if *r != my_reg && pred(r) {
                    let r = new.remove_registration(j);
                    ua.push((r, Sense::UA_REGISTRATIONS_PREEMPTED));
                    removed += 1;
                } else {
                    j += 1;
                }
            }
            removed
        };
    match new.reservation.clone() {
        None => {
            if sa_key == 0 {
                return Err(Sense::invalid_field_in_param(8, None).into());
            }
            if !new.registrations.iter().any(|r| r.key == sa_key) {
                return Err(CONFLICT);
            }
            remove_matching(new, &|r| r.key == sa_key, ua);
        }
        Some(res) if res.pr_type.all_registrants() => {
            if sa_key == 0 {
                // Remove every other registration and take the reservation with the new
                // type.
                remove_matching(new, &|_| true, ua);
                let me = new.registration_index(&my_reg).unwrap_or(0);
                new.reservation = Some(Reservation {
                    pr_type: ty,
                    holder: me,
                });
            } else {
                if !new.registrations.iter().any(|r| r.key == sa_key) {
                    return Err(CONFLICT);
                }
                remove_matching(new, &|r| r.key == sa_key, ua);
            }
        }
        Some(res) => {
            let holder_key = new.registrations.get(res.holder).map(|r| r.key);
            if Some(sa_key) == holder_key {
                let old_type = res.pr_type;
                remove_matching(new, &|r| r.key == sa_key, ua);
                let me = new.registration_index(&my_reg).unwrap_or(0);
                new.reservation = Some(Reservation {
                    pr_type: ty,
                    holder: me,
                });
                if old_type != ty {
                    for r in &new.registrations {
                        if *r != my_reg {
                            ua.push((r.clone(), Sense::UA_RESERVATIONS_RELEASED));
                        }
                    }
                }
            } else {
                if sa_key == 0 {
                    return Err(Sense::invalid_field_in_param(8, None).into());
                }
                if !new.registrations.iter().any(|r| r.key == sa_key) {
                    return Err(CONFLICT);
                }
                remove_matching(new, &|r| r.key == sa_key, ua);
            }
        }
    }
    Ok(())
}
