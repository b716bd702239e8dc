//! The logical unit: command pipeline and dispatch (SAM-5 5, SPC-4 5.x).
//!
//! For each command [`LogicalUnit::execute`]:
//! 1. notices a capacity change of the backstore (CAPACITY DATA HAS CHANGED, SBC-4 4.6),
//!    and, when another unit of a shared reservation store committed a change, re-reads
//!    the reservation state and raises the unit attentions it logged for this unit's
//!    nexuses (SPC-4 5.13.11, [`crate::ReservationStore`]),
//! 2. reports a pending unit attention unless the command is INQUIRY, REPORT LUNS or
//!    REQUEST SENSE (SAM-5 5.14),
//! 3. parses the CDB ([`crate::cdb`]),
//! 4. checks reservations (SPC-2 RESERVE and SPC-4 5.13 persistent reservations; NOT
//!    READY while the store cannot be read),
//! 5. checks ALUA access in a gateway group ([`crate::alua`]) and write protection,
//!    then executes.
//!
//! Nothing here takes a logical-unit-wide mutex on the READ/WRITE path: unit attention
//! lookup is a read lock on the nexus table plus an atomic, reservations are an atomic
//! fast path (plus an atomic "changed elsewhere" flag, read-only unless set), mode
//! parameters that I/O needs (WCE, SWP) are atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustio_backstore::Backstore;

use crate::cdb::{self, op, Command};
use crate::config::LuConfig;
use crate::direct::DirectIn;
use crate::error::Error;
use crate::mode::ModeState;
use crate::nexus::{Nexus, Request, Tmf};
use crate::pr::{MemoryStore, PrState, ReservationCheck, ReservationStore, STORE_UNAVAILABLE};
use crate::rangelock::RangeLocks;
use crate::sense::Sense;
use crate::status::{Response, Status};
use crate::tpg::TargetPortGroup;
use crate::ua::UaTable;
use crate::xcopy::CopyState;

/// How a command ended when it did not end with GOOD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// CHECK CONDITION with sense data.
    Check(Sense),
    /// Another status without sense data (BUSY, RESERVATION CONFLICT…).
    Status(Status),
}

impl From<Sense> for Fail {
    fn from(s: Sense) -> Fail {
        Fail::Check(s)
    }
}

impl Fail {
    /// Maps a backstore error; transient errors become BUSY so the initiator retries.
    pub(crate) fn backstore(err: &rustio_backstore::Error, writing: bool) -> Fail {
        if err.kind() == rustio_backstore::ErrorKind::Busy {
            Fail::Status(Status::Busy)
        } else {
            Fail::Check(Sense::from_backstore(err, writing))
        }
    }
}

/// Result of executing one command: the success status (GOOD or CONDITION MET).
pub(crate) type Outcome = Result<Status, Fail>;

/// A command past [`LogicalUnit::begin`]: parsed, admitted, ready to run.
pub(crate) struct Begun {
    /// The parsed command.
    pub(crate) cmd: Command,
    /// What it takes of a gateway group's access path (for [`LogicalUnit::finish`]).
    pub(crate) access: crate::alua::AccessTaken,
    /// The group controller whose writer count it holds, if any.
    pub(crate) writer: Option<Arc<crate::alua::GroupAlua>>,
}

/// A SCSI logical unit (direct access block device) backed by a [`Backstore`].
///
/// Shared as `Arc<LogicalUnit>` by every connection that maps it; all methods take
/// `&self` and are thread-safe.
#[derive(Debug)]
pub struct LogicalUnit {
    pub(crate) backstore: Arc<dyn Backstore>,
    pub(crate) config: LuConfig,
    pub(crate) block_size: u32,
    /// The 16-byte NAA-6 designator (VPD 0x83, EXTENDED COPY CSCD descriptors).
    pub(crate) naa: [u8; 16],
    /// Capacity in blocks last reported, to detect changes.
    reported_blocks: AtomicU64,
    pub(crate) ua: UaTable,
    pub(crate) mode: ModeState,
    pub(crate) pr: PrState,
    pub(crate) locks: RangeLocks,
    pub(crate) copies: CopyState,
    /// Gateway-group ALUA (see [`crate::alua`]); unset for a unit with one target.
    pub(crate) group_alua: std::sync::OnceLock<Arc<crate::alua::GroupAlua>>,
    /// The [`crate::alua::GroupAlua::generation`] last reported as a unit attention.
    pub(crate) alua_seen: AtomicU64,
}

