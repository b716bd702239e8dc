use std::sync::Arc;

use rustio_backstore::RamBackstore;

use super::*;

fn cscd(naa: &[u8; 16], bs: u32) -> Vec<u8> {
    let mut d = vec![0u8; 32];
    d[0] = 0xe4;
    d[4] = 0x01;
    d[5] = 0x03;
    d[7] = 16;
    d[8..24].copy_from_slice(naa);
    d[29..32].copy_from_slice(&bs.to_be_bytes()[1..]);
    d
}

fn seg(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let mut d = vec![0u8; 28];
    d[0] = 0x02;
    d[2..4].copy_from_slice(&0x18u16.to_be_bytes());
    d[4..6].copy_from_slice(&src.to_be_bytes());
    d[6..8].copy_from_slice(&dst.to_be_bytes());
    d[10..12].copy_from_slice(&blocks.to_be_bytes());
    d[12..20].copy_from_slice(&src_lba.to_be_bytes());
    d[20..28].copy_from_slice(&dst_lba.to_be_bytes());
    d
}

fn list(list_id: u8, usage: u8, cscds: &[Vec<u8>], segs: &[Vec<u8>]) -> Vec<u8> {
    let c: Vec<u8> = cscds.concat();
    let s: Vec<u8> = segs.concat();
    let mut p = vec![0u8; 16];
    p[0] = list_id;
    p[1] = usage << 3;
    p[2..4].copy_from_slice(&(c.len() as u16).to_be_bytes());
    p[8..12].copy_from_slice(&(s.len() as u32).to_be_bytes());
    p.extend(c);
    p.extend(s);
    p
}

fn xcopy_cdb(len: usize) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&(len as u32).to_be_bytes());
    c
}

fn rcr(sa: u8, list_id: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x84;
    c[1] = sa;
    c[2] = list_id;
    c[10..14].copy_from_slice(&1024u32.to_be_bytes());
    c
}

#[test]
fn copy_within_one_unit_and_copy_status() {
    let h = H::with(LuConfig::new("x", "xcopy-one"));
    let naa = h.lu.naa_designator();
    let data = pattern(16 * 512, 5);
    h.good(&cdb10(0x2a, 0, 0, 16), &data);
    // Unknown list id before any copy.
    assert_invalid_cdb(h.check(&rcr(0, 1), &[]), 2, None);
    let p = list(1, 0, &[cscd(&naa, 512)], &[seg(0, 0, 16, 0, 100)]);
    h.good(&xcopy_cdb(p.len()), &p);
    assert_eq!(h.good(&cdb10(0x28, 0, 100, 16), &[]), data);
    let d = h.good(&rcr(0, 1), &[]);
    assert_eq!(d, [0, 0, 0, 8, 0x01, 0, 1, 0x00, 0, 0, 0x20, 0]);
    // Overlapping copy forward by one block behaves like memmove.
    let p = list(2, 0, &[cscd(&naa, 512)], &[seg(0, 0, 16, 100, 101)]);
    h.good(&xcopy_cdb(p.len()), &p);
    assert_eq!(h.good(&cdb10(0x28, 0, 101, 16), &[]), data);
    // Empty parameter list.
    h.good(&xcopy_cdb(0), &[]);
}

/// A LUN map with `b` at LUN 0 and `a` at LUN 1 (mapped with `a_wp`).
fn map_ab(a: &H, b: &H, a_wp: bool) -> LunMap {
    let mut m = LunMap::new();
    m.insert(0, b.lu.clone(), false);
    m.insert(1, a.lu.clone(), a_wp);
    m
}

/// Runs `cdb` on `b` from `b.n` whose LUN map is `map`.
fn run_b(b: &H, map: &LunMap, cdb: &[u8], data_out: &[u8]) -> Response {
    b.run_in(&b.n, map, cdb, data_out).0
}

