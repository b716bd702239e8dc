use std::sync::Arc;

use rustio_backstore::RamBackstore;

use super::*;
use crate::{LunMap, Tmf};

const TUR: [u8; 6] = [0, 0, 0, 0, 0, 0];

#[test]
fn first_command_of_a_new_nexus_gets_power_on_ua_once() {
    let h = H::new();
    let n2 = nexus(2);
    assert_eq!(
        check_of(h.run_as(&n2, &TUR, &[]).0),
        Sense::UA_POWER_ON_RESET
    );
    assert_eq!(h.run_as(&n2, &TUR, &[]).0, Response::GOOD);
    // The UA was reported on a command that was not executed: a READ gets it too.
    let n3 = nexus(3);
    let (r, d) = h.run_as(&n3, &cdb10(0x28, 0, 0, 1), &[]);
    assert_eq!(check_of(r), Sense::UA_POWER_ON_RESET);
    assert!(d.is_empty());
}

#[test]
fn request_sense_returns_and_clears_ua_then_no_sense() {
    let h = H::new();
    let n2 = nexus(2);
    let (r, d) = h.run_as(&n2, &[0x03, 0, 0, 0, 252, 0], &[]);
    assert_eq!(r, Response::GOOD);
    assert_eq!(d, Sense::UA_POWER_ON_RESET.to_fixed());
    let (r, d) = h.run_as(&n2, &[0x03, 0, 0, 0, 252, 0], &[]);
    assert_eq!(r, Response::GOOD);
    assert_eq!(d[2] & 0x0f, 0);
    assert_eq!((d[12], d[13]), (0, 0));
    assert_eq!(h.run_as(&n2, &TUR, &[]).0, Response::GOOD);
    // Allocation length truncates.
    assert_eq!(h.good(&[0x03, 0, 0, 0, 8, 0], &[]).len(), 8);
    // DESC = 1: descriptor format.
    let n3 = nexus(3);
    let (r, d) = h.run_as(&n3, &[0x03, 1, 0, 0, 252, 0], &[]);
    assert_eq!(r, Response::GOOD);
    assert_eq!(d, [0x72, 0x06, 0x29, 0x00, 0, 0, 0, 0]);
}

