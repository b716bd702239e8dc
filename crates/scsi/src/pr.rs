//! Reservations: SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations (SPC-4 5.13,
//! 6.15, 6.16).
//!
//! State is one `RwLock`; an atomic flag says whether any reservation exists so commands
//! skip the lock entirely in the common case. Persistent reservation changes are applied
//! to a copy, persisted (when APTPL is active) and only then published, so a failed
//! write of the APTPL file leaves the state unchanged.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::cdb::{Command, PrInAction, PrOutAction};
use crate::error::Error;
use crate::lu::{Fail, LogicalUnit, Outcome};
use crate::nexus::{Nexus, Request};
use crate::sense::Sense;
use crate::status::Status;

/// Upper bound of registrations (INSUFFICIENT REGISTRATION RESOURCES beyond).
const MAX_REGISTRATIONS: usize = 1024;

/// Persistent reservation types (SPC-4 6.16.3 table 209).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrType {
    WriteExclusive = 1,
    ExclusiveAccess = 3,
    WriteExclusiveRegistrantsOnly = 5,
    ExclusiveAccessRegistrantsOnly = 6,
    WriteExclusiveAllRegistrants = 7,
    ExclusiveAccessAllRegistrants = 8,
}

impl PrType {
    fn from_u8(v: u8) -> Option<PrType> {
        Some(match v {
            1 => PrType::WriteExclusive,
            3 => PrType::ExclusiveAccess,
            5 => PrType::WriteExclusiveRegistrantsOnly,
            6 => PrType::ExclusiveAccessRegistrantsOnly,
            7 => PrType::WriteExclusiveAllRegistrants,
            8 => PrType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    fn write_exclusive(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusive
                | PrType::WriteExclusiveRegistrantsOnly
                | PrType::WriteExclusiveAllRegistrants
        )
    }

    /// Registrants-only and all-registrants types: registered nexuses get access.
    fn registrants_have_access(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }
}

/// A registered I_T nexus (or, with ALL_TG_PT, an initiator port on every target port).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Registration {
    initiator_port: String,
    /// `None` when registered with ALL_TG_PT = 1.
    target_port: Option<String>,
    relative_target_port_id: u16,
    key: u64,
}

impl Registration {
    fn matches(&self, n: &Nexus) -> bool {
        self.initiator_port == n.initiator_port
            && self
                .target_port
                .as_ref()
                .is_none_or(|t| *t == n.target_port)
    }
}

/// The persistent reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reservation {
    pr_type: PrType,
    /// Index into the registrations of the holder; unused for all-registrants types.
    holder: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PrInner {
    generation: u32,
    registrations: Vec<Registration>,
    reservation: Option<Reservation>,
    aptpl: bool,
    /// SPC-2 RESERVE holder.
    spc2: Option<Nexus>,
}

impl PrInner {
    fn registration(&self, n: &Nexus) -> Option<usize> {
        self.registrations.iter().position(|r| r.matches(n))
    }

    fn is_holder(&self, n: &Nexus) -> bool {
        match &self.reservation {
            None => false,
            Some(res) if res.pr_type.all_registrants() => self.registration(n).is_some(),
            Some(res) => self
                .registrations
                .get(res.holder)
                .is_some_and(|r| r.matches(n)),
        }
    }

    fn is_holder_index(&self, i: usize) -> bool {
        match &self.reservation {
            None => false,
            Some(res) => res.pr_type.all_registrants() || res.holder == i,
        }
    }

    /// Removes registration `i`, keeping the holder index valid.
    fn remove_registration(&mut self, i: usize) -> Registration {
        let r = self.registrations.remove(i);
        if let Some(res) = &mut self.reservation {
            if !res.pr_type.all_registrants() {
                if res.holder == i {
                    self.reservation = None;
                } else if res.holder > i {
                    res.holder -= 1;
                }
            } else if self.registrations.is_empty() {
                self.reservation = None;
            }
        }
        r
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }
}

/// Whether a command may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReservationCheck {
    /// Go ahead.
    Allowed,
    /// RESERVATION CONFLICT.
    Conflict,
}

