//! [`LunMap::submit`]: READ and WRITE completed on the store's own thread, against the
//! same checks as [`crate::LogicalUnit::execute`] (SBC-4 5.13-5.16, 5.40-5.46).

use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rustio_backstore::{Capabilities, IoDone, WriteFlags};

use super::*;
use crate::AsyncEnd;

/// A RAM store that completes submitted requests on a thread of its own (like librbd's
/// completion thread), optionally failing them.
#[derive(Debug)]
struct Remote {
    ram: RamBackstore,
    fail: AtomicBool,
}

impl Remote {
    fn new() -> Arc<Remote> {
        Arc::new(Remote {
            ram: RamBackstore::new(BLOCKS * u64::from(BS), BS).unwrap(),
            fail: AtomicBool::new(false),
        })
    }

    fn result(&self, op: &'static str, offset: u64) -> rustio_backstore::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            Err(rustio_backstore::Error::Io {
                op,
                path: "remote".into(),
                offset,
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            })
        } else {
            Ok(())
        }
    }
}

impl Backstore for Remote {
    fn block_size(&self) -> u32 {
        self.ram.block_size()
    }
    fn capacity(&self) -> u64 {
        self.ram.capacity()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            network: true,
            ..self.ram.capabilities()
        }
    }
    fn read_vectored_at(&self, b: &mut [IoSliceMut<'_>], o: u64) -> rustio_backstore::Result<()> {
        self.ram.read_vectored_at(b, o)
    }
    fn write_vectored_at(
        &self,
        b: &[IoSlice<'_>],
        o: u64,
        f: WriteFlags,
    ) -> rustio_backstore::Result<()> {
        self.ram.write_vectored_at(b, o, f)
    }
    fn flush(&self) -> rustio_backstore::Result<()> {
        Ok(())
    }
    fn submits_async(&self) -> bool {
        true
    }
    fn submit_read(&self, offset: u64, mut buf: Vec<u8>, done: IoDone) {
        let r = self
            .result("read", offset)
            .and_then(|()| self.ram.read_at(&mut buf, offset));
        std::thread::spawn(move || done(buf, r));
    }
    fn submit_write(&self, offset: u64, buf: Vec<u8>, len: usize, f: WriteFlags, done: IoDone) {
        let r = self
            .result("write", offset)
            .and_then(|()| self.ram.write_at(&buf[..len], offset, f));
        std::thread::spawn(move || done(buf, r));
    }
}

/// Submits `cdb` with `data_out` through `h`'s LUN map, expecting `data_in_len` bytes
/// back, and waits for the end (and on which thread it came).
fn submit(h: &H, cdb: &[u8], data_out: Vec<u8>, data_in_len: usize) -> (AsyncEnd, bool) {
    let (tx, rx) = mpsc::channel();
    let me = std::thread::current().id();
    let len = data_out.len();
    h.map.submit(
        &h.n,
        0,
        cdb,
        data_out,
        len,
        7,
        TaskAttr::Simple,
        data_in_len,
        move |end| {
            let _ = tx.send((end, std::thread::current().id() != me));
        },
    );
    rx.recv_timeout(Duration::from_secs(5))
        .expect("done was called")
}

fn remote_unit() -> (H, Arc<Remote>) {
    let r = Remote::new();
    (H::with_backstore(r.clone(), LuConfig::new("t", "s")), r)
}

#[test]
fn writes_and_reads_complete_on_the_stores_thread() {
    let (h, _) = remote_unit();
    let data = pattern(4 * BS as usize, 3);
    let cdb = cdb10(0x2a, 0, 100, 4);
    assert!(h.lu.submits_async(&cdb));
    let (end, elsewhere) = submit(&h, &cdb, data.clone(), 0);
    assert!(!end.retry && elsewhere);
    assert_eq!(end.response, Response::GOOD);
    assert_eq!(end.data_out, data, "the data-out buffer comes back");
    // What the asynchronous write wrote, the synchronous READ reads, and back.
    assert_eq!(h.good(&cdb10(0x28, 0, 100, 4), &[]), data);
    let (end, elsewhere) = submit(&h, &cdb10(0x28, 0, 100, 4), Vec::new(), data.len());
    assert!(!end.retry && elsewhere);
    assert_eq!(end.response, Response::GOOD);
    assert_eq!(end.data_in, data);
}

#[test]
fn failed_checks_end_at_once_with_the_synchronous_answer() {
    let (h, _) = remote_unit();
    // LBA out of range (SBC-4 4.5): ILLEGAL REQUEST, LBA OUT OF RANGE, on this thread.
    let (end, elsewhere) = submit(&h, &cdb10(0x28, 0, BLOCKS as u32, 1), Vec::new(), 512);
    assert!(!end.retry && !elsewhere);
    assert_sense(check_of(end.response), SenseKey::IllegalRequest, 0x21, 0x00);
    // Data-out shorter than the transfer: INVALID FIELD IN INFORMATION UNIT.
    let (end, _) = submit(&h, &cdb10(0x2a, 0, 0, 2), vec![0; 512], 0);
    assert_sense(check_of(end.response), SenseKey::IllegalRequest, 0x0e, 0x03);
    // Zero blocks: GOOD, nothing moved.
    let (end, _) = submit(&h, &cdb10(0x28, 0, 0, 0), Vec::new(), 0);
    assert_eq!(end.response, Response::GOOD);
    assert!(end.data_in.is_empty());
    // A unit attention is reported first (SAM-5 5.14), as `execute` does.
    h.lu.task_management(&h.n, crate::Tmf::LogicalUnitReset);
    let (end, _) = submit(&h, &cdb10(0x28, 0, 0, 1), Vec::new(), 512);
    assert_sense(check_of(end.response), SenseKey::UnitAttention, 0x29, 0x03);
}

#[test]
fn reservation_conflicts_and_write_protection_are_enforced() {
    let (h, _) = remote_unit();
    let other = nexus(2);
    h.clear_ua(&other);
    // RESERVE(6) by another nexus (SPC-2 7.21): our WRITE conflicts.
    let (r, _) = h.run_as(&other, &[0x16, 0, 0, 0, 0, 0], &[]);
    assert_eq!(r, Response::GOOD);
    let (end, _) = submit(&h, &cdb10(0x2a, 0, 0, 1), vec![1; 512], 0);
    assert!(!end.retry);
    assert_eq!(end.response.status, Status::ReservationConflict);
    let (r, _) = h.run_as(&other, &[0x17, 0, 0, 0, 0, 0], &[]);
    assert_eq!(r, Response::GOOD);
    // A write-protected mapping (SBC-4 4.11): DATA PROTECT, WRITE PROTECTED.
    let r = Remote::new();
    let lu = LogicalUnit::new(r, LuConfig::new("w", "w")).unwrap();
    let mut map = LunMap::new();
    map.insert(0, lu, true);
    let hw = H {
        lu: map.mapped_lun(0).unwrap().lu.clone(),
        n: nexus(1),
        wp: true,
        map,
    };
    hw.clear_ua(&hw.n);
    let (end, _) = submit(&hw, &cdb10(0x2a, 0, 0, 1), vec![1; 512], 0);
    assert_sense(check_of(end.response), SenseKey::DataProtect, 0x27, 0x00);
}

#[test]
fn everything_else_is_a_retry_with_the_buffer_back() {
    let (h, remote) = remote_unit();
    // Not a READ or WRITE.
    assert!(!h.lu.submits_async(&[0x00, 0, 0, 0, 0, 0]));
    let (end, _) = submit(&h, &[0x00, 0, 0, 0, 0, 0], Vec::new(), 0);
    assert!(end.retry);
    // Another length than the initiator expects (residual): the synchronous path.
    let (end, _) = submit(&h, &cdb10(0x28, 0, 0, 2), Vec::new(), 512);
    assert!(end.retry);
    // The store failed the transfer: retried synchronously, data-out back.
    remote.fail.store(true, Ordering::SeqCst);
    let (end, elsewhere) = submit(&h, &cdb10(0x2a, 0, 0, 1), vec![9; 512], 0);
    assert!(end.retry && elsewhere);
    assert_eq!(end.data_out, vec![9; 512]);
    let (end, _) = submit(&h, &cdb10(0x28, 0, 0, 1), Vec::new(), 512);
    assert!(end.retry);
    remote.fail.store(false, Ordering::SeqCst);
    // A COMPARE AND WRITE holding the range: the write does not wait on this thread.
    let held = h.lu.locks.exclusive(0, 1);
    let (end, elsewhere) = submit(&h, &cdb10(0x2a, 0, 0, 1), vec![5; 512], 0);
    assert!(end.retry && !elsewhere);
    drop(held);
    // A store without asynchronous I/O never takes this path.
    let plain = H::new();
    assert!(!plain.lu.submits_async(&cdb10(0x28, 0, 0, 1)));
    let (end, _) = submit(&plain, &cdb10(0x28, 0, 0, 1), Vec::new(), 512);
    assert!(end.retry);
}
