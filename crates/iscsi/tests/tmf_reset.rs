//! TARGET WARM RESET / TARGET COLD RESET abort every initiator's tasks on the units the
//! resetter's LUN map reaches (and a cold reset drops every session of the target), so
//! only initiators whose node ACL opts in (`tmr_warm_reset` / `tmr_cold_reset`, as
//! in LIO) may use them; anyone else gets "Function authorization failed" (RFC 7143
//! 11.6.1, response 6) and the other initiators do not notice (issue 20 item 6).

mod common;

use std::time::Duration;

use common::*;
use rustio_iscsi::config::{AclConfig, MappedLunConfig};
use rustio_iscsi_proto::pdu::TmfFunction;

const B: &str = "iqn.2024-01.org.rustio.test:b";

/// RFC 7143 11.6.1 response codes.
const COMPLETE: u8 = 0;
const AUTHORIZATION_FAILED: u8 = 6;

/// One target with ACLs for INITIATOR (A) and B, both mapping LUN 0; `edit_b` sets
/// B's reset rights.
fn server(
    edit_b: impl FnOnce(&mut AclConfig),
) -> (rustio_iscsi::ServerHandle, std::net::SocketAddr) {
    start(move |_, tpg| {
        tpg.generate_node_acls = false;
        for name in [INITIATOR, B] {
            let mut acl = AclConfig::new(name);
            acl.mapped_luns.push(MappedLunConfig {
                index: 0,
                tpg_lun: 0,
                write_protect: false,
            });
            tpg.acls.push(acl);
        }
        edit_b(&mut tpg.acls[1]);
    })
}

fn login(addr: std::net::SocketAddr, name: &str, isid_last: u8) -> Initiator {
    let mut i = Initiator::connect(addr);
    let mut o = LoginOpts {
        initiator: name.into(),
        ..LoginOpts::default()
    };
    o.isid[5] = isid_last;
    assert!(i.login(&o), "login of {name}: {:?}", i.login_status);
    i
}

/// Whether the server closed `i`'s connection (end of stream or reset within 5 s; any
/// PDU still in flight is skipped). A read timeout means it is still open.
fn closed(i: &mut Initiator) -> bool {
    use std::io::{ErrorKind, Read};
    i.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match i.s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn target_resets_are_refused_without_the_acl_attribute() {
    let (h, addr) = server(|_| {});
    let mut a = login(addr, INITIATOR, 1);
    let mut b = login(addr, B, 2);
    // A has a WRITE outstanding, waiting for its Data-Out (InitialR2T=Yes, no
    // immediate data) while B tries to reset the target.
    let data = pattern(8 * 512, 3);
    let (itt, cmd) = a.command(0, &write10(40, 8), false, true, data.len() as u32, vec![]);
    a.send(&cmd);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        b.tmf(TmfFunction::TargetWarmReset, 0, 0),
        AUTHORIZATION_FAILED
    );
    assert_eq!(
        b.tmf(TmfFunction::TargetColdReset, 0, 0),
        AUTHORIZATION_FAILED
    );
    // A's write completes, and A sees no reset (no POWER ON, RESET unit attention).
    let r = a.collect(itt, &data, 8192);
    assert_eq!(r.status, 0, "sense {:?}", r.sense);
    assert_eq!(a.scsi(0, &[0, 0, 0, 0, 0, 0], 0, &[], 0).status, 0);
    assert_eq!(a.scsi(0, &read10(40, 8), 8 * 512, &[], 0).data, data);
    // B's session is still up too (a refused cold reset drops no connection).
    assert_eq!(b.scsi(0, &[0, 0, 0, 0, 0, 0], 0, &[], 0).status, 0);
    h.shutdown();
}

#[test]
fn target_warm_reset_is_honoured_with_the_acl_attribute() {
    let (h, addr) = server(|b| b.tmr_warm_reset = true);
    let mut a = login(addr, INITIATOR, 1);
    let mut b = login(addr, B, 2);
    assert_eq!(b.tmf(TmfFunction::TargetWarmReset, 0, 0), COMPLETE);
    // The reset reached A: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29h/00h).
    let r = a.scsi(0, &[0, 0, 0, 0, 0, 0], 0, &[], 0);
    assert_eq!(r.status, 0x02);
    assert_eq!((r.sense[2] & 0x0f, r.sense[12]), (0x06, 0x29));
    // Warm reset only: the cold one is still refused for B.
    assert_eq!(
        b.tmf(TmfFunction::TargetColdReset, 0, 0),
        AUTHORIZATION_FAILED
    );
    h.shutdown();
}

#[test]
fn target_cold_reset_is_honoured_with_the_acl_attribute() {
    let (h, addr) = server(|b| b.tmr_cold_reset = true);
    let mut a = login(addr, INITIATOR, 1);
    let mut b = login(addr, B, 2);
    // Cold reset (RFC 7143 11.5.1): B gets its response, then every connection to the
    // target is dropped, A's included.
    assert_eq!(b.tmf(TmfFunction::TargetColdReset, 0, 0), COMPLETE);
    assert!(closed(&mut b), "B's connection is closed");
    assert!(closed(&mut a), "A's connection is closed");
    h.shutdown();
}

#[test]
fn target_reset_reaches_only_the_units_in_the_resetters_lun_map() {
    // Two units; A maps both, B (allowed to reset) only LUN 0. Every path to a logical
    // unit goes through the requesting nexus's LUN map: B's reset must not touch LUN 1,
    // neither A's task on it nor its state (no unit attention for A there).
    let (h, addr) = start(|_, tpg| {
        tpg.generate_node_acls = false;
        tpg.luns.push(rustio_iscsi::LunConfig {
            index: 1,
            lu: ram_lu(8192, "lun1"),
            name: "lun1".into(),
        });
        for (name, luns) in [(INITIATOR, &[0u64, 1][..]), (B, &[0][..])] {
            let mut acl = AclConfig::new(name);
            for &l in luns {
                acl.mapped_luns.push(MappedLunConfig {
                    index: l,
                    tpg_lun: l,
                    write_protect: false,
                });
            }
            acl.tmr_warm_reset = name == B;
            tpg.acls.push(acl);
        }
    });
    let mut a = login(addr, INITIATOR, 1);
    a.clear_ua(1);
    let mut b = login(addr, B, 2);
    // A's WRITE on LUN 1 waits for its Data-Out during the reset.
    let data = pattern(8 * 512, 5);
    let (itt, cmd) = a.command(1, &write10(16, 8), false, true, data.len() as u32, vec![]);
    a.send(&cmd);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(b.tmf(TmfFunction::TargetWarmReset, 0, 0), COMPLETE);
    let r = a.collect(itt, &data, 8192);
    assert_eq!(
        r.status, 0,
        "A's task on LUN 1 was not aborted: {:?}",
        r.sense
    );
    let r = a.scsi(1, &[0, 0, 0, 0, 0, 0], 0, &[], 0);
    assert_eq!(r.status, 0, "no unit attention on LUN 1: {:?}", r.sense);
    assert_eq!(a.scsi(1, &read10(16, 8), 8 * 512, &[], 0).data, data);
    // LUN 0, which B maps, was reset: A sees POWER ON, RESET (29h) there.
    let r = a.scsi(0, &[0, 0, 0, 0, 0, 0], 0, &[], 0);
    assert_eq!(r.status, 0x02);
    assert_eq!((r.sense[2] & 0x0f, r.sense[12]), (0x06, 0x29));
    h.shutdown();
}
