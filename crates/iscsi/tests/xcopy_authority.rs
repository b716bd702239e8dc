//! EXTENDED COPY reaches only the logical units the requesting I_T nexus may access
//! (issue 20 item 1; the class of Linux LIO's CVE-2020-28374): a CSCD descriptor naming
//! a unit of another target, or one the initiator's ACL does not map, is answered CHECK
//! CONDITION, COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE (SPC-4 6.4.5, 0Dh/02h),
//! and that unit's data is left alone.

mod common;

use std::sync::Arc;

use common::*;
use rustio_backstore::WriteFlags;
use rustio_iscsi::config::{AclConfig, MappedLunConfig, TargetConfig, TpgConfig};
use rustio_iscsi::LunConfig;
use rustio_scsi::LogicalUnit;

const OTHER_TARGET: &str = "iqn.2024-01.org.rustio.test:other";

/// Identification CSCD descriptor (E4h) with an NAA designator, 512-byte blocks.
fn cscd(naa: &[u8; 16]) -> Vec<u8> {
    let mut d = vec![0xe4, 0, 0, 0, 0x01, 0x03, 0, 16];
    d.extend_from_slice(naa);
    d.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x02, 0x00]);
    d
}

/// EXTENDED COPY (LID1, service action 00h) parameter list: the CSCDs, then one
/// block → block segment descriptor copying `blocks` from CSCD 0 to CSCD 1.
fn copy_list(src: &[u8; 16], dst: &[u8; 16], blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let mut p = vec![0u8; 16];
    p[1] = 0x18; // LIST ID USAGE 11b: no list identifier, nothing held
    p[2..4].copy_from_slice(&64u16.to_be_bytes());
    p[8..12].copy_from_slice(&28u32.to_be_bytes());
    p.extend(cscd(src));
    p.extend(cscd(dst));
    let mut s = vec![0x02, 0, 0, 0x18, 0, 0, 0, 1, 0, 0];
    s.extend_from_slice(&blocks.to_be_bytes());
    s.extend_from_slice(&src_lba.to_be_bytes());
    s.extend_from_slice(&dst_lba.to_be_bytes());
    p.extend(s);
    p
}

fn xcopy_cdb(len: usize) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&(len as u32).to_be_bytes());
    c
}

fn fill(lu: &LogicalUnit, lba: u64, data: &[u8]) {
    lu.backstore()
        .write_at(data, lba * 512, WriteFlags::default())
        .unwrap();
}

fn contents(lu: &LogicalUnit, lba: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    lu.backstore().read_at(&mut b, lba * 512).unwrap();
    b
}

/// Sends EXTENDED COPY on LUN 0 and returns (status, sense key, ASC, ASCQ).
fn extended_copy(i: &mut Initiator, p: &[u8]) -> (u8, u8, u8, u8) {
    let r = i.scsi(0, &xcopy_cdb(p.len()), 0, p, p.len());
    if r.status != 0x02 {
        return (r.status, 0, 0, 0);
    }
    assert!(r.sense.len() >= 14, "sense {:?}", r.sense);
    (r.status, r.sense[2] & 0x0f, r.sense[12], r.sense[13])
}

const NOT_REACHABLE: (u8, u8, u8, u8) = (0x02, 0x0a, 0x0d, 0x02);

#[test]
fn copy_into_or_out_of_another_targets_lu_is_refused() {
    let own = ram_lu(256, "xca-own");
    let other = ram_lu(256, "xca-other");
    let (own2, other2) = (own.clone(), other.clone());
    let (h, addr) = start(move |cfg, tpg| {
        tpg.luns[0].lu = own2;
        // A second target on the same portal, with its own unit.
        let mut t2 = TpgConfig::new(1);
        t2.portals = tpg.portals.clone();
        t2.generate_node_acls = true;
        t2.luns.push(LunConfig {
            index: 0,
            lu: other2,
            name: "other".into(),
        });
        cfg.targets.push(Arc::new(TargetConfig {
            iqn: OTHER_TARGET.into(),
            tpgs: vec![Arc::new(t2)],
        }));
    });
    let secret = pattern(8 * 512, 0x5a);
    let mine = pattern(8 * 512, 0x11);
    fill(&other, 0, &secret);
    fill(&own, 0, &mine);
    let (n_own, n_other) = (own.naa_designator(), other.naa_designator());

    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    // Read the other target's unit into ours: refused, ours unchanged.
    let p = copy_list(&n_other, &n_own, 8, 0, 100);
    assert_eq!(extended_copy(&mut i, &p), NOT_REACHABLE);
    assert_eq!(contents(&own, 100, 8 * 512), vec![0; 8 * 512]);
    // Overwrite the other target's unit from ours: refused, theirs unchanged.
    let p = copy_list(&n_own, &n_other, 8, 0, 0);
    assert_eq!(extended_copy(&mut i, &p), NOT_REACHABLE);
    assert_eq!(contents(&other, 0, 8 * 512), secret);
    // Within our own unit the copy works (the refusals are not a broken EXTENDED COPY).
    let p = copy_list(&n_own, &n_own, 8, 0, 100);
    assert_eq!(extended_copy(&mut i, &p), (0, 0, 0, 0));
    assert_eq!(i.scsi(0, &read10(100, 8), 8 * 512, &[], 0).data, mine);
    h.shutdown();
}

#[test]
fn copy_from_a_lun_the_acl_does_not_map_is_refused() {
    let shown = ram_lu(256, "xca-shown");
    let hidden = ram_lu(256, "xca-hidden");
    let (shown2, hidden2) = (shown.clone(), hidden.clone());
    let (h, addr) = start(move |_, tpg| {
        tpg.generate_node_acls = false;
        tpg.luns[0].lu = shown2;
        tpg.luns.push(LunConfig {
            index: 1,
            lu: hidden2,
            name: "hidden".into(),
        });
        let mut acl = AclConfig::new(INITIATOR);
        acl.mapped_luns.push(MappedLunConfig {
            index: 0,
            tpg_lun: 0,
            write_protect: false,
        });
        tpg.acls.push(acl);
    });
    let secret = pattern(4 * 512, 0x77);
    fill(&hidden, 10, &secret);
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    let (n_shown, n_hidden) = (shown.naa_designator(), hidden.naa_designator());
    let p = copy_list(&n_hidden, &n_shown, 4, 10, 0);
    assert_eq!(extended_copy(&mut i, &p), NOT_REACHABLE);
    assert_eq!(contents(&shown, 0, 4 * 512), vec![0; 4 * 512]);
    let p = copy_list(&n_shown, &n_hidden, 4, 0, 10);
    assert_eq!(extended_copy(&mut i, &p), NOT_REACHABLE);
    assert_eq!(contents(&hidden, 10, 4 * 512), secret);
    h.shutdown();
}
