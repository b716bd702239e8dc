//! The SCSI side of a device: the [`ScsiTarget`] interface the ring processor executes
//! commands through, and its implementation over rustio's SCSI engine
//! ([`rustio_scsi::LogicalUnit`]).
//!
//! TCMU devices are passthrough devices: LIO hands every CDB to userspace except REPORT
//! LUNS and (unless `passthrough` PR/ALUA are enabled) PERSISTENT RESERVE IN/OUT, which
//! the kernel emulates. The kernel does not tell userspace the initiator, so all commands
//! of a device arrive on one fixed I_T nexus.

use std::fmt;
use std::sync::Arc;

use rustio_scsi::{
    DirectIn, LogicalUnit, LuConfig, MappedLun, Nexus, Request, Response, Sense, Status, TaskAttr,
    Tmf,
};

/// Outcome of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiOutcome {
    /// SCSI status byte.
    pub status: u8,
    /// Fixed-format sense data for CHECK CONDITION.
    pub sense: Option<[u8; 18]>,
}

impl ScsiOutcome {
    /// GOOD.
    pub const GOOD: ScsiOutcome = ScsiOutcome {
        status: Status::Good.as_u8(),
        sense: None,
    };

    /// CHECK CONDITION with `sense` in fixed format (the ring carries fixed-format sense,
    /// TCMU_SENSE_BUFFERSIZE = 96 bytes, of which the kernel forwards the first 18).
    pub fn check(sense: Sense) -> ScsiOutcome {
        ScsiOutcome {
            status: Status::CheckCondition.as_u8(),
            sense: Some(sense.to_fixed()),
        }
    }
}

impl From<Response> for ScsiOutcome {
    fn from(r: Response) -> Self {
        ScsiOutcome {
            status: r.status.as_u8(),
            sense: r.sense_bytes(),
        }
    }
}

/// A task management function announced by a TMR ring entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskManagement {
    /// ABORT TASK (SAM-5 7.2).
    AbortTask,
    /// ABORT TASK SET (SAM-5 7.3).
    AbortTaskSet,
    /// CLEAR ACA (SAM-5 7.4).
    ClearAca,
    /// CLEAR TASK SET (SAM-5 7.5).
    ClearTaskSet,
    /// LOGICAL UNIT RESET (SAM-5 7.7).
    LunReset,
    /// TARGET WARM RESET.
    TargetWarmReset,
    /// TARGET COLD RESET.
    TargetColdReset,
    /// The kernel aborted commands because of a PERSISTENT RESERVE OUT with PREEMPT AND
    /// ABORT (not a reset of the logical unit).
    PreemptAndAbort,
    /// A function the kernel could not name.
    Unknown(u8),
}

impl TaskManagement {
    /// From `tcmu_tmr_entry.tmr_type`.
    pub fn from_tmr_type(t: u8) -> TaskManagement {
        use crate::abi::tmr;
        match t {
            tmr::ABORT_TASK => TaskManagement::AbortTask,
            tmr::ABORT_TASK_SET => TaskManagement::AbortTaskSet,
            tmr::CLEAR_ACA => TaskManagement::ClearAca,
            tmr::CLEAR_TASK_SET => TaskManagement::ClearTaskSet,
            tmr::LUN_RESET => TaskManagement::LunReset,
            tmr::TARGET_WARM_RESET => TaskManagement::TargetWarmReset,
            tmr::TARGET_COLD_RESET => TaskManagement::TargetColdReset,
            tmr::LUN_RESET_PRO => TaskManagement::PreemptAndAbort,
            other => TaskManagement::Unknown(other),
        }
    }
}

/// What a device executes commands against.
pub trait ScsiTarget: Send + Sync + fmt::Debug {
    /// Executes `cdb` with `data_out` (the command's data-out buffer, or empty when the
    /// command transfers none), filling `data_in`.
    fn execute(&self, cdb: &[u8], data_out: &[u8], tag: u64, data_in: &mut Vec<u8>) -> ScsiOutcome;

    /// [`Self::execute`], offering `direct` (the command's data-in blocks in the data area)
    /// for a zero-copy READ; [`DirectIn::used`] says whether the data went there. The
    /// default ignores `direct`.
    fn execute_direct(
        &self,
        cdb: &[u8],
        data_out: &[u8],
        tag: u64,
        data_in: &mut Vec<u8>,
        direct: &mut DirectIn<'_, '_>,
    ) -> ScsiOutcome {
        let _ = direct;
        self.execute(cdb, data_out, tag, data_in)
    }

    /// Bytes of data-out `cdb` transfers; `None` when unknown (the caller then passes the
    /// whole buffer).
    fn data_out_len(&self, cdb: &[u8]) -> Option<u32>;

    /// A task management function was performed by the kernel.
    fn task_management(&self, tmf: TaskManagement);

