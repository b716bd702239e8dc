use super::*;

const CONFLICT: Response = Response {
    status: Status::ReservationConflict,
    sense: None,
};

fn prout(sa: u8, ty: u8, key: u64, sa_key: u64, flags: u8) -> ([u8; 10], Vec<u8>) {
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = flags;
    let mut c = [0u8; 10];
    c[0] = 0x5f;
    c[1] = sa;
    c[2] = ty;
    c[5..9].copy_from_slice(&24u32.to_be_bytes());
    (c, p)
}

fn pr_out(h: &H, n: &Nexus, sa: u8, ty: u8, key: u64, sa_key: u64) -> Response {
    let (c, p) = prout(sa, ty, key, sa_key, 0);
    h.run_as(n, &c, &p).0
}

fn prin(h: &H, n: &Nexus, sa: u8) -> Vec<u8> {
    let (r, d) = h.run_as(n, &[0x5e, sa, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
    assert_eq!(r, Response::GOOD);
    d
}

fn keys(h: &H) -> (u32, Vec<u64>) {
    let d = prin(h, &h.n, 0);
    let gen = u32::from_be_bytes(d[0..4].try_into().unwrap());
    let n = u32::from_be_bytes(d[4..8].try_into().unwrap()) as usize / 8;
    (
        gen,
        (0..n)
            .map(|i| u64::from_be_bytes(d[8 + 8 * i..16 + 8 * i].try_into().unwrap()))
            .collect(),
    )
}

fn two() -> (H, Nexus) {
    let h = H::new();
    let n2 = nexus(2);
    h.clear_ua(&n2);
    (h, n2)
}

const READ: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];

fn write_ok(h: &H, n: &Nexus) -> bool {
    let (r, _) = h.run_as(n, &cdb10(0x2a, 0, 0, 1), &[0; 512]);
    match r.status {
        Status::Good => true,
        Status::ReservationConflict => false,
        _ => panic!("{r:?}"),
    }
}

fn read_ok(h: &H, n: &Nexus) -> bool {
    let (r, _) = h.run_as(n, &READ, &[]);
    match r.status {
        Status::Good => true,
        Status::ReservationConflict => false,
        _ => panic!("{r:?}"),
    }
}

#[test]
fn register_read_keys_unregister() {
    let (h, n2) = two();
    assert_eq!(keys(&h), (0, vec![]));
    assert_eq!(pr_out(&h, &h.n, 0, 0, 0, 0xaa), Response::GOOD);
    assert_eq!(pr_out(&h, &n2, 6, 0, 0, 0xbb), Response::GOOD);
    assert_eq!(keys(&h), (2, vec![0xaa, 0xbb]));
    // Wrong key: conflict. Registering again with key 0 from an unregistered nexus is
    // a no-op without a generation bump.
    assert_eq!(pr_out(&h, &h.n, 0, 0, 0x99, 0xcc), CONFLICT);
    h.clear_ua(&nexus(3));
    assert_eq!(pr_out(&h, &nexus(3), 0, 0, 0, 0), Response::GOOD);
    // Change key, then unregister.
    assert_eq!(pr_out(&h, &h.n, 0, 0, 0xaa, 0xcc), Response::GOOD);
    assert_eq!(pr_out(&h, &h.n, 0, 0, 0xcc, 0), Response::GOOD);
    assert_eq!(keys(&h), (4, vec![0xbb]));
}

#[test]
fn parameter_list_checks() {
    let h = H::new();
    let (mut c, p) = prout(0, 0, 0, 1, 0);
    c[8] = 20;
    assert_sense(h.check(&c, &p[..20]), SenseKey::IllegalRequest, 0x1a, 0x00);
    // SPEC_I_PT is not supported.
    let (c, p) = prout(0, 0, 0, 1, 0x08);
    let s = h.check(&c, &p);
    assert_sense(s, SenseKey::IllegalRequest, 0x26, 0x00);
    assert_eq!(s.field_pointer.unwrap().byte, 20);
    // APTPL without a state file.
    let (c, p) = prout(0, 0, 0, 1, 0x01);
    assert_sense(h.check(&c, &p), SenseKey::IllegalRequest, 0x26, 0x00);
    // Bad type and scope.
    pr_out(&h, &h.n, 0, 0, 0, 1);
    let (c, p) = prout(1, 0x02, 1, 0, 0);
    assert_invalid_cdb(h.check(&c, &p), 2, Some(3));
    let (c, p) = prout(1, 0x11, 1, 0, 0);
    assert_invalid_cdb(h.check(&c, &p), 2, Some(7));
    // PR IN service actions 4..1F are invalid.
    for sa in 4..0x20u8 {
        assert_invalid_cdb(
            h.check(&[0x5e, sa, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]),
            1,
            Some(4),
        );
    }
}

#[test]
fn reserve_read_reservation_release() {
    let (h, n2) = two();
    pr_out(&h, &h.n, 0, 0, 0, 0xa);
    pr_out(&h, &n2, 0, 0, 0, 0xb);
    assert_eq!(pr_out(&h, &h.n, 1, 1, 0xa, 0), Response::GOOD);
    // Same holder, same type: GOOD; other type or other nexus: conflict.
    assert_eq!(pr_out(&h, &h.n, 1, 1, 0xa, 0), Response::GOOD);
    assert_eq!(pr_out(&h, &h.n, 1, 3, 0xa, 0), CONFLICT);
    assert_eq!(pr_out(&h, &n2, 1, 1, 0xb, 0), CONFLICT);
    let d = prin(&h, &h.n, 1);
    assert_eq!(&d[4..8], &[0, 0, 0, 16]);
    assert_eq!(&d[8..16], &0xau64.to_be_bytes());
    assert_eq!(d[21], 0x01);
    // Release by a non-holder: no-op. Wrong type by holder: INVALID RELEASE.
    assert_eq!(pr_out(&h, &n2, 2, 1, 0xb, 0), Response::GOOD);
    assert_sense(
        check_of(pr_out(&h, &h.n, 2, 3, 0xa, 0)),
        SenseKey::IllegalRequest,
        0x26,
        0x04,
    );
    assert_eq!(pr_out(&h, &h.n, 2, 1, 0xa, 0), Response::GOOD);
    assert_eq!(&prin(&h, &h.n, 1)[4..8], &[0; 4]);
}

#[test]
fn access_matrix_per_type() {
    // (type, registered-other read, write, unregistered-other read, write) — SPC-4 5.13.1.
    for (ty, rr, rw, ur, uw) in [
        (1u8, true, false, true, false),
        (3, false, false, false, false),
        (5, true, true, true, false),
        (6, true, true, false, false),
        (7, true, true, true, false),
        (8, true, true, false, false),
    ] {
        let (h, n2) = two();
        pr_out(&h, &h.n, 0, 0, 0, 0x1);
        pr_out(&h, &n2, 0, 0, 0, 0x2);
        assert_eq!(pr_out(&h, &h.n, 1, ty, 0x1, 0), Response::GOOD);
        assert!(read_ok(&h, &h.n) && write_ok(&h, &h.n), "holder type {ty}");
        assert_eq!(
            (read_ok(&h, &n2), write_ok(&h, &n2)),
            (rr, rw),
            "registered type {ty}"
        );
        let n3 = nexus(3);
        h.clear_ua(&n3);
        assert_eq!(
            (read_ok(&h, &n3), write_ok(&h, &n3)),
            (ur, uw),
            "unregistered type {ty}"
        );
        // Always allowed.
        for cdb in [
            &[0x12, 0, 0, 0, 36, 0][..],
            &[0, 0, 0, 0, 0, 0],
            &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert_ne!(h.run_as(&n3, cdb, &[]).0, CONFLICT, "type {ty} {cdb:02x?}");
        }
        // READ RESERVATION shows key 0 for all-registrants types.
        let d = prin(&h, &h.n, 1);
        let key = u64::from_be_bytes(d[8..16].try_into().unwrap());
        assert_eq!(key, if ty >= 7 { 0 } else { 1 });
    }
}

#[test]
fn unregistering_the_holder_releases_with_ua_for_registrants_only_types() {
    let (h, n2) = two();
    pr_out(&h, &h.n, 0, 0, 0, 0x1);
    pr_out(&h, &n2, 0, 0, 0, 0x2);
    pr_out(&h, &h.n, 1, 5, 0x1, 0);
    pr_out(&h, &h.n, 0, 0, 0x1, 0);
    assert_eq!(&prin(&h, &h.n, 1)[4..8], &[0; 4]);
    assert_eq!(
        check_of(h.run_as(&n2, &[0, 0, 0, 0, 0, 0], &[]).0),
        Sense::UA_RESERVATIONS_RELEASED
    );
    // All-registrants: the reservation survives while anyone is registered.
    let (h, n2) = two();
    pr_out(&h, &h.n, 0, 0, 0, 0x1);
    pr_out(&h, &n2, 0, 0, 0, 0x2);
    pr_out(&h, &h.n, 1, 8, 0x1, 0);
    pr_out(&h, &h.n, 0, 0, 0x1, 0);
    assert_eq!(prin(&h, &h.n, 1)[21], 8);
    assert_eq!(pr_out(&h, &n2, 2, 8, 0x2, 0), Response::GOOD);
}

#[test]
fn release_of_registrants_only_reservation_notifies() {
    let (h, n2) = two();
    pr_out(&h, &h.n, 0, 0, 0, 0x1);
    pr_out(&h, &n2, 0, 0, 0, 0x2);
    pr_out(&h, &h.n, 1, 6, 0x1, 0);
    pr_out(&h, &h.n, 2, 6, 0x1, 0);
    assert_eq!(
        check_of(h.run_as(&n2, &[0, 0, 0, 0, 0, 0], &[]).0),
        Sense::UA_RESERVATIONS_RELEASED
    );
    h.good(&[0, 0, 0, 0, 0, 0], &[]);
}

#[test]
fn clear() {
    let (h, n2) = two();
    pr_out(&h, &h.n, 0, 0, 0, 0x1);
    pr_out(&h, &n2, 0, 0, 0, 0x2);
    pr_out(&h, &h.n, 1, 3, 0x1, 0);
    h.clear_ua(&nexus(3));
    assert_eq!(pr_out(&h, &nexus(3), 3, 0, 0x1, 0), CONFLICT);
    assert_eq!(pr_out(&h, &n2, 3, 0, 0x2, 0), Response::GOOD);
    assert_eq!(
        check_of(h.run(&[0, 0, 0, 0, 0, 0], &[]).0),
        Sense::UA_RESERVATIONS_PREEMPTED
    );
    assert_eq!(keys(&h).1, Vec::<u64>::new());
    assert!(write_ok(&h, &n2));
}

#[test]
fn preempt_removes_registration_and_bumps_generation() {
    let (h, n2) = two();
    pr_out(&h, &h.n, 0, 0, 0, 0x1);
    pr_out(&h, &n2, 0, 0, 0, 0x2);
    let (g, _) = keys(&h);
    assert_eq!(pr_out(&h, &n2, 4, 3, 0x2, 0x1), Response::GOOD);
    assert_eq!(
        check_of(h.run(&[0, 0, 0, 0, 0, 0], &[]).0),
        Sense::UA_REGISTRATIONS_PREEMPTED
    );
    assert_eq!(keys(&h), (g + 1, vec![0x2]));
    // Preempting an unknown key without a reservation is a conflict; key 0 is invalid.
    assert_eq!(pr_out(&h, &n2, 4, 3, 0x2, 0x77), CONFLICT);
    assert_sense(
        check_of(pr_out(&h, &n2, 4, 3, 0x2, 0)),
        SenseKey::IllegalRequest,
        0x26,
        0x00,
    );
}

#[test]
fn preempt_holder_takes_the_reservation() {
    let (h, n2) = two();
    pr_out(&h, &h.n, 0, 0, 0, 0x1);
    pr_out(&h, &n2, 0, 0, 0, 0x2);
    pr_out(&h, &h.n, 1, 1, 0x1, 0);
    assert_eq!(pr_out(&h, &n2, 5, 3, 0x2, 0x1), Response::GOOD);
    let d = prin(&h, &n2, 1);
    assert_eq!(&d[8..16], &2u64.to_be_bytes());
    assert_eq!(d[21], 3);
    assert_eq!(
        check_of(h.run(&[0, 0, 0, 0, 0, 0], &[]).0),
        Sense::UA_REGISTRATIONS_PREEMPTED
    );
    assert_eq!(keys(&h).1, vec![2]);
    assert!(!read_ok(&h, &h.n));
}

#[test]
fn report_capabilities_and_full_status() {
    let (h, n2) = two();
    let d = prin(&h, &h.n, 2);
    assert_eq!(d, [0, 8, 0x14, 0x90, 0xea, 0x01, 0, 0]);
    pr_out(&h, &h.n, 0, 0, 0, 0x1);
    let (c, p) = prout(0, 0, 0, 0x2, 0x04);
    assert_eq!(h.run_as(&n2, &c, &p).0, Response::GOOD);
    pr_out(&h, &h.n, 1, 1, 0x1, 0);
    let d = prin(&h, &h.n, 3);
    assert_eq!(usize::from(u16::from_be_bytes([d[6], d[7]])), d.len() - 8);
    // First descriptor: our registration, holder, type 1, relative port 1.
    assert_eq!(&d[8..16], &1u64.to_be_bytes());
    assert_eq!(d[20], 0x01);
    assert_eq!(d[21], 0x01);
    assert_eq!(&d[26..28], &[0, 1]);
    let tid_len = u32::from_be_bytes(d[28..32].try_into().unwrap()) as usize;
    assert_eq!(d[32], 0x45);
    let name = h.n.initiator().to_string();
    let name = name.as_bytes();
    assert_eq!(&d[36..36 + name.len()], name);
    let second = 32 + tid_len;
    assert_eq!(&d[second..second + 8], &2u64.to_be_bytes());
    assert_eq!(d[second + 12], 0x02, "ALL_TG_PT, not holder");
}

#[test]
fn spc2_reserve_conflicts_with_persistent_registrations() {
    let (h, n2) = two();
    pr_out(&h, &h.n, 0, 0, 0, 0x1);
    assert_eq!(h.run_as(&n2, &[0x16, 0, 0, 0, 0, 0], &[]).0, CONFLICT);
    pr_out(&h, &h.n, 0, 0, 0x1, 0);
    assert_eq!(h.run_as(&n2, &[0x16, 0, 0, 0, 0, 0], &[]).0, Response::GOOD);
    // PR OUT from another nexus while the SPC-2 reservation is held: conflict.
    assert_eq!(pr_out(&h, &h.n, 0, 0, 0, 0x5), CONFLICT);
}

#[test]
fn register_and_move() {
    let (h, n2) = two();
    pr_out(&h, &h.n, 0, 0, 0, 0x1);
    pr_out(&h, &h.n, 1, 1, 0x1, 0);
    let tid = {
        let mut name = n2.initiator().to_string().into_bytes();
        name.push(0);
        while name.len() % 4 != 0 {
            name.push(0);
        }
        let mut t = vec![0x45, 0];
        t.extend_from_slice(&(name.len() as u16).to_be_bytes());
        t.extend_from_slice(&name);
        t
    };
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&1u64.to_be_bytes());
    p[8..16].copy_from_slice(&0x2u64.to_be_bytes());
    p[17] = 0x02; // UNREG
    p[18..20].copy_from_slice(&1u16.to_be_bytes());
    p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend_from_slice(&tid);
    let mut c = [0u8; 10];
    c[0] = 0x5f;
    c[1] = 7;
    c[2] = 1;
    c[5..9].copy_from_slice(&(p.len() as u32).to_be_bytes());
    assert_eq!(h.run(&c, &p).0, Response::GOOD);
    assert_eq!(keys(&h).1, vec![2]);
    let d = prin(&h, &n2, 1);
    assert_eq!(&d[8..16], &2u64.to_be_bytes());
    assert!(write_ok(&h, &n2));
    assert!(!write_ok(&h, &h.n));
    // Not the holder any more: conflict.
    assert_eq!(h.run(&c, &p).0, CONFLICT);
}