#[test]
fn copy_between_units() {
    let a = H::with(LuConfig::new("a", "xcopy-a"));
    let b = H::with(LuConfig::new("b", "xcopy-b"));
    let data = pattern(8 * 512, 9);
    a.good(&cdb10(0x2a, 0, 3, 8), &data);
    let p = list(
        0,
        3,
        &[
            cscd(&a.lu.naa_designator(), 512),
            cscd(&b.lu.naa_designator(), 512),
        ],
        &[seg(0, 1, 8, 3, 40)],
    );
    // Issued to B by a nexus that maps both, copying A → B.
    let map = map_ab(&a, &b, false);
    assert_eq!(run_b(&b, &map, &xcopy_cdb(p.len()), &p), Response::GOOD);
    assert_eq!(b.good(&cdb10(0x28, 0, 40, 8), &[]), data);
    // A unit that no longer exists is unreachable.
    let gone = {
        let c = H::with(LuConfig::new("c", "xcopy-gone"));
        c.lu.naa_designator()
    };
    let p = list(
        0,
        3,
        &[cscd(&gone, 512), cscd(&b.lu.naa_designator(), 512)],
        &[seg(0, 1, 1, 0, 0)],
    );
    assert_sense(
        check_of(run_b(&b, &map, &xcopy_cdb(p.len()), &p)),
        SenseKey::CopyAborted,
        0x0d,
        0x02,
    );
}

/// CVE-2020-28374 class: a unit that exists in this process but is not in the nexus's
/// LUN map is not reachable, neither as source nor as destination, and nothing moves.
#[test]
fn unit_outside_the_lun_map_is_unreachable() {
    let a = H::with(LuConfig::new("a", "xcopy-other-a"));
    let b = H::with(LuConfig::new("b", "xcopy-other-b"));
    let a_data = pattern(8 * 512, 1);
    let b_data = pattern(8 * 512, 2);
    a.good(&cdb10(0x2a, 0, 0, 8), &a_data);
    b.good(&cdb10(0x2a, 0, 0, 8), &b_data);
    let (na, nb) = (a.lu.naa_designator(), b.lu.naa_designator());
    // B's nexus maps only B (`b.map`): A → B and B → A are both refused.
    for (cscds, what) in [
        ([cscd(&na, 512), cscd(&nb, 512)], "read another unit"),
        ([cscd(&nb, 512), cscd(&na, 512)], "write another unit"),
    ] {
        let p = list(0, 3, &cscds, &[seg(0, 1, 8, 0, 0)]);
        assert_sense(
            b.check(&xcopy_cdb(p.len()), &p),
            SenseKey::CopyAborted,
            0x0d,
            0x02,
        );
        assert_eq!(a.good(&cdb10(0x28, 0, 0, 8), &[]), a_data, "{what}");
        assert_eq!(b.good(&cdb10(0x28, 0, 0, 8), &[]), b_data, "{what}");
    }
    // Even unreferenced, a CSCD naming an unreachable unit fails the copy.
    let p = list(
        0,
        3,
        &[cscd(&nb, 512), cscd(&na, 512)],
        &[seg(0, 0, 8, 0, 16)],
    );
    assert_eq!(b.check(&xcopy_cdb(p.len()), &p).key, SenseKey::CopyAborted);
    // The same unit through an empty map (a nexus that maps nothing) is unreachable.
    let p = list(0, 3, &[cscd(&nb, 512)], &[seg(0, 0, 8, 0, 16)]);
    let s = check_of(run_b(&b, &LunMap::new(), &xcopy_cdb(p.len()), &p));
    assert_sense(s, SenseKey::CopyAborted, 0x0d, 0x02);
    // A TCMU-style single mapping reaches its own unit only.
    let own = crate::MappedLun {
        lu: b.lu.clone(),
        write_protected: false,
    };
    let r = b.run_in(&b.n, &own, &xcopy_cdb(p.len()), &p).0;
    assert_eq!(r, Response::GOOD);
    assert_eq!(b.good(&cdb10(0x28, 0, 16, 8), &[]), b_data);
    let p = list(
        0,
        3,
        &[cscd(&na, 512), cscd(&nb, 512)],
        &[seg(0, 1, 8, 0, 0)],
    );
    let s = check_of(b.run_in(&b.n, &own, &xcopy_cdb(p.len()), &p).0);
    assert_sense(s, SenseKey::CopyAborted, 0x0d, 0x02);
}