/// Reservation state of one logical unit.
#[derive(Debug, Default)]
pub(crate) struct PrState {
    inner: RwLock<PrInner>,
    /// Any SPC-2 or persistent reservation exists (fast path for every command).
    active: AtomicBool,
    aptpl_file: Option<PathBuf>,
    /// Serialises PERSISTENT RESERVE OUT (copy, persist, publish).
    out: Mutex<()>,
}

/// How a command relates to reservations (SPC-4 5.13.1 table 66, SBC-4 4.17 table 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Allowed under every reservation.
    Always,
    /// Allowed for registrants, and for everyone under write exclusive types.
    Informational,
    /// Reads the medium.
    Read,
    /// Changes the medium or the logical unit.
    Write,
    /// PERSISTENT RESERVE OUT service action (decided by [`PrState::check`]).
    PrOut(PrOutAction),
}

fn access(cmd: &Command) -> Access {
    match cmd {
        Command::Inquiry { .. }
        | Command::ReportLuns { .. }
        | Command::RequestSense { .. }
        | Command::PersistentReserveIn { .. }
        | Command::ReportTargetPortGroups { .. }
        | Command::ReadCapacity10
        | Command::ReadCapacity16 { .. }
        | Command::TestUnitReady
        | Command::Release
        | Command::Reserve => Access::Always,
        Command::ModeSense { .. }
        | Command::ReportSupportedOpcodes { .. }
        | Command::ReportSupportedTmfs { .. }
        | Command::ReceiveCopyResults { .. } => Access::Informational,
        Command::Read { .. }
        | Command::Verify { .. }
        | Command::PreFetch { .. }
        | Command::GetLbaStatus { .. }
        | Command::SynchronizeCache { .. } => Access::Read,
        Command::PersistentReserveOut { action, .. } => Access::PrOut(*action),
        Command::Write { .. }
        | Command::WriteAndVerify { .. }
        | Command::WriteSame { .. }
        | Command::Unmap { .. }
        | Command::CompareAndWrite { .. }
        | Command::FormatUnit { .. }
        | Command::ModeSelect { .. }
        | Command::StartStopUnit { .. }
        | Command::PreventAllowMediumRemoval { .. }
        | Command::ExtendedCopy { .. } => Access::Write,
    }
}

/// Commands an SPC-2 reservation lets other nexuses through with (SPC-2 5.5.1 and the
/// informational commands multipath stacks poll).
fn spc2_allowed(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Inquiry { .. }
            | Command::ReportLuns { .. }
            | Command::RequestSense { .. }
            | Command::Release
            | Command::PersistentReserveIn { .. }
            | Command::ReportTargetPortGroups { .. }
            | Command::ReportSupportedOpcodes { .. }
            | Command::ReportSupportedTmfs { .. }
    )
}

/// The 24-byte PERSISTENT RESERVE OUT parameter list (SPC-4 6.16.3).
#[derive(Debug, Clone, Copy)]
struct PrOutParams {
    key: u64,
    sa_key: u64,
    spec_i_pt: bool,
    all_tg_pt: bool,
    aptpl: bool,
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Builds an iSCSI TransportID (SPC-4 7.6.4.6) for an initiator port: format 01b (name
/// with ISID) when the port name has the `,i,0x` separator, otherwise format 00b.
fn transport_id(initiator_port: &str) -> Vec<u8> {
    let format: u8 = if initiator_port.contains(",i,0x") {
        1
    } else {
        0
    };
    let mut name = initiator_port.as_bytes().to_vec();
    name.truncate(220);
    name.push(0);
    while name.len() % 4 != 0 || name.len() < 20 {
        name.push(0);
    }
    let mut t = vec![(format << 6) | 0x05, 0];
    t.extend_from_slice(&(name.len() as u16).to_be_bytes());
    t.extend_from_slice(&name);
    t
}

/// Parses an iSCSI TransportID into (initiator name, optional ISID part) and its length.
fn parse_transport_id(b: &[u8]) -> Option<(String, usize)> {
    if b.len() < 4 || b[0] & 0x0f != 0x05 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let body = b.get(4..4 + len)?;
    let end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
    let name = std::str::from_utf8(&body[..end]).ok()?;
    if name.is_empty() {
        return None;
    }
    let name = match b[0] >> 6 {
        0 => name.to_string(),
        // Format 01b: "name,i,0x" + ISID; normalise the separator case.
        1 => {
            let lower = name.to_ascii_lowercase();
            let at = lower.find(",i,0x")?;
            format!("{},i,0x{}", &name[..at], &lower[at + 5..])
        }
        _ => return None,
    };
    Some((name, 4 + len))
}

impl PrState {
    /// Loads persistent reservations saved with APTPL from `path` (missing file: none).
    pub(crate) fn load(path: Option<&Path>) -> Result<PrState, Error> {
        let mut inner = PrInner::default();
        if let Some(p) = path {
            match std::fs::read_to_string(p) {
                Ok(text) => inner = parse_aptpl(p, &text)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Aptpl {
                        path: p.to_path_buf(),
                        source,
                    })
                }
            }
        }
        let active = inner.reservation.is_some();
        Ok(PrState {
            inner: RwLock::new(inner),
            active: AtomicBool::new(active),
            aptpl_file: path.map(Path::to_path_buf),
            out: Mutex::new(()),
        })
    }