    /// The device size changed (`dev_size` reconfigured): resize the store to `bytes` and
    /// report CAPACITY DATA HAS CHANGED (SBC-4 4.6).
    fn resize(&self, bytes: u64) -> Result<(), rustio_backstore::Error>;

    /// `emulate_write_cache` was reconfigured: set the WCE bit (SBC-4 6.5.5).
    fn set_write_cache(&self, enabled: bool);
}

/// A [`ScsiTarget`] over a rustio [`LogicalUnit`].
pub struct LuTarget {
    lu: Arc<LogicalUnit>,
    nexus: Nexus,
    /// What the synthetic nexus may access: this device's unit only. The kernel gives
    /// one unit per TCMU device, so EXTENDED COPY never reaches another device's unit.
    own: MappedLun,
}

impl fmt::Debug for LuTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LuTarget")
            .field("lu", &self.lu.config().lu_name)
            .finish()
    }
}

impl LuTarget {
    /// Creates the logical unit for device `name` over `backstore`.
    pub fn new(
        name: &str,
        backstore: Arc<dyn rustio_backstore::Backstore>,
        config: LuConfig,
    ) -> Result<LuTarget, rustio_scsi::Error> {
        let lu = LogicalUnit::new(backstore, config)?;
        // The kernel hides the initiator; one synthetic nexus per device.
        let nexus = Nexus::new(
            rustio_scsi::TransportId::Local("tcmu.kernel".into()),
            rustio_scsi::TargetPort::new(
                1,
                1,
                rustio_scsi::TargetPortName::Local(format!("tcmu.{name}")),
            ),
        );
        let own = MappedLun {
            lu: lu.clone(),
            write_protected: false,
        };
        Ok(LuTarget { lu, nexus, own })
    }

    /// The logical unit.
    pub fn logical_unit(&self) -> &Arc<LogicalUnit> {
        &self.lu
    }

    fn request<'r>(&'r self, cdb: &'r [u8], data_out: &'r [u8], tag: u64) -> Request<'r> {
        Request {
            nexus: &self.nexus,
            cdb,
            data_out,
            task_tag: tag,
            task_attr: TaskAttr::Simple,
            write_protected: false,
            luns: &self.own,
        }
    }
}