/// Derives the NAA-6 IEEE Registered Extended designator (SPC-4 7.8.6.6.5): NAA = 6,
/// the 24-bit IEEE COMPANY_ID, a 36-bit VENDOR SPECIFIC IDENTIFIER and a 64-bit
/// extension, the last two derived from the unit serial number unless configured.
pub(crate) fn naa_designator(config: &LuConfig) -> [u8; 16] {
    // FNV-1a: stable across builds and platforms (the designator must not change when
    // the target restarts, or multipath and clusters lose track of the LU).
    fn fnv(data: &[u8], seed: u64) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
    let serial = config.unit_serial.as_bytes();
    let vsid = fnv(serial, 0) & 0xf_ffff_ffff;
    let ext = config.naa_id.unwrap_or_else(|| fnv(serial, 0x5a5a_5a5a));
    let v: u128 = (6u128 << 124)
        | (u128::from(config.ieee_company_id & 0xff_ffff) << 100)
        | (u128::from(vsid) << 64)
        | u128::from(ext);
    v.to_be_bytes()
}

/// Whether a command is reported with a pending unit attention (SAM-5 5.14: INQUIRY,
/// REPORT LUNS and REQUEST SENSE are not).
fn reports_unit_attention(opcode: u8) -> bool {
    !matches!(opcode, op::INQUIRY | op::REPORT_LUNS | op::REQUEST_SENSE)
}

impl LogicalUnit {
    /// Creates a logical unit over `backstore`. Loads persistent reservations from
    /// `config.aptpl_file` if it exists. There is no process-wide registry of units:
    /// a unit is reachable only through the LUN maps it is inserted in.
    pub fn new(backstore: Arc<dyn Backstore>, config: LuConfig) -> Result<Arc<Self>, Error> {
        let store = MemoryStore::open(config.aptpl_file.as_deref())?;
        Self::with_reservation_store(backstore, config, Arc::new(store))
    }

    /// Creates a logical unit whose reservation state lives in `store` (for instance
    /// one shared by several gateways); `config.aptpl_file` is then not used, the store
    /// decides what persists.
    pub fn with_reservation_store(
        backstore: Arc<dyn Backstore>,
        config: LuConfig,
        store: Arc<dyn ReservationStore>,
    ) -> Result<Arc<Self>, Error> {
        config.validate()?;
        let block_size = backstore.block_size();
        rustio_backstore::validate_block_size(block_size).map_err(|source| Error::Backstore {
            context: "checking the block size",
            source,
        })?;
        let blocks = backstore.capacity() / u64::from(block_size);
        let pr = PrState::new(store);
        let naa = naa_designator(&config);
        Ok(Arc::new(LogicalUnit {
            mode: ModeState::new(&config),
            backstore,
            block_size,
            naa,
            reported_blocks: AtomicU64::new(blocks),
            ua: UaTable::default(),
            pr,
            locks: RangeLocks::default(),
            copies: CopyState::default(),
            group_alua: std::sync::OnceLock::new(),
            alua_seen: AtomicU64::new(0),
            config,
        }))
    }

    /// The configuration this unit was created with.
    pub fn config(&self) -> &LuConfig {
        &self.config
    }

    /// The backstore.
    pub fn backstore(&self) -> &Arc<dyn Backstore> {
        &self.backstore
    }

    /// Logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The 16-byte NAA-6 designator of this unit (VPD page 0x83).
    pub fn naa_designator(&self) -> [u8; 16] {
        self.naa
    }

    /// Capacity in logical blocks, as the backstore reports it now.
    pub(crate) fn capacity_blocks(&self) -> u64 {
        self.backstore.capacity() / u64::from(self.block_size)
    }

    /// Whether writes are refused for this request (SBC-4 4.11: LU read-only, ACL write
    /// protect, SWP in the control mode page, read-only backstore).
    pub(crate) fn write_protected(&self, req: &Request<'_>) -> bool {
        self.write_protected_for(req.write_protected)
    }

    /// [`Self::write_protected`] for a nexus whose mapping of this unit has
    /// `acl_write_protected`.
    pub(crate) fn write_protected_for(&self, acl_write_protected: bool) -> bool {
        acl_write_protected
            || self.config.read_only
            || self.mode.swp()
            || self.backstore.capabilities().read_only
    }

