use std::sync::Arc;

use rustio_backstore::RamBackstore;

use super::*;

#[test]
fn standard_inquiry_layout() {
    let h = H::with(LuConfig::new("t", "sn1").with_identity("ACME", "SuperDisk", "1.2"));
    let d = h.good(&[0x12, 0, 0, 0, 0xff, 0], &[]);
    assert_eq!(d.len(), 74);
    assert_eq!(d[0], 0x00, "PQ 000b, PDT 00h");
    assert_eq!(d[1] & 0x80, 0, "RMB");
    assert_eq!(d[2], 0x06, "SPC-4");
    assert_eq!(d[3], 0x12, "HISUP + response data format 2");
    assert_eq!(usize::from(d[4]), d.len() - 5);
    assert_eq!(d[5] & 0x30, 0x10, "TPGS implicit ALUA");
    assert_eq!(d[5] & 0x08, 0x08, "3PC");
    assert_eq!(d[7] & 0x02, 0x02, "CMDQUE");
    assert_eq!(&d[8..16], b"ACME    ");
    assert_eq!(&d[16..32], b"SuperDisk       ");
    assert_eq!(&d[32..36], b"1.2 ");
    assert_eq!(
        &d[58..66],
        &[0x00, 0xa0, 0x09, 0x60, 0x04, 0x60, 0x04, 0xc0]
    );
}

#[test]
fn inquiry_allocation_length_truncates() {
    let h = H::new();
    let d = h.good(&[0x12, 0, 0, 0, 5, 0], &[]);
    assert_eq!(d.len(), 5);
    let d = h.good(&[0x12, 0, 0, 0x01, 0x00, 0], &[]);
    assert_eq!(d.len(), 74);
    let d = h.good(&[0x12, 0, 0, 0, 0, 0], &[]);
    assert!(d.is_empty());
}

#[test]
fn inquiry_page_code_without_evpd_is_invalid() {
    let h = H::new();
    assert_invalid_cdb(h.check(&[0x12, 0, 1, 1, 0, 0], &[]), 2, None);
}

#[test]
fn unknown_vpd_page_is_invalid_field_byte_2() {
    let h = H::new();
    assert_invalid_cdb(h.check(&[0x12, 1, 0x99, 0, 0xff, 0], &[]), 2, None);
}

#[test]
fn supported_vpd_pages() {
    let h = H::new();
    let d = h.good(&[0x12, 1, 0x00, 0, 0xff, 0], &[]);
    assert_eq!(
        d,
        [0, 0, 0, 8, 0x00, 0x80, 0x83, 0x86, 0x8f, 0xb0, 0xb1, 0xb2]
    );
    // Every listed page can be read.
    for &p in &d[4..] {
        let v = h.good(&[0x12, 1, p, 0, 0xff, 0], &[]);
        assert_eq!(v[1], p);
        assert_eq!(usize::from(u16::from_be_bytes([v[2], v[3]])), v.len() - 4);
    }
}

#[test]
fn unit_serial_page() {
    let h = H::with(LuConfig::new("t", "ABC123"));
    assert_eq!(
        h.good(&[0x12, 1, 0x80, 0, 0xff, 0], &[]),
        b"\x00\x80\x00\x06ABC123"
    );
}