/// LuConfig identity of TCMU devices: what tcmu-runner reports, so that initiators and
/// udev rules see the same vendor/product.
pub fn lu_config(info: &crate::handler::DeviceInfo) -> LuConfig {
    let serial = info
        .unit_serial
        .clone()
        .filter(|s| !s.is_empty() && s.len() <= 250 && s.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .unwrap_or_else(|| info.name.chars().filter(|c| c.is_ascii_graphic()).collect());
    let serial = if serial.is_empty() {
        "tcmu".to_owned()
    } else {
        serial
    };
    let mut c = LuConfig::new(info.name.clone(), serial)
        .with_identity("LIO-ORG", "TCMU device", "0002")
        .with_write_cache(info.write_cache);
    if info.max_sectors > 0 {
        c = c.with_max_transfer_blocks(info.max_sectors);
        c.optimal_transfer_blocks = c.optimal_transfer_blocks.min(info.max_sectors);
    }
    c
}

impl ScsiTarget for LuTarget {
    fn execute(&self, cdb: &[u8], data_out: &[u8], tag: u64, data_in: &mut Vec<u8>) -> ScsiOutcome {
        self.lu
            .execute(&self.request(cdb, data_out, tag), data_in)
            .into()
    }

    fn execute_direct(
        &self,
        cdb: &[u8],
        data_out: &[u8],
        tag: u64,
        data_in: &mut Vec<u8>,
        direct: &mut DirectIn<'_, '_>,
    ) -> ScsiOutcome {
        let req = self.request(cdb, data_out, tag);
        self.lu.execute_direct(&req, data_in, Some(direct)).into()
    }

    fn data_out_len(&self, cdb: &[u8]) -> Option<u32> {
        self.lu.data_out_len(cdb)
    }

    fn task_management(&self, tmf: TaskManagement) {
        let tmf = match tmf {
            // Per-command aborts are handled by the ring: aborted commands still run.
            TaskManagement::AbortTask => return,
            TaskManagement::AbortTaskSet => Tmf::AbortTaskSet,
            TaskManagement::ClearAca => Tmf::ClearAca,
            TaskManagement::ClearTaskSet => Tmf::ClearTaskSet,
            // Resets are deliberately not applied to the logical unit. For TCMU
            // (passthrough) devices LIO core keeps the unit attention, persistent
            // reservation and SPC-2 reservation state and establishes the reset's unit
            // attention itself (SAM-5 6.3.3). A second one raised here would be reported
            // to the next command we execute — typically one the kernel has just aborted
            // and is waiting for — and tcm_loop completes aborted commands to its
            // initiator as GOOD whatever status we return, so that write would be lost.
            // The VM test `tmr` section reproduces exactly that.
            TaskManagement::LunReset
            | TaskManagement::TargetWarmReset
            | TaskManagement::TargetColdReset => {
                tracing::debug!(?tmf, "reset handled by LIO core for passthrough devices");
                return;
            }
            TaskManagement::PreemptAndAbort | TaskManagement::Unknown(_) => return,
        };
        self.lu.task_management(&self.nexus, tmf);
    }

    fn resize(&self, bytes: u64) -> Result<(), rustio_backstore::Error> {
        self.lu.backstore().resize(bytes)?;
        self.lu.capacity_changed();
        Ok(())
    }

    fn set_write_cache(&self, enabled: bool) {
        self.lu.set_write_cache(enabled, &self.nexus);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::DeviceInfo;
    use rustio_backstore::RamBackstore;

    fn target(write_cache: bool) -> LuTarget {
        let info = DeviceInfo {
            name: "d0".into(),
            size: 1 << 20,
            block_size: 512,
            max_sectors: 128,
            write_cache,
            unit_serial: Some("abc-1".into()),
        };
        LuTarget::new(
            "d0",
            Arc::new(RamBackstore::new(1 << 20, 512).unwrap()),
            lu_config(&info),
        )
        .unwrap()
    }

    fn wce(t: &LuTarget) -> bool {
        let mut d = Vec::new();
        let r = t.execute(&[0x1a, 0x08, 0x08, 0, 0xff, 0], &[], 1, &mut d);
        assert_eq!(r.status, Status::Good.as_u8());
        let start = 4 + usize::from(d[3]);
        d[start + 2] & 0x04 != 0
    }

    #[test]
    fn sense_layout() {
        // The ring's sense is fixed format (SPC-4 4.5.3): response code 70h, key, additional
        // length 10, ASC/ASCQ at 12/13.
        assert_eq!(
            ScsiOutcome::check(Sense::COMMAND_TIMEOUT_DURING_PROCESSING).sense,
            Some([0x70, 0, 0x0b, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x2e, 0x02, 0, 0, 0, 0])
        );
        let hw = ScsiOutcome::check(Sense::INTERNAL_TARGET_FAILURE);
        assert_eq!(hw.status, 0x02);
        assert_eq!(hw.sense.map(|s| (s[2], s[12])), Some((0x04, 0x44)));
    }

    #[test]
    fn identity_and_inquiry() {
        let t = target(true);
        let mut d = Vec::new();
        // Clear the power-on unit attention first.
        t.execute(&[0, 0, 0, 0, 0, 0], &[], 1, &mut d);
        let r = t.execute(&[0x12, 0, 0, 0, 96, 0], &[], 2, &mut d);
        assert_eq!(r, ScsiOutcome::GOOD);
        assert_eq!(&d[8..16], b"LIO-ORG ");
        assert_eq!(&d[16..27], b"TCMU device");
        assert_eq!(&d[32..36], b"0002");
        // Unit serial number VPD page carries the configfs serial.
        let r = t.execute(&[0x12, 1, 0x80, 0, 96, 0], &[], 3, &mut d);
        assert_eq!(r, ScsiOutcome::GOOD);
        assert_eq!(&d[4..9], b"abc-1");
    }

    #[test]
    fn write_cache_reconfiguration() {
        let t = target(true);
        let mut d = Vec::new();
        t.execute(&[0, 0, 0, 0, 0, 0], &[], 1, &mut d);
        assert!(wce(&t));
        t.set_write_cache(false);
        assert!(!wce(&t));
        t.set_write_cache(true);
        assert!(wce(&t));
    }

    #[test]
    fn resize_raises_capacity_changed() {
        let t = target(true);
        let mut d = Vec::new();
        t.execute(&[0, 0, 0, 0, 0, 0], &[], 1, &mut d);
        t.resize(2 << 20).unwrap();
        let r = t.execute(&[0, 0, 0, 0, 0, 0], &[], 2, &mut d);
        assert_eq!(r.status, Status::CheckCondition.as_u8());
        let s = r.sense.unwrap();
        assert_eq!((s[2] & 0x0f, s[12], s[13]), (0x06, 0x2a, 0x09));
        let r = t.execute(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 3, &mut d);
        assert_eq!(r, ScsiOutcome::GOOD);
        assert_eq!(
            u32::from_be_bytes(d[0..4].try_into().unwrap()),
            (2 << 20) / 512 - 1
        );
        assert!(t.resize(1000).is_err());
    }

    /// EXTENDED COPY from one TCMU device reaches its own unit and no other device's
    /// (CVE-2020-28374 class): the CSCD naming another device is COPY ABORTED, COPY
    /// TARGET DEVICE NOT REACHABLE (0Dh/02h) and that device's data stays as it was.
    #[test]
    fn extended_copy_reaches_only_its_own_device() {
        let mk = |name: &str, serial: &str| {
            let c = LuConfig::new(name, serial);
            LuTarget::new(name, Arc::new(RamBackstore::new(1 << 20, 512).unwrap()), c).unwrap()
        };
        let (t1, t2) = (mk("d1", "xc-d1"), mk("d2", "xc-d2"));
        let mut d = Vec::new();
        t1.execute(&[0, 0, 0, 0, 0, 0], &[], 1, &mut d);
        t2.execute(&[0, 0, 0, 0, 0, 0], &[], 1, &mut d);
        let mut w = [0u8; 10];
        w[0] = 0x2a;
        w[8] = 1;
        assert_eq!(t1.execute(&w, &[0x11; 512], 2, &mut d), ScsiOutcome::GOOD);
        assert_eq!(t2.execute(&w, &[0x22; 512], 2, &mut d), ScsiOutcome::GOOD);
        let cscd = |naa: [u8; 16]| {
            let mut c = vec![0xe4, 0, 0, 0, 0x01, 0x03, 0, 16];
            c.extend_from_slice(&naa);
            c.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x02, 0x00]);
            c
        };
        // Segment: CSCD 0 LBA 0 → CSCD 1 LBA 0, one block.
        let mut seg = vec![0x02, 0, 0, 0x18, 0, 0, 0, 1, 0, 0, 0, 1];
        seg.extend_from_slice(&[0; 16]);
        let mut p = vec![0, 0x18, 0, 64, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 0];
        p.extend(cscd(t1.logical_unit().naa_designator()));
        p.extend(cscd(t2.logical_unit().naa_designator()));
        p.extend(&seg);
        let mut x = [0u8; 16];
        x[0] = 0x83;
        x[10..14].copy_from_slice(&(p.len() as u32).to_be_bytes());
        // Sent to device 2: reads device 1.
        let r = t2.execute(&x, &p, 3, &mut d);
        assert_eq!(r.status, Status::CheckCondition.as_u8());
        let s = r.sense.unwrap();
        assert_eq!((s[2] & 0x0f, s[12], s[13]), (0x0a, 0x0d, 0x02));
        let r = t2.execute(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[], 4, &mut d);
        assert_eq!(r, ScsiOutcome::GOOD);
        assert_eq!(d, [0x22; 512]);
        // Sent to device 1: writes device 2.
        let r = t1.execute(&x, &p, 5, &mut d);
        assert_eq!(r.status, Status::CheckCondition.as_u8());
        let r = t2.execute(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[], 6, &mut d);
        assert_eq!(r, ScsiOutcome::GOOD);
        assert_eq!(d, [0x22; 512]);
        // Within its own device the copy works.
        let mut p1 = vec![0, 0x18, 0, 32, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 0];
        p1.extend(cscd(t1.logical_unit().naa_designator()));
        let mut seg1 = seg.clone();
        seg1[7] = 0; // destination CSCD 0
        seg1[27] = 5; // destination LBA 5
        p1.extend(&seg1);
        x[10..14].copy_from_slice(&(p1.len() as u32).to_be_bytes());
        assert_eq!(t1.execute(&x, &p1, 7, &mut d), ScsiOutcome::GOOD);
        let r = t1.execute(&[0x28, 0, 0, 0, 0, 5, 0, 0, 1, 0], &[], 8, &mut d);
        assert_eq!(r, ScsiOutcome::GOOD);
        assert_eq!(d, [0x11; 512]);
    }

    #[test]
    fn tmr_mapping() {
        assert_eq!(TaskManagement::from_tmr_type(5), TaskManagement::LunReset);
        assert_eq!(
            TaskManagement::from_tmr_type(128),
            TaskManagement::PreemptAndAbort
        );
        assert_eq!(
            TaskManagement::from_tmr_type(99),
            TaskManagement::Unknown(99)
        );
        let t = target(true);
        let mut d = Vec::new();
        t.execute(&[0, 0, 0, 0, 0, 0], &[], 1, &mut d);
        // A LUN reset does not raise a unit attention here: LIO core already did, and a
        // second one would hit a command the kernel aborted (see task_management).
        t.task_management(TaskManagement::LunReset);
        let r = t.execute(&[0, 0, 0, 0, 0, 0], &[], 2, &mut d);
        assert_eq!(r, ScsiOutcome::GOOD);
        t.task_management(TaskManagement::ClearTaskSet);
        let r = t.execute(&[0, 0, 0, 0, 0, 0], &[], 3, &mut d);
        assert_eq!(r, ScsiOutcome::GOOD);
    }
}
