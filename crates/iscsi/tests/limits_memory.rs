//! Issue 20 item 2: a WRITE's Expected Data Transfer Length is a promise, not memory.
//! Buffers grow only with data solicited (R2T) or received, bounded by the CDB's length
//! and by the per-session / per-server budgets; promised data that never comes is
//! released by the Data-Out timeout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rustio_iscsi::pdu::{DataOut, Header, Pdu};

const MIB: u64 = 1 << 20;

/// WRITE(16) of `blocks` 512-byte blocks at LBA 0.
fn write16(blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x8a;
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
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
