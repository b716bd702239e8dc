//! Issue 20 items 3 and 4: login deadline, connection caps, and a peer that stops
//! reading must not starve other sessions.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Whether the server closed `s` within `limit` (EOF or reset), reading whatever comes.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut b = [0u8; 512];
    while Instant::now() < end {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn dripping_login_is_dropped_at_its_deadline() {
    let (h, addr) = start(|cfg, _| cfg.login_timeout = Duration::from_secs(2));
    let mut s = TcpStream::connect(addr).unwrap();
    let t0 = Instant::now();
    // One byte every 300 ms: never a quiet read tick, never a whole PDU.
    let mut dropped = false;
    for k in 0..30u8 {
        if s.write_all(&[0x43 + (k % 2)]).is_err() {
            dropped = true;
            break;
        }
        if closed_within(&mut s, Duration::from_millis(300)) {
            dropped = true;
            break;
        }
    }
    let took = t0.elapsed();
    assert!(dropped, "dripping login still open after {took:?}");
    assert!(took < Duration::from_secs(5), "dropped after {took:?}");
    assert_eq!(h.write_buffer_stats().login_timeouts, 1);
    assert_eq!(h.open_connections(), (0, 0));
    h.shutdown();
}

#[test]
fn pending_login_cap_refuses_the_next_connection() {
    let (h, addr) = start(|cfg, _| cfg.max_pending_logins = 2);
    let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.open_connections(), (2, 2));
    let mut third = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(2)),
        "third login not refused"
    );
    assert_eq!(h.write_buffer_stats().refused_connections, 1);
    // The idle ones are still there; once one goes, a real login gets in.
    assert!(!closed_within(&mut idle[0], Duration::from_millis(200)));
    idle.pop();
    std::thread::sleep(Duration::from_millis(200));
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    assert_eq!(h.open_connections(), (2, 1));
    h.shutdown();
}

#[test]
fn total_and_per_source_caps_refuse_the_next_connection() {
    // Each cap alone (all test clients come from 127.0.0.1).
    for (total, per_source) in [(2, 128), (1024, 2)] {
        let (h, addr) = start(|cfg, _| {
            cfg.max_connections = total;
            cfg.max_connections_per_source = per_source;
        });
        let mut sessions = Vec::new();
        for k in 0..2u8 {
            let mut i = Initiator::connect(addr);
            let mut o = LoginOpts::default();
            o.isid[5] = k;
            assert!(i.login(&o));
            sessions.push(i);
        }
        let mut s = TcpStream::connect(addr).unwrap();
        assert!(
            closed_within(&mut s, Duration::from_secs(2)),
            "third connection not refused (total {total}, per source {per_source})"
        );
        assert_eq!(h.write_buffer_stats().refused_connections, 1);
        // The logged-in sessions are unaffected.
        let r = sessions[0].scsi(0, &read10(0, 8), 4096, &[], 0);
        assert_eq!(r.status, 0);
        h.shutdown();
    }
}

#[test]
fn a_peer_that_stops_reading_does_not_starve_other_sessions() {
    stuck_peer_starves_nobody(ram_lu(65536, "big"), |_| {});
}

/// Review of 6246fed, item 2: a peer that reads a little now and then (64 KiB every
/// 2 s, never a 4 s send timeout without progress) must not hold workers, and is
/// dropped once a response misses its deadline (send timeout + size at the minimum
/// rate, here 4 s + 1 s per 1 MiB READ).
#[test]
fn a_slow_reader_is_dropped_by_the_response_deadline_and_starves_nobody() {
    let (h, addr) = start(|cfg, tpg| {
        cfg.send_timeout = Duration::from_secs(4);
        cfg.min_transfer_rate = 1 << 20;
        cfg.queue_depth = 128;
        cfg.workers = 2;
        tpg.luns[0].lu = ram_lu(65536, "big");
    });
    let (mut slow, mut good) = two_sessions(addr);
    // More 1 MiB READs than workers, and far more than the sockets' buffers hold.
    stall_with_reads(&mut slow, 32);
    let mut rd = slow.s.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let end = Instant::now() + Duration::from_secs(40);
        rd.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        while Instant::now() < end {
            let mut got = 0;
            while got < buf.len() && Instant::now() < end {
                match rd.read(&mut buf[got..]) {
                    Ok(0) => return,
                    Ok(n) => got += n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    let t0 = Instant::now();
    // The other session is served promptly all along, with one of two workers.
    while h.connection_count() > 1 && t0.elapsed() < Duration::from_secs(25) {
        read_mib_within(&mut good, Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        h.connection_count(),
        1,
        "slow reader not dropped after {:?}",
        t0.elapsed()
    );
    assert!(h.write_buffer_stats().send_timeouts >= 1);
    let r = good.scsi(0, &read10(0, 2048), 1 << 20, &[], 0);
    assert_eq!(r.status, 0);
    drop(slow);
    reader.join().unwrap();
    h.shutdown();
}
