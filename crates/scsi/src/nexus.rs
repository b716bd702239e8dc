//! I_T nexus, task attributes, the request of one command and task management functions.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, OnceLock};

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
/// The ports are shared, not copied: a transport makes one nexus per session (or TCMU
/// device) and every table entry is a clone of it, so the equality test of a lookup is
/// a pointer comparison, not two name comparisons (≈ 150 instructions per command,
/// callgrind in bench/README.md). Nexuses built separately from the same ports are
/// equal all the same.
#[derive(Clone)]
pub struct Nexus(Arc<Ports>);

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Ports {
    initiator: TransportId,
    target: TargetPort,
    // Last, so that the derived comparisons order by the ports; a function of them.
    key: u64,
}

impl PartialEq for Nexus {
    fn eq(&self, other: &Nexus) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.key == other.0.key && self.0 == other.0)
    }
}

impl Eq for Nexus {}

impl PartialOrd for Nexus {
    fn partial_cmp(&self, other: &Nexus) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Nexus {
    fn cmp(&self, other: &Nexus) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// The ports only: the key differs from one process to the next.
impl fmt::Debug for Nexus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nexus")
            .field("initiator", &self.0.initiator)
            .field("target", &self.0.target)
            .finish()
    }
}

impl Hash for Nexus {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.key);
    }
}

impl Nexus {
    /// A nexus from its initiator and target ports.
    pub fn new(initiator: TransportId, target: TargetPort) -> Nexus {
        static SEED: OnceLock<RandomState> = OnceLock::new();
        let key = SEED
            .get_or_init(RandomState::new)
            .hash_one((&initiator, &target));
        Nexus(Arc::new(Ports {
            initiator,
            target,
            key,
        }))
    }

    /// The initiator port (SPC-4 7.6.4), for iSCSI the initiator name plus ISID.
    pub fn initiator(&self) -> &TransportId {
        &self.0.initiator
    }

    /// The target port: relative port identifier, target port group and name.
    pub fn target(&self) -> &TargetPort {
        &self.0.target
    }

    /// The initiator device name (SPC-4 3.1): for iSCSI the initiator name without the
    /// ISID.
    pub fn initiator_name(&self) -> String {
        self.0.initiator.device_name()
    }
}

/// The port names as they always appeared in logs and APTPL files:
/// `"<initiator port> -> <target port>"`, e.g. `"iqn.a,i,0x23d000000001 ->
/// iqn.t,t,0x0001"`.
impl fmt::Display for Nexus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.0.initiator, self.0.target.name)
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

    fn port(name: &str, isid_last: u8, tpgt: u16) -> Nexus {
        Nexus::new(
            TransportId::iscsi_port(name, [0x23, 0xd0, 0, 0, 0, isid_last]),
            TargetPort::new(
                tpgt,
                tpgt,
                TargetPortName::Iscsi {
                    name: "iqn.t".into(),
                    tpgt,
                },
            ),
        )
    }

    /// Equality, order and hash follow the ports, whether or not two nexuses share them.
    #[test]
    fn separately_built_nexuses_compare_by_their_ports() {
        let a = port("iqn.a", 1, 1);
        let same = port("iqn.a", 1, 1);
        let shared = a.clone();
        assert!(Arc::ptr_eq(&a.0, &shared.0) && !Arc::ptr_eq(&a.0, &same.0));
        assert_eq!(a, same);
        assert_eq!(a, shared);
        assert_eq!(a.cmp(&same), std::cmp::Ordering::Equal);
        let state = RandomState::new();
        assert_eq!(state.hash_one(&a), state.hash_one(&same));
        // Another ISID, another initiator name, another target port: all differ, and
        // order by the ports (name, then ISID; then the target port).
        let isid = port("iqn.a", 2, 1);
        let name = port("iqn.b", 1, 1);
        let tpg = port("iqn.a", 1, 2);
        for other in [&isid, &name, &tpg] {
            assert_ne!(&a, other);
            assert_ne!(state.hash_one(&a), state.hash_one(other));
        }
        assert!(a < isid && isid < name && a < tpg);
    }
}
