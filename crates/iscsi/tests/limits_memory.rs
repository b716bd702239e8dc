//! Issue 20 item 2: a WRITE's Expected Data Transfer Length is a promise, not memory.
//! Buffers grow only with data solicited (R2T) or received, bounded by the CDB's length
//! and by the per-session / per-server budgets; promised data that never comes is
//! released by the Data-Out timeout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rustio_iscsi_proto::pdu::{DataOut, Header, Pdu};

const MIB: u64 = 1 << 20;

/// WRITE(16) of `blocks` 512-byte blocks at LBA 0.
fn write16(blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x8a;
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

#[test]
fn edtl_beyond_the_cdb_is_neither_reserved_nor_solicited() {
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    // WRITE(10) of one block, EDTL 64 MiB, no data yet.
    let (itt, pdu) = i.command(0, &write10(5, 1), false, true, 64 << 20, vec![]);
    i.send(&pdu);
    let p = i.recv();
    let Header::R2t(r) = p.header else {
        panic!("R2T expected, got {:?}", p.header)
    };
    assert_eq!(r.itt, itt);
    assert_eq!(
        (r.buffer_offset, r.desired_len),
        (0, 512),
        "solicits the CDB's length"
    );
    let st = h.write_buffer_stats();
    assert_eq!(st.reserved, 512, "reserves the CDB's length, not EDTL");
    assert!(st.filled <= 512);
    let d = DataOut {
        final_bit: true,
        lun: r.lun,
        itt,
        ttt: r.ttt,
        exp_stat_sn: i.exp_stat_sn,
        data_sn: 0,
        buffer_offset: 0,
    };
    i.send(&Pdu::new(Header::DataOut(d), vec![9u8; 512]));
    let r = i.collect(itt, &[], 8192);
    assert_eq!(r.status, 0);
    assert!(
        r.underflow,
        "EDTL beyond the transfer is reported as residual"
    );
    assert_eq!(r.residual, (64 << 20) - 512);
    let r = i.scsi(0, &read10(5, 1), 512, &[], 0);
    assert!(r.data.iter().all(|&b| b == 9));
    assert!(wait_until(Duration::from_secs(2), || h
        .write_buffer_stats()
        .reserved
        == 0));
    h.shutdown();
}

#[test]
fn promised_64_mib_writes_do_not_take_memory_and_are_released() {
    let (h, addr) = start(|cfg, _| {
        cfg.data_out_timeout = Duration::from_secs(2);
        cfg.queue_depth = 32;
    });
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    // Eight 64 MiB WRITEs whose data never comes: the old code zero-filled 512 MiB.
    let mut itts = Vec::new();
    for _ in 0..8 {
        let (itt, pdu) = i.command(0, &write16(131072), false, true, 64 << 20, vec![]);
        i.send(&pdu);
        itts.push(itt);
    }
    // Only the first gets an R2T (MaxBurstLength 16 KiB); the rest wait for budget.
    let p = i.recv();
    let Header::R2t(r) = p.header else {
        panic!("R2T expected, got {:?}", p.header)
    };
    assert_eq!(r.itt, itts[0]);
    assert_eq!(r.desired_len, 16384);
    // A WRITE with immediate data that does not fit the session's budget: BUSY.
    let (busy_itt, pdu) = i.command(0, &write10(0, 8), false, true, 4096, vec![1u8; 4096]);
    i.send(&pdu);
    let p = i.recv();
    let Header::ScsiResponse(resp) = p.header else {
        panic!("SCSI Response expected, got {:?}", p.header)
    };
    assert_eq!(resp.itt, busy_itt);
    assert_eq!(resp.status, 0x08, "BUSY");
    let st = h.write_buffer_stats();
    assert_eq!(st.reserved, 64 * MIB, "one command's budget");
    assert!(st.filled <= 16384, "only solicited bytes exist: {st:?}");
    assert!(st.held >= 7, "{st:?}");
    assert!(st.busy >= 1, "{st:?}");
    // The data never comes: the Data-Out timeout drops the connection and everything
    // it held is released.
    assert!(
        wait_until(Duration::from_secs(8), || h.connection_count() == 0),
        "connection not dropped by the Data-Out timeout"
    );
    assert!(wait_until(Duration::from_secs(2), || {
        let s = h.write_buffer_stats();
        s.reserved == 0 && s.filled == 0
    }));
    assert!(h.write_buffer_stats().data_out_timeouts >= 1);
    // The server still serves writes.
    let mut j = Initiator::connect(addr);
    assert!(j.login(&LoginOpts::default()));
    let data = pattern(65536, 3);
    let r = j.scsi(0, &write10(100, 128), 0, &data, 4096);
    assert_eq!(r.status, 0);
    h.shutdown();
}

#[test]
fn server_budget_holds_other_sessions_until_budget_frees() {
    let (h, addr) = start(|cfg, _| {
        cfg.max_write_buffer = 64 << 20;
    });
    let mut a = Initiator::connect(addr);
    assert!(a.login(&LoginOpts::default()));
    let (_, pdu) = a.command(0, &write16(131072), false, true, 64 << 20, vec![]);
    a.send(&pdu);
    let Header::R2t(_) = a.recv().header else {
        panic!("R2T expected")
    };
    // Another session's write waits (no R2T) while the server budget is taken...
    let mut b = Initiator::connect(addr);
    let mut o = LoginOpts::default();
    o.isid[5] = 2;
    assert!(b.login(&o));
    let data = pattern(8192, 5);
    let (itt, pdu) = b.command(0, &write10(40, 16), false, true, 8192, vec![]);
    b.send(&pdu);
    b.s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    assert!(b.try_recv().is_none(), "no R2T while the budget is taken");
    b.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // ...and proceeds as soon as the first session goes away.
    drop(a);
    let r = b.collect(itt, &data, 8192);
    assert_eq!(r.status, 0);
    let r = b.scsi(0, &read10(40, 16), 8192, &[], 0);
    assert!(r.data == data);
    h.shutdown();
}

/// Waits for an R2T for `itt`, skipping anything else.
fn r2t_for(i: &mut Initiator, itt: u32) -> rustio_iscsi_proto::pdu::R2t {
    for _ in 0..16 {
        if let Header::R2t(r) = i.recv().header {
            if r.itt == itt {
                return r;
            }
        }
    }
    panic!("no R2T for {itt:#x}")
}

/// A 512-byte Data-Out at `offset` of the R2T `r` (F=0: more to come).
fn drip(i: &mut Initiator, r: &rustio_iscsi_proto::pdu::R2t, k: u32) {
    let d = DataOut {
        final_bit: false,
        lun: r.lun,
        itt: r.itt,
        ttt: r.ttt,
        exp_stat_sn: i.exp_stat_sn,
        data_sn: k,
        buffer_offset: r.buffer_offset + k * 512,
    };
    i.send(&Pdu::new(Header::DataOut(d), vec![7u8; 512]));
}

/// Review of 6246fed, item 1: a command waiting in the CmdSN window for a missing CmdSN
/// held its whole write budget, and the window (never cleared, a reference cycle through
/// the connection) kept it for ever after the session ended.
#[test]
fn out_of_order_write_budget_released_when_session_ends() {
    let (h, addr) = start(|cfg, _| {
        cfg.max_write_buffer = 64 << 20;
    });
    let mut a = Initiator::connect(addr);
    assert!(a.login(&LoginOpts::default()));
    a.cmd_sn = a.cmd_sn.wrapping_add(1); // leave a CmdSN gap
    let (_, pdu) = a.command(0, &write16(131072), false, true, 64 << 20, vec![]);
    a.send(&pdu);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        h.write_buffer_stats().reserved,
        0,
        "a command waiting in the CmdSN window holds no budget"
    );
    drop(a);
    assert!(wait_until(Duration::from_secs(5), || h.connection_count() == 0));
    std::thread::sleep(Duration::from_millis(300));
    let st = h.write_buffer_stats();
    assert_eq!(st.reserved, 0, "budget leaked by a session that ended");
    // Another initiator's write gets its R2T at once.
    let mut b = Initiator::connect(addr);
    let mut o = LoginOpts::default();
    o.isid[5] = 2;
    assert!(b.login(&o));
    let (_, pdu) = b.command(0, &write10(40, 16), false, true, 8192, vec![]);
    b.send(&pdu);
    b.s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let got = b.try_recv();
    assert!(
        matches!(got.as_ref().map(|p| &p.header), Some(Header::R2t(_))),
        "{:?}",
        got.map(|p| p.header)
    );
    h.shutdown();
}