    fn publish(&self, new: PrInner) {
        let mut g = self.inner.write();
        *g = new;
        self.active.store(
            g.reservation.is_some() || g.spc2.is_some(),
            Ordering::Release,
        );
    }

    /// Reservation check for a command from `nexus` (SPC-4 5.13.1, SBC-4 4.17).
    pub(crate) fn check(&self, nexus: &Nexus, cmd: &Command) -> ReservationCheck {
        use ReservationCheck::{Allowed, Conflict};
        if !self.active.load(Ordering::Acquire) {
            return Allowed;
        }
        let inner = self.inner.read();
        if let Some(h) = &inner.spc2 {
            if h != nexus && !spc2_allowed(cmd) {
                return Conflict;
            }
        }
        let Some(res) = &inner.reservation else {
            return Allowed;
        };
        let registered = inner.registration(nexus).is_some();
        if inner.is_holder(nexus) {
            return Allowed;
        }
        let ty = res.pr_type;
        let class = match access(cmd) {
            Access::Always => return Allowed,
            Access::Informational => {
                return if registered || ty.write_exclusive() {
                    Allowed
                } else {
                    Conflict
                }
            }
            Access::PrOut(a) => {
                return match a {
                    PrOutAction::Register | PrOutAction::RegisterAndIgnore => Allowed,
                    PrOutAction::Clear
                    | PrOutAction::Preempt
                    | PrOutAction::PreemptAndAbort
                    | PrOutAction::Release
                    | PrOutAction::Reserve
                        if registered =>
                    {
                        Allowed
                    }
                    _ => Conflict,
                }
            }
            c => c,
        };
        let write = class == Access::Write;
        // Registrants of registrants-only / all-registrants types have full access;
        // under write exclusive types everybody may read.
        if (ty.registrants_have_access() && registered) || (ty.write_exclusive() && !write) {
            Allowed
        } else {
            Conflict
        }
    }

    /// SPC-2 RESERVE(6)/(10) (SPC-2 7.21; SPC-4 5.13.3 for the interaction with
    /// persistent reservations).
    pub(crate) fn reserve_spc2(&self, nexus: &Nexus) -> Outcome {
        let _g = self.out.lock();
        let mut new = self.inner.read().clone();
        if new.reservation.is_some() || !new.registrations.is_empty() {
            return Err(Fail::Status(Status::ReservationConflict));
        }
        match &new.spc2 {
            Some(h) if h != nexus => return Err(Fail::Status(Status::ReservationConflict)),
            _ => new.spc2 = Some(nexus.clone()),
        }
        self.publish(new);
        Ok(Status::Good)
    }

    /// SPC-2 RELEASE(6)/(10): releases our own reservation; anything else is a no-op.
    pub(crate) fn release_spc2(&self, nexus: &Nexus) -> Outcome {
        let _g = self.out.lock();
        let mut new = self.inner.read().clone();
        if new.spc2.as_ref() == Some(nexus) {
            new.spc2 = None;
            self.publish(new);
        }
        Ok(Status::Good)
    }