    /// Detects a capacity change and raises CAPACITY DATA HAS CHANGED for every nexus
    /// but `except` (SBC-4 4.6).
    fn check_capacity(&self, except: Option<&Nexus>) {
        let now = self.capacity_blocks();
        let before = self.reported_blocks.load(Ordering::Acquire);
        if now != before
            && self
                .reported_blocks
                .compare_exchange(before, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.ua.raise_all(Sense::UA_CAPACITY_DATA_CHANGED, except);
        }
    }

    /// READ CAPACITY asks the medium for its current size first (a file grown by an
    /// administrator, an image resized elsewhere), so a rescan sees it; the other
    /// nexuses get CAPACITY DATA HAS CHANGED.
    pub(crate) fn refresh_capacity(&self, nexus: &Nexus) {
        if self.backstore.refresh().is_ok() {
            self.check_capacity(Some(nexus));
        }
    }

    /// Expected data-out byte count implied by `cdb`, or `None` if the CDB is invalid.
    pub fn data_out_len(&self, cdb: &[u8]) -> Option<u32> {
        let cmd = cdb::parse(cdb).ok()?;
        u32::try_from(cmd.data_out_len(self.block_size)).ok()
    }

    /// Executes one command. `data_in` is cleared and filled with the data the command
    /// returns (already cut to the CDB's allocation length; the transport truncates to
    /// its expected length and computes residuals).
    pub fn execute(&self, req: &Request<'_>, data_in: &mut Vec<u8>) -> Response {
        self.execute_direct(req, data_in, None)
    }

    /// [`Self::execute`], but a READ transferring exactly `direct.len()` bytes is read
    /// straight into the transport's buffers; [`DirectIn::used`] then says so and
    /// `data_in` stays empty. See [`crate::direct`].
    pub fn execute_direct(
        &self,
        req: &Request<'_>,
        data_in: &mut Vec<u8>,
        mut direct: Option<&mut DirectIn<'_, '_>>,
    ) -> Response {
        data_in.clear();
        if let Some(d) = direct.as_deref_mut() {
            d.reset();
        }
        let resp = self.execute_inner(req, data_in, direct.as_deref_mut());
        if resp.status != Status::Good && resp.status != Status::ConditionMet {
            data_in.clear();
            if let Some(d) = direct {
                d.reset();
            }
        }
        resp
    }

