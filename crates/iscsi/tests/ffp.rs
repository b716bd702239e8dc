//! End-to-end tests: the real server on 127.0.0.1:0 driven by the test initiator.

mod common;

use std::sync::Arc;

use common::*;
use rustio_iscsi::config::{AclConfig, ChapCredentials, Execution, MappedLunConfig};
use rustio_iscsi_proto::pdu::{
    BhsInfo, Header, LogoutReason, NopOut, Pdu, SnackRequest, TmfFunction, BHS_LEN, RESERVED_TAG,
};

#[test]
fn inquiry_read_write_roundtrip() {
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    assert_eq!(i.key("MaxRecvDataSegmentLength"), Some("65536"));
    assert_eq!(i.key("MaxBurstLength"), Some("16384"));

    let r = i.scsi(0, &[0x12, 0, 0, 0, 255, 0], 255, &[], 0);
    assert_eq!(r.status, 0);
    assert!(r.data.len() >= 36);
    assert_eq!(r.data[0] & 0x1f, 0, "direct access block device");
    // Less data than the expected length: underflow residual.
    assert!(r.underflow);
    assert_eq!(r.residual as usize, 255 - r.data.len());

    // READ CAPACITY(10): 8192 blocks of 512.
    let r = i.scsi(0, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8, &[], 0);
    assert_eq!(r.data, [0, 0, 0x1f, 0xff, 0, 0, 2, 0]);

    // Write 64 KiB: 4 KiB immediate (FirstBurstLength), the rest in R2T bursts of
    // MaxBurstLength (16 KiB) — 4 R2Ts with MaxOutstandingR2T=1.
    let data = pattern(65536, 7);
    let r = i.scsi(0, &write10(100, 128), 0, &data, 4096);
    assert_eq!(r.status, 0, "sense {:?}", r.sense);
    assert_eq!(r.r2ts, 4);
    // Read it back: our MaxRecvDataSegmentLength is 8192 → 8 Data-In PDUs, status in
    // the last one.
    let r = i.scsi(0, &read10(100, 128), 65536, &[], 0);
    assert_eq!(r.status, 0);
    assert_eq!(r.data_pdus, 8);
    assert!(r.data == data);
    assert!(!r.underflow && !r.overflow);
    h.shutdown();
}

#[test]
fn residuals() {
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    // READ of 1 block with EDTL 2 blocks: underflow of 512.
    let r = i.scsi(0, &read10(0, 1), 1024, &[], 0);
    assert_eq!(r.status, 0);
    assert!(r.underflow);
    assert_eq!(r.residual, 512);
    assert_eq!(r.data.len(), 512);
    // READ of 2 blocks with EDTL 1 block: overflow of 512, only 512 bytes sent.
    let r = i.scsi(0, &read10(0, 2), 512, &[], 0);
    assert!(r.overflow);
    assert_eq!(r.residual, 512);
    assert_eq!(r.data.len(), 512);
    // WRITE of 2 blocks with EDTL 1 block: GOOD, overflow 512, only block 0 written.
    let ones = vec![1u8; 1024];
    assert_eq!(i.scsi(0, &write10(10, 2), 0, &ones, 1024).status, 0);
    let twos = vec![2u8; 512];
    let r = i.scsi(0, &write10(10, 2), 0, &twos, 512);
    assert_eq!(r.status, 0);
    assert!(r.overflow);
    assert_eq!(r.residual, 512);
    let r = i.scsi(0, &read10(10, 2), 1024, &[], 0);
    assert!(r.data[..512].iter().all(|&b| b == 2));
    assert!(r.data[512..].iter().all(|&b| b == 1));
    // WRITE of 1 block with EDTL 2 blocks: underflow.
    let r = i.scsi(0, &write10(10, 1), 0, &ones, 1024);
    assert_eq!(r.status, 0);
    assert!(r.underflow);
    assert_eq!(r.residual, 512);
    h.shutdown();
}