    /// Logical unit or target reset: SPC-2 reservations are released, persistent ones
    /// are not (SAM-5 6.3.3, SPC-4 5.13.1).
    pub(crate) fn reset(&self) {
        let _g = self.out.lock();
        let mut new = self.inner.read().clone();
        if new.spc2.take().is_some() {
            self.publish(new);
        }
    }

    /// I_T nexus loss releases an SPC-2 reservation held through it.
    pub(crate) fn nexus_lost(&self, nexus: &Nexus) {
        let _g = self.out.lock();
        let mut new = self.inner.read().clone();
        if new.spc2.as_ref() == Some(nexus) {
            new.spc2 = None;
            self.publish(new);
        }
    }

    /// PERSISTENT RESERVE IN (SPC-4 6.15).
    pub(crate) fn reserve_in(
        &self,
        _nexus: &Nexus,
        action: PrInAction,
        out: &mut Vec<u8>,
    ) -> Result<(), Fail> {
        let inner = self.inner.read();
        match action {
            PrInAction::ReadKeys => {
                out.extend_from_slice(&inner.generation.to_be_bytes());
                let len = inner.registrations.len() * 8;
                out.extend_from_slice(&(len as u32).to_be_bytes());
                for r in &inner.registrations {
                    out.extend_from_slice(&r.key.to_be_bytes());
                }
            }
            PrInAction::ReadReservation => {
                out.extend_from_slice(&inner.generation.to_be_bytes());
                match &inner.reservation {
                    None => out.extend_from_slice(&0u32.to_be_bytes()),
                    Some(res) => {
                        out.extend_from_slice(&16u32.to_be_bytes());
                        // All-registrants reservations report key 0 (SPC-4 6.15.3.3).
                        let key = if res.pr_type.all_registrants() {
                            0
                        } else {
                            inner.registrations.get(res.holder).map_or(0, |r| r.key)
                        };
                        out.extend_from_slice(&key.to_be_bytes());
                        out.extend_from_slice(&[0; 4]);
                        out.push(0);
                        out.push(res.pr_type as u8); // SCOPE 0h: LU_SCOPE
                        out.extend_from_slice(&[0; 2]);
                    }
                }
            }
            PrInAction::ReportCapabilities => {
                out.extend_from_slice(&8u16.to_be_bytes());
                // CRH = 1, SIP_C = 0, ATP_C = 1, PTPL_C when we can persist.
                let mut b2 = 0x10 | 0x04;
                if self.aptpl_file.is_some() {
                    b2 |= 0x01;
                }
                out.push(b2);
                // TMV = 1, ALLOW COMMANDS = 001b, PTPL_A.
                out.push(0x80 | 0x10 | u8::from(inner.aptpl));
                // PERSISTENT RESERVATION TYPE MASK: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC,
                // WR_EX; EX_AC_AR.
                out.push(0x80 | 0x40 | 0x20 | 0x08 | 0x02);
                out.push(0x01);
                out.extend_from_slice(&[0; 2]);
            }
            PrInAction::ReadFullStatus => {
                out.extend_from_slice(&inner.generation.to_be_bytes());
                out.extend_from_slice(&[0; 4]);
                for (i, r) in inner.registrations.iter().enumerate() {
                    out.extend_from_slice(&r.key.to_be_bytes());
                    out.extend_from_slice(&[0; 4]);
                    let holder = inner.is_holder_index(i);
                    out.push(u8::from(r.target_port.is_none()) << 1 | u8::from(holder));
                    out.push(if holder {
                        inner.reservation.as_ref().map_or(0, |x| x.pr_type as u8)
                    } else {
                        0
                    });
                    out.extend_from_slice(&[0; 4]);
                    out.extend_from_slice(&r.relative_target_port_id.to_be_bytes());
                    let tid = transport_id(&r.initiator_port);
                    out.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                    out.extend_from_slice(&tid);
                }
                let len = (out.len() - 8) as u32;
                out[4..8].copy_from_slice(&len.to_be_bytes());
            }
        }
        Ok(())
    }