    fn execute_inner(
        &self,
        req: &Request<'_>,
        data_in: &mut Vec<u8>,
        direct: Option<&mut DirectIn<'_, '_>>,
    ) -> Response {
        let begun = match self.begin(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let done = self.dispatch(req, begun.cmd, data_in, direct);
        self.finish(&begun.access, begun.writer, done)
    }

    /// What every command passes before it runs: capacity and reservation/ALUA events,
    /// unit attention (SPC-4 5.14), lookup and parse of the CDB, [`Self::admit`], and in a
    /// gateway group the writer count of a command that modifies the medium. `Err` is the
    /// command's response when it ends here.
    pub(crate) fn begin(&self, req: &Request<'_>) -> Result<Begun, Response> {
        self.check_capacity(None);
        // Before unit attentions are reported: a reservation change made through
        // another unit of a shared store may have left some for this nexus.
        self.raise_reservation_events();
        self.raise_alua_events();
        let opcode = req.cdb.first().copied();
        if opcode.is_some_and(reports_unit_attention) || opcode.is_none() {
            if let Some(ua) = self.ua.take(req.nexus) {
                return Err(Response::check(ua));
            }
        } else {
            self.ua.touch(req.nexus);
        }
        let info = match cdb::lookup(req.cdb) {
            Ok(i) => i,
            // MAINTENANCE OUT exists only for SET TARGET PORT GROUPS of a gateway
            // group: elsewhere the operation code is unsupported as a whole.
            Err(_) if opcode == Some(op::MAINTENANCE_OUT) && self.group_alua().is_none() => {
                return Err(Response::check(Sense::invalid_opcode()))
            }
            Err(s) => return Err(Response::check(s)),
        };
        if !self.op_supported(info) {
            return Err(Response::check(Sense::invalid_opcode()));
        }
        let cmd = cdb::parse_with(info, req.cdb).map_err(Response::check)?;
        if let Err(f) = self.admit(req.nexus, &cmd, req.write_protected) {
            return Err(match f {
                Fail::Check(s) => Response::check(s),
                Fail::Status(s) => Response::status(s),
            });
        }
        let access = crate::alua::AccessTaken {
            needed: crate::alua::needs_access(&cmd),
            modifies: crate::alua::modifies_medium(&cmd),
            moves: self.group_alua().map(|a| a.moves()),
        };
        // In a gateway group, a command that modifies the medium holds off a handover
        // of the token until it is done (see `GroupAlua::begin_write`).
        let writer = match self.group_alua() {
            Some(a) if access.needed && access.modifies => match a.begin_write() {
                Ok(()) => Some(a.clone()),
                Err(s) => return Err(Response::check(s)),
            },
            _ => None,
        };
        Ok(Begun {
            cmd,
            access,
            writer,
        })
    }

    /// The response of a command that [`Self::begin`] let run and that ended with
    /// `done`: the writer count given back, a gateway that lost or handed over
    /// ownership failing the command retryably.
    pub(crate) fn finish(
        &self,
        access: &crate::alua::AccessTaken,
        writer: Option<Arc<crate::alua::GroupAlua>>,
        done: Outcome,
    ) -> Response {
        if let Some(a) = writer {
            a.end_write();
        }
        match done {
            Ok(status) => Response::status(status),
            Err(f) => match (self.alua_access_failed(access, &f), f) {
                (Some(s), _) | (None, Fail::Check(s)) => Response::check(s),
                (None, Fail::Status(s)) => Response::status(s),
            },
        }
    }

    /// Access checks of a command reaching this unit from `nexus` through a mapping with
    /// `acl_write_protected`: reservations (SPC-2 RESERVE, SPC-4 5.13 persistent
    /// reservations) → RESERVATION CONFLICT, then write protection (SBC-4 4.11) → DATA
    /// PROTECT, WRITE PROTECTED. Every command passes here, and EXTENDED COPY passes its
    /// copy targets here as the READ and WRITE they stand for, so a copy gets no access
    /// a direct command would not. In a gateway group, commands that need the medium
    /// are then admitted only on the owning gateway ([`crate::alua`]).
    pub(crate) fn admit(
        &self,
        nexus: &Nexus,
        cmd: &Command,
        acl_write_protected: bool,
    ) -> Result<(), Fail> {
        match self.pr.check(nexus, cmd) {
            ReservationCheck::Allowed => {}
            ReservationCheck::Conflict => return Err(Fail::Status(Status::ReservationConflict)),
            ReservationCheck::Unavailable => return Err(Fail::Check(STORE_UNAVAILABLE)),
        }
        self.alua_admit(cmd)?;
        // EXTENDED COPY is checked per destination (see `extended_copy`).
        if cmd.writes_medium()
            && !matches!(cmd, Command::ExtendedCopy { .. })
            && self.write_protected_for(acl_write_protected)
        {
            return Err(Sense::WRITE_PROTECTED.into());
        }
        Ok(())
    }

    fn dispatch(
        &self,
        req: &Request<'_>,
        cmd: Command,
        data_in: &mut Vec<u8>,
        direct: Option<&mut DirectIn<'_, '_>>,
    ) -> Outcome {
        match cmd {
            Command::TestUnitReady => Ok(Status::Good),
            Command::RequestSense { desc, alloc } => self.request_sense(req, desc, alloc, data_in),
            Command::Inquiry { evpd, page, alloc } => {
                self.inquiry(req, evpd, page, data_in)?;
                data_in.truncate(alloc as usize);
                Ok(Status::Good)
            }
            Command::ModeSense { .. } => self.mode_sense(req, cmd, data_in),
            Command::ModeSelect { ten, pf, sp, len } => self.mode_select(req, ten, pf, sp, len),
            Command::ReadCapacity10 => {
                self.refresh_capacity(req.nexus);
                self.read_capacity10(data_in)
            }
            Command::ReadCapacity16 { alloc } => {
                self.refresh_capacity(req.nexus);
                self.read_capacity16(alloc, data_in)
            }
            Command::Read { lba, blocks, .. } => self.read(req, lba, blocks, data_in, direct),
            Command::Write {
                lba, blocks, fua, ..
            } => self.write(req, lba, blocks, fua),
            Command::WriteAndVerify { lba, blocks, .. } => self.write(req, lba, blocks, true),
            Command::Verify {
                lba,
                blocks,
                bytchk,
                ..
            } => self.verify(req, lba, blocks, bytchk),
            // A gateway-group non-owner: the range is checked, there is nothing to flush
            // (see `alua_nothing_to_flush`).
            Command::SynchronizeCache { lba, blocks, .. } if self.alua_nothing_to_flush() => {
                self.check_lba_range(lba, u64::from(blocks))?;
                Ok(Status::Good)
            }
            Command::SynchronizeCache { lba, blocks, .. } => self.synchronize_cache(lba, blocks),
            Command::PreFetch { lba, blocks, .. } => self.pre_fetch(lba, blocks),
            Command::Unmap { anchor, len } => self.unmap(req, anchor, len),
            Command::WriteSame { .. } => self.write_same(req, cmd),
            Command::CompareAndWrite {
                lba, blocks, fua, ..
            } => self.compare_and_write(req, lba, blocks, fua),
            Command::GetLbaStatus { lba, alloc } => self.get_lba_status(lba, alloc, data_in),
            Command::FormatUnit { fmtdata, longlist } => self.format_unit(req, fmtdata, longlist),
            Command::StartStopUnit {
                power_condition, ..
            } => self.start_stop_unit(power_condition),
            Command::PreventAllowMediumRemoval { .. } => Ok(Status::Good),
            Command::ReportLuns { select, alloc } => {
                crate::lunmap::report_luns_data(select, std::iter::once(0u64), data_in)?;
                data_in.truncate(alloc as usize);
                self.ua
                    .clear(req.nexus, |s| *s == Sense::UA_REPORTED_LUNS_DATA_CHANGED);
                Ok(Status::Good)
            }
            Command::ReportSupportedOpcodes {
                rctd,
                options,
                opcode,
                sa,
                alloc,
            } => {
                self.report_supported_opcodes(rctd, options, opcode, sa, data_in)?;
                data_in.truncate(alloc as usize);
                Ok(Status::Good)
            }
            Command::ReportSupportedTmfs { repd, alloc } => {
                crate::rsoc::report_supported_tmfs(repd, data_in);
                data_in.truncate(alloc as usize);
                Ok(Status::Good)
            }
            Command::ReportTargetPortGroups { extended, alloc } => {
                self.report_target_port_groups(req, extended, data_in);
                data_in.truncate(alloc as usize);
                Ok(Status::Good)
            }
            Command::SetTargetPortGroups { len } => self.set_target_port_groups(req, len),
            Command::PersistentReserveIn { action, alloc } => {
                self.pr.reserve_in(req.nexus, action, data_in)?;
                data_in.truncate(alloc as usize);
                Ok(Status::Good)
            }
            Command::PersistentReserveOut {
                action,
                scope,
                pr_type,
                len,
            } => self.persistent_reserve_out(req, action, scope, pr_type, len),
            Command::Reserve => self.pr.reserve_spc2(req.nexus),
            Command::Release => self.pr.release_spc2(req.nexus),
            Command::ExtendedCopy { len } => self.extended_copy(req, len),
            Command::ReceiveCopyResults { sa, list_id, alloc } => {
                self.receive_copy_results(req, sa, list_id, data_in)?;
                data_in.truncate(alloc as usize);
                Ok(Status::Good)
            }
        }
    }

    /// REQUEST SENSE (SPC-4 6.39): returns and clears a pending unit attention, otherwise
    /// NO SENSE, in fixed format or, with DESC = 1, descriptor format.
    fn request_sense(
        &self,
        req: &Request<'_>,
        desc: bool,
        alloc: u32,
        data_in: &mut Vec<u8>,
    ) -> Outcome {
        let sense = self.ua.take(req.nexus).unwrap_or(Sense::NO_SENSE);
        if desc {
            data_in.extend_from_slice(&sense.to_descriptor());
        } else {
            data_in.extend_from_slice(&sense.to_fixed());
        }
        data_in.truncate(alloc as usize);
        Ok(Status::Good)
    }

    /// START STOP UNIT (SBC-4 5.25): the medium is always ready, so this only validates
    /// the POWER CONDITION field (SBC-4 table 133).
    fn start_stop_unit(&self, power_condition: u8) -> Outcome {
        match power_condition {
            0x0..=0x3 | 0x5 | 0x7 | 0xa | 0xb => Ok(Status::Good),
            _ => Err(Sense::invalid_field_in_cdb(4, Some(7)).into()),
        }
    }

    /// REPORT TARGET PORT GROUPS (SPC-4 6.37): the configured target port groups, or
    /// one preferred active/optimized group containing the port the command came
    /// through (implicit ALUA).
    fn report_target_port_groups(&self, req: &Request<'_>, extended: bool, out: &mut Vec<u8>) {
        let mut desc = Vec::with_capacity(12);
        if let Some(groups) = self.alua_groups() {
            for g in &groups {
                g.descriptor(&mut desc);
            }
        } else if self.config.target_port_groups.is_empty() {
            TargetPortGroup::of_port(req.nexus.target()).descriptor(&mut desc);
        } else {
            for g in &self.config.target_port_groups {
                g.descriptor(&mut desc);
            }
        }
        // RETURN DATA LENGTH: bounded by the group list of the configuration; saturate
        // rather than wrap.
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        if extended {
            out.extend_from_slice(&len(desc.len().saturating_add(4)).to_be_bytes());
            out.push(0x10); // FORMAT TYPE 001b
            out.push(0); // IMPLICIT TRANSITION TIME
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&len(desc.len()).to_be_bytes());
        }
        out.extend_from_slice(&desc);
    }