#[test]
fn digests_end_to_end() {
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    let mut o = LoginOpts::default();
    o.keys[0].1 = "CRC32C".into();
    o.keys[1].1 = "CRC32C".into();
    assert!(i.login(&o));
    assert_eq!(i.key("HeaderDigest"), Some("CRC32C"));
    assert!(i.digests.header && i.digests.data);
    // 20 KiB with digests on every PDU (immediate, Data-Out, Data-In).
    let data = pattern(20480, 3);
    let r = i.scsi(0, &write10(0, 40), 0, &data, 4096);
    assert_eq!(r.status, 0);
    let r = i.scsi(0, &read10(0, 40), 20480, &[], 0);
    assert!(r.data == data);
    // A corrupted data digest on a NOP-Out gets a Reject with reason 0x02.
    let nop = Pdu::new(
        Header::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: 999,
            ttt: RESERVED_TAG,
            cmd_sn: i.cmd_sn,
            exp_stat_sn: i.exp_stat_sn,
        }),
        b"ping".to_vec(),
    );
    let mut wire = nop.encode(i.digests);
    let n = wire.len();
    wire[n - 1] ^= 0xff;
    i.send_raw(&wire);
    let p = i.recv();
    let Header::Reject(r) = p.header else {
        panic!("{:?}", p.header)
    };
    assert_eq!(r.reason, 0x02);
    // The session still works.
    assert_eq!(i.scsi(0, &[0, 0, 0, 0, 0, 0], 0, &[], 0).status, 0);
    h.shutdown();
}

#[test]
fn bad_pdus_get_rejects() {
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    // Unknown opcode 0x1c: Reject "command not supported", BHS echoed.
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = 0x1c;
    bhs[16..20].copy_from_slice(&77u32.to_be_bytes());
    i.send_raw(&bhs);
    let p = i.recv();
    let Header::Reject(r) = p.header else {
        panic!("{:?}", p.header)
    };
    assert_eq!(r.reason, 0x05);
    assert_eq!(&p.data[..], &bhs[..]);
    // Oversized data segment (> our 65536): protocol error, stream stays in step.
    let big = Pdu::new(
        Header::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: 5,
            ttt: RESERVED_TAG,
            cmd_sn: i.cmd_sn,
            exp_stat_sn: i.exp_stat_sn,
        }),
        vec![0u8; 70000],
    );
    i.send(&big);
    let p = i.recv();
    let Header::Reject(r) = p.header else {
        panic!("{:?}", p.header)
    };
    assert_eq!(r.reason, 0x04);
    assert_eq!(
        BhsInfo::of(p.data[..48].try_into().unwrap()).data_len,
        70000
    );
    // SNACK at ErrorRecoveryLevel 0: protocol error.
    i.send(&Pdu::new(
        Header::SnackRequest(SnackRequest {
            snack_type: 0,
            lun: 0,
            itt: 3,
            ttt: RESERVED_TAG,
            exp_stat_sn: i.exp_stat_sn,
            beg_run: 0,
            run_length: 0,
        }),
        vec![],
    ));
    let Header::Reject(r) = i.recv().header else {
        panic!()
    };
    assert_eq!(r.reason, 0x04);
    // Data-Out for a task that does not exist: invalid PDU field.
    i.send(&Pdu::new(
        Header::DataOut(rustio_iscsi_proto::pdu::DataOut {
            final_bit: true,
            lun: 0,
            itt: 4242,
            ttt: 9,
            exp_stat_sn: i.exp_stat_sn,
            data_sn: 0,
            buffer_offset: 0,
        }),
        vec![1; 512],
    ));
    let Header::Reject(r) = i.recv().header else {
        panic!()
    };
    assert_eq!(r.reason, 0x09);
    // Non-immediate command with CmdSN beyond MaxCmdSN: silently ignored.
    let (_, mut pdu) = i.command(0, &[0, 0, 0, 0, 0, 0], false, false, 0, vec![]);
    i.cmd_sn -= 1;
    if let Header::ScsiCommand(c) = &mut pdu.header {
        c.cmd_sn = i.max_cmd_sn.wrapping_add(1);
    }
    i.send(&pdu);
    // Next in-window command answers; the ignored one never does.
    let r = i.scsi(0, &[0, 0, 0, 0, 0, 0], 0, &[], 0);
    assert_eq!(r.status, 0);
    // NOP-Out ping echoes its data.
    let p = i.nop(b"hello");
    let Header::NopIn(n) = p.header else { panic!() };
    assert_eq!(n.ttt, RESERVED_TAG);
    assert_eq!(p.data, b"hello");
    h.shutdown();
}