/// A CmdSN gap that never fills is not a way to park commands (and their immediate
/// data) for ever: the connection goes after the Data-Out timeout.
#[test]
fn cmdsn_gap_that_never_fills_drops_the_connection() {
    let (h, addr) = start(|cfg, _| {
        cfg.data_out_timeout = Duration::from_secs(2);
    });
    let mut a = Initiator::connect(addr);
    assert!(a.login(&LoginOpts::default()));
    a.cmd_sn = a.cmd_sn.wrapping_add(1);
    let (_, pdu) = a.command(0, &write10(0, 8), false, true, 4096, vec![1u8; 4096]);
    a.send(&pdu);
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(6), || h.connection_count() == 0),
        "connection with a CmdSN gap still open after {:?}",
        t.elapsed()
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(h.write_buffer_stats().reserved, 0);
    h.shutdown();
}

/// Review of 6246fed, item 3: Data-Out dripping in just often enough to beat the
/// no-progress timeout kept a reservation for ever; a write now has the Data-Out
/// timeout plus its size at the minimum rate, however its data trickles.
#[test]
fn dripping_data_out_is_cut_at_the_wall_clock_limit() {
    let (h, addr) = start(|cfg, _| {
        cfg.data_out_timeout = Duration::from_secs(2);
        cfg.min_transfer_rate = 1 << 20;
    });
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    // 2 MiB: 2 s + 2 MiB at 1 MiB/s = 4 s.
    let (itt, pdu) = i.command(0, &write16(4096), false, true, 2 << 20, vec![]);
    i.send(&pdu);
    let r = r2t_for(&mut i, itt);
    assert!(r.desired_len >= 512 * 16);
    let t = Instant::now();
    let mut k = 0;
    let mut dropped = false;
    while t.elapsed() < Duration::from_secs(9) && k < 16 {
        drip(&mut i, &r, k);
        k += 1;
        if wait_until(Duration::from_millis(500), || h.connection_count() == 0) {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "dripping write still open after {:?}", t.elapsed());
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "dropped too early: {:?}",
        t.elapsed()
    );
    assert!(h.write_buffer_stats().data_out_timeouts >= 1);
    assert!(wait_until(Duration::from_secs(2), || h
        .write_buffer_stats()
        .reserved
        == 0));
    h.shutdown();
}