#[test]
fn device_identification_page() {
    let h = H::with(LuConfig::new("t", "sn42").with_identity("RUSTIO", "p", "1"));
    let d = h.good(&[0x12, 1, 0x83, 0, 0xff, 0], &[]);
    let naa = h.lu.naa_designator();
    // NAA-6 first: code set binary, LU association, type NAA, length 16.
    assert_eq!(&d[4..8], &[0x01, 0x03, 0x00, 0x10]);
    assert_eq!(&d[8..24], &naa);
    assert_eq!(naa[0] >> 4, 6);
    // IEEE company id 00-14-05 follows the NAA nibble.
    assert_eq!(naa[0] & 0x0f, 0x0);
    assert_eq!(&naa[1..3], &[0x01, 0x40]);
    assert_eq!(naa[3] >> 4, 5);
    // T10 vendor id: ASCII, vendor padded to 8 + serial.
    assert_eq!(&d[24..28], &[0x02, 0x01, 0x00, 12]);
    assert_eq!(&d[28..40], b"RUSTIO  sn42");
    // Relative target port: iSCSI protocol, PIV, target port association, type 4.
    assert_eq!(&d[40..48], &[0x51, 0x94, 0, 4, 0, 0, 0, 1]);
    // Target port group, type 5.
    assert_eq!(&d[48..56], &[0x51, 0x95, 0, 4, 0, 0, 0, 1]);
    // SCSI name string of the target port: UTF-8, type 8, null padded to 4.
    assert_eq!(&d[56..58], &[0x53, 0x98]);
    let name = b"iqn.2024-01.io.rustio:tgt,t,0x0001";
    let len = usize::from(d[59]);
    assert_eq!(len % 4, 0);
    assert!(len > name.len());
    assert_eq!(&d[60..60 + name.len()], name);
    assert!(d[60 + name.len()..].iter().all(|&b| b == 0));
    assert_eq!(d.len(), 60 + len);
}

#[test]
fn naa_is_stable_and_configurable() {
    let a = H::with(LuConfig::new("a", "same")).lu.naa_designator();
    let b = H::with(LuConfig::new("b", "same")).lu.naa_designator();
    let c = H::with(LuConfig::new("c", "other")).lu.naa_designator();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let d = H::with(LuConfig::new("d", "same").with_naa_id(0x1122_3344_5566_7788))
        .lu
        .naa_designator();
    assert_eq!(&d[8..16], &0x1122_3344_5566_7788u64.to_be_bytes());
}

#[test]
fn block_limits_page() {
    let mut c = LuConfig::new("t", "s");
    c.max_transfer_blocks = 1024;
    c.optimal_transfer_blocks = 128;
    c.max_unmap_blocks = 4096;
    c.max_unmap_descriptors = 16;
    c.max_write_same_blocks = 65536;
    c.max_compare_write_blocks = 8;
    let h = H::with(c);
    let d = h.good(&[0x12, 1, 0xb0, 0, 0xff, 0], &[]);
    assert_eq!(d.len(), 64);
    assert_eq!(&d[0..4], &[0, 0xb0, 0, 0x3c]);
    assert_eq!(d[4], 0, "WSNZ");
    assert_eq!(d[5], 8, "MAXIMUM COMPARE AND WRITE LENGTH");
    assert_eq!(&d[6..8], &[0, 1], "OPTIMAL TRANSFER LENGTH GRANULARITY");
    assert_eq!(&d[8..12], &1024u32.to_be_bytes());
    assert_eq!(&d[12..16], &128u32.to_be_bytes());
    assert_eq!(&d[20..24], &4096u32.to_be_bytes());
    assert_eq!(&d[24..28], &16u32.to_be_bytes());
    assert_eq!(&d[36..44], &65536u64.to_be_bytes());
}

#[test]
fn provisioning_pages_follow_capabilities() {
    // RAM: thin, discard zeroes.
    let h = H::new();
    let d = h.good(&[0x12, 1, 0xb2, 0, 0xff, 0], &[]);
    assert_eq!(d, [0, 0xb2, 0, 4, 0, 0x80 | 0x40 | 0x20 | 0x04, 0x02, 0]);
    let d = h.good(&[0x12, 1, 0xb1, 0, 0xff, 0], &[]);
    assert_eq!(&d[4..6], &[0, 1], "non-rotating");
    // nullio: no discard → fully provisioned, unmap limits zero.
    let n = H::with_backstore(
        Arc::new(RamBackstore::nullio(BLOCKS * u64::from(BS), BS).unwrap()),
        LuConfig::new("n", "s"),
    );
    let d = n.good(&[0x12, 1, 0xb2, 0, 0xff, 0], &[]);
    assert_eq!(d, [0, 0xb2, 0, 4, 0, 0, 0, 0]);
    let d = n.good(&[0x12, 1, 0xb0, 0, 0xff, 0], &[]);
    assert_eq!(&d[20..28], &[0; 8]);
}