#[test]
fn garbage_never_hurts_other_sessions() {
    let (h, addr) = start(|_, _| {});
    let mut good = Initiator::connect(addr);
    assert!(good.login(&LoginOpts::default()));
    for seed in 0u8..20 {
        let mut bad = Initiator::connect(addr);
        // Random bytes before login: the connection is dropped, nothing else happens.
        let junk = pattern(300 + seed as usize * 7, seed);
        bad.send_raw(&junk);
    }
    // Garbage in full feature phase on another session.
    let mut bad = Initiator::connect(addr);
    let mut o = LoginOpts::default();
    o.isid[5] = 1;
    assert!(bad.login(&o));
    for seed in 0u8..10 {
        let mut junk = pattern(48, seed);
        junk[0] = 0x1d; // an unknown opcode keeps the framing valid
        junk[4] = 0;
        junk[5..8].copy_from_slice(&[0, 0, 0]);
        bad.send_raw(&junk);
        let Header::Reject(_) = bad.recv().header else {
            panic!()
        };
    }
    let r = good.scsi(0, &read10(0, 8), 4096, &[], 0);
    assert_eq!(r.status, 0);
    h.shutdown();
}

#[test]
fn task_management() {
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    assert_eq!(
        i.tmf(TmfFunction::AbortTask, 0, 12345),
        1,
        "task does not exist"
    );
    assert_eq!(i.tmf(TmfFunction::AbortTaskSet, 0, 0), 0);
    assert_eq!(i.tmf(TmfFunction::ClearTaskSet, 0, 0), 0);
    assert_eq!(i.tmf(TmfFunction::LunReset, 0, 0), 0);
    assert_eq!(i.tmf(TmfFunction::LunReset, 7, 0), 2, "LUN does not exist");
    assert_eq!(i.tmf(TmfFunction::TaskReassign, 0, 0), 4);
    assert_eq!(i.tmf(TmfFunction::Other(100), 0, 0), 255);
    // A write waiting for Data-Out is aborted: no response for it, TMF completes.
    let (itt, pdu) = i.command(0, &write10(0, 8), false, true, 4096, vec![]);
    i.send(&pdu);
    let Header::R2t(_) = i.recv().header else {
        panic!()
    };
    assert_eq!(i.tmf(TmfFunction::AbortTask, 0, itt), 0);
    // After a LUN reset the next command sees a unit attention.
    let r = i.scsi(0, &[0, 0, 0, 0, 0, 0], 0, &[], 0);
    assert_eq!(r.status, 2);
    assert_eq!(r.sense[2] & 0x0f, 6, "UNIT ATTENTION");
    // Demo mode has no node ACL to allow target resets: "Function authorization
    // failed" (6), and the connection stays (honoured resets: tests/tmf_reset.rs).
    assert_eq!(i.tmf(TmfFunction::TargetWarmReset, 0, 0), 6);
    assert_eq!(i.tmf(TmfFunction::TargetColdReset, 0, 0), 6);
    assert_eq!(i.scsi(0, &[0, 0, 0, 0, 0, 0], 0, &[], 0).status, 0);
    h.shutdown();
}

