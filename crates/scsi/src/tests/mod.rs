//! Command-level tests: each drives a [`LogicalUnit`] over a RAM backstore through
//! [`LogicalUnit::execute`] and checks status, sense and data against SPC-4 / SBC-4.

use std::sync::Arc;

use rustio_backstore::{Backstore, RamBackstore};

use crate::{
    LogicalUnit, LuConfig, LunAccess, LunMap, Nexus, Request, Response, Sense, SenseKey, Status,
    TaskAttr,
};

mod inquiry;
mod misc;
mod mode;
mod pr;
mod prop;
mod sbc;
mod submit;
mod xcopy;

pub(crate) const BS: u32 = 512;
pub(crate) const BLOCKS: u64 = 2048;

pub(crate) fn nexus(i: u32) -> Nexus {
    // Initiator port "iqn.1994-05.com.redhat:init{i},i,0x23d00000000{i}", target port
    // "iqn.2024-01.io.rustio:tgt,t,0x0001", relative port 1 in group 1.
    nexus_via(i, 1)
}

/// `nexus(i)` through the target port of gateway `port` (its own relative port
/// identifier, target port group and portal group tag, as the gateways of a group have).
pub(crate) fn nexus_via(i: u32, port: u16) -> Nexus {
    let isid = crate::Isid::parse_hex(&format!("23d00000000{i}")).unwrap();
    Nexus::new(
        crate::TransportId::Iscsi {
            name: format!("iqn.1994-05.com.redhat:init{i}"),
            isid: Some(isid),
        },
        crate::TargetPort::new(
            port,
            port,
            crate::TargetPortName::Iscsi {
                name: "iqn.2024-01.io.rustio:tgt".into(),
                tpgt: port,
            },
        ),
    )
}

/// A logical unit plus a default nexus.
pub(crate) struct H {
    pub lu: Arc<LogicalUnit>,
    pub n: Nexus,
    pub wp: bool,
    /// The nexus's LUN map: this unit alone, at LUN 0.
    pub map: LunMap,
}

impl H {
    pub fn new() -> H {
        H::with(LuConfig::new("t", "serial-0001"))
    }

    pub fn with(config: LuConfig) -> H {
        H::with_backstore(
            Arc::new(RamBackstore::new(BLOCKS * u64::from(BS), BS).unwrap()),
            config,
        )
    }

    pub fn with_backstore(b: Arc<dyn Backstore>, config: LuConfig) -> H {
        let lu = LogicalUnit::new(b, config).unwrap();
        let mut map = LunMap::new();
        map.insert(0, lu.clone(), false);
        let h = H {
            lu,
            n: nexus(1),
            wp: false,
            map,
        };
        h.clear_ua(&h.n);
        h
    }

    /// Consumes pending unit attentions of `n` (like an initiator's TUR loop).
    pub fn clear_ua(&self, n: &Nexus) {
        for _ in 0..20 {
            let (r, _) = self.run_as(n, &[0, 0, 0, 0, 0, 0], &[]);
            if r.status == Status::Good {
                return;
            }
        }
        panic!("unit attentions do not clear");
    }

    pub fn run_as(&self, n: &Nexus, cdb: &[u8], data_out: &[u8]) -> (Response, Vec<u8>) {
        self.run_in(n, &self.map, cdb, data_out)
    }

    /// Runs `cdb` from `n` whose LUN map is `luns`.
    pub fn run_in(
        &self,
        n: &Nexus,
        luns: &dyn LunAccess,
        cdb: &[u8],
        data_out: &[u8],
    ) -> (Response, Vec<u8>) {
        let mut data_in = vec![0xee; 3];
        let req = Request {
            nexus: n,
            cdb,
            data_out,
            task_tag: 7,
            task_attr: TaskAttr::Simple,
            write_protected: self.wp,
            luns,
        };
        let r = self.lu.execute(&req, &mut data_in);
        check_well_formed(&r, &data_in);
        (r, data_in)
    }

    pub fn run(&self, cdb: &[u8], data_out: &[u8]) -> (Response, Vec<u8>) {
        self.run_as(&self.n, cdb, data_out)
    }

    /// Runs and expects GOOD; returns data-in.
    pub fn good(&self, cdb: &[u8], data_out: &[u8]) -> Vec<u8> {
        let (r, d) = self.run(cdb, data_out);
        assert_eq!(r, Response::GOOD, "cdb {cdb:02x?}");
        d
    }

    /// Runs and expects CHECK CONDITION; returns the sense.
    pub fn check(&self, cdb: &[u8], data_out: &[u8]) -> Sense {
        check_of(self.run(cdb, data_out).0)
    }
}

pub(crate) fn check_of(r: Response) -> Sense {
    assert_eq!(r.status, Status::CheckCondition, "{r:?}");
    r.sense.unwrap()
}

/// Asserts `s` has the given key / ASC / ASCQ.
#[track_caller]
pub(crate) fn assert_sense(s: Sense, key: SenseKey, asc: u8, ascq: u8) {
    assert_eq!((s.key, s.asc, s.ascq), (key, asc, ascq), "{s}");
}

/// Asserts INVALID FIELD IN CDB pointing at `byte`/`bit`.
#[track_caller]
pub(crate) fn assert_invalid_cdb(s: Sense, byte: u16, bit: Option<u8>) {
    assert_sense(s, SenseKey::IllegalRequest, 0x24, 0x00);
    let fp = s.field_pointer.expect("field pointer");
    assert!(fp.cdb_or_data);
    assert_eq!((fp.byte, fp.bit), (byte, bit), "{s}");
}

/// Invariants of every response: CHECK CONDITION carries well-formed sense data, other
/// statuses carry none, and failed commands return no data.
pub(crate) fn check_well_formed(r: &Response, data_in: &[u8]) {
    match r.status {
        Status::CheckCondition => {
            let s = r.sense.expect("CHECK CONDITION without sense");
            let b = s.to_fixed();
            assert_eq!(b[0] & 0x7f, 0x70);
            assert_eq!(b[7], 10);
            assert_eq!(
                Sense::from_fixed(&b).map(|x| (x.key, x.asc, x.ascq)),
                Some((s.key, s.asc, s.ascq))
            );
            assert!(s.key != SenseKey::NoSense);
            assert!(data_in.is_empty());
        }
        Status::Good | Status::ConditionMet => assert!(r.sense.is_none()),
        _ => {
            assert!(r.sense.is_none());
            assert!(data_in.is_empty());
        }
    }
}

pub(crate) fn cdb10(op: u8, flags: u8, lba: u32, len: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = op;
    c[1] = flags;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&len.to_be_bytes());
    c
}

pub(crate) fn cdb12(op: u8, flags: u8, lba: u32, len: u32) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = op;
    c[1] = flags;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[6..10].copy_from_slice(&len.to_be_bytes());
    c
}

pub(crate) fn cdb16(op: u8, flags: u8, lba: u64, len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[1] = flags;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&len.to_be_bytes());
    c
}

pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