/// A destination mapped write-protected for this nexus (ACL) refuses the copy like a
/// WRITE through that mapping would; reading from it is fine.
#[test]
fn write_protected_mapping_of_the_destination() {
    let a = H::with(LuConfig::new("a", "xcopy-wp-a"));
    let b = H::with(LuConfig::new("b", "xcopy-wp-b"));
    let a_data = pattern(4 * 512, 3);
    let b_data = pattern(4 * 512, 4);
    a.good(&cdb10(0x2a, 0, 0, 4), &a_data);
    b.good(&cdb10(0x2a, 0, 0, 4), &b_data);
    let map = map_ab(&a, &b, true);
    let (na, nb) = (a.lu.naa_designator(), b.lu.naa_designator());
    let p = list(
        0,
        3,
        &[cscd(&nb, 512), cscd(&na, 512)],
        &[seg(0, 1, 4, 0, 0)],
    );
    let s = check_of(run_b(&b, &map, &xcopy_cdb(p.len()), &p));
    assert_sense(s, SenseKey::DataProtect, 0x27, 0x00);
    assert_eq!(a.good(&cdb10(0x28, 0, 0, 4), &[]), a_data);
    // The other direction reads A and writes B: allowed.
    let p = list(
        0,
        3,
        &[cscd(&na, 512), cscd(&nb, 512)],
        &[seg(0, 1, 4, 0, 8)],
    );
    assert_eq!(run_b(&b, &map, &xcopy_cdb(p.len()), &p), Response::GOOD);
    assert_eq!(b.good(&cdb10(0x28, 0, 8, 4), &[]), a_data);
    // A write-protected mapping of the unit the command was sent to counts as well.
    let mut b = b;
    b.wp = true;
    let p = list(0, 3, &[cscd(&nb, 512)], &[seg(0, 0, 4, 0, 20)]);
    let s = check_of(run_b(&b, &map_ab(&a, &b, false), &xcopy_cdb(p.len()), &p));
    assert_sense(s, SenseKey::DataProtect, 0x27, 0x00);
}

/// Copy targets reserved by another nexus refuse the copy as a direct READ/WRITE from
/// this nexus would be refused (SPC-4 5.13, SPC-2 RESERVE).
#[test]
fn reservation_of_another_nexus_on_a_copy_target() {
    let a = H::with(LuConfig::new("a", "xcopy-pr-a"));
    let b = H::with(LuConfig::new("b", "xcopy-pr-b"));
    let a_data = pattern(4 * 512, 5);
    a.good(&cdb10(0x2a, 0, 0, 4), &a_data);
    let map = map_ab(&a, &b, false);
    let (na, nb) = (a.lu.naa_designator(), b.lu.naa_designator());
    let n2 = nexus(2);
    a.clear_ua(&n2);
    // Nexus 2 holds a Write Exclusive persistent reservation on A: REGISTER, RESERVE.
    let mut reg = vec![0u8; 24];
    reg[8..16].copy_from_slice(&0xabu64.to_be_bytes());
    let mut c = [0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0];
    assert_eq!(a.run_as(&n2, &c, &reg).0, Response::GOOD);
    let mut res = vec![0u8; 24];
    res[0..8].copy_from_slice(&0xabu64.to_be_bytes());
    c[1] = 0x01;
    c[2] = 0x01; // Write Exclusive
    assert_eq!(a.run_as(&n2, &c, &res).0, Response::GOOD);
    let conflict = Response {
        status: Status::ReservationConflict,
        sense: None,
    };
    // B → A writes A: conflict, A unchanged.
    let p = list(
        0,
        3,
        &[cscd(&nb, 512), cscd(&na, 512)],
        &[seg(0, 1, 4, 0, 0)],
    );
    assert_eq!(run_b(&b, &map, &xcopy_cdb(p.len()), &p), conflict);
    assert_eq!(a.good(&cdb10(0x28, 0, 0, 4), &[]), a_data);
    // A → B only reads A, which Write Exclusive allows.
    let p = list(
        0,
        3,
        &[cscd(&na, 512), cscd(&nb, 512)],
        &[seg(0, 1, 4, 0, 0)],
    );
    assert_eq!(run_b(&b, &map, &xcopy_cdb(p.len()), &p), Response::GOOD);
    assert_eq!(b.good(&cdb10(0x28, 0, 0, 4), &[]), a_data);
    // Under an SPC-2 reservation of nexus 2 even reading A conflicts: RELEASE,
    // unregister (REGISTER with SERVICE ACTION RESERVATION KEY 0), RESERVE(6).
    c[1] = 0x02;
    assert_eq!(a.run_as(&n2, &c, &res).0, Response::GOOD);
    c[1] = 0x00;
    c[2] = 0x00;
    assert_eq!(a.run_as(&n2, &c, &res).0, Response::GOOD);
    assert_eq!(a.run_as(&n2, &[0x16, 0, 0, 0, 0, 0], &[]).0, Response::GOOD);
    b.good(&cdb10(0x2a, 0, 0, 4), &pattern(4 * 512, 6));
    let before = b.good(&cdb10(0x28, 0, 0, 4), &[]);
    let p = list(
        0,
        3,
        &[cscd(&na, 512), cscd(&nb, 512)],
        &[seg(0, 1, 4, 0, 0)],
    );
    assert_eq!(run_b(&b, &map, &xcopy_cdb(p.len()), &p), conflict);
    assert_eq!(b.good(&cdb10(0x28, 0, 0, 4), &[]), before);
}