#[test]
fn aptpl_persists_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pr.state");
    let b: Arc<dyn rustio_backstore::Backstore> =
        Arc::new(rustio_backstore::RamBackstore::new(1 << 20, 512).unwrap());
    use std::sync::Arc;
    let h = H::with_backstore(
        Arc::clone(&b),
        LuConfig::new("t", "s").with_aptpl_file(&path),
    );
    let (c, p) = prout(0, 0, 0, 0xabc, 0x01);
    assert_eq!(h.run(&c, &p).0, Response::GOOD);
    pr_out(&h, &h.n, 1, 6, 0xabc, 0);
    assert!(path.exists());
    assert_eq!(prin(&h, &h.n, 2)[3] & 0x01, 0x01, "PTPL_A");
    drop(h);
    let h2 = H::with_backstore(
        Arc::clone(&b),
        LuConfig::new("t", "s").with_aptpl_file(&path),
    );
    assert_eq!(keys(&h2).1, vec![0xabc]);
    assert_eq!(prin(&h2, &h2.n, 1)[21], 6);
    // The same initiator port is still the holder after the restart.
    assert!(write_ok(&h2, &h2.n));
    // APTPL = 0 on a later REGISTER removes the file.
    let (c, p) = prout(0, 0, 0xabc, 0xabd, 0);
    assert_eq!(h2.run(&c, &p).0, Response::GOOD);
    assert!(!path.exists());
    // A corrupt file fails LogicalUnit::new.
    std::fs::write(&path, "garbage").unwrap();
    assert!(crate::LogicalUnit::new(b, LuConfig::new("t", "s").with_aptpl_file(&path)).is_err());
}

