//! Fuzzes the TCMU ring parser and completer: arbitrary bytes as mailbox indices, command
//! ring and data area. Every shared-memory access is bounds-checked by the heap region, so
//! any out-of-bounds read or write shows up as a panic here.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustio_tcmu::abi;
use rustio_tcmu::mmap::SharedMemory;
use rustio_tcmu::ring::fake::FakeKernel;
use rustio_tcmu::ring::{scatter, CmdResponse, Ring, RingEvent};

const RING: u32 = 1024;
const DATA: usize = 2048;

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let flags = u16::from_le_bytes([data[0], data[1]]);
    let head = u32::from_le_bytes([data[2], data[3], data[4], data[5]]);
    let tail = u32::from_le_bytes([data[6], data[7], data[8], data[9]]);
    let k = FakeKernel::new(RING, DATA, flags);
    let body = &data[10..];
    let n = body.len().min(RING as usize + DATA);
    k.mem.write(k.cmdr_off, &body[..n]).unwrap();
    k.mem.store_u32_release(abi::MB_CMD_HEAD, head).unwrap();
    k.mem.store_u32_release(abi::MB_CMD_TAIL, tail).unwrap();
    let Ok(mut ring) = Ring::new(k.shared()) else {
        return;
    };
    for _ in 0..2 {
        let mut events = Vec::new();
        let _ = ring.consume(&mut events);
        for ev in events {
            match ev {
                RingEvent::Command { slot, cmd } => {
                    let mut buf = Vec::new();
                    ring.gather(&cmd.iovs, &mut buf).unwrap();
                    let _ = scatter(&**ring.memory(), &cmd.bidi_iovs, &buf, true);
                    let _ = ring.complete(
                        slot,
                        CmdResponse {
                            read_len: Some(buf.len() as u32),
                            ..CmdResponse::GOOD
                        },
                    );
                }
                RingEvent::Malformed { slot, .. } | RingEvent::UnknownOp { slot, .. } => {
                    let _ = ring.complete(slot, CmdResponse::check_condition([0x70; 18]));
                }
                RingEvent::Tmr(_) | RingEvent::BadTmr { .. } => {}
            }
        }
        let _ = ring.is_drained();
    }
});