#[test]
fn unknown_opcode_and_malformed_cdbs() {
    let h = H::new();
    for op in [0x02u8, 0x0b, 0xc0, 0xff, 0x7f, 0x48] {
        let s = h.check(&[op, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        assert_sense(s, SenseKey::IllegalRequest, 0x20, 0x00);
        assert_eq!(s.field_pointer.unwrap().byte, 0);
    }
    // Empty and short CDBs.
    assert_sense(h.check(&[], &[]), SenseKey::IllegalRequest, 0x20, 0x00);
    assert_invalid_cdb(h.check(&[0x88, 0, 0], &[]), 3, None);
    // Unknown service action of a known opcode.
    assert_invalid_cdb(h.check(&cdb16(0x9e, 0x1f, 0, 0), &[]), 1, Some(4));
    assert_invalid_cdb(h.check(&cdb12(0xa3, 0x05, 0, 0), &[]), 1, Some(4));
    // NACA and LINK in the control byte.
    let mut c = cdb10(0x28, 0, 0, 1);
    c[9] = 0x04;
    assert_invalid_cdb(h.check(&c, &[]), 9, Some(2));
    c[9] = 0x01;
    assert_invalid_cdb(h.check(&c, &[]), 9, Some(0));
}

#[test]
fn start_stop_and_prevent_allow() {
    let h = H::new();
    h.good(&[0x1b, 0, 0, 0, 0x01, 0], &[]);
    h.good(&[0x1b, 1, 0, 0, 0x00, 0], &[]);
    h.good(&[0x1b, 0, 0, 0, 0x30, 0], &[]);
    assert_invalid_cdb(h.check(&[0x1b, 0, 0, 0, 0x40, 0], &[]), 4, Some(7));
    h.good(&[0x1e, 0, 0, 0, 1, 0], &[]);
    h.good(&[0x1e, 0, 0, 0, 0, 0], &[]);
}

#[test]
fn report_supported_opcodes_all_and_one() {
    let h = H::new();
    let d = h.good(&cdb12(0xa3, 0x0c, 0, 65535), &[]);
    let len = u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize;
    assert_eq!(len, d.len() - 4);
    assert_eq!(len % 8, 0);
    let descs: Vec<_> = d[4..].chunks(8).collect();
    // READ(10): no service action, CDB length 10.
    assert!(descs.iter().any(|e| e == &[0x28, 0, 0, 0, 0, 0, 0, 10]));
    // READ CAPACITY(16): SERVACTV.
    assert!(descs.iter().any(|e| e == &[0x9e, 0, 0, 0x10, 0, 1, 0, 16]));
    // No descriptor with a service action but SERVACTV clear.
    assert!(descs
        .iter()
        .all(|e| e[5] & 1 == 1 || (e[2], e[3]) == (0, 0)));

    // RCTD: 20-byte descriptors with CTDP and a 0Ah-long timeouts descriptor.
    let mut c = cdb12(0xa3, 0x0c, 0, 65535);
    c[2] = 0x80;
    let d = h.good(&c, &[]);
    for e in d[4..].chunks(20) {
        assert_eq!(e[5] & 0x02, 0x02);
        assert_eq!(&e[8..10], &[0, 0x0a]);
    }

    // One command, no service action.
    let mut c = cdb12(0xa3, 0x0c, 0, 65535);
    c[2] = 1;
    c[3] = 0x28;
    let d = h.good(&c, &[]);
    assert_eq!(&d[..4], &[0, 0x03, 0, 10]);
    assert_eq!(
        &d[4..14],
        &[0x28, 0xfe, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07]
    );
    // Option 1 for an opcode with service actions is invalid, option 2 works.
    c[3] = 0x9e;
    assert_invalid_cdb(h.check(&c, &[]), 2, Some(2));
    c[2] = 2;
    c[5] = 0x10;
    let d = h.good(&c, &[]);
    assert_eq!(&d[..6], &[0, 0x03, 0, 16, 0x9e, 0x1f]);
    // Option 2 for an opcode without service actions is invalid.
    c[3] = 0x28;
    assert_invalid_cdb(h.check(&c, &[]), 2, Some(2));
    // Unsupported opcode: SUPPORT = 001b.
    c[2] = 1;
    c[3] = 0xc5;
    assert_eq!(h.good(&c, &[]), [0, 0x01, 0, 0]);
    // Reporting options 100b and up are reserved.
    c[2] = 4;
    assert_invalid_cdb(h.check(&c, &[]), 2, Some(2));
}

#[test]
fn report_supported_opcodes_hides_unmap_without_discard() {
    let h = H::with_backstore(
        Arc::new(RamBackstore::nullio(1 << 20, 512).unwrap()),
        LuConfig::new("t", "s"),
    );
    let d = h.good(&cdb12(0xa3, 0x0c, 0, 65535), &[]);
    assert!(d[4..].chunks(8).all(|e| e[0] != 0x42));
}

#[test]
fn report_supported_tmfs_and_tpgs() {
    let h = H::new();
    assert_eq!(h.good(&cdb12(0xa3, 0x0d, 0, 4), &[]), [0xde, 0x07, 0, 0]);
    assert_invalid_cdb(h.check(&cdb12(0xa3, 0x0d, 0, 3), &[]), 6, None);
    let d = h.good(&cdb12(0xa3, 0x0a, 0, 1024), &[]);
    assert_eq!(d, [0, 0, 0, 12, 0x80, 0x8f, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
    let d = h.good(&cdb12(0xa3, 0x2a, 0, 1024), &[]);
    assert_eq!(&d[..8], &[0, 0, 0, 16, 0x10, 0, 0, 0]);
    assert_eq!(h.good(&cdb12(0xa3, 0x0a, 0, 4), &[]), [0, 0, 0, 12]);
}

#[test]
fn report_luns_on_a_logical_unit() {
    let h = H::new();
    let d = h.good(&cdb12(0xa0, 0, 0, 4096), &[]);
    assert_eq!(d, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut c = cdb12(0xa0, 0, 0, 64);
    c[2] = 3;
    assert_invalid_cdb(h.check(&c, &[]), 2, None);
}

fn map_with(luns: &[u64]) -> (LunMap, Vec<Arc<crate::LogicalUnit>>) {
    let mut m = LunMap::new();
    let mut v = Vec::new();
    for &l in luns {
        let lu = crate::LogicalUnit::new(
            Arc::new(RamBackstore::new(1 << 20, 512).unwrap()),
            LuConfig::new(format!("l{l}"), format!("sn{l}")),
        )
        .unwrap();
        m.insert(l, Arc::clone(&lu), l == 7);
        v.push(lu);
    }
    (m, v)
}

#[test]
fn lunmap_report_luns_and_missing_luns() {
    let (m, _) = map_with(&[0, 7, 300]);
    let n = nexus(1);
    let mut d = Vec::new();
    let r = m.execute(
        &n,
        5,
        &cdb12(0xa0, 0, 0, 4096),
        &[],
        1,
        TaskAttr::Simple,
        &mut d,
    );
    assert_eq!(r, Response::GOOD);
    assert_eq!(&d[..8], &[0, 0, 0, 24, 0, 0, 0, 0]);
    assert_eq!(&d[8..16], &[0; 8]);
    assert_eq!(&d[16..24], &[0, 7, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&d[24..32], &[0x41, 0x2c, 0, 0, 0, 0, 0, 0]);
    // Truncated to the allocation length.
    let r = m.execute(
        &n,
        0,
        &cdb12(0xa0, 0, 0, 16),
        &[],
        1,
        TaskAttr::Simple,
        &mut d,
    );
    assert_eq!(r, Response::GOOD);
    assert_eq!(d.len(), 16);
    // INQUIRY to a missing LUN: PQ 011b, PDT 1Fh.
    let r = m.execute(
        &n,
        5,
        &[0x12, 0, 0, 0, 96, 0],
        &[],
        1,
        TaskAttr::Simple,
        &mut d,
    );
    assert_eq!(r, Response::GOOD);
    assert_eq!(d[0], 0x7f);
    // REQUEST SENSE: LOGICAL UNIT NOT SUPPORTED in the data, GOOD status.
    let r = m.execute(
        &n,
        5,
        &[0x03, 0, 0, 0, 18, 0],
        &[],
        1,
        TaskAttr::Simple,
        &mut d,
    );
    assert_eq!(r, Response::GOOD);
    assert_eq!((d[2], d[12], d[13]), (0x05, 0x25, 0x00));
    // Anything else: CHECK CONDITION.
    let r = m.execute(&n, 5, &TUR, &[], 1, TaskAttr::Simple, &mut d);
    assert_sense(check_of(r), SenseKey::IllegalRequest, 0x25, 0x00);
    assert!(d.is_empty());
}

#[test]
fn lunmap_routes_and_applies_write_protect() {
    let (m, _) = map_with(&[0, 7]);
    let n = nexus(1);
    let mut d = Vec::new();
    for lun in [0, 7] {
        let r = m.execute(&n, lun, &TUR, &[], 1, TaskAttr::Simple, &mut d);
        assert_eq!(check_of(r), Sense::UA_POWER_ON_RESET);
    }
    let w = cdb10(0x2a, 0, 0, 1);
    assert_eq!(
        m.execute(&n, 0, &w, &[0; 512], 1, TaskAttr::Simple, &mut d),
        Response::GOOD
    );
    let r = m.execute(&n, 7, &w, &[0; 512], 1, TaskAttr::Simple, &mut d);
    assert_sense(check_of(r), SenseKey::DataProtect, 0x27, 0x00);
    // MODE SENSE reports WP for the write protected mapping.
    m.execute(
        &n,
        7,
        &[0x1a, 0x08, 0x3f, 0, 255, 0],
        &[],
        1,
        TaskAttr::Simple,
        &mut d,
    );
    assert_eq!(d[2] & 0x80, 0x80);
    m.execute(
        &n,
        0,
        &[0x1a, 0x08, 0x3f, 0, 255, 0],
        &[],
        1,
        TaskAttr::Simple,
        &mut d,
    );
    assert_eq!(d[2] & 0x80, 0);
    assert_eq!(m.data_out_len(0, &w), Some(512));
    assert_eq!(m.data_out_len(0, &[0xff]), None);
}

#[test]
fn lunmap_change_notification() {
    let (mut m, _) = map_with(&[0]);
    let n = nexus(1);
    let mut d = Vec::new();
    m.execute(&n, 0, &TUR, &[], 1, TaskAttr::Simple, &mut d);
    let (m2, lus) = map_with(&[3]);
    m.insert(3, Arc::clone(&lus[0]), false);
    drop(m2);
    m.notify_changed();
    // REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED without reporting it.
    let r = m.execute(
        &n,
        0,
        &cdb12(0xa0, 0, 0, 64),
        &[],
        1,
        TaskAttr::Simple,
        &mut d,
    );
    assert_eq!(r, Response::GOOD);
    assert_eq!(
        m.execute(&n, 0, &TUR, &[], 1, TaskAttr::Simple, &mut d),
        Response::GOOD
    );
}

#[test]
fn lun_reset_raises_29_03_and_releases_reserve6() {
    let h = H::new();
    let n2 = nexus(2);
    h.clear_ua(&n2);
    h.good(&[0x16, 0, 0, 0, 0, 0], &[]);
    assert_eq!(
        h.run_as(&n2, &TUR, &[]).0,
        Response::status(Status::ReservationConflict)
    );
    h.lu.task_management(&h.n, Tmf::LogicalUnitReset);
    assert_eq!(check_of(h.run(&TUR, &[]).0), Sense::UA_BUS_DEVICE_RESET);
    assert_eq!(
        check_of(h.run_as(&n2, &TUR, &[]).0),
        Sense::UA_BUS_DEVICE_RESET
    );
    // The reservation is gone.
    h.good(&TUR, &[]);
    assert_eq!(h.run_as(&n2, &[0x16, 0, 0, 0, 0, 0], &[]).0, Response::GOOD);
}

#[test]
fn nexus_loss() {
    let h = H::new();
    let n2 = nexus(2);
    h.clear_ua(&n2);
    h.good(&[0x16, 0, 0, 0, 0, 0], &[]);
    h.lu.nexus_lost(&h.n);
    assert_eq!(h.run_as(&n2, &[0x16, 0, 0, 0, 0, 0], &[]).0, Response::GOOD);
    assert_eq!(check_of(h.run(&TUR, &[]).0), Sense::UA_IT_NEXUS_LOSS);
}

#[test]
fn reserve6_release6() {
    let h = H::new();
    let n2 = nexus(2);
    h.clear_ua(&n2);
    h.good(&[0x16, 0, 0, 0, 0, 0], &[]);
    h.good(&[0x16, 0, 0, 0, 0, 0], &[]);
    let conflict = Response::status(Status::ReservationConflict);
    assert_eq!(h.run_as(&n2, &[0x16, 0, 0, 0, 0, 0], &[]).0, conflict);
    // RELEASE from the other nexus is a no-op, INQUIRY still works, MODE SENSE does not.
    assert_eq!(h.run_as(&n2, &[0x17, 0, 0, 0, 0, 0], &[]).0, Response::GOOD);
    assert_eq!(
        h.run_as(&n2, &[0x12, 0, 0, 0, 36, 0], &[]).0,
        Response::GOOD
    );
    assert_eq!(h.run_as(&n2, &[0x1a, 0, 0x3f, 0, 255, 0], &[]).0, conflict);
    h.good(&[0x1a, 0, 0x3f, 0, 255, 0], &[]);
    h.good(&[0x17, 0, 0, 0, 0, 0], &[]);
    assert_eq!(
        h.run_as(&n2, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).0,
        Response::GOOD
    );
    assert_eq!(
        h.run_as(&n2, &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).0,
        Response::GOOD
    );
    // Third-party reservations are not supported.
    assert_invalid_cdb(
        h.check(&[0x56, 0x10, 0, 0, 0, 0, 0, 0, 0, 0], &[]),
        1,
        Some(4),
    );
}

#[test]
fn data_out_len_from_cdb() {
    let h = H::new();
    assert_eq!(h.lu.data_out_len(&cdb10(0x2a, 0, 0, 8)), Some(4096));
    assert_eq!(h.lu.data_out_len(&cdb10(0x28, 0, 0, 8)), Some(0));
    assert_eq!(h.lu.data_out_len(&[0x15, 0x10, 0, 0, 24, 0]), Some(24));
    assert_eq!(
        h.lu.data_out_len(&[0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
        Some(24)
    );
    assert_eq!(h.lu.data_out_len(&[0xff, 0, 0, 0, 0, 0]), None);
}

#[test]
fn logical_unit_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<crate::LogicalUnit>();
    assert_send_sync::<LunMap>();
}