    /// Task management (SAM-5 7): resets establish unit attentions and drop SPC-2
    /// reservations. Aborts need no work here: commands execute synchronously, so by
    /// the time the transport forwards a TMF no command of this unit is in progress.
    pub fn task_management(&self, nexus: &Nexus, tmf: Tmf) {
        match tmf {
            Tmf::LogicalUnitReset | Tmf::TargetWarmReset | Tmf::TargetColdReset => {
                // SAM-5 6.3.3: LOGICAL UNIT RESET → BUS DEVICE RESET FUNCTION OCCURRED
                // for every I_T nexus; a target reset → POWER ON, RESET… (29h/00h is
                // what initiators expect; cold reset also means power on).
                let sense = match tmf {
                    Tmf::LogicalUnitReset => Sense::UA_BUS_DEVICE_RESET,
                    Tmf::TargetColdReset => Sense::UA_POWER_ON,
                    _ => Sense::UA_POWER_ON_RESET,
                };
                self.ua.touch(nexus);
                self.ua.raise_all(sense, None);
                self.pr.reset(sense);
                if tmf == Tmf::TargetColdReset {
                    // Power on: mode parameters return to their defaults (SPC-4 7.5.1).
                    self.mode.reset();
                }
            }
            Tmf::ItNexusReset => self.nexus_lost(nexus),
            Tmf::ClearTaskSet => {
                // SAM-5 7.4: other nexuses whose tasks were cleared see COMMANDS CLEARED
                // BY ANOTHER INITIATOR when TST = 000b; with synchronous execution no
                // task of another nexus can be pending, so there is nothing to report.
            }
            Tmf::AbortTask(_)
            | Tmf::AbortTaskSet
            | Tmf::ClearAca
            | Tmf::QueryTask(_)
            | Tmf::QueryTaskSet
            | Tmf::QueryAsyncEvent => {}
        }
    }