#[test]
fn discovery_and_text() {
    let (h, addr) = start(|_, _| {});
    let mut d = Initiator::connect(addr);
    let o = LoginOpts {
        target: None,
        ..LoginOpts::default()
    };
    assert!(d.login(&o));
    let r = d.text(&[("SendTargets", "All")]);
    assert_eq!(r[0], ("TargetName".into(), TARGET.into()));
    assert_eq!(r[1], ("TargetAddress".into(), format!("{addr},1")));
    let r = d.text(&[("SendTargets", "Alle")]);
    assert_eq!(r, vec![("SendTargets".into(), "Reject".into())]);
    let r = d.text(&[("SendTargetsPlease", "All")]);
    assert_eq!(
        r,
        vec![("SendTargetsPlease".into(), "NotUnderstood".into())]
    );
    // SCSI commands are not allowed in a discovery session.
    let (_, pdu) = d.command(0, &[0, 0, 0, 0, 0, 0], false, false, 0, vec![]);
    d.send(&pdu);
    let Header::Reject(r) = d.recv().header else {
        panic!()
    };
    assert_eq!(r.reason, 0x04);
    assert_eq!(d.logout(LogoutReason::CloseSession, 1), 0);

    // SendTargets in a normal session returns the session's target.
    let mut n = Initiator::connect(addr);
    assert!(n.login(&LoginOpts::default()));
    let r = n.text(&[("SendTargets", "")]);
    assert_eq!(r[0].1, TARGET);
    assert_eq!(n.logout(LogoutReason::RemoveForRecovery, 1), 2);
    assert_eq!(
        n.logout(LogoutReason::CloseConnection, 9),
        1,
        "CID not found"
    );
    assert_eq!(n.logout(LogoutReason::CloseConnection, 1), 0);
    assert!(n.try_recv().is_none());
    h.shutdown();
}

#[test]
fn acl_and_chap() {
    let (h, addr) = start(|_, tpg| {
        tpg.generate_node_acls = false;
        tpg.authentication = true;
        tpg.acls.push(AclConfig {
            initiator: INITIATOR.into(),
            chap: Some(ChapCredentials {
                userid: "user".into(),
                password: "secret123456".into(),
                mutual: None,
            }),
            authentication: None,
            mapped_luns: vec![MappedLunConfig {
                index: 3,
                tpg_lun: 0,
                write_protect: true,
            }],
            tmr_warm_reset: false,
            tmr_cold_reset: false,
        });
    });
    // Unknown initiator: authorization failure 0x0202.
    let mut i = Initiator::connect(addr);
    let o = LoginOpts {
        initiator: "iqn.2024-01.org.rustio.test:stranger".into(),
        ..LoginOpts::default()
    };
    assert!(!i.login(&o));
    assert_eq!(i.login_status, (2, 2));
    // No CHAP while required: 0x0201.
    let mut i = Initiator::connect(addr);
    assert!(!i.login(&LoginOpts::default()));
    assert_eq!(i.login_status, (2, 1));
    // Wrong secret: 0x0201.
    let mut i = Initiator::connect(addr);
    let o = LoginOpts {
        chap: Some(("user".into(), "wrong".into())),
        ..LoginOpts::default()
    };
    assert!(!i.login(&o));
    assert_eq!(i.login_status, (2, 1));
    // Right secret: in, and the ACL maps TPG LUN 0 as LUN 3, write protected.
    let mut i = Initiator::connect(addr);
    let o = LoginOpts {
        chap: Some(("user".into(), "secret123456".into())),
        ..LoginOpts::default()
    };
    assert!(i.login(&o));
    i.clear_ua(3);
    let r = i.scsi(3, &read10(0, 1), 512, &[], 0);
    assert_eq!(r.status, 0);
    let r = i.scsi(3, &write10(0, 1), 0, &[0u8; 512], 512);
    assert_eq!(r.status, 2);
    assert_eq!(r.sense[2] & 0x0f, 7, "DATA PROTECT");
    // LUN 0 is not mapped for this initiator.
    let r = i.scsi(0, &read10(0, 1), 512, &[], 0);
    assert_eq!(r.status, 2);
    assert_eq!(
        (r.sense[12], r.sense[13]),
        (0x25, 0x00),
        "LOGICAL UNIT NOT SUPPORTED"
    );
    h.shutdown();
}

