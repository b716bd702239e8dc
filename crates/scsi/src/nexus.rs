//! I_T nexus, task attributes, the request of one command and task management functions.

use crate::lunmap::LunAccess;

/// An I_T nexus (SAM-5 4.7): the initiator port and target port a command came through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nexus {
    /// Initiator port name, for iSCSI `"<iqn>,i,0x<isid>"` (RFC 7143 13.3 / SPC-4 7.8.6).
    pub initiator_port: String,
    /// Target port name, for iSCSI `"<iqn>,t,0x<tpgt>"`.
    pub target_port: String,
    /// RELATIVE TARGET PORT IDENTIFIER reported in VPD 0x83 (SPC-4 7.8.6.5).
    pub relative_target_port_id: u16,
    /// TARGET PORT GROUP reported in VPD 0x83 and REPORT TARGET PORT GROUPS.
    pub target_port_group: u16,
}

impl Nexus {
    /// A nexus from its port names, with relative target port 1 in target port group 1.
    pub fn new(initiator_port: impl Into<String>, target_port: impl Into<String>) -> Nexus {
        Nexus {
            initiator_port: initiator_port.into(),
            target_port: target_port.into(),
            relative_target_port_id: 1,
            target_port_group: 1,
        }
    }

    /// The initiator device name: the initiator port name without its `,i,0x…` suffix
    /// (iSCSI initiator name).
    pub fn initiator_name(&self) -> &str {
        match self.initiator_port.find(",i,") {
            Some(i) => &self.initiator_port[..i],
            None => &self.initiator_port,
        }
    }
}

/// Task attribute of a command (SAM-5 8.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TaskAttr {
    /// SIMPLE.
    #[default]
    Simple,
    /// ORDERED.
    Ordered,
    /// HEAD OF QUEUE.
    HeadOfQueue,
    /// ACA.
    Aca,
}

/// One command as handed to [`crate::LogicalUnit::execute`].
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The I_T nexus the command arrived on.
    pub nexus: &'a Nexus,
    /// The CDB (its length is what the transport received, possibly padded).
    pub cdb: &'a [u8],
    /// Every data-out byte the initiator sent (parameter list or write data), *not*
    /// truncated to [`crate::LogicalUnit::data_out_len`]: commands that need an exact
    /// amount (COMPARE AND WRITE, WRITE SAME) reject a mismatch, WRITE uses the prefix
    /// it needs and rejects a shortfall with INVALID FIELD IN INFORMATION UNIT. The
    /// transport computes residuals from the expected transfer length.
    pub data_out: &'a [u8],
    /// Task tag (iSCSI ITT), for logging and copy operation tracking.
    pub task_tag: u64,
    /// Task attribute.
    pub task_attr: TaskAttr,
    /// The LUN is mapped write-protected for this initiator (ACL mapped LUN).
    pub write_protected: bool,
    /// Every logical unit this nexus may access (its LUN map), with each mapping's
    /// write protection. Commands that name logical units by identifier (EXTENDED COPY,
    /// SPC-4 6.4) reach only these; a transport passes the same map it looked the
    /// command's LUN up in.
    pub luns: &'a dyn LunAccess,
}

/// Task management functions (SAM-5 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tmf {
    /// ABORT TASK with the given tag.
    AbortTask(u64),
    /// ABORT TASK SET.
    AbortTaskSet,
    /// CLEAR ACA.
    ClearAca,
    /// CLEAR TASK SET.
    ClearTaskSet,
    /// I_T NEXUS RESET.
    ItNexusReset,
    /// LOGICAL UNIT RESET.
    LogicalUnitReset,
    /// Target warm reset (iSCSI TARGET WARM RESET).
    TargetWarmReset,
    /// Target cold reset (iSCSI TARGET COLD RESET).
    TargetColdReset,
    /// QUERY TASK.
    QueryTask(u64),
    /// QUERY TASK SET.
    QueryTaskSet,
    /// QUERY ASYNCHRONOUS EVENT.
    QueryAsyncEvent,
}