/// Review of 6246fed, item 3: a write waiting for budget was excluded from every
/// timeout; it is now answered BUSY once it has waited the Data-Out timeout.
#[test]
fn write_waiting_for_budget_is_answered_busy_after_the_timeout() {
    let (h, addr) = start(|cfg, _| {
        cfg.max_write_buffer = 64 << 20;
        cfg.data_out_timeout = Duration::from_secs(2);
    });
    let mut a = Initiator::connect(addr);
    assert!(a.login(&LoginOpts::default()));
    let (a_itt, pdu) = a.command(0, &write16(131072), false, true, 64 << 20, vec![]);
    a.send(&pdu);
    let r = r2t_for(&mut a, a_itt);
    let mut b = Initiator::connect(addr);
    let mut o = LoginOpts::default();
    o.isid[5] = 2;
    assert!(b.login(&o));
    let (b_itt, pdu) = b.command(0, &write10(40, 16), false, true, 8192, vec![]);
    b.send(&pdu);
    b.s.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let t = Instant::now();
    let mut got = None;
    let mut k = 0;
    // A keeps its budget alive (well within its wall-clock limit) while B waits.
    while t.elapsed() < Duration::from_secs(6) && got.is_none() {
        drip(&mut a, &r, k);
        k += 1;
        got = b.try_recv();
    }
    let p = got.unwrap_or_else(|| panic!("no answer to a held write after {:?}", t.elapsed()));
    let Header::ScsiResponse(resp) = p.header else {
        panic!("SCSI Response expected, got {:?}", p.header)
    };
    assert_eq!(resp.itt, b_itt);
    assert_eq!(resp.status, 0x08, "BUSY");
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(h.connection_count(), 2, "both sessions stay");
    assert_eq!(h.write_buffer_stats().reserved, 64 * MIB);
    h.shutdown();
}