/// A TCMU-style nexus (initiator the transport cannot name) registers like any other;
/// READ FULL STATUS reports its TransportID with protocol identifier Fh.
#[test]
fn local_initiator_in_full_status() {
    use crate::{TargetPort, TargetPortName, TransportId};
    let h = H::new();
    let local = Nexus::new(
        TransportId::Local("tcmu.kernel".into()),
        TargetPort::new(1, 1, TargetPortName::Local("tcmu.d".into())),
    );
    h.clear_ua(&local);
    assert_eq!(pr_out(&h, &local, 0, 0, 0, 0x7), Response::GOOD);
    let d = prin(&h, &local, 3);
    assert_eq!(&d[8..16], &7u64.to_be_bytes());
    assert_eq!(d[32], 0x0f);
    let (id, _) = TransportId::parse(&d[32..]).unwrap();
    assert_eq!(&id, local.initiator());
}

/// A unit over a caller's store commits through it (the store version moves).
#[test]
fn logical_unit_over_a_given_store() {
    use crate::{MemoryStore, ReservationStore};
    let store = Arc::new(MemoryStore::new());
    let lu = crate::LogicalUnit::with_reservation_store(
        Arc::new(rustio_backstore::RamBackstore::new(1 << 20, 512).unwrap()),
        LuConfig::new("t", "s"),
        store.clone(),
    )
    .unwrap();
    let mut map = LunMap::new();
    map.insert(0, lu.clone(), false);
    let h = H {
        lu,
        n: nexus(1),
        wp: false,
        map,
    };
    h.clear_ua(&h.n);
    assert_eq!(pr_out(&h, &h.n, 0, 0, 0, 0xaa), Response::GOOD);
    let v = store.load().unwrap();
    assert_eq!(v.version, 1);
    assert_eq!(keys(&h), (1, vec![0xaa]));
}