#[test]
fn session_reinstatement_and_multi_connection() {
    let (h, addr) = start(|_, tpg| {
        tpg.params.offer.max_connections = 2;
    });
    let mut a = Initiator::connect(addr);
    let mut o = LoginOpts::default();
    o.keys.push(("MaxConnections".into(), "4".into()));
    assert!(a.login(&o));
    assert_eq!(a.key("MaxConnections"), Some("2"));
    let tsih = a.tsih;
    // Second connection of the same session.
    let mut b = Initiator::connect(addr);
    let o2 = LoginOpts {
        tsih,
        cid: 2,
        clear_ua: false,
        ..o.clone()
    };
    assert!(b.login(&o2));
    assert_eq!(b.tsih, tsih);
    // Commands on both connections share the session's CmdSN space.
    b.cmd_sn = a.cmd_sn;
    let r = b.scsi(0, &read10(0, 1), 512, &[], 0);
    assert_eq!(r.status, 0);
    a.cmd_sn = b.cmd_sn;
    let r = a.scsi(0, &read10(0, 1), 512, &[], 0);
    assert_eq!(r.status, 0);
    // A third connection exceeds MaxConnections=2: 0x0206.
    let mut c = Initiator::connect(addr);
    let o3 = LoginOpts {
        tsih,
        cid: 3,
        clear_ua: false,
        ..o.clone()
    };
    assert!(!c.login(&o3));
    assert_eq!(c.login_status, (2, 6));
    // A TSIH that does not exist: 0x020a.
    let mut c = Initiator::connect(addr);
    let o4 = LoginOpts {
        tsih: tsih.wrapping_add(100),
        cid: 3,
        clear_ua: false,
        ..o.clone()
    };
    assert!(!c.login(&o4));
    assert_eq!(c.login_status, (2, 0x0a));
    // Logging in again with TSIH 0 and the same ISID reinstates: old connections drop.
    let mut n = Initiator::connect(addr);
    let o5 = LoginOpts {
        clear_ua: false,
        ..o.clone()
    };
    assert!(n.login(&o5));
    assert_ne!(n.tsih, tsih);
    assert!(a.try_recv().is_none());
    assert!(b.try_recv().is_none());
    assert_eq!(
        n.scsi(0, &read10(0, 1), 512, &[], 0).status,
        2,
        "UA after nexus loss"
    );
    assert_eq!(n.scsi(0, &read10(0, 1), 512, &[], 0).status, 0);
    h.shutdown();
}