#[test]
fn parameter_list_errors() {
    let h = H::with(LuConfig::new("x", "xcopy-err"));
    let naa = h.lu.naa_designator();
    let good = list(1, 0, &[cscd(&naa, 512)], &[seg(0, 0, 8, 0, 100)]);
    // Truncated target descriptor / segment descriptor.
    assert_sense(
        h.check(&xcopy_cdb(16 + 31), &good[..47]),
        SenseKey::IllegalRequest,
        0x1a,
        0x00,
    );
    assert_sense(
        h.check(&xcopy_cdb(good.len() - 1), &good[..good.len() - 1]),
        SenseKey::IllegalRequest,
        0x1a,
        0x00,
    );
    // Too many CSCD descriptors / segment descriptors.
    let p = list(1, 0, &vec![cscd(&naa, 512); 9], &[seg(0, 0, 8, 0, 100)]);
    assert_sense(
        h.check(&xcopy_cdb(p.len()), &p),
        SenseKey::IllegalRequest,
        0x26,
        0x06,
    );
    let p = list(1, 0, &[cscd(&naa, 512)], &vec![seg(0, 0, 1, 0, 100); 65]);
    assert_sense(
        h.check(&xcopy_cdb(p.len()), &p),
        SenseKey::IllegalRequest,
        0x26,
        0x08,
    );
    // Descriptor lists longer than MAXIMUM DESCRIPTOR LIST LENGTH.
    let p = list(
        1,
        0,
        &vec![cscd(&naa, 512); 9],
        &vec![seg(0, 0, 1, 0, 100); 140],
    );
    assert_sense(
        h.check(&xcopy_cdb(p.len()), &p),
        SenseKey::IllegalRequest,
        0x1a,
        0x00,
    );
    let p = list(1, 0, &[cscd(&naa, 512)], &vec![seg(0, 0, 1, 0, 100); 60]);
    h.good(&xcopy_cdb(p.len()), &p);
    // Unsupported descriptor types.
    let mut fc = cscd(&naa, 512);
    fc[0] = 0xe0;
    let p = list(1, 0, &[fc], &[seg(0, 0, 8, 0, 100)]);
    assert_sense(
        h.check(&xcopy_cdb(p.len()), &p),
        SenseKey::IllegalRequest,
        0x26,
        0x07,
    );
    let mut s = seg(0, 0, 8, 0, 100);
    s[0] = 0x03;
    let p = list(1, 0, &[cscd(&naa, 512)], &[s]);
    assert_sense(
        h.check(&xcopy_cdb(p.len()), &p),
        SenseKey::IllegalRequest,
        0x26,
        0x09,
    );
    // Bad CSCD index, beyond the end of the destination.
    let p = list(1, 0, &[cscd(&naa, 512)], &[seg(0, 1, 8, 0, 100)]);
    assert_sense(
        h.check(&xcopy_cdb(p.len()), &p),
        SenseKey::CopyAborted,
        0x0d,
        0x02,
    );
    let p = list(1, 0, &[cscd(&naa, 512)], &[seg(0, 0, 8, 0, BLOCKS - 1)]);
    assert_eq!(h.check(&xcopy_cdb(p.len()), &p).key, SenseKey::CopyAborted);
    // LIST ID USAGE 01b is reserved; inline data is not supported.
    let p = list(1, 1, &[cscd(&naa, 512)], &[seg(0, 0, 8, 0, 100)]);
    let s = h.check(&xcopy_cdb(p.len()), &p);
    assert_sense(s, SenseKey::IllegalRequest, 0x26, 0x00);
    assert_eq!(s.field_pointer.unwrap().byte, 1);
    let mut p = list(1, 0, &[cscd(&naa, 512)], &[seg(0, 0, 8, 0, 100)]);
    p[15] = 4;
    p.extend_from_slice(&[0; 4]);
    assert_eq!(
        h.check(&xcopy_cdb(p.len()), &p).field_pointer.unwrap().byte,
        12
    );
    // LU ID TYPE is ignored (SPC-4).
    let mut c = cscd(&naa, 512);
    c[1] = 0x80;
    let p = list(1, 0, &[c], &[seg(0, 0, 8, 0, 100)]);
    h.good(&xcopy_cdb(p.len()), &p);
}