/// Review of 6246fed, item 5: a reload changes the per-session budget of sessions
/// already logged in, not only the server's.
#[test]
fn reload_changes_the_session_budget_of_live_sessions() {
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    let mut cfg = (*h.config()).clone();
    cfg.max_session_write_buffer = 1 << 20;
    h.reload(cfg).unwrap();
    // 1 MiB takes the whole (new) session budget...
    let (itt, pdu) = i.command(0, &write16(2048), false, true, 1 << 20, vec![]);
    i.send(&pdu);
    r2t_for(&mut i, itt);
    // ...so a write with immediate data finds none: BUSY.
    let (busy_itt, pdu) = i.command(0, &write10(0, 8), false, true, 4096, vec![1u8; 4096]);
    i.send(&pdu);
    let p = i.recv();
    let Header::ScsiResponse(resp) = p.header else {
        panic!("SCSI Response expected, got {:?}", p.header)
    };
    assert_eq!(resp.itt, busy_itt);
    assert_eq!(resp.status, 0x08, "BUSY under the reloaded session budget");
    h.shutdown();
}

/// Review of c36f91c, item 2: commands parked in the CmdSN window behind a gap kept their
/// immediate data outside every budget (about 8 MiB per session for as long as the gap
/// lasted). Their immediate data is now reserved on arrival; what does not fit is
/// skipped, and those commands are answered BUSY once the gap fills.
#[test]
fn immediate_data_waiting_in_the_cmdsn_window_is_within_the_budget() {
    // The test initiator's FirstBurstLength is 4096.
    const IMM: usize = 4096;
    let (h, addr) = start(|cfg, _| {
        cfg.max_session_write_buffer = 32 * 1024;
    });
    let mut a = Initiator::connect(addr);
    assert!(a.login(&LoginOpts::default()));
    let gap = a.cmd_sn;
    a.cmd_sn = a.cmd_sn.wrapping_add(1); // leave a CmdSN gap
    let mut itts = Vec::new();
    // 12 commands: within the test server's CmdSN window (queue depth 16).
    for k in 0..12u32 {
        let (itt, pdu) = a.command(
            0,
            &write10(k * 32, (IMM / 512) as u16),
            false,
            true,
            IMM as u32,
            vec![0x5a; IMM],
        );
        a.send(&pdu);
        itts.push(itt);
    }
    std::thread::sleep(Duration::from_millis(500));
    let st = h.write_buffer_stats();
    assert!(
        st.reserved <= 32 * 1024 && st.reserved >= IMM as u64,
        "held immediate data is reserved within the session budget: {st:?}"
    );
    // Fill the gap with a NOP-Out (a non-immediate command consumes the missing CmdSN).
    let nop = Pdu::new(
        Header::NopOut(rustio_iscsi_proto::pdu::NopOut {
            immediate: false,
            lun: 0,
            itt: 0x7000_0000,
            ttt: 0xffff_ffff,
            cmd_sn: gap,
            exp_stat_sn: a.exp_stat_sn,
        }),
        vec![],
    );
    a.send(&nop);
    a.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut good, mut busy) = (0, 0);
    while good + busy < itts.len() {
        let Some(p) = a.try_recv() else {
            panic!(
                "answers missing: {good} GOOD, {busy} BUSY; {:?}",
                h.write_buffer_stats()
            );
        };
        if let Header::ScsiResponse(r) = p.header {
            match r.status {
                0x00 => good += 1,
                0x08 => busy += 1,
                s => panic!("status {s:#x}"),
            }
        }
    }
    assert_eq!(good, 8, "what the 32 KiB session budget holds runs");
    assert!(
        busy >= 1,
        "immediate data beyond the session budget is refused"
    );
    assert!(wait_until(Duration::from_secs(3), || h
        .write_buffer_stats()
        .reserved
        == 0));
    h.shutdown();
}

/// RFC 7143 11.17.1 Reject reasons.
const REJECT_IMMEDIATE: u8 = 0x06;
const REJECT_OUT_OF_RESOURCES: u8 = 0x0a;