#[test]
fn many_sessions_in_parallel() {
    let (h, addr) = start(|_, _| {});
    let threads: Vec<_> = (0..8u8)
        .map(|k| {
            std::thread::spawn(move || {
                let mut i = Initiator::connect(addr);
                let mut o = LoginOpts::default();
                o.isid[5] = k;
                assert!(i.login(&o));
                for n in 0..20u32 {
                    let lba = u32::from(k) * 64 + (n % 8) * 8;
                    let data = pattern(4096, k.wrapping_add(n as u8));
                    assert_eq!(i.scsi(0, &write10(lba, 8), 0, &data, 4096).status, 0);
                    let r = i.scsi(0, &read10(lba, 8), 4096, &[], 0);
                    assert!(r.data == data);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(h.metrics_text().contains("rustio_lun_write_commands_total{target=\"iqn.2024-01.org.rustio.test:disk\",tpg=\"1\",lun=\"0\",backstore=\"lun0\"} 160"));
    h.shutdown();
}

#[test]
fn pipelined_commands_and_window() {
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    // queue_depth 16: MaxCmdSN - ExpCmdSN + 1 == 16.
    assert_eq!(i.max_cmd_sn.wrapping_sub(i.exp_cmd_sn) + 1, 16);
    let mut itts = Vec::new();
    for k in 0..16u32 {
        let (itt, pdu) = i.command(0, &read10(k * 8, 8), true, false, 4096, vec![]);
        i.send(&pdu);
        itts.push(itt);
    }
    let mut done = 0;
    while done < 16 {
        let p = i.recv();
        if let Header::DataIn(h) = p.header {
            if h.status_present {
                assert!(itts.contains(&h.itt));
                done += 1;
            }
        }
    }
    h.shutdown();
}

#[test]
fn shutdown_requests_logout() {
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    let t = std::thread::spawn(move || h.shutdown());
    let p = i.recv();
    let Header::AsyncMessage(m) = p.header else {
        panic!("{:?}", p.header)
    };
    assert_eq!(m.event, 1);
    assert!(m.param3 >= 1);
    assert_eq!(i.logout(LogoutReason::CloseSession, 1), 0);
    t.join().unwrap();
}

#[test]
fn reload_keeps_unaffected_sessions() {
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    // Same configuration plus another target: the session continues.
    let mut cfg = (*h.config()).clone();
    let mut tpg = rustio_iscsi::TpgConfig::new(1);
    tpg.portals.push(rustio_iscsi::PortalConfig { addr });
    tpg.generate_node_acls = true;
    cfg.targets.push(Arc::new(rustio_iscsi::TargetConfig {
        iqn: "iqn.2024-01.org.rustio.test:second".into(),
        tpgs: vec![Arc::new(tpg)],
    }));
    let report = h.reload(cfg.clone()).unwrap();
    assert_eq!(report.sessions_closed, 0);
    assert_eq!(report.sessions_kept, 1);
    assert_eq!(i.scsi(0, &read10(0, 1), 512, &[], 0).status, 0);
    let mut j = Initiator::connect(addr);
    let o = LoginOpts {
        target: Some("iqn.2024-01.org.rustio.test:second".into()),
        ..LoginOpts::default()
    };
    assert!(j.login(&o));
    // Removing the first target closes its session.
    cfg.targets.remove(0);
    let report = h.reload(cfg).unwrap();
    assert_eq!(report.sessions_closed, 1);
    assert!(i.try_recv().is_none());
    h.shutdown();
}

/// A server offering InitialR2T=No and FirstBurstLength 8 KiB, and a session logged in
/// with them (unsolicited Data-Out allowed, RFC 7143 13.10, 13.14).
fn unsolicited_session() -> (rustio_iscsi::ServerHandle, Initiator) {
    let (h, addr) = start(|_, tpg| {
        tpg.params.offer.initial_r2t = false;
        tpg.params.offer.first_burst_length = 8192;
    });
    let mut i = Initiator::connect(addr);
    let mut o = LoginOpts::default();
    o.keys[3].1 = "No".into(); // InitialR2T=No
    o.keys[6].1 = "8192".into(); // FirstBurstLength
    assert!(i.login(&o));
    (h, i)
}

#[test]
fn immediate_command_and_unsolicited_data() {
    let (h, mut i) = unsolicited_session();
    // 16 KiB write: 2 KiB immediate + 6 KiB unsolicited Data-Out, then one R2T.
    let data = pattern(16384, 9);
    let (itt, mut pdu) = i.command(
        0,
        &write10(200, 32),
        false,
        true,
        16384,
        data[..2048].to_vec(),
    );
    if let Header::ScsiCommand(c) = &mut pdu.header {
        c.final_bit = false;
    }
    i.send(&pdu);
    for (k, off) in [2048usize, 6144].iter().enumerate() {
        let n = if k == 0 { 4096 } else { 2048 };
        i.send(&Pdu::new(
            Header::DataOut(rustio_iscsi_proto::pdu::DataOut {
                final_bit: k == 1,
                lun: 0,
                itt,
                ttt: RESERVED_TAG,
                exp_stat_sn: i.exp_stat_sn,
                data_sn: k as u32,
                buffer_offset: *off as u32,
            }),
            data[*off..*off + n].to_vec(),
        ));
    }
    let r = i.collect(itt, &data, 8192);
    assert_eq!(r.status, 0);
    assert_eq!(r.r2ts, 1);
    let r = i.scsi(0, &read10(200, 32), 16384, &[], 0);
    assert!(r.data == data);
    // An immediate command (I bit) is answered without consuming a CmdSN.
    let before = i.cmd_sn;
    let (itt, mut pdu) = i.command(0, &[0, 0, 0, 0, 0, 0], false, false, 0, vec![]);
    i.cmd_sn = before;
    if let Header::ScsiCommand(c) = &mut pdu.header {
        c.immediate = true;
    }
    i.send(&pdu);
    let r = i.collect(itt, &[], 8192);
    assert_eq!(r.status, 0);
    assert_eq!(i.exp_cmd_sn, before);
    h.shutdown();
}

#[test]
fn data_sn_error_terminates_the_task() {
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    let (itt, pdu) = i.command(0, &write10(0, 2), false, true, 1024, vec![]);
    i.send(&pdu);
    let Header::R2t(r2t) = i.recv().header else {
        panic!()
    };
    for (k, sn) in [0u32, 0].iter().enumerate() {
        i.send(&Pdu::new(
            Header::DataOut(rustio_iscsi_proto::pdu::DataOut {
                final_bit: k == 1,
                lun: 0,
                itt,
                ttt: r2t.ttt,
                exp_stat_sn: i.exp_stat_sn,
                data_sn: *sn,
                buffer_offset: k as u32 * 512,
            }),
            vec![5; 512],
        ));
    }
    let r = i.collect(itt, &[], 512);
    assert_eq!(r.status, 2);
    assert_eq!(
        (r.sense[2] & 0x0f, r.sense[12], r.sense[13]),
        (0x0b, 0x47, 0x05)
    );
    // The connection survives.
    assert_eq!(i.scsi(0, &[0, 0, 0, 0, 0, 0], 0, &[], 0).status, 0);
    h.shutdown();
}

/// An initiator that ends its Data-Out early (F bit) before the data the command
/// transfers has arrived: the command fails with CHECK CONDITION, ABORTED COMMAND, and the
/// blocks keep their contents — no zeros written for the bytes never sent. A short
/// solicited sequence is DATA PHASE ERROR (4Bh/00h); a short unsolicited burst is WRITE
/// ERROR - NOT ENOUGH UNSOLICITED DATA (0Ch/0Dh), as LIO answers.
#[test]
fn data_out_ended_early_fails_and_writes_nothing() {
    let (h, mut i) = unsolicited_session();
    let before = pattern(8192, 3);
    assert_eq!(i.scsi(0, &write10(300, 16), 0, &before, 8192).status, 0);
    let data_out = |i: &mut Initiator, itt, ttt, offset: u32, data: Vec<u8>| {
        let pdu = Pdu::new(
            Header::DataOut(rustio_iscsi_proto::pdu::DataOut {
                final_bit: true,
                lun: 0,
                itt,
                ttt,
                exp_stat_sn: i.exp_stat_sn,
                data_sn: 0,
                buffer_offset: offset,
            }),
            data,
        );
        i.send(&pdu);
    };
    let sense_of = |r: &ScsiResult| (r.status, r.sense[2] & 0x0f, r.sense[12], r.sense[13]);

    // Unsolicited burst closed after 2 KiB of the 8 KiB it was entitled to.
    let (itt, mut pdu) = i.command(0, &write10(300, 16), false, true, 8192, vec![]);
    if let Header::ScsiCommand(c) = &mut pdu.header {
        c.final_bit = false;
    }
    i.send(&pdu);
    data_out(&mut i, itt, RESERVED_TAG, 0, vec![0xee; 2048]);
    let r = i.collect(itt, &[], 8192);
    assert_eq!(sense_of(&r), (2, 0x0b, 0x0c, 0x0d));

    // A solicited sequence closed after 512 of the 8 KiB its R2T asked for: 16 KiB write,
    // all 8 KiB unsolicited sent in full, then the R2T for the rest answered short.
    let (itt, mut pdu) = i.command(0, &write10(300, 32), false, true, 16384, vec![]);
    if let Header::ScsiCommand(c) = &mut pdu.header {
        c.final_bit = false;
    }
    i.send(&pdu);
    data_out(&mut i, itt, RESERVED_TAG, 0, vec![0xee; 8192]);
    let Header::R2t(r2t) = i.recv().header else {
        panic!("expected an R2T")
    };
    assert_eq!((r2t.buffer_offset, r2t.desired_len), (8192, 8192));
    data_out(&mut i, itt, r2t.ttt, 8192, vec![0xee; 512]);
    let r = i.collect(itt, &[], 8192);
    assert_eq!(sense_of(&r), (2, 0x0b, 0x4b, 0x00));

    // Nothing of either short write reached the blocks.
    let r = i.scsi(0, &read10(300, 16), 8192, &[], 0);
    assert!(r.data == before, "a short write changed the blocks");
    h.shutdown();
}

#[test]
fn nop_in_keepalive() {
    let (h, addr) = start(|_, tpg| {
        tpg.params.nopin_interval = std::time::Duration::from_secs(1);
        tpg.params.nopin_response_timeout = std::time::Duration::from_secs(2);
    });
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    // The target pings an idle connection: ITT reserved, TTT set, StatSN not advanced.
    let p = i.recv();
    let Header::NopIn(n) = p.header else {
        panic!("{:?}", p.header)
    };
    assert_eq!(n.itt, RESERVED_TAG);
    assert_ne!(n.ttt, RESERVED_TAG);
    assert_eq!(n.stat_sn, i.exp_stat_sn);
    // Answer it (immediate NOP-Out echoing the TTT).
    i.send(&Pdu::new(
        Header::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: RESERVED_TAG,
            ttt: n.ttt,
            cmd_sn: i.cmd_sn,
            exp_stat_sn: i.exp_stat_sn,
        }),
        vec![],
    ));
    // Next ping comes; ignore it: the connection is dropped after the timeout.
    let p = i.recv();
    assert!(matches!(p.header, Header::NopIn(_)));
    let t0 = std::time::Instant::now();
    assert!(i.try_recv().is_none());
    assert!(t0.elapsed() < std::time::Duration::from_secs(8));
    h.shutdown();
}

#[test]
fn metrics_over_http() {
    use std::io::{Read, Write};
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    assert_eq!(i.scsi(0, &read10(0, 8), 4096, &[], 0).status, 0);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let maddr = l.local_addr().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = rustio_iscsi::metrics::serve(l, h.metrics_renderer(), stop.clone()).unwrap();
    let mut s = std::net::TcpStream::connect(maddr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"));
    assert!(body.contains("rustio_iscsi_sessions 1"));
    assert!(body.contains("rustio_session_read_bytes_total{target=\"iqn.2024-01.org.rustio.test:disk\",initiator=\"iqn.2024-01.org.rustio.test:initiator\",isid=\"80123456789a\",tsih=\"1\"} 4096"));
    stop.store(true, std::sync::atomic::Ordering::Release);
    t.join().unwrap();
    h.shutdown();
}

#[test]
fn every_execution_mode_serves_small_and_large_commands() {
    for mode in [Execution::Inline, Execution::Pool, Execution::Auto] {
        let (h, addr) = start(|cfg, _| cfg.execution = mode);
        let mut i = Initiator::connect(addr);
        assert!(i.login(&LoginOpts::default()));
        let data = pattern(32768, 11);
        assert_eq!(i.scsi(0, &write10(64, 64), 0, &data, 4096).status, 0);
        // Pipelined reads: some run inline, some on the pool; all complete.
        let mut itts = Vec::new();
        for k in 0..8u32 {
            let (itt, pdu) = i.command(0, &read10(64 + k * 8, 8), true, false, 4096, vec![]);
            i.send(&pdu);
            itts.push(itt);
        }
        let mut got = std::collections::HashMap::new();
        while got.len() < 8 {
            let p = i.recv();
            if let Header::DataIn(d) = p.header {
                got.entry(d.itt)
                    .or_insert_with(Vec::new)
                    .extend_from_slice(&p.data);
            }
        }
        for (k, itt) in itts.iter().enumerate() {
            assert!(got[itt] == data[k * 4096..(k + 1) * 4096], "{mode:?}");
        }
        // Larger than AUTO_INLINE_MAX: the pool under Auto; twice, so that the second
        // write reuses the first one's recycled buffer.
        for seed in [21, 22] {
            let big = pattern(256 << 10, seed);
            assert_eq!(
                i.scsi(0, &write10(1024, 512), 0, &big, 4096).status,
                0,
                "{mode:?}"
            );
            let r = i.scsi(0, &read10(1024, 512), 256 << 10, &[], 0);
            assert_eq!(r.status, 0, "{mode:?}");
            assert!(r.data == big, "{mode:?}: 256 KiB read back differs");
        }
        h.shutdown();
    }
}