    fn persist(&self, new: &PrInner) -> Result<(), Fail> {
        let Some(path) = &self.aptpl_file else {
            return Ok(());
        };
        let res = if new.aptpl {
            write_atomic(path, &format_aptpl(new))
        } else {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        };
        // SPC-4 6.16.1: when the state cannot be made persistent, report it rather than
        // pretending.
        res.map_err(|_| Fail::Check(Sense::INSUFFICIENT_REGISTRATION_RESOURCES))
    }
}

/// Writes `data` to `path` atomically: temporary file in the same directory, fsync,
/// rename, fsync of the directory.
fn write_atomic(path: &Path, data: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// APTPL file format, one record per line:
/// `rustio-pr 1`, `generation <n>`, `reg <key-hex> <rtpi> <initiator> <target|*>`,
/// `res <type> <holder-index>`. Port names never contain spaces (iSCSI names, RFC 7143
/// 4.2.7.1), which [`LogicalUnit::persistent_reserve_out`] enforces when APTPL is on.
fn format_aptpl(p: &PrInner) -> String {
    let mut s = String::from("rustio-pr 1\n");
    let _ = writeln!(s, "generation {}", p.generation);
    for r in &p.registrations {
        let _ = writeln!(
            s,
            "reg {:016x} {} {} {}",
            r.key,
            r.relative_target_port_id,
            r.initiator_port,
            r.target_port.as_deref().unwrap_or("*")
        );
    }
    if let Some(res) = &p.reservation {
        let _ = writeln!(s, "res {} {}", res.pr_type as u8, res.holder);
    }
    s
}

fn parse_aptpl(path: &Path, text: &str) -> Result<PrInner, Error> {
    let bad = |line: usize, reason: &str| Error::AptplCorrupt {
        path: path.to_path_buf(),
        line,
        reason: reason.to_string(),
    };
    let mut p = PrInner {
        aptpl: true,
        ..PrInner::default()
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, "rustio-pr 1")) => {}
        _ => return Err(bad(1, "missing 'rustio-pr 1' header")),
    }
    for (i, line) in lines {
        let n = i + 1;
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            [""] => {}
            ["generation", g] => {
                p.generation = g.parse().map_err(|_| bad(n, "bad generation"))?;
            }
            ["reg", key, rtpi, ini, tgt] => {
                if p.registrations.len() >= MAX_REGISTRATIONS {
                    return Err(bad(n, "too many registrations"));
                }
                p.registrations.push(Registration {
                    key: u64::from_str_radix(key, 16).map_err(|_| bad(n, "bad key"))?,
                    relative_target_port_id: rtpi.parse().map_err(|_| bad(n, "bad port id"))?,
                    initiator_port: (*ini).to_string(),
                    target_port: (*tgt != "*").then(|| (*tgt).to_string()),
                });
            }
            ["res", ty, holder] => {
                let pr_type = ty
                    .parse::<u8>()
                    .ok()
                    .and_then(PrType::from_u8)
                    .ok_or_else(|| bad(n, "bad reservation type"))?;
                let holder: usize = holder.parse().map_err(|_| bad(n, "bad holder"))?;
                if holder >= p.registrations.len() {
                    return Err(bad(n, "holder is not a registration"));
                }
                p.reservation = Some(Reservation { pr_type, holder });
            }
            _ => return Err(bad(n, "unknown record")),
        }
    }
    Ok(p)
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
        let state = &self.pr;
        // Type and scope matter for RESERVE, RELEASE, PREEMPT(AND ABORT) and REGISTER
        // AND MOVE (SPC-4 6.16.2).
        let needs_type = matches!(
            action,
            PrOutAction::Reserve
                | PrOutAction::Release
                | PrOutAction::Preempt
                | PrOutAction::PreemptAndAbort
                | PrOutAction::RegisterAndMove
        );
        let ty = if needs_type {
            if scope != 0 {
                return Err(Sense::invalid_field_in_cdb(2, Some(7)).into());
            }
            Some(
                PrType::from_u8(pr_type)
                    .ok_or(Fail::Check(Sense::invalid_field_in_cdb(2, Some(3))))?,
            )
        } else {
            None
        };
        let len = len as usize;
        let p = req
            .data_out
            .get(..len)
            .ok_or(Fail::Check(Sense::PARAMETER_LIST_LENGTH_ERROR))?;
        if action == PrOutAction::RegisterAndMove {
            return self.register_and_move(req, ty, p);
        }
        if len != 24 {
            // SPEC_I_PT is not supported, so every other list is exactly 24 bytes.
            if len > 24 && p[20] & 0x08 != 0 {
                return Err(Sense::invalid_field_in_param(20, Some(3)).into());
            }
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let params = PrOutParams {
            key: be64(&p[0..8]),
            sa_key: be64(&p[8..16]),
            spec_i_pt: p[20] & 0x08 != 0,
            all_tg_pt: p[20] & 0x04 != 0,
            aptpl: p[20] & 0x01 != 0,
        };
        if params.aptpl
            && state.aptpl_file.is_none()
            && matches!(
                action,
                PrOutAction::Register | PrOutAction::RegisterAndIgnore
            )
        {
            return Err(Sense::invalid_field_in_param(20, Some(0)).into());
        }
        let _g = state.out.lock();
        let mut new = state.inner.read().clone();
        if new.spc2.as_ref().is_some_and(|h| h != nexus) {
            return Err(Fail::Status(Status::ReservationConflict));
        }
        let me = new.registration(nexus);
        // Every action but the REGISTER kinds needs a registered nexus with the right
        // key (SPC-4 5.13.5-5.13.11).
        let conflict = Fail::Status(Status::ReservationConflict);
        let mut ua: Vec<(Registration, Sense)> = Vec::new();
        match action {
            PrOutAction::Register | PrOutAction::RegisterAndIgnore => {
                let ignore = action == PrOutAction::RegisterAndIgnore;
                if params.spec_i_pt {
                    return Err(Sense::invalid_field_in_param(20, Some(3)).into());
                }
                match me {
                    None => {
                        if !ignore && params.key != 0 {
                            return Err(conflict);
                        }
                        if params.sa_key == 0 {
                            return Ok(Status::Good);
                        }
                        if new.registrations.len() >= MAX_REGISTRATIONS {
                            return Err(Sense::INSUFFICIENT_REGISTRATION_RESOURCES.into());
                        }
                        if params.aptpl && !name_is_persistable(nexus) {
                            return Err(Sense::invalid_field_in_param(20, Some(0)).into());
                        }
                        if params.all_tg_pt {
                            // One registration for the initiator port on all target
                            // ports replaces per-port ones.
                            while let Some(i) = new
                                .registrations
                                .iter()
                                .position(|r| r.initiator_port == nexus.initiator_port)
                            {
                                new.remove_registration(i);
                            }
                        }
                        new.registrations.push(Registration {
                            initiator_port: nexus.initiator_port.clone(),
                            target_port: (!params.all_tg_pt).then(|| nexus.target_port.clone()),
                            relative_target_port_id: nexus.relative_target_port_id,
                            key: params.sa_key,
                        });
                    }
                    Some(i) => {
                        if !ignore && params.key != new.registrations[i].key {
                            return Err(conflict);
                        }
                        if params.sa_key == 0 {
                            // Unregister (SPC-4 5.13.11.2.3).
                            let res_before = new.reservation.clone();
                            let was_holder = new.is_holder_index(i);
                            new.remove_registration(i);
                            if let Some(res) = res_before {
                                let released = new.reservation.is_none();
                                if was_holder
                                    && released
                                    && matches!(
                                        res.pr_type,
                                        PrType::WriteExclusiveRegistrantsOnly
                                            | PrType::ExclusiveAccessRegistrantsOnly
                                    )
                                {
                                    for r in &new.registrations {
                                        ua.push((r.clone(), Sense::UA_RESERVATIONS_RELEASED));
                                    }
                                }
                            }
                        } else {
                            new.registrations[i].key = params.sa_key;
                        }
                    }
                }
                new.aptpl = params.aptpl;
                new.bump();
            }
            PrOutAction::Reserve => {
                let i = me.ok_or(conflict)?;
                if params.key != new.registrations[i].key {
                    return Err(conflict);
                }
                let ty = ty.ok_or(conflict)?;
                match &new.reservation {
                    Some(res) => {
                        if new.is_holder(nexus) && res.pr_type == ty {
                            return Ok(Status::Good);
                        }
                        return Err(conflict);
                    }
                    None => {
                        new.reservation = Some(Reservation {
                            pr_type: ty,
                            holder: i,
                        })
                    }
                }
            }
            PrOutAction::Release => {
                let i = me.ok_or(conflict)?;
                if params.key != new.registrations[i].key {
                    return Err(conflict);
                }
                let Some(res) = new.reservation.clone() else {
                    return Ok(Status::Good);
                };
                if !new.is_holder(nexus) {
                    return Ok(Status::Good);
                }
                if Some(res.pr_type) != ty {
                    return Err(Sense::INVALID_RELEASE_OF_PERSISTENT_RESERVATION.into());
                }
                new.reservation = None;
                if res.pr_type.registrants_have_access() {
                    for (j, r) in new.registrations.iter().enumerate() {
                        if j != i {
                            ua.push((r.clone(), Sense::UA_RESERVATIONS_RELEASED));
                        }
                    }
                }
            }
            PrOutAction::Clear => {
                let i = me.ok_or(conflict)?;
                if params.key != new.registrations[i].key {
                    return Err(conflict);
                }
                for (j, r) in new.registrations.iter().enumerate() {
                    if j != i {
                        ua.push((r.clone(), Sense::UA_RESERVATIONS_PREEMPTED));
                    }
                }
                new.registrations.clear();
                new.reservation = None;
                new.bump();
            }
            PrOutAction::Preempt | PrOutAction::PreemptAndAbort => {
                let i = me.ok_or(conflict)?;
                if params.key != new.registrations[i].key {
                    return Err(conflict);
                }
                let ty = ty.ok_or(conflict)?;
                preempt(&mut new, i, params.sa_key, ty, &mut ua)?;
                new.bump();
            }
            PrOutAction::RegisterAndMove => return Err(Sense::INVALID_FIELD_IN_CDB.into()),
        }
        state.persist(&new)?;
        state.publish(new);
        for (r, sense) in ua {
            self.ua.raise_where(sense, |n| r.matches(n) && n != nexus);
        }
        Ok(Status::Good)
    }

    /// REGISTER AND MOVE (SPC-4 5.13.8).
    fn register_and_move(&self, req: &Request<'_>, ty: Option<PrType>, p: &[u8]) -> Outcome {
        let nexus = req.nexus;
        let state = &self.pr;
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
        if aptpl && state.aptpl_file.is_none() {
            return Err(Sense::invalid_field_in_param(17, Some(0)).into());
        }
        let conflict = Fail::Status(Status::ReservationConflict);
        let _g = state.out.lock();
        let mut new = state.inner.read().clone();
        let i = new.registration(nexus).ok_or(conflict)?;
        if key != new.registrations[i].key {
            return Err(conflict);
        }
        let res = new.reservation.clone().ok_or(conflict)?;
        if res.pr_type.all_registrants() || res.holder != i {
            return Err(conflict);
        }
        if sa_key == 0 {
            return Err(Sense::invalid_field_in_param(8, None).into());
        }
        let (dest_port, _) = parse_transport_id(&p[24..24 + tid_len])
            .ok_or(Fail::Check(Sense::invalid_field_in_param(24, None)))?;
        // Find the destination I_T nexus among those that have talked to us through the
        // given relative target port.
        let dest = self
            .known_nexus(|n| {
                n.relative_target_port_id == rtpi
                    && (n.initiator_port == dest_port || n.initiator_name() == dest_port)
            })
            .ok_or(Fail::Check(Sense::invalid_field_in_param(18, None)))?;
        if &dest == nexus {
            return Err(Sense::invalid_field_in_param(24, None).into());
        }
        let d = match new.registration(&dest) {
            Some(d) => {
                new.registrations[d].key = sa_key;
                d
            }
            None => {
                if new.registrations.len() >= MAX_REGISTRATIONS {
                    return Err(Sense::INSUFFICIENT_REGISTRATION_RESOURCES.into());
                }
                new.registrations.push(Registration {
                    initiator_port: dest.initiator_port.clone(),
                    target_port: Some(dest.target_port.clone()),
                    relative_target_port_id: dest.relative_target_port_id,
                    key: sa_key,
                });
                new.registrations.len() - 1
            }
        };
        new.reservation = Some(Reservation {
            pr_type: ty.unwrap_or(res.pr_type),
            holder: d,
        });
        if unreg {
            new.remove_registration(i);
        }
        new.aptpl = aptpl;
        new.bump();
        state.persist(&new)?;
        state.publish(new);
        Ok(Status::Good)
    }
}

