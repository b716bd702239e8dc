//! I_T nexus, task attributes, the request of one command and task management functions.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::OnceLock;

use crate::lunmap::LunAccess;
use crate::tpg::TargetPort;
use crate::transport::TransportId;

/// An I_T nexus (SAM-5 4.7): the initiator port and target port a command came through.
/// Both are typed identities; nothing parses port name strings.
///
/// Tables keyed by nexus are looked up on every command (unit attentions), so a nexus
/// carries its hash, computed once with a per-process random key (SipHash, as std's
/// `HashMap`: initiator names are the peer's choice). `Hash` writes that one value;
/// [`crate::KeyHasher`] maps then cost a multiply instead of hashing two port names.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Nexus {
    initiator: TransportId,
    target: TargetPort,
    // Last, so that the derived comparisons order by the ports; a function of them.
    key: u64,
}

/// The ports only: the key differs from one process to the next.
impl fmt::Debug for Nexus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nexus")
            .field("initiator", &self.initiator)
            .field("target", &self.target)
            .finish()
    }
}

impl Hash for Nexus {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.key);
    }
}

impl Nexus {
    /// A nexus from its initiator and target ports.
    pub fn new(initiator: TransportId, target: TargetPort) -> Nexus {
        static SEED: OnceLock<RandomState> = OnceLock::new();
        let key = SEED
            .get_or_init(RandomState::new)
            .hash_one((&initiator, &target));
        Nexus {
            initiator,
            target,
            key,
        }
    }

    /// The initiator port (SPC-4 7.6.4), for iSCSI the initiator name plus ISID.
    pub fn initiator(&self) -> &TransportId {
        &self.initiator
    }

    /// The target port: relative port identifier, target port group and name.
    pub fn target(&self) -> &TargetPort {
        &self.target
    }

    /// The initiator device name (SPC-4 3.1): for iSCSI the initiator name without the
    /// ISID.
    pub fn initiator_name(&self) -> String {
        self.initiator.device_name()
    }
}

/// The port names as they always appeared in logs and APTPL files:
/// `"<initiator port> -> <target port>"`, e.g. `"iqn.a,i,0x23d000000001 ->
/// iqn.t,t,0x0001"`.
impl fmt::Display for Nexus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.initiator, self.target.name)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpg::TargetPortName;

    #[test]
    fn names_come_from_the_types() {
        let n = Nexus::new(
            TransportId::iscsi_port("iqn.a", [0x23, 0xd0, 0, 0, 0, 1]),
            TargetPort::new(
                1,
                1,
                TargetPortName::Iscsi {
                    name: "iqn.t".into(),
                    tpgt: 1,
                },
            ),
        );
        assert_eq!(n.initiator_name(), "iqn.a");
        assert_eq!(n.to_string(), "iqn.a,i,0x23d000000001 -> iqn.t,t,0x0001");
    }
}