    /// Re-reads a reservation state another writer changed and raises the unit
    /// attentions its commits logged for this unit's nexuses (SPC-4 5.13.11; see
    /// [`crate::ReservationStore`]). Two atomic loads when nothing changed.
    pub(crate) fn raise_reservation_events(&self) {
        for (r, sense) in self.pr.refresh() {
            match r {
                Some(r) => self.ua.raise_where(sense, |n| r.matches(n)),
                // A reset made through another unit of the store (SAM-5 6.3.3).
                None => self.ua.raise_all(sense, None),
            }
        }
    }

    /// I_T nexus loss (SAM-5 6.3.4): releases an SPC-2 reservation held through the
    /// nexus and establishes I_T NEXUS LOSS OCCURRED for it.
    pub fn nexus_lost(&self, nexus: &Nexus) {
        self.ua.nexus_lost(nexus);
        self.pr.nexus_lost(nexus);
    }

    /// Raises CAPACITY DATA HAS CHANGED for every nexus (call after resizing the
    /// backstore; changes are also noticed on the next command).
    pub fn capacity_changed(&self) {
        self.reported_blocks
            .store(self.capacity_blocks(), Ordering::Release);
        self.ua.raise_all(Sense::UA_CAPACITY_DATA_CHANGED, None);
    }

    /// Raises REPORTED LUNS DATA HAS CHANGED for every nexus (used by [`crate::LunMap`]).
    pub fn luns_changed(&self) {
        self.ua
            .raise_all(Sense::UA_REPORTED_LUNS_DATA_CHANGED, None);
    }
}