#[test]
fn extended_inquiry_page() {
    let h = H::new();
    let d = h.good(&[0x12, 1, 0x86, 0, 0xff, 0], &[]);
    assert_eq!(&d[0..4], &[0, 0x86, 0, 0x3c]);
    assert_eq!(d[5], 0x07, "HEADSUP ORDSUP SIMPSUP");
    assert_eq!(d[7], 0x01, "LUICLR");
}

#[test]
fn inquiry_does_not_consume_unit_attention() {
    let h = H::new();
    let n2 = nexus(2);
    let (r, d) = h.run_as(&n2, &[0x12, 0, 0, 0, 36, 0], &[]);
    assert_eq!(r.status, Status::Good);
    assert_eq!(d.len(), 36);
    let s = check_of(h.run_as(&n2, &[0, 0, 0, 0, 0, 0], &[]).0);
    assert_eq!(s, Sense::UA_POWER_ON_RESET);
}

/// Several target port groups (gateways) from the configuration: REPORT TARGET PORT
/// GROUPS lists them all (SPC-4 6.37 table 242/243), whatever port asks.
#[test]
fn configured_target_port_groups() {
    use crate::{AluaState, TargetPortGroup, TargetPortGroupId};
    let mut config = LuConfig::new("t", "sn");
    config.target_port_groups = vec![
        TargetPortGroup {
            id: TargetPortGroupId(1),
            state: AluaState::ActiveOptimized,
            preferred: true,
            ports: vec![1],
        },
        TargetPortGroup {
            id: TargetPortGroupId(2),
            state: AluaState::ActiveNonOptimized,
            preferred: false,
            ports: vec![2, 3],
        },
    ];
    let h = H::with(config);
    let d = h.good(&cdb12(0xa3, 0x0a, 0, 1024), &[]);
    assert_eq!(&d[0..4], &28u32.to_be_bytes());
    assert_eq!(&d[4..16], &[0x80, 0x8f, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
    assert_eq!(
        &d[16..32],
        &[0x01, 0x8f, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]
    );
    assert_eq!(d.len(), 32);
}

/// TPGS follows the unit's ALUA mode (SPC-4 6.6.2).
#[test]
fn tpgs_from_alua_mode() {
    let mut config = LuConfig::new("t", "sn");
    config.alua = crate::AluaMode::None;
    let h = H::with(config);
    let d = h.good(&[0x12, 0, 0, 0, 0xff, 0], &[]);
    assert_eq!(d[5] & 0x30, 0x00);
    assert_eq!(d[5] & 0x08, 0x08, "3PC");
}

/// The protocol identifier of the target port designators comes from the port: SAS
/// (6h) for a SAS port, PIV = 0 and no SCSI name string for a local (TCMU) port
/// (SPC-4 7.8.6.1).
#[test]
fn vpd_83_protocol_from_the_port() {
    use crate::{TargetPort, TargetPortName, TransportId};
    // Serial "sn42": the port designators start at byte 40 as in the test above.
    let h = H::with(LuConfig::new("t", "sn42").with_identity("RUSTIO", "p", "1"));
    let sas = Nexus::new(
        TransportId::Sas(0x5001_4050_0000_0001),
        TargetPort::new(2, 3, TargetPortName::Sas(0x5001_4050_0000_0002)),
    );
    h.clear_ua(&sas);
    let (r, d) = h.run_as(&sas, &[0x12, 1, 0x83, 0, 0xff, 0], &[]);
    assert_eq!(r, Response::GOOD);
    assert_eq!(&d[40..48], &[0x61, 0x94, 0, 4, 0, 0, 0, 2]);
    assert_eq!(&d[48..56], &[0x61, 0x95, 0, 4, 0, 0, 0, 3]);
    assert_eq!(d.len(), 56);
    let local = Nexus::new(
        TransportId::Local("tcmu.kernel".into()),
        TargetPort::new(1, 1, TargetPortName::Local("tcmu.d".into())),
    );
    h.clear_ua(&local);
    let (_, d) = h.run_as(&local, &[0x12, 1, 0x83, 0, 0xff, 0], &[]);
    assert_eq!(&d[40..48], &[0x01, 0x14, 0, 4, 0, 0, 0, 1]);
    assert_eq!(&d[48..56], &[0x01, 0x15, 0, 4, 0, 0, 0, 1]);
    assert_eq!(d.len(), 56);
}