/// PREEMPT semantics (SPC-4 5.13.11.4).
fn preempt(
    new: &mut PrInner,
    me: usize,
    sa_key: u64,
    ty: PrType,
    ua: &mut Vec<(Registration, Sense)>,
) -> Result<(), Fail> {
    let conflict = Fail::Status(Status::ReservationConflict);
    let my_reg = new.registrations[me].clone();
    let remove_matching = |new: &mut PrInner,
                           pred: &dyn Fn(&Registration) -> bool,
                           ua: &mut Vec<(Registration, Sense)>| {
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
                return Err(conflict);
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
                    return Err(conflict);
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
                    return Err(conflict);
                }
                remove_matching(new, &|r| r.key == sa_key, ua);
            }
        }
    }
    Ok(())
}

impl PrInner {
    fn registration_index(&self, r: &Registration) -> Option<usize> {
        self.registrations.iter().position(|x| x == r)
    }
}

/// APTPL records are space separated: refuse names that would break them.
fn name_is_persistable(n: &Nexus) -> bool {
    let ok = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    ok(&n.initiator_port) && ok(&n.target_port)
}

impl LogicalUnit {
    /// A nexus that has sent commands to this unit and satisfies `pred`.
    fn known_nexus(&self, pred: impl Fn(&Nexus) -> bool) -> Option<Nexus> {
        self.ua.find(pred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_id_format_01() {
        let t = transport_id("iqn.x,i,0x1234");
        assert_eq!(t[0], 0x45);
        assert_eq!(usize::from(u16::from_be_bytes([t[2], t[3]])), t.len() - 4);
        assert_eq!((t.len() - 4) % 4, 0);
        assert_eq!(&t[4..18], b"iqn.x,i,0x1234");
        assert_eq!(
            parse_transport_id(&t),
            Some(("iqn.x,i,0x1234".to_string(), t.len()))
        );
        let t = transport_id("iqn.y");
        assert_eq!(t[0], 0x05);
        assert_eq!(parse_transport_id(&t).unwrap().0, "iqn.y");
    }

    #[test]
    fn aptpl_round_trip() {
        let p = PrInner {
            generation: 7,
            registrations: vec![
                Registration {
                    initiator_port: "iqn.a,i,0x1".into(),
                    target_port: Some("iqn.t,t,0x1".into()),
                    relative_target_port_id: 1,
                    key: 0xabc,
                },
                Registration {
                    initiator_port: "iqn.b,i,0x2".into(),
                    target_port: None,
                    relative_target_port_id: 2,
                    key: 0xdef,
                },
            ],
            reservation: Some(Reservation {
                pr_type: PrType::ExclusiveAccessRegistrantsOnly,
                holder: 1,
            }),
            aptpl: true,
            spc2: None,
        };
        let text = format_aptpl(&p);
        assert_eq!(parse_aptpl(Path::new("x"), &text).unwrap(), p);
    }

    #[test]
    fn aptpl_rejects_garbage() {
        assert!(parse_aptpl(Path::new("x"), "nope").is_err());
        assert!(parse_aptpl(Path::new("x"), "rustio-pr 1\nres 3 0\n").is_err());
        assert!(parse_aptpl(Path::new("x"), "rustio-pr 1\nreg zz 1 a b\n").is_err());
        assert!(parse_aptpl(Path::new("x"), "rustio-pr 1\nres 2 0\n").is_err());
    }
}
