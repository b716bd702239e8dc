//! Fuzzes the SCSI engine: arbitrary CDB + data-out bytes against a small RAM logical
//! unit, from a few I_T nexuses. Every response must be well formed: CHECK CONDITION
//! carries fixed-format sense data, other statuses carry none, failed commands return
//! no data.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rustio_backstore::RamBackstore;
use rustio_scsi::{
    LogicalUnit, LuConfig, LunMap, Nexus, Request, Sense, Status, TargetPort, TargetPortName,
    TaskAttr, TransportId,
};

fn lu() -> &'static Arc<LogicalUnit> {
    static LU: OnceLock<Arc<LogicalUnit>> = OnceLock::new();
    LU.get_or_init(|| {
        let mut c = LuConfig::new("fuzz", "fuzz-serial");
        c.max_transfer_blocks = 128;
        c.max_write_same_blocks = 256;
        c.max_unmap_blocks = 256;
        LogicalUnit::new(Arc::new(RamBackstore::new(1 << 20, 512).expect("ram")), c).expect("lu")
    })
}

/// The nexuses' LUN map: the unit at LUN 0 (EXTENDED COPY reaches only this).
fn map() -> &'static LunMap {
    static MAP: OnceLock<LunMap> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut m = LunMap::new();
        m.insert(0, lu().clone(), false);
        m
    })
}

fuzz_target!(|input: &[u8]| {
    // Layout: [nexus selector, cdb length, cdb..., data-out...].
    let Some((&who, rest)) = input.split_first() else {
        return;
    };
    let Some((&cdb_len, rest)) = rest.split_first() else {
        return;
    };
    let cdb_len = usize::from(cdb_len % 33).min(rest.len());
    let (cdb, data_out) = rest.split_at(cdb_len);
    let nexus = Nexus::new(
        TransportId::iscsi_port(
            format!("iqn.2024-01.fuzz:i{}", who % 4),
            [0, 0, 0, 0, 0, who % 4],
        ),
        TargetPort::new(
            1,
            1,
            TargetPortName::Iscsi {
                name: "iqn.2024-01.fuzz:t".into(),
                tpgt: 1,
            },
        ),
    );
    let req = Request {
        nexus: &nexus,
        cdb,
        data_out,
        task_tag: 1,
        task_attr: TaskAttr::Simple,
        write_protected: who & 0x80 != 0,
        luns: map(),
    };
    let mut data_in = Vec::new();
    let rsp = lu().execute(&req, &mut data_in);
    match rsp.status {
        Status::CheckCondition => {
            let s = rsp.sense.expect("CHECK CONDITION without sense");
            let b = s.to_fixed();
            assert_eq!(b[0] & 0x7f, 0x70);
            let back = Sense::from_fixed(&b).expect("fixed sense parses");
            assert_eq!((back.key, back.asc, back.ascq), (s.key, s.asc, s.ascq));
            assert!(data_in.is_empty());
        }
        Status::Good | Status::ConditionMet => assert!(rsp.sense.is_none()),
        _ => {
            assert!(rsp.sense.is_none());
            assert!(data_in.is_empty());
        }
    }
    let _ = lu().data_out_len(cdb);
});