#[test]
fn immediate_commands_beyond_the_bound_are_rejected() {
    // Immediate commands bypass the CmdSN window (depth 16 here), so the session bounds
    // them itself: depth + 16 tasks in all, the rest answered Reject 0x06. Each WRITE
    // below waits for its Data-Out (InitialR2T=Yes, no immediate data), so its task stays.
    let (h, addr) = start(|_, _| {});
    let mut i = Initiator::connect(addr);
    assert!(i.login(&LoginOpts::default()));
    let immediate_write = |i: &mut Initiator, lba: u32| {
        let (itt, mut pdu) = i.command(0, &write10(lba, 1), false, true, 512, vec![]);
        // Immediate commands carry CmdSN without advancing it (RFC 7143 3.2.2.1).
        i.cmd_sn = i.cmd_sn.wrapping_sub(1);
        let Header::ScsiCommand(c) = &mut pdu.header else {
            unreachable!()
        };
        c.immediate = true;
        i.send(&pdu);
        itt
    };
    let itts: Vec<u32> = (0..40).map(|k| immediate_write(&mut i, k)).collect();
    i.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut r2ts, mut rejects) = (Vec::new(), 0);
    while r2ts.len() + rejects < itts.len() {
        let p = i.try_recv().expect("an answer for every command");
        match p.header {
            Header::R2t(r) => r2ts.push(r),
            Header::Reject(r) => {
                assert_eq!(r.reason, REJECT_IMMEDIATE);
                rejects += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((r2ts.len(), rejects), (32, 8));
    // The first 32 are the ones admitted, in order.
    assert!(r2ts.iter().zip(&itts).all(|(r, itt)| r.itt == *itt));
    // A finished one makes room for the next.
    let r = r2ts.remove(0);
    let d = DataOut {
        final_bit: true,
        lun: r.lun,
        itt: r.itt,
        ttt: r.ttt,
        exp_stat_sn: i.exp_stat_sn,
        data_sn: 0,
        buffer_offset: 0,
    };
    i.send(&Pdu::new(Header::DataOut(d), vec![7u8; 512]));
    let done = i.collect(r.itt, &[], 8192);
    assert_eq!(done.status, 0);
    let itt = immediate_write(&mut i, 100);
    let p = i.recv();
    assert!(
        matches!(p.header, Header::R2t(ref r) if r.itt == itt),
        "{:?}",
        p.header
    );
    h.shutdown();
}

#[test]
fn ping_data_waiting_in_the_cmdsn_window_is_within_the_budget() {
    // As a command's immediate data: 12 non-immediate pings of 4 KiB behind a CmdSN gap,
    // a 32 KiB session budget. What fits is held and echoed once the gap fills; the rest
    // is refused at once (Reject 0x0a, out of resources), and nothing stays reserved.
    const PING: usize = 4096;
    let (h, addr) = start(|cfg, _| {
        cfg.max_session_write_buffer = 32 * 1024;
    });
    let mut a = Initiator::connect(addr);
    assert!(a.login(&LoginOpts::default()));
    let nop = |itt: u32, cmd_sn: u32, exp_stat_sn: u32, data: Vec<u8>| {
        Pdu::new(
            Header::NopOut(rustio_iscsi_proto::pdu::NopOut {
                immediate: false,
                lun: 0,
                itt,
                ttt: 0xffff_ffff,
                cmd_sn,
                exp_stat_sn,
            }),
            data,
        )
    };
    let gap = a.cmd_sn;
    for k in 0..12u32 {
        let p = nop(
            0x6000_0000 + k,
            gap.wrapping_add(1 + k),
            a.exp_stat_sn,
            vec![k as u8; PING],
        );
        a.send(&p);
    }
    a.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rejects = 0;
    while rejects < 4 {
        let p = a
            .try_recv()
            .expect("the pings beyond the budget are rejected at once");
        let Header::Reject(r) = p.header else {
            panic!("Reject expected, got {:?}", p.header)
        };
        assert_eq!(r.reason, REJECT_OUT_OF_RESOURCES);
        rejects += 1;
    }
    let st = h.write_buffer_stats();
    assert_eq!(st.reserved, 32 * 1024, "8 held pings of 4 KiB: {st:?}");
    a.send(&nop(0x7000_0000, gap, a.exp_stat_sn, vec![]));
    a.cmd_sn = gap.wrapping_add(13);
    let mut echoed = Vec::new();
    while echoed.len() < 9 {
        let p = a.try_recv().expect("a NOP-In for every ping held");
        let Header::NopIn(n) = p.header else {
            panic!("NOP-In expected, got {:?}", p.header)
        };
        echoed.push((n.itt, p.data));
    }
    assert_eq!(echoed[0], (0x7000_0000, vec![]));
    for (k, (itt, data)) in echoed[1..].iter().enumerate() {
        assert_eq!(*itt, 0x6000_0000 + k as u32);
        assert_eq!(*data, vec![k as u8; PING], "ping {k} echoed whole");
    }
    assert!(wait_until(Duration::from_secs(3), || h
        .write_buffer_stats()
        .reserved
        == 0));
    // The window moved past the rejected pings: the session still works.
    assert_eq!(a.scsi(0, &read10(0, 1), 512, &[], 0).status, 0);
    h.shutdown();
}