#[test]
fn segment_longer_than_the_reported_maximum() {
    // 4 KiB blocks: 16384 blocks are the 64 MiB MAXIMUM SEGMENT LENGTH of RECEIVE COPY
    // RESULTS (operating parameters), 16385 one block more. The length is refused before
    // the range is looked at, pointing at the descriptor's NUMBER OF BLOCKS (byte 10 of
    // the first segment descriptor: 16 + 32 + 10 = 58).
    let h = H::with_backstore(
        Arc::new(RamBackstore::new(64 * 4096, 4096).unwrap()),
        LuConfig::new("x", "xcopy-seglen"),
    );
    let naa = h.lu.naa_designator();
    let p = list(1, 0, &[cscd(&naa, 4096)], &[seg(0, 0, 16385, 0, 0)]);
    let s = h.check(&xcopy_cdb(p.len()), &p);
    assert_sense(s, SenseKey::IllegalRequest, 0x26, 0x00);
    let fp = s.field_pointer.expect("field pointer");
    assert_eq!((fp.cdb_or_data, fp.byte), (false, 58));
    // In the second descriptor: 16 + 32 + 28 + 10.
    let p = list(
        1,
        0,
        &[cscd(&naa, 4096)],
        &[seg(0, 0, 1, 0, 8), seg(0, 0, 65535, 0, 0)],
    );
    let s = h.check(&xcopy_cdb(p.len()), &p);
    assert_eq!(s.field_pointer.map(|f| f.byte), Some(86));
    // Exactly the maximum passes the length check and meets the range check (64 blocks).
    let p = list(1, 0, &[cscd(&naa, 4096)], &[seg(0, 0, 16384, 0, 0)]);
    assert_sense(
        h.check(&xcopy_cdb(p.len()), &p),
        SenseKey::CopyAborted,
        0x00,
        0x00,
    );
    // And nothing was copied by the refused lists: a short copy still works.
    let p = list(1, 0, &[cscd(&naa, 4096)], &[seg(0, 0, 8, 0, 8)]);
    h.good(&xcopy_cdb(p.len()), &p);
}

#[test]
fn operating_parameters_and_vpd() {
    let h = H::with(LuConfig::new("x", "xcopy-op"));
    let d = h.good(&rcr(3, 0), &[]);
    assert_eq!(
        u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize,
        d.len() - 4
    );
    assert_eq!(&d[8..10], &8u16.to_be_bytes());
    assert_eq!(&d[10..12], &64u16.to_be_bytes());
    assert_eq!(&d[12..16], &4096u32.to_be_bytes());
    assert_eq!(d[43], 2);
    assert_eq!(&d[44..46], &[0x02, 0xe4]);
    let v = h.good(&[0x12, 1, 0x8f, 0, 0xff, 0], &[]);
    assert_eq!(&v[0..4], &[0, 0x8f, 0, 16]);
    assert_eq!(&v[4..8], &[0, 1, 0, 12]);
    assert_eq!(&v[8..17], &[8, 0x83, 1, 0x00, 0x84, 3, 0x00, 0x03, 0x04]);
}

#[test]
fn copy_to_write_protected_destination() {
    let ro = H::with_backstore(
        Arc::new(RamBackstore::new(BLOCKS * 512, 512).unwrap()),
        LuConfig::new("ro", "xcopy-ro").with_read_only(true),
    );
    let naa = ro.lu.naa_designator();
    let p = list(0, 3, &[cscd(&naa, 512)], &[seg(0, 0, 1, 0, 1)]);
    assert_sense(
        ro.check(&xcopy_cdb(p.len()), &p),
        SenseKey::DataProtect,
        0x27,
        0x00,
    );
}
