//! The TCMU command ring: parsing kernel entries into typed values and writing completions.
//!
//! The ring code is safe Rust over [`SharedMemory`], so the real mapping and the heap-backed
//! fake used by tests and the fuzzer run the very same logic.
//!
//! Two cursors move through the ring (offsets relative to `cmdr_off`, modulo `cmdr_size`):
//!
//! * `next` — how far we have *read*. Entries in `[next, cmd_head)` are new.
//! * `tail` — the mailbox `cmd_tail`: how far we have *handed back*. The kernel walks from
//!   its last cleaned position to `cmd_tail`, skips PAD and TMR entries and completes a
//!   command for every other entry using the `cmd_id` and `rsp` it finds *in that slot*.
//!
//! Out-of-order completion (`TCMU_MAILBOX_FLAG_CAP_OOOC`) therefore works the way libtcmu
//! does it: a finished command's response goes into the first command slot at `tail`,
//! whatever command originally occupied it (its request was already copied out when it was
//! read), with the finished command's `cmd_id` written over the slot's. Without the
//! capability, responses are held back and written in the order the commands were read.
//!
//! Everything the kernel wrote is checked before use: entry lengths against the ring and the
//! head, `cdb_off` and every `iov` against the mapping (data iovecs must lie in the data area
//! behind the ring so that a data-in copy can never overwrite the mailbox or ring), and the
//! iovec table against the entry. A bad *entry* becomes [`RingEvent::Malformed`] and is
//! failed with CHECK CONDITION on its own; a bad *ring* (an entry length that does not lead
//! to the next entry) stops consumption with [`RingError::Corrupt`] because no later entry
//! can be located — the device then needs a ring reset.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustio_scsi::KeyMap;
use smallvec::SmallVec;

use crate::abi;
use crate::mmap::{OutOfBounds, SharedMemory};

/// Geometry of a mapping, read from its mailbox and checked against the mapping size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Mailbox `flags` (`abi::FLAG_CAP_*`).
    pub flags: u16,
    /// Offset of the command ring.
    pub cmdr_off: usize,
    /// Size of the command ring in bytes.
    pub cmdr_size: u32,
    /// Offset of the data area (just behind the command ring).
    pub data_off: usize,
    /// Size of the whole mapping.
    pub map_size: usize,
}

impl RingLayout {
    /// Reads and validates the mailbox at the start of `mem`.
    pub fn read(mem: &dyn SharedMemory) -> Result<RingLayout, RingError> {
        let map_size = mem.size();
        let version = mem.read_u16(abi::MB_VERSION)?;
        if version != abi::MAILBOX_VERSION {
            return Err(RingError::BadMailbox(format!(
                "mailbox version {version}, expected {}",
                abi::MAILBOX_VERSION
            )));
        }
        let flags = mem.read_u16(abi::MB_FLAGS)?;
        let cmdr_off = mem.read_u32(abi::MB_CMDR_OFF)? as usize;
        let cmdr_size = mem.read_u32(abi::MB_CMDR_SIZE)?;
        if cmdr_off < abi::MAILBOX_SIZE || cmdr_off % abi::OP_ALIGN as usize != 0 {
            return Err(RingError::BadMailbox(format!(
                "command ring offset {cmdr_off} overlaps the mailbox or is unaligned"
            )));
        }
        if cmdr_size < abi::CMD_ENTRY_MIN as u32 || cmdr_size % abi::OP_ALIGN != 0 {
            return Err(RingError::BadMailbox(format!(
                "command ring size {cmdr_size} is too small or unaligned"
            )));
        }
        let data_off = cmdr_off
            .checked_add(cmdr_size as usize)
            .filter(|end| *end <= map_size)
            .ok_or_else(|| {
                RingError::BadMailbox(format!(
                    "command ring [{cmdr_off}, +{cmdr_size}) exceeds the {map_size}-byte mapping"
                ))
            })?;
        Ok(RingLayout {
            flags,
            cmdr_off,
            cmdr_size,
            data_off,
            map_size,
        })
    }

    /// The kernel accepts out-of-order completions.
    pub fn out_of_order(&self) -> bool {
        self.flags & abi::FLAG_CAP_OOOC != 0
    }

    /// The kernel honours `rsp.read_len` for short reads.
    pub fn read_len(&self) -> bool {
        self.flags & abi::FLAG_CAP_READ_LEN != 0
    }

    /// The kernel can send TMR notifications.
    pub fn tmr(&self) -> bool {
        self.flags & abi::FLAG_CAP_TMR != 0
    }

    /// Size of the data area.
    pub fn data_size(&self) -> usize {
        self.map_size - self.data_off
    }
}

/// One data buffer of a command: `len` bytes at `offset` in the mapping (inside the data
/// area, checked when parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iov {
    /// Offset from the start of the mapping.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// Total length of a list of iovecs (they were checked to fit in the data area, so the sum
/// cannot overflow).
pub fn iovs_len(iovs: &[Iov]) -> usize {
    iovs.iter().map(|i| i.len).sum()
}

/// A SCSI command read from the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEntry {
    /// Kernel command id, echoed in the response.
    pub cmd_id: u16,
    /// The CDB (copied out of the ring; length from the operation code).
    pub cdb: Cdb,
    /// Data buffers: data-out for writes, data-in for reads (the kernel does not say which;
    /// it follows from the CDB). For bidirectional commands these are the data-out buffers.
    pub iovs: Iovs,
    /// Data-in buffers of a bidirectional command (XDWRITEREAD), else empty (and then
    /// not allocated).
    pub bidi_iovs: Vec<Iov>,
}

/// A CDB: up to 16 bytes (every fixed-length CDB) inline, longer ones on the heap. With
/// [`Iovs`], a usual command read off the ring (a CDB of up to 16 bytes, one iovec, not
/// bidirectional) costs no allocation but its in-flight record
/// (three heap blocks per command were ≈ 13 % of the runner's instructions per 4 KiB
/// READ, callgrind in bench/README.md).
pub type Cdb = SmallVec<[u8; 16]>;

/// A command's iovecs: one inline (a 4 KiB command, or a larger one the kernel placed in
/// consecutive blocks), more on the heap. Every command entry is moved a few times on its
/// way to execution, so the inline part stays small.
pub type Iovs = SmallVec<[Iov; 1]>;

/// Why a command entry was refused. The command is completed with CHECK CONDITION; the
/// rest of the ring is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The entry is too short for its iovec table.
    #[error("iovec table of {count} entries needs {needed} bytes but the entry is {len} bytes")]
    IovTableTooLong {
        /// iov_cnt + iov_bidi_cnt + iov_dif_cnt.
        count: u64,
        /// Bytes needed for the header and table.
        needed: u64,
        /// Entry length.
        len: u32,
    },
    /// `cdb_off` (or the CDB length it implies) is outside the command's own entry,
    /// where the kernel always puts the CDB (after the iovec table).
    #[error("CDB at offset {cdb_off} is outside its {len}-byte entry at offset {entry}")]
    CdbOutOfBounds {
        /// The offending `cdb_off`.
        cdb_off: u64,
        /// Offset of the entry in the mapping.
        entry: usize,
        /// Length of the entry.
        len: u32,
    },
    /// An iovec is outside the data area.
    #[error(
        "iovec {index} [{base:#x}, +{len}) is outside the data area [{data_off:#x}, {map_size:#x})"
    )]
    IovOutOfBounds {
        /// Index in the iovec table.
        index: usize,
        /// `iov_base` (an offset into the mapping).
        base: u64,
        /// `iov_len`.
        len: u64,
        /// Start of the data area.
        data_off: usize,
        /// End of the mapping.
        map_size: usize,
    },
    /// The iovecs add up to more than the data area can hold.
    #[error("iovecs total {total} bytes, more than the {data_size}-byte data area")]
    DataTooLong {
        /// Sum of the iovec lengths.
        total: u64,
        /// Data area size.
        data_size: usize,
    },
    /// Protection information iovecs are not supported.
    #[error("{0} protection information iovecs are not supported")]
    DifUnsupported(u32),
}

/// A task management notification (`TCMU_OP_TMR`, needs `CAP_TMR` and the device's
/// `tmr_notification` attribute). No response is written for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmrNotification {
    /// `TCMU_TMR_*` (see [`abi::tmr`]).
    pub kind: u8,
    /// Commands on the ring that the kernel aborted.
    pub cmd_ids: Vec<u16>,
}

/// Identity of a read entry that needs a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    /// Order in which the entry was read (per ring, never reused).
    pub seq: u64,
    /// The kernel's command id.
    pub cmd_id: u16,
}

/// What reading the ring produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingEvent {
    /// A well-formed command: execute it and complete `slot`.
    Command {
        /// Completion handle.
        slot: Slot,
        /// The command.
        cmd: CommandEntry,
    },
    /// A malformed command entry: complete `slot` with CHECK CONDITION.
    Malformed {
        /// Completion handle.
        slot: Slot,
        /// What was wrong.
        error: EntryError,
    },
    /// An entry with an opcode this runner does not know: complete `slot` with
    /// `TCMU_UFLAG_UNKNOWN_OP`, which the kernel turns into CHECK CONDITION.
    UnknownOp {
        /// Completion handle.
        slot: Slot,
        /// The opcode (low three bits of `len_op`).
        op: u8,
    },
    /// A task management notification.
    Tmr(TmrNotification),
    /// A TMR entry too short for its own contents (logged and skipped).
    BadTmr {
        /// Offset of the entry in the ring.
        ring_offset: u32,
        /// Why it was refused.
        reason: String,
    },
}

/// The response to write for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdResponse {
    /// SCSI status byte (SAM-5 5.3.1).
    pub status: u8,
    /// Sense bytes for CHECK CONDITION (copied into the 96-byte sense buffer).
    pub sense: Option<[u8; 18]>,
    /// Number of data-in bytes actually produced, when shorter than the buffers and the
    /// kernel has `CAP_READ_LEN`.
    pub read_len: Option<u32>,
    /// Set `TCMU_UFLAG_UNKNOWN_OP`.
    pub unknown_op: bool,
}

impl CmdResponse {
    /// GOOD status, no data length adjustment.
    pub const GOOD: CmdResponse = CmdResponse {
        status: 0,
        sense: None,
        read_len: None,
        unknown_op: false,
    };

    /// CHECK CONDITION with `sense`.
    pub fn check_condition(sense: [u8; 18]) -> CmdResponse {
        CmdResponse {
            status: 0x02,
            sense: Some(sense),
            read_len: None,
            unknown_op: false,
        }
    }
}

/// Errors of the ring as a whole (as opposed to one entry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The mailbox describes a ring this runner cannot use.
    #[error("unusable TCMU mailbox: {0}")]
    BadMailbox(String),
    /// An entry's length does not lead to another entry: the ring cannot be walked.
    #[error("corrupt command ring at offset {ring_offset} (len_op {len_op:#x}): {reason}")]
    Corrupt {
        /// Offset of the bad entry in the ring.
        ring_offset: u32,
        /// The entry's `len_op`.
        len_op: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A completion for a slot that is not outstanding (a bug, or a stale completion after
    /// a ring reset).
    #[error("completion for command {cmd_id} (seq {seq}) that is not outstanding")]
    NotOutstanding {
        /// Slot sequence number.
        seq: u64,
        /// Command id.
        cmd_id: u16,
    },
    /// A shared-memory access was out of bounds (the checks above should prevent this).
    #[error(transparent)]
    Memory(#[from] OutOfBounds),
    /// The ring was found unusable earlier (possibly while a completion was written) and
    /// is not read again before it is reset.
    #[error("the command ring was found unusable and awaits a reset")]
    AwaitsReset,
}

/// Reader and completer of one device's command ring.
///
/// Not thread safe by itself; a device keeps it behind a mutex and holds that lock only to
/// read entries or write a response, never while a command executes.
#[derive(Debug)]
pub struct Ring {
    mem: Arc<dyn SharedMemory>,
    layout: RingLayout,
    next: u32,
    tail: u32,
    next_seq: u64,
    /// Sequence numbers (ours) of the commands read and not yet completed.
    outstanding: KeyMap<u64, u16>,
    /// In-order mode: finished responses waiting for older commands.
    held: BTreeMap<u64, (u16, CmdResponse)>,
}

impl Ring {
    /// Attaches to the ring in `mem`, starting at the mailbox's current `cmd_tail` (entries
    /// between `cmd_tail` and `cmd_head` — left by a previous runner — are read again).
    pub fn new(mem: Arc<dyn SharedMemory>) -> Result<Ring, RingError> {
        let layout = RingLayout::read(&*mem)?;
        let mut ring = Ring {
            mem,
            layout,
            next: 0,
            tail: 0,
            next_seq: 0,
            outstanding: KeyMap::default(),
            held: BTreeMap::new(),
        };
        ring.resync()?;
        Ok(ring)
    }

    /// Forgets every outstanding command and restarts from the mailbox's `cmd_tail`, after
    /// the kernel reset the ring (`action/reset_ring`). Completions for slots read before
    /// the resync are refused with [`RingError::NotOutstanding`].
    pub fn resync(&mut self) -> Result<(), RingError> {
        let tail = self.mem.load_u32_acquire(abi::MB_CMD_TAIL)?;
        if tail >= self.layout.cmdr_size || tail % abi::OP_ALIGN != 0 {
            return Err(RingError::Corrupt {
                ring_offset: tail,
                len_op: 0,
                reason: "cmd_tail is outside the ring or unaligned",
            });
        }
        self.next = tail;
        self.tail = tail;
        self.forget_outstanding();
        Ok(())
    }

    /// Forgets the commands read and not completed: a later [`Ring::complete`] of one of
    /// them is refused ([`RingError::NotOutstanding`]) and writes nothing.
    pub fn forget_outstanding(&mut self) {
        self.outstanding.clear();
        self.held.clear();
    }

    /// The ring geometry.
    pub fn layout(&self) -> &RingLayout {
        &self.layout
    }

    /// The shared memory.
    pub fn memory(&self) -> &Arc<dyn SharedMemory> {
        &self.mem
    }

    /// Number of read commands not yet completed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Everything the kernel queued has been read and answered (`cmd_head == cmd_tail`).
    pub fn is_drained(&self) -> Result<bool, RingError> {
        let head = self.mem.load_u32_acquire(abi::MB_CMD_HEAD)?;
        Ok(head == self.tail && self.outstanding.is_empty())
    }

    fn ring_abs(&self, ring_off: u32) -> usize {
        self.layout.cmdr_off + ring_off as usize
    }

    fn advance(&self, pos: u32, len: u32) -> u32 {
        // pos < cmdr_size and pos + len <= cmdr_size were checked, so no overflow.
        (pos + len) % self.layout.cmdr_size
    }

    /// Reads and checks the header of the entry at ring offset `pos`, which must lie in the
    /// region of `avail` bytes that ends at `limit`.
    fn entry_header(&self, pos: u32, avail: u32) -> Result<(u32, u32), RingError> {
        let corrupt = |len_op: u32, reason: &'static str| RingError::Corrupt {
            ring_offset: pos,
            len_op,
            reason,
        };
        if pos % abi::OP_ALIGN != 0
            || pos as u64 + abi::HDR_SIZE as u64 > self.layout.cmdr_size as u64
        {
            return Err(corrupt(0, "entry header crosses the end of the ring"));
        }
        let len_op = self.mem.read_u32(self.ring_abs(pos) + abi::HDR_LEN_OP)?;
        let len = len_op & !abi::OP_MASK;
        let op = len_op & abi::OP_MASK;
        if len < abi::HDR_SIZE as u32 {
            return Err(corrupt(len_op, "entry length is smaller than its header"));
        }
        if pos as u64 + len as u64 > self.layout.cmdr_size as u64 {
            return Err(corrupt(len_op, "entry crosses the end of the ring"));
        }
        if len > avail {
            return Err(corrupt(len_op, "entry extends past cmd_head"));
        }
        if op != abi::OP_PAD && op != abi::OP_TMR && len < abi::CMD_ENTRY_MIN as u32 {
            return Err(corrupt(
                len_op,
                "command entry too short to hold a response",
            ));
        }
        Ok((op, len))
    }

    fn distance(&self, from: u32, to: u32) -> u32 {
        if to >= from {
            to - from
        } else {
            self.layout.cmdr_size - from + to
        }
    }

    /// Reads every new entry (up to `cmd_head`), appending what it finds to `out`. Returns
    /// the number of entries read. On [`RingError::Corrupt`] the entries read before the
    /// bad one are in `out` and the cursor stays at the bad entry.
    pub fn consume(&mut self, out: &mut Vec<RingEvent>) -> Result<usize, RingError> {
        let head = self.mem.load_u32_acquire(abi::MB_CMD_HEAD)?;
        if head >= self.layout.cmdr_size || head % abi::OP_ALIGN != 0 {
            return Err(RingError::Corrupt {
                ring_offset: head,
                len_op: 0,
                reason: "cmd_head is outside the ring or unaligned",
            });
        }
        let mut n = 0;
        while self.next != head {
            let pos = self.next;
            let avail = self.distance(pos, head);
            let (op, len) = self.entry_header(pos, avail)?;
            let abs = self.ring_abs(pos);
            match op {
                abi::OP_PAD => {}
                abi::OP_CMD => {
                    // `entry_header` checked `CMD_ENTRY_MIN <= len` and that the entry
                    // is in the ring.
                    let mut entry = EntrySnapshot::EMPTY;
                    entry.read(&*self.mem, abs, len)?;
                    let cmd_id = u16::from_le_bytes(entry.field::<{ abi::HDR_CMD_ID }, 2>());
                    let slot = self.new_slot(cmd_id);
                    out.push(match self.parse_cmd(abs, len, cmd_id, &entry)? {
                        Ok(cmd) => RingEvent::Command { slot, cmd },
                        Err(error) => RingEvent::Malformed { slot, error },
                    });
                }
                abi::OP_TMR => out.push(self.parse_tmr(pos, abs, len)?),
                other => {
                    let cmd_id = self.mem.read_u16(abs + abi::HDR_CMD_ID)?;
                    let slot = self.new_slot(cmd_id);
                    out.push(RingEvent::UnknownOp {
                        slot,
                        op: other as u8,
                    });
                }
            }
            self.next = self.advance(pos, len);
            n += 1;
        }
        self.skip_tail_non_commands()?;
        Ok(n)
    }

    fn new_slot(&mut self, cmd_id: u16) -> Slot {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outstanding.insert(seq, cmd_id);
        Slot { seq, cmd_id }
    }

    /// Parses the command entry `cmd_id` of `len` bytes at absolute offset `abs`, whose
    /// first bytes `consume` copied into `entry`. What lies beyond the snapshot (more
    /// iovecs, a CDB elsewhere) is read from the ring. The outer `Result` is a memory
    /// error (impossible after the header checks), the inner one the verdict on the entry.
    #[allow(clippy::type_complexity)]
    fn parse_cmd(
        &self,
        abs: usize,
        len: u32,
        cmd_id: u16,
        entry: &EntrySnapshot,
    ) -> Result<Result<CommandEntry, EntryError>, RingError> {
        let m = &*self.mem;
        let iov_cnt = u32::from_le_bytes(entry.field::<{ abi::REQ_IOV_CNT }, 4>());
        let bidi_cnt = u32::from_le_bytes(entry.field::<{ abi::REQ_IOV_BIDI_CNT }, 4>());
        let dif_cnt = u32::from_le_bytes(entry.field::<{ abi::REQ_IOV_DIF_CNT }, 4>());
        let cdb_off = u64::from_le_bytes(entry.field::<{ abi::REQ_CDB_OFF }, 8>());
        let count = u64::from(iov_cnt) + u64::from(bidi_cnt) + u64::from(dif_cnt);
        let needed = abi::REQ_IOV as u64 + count * abi::IOVEC_SIZE as u64;
        if needed > u64::from(len) {
            return Ok(Err(EntryError::IovTableTooLong { count, needed, len }));
        }
        if dif_cnt != 0 {
            return Ok(Err(EntryError::DifUnsupported(dif_cnt)));
        }
        let cdb = match self.read_cdb(abs, len, entry.copied(), cdb_off) {
            Some(cdb) => cdb,
            None => {
                return Ok(Err(EntryError::CdbOutOfBounds {
                    cdb_off,
                    entry: abs,
                    len,
                }))
            }
        };
        let mut total = 0u64;
        let mut iovs = Iovs::with_capacity(iov_cnt as usize);
        // `with_capacity(0)` still runs `RawVec`'s layout checks (≈ 20 instructions).
        let mut bidi_iovs = if bidi_cnt == 0 {
            Vec::new()
        } else {
            Vec::with_capacity(bidi_cnt as usize)
        };
        for index in 0..(iov_cnt as usize + bidi_cnt as usize) {
            let rel = abi::REQ_IOV + index * abi::IOVEC_SIZE;
            let (base, ilen) = match entry.iovec(rel) {
                Some(iov) => iov,
                None => (m.read_u64(abs + rel)?, m.read_u64(abs + rel + 8)?),
            };
            let end = base.checked_add(ilen);
            let ok = base >= self.layout.data_off as u64
                && end.is_some_and(|e| e <= self.layout.map_size as u64);
            if !ok {
                return Ok(Err(EntryError::IovOutOfBounds {
                    index,
                    base,
                    len: ilen,
                    data_off: self.layout.data_off,
                    map_size: self.layout.map_size,
                }));
            }
            // Each length is at most the map size and there are at most cmdr_size/16
            // iovecs, so the sum fits in a u64.
            total += ilen;
            let iov = Iov {
                offset: base as usize,
                len: ilen as usize,
            };
            if index < iov_cnt as usize {
                iovs.push(iov);
            } else {
                bidi_iovs.push(iov);
            }
        }
        if total > self.layout.data_size() as u64 {
            return Ok(Err(EntryError::DataTooLong {
                total,
                data_size: self.layout.data_size(),
            }));
        }
        Ok(Ok(CommandEntry {
            cmd_id,
            cdb,
            iovs,
            bidi_iovs,
        }))
    }

    /// The CDB at absolute offset `cdb_off`, which must lie wholly inside its entry
    /// (`len` bytes at `abs`), where the kernel puts it. Anywhere else is refused: in the
    /// data area, whose pages the kernel fills on demand and may have freed, a read
    /// could fault (SIGBUS) instead of failing one command. Read from `entry` (the
    /// snapshot of the entry's first bytes) when it holds them, else from the ring.
    fn read_cdb(&self, abs: usize, len: u32, entry: &[u8], cdb_off: u64) -> Option<Cdb> {
        let rel = usize::try_from(cdb_off).ok()?.checked_sub(abs)?;
        // Bytes of the entry from the CDB's start on.
        let room = usize::try_from(len).ok()?.checked_sub(rel)?;
        if room == 0 {
            return None;
        }
        let off = abs + rel;
        // Where the snapshot holds the CDB's first 8 bytes (opcode and, for 7Fh, its
        // additional length).
        let in_entry = entry.get(rel..).filter(|b| b.len() >= 8);
        let (opcode, add) = match in_entry {
            Some(b) => (b[0], Some(b[7])),
            None => (
                self.mem.read_u8(off).ok()?,
                if room >= 8 {
                    self.mem.read_u8(off + 7).ok()
                } else {
                    None
                },
            ),
        };
        let cdb_len = abi::cdb_len(opcode, add).filter(|&n| n <= room)?;
        match in_entry.and_then(|b| b.get(..cdb_len)) {
            Some(b) => Some(Cdb::from_slice(b)),
            None => {
                let mut cdb = Cdb::from_elem(0, cdb_len);
                self.mem.read(off, &mut cdb).ok()?;
                Some(cdb)
            }
        }
    }

    fn parse_tmr(&self, pos: u32, abs: usize, len: u32) -> Result<RingEvent, RingError> {
        if (len as usize) < abi::TMR_CMD_IDS {
            return Ok(RingEvent::BadTmr {
                ring_offset: pos,
                reason: format!("TMR entry of {len} bytes is shorter than its header"),
            });
        }
        let kind = self.mem.read_u8(abs + abi::TMR_TYPE)?;
        let cnt = self.mem.read_u32(abs + abi::TMR_CMD_CNT)?;
        let needed = abi::TMR_CMD_IDS as u64 + u64::from(cnt) * 2;
        if needed > u64::from(len) {
            return Ok(RingEvent::BadTmr {
                ring_offset: pos,
                reason: format!("TMR entry lists {cnt} command ids but is only {len} bytes"),
            });
        }
        let mut cmd_ids = Vec::with_capacity(cnt as usize);
        for i in 0..cnt as usize {
            cmd_ids.push(self.mem.read_u16(abs + abi::TMR_CMD_IDS + 2 * i)?);
        }
        Ok(RingEvent::Tmr(TmrNotification { kind, cmd_ids }))
    }

    /// Hands back PAD and TMR entries at the tail that were already read, so that an idle
    /// ring reaches `cmd_head == cmd_tail`.
    fn skip_tail_non_commands(&mut self) -> Result<(), RingError> {
        let start = self.tail;
        while self.tail != self.next {
            let avail = self.distance(self.tail, self.next);
            let (op, len) = self.entry_header(self.tail, avail)?;
            if op != abi::OP_PAD && op != abi::OP_TMR {
                break;
            }
            self.tail = self.advance(self.tail, len);
        }
        if self.tail != start {
            self.mem.store_u32_release(abi::MB_CMD_TAIL, self.tail)?;
        }
        Ok(())
    }

    /// Completes the command read as `slot` with `rsp`. With out-of-order completion the
    /// response is written at once; otherwise it waits until every older command is done.
    /// Returns how many responses were handed to the kernel (0 if held back), so the
    /// caller knows whether to notify the kernel.
    pub fn complete(&mut self, slot: Slot, rsp: CmdResponse) -> Result<usize, RingError> {
        match self.outstanding.get(&slot.seq) {
            Some(id) if *id == slot.cmd_id => {}
            _ => {
                return Err(RingError::NotOutstanding {
                    seq: slot.seq,
                    cmd_id: slot.cmd_id,
                })
            }
        }
        if self.layout.out_of_order() {
            self.write_response(slot.cmd_id, &rsp)?;
            self.outstanding.remove(&slot.seq);
            self.mem.store_u32_release(abi::MB_CMD_TAIL, self.tail)?;
            return Ok(1);
        }
        self.held.insert(slot.seq, (slot.cmd_id, rsp));
        let mut written = 0;
        // The oldest outstanding command is the smallest sequence number.
        while let Some(oldest) = self.outstanding.keys().min().copied() {
            let Some((cmd_id, rsp)) = self.held.remove(&oldest) else {
                break;
            };
            self.write_response(cmd_id, &rsp)?;
            self.outstanding.remove(&oldest);
            written += 1;
        }
        if written > 0 {
            self.mem.store_u32_release(abi::MB_CMD_TAIL, self.tail)?;
        }
        Ok(written)
    }

    /// Writes one response into the first command slot at the tail and moves the local
    /// tail past it (the caller publishes the tail).
    fn write_response(&mut self, cmd_id: u16, rsp: &CmdResponse) -> Result<(), RingError> {
        loop {
            if self.tail == self.next {
                // More responses than commands read: refuse rather than write into an
                // entry we have not parsed.
                return Err(RingError::NotOutstanding {
                    seq: u64::MAX,
                    cmd_id,
                });
            }
            let avail = self.distance(self.tail, self.next);
            let (op, len) = self.entry_header(self.tail, avail)?;
            if op == abi::OP_PAD || op == abi::OP_TMR {
                self.tail = self.advance(self.tail, len);
                continue;
            }
            let abs = self.ring_abs(self.tail);
            let m = &*self.mem;
            let mut uflags = 0u8;
            if rsp.unknown_op {
                uflags |= abi::UFLAG_UNKNOWN_OP;
            }
            if rsp.read_len.is_some() {
                uflags |= abi::UFLAG_READ_LEN;
            }
            m.write_u16(abs + abi::HDR_CMD_ID, cmd_id)?;
            m.write_u8(abs + abi::HDR_UFLAGS, uflags)?;
            m.write_u8(abs + abi::RSP_SCSI_STATUS, rsp.status)?;
            m.write_u32(abs + abi::RSP_READ_LEN, rsp.read_len.unwrap_or(0))?;
            if let Some(sense) = rsp.sense {
                let mut buf = [0u8; abi::SENSE_BUFFER_SIZE];
                buf[..sense.len()].copy_from_slice(&sense);
                m.write(abs + abi::RSP_SENSE, &buf)?;
            }
            self.tail = self.advance(self.tail, len);
            return Ok(());
        }
    }

    /// Copies the bytes of `iovs` (in order) into `out`, which is cleared first.
    pub fn gather(&self, iovs: &[Iov], out: &mut Vec<u8>) -> Result<(), RingError> {
        gather(&*self.mem, iovs, out)
    }
}

/// Copies the bytes of `iovs` (in order) from `mem` into `out`, which is cleared first.
pub fn gather(mem: &dyn SharedMemory, iovs: &[Iov], out: &mut Vec<u8>) -> Result<(), RingError> {
    out.clear();
    out.resize(iovs_len(iovs), 0);
    let mut at = 0;
    for iov in iovs {
        mem.read(iov.offset, &mut out[at..at + iov.len])?;
        at += iov.len;
    }
    Ok(())
}

/// Copies `data` into `iovs` in order (at most their total length); if `zero_rest`, the
/// part of the buffers beyond `data` is zero-filled. Returns the number of bytes copied.
pub fn scatter(
    mem: &dyn SharedMemory,
    iovs: &[Iov],
    data: &[u8],
    zero_rest: bool,
) -> Result<usize, RingError> {
    let mut at = 0;
    for iov in iovs {
        let n = iov.len.min(data.len() - at);
        if n > 0 {
            mem.write(iov.offset, &data[at..at + n])?;
            at += n;
        }
        if zero_rest && n < iov.len {
            mem.fill(iov.offset + n, iov.len - n, 0)?;
        }
        if at == data.len() && !zero_rest {
            break;
        }
    }
    Ok(at)
}

/// How much of a command entry `consume` copies at once: the header, the counts, the CDB
/// offset, the first iovecs and, where the kernel puts it for up to four iovecs (right
/// after `sizeof(struct tcmu_cmd_entry)`, [`abi::CMD_ENTRY_MIN`]), a CDB of up to 16 bytes.
const ENTRY_SNAPSHOT: usize = abi::CMD_ENTRY_MIN + 16;

/// The first bytes of a command entry, copied out of the ring in one read instead of a
/// read per field. With `RawRegion::read`'s word loop and no allocation for an empty
/// bidi list, ≈ 150 instructions fewer per 4 KiB command (bench/README.md, TCMU stage).
struct EntrySnapshot {
    bytes: [u8; ENTRY_SNAPSHOT],
    /// How many of `bytes` were copied: the entry's length up to [`ENTRY_SNAPSHOT`].
    copied: usize,
}

impl EntrySnapshot {
    /// Nothing copied yet. Filled in place by [`Self::read`]: returned by value, the
    /// snapshot was a `memcpy` call of its own.
    const EMPTY: EntrySnapshot = EntrySnapshot {
        bytes: [0; ENTRY_SNAPSHOT],
        copied: 0,
    };

    /// Copies the first bytes of the `len`-byte entry at absolute offset `abs`.
    fn read(&mut self, mem: &dyn SharedMemory, abs: usize, len: u32) -> Result<(), OutOfBounds> {
        self.copied = usize::try_from(len).map_or(ENTRY_SNAPSHOT, |l| l.min(ENTRY_SNAPSHOT));
        mem.read(abs, &mut self.bytes[..self.copied])
    }

    /// The `N` bytes at offset `AT` of the header or the request's fixed part, which lie
    /// in the first [`abi::CMD_ENTRY_MIN`] bytes that every command entry has (checked at
    /// compile time; an entry shorter than that never gets here, `entry_header` refuses it).
    fn field<const AT: usize, const N: usize>(&self) -> [u8; N] {
        const { assert!(AT + N <= abi::CMD_ENTRY_MIN) };
        let mut f = [0u8; N];
        f.copy_from_slice(&self.bytes[AT..AT + N]);
        f
    }

    /// The copied bytes.
    fn copied(&self) -> &[u8] {
        self.bytes.get(..self.copied).unwrap_or(&self.bytes)
    }

    /// `(base, len)` of the iovec at offset `rel`, if the snapshot holds it.
    fn iovec(&self, rel: usize) -> Option<(u64, u64)> {
        let iov = self.copied().get(rel..)?;
        let (base, rest) = iov.split_first_chunk::<8>()?;
        let (len, _) = rest.split_first_chunk::<8>()?;
        Some((u64::from_le_bytes(*base), u64::from_le_bytes(*len)))
    }
}

/// A fake kernel side for tests and fuzzing: builds a mapping with the kernel's layout and
/// queues entries the way `target_core_user.c` does.
#[cfg(any(test, feature = "test-utils"))]
pub mod fake {
    use super::*;
    use crate::mmap::HeapMemory;

    /// A READ(10) (`op` 28h) or WRITE(10) (2Ah) CDB of `blocks` at `lba` (SBC-4).
    pub fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
        let mut c = [op, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    /// Builds and feeds a heap-backed ring.
    #[derive(Debug)]
    pub struct FakeKernel {
        /// The shared memory.
        pub mem: Arc<HeapMemory>,
        /// Ring offset.
        pub cmdr_off: usize,
        /// Ring size.
        pub cmdr_size: u32,
        /// Data area offset.
        pub data_off: usize,
        head: u32,
        data_next: usize,
    }

    impl FakeKernel {
        /// A mapping of `cmdr_size` ring bytes and `data_size` data bytes with `flags`.
        pub fn new(cmdr_size: u32, data_size: usize, flags: u16) -> FakeKernel {
            let cmdr_off = abi::MAILBOX_SIZE;
            let data_off = cmdr_off + cmdr_size as usize;
            let mem = Arc::new(HeapMemory::new(data_off + data_size));
            mem.write_u16(abi::MB_VERSION, abi::MAILBOX_VERSION)
                .unwrap();
            mem.write_u16(abi::MB_FLAGS, flags).unwrap();
            mem.write_u32(abi::MB_CMDR_OFF, cmdr_off as u32).unwrap();
            mem.write_u32(abi::MB_CMDR_SIZE, cmdr_size).unwrap();
            FakeKernel {
                mem,
                cmdr_off,
                cmdr_size,
                data_off,
                head: 0,
                data_next: data_off,
            }
        }

        /// The memory as the trait object the ring takes.
        pub fn shared(&self) -> Arc<dyn SharedMemory> {
            self.mem.clone()
        }

        /// Current `cmd_head`.
        pub fn head(&self) -> u32 {
            self.head
        }

        /// Current `cmd_tail` as written by the runner.
        pub fn tail(&self) -> u32 {
            self.mem.load_u32_acquire(abi::MB_CMD_TAIL).unwrap()
        }

        /// Allocates `len` bytes in the data area (wrapping to the start when full) and
        /// fills them with `fill`; returns the iovec.
        pub fn alloc_data(&mut self, len: usize, fill: u8) -> Iov {
            if self.data_next + len > self.mem.size() {
                self.data_next = self.data_off;
            }
            let iov = Iov {
                offset: self.data_next,
                len,
            };
            self.mem.fill(iov.offset, len, fill).unwrap();
            self.data_next += len;
            iov
        }

        fn space_to_end(&self) -> u32 {
            self.cmdr_size - self.head
        }

        /// Inserts a PAD up to the end of the ring if `size` does not fit before it.
        fn pad_if_needed(&mut self, size: u32) {
            if self.space_to_end() < size {
                let pad = self.space_to_end();
                let abs = self.cmdr_off + self.head as usize;
                self.mem.write_u32(abs, pad | abi::OP_PAD).unwrap();
                self.mem.write_u32(abs + 4, 0).unwrap();
                self.publish(pad);
            }
        }

        fn publish(&mut self, len: u32) {
            self.head = (self.head + len) % self.cmdr_size;
            self.mem
                .store_u32_release(abi::MB_CMD_HEAD, self.head)
                .unwrap();
        }

        /// Queues a command entry with the given CDB and iovecs, laid out as the kernel
        /// does (`iov[]`, then the CDB, padded to 8 bytes). Returns the ring offset.
        pub fn push_cmd(&mut self, cmd_id: u16, cdb: &[u8], iovs: &[Iov], bidi: &[Iov]) -> u32 {
            let base = (abi::REQ_IOV + (iovs.len() + bidi.len()) * abi::IOVEC_SIZE)
                .max(abi::CMD_ENTRY_MIN);
            let size = (base + cdb.len()).next_multiple_of(8) as u32;
            self.pad_if_needed(size);
            let pos = self.head;
            let abs = self.cmdr_off + pos as usize;
            self.mem.fill(abs, size as usize, 0).unwrap();
            self.mem.write_u32(abs, size | abi::OP_CMD).unwrap();
            self.mem.write_u16(abs + abi::HDR_CMD_ID, cmd_id).unwrap();
            self.mem
                .write_u32(abs + abi::REQ_IOV_CNT, iovs.len() as u32)
                .unwrap();
            self.mem
                .write_u32(abs + abi::REQ_IOV_BIDI_CNT, bidi.len() as u32)
                .unwrap();
            for (i, iov) in iovs.iter().chain(bidi).enumerate() {
                let at = abs + abi::REQ_IOV + i * abi::IOVEC_SIZE;
                self.mem.write_u64(at, iov.offset as u64).unwrap();
                self.mem.write_u64(at + 8, iov.len as u64).unwrap();
            }
            let cdb_off = abs + base;
            self.mem.write(cdb_off, cdb).unwrap();
            self.mem
                .write_u64(abs + abi::REQ_CDB_OFF, cdb_off as u64)
                .unwrap();
            self.publish(size);
            pos
        }

        /// Queues a raw entry of `size` bytes (multiple of 8) with `len_op` and lets
        /// `fill` write its body; for malformed-entry tests.
        pub fn push_raw(
            &mut self,
            size: u32,
            len_op: u32,
            fill: impl FnOnce(&HeapMemory, usize),
        ) -> u32 {
            self.pad_if_needed(size);
            let pos = self.head;
            let abs = self.cmdr_off + pos as usize;
            self.mem.fill(abs, size as usize, 0).unwrap();
            self.mem.write_u32(abs, len_op).unwrap();
            fill(&self.mem, abs);
            self.publish(size);
            pos
        }

        /// Queues a TMR notification.
        pub fn push_tmr(&mut self, kind: u8, cmd_ids: &[u16]) -> u32 {
            let size = (abi::TMR_CMD_IDS + 2 * cmd_ids.len()).next_multiple_of(8) as u32;
            self.push_raw(size, size | abi::OP_TMR, |m, abs| {
                m.write(abs + abi::TMR_TYPE, &[kind]).unwrap();
                m.write_u32(abs + abi::TMR_CMD_CNT, cmd_ids.len() as u32)
                    .unwrap();
                for (i, id) in cmd_ids.iter().enumerate() {
                    m.write_u16(abs + abi::TMR_CMD_IDS + 2 * i, *id).unwrap();
                }
            })
        }

        /// The kernel's completion walk (`tcmu_handle_completions`): from `from` to
        /// `cmd_tail`, skipping PAD/TMR entries, returning `(cmd_id, status, uflags,
        /// read_len, sense[0..18])` of each completed command and the new position.
        #[allow(clippy::type_complexity)]
        pub fn reap(&self, from: u32) -> (Vec<(u16, u8, u8, u32, [u8; 18])>, u32) {
            let tail = self.tail();
            let mut pos = from;
            let mut done = Vec::new();
            while pos != tail {
                let abs = self.cmdr_off + pos as usize;
                let len_op = self.mem.read_u32(abs).unwrap();
                let len = len_op & !abi::OP_MASK;
                let op = len_op & abi::OP_MASK;
                if op != abi::OP_PAD && op != abi::OP_TMR {
                    let mut sense = [0u8; 18];
                    self.mem.read(abs + abi::RSP_SENSE, &mut sense).unwrap();
                    done.push((
                        self.mem.read_u16(abs + abi::HDR_CMD_ID).unwrap(),
                        self.mem.read_u8(abs + abi::RSP_SCSI_STATUS).unwrap(),
                        self.mem.read_u8(abs + abi::HDR_UFLAGS).unwrap(),
                        self.mem.read_u32(abs + abi::RSP_READ_LEN).unwrap(),
                        sense,
                    ));
                }
                pos = (pos + len) % self.cmdr_size;
            }
            (done, pos)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeKernel;
    use super::*;
    use proptest::prelude::*;

    const ALL_CAPS: u16 = abi::FLAG_CAP_OOOC | abi::FLAG_CAP_READ_LEN | abi::FLAG_CAP_TMR;
    const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 0x10, 0, 0, 8, 0];
    const SENSE: [u8; 18] = [
        0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0,
    ];

    fn consume_all(ring: &mut Ring) -> Vec<RingEvent> {
        let mut v = Vec::new();
        ring.consume(&mut v).unwrap();
        v
    }

    fn expect_cmd(ev: &RingEvent) -> (Slot, &CommandEntry) {
        match ev {
            RingEvent::Command { slot, cmd } => (*slot, cmd),
            other => panic!("expected a command, got {other:?}"),
        }
    }

    #[test]
    fn mailbox_validation() {
        let k = FakeKernel::new(4096, 4096, ALL_CAPS);
        let l = RingLayout::read(&*k.mem).unwrap();
        assert_eq!(l.cmdr_off, 128);
        assert_eq!(l.cmdr_size, 4096);
        assert_eq!(l.data_off, 128 + 4096);
        assert_eq!(l.data_size(), 4096);
        assert!(l.out_of_order() && l.read_len() && l.tmr());
        k.mem.write_u16(abi::MB_VERSION, 1).unwrap();
        assert!(matches!(
            RingLayout::read(&*k.mem),
            Err(RingError::BadMailbox(_))
        ));
        k.mem.write_u16(abi::MB_VERSION, 2).unwrap();
        k.mem.write_u32(abi::MB_CMDR_SIZE, 1 << 30).unwrap();
        assert!(matches!(
            RingLayout::read(&*k.mem),
            Err(RingError::BadMailbox(_))
        ));
        k.mem.write_u32(abi::MB_CMDR_SIZE, 4096).unwrap();
        k.mem.write_u32(abi::MB_CMDR_OFF, 64).unwrap();
        assert!(matches!(
            RingLayout::read(&*k.mem),
            Err(RingError::BadMailbox(_))
        ));
    }

    #[test]
    fn command_round_trip_with_read_len() {
        let mut k = FakeKernel::new(4096, 65536, ALL_CAPS);
        let a = k.alloc_data(4096, 0xee);
        let b = k.alloc_data(100, 0xee);
        k.push_cmd(7, &READ10, &[a, b], &[]);
        let mut ring = Ring::new(k.shared()).unwrap();
        let evs = consume_all(&mut ring);
        assert_eq!(evs.len(), 1);
        let (slot, cmd) = expect_cmd(&evs[0]);
        assert_eq!(cmd.cmd_id, 7);
        assert_eq!(cmd.cdb.as_slice(), &READ10[..]);
        assert_eq!(cmd.iovs.as_slice(), &[a, b]);
        assert!(cmd.bidi_iovs.is_empty());
        // Short read: 4100 of 4196 bytes, the rest zeroed.
        let data: Vec<u8> = (0..4100u32).map(|i| i as u8).collect();
        assert_eq!(scatter(&*k.mem, &cmd.iovs, &data, true).unwrap(), 4100);
        let mut back = Vec::new();
        ring.gather(&cmd.iovs, &mut back).unwrap();
        assert_eq!(&back[..4100], &data[..]);
        assert!(back[4100..].iter().all(|&b| b == 0));
        let rsp = CmdResponse {
            read_len: Some(4100),
            ..CmdResponse::GOOD
        };
        assert_eq!(ring.complete(slot, rsp).unwrap(), 1);
        let (done, pos) = k.reap(0);
        assert_eq!(done.len(), 1);
        // (cmd_id, status, uflags, read_len); the sense buffer is only defined for
        // CHECK CONDITION.
        assert_eq!(
            (done[0].0, done[0].1, done[0].2, done[0].3),
            (7, 0, abi::UFLAG_READ_LEN, 4100)
        );
        assert_eq!(pos, k.head());
        assert!(ring.is_drained().unwrap());
        // A second completion of the same slot is refused and writes nothing.
        assert_eq!(
            ring.complete(slot, CmdResponse::GOOD),
            Err(RingError::NotOutstanding { seq: 0, cmd_id: 7 })
        );
        assert_eq!(k.tail(), k.head());
    }

    #[test]
    fn out_of_order_completion_uses_slots_in_ring_order() {
        let mut k = FakeKernel::new(4096, 4096, ALL_CAPS);
        for id in 1..=3 {
            k.push_cmd(id, &[0, 0, 0, 0, 0, 0], &[], &[]);
        }
        let mut ring = Ring::new(k.shared()).unwrap();
        let evs = consume_all(&mut ring);
        let slots: Vec<Slot> = evs.iter().map(|e| expect_cmd(e).0).collect();
        ring.complete(slots[2], CmdResponse::check_condition(SENSE))
            .unwrap();
        // The kernel sees command 3's response in the first slot.
        let (done, pos) = k.reap(0);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, 3);
        assert_eq!(done[0].1, 0x02);
        assert_eq!(done[0].4, SENSE);
        ring.complete(slots[0], CmdResponse::GOOD).unwrap();
        ring.complete(slots[1], CmdResponse::GOOD).unwrap();
        let (done, _) = k.reap(pos);
        assert_eq!(
            done.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
            vec![(1, 0), (2, 0)]
        );
        assert!(ring.is_drained().unwrap());
    }

    #[test]
    fn in_order_mode_holds_back_later_completions() {
        let mut k = FakeKernel::new(4096, 4096, 0);
        for id in 10..13 {
            k.push_cmd(id, &[0, 0, 0, 0, 0, 0], &[], &[]);
        }
        let mut ring = Ring::new(k.shared()).unwrap();
        let evs = consume_all(&mut ring);
        let slots: Vec<Slot> = evs.iter().map(|e| expect_cmd(e).0).collect();
        assert_eq!(ring.complete(slots[2], CmdResponse::GOOD).unwrap(), 0);
        assert_eq!(ring.complete(slots[1], CmdResponse::GOOD).unwrap(), 0);
        assert_eq!(k.tail(), 0);
        assert_eq!(ring.complete(slots[0], CmdResponse::GOOD).unwrap(), 3);
        let (done, _) = k.reap(0);
        assert_eq!(
            done.iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
    }

    #[test]
    fn wrap_around_with_pad() {
        // 512-byte ring: 4 entries of 120 bytes fit (480), the 5th needs a PAD of 32.
        let mut k = FakeKernel::new(512, 4096, ALL_CAPS);
        let mut ring = Ring::new(k.shared()).unwrap();
        let mut reaped = 0;
        for round in 0..10u16 {
            let pos = k.push_cmd(round, &[0x00, 0, 0, 0, 0, 0], &[], &[]);
            let evs = consume_all(&mut ring);
            assert_eq!(evs.len(), 1, "round {round}");
            let (slot, cmd) = expect_cmd(&evs[0]);
            assert_eq!(cmd.cmd_id, round);
            ring.complete(slot, CmdResponse::GOOD).unwrap();
            let (done, p) = k.reap(reaped);
            assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), vec![round]);
            reaped = p;
            if round == 4 {
                assert_eq!(pos, 0, "fifth entry wraps to the start after a PAD");
            }
        }
        assert!(ring.is_drained().unwrap());
    }

    #[test]
    fn tmr_and_pad_entries_are_skipped_by_the_tail() {
        let mut k = FakeKernel::new(4096, 4096, ALL_CAPS);
        k.push_cmd(1, &[0, 0, 0, 0, 0, 0], &[], &[]);
        k.push_tmr(abi::tmr::LUN_RESET, &[1]);
        let mut ring = Ring::new(k.shared()).unwrap();
        let evs = consume_all(&mut ring);
        assert_eq!(evs.len(), 2);
        assert_eq!(
            evs[1],
            RingEvent::Tmr(TmrNotification {
                kind: abi::tmr::LUN_RESET,
                cmd_ids: vec![1]
            })
        );
        let slot = expect_cmd(&evs[0]).0;
        ring.complete(slot, CmdResponse::GOOD).unwrap();
        // The tail moved over the command and then (on the next consume) the TMR entry.
        consume_all(&mut ring);
        assert_eq!(k.tail(), k.head());
        assert!(ring.is_drained().unwrap());
    }

    #[test]
    fn bidi_iovs_are_separated() {
        let mut k = FakeKernel::new(4096, 8192, ALL_CAPS);
        let out = k.alloc_data(512, 1);
        let inn = k.alloc_data(512, 2);
        k.push_cmd(5, &[0x53, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[out], &[inn]);
        let mut ring = Ring::new(k.shared()).unwrap();
        let evs = consume_all(&mut ring);
        let (_, cmd) = expect_cmd(&evs[0]);
        assert_eq!(cmd.iovs.as_slice(), &[out]);
        assert_eq!(cmd.bidi_iovs.as_slice(), &[inn]);
    }

    /// CDBs of every length (6 to 32 bytes, SPC-4 4.2.5.1 and 4.2.3), after iovec tables
    /// of 0 to 7 entries as the kernel lays them out: inside `consume`'s snapshot of the
    /// entry (up to four iovecs and a CDB of up to 16 bytes), across its end (a 32-byte
    /// CDB) and past it (five or more iovecs). Each parses to the bytes in the ring.
    #[test]
    fn cdb_and_iovecs_parse_inside_and_beyond_the_snapshot() {
        let mut var = [0u8; 32];
        var[0] = 0x7f;
        var[7] = 24; // additional CDB length: 8 + 24 = 32 bytes
        var[8..]
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8 + 1);
        let cdbs: [&[u8]; 5] = [
            &[0x08, 1, 2, 3, 4, 5],
            &[0x28, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            &[0xa0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
            &[0x88, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            &var,
        ];
        for n_iov in 0..8 {
            for cdb in cdbs {
                let mut k = FakeKernel::new(4096, 8192, ALL_CAPS);
                let iovs: Vec<Iov> = (0..n_iov).map(|i| k.alloc_data(512, i as u8)).collect();
                let at = k.push_cmd(9, cdb, &iovs, &[]);
                let entry = k.cmdr_off + at as usize;
                let cdb_off = k.mem.read_u64(entry + abi::REQ_CDB_OFF).unwrap() as usize;
                let in_snapshot = cdb_off + cdb.len() <= entry + ENTRY_SNAPSHOT;
                assert_eq!(in_snapshot, n_iov <= 4 && cdb.len() <= 16, "{n_iov} iovecs");
                let mut ring = Ring::new(k.shared()).unwrap();
                let evs = consume_all(&mut ring);
                let (_, cmd) = expect_cmd(&evs[0]);
                assert_eq!(cmd.cdb.as_slice(), cdb, "{n_iov} iovecs");
                assert_eq!(cmd.iovs.as_slice(), iovs.as_slice());
                assert_eq!(cmd.cmd_id, 9);
            }
        }
    }

    /// A CDB the entry points elsewhere to inside the entry is read from there: in the
    /// unused bytes after the iovec table, and ending at the entry's last byte. One that
    /// crosses the entry's end, lies in the ring beyond it or in the data area fails that
    /// command alone: the kernel always puts the CDB inside its entry.
    #[test]
    fn cdb_inside_its_entry_is_read_and_elsewhere_refused() {
        const CDB: [u8; 10] = [0x2a, 0, 0, 0, 0, 7, 0, 0, 1, 0];
        for (rel, inside) in [(64usize, true), (118, true), (124, false), (0x7f8, false)] {
            let mut k = FakeKernel::new(4096, 8192, ALL_CAPS);
            let d = k.alloc_data(512, 0);
            // One iovec: the table ends at byte 64, READ(10)'s CDB sits at
            // CMD_ENTRY_MIN (112) and the entry is 128 bytes.
            let at = k.push_cmd(3, &READ10, &[d], &[]);
            let entry = k.cmdr_off + at as usize;
            k.mem.write(entry + rel, &CDB).unwrap();
            k.mem
                .write_u64(entry + abi::REQ_CDB_OFF, (entry + rel) as u64)
                .unwrap();
            let mut ring = Ring::new(k.shared()).unwrap();
            let evs = consume_all(&mut ring);
            if inside {
                assert_eq!(expect_cmd(&evs[0]).1.cdb.as_slice(), &CDB, "at {rel}");
            } else {
                assert!(
                    matches!(
                        &evs[0],
                        RingEvent::Malformed {
                            error: EntryError::CdbOutOfBounds { len: 128, .. },
                            ..
                        }
                    ),
                    "at {rel}: {:?}",
                    evs[0]
                );
            }
        }
        // The data area, where the kernel fills pages on demand.
        let mut k = FakeKernel::new(4096, 8192, ALL_CAPS);
        let d = k.alloc_data(512, 0);
        k.mem.write(d.offset, &CDB).unwrap();
        let at = k.push_cmd(3, &READ10, &[d], &[]);
        let entry = k.cmdr_off + at as usize;
        k.mem
            .write_u64(entry + abi::REQ_CDB_OFF, d.offset as u64)
            .unwrap();
        let mut ring = Ring::new(k.shared()).unwrap();
        let evs = consume_all(&mut ring);
        assert!(
            matches!(
                &evs[0],
                RingEvent::Malformed {
                    error: EntryError::CdbOutOfBounds { .. },
                    ..
                }
            ),
            "{:?}",
            evs[0]
        );
    }

    proptest! {
        /// Wherever `cdb_off` points (before the entry, into its header, its unused bytes,
        /// across the end of the snapshot or of the entry, or past it) and whatever the
        /// entry's length (112 to 136 bytes), a CDB wholly inside the entry is what a read
        /// of the ring at `cdb_off` finds (the snapshot is only a shorter way to the same
        /// bytes), and any other is refused as out of bounds.
        #[test]
        fn cdb_is_the_ring_bytes_at_cdb_off(
            rel in -24i64..200,
            extra in 0usize..4,
            opcode in prop_oneof![Just(0x08u8), Just(0x28), Just(0x88), Just(0xa0), Just(0x7f)],
            add in 0u8..40,
            seed in any::<u8>(),
        ) {
            let mut k = FakeKernel::new(4096, 8192, ALL_CAPS);
            let d = k.alloc_data(512, 0);
            // A PAD first, so that the bytes before the entry are ring bytes nobody parses.
            k.push_raw(256, 256 | abi::OP_PAD, |_, _| {});
            let abs = k.cmdr_off + 256;
            let junk: Vec<u8> = (0..256u32).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
            k.mem.write(abs - 24, &junk).unwrap();
            let size = (abi::CMD_ENTRY_MIN + 8 * extra) as u32;
            let cdb_off = (abs as i64 + rel) as usize;
            k.push_raw(size, size | abi::OP_CMD, |m, at| {
                m.write_u16(at + abi::HDR_CMD_ID, 7).unwrap();
                m.write_u32(at + abi::REQ_IOV_CNT, 1).unwrap();
                m.write_u64(at + abi::REQ_CDB_OFF, cdb_off as u64).unwrap();
                m.write_u64(at + abi::REQ_IOV, d.offset as u64).unwrap();
                m.write_u64(at + abi::REQ_IOV + 8, d.len as u64).unwrap();
            });
            // The opcode and the additional length where they do not overwrite the
            // fields parsed (header, counts, `cdb_off`, the iovec).
            for (at, byte) in [(cdb_off, opcode), (cdb_off + 7, add)] {
                if !(abs..abs + abi::REQ_IOV + abi::IOVEC_SIZE).contains(&at) {
                    k.mem.write(at, &[byte]).unwrap();
                }
            }
            let first = k.mem.read_u8(cdb_off).unwrap();
            // Only a CDB wholly inside its entry is read.
            let inside = |n: usize| cdb_off >= abs && cdb_off + n <= abs + size as usize;
            let expected = abi::cdb_len(first, k.mem.read_u8(cdb_off + 7).ok())
                .filter(|&n| inside(n))
                .map(|n| {
                    let mut c = vec![0u8; n];
                    k.mem.read(cdb_off, &mut c).unwrap();
                    c
                });
            let mut ring = Ring::new(k.shared()).unwrap();
            let evs = consume_all(&mut ring);
            prop_assert_eq!(evs.len(), 1);
            match (&evs[0], expected) {
                (RingEvent::Command { cmd, .. }, Some(c)) => {
                    prop_assert_eq!(cmd.cdb.as_slice(), c.as_slice());
                    prop_assert_eq!(cmd.iovs.as_slice(), &[d]);
                }
                (RingEvent::Malformed { error, .. }, None) => {
                    let out_of_bounds = matches!(error, EntryError::CdbOutOfBounds { .. });
                    prop_assert!(out_of_bounds, "{:?}", error);
                }
                (ev, c) => prop_assert!(false, "{:?} against {:?}", ev, c),
            }
        }
    }

    /// A malformed entry is failed on its own; the commands around it are unaffected.
    fn malformed_case(
        corrupt: impl FnOnce(&crate::mmap::HeapMemory, usize),
        expect: fn(&EntryError) -> bool,
    ) {
        let mut k = FakeKernel::new(4096, 8192, ALL_CAPS);
        let d = k.alloc_data(512, 0x11);
        k.push_cmd(1, &READ10, &[d], &[]);
        let bad = k.push_cmd(2, &READ10, &[d], &[]);
        corrupt(&k.mem, k.cmdr_off + bad as usize);
        k.push_cmd(3, &READ10, &[d], &[]);
        let before = k.mem.snapshot();
        let mut ring = Ring::new(k.shared()).unwrap();
        let evs = consume_all(&mut ring);
        assert_eq!(evs.len(), 3);
        assert_eq!(k.mem.snapshot(), before, "parsing writes nothing");
        let s1 = expect_cmd(&evs[0]).0;
        let s3 = expect_cmd(&evs[2]).0;
        let s2 = match &evs[1] {
            RingEvent::Malformed { slot, error } => {
                assert!(expect(error), "unexpected error {error:?}");
                *slot
            }
            other => panic!("expected Malformed, got {other:?}"),
        };
        assert_eq!(s2.cmd_id, 2);
        for s in [s1, s2, s3] {
            let rsp = if s == s2 {
                CmdResponse::check_condition(SENSE)
            } else {
                CmdResponse::GOOD
            };
            ring.complete(s, rsp).unwrap();
        }
        let (done, _) = k.reap(0);
        assert_eq!(
            done.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
            vec![(1, 0), (2, 2), (3, 0)]
        );
        // The data buffer shared by the good commands is untouched.
        let mut data = Vec::new();
        ring.gather(&[d], &mut data).unwrap();
        assert!(data.iter().all(|&b| b == 0x11));
    }

    #[test]
    fn iov_beyond_map_fails_only_that_command() {
        malformed_case(
            |m, abs| m.write_u64(abs + abi::REQ_IOV + 8, 1 << 40).unwrap(),
            |e| matches!(e, EntryError::IovOutOfBounds { index: 0, .. }),
        );
    }

    #[test]
    fn iov_into_ring_fails_only_that_command() {
        // A data-in copy into the ring would corrupt it: refused.
        malformed_case(
            |m, abs| m.write_u64(abs + abi::REQ_IOV, 128).unwrap(),
            |e| matches!(e, EntryError::IovOutOfBounds { base: 128, .. }),
        );
    }

    #[test]
    fn cdb_beyond_map_fails_only_that_command() {
        malformed_case(
            |m, abs| m.write_u64(abs + abi::REQ_CDB_OFF, u64::MAX - 3).unwrap(),
            |e| matches!(e, EntryError::CdbOutOfBounds { .. }),
        );
    }

    #[test]
    fn huge_iov_cnt_fails_only_that_command() {
        malformed_case(
            |m, abs| m.write_u32(abs + abi::REQ_IOV_CNT, u32::MAX).unwrap(),
            |e| {
                matches!(
                    e,
                    EntryError::IovTableTooLong {
                        count: 4_294_967_295,
                        ..
                    }
                )
            },
        );
    }

    #[test]
    fn dif_iovs_fail_only_that_command() {
        malformed_case(
            |m, abs| m.write_u32(abs + abi::REQ_IOV_DIF_CNT, 1).unwrap(),
            |e| matches!(e, EntryError::DifUnsupported(1)),
        );
    }

    #[test]
    fn unknown_opcode_is_answered_with_unknown_op() {
        let mut k = FakeKernel::new(4096, 4096, ALL_CAPS);
        k.push_cmd(1, &[0, 0, 0, 0, 0, 0], &[], &[]);
        // Opcode 5 in the low bits of len_op; the length (112) is still usable.
        k.push_raw(112, 112 | 5, |m, abs| {
            m.write_u16(abs + abi::HDR_CMD_ID, 9).unwrap()
        });
        k.push_cmd(2, &[0, 0, 0, 0, 0, 0], &[], &[]);
        let mut ring = Ring::new(k.shared()).unwrap();
        let evs = consume_all(&mut ring);
        assert_eq!(evs.len(), 3);
        let slot = match evs[1] {
            RingEvent::UnknownOp { slot, op: 5 } => slot,
            ref other => panic!("{other:?}"),
        };
        ring.complete(expect_cmd(&evs[0]).0, CmdResponse::GOOD)
            .unwrap();
        ring.complete(
            slot,
            CmdResponse {
                status: 0x02,
                unknown_op: true,
                ..CmdResponse::GOOD
            },
        )
        .unwrap();
        ring.complete(expect_cmd(&evs[2]).0, CmdResponse::GOOD)
            .unwrap();
        let (done, _) = k.reap(0);
        assert_eq!(
            done.iter().map(|d| (d.0, d.2)).collect::<Vec<_>>(),
            vec![(1, 0), (9, abi::UFLAG_UNKNOWN_OP), (2, 0)]
        );
    }

    #[test]
    fn corrupt_lengths_stop_the_ring_without_writing() {
        for (len_op, reason) in [
            (abi::OP_CMD, "entry length is smaller than its header"),
            (
                64 | abi::OP_CMD,
                "command entry too short to hold a response",
            ),
            (8192 | abi::OP_PAD, "entry crosses the end of the ring"),
        ] {
            let mut k = FakeKernel::new(4096, 4096, ALL_CAPS);
            k.push_cmd(1, &[0, 0, 0, 0, 0, 0], &[], &[]);
            let bad = k.push_raw(112, 112 | abi::OP_CMD, |_, _| {});
            k.mem.write_u32(k.cmdr_off + bad as usize, len_op).unwrap();
            let before = k.mem.snapshot();
            let mut ring = Ring::new(k.shared()).unwrap();
            let mut evs = Vec::new();
            let err = ring.consume(&mut evs).unwrap_err();
            assert_eq!(
                err,
                RingError::Corrupt {
                    ring_offset: bad,
                    len_op,
                    reason
                }
            );
            assert_eq!(evs.len(), 1, "the good command before it was read");
            assert_eq!(k.mem.snapshot(), before);
        }
    }

    #[test]
    fn entry_past_head_is_corrupt() {
        let mut k = FakeKernel::new(4096, 4096, ALL_CAPS);
        k.push_cmd(1, &[0, 0, 0, 0, 0, 0], &[], &[]);
        // Claim a longer entry than the kernel published.
        k.mem.write_u32(k.cmdr_off, 1024 | abi::OP_CMD).unwrap();
        let mut ring = Ring::new(k.shared()).unwrap();
        let err = ring.consume(&mut Vec::new()).unwrap_err();
        assert!(matches!(
            err,
            RingError::Corrupt {
                reason: "entry extends past cmd_head",
                ..
            }
        ));
    }

    #[test]
    fn resync_refuses_stale_completions() {
        let mut k = FakeKernel::new(4096, 4096, ALL_CAPS);
        k.push_cmd(1, &[0, 0, 0, 0, 0, 0], &[], &[]);
        let mut ring = Ring::new(k.shared()).unwrap();
        let slot = expect_cmd(&consume_all(&mut ring)[0]).0;
        // The kernel resets the ring (action/reset_ring): head = tail = 0.
        k.mem.store_u32_release(abi::MB_CMD_HEAD, 0).unwrap();
        ring.resync().unwrap();
        assert_eq!(ring.outstanding(), 0);
        assert!(matches!(
            ring.complete(slot, CmdResponse::GOOD),
            Err(RingError::NotOutstanding { .. })
        ));
    }

    #[test]
    fn short_tmr_is_reported_not_fatal() {
        let mut k = FakeKernel::new(4096, 4096, ALL_CAPS);
        k.push_raw(40, 40 | abi::OP_TMR, |m, abs| {
            m.write_u32(abs + abi::TMR_CMD_CNT, 100).unwrap()
        });
        k.push_cmd(4, &[0, 0, 0, 0, 0, 0], &[], &[]);
        let mut ring = Ring::new(k.shared()).unwrap();
        let evs = consume_all(&mut ring);
        assert!(matches!(evs[0], RingEvent::BadTmr { ring_offset: 0, .. }));
        assert_eq!(expect_cmd(&evs[1]).1.cmd_id, 4);
    }

    proptest! {
        /// Arbitrary bytes in the mailbox, ring and data area never panic or touch memory
        /// outside the mapping (the heap region checks every access), and completing
        /// whatever was read stays within the region too.
        #[test]
        fn arbitrary_ring_bytes_never_panic(
            ring_bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            head in 0u32..1024,
            tail in 0u32..1024,
            flags in any::<u16>(),
        ) {
            let k = FakeKernel::new(1024, 1024, flags);
            let n = ring_bytes.len().min(1024 + 1024);
            k.mem.write(k.cmdr_off, &ring_bytes[..n]).unwrap();
            k.mem.store_u32_release(abi::MB_CMD_HEAD, head).unwrap();
            k.mem.store_u32_release(abi::MB_CMD_TAIL, tail).unwrap();
            if let Ok(mut ring) = Ring::new(k.shared()) {
                let mut evs = Vec::new();
                let _ = ring.consume(&mut evs);
                for ev in evs {
                    match ev {
                        RingEvent::Command { slot, cmd } => {
                            let mut buf = Vec::new();
                            ring.gather(&cmd.iovs, &mut buf).unwrap();
                            let _ = scatter(&**ring.memory(), &cmd.bidi_iovs, &buf, true);
                            let _ = ring.complete(slot, CmdResponse::GOOD);
                        }
                        RingEvent::Malformed { slot, .. } | RingEvent::UnknownOp { slot, .. } => {
                            let _ = ring.complete(slot, CmdResponse::check_condition(SENSE));
                        }
                        _ => {}
                    }
                }
            }
        }

        /// Any sequence of well-formed commands of random sizes, completed in a random
        /// order, is handed back completely and exactly once.
        #[test]
        fn random_traffic_completes_every_command(
            sizes in proptest::collection::vec(0usize..6, 1..60),
            order_seed in any::<u64>(),
            ooo in any::<bool>(),
        ) {
            let flags = if ooo { ALL_CAPS } else { abi::FLAG_CAP_READ_LEN };
            let mut k = FakeKernel::new(1024, 1 << 16, flags);
            let mut ring = Ring::new(k.shared()).unwrap();
            let mut reaped_pos = 0;
            let mut completed = Vec::new();
            let mut rng = order_seed;
            let mut pending: Vec<Slot> = Vec::new();
            for (i, n_iov) in sizes.iter().enumerate() {
                let iovs: Vec<Iov> = (0..*n_iov).map(|_| k.alloc_data(512, 0)).collect();
                // Keep at most 3 commands in the ring (including responses held back in
                // in-order mode) so the 1 KiB ring never overflows.
                while ring.outstanding() >= 3 {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let pick = (rng >> 33) as usize % pending.len();
                    let s = pending.swap_remove(pick);
                    ring.complete(s, CmdResponse::GOOD).unwrap();
                    let (done, p) = k.reap(reaped_pos);
                    reaped_pos = p;
                    completed.extend(done.into_iter().map(|d| d.0));
                }
                k.push_cmd(i as u16, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &iovs, &[]);
                let mut evs = Vec::new();
                ring.consume(&mut evs).unwrap();
                for ev in evs {
                    if let RingEvent::Command { slot, cmd } = ev {
                        prop_assert_eq!(cmd.iovs.as_slice(), iovs.as_slice());
                        pending.push(slot);
                    }
                }
            }
            for s in pending.drain(..) {
                ring.complete(s, CmdResponse::GOOD).unwrap();
            }
            let (done, _) = k.reap(reaped_pos);
            completed.extend(done.into_iter().map(|d| d.0));
            completed.sort_unstable();
            prop_assert_eq!(completed, (0..sizes.len() as u16).collect::<Vec<_>>());
            ring.consume(&mut Vec::new()).unwrap();
            prop_assert!(ring.is_drained().unwrap());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// A command entry with a well-formed header but arbitrary kernel-supplied counts,
        /// `cdb_off` and iovec bases/lengths (biased to the edges of the data area and of
        /// the mapping, and to overflow): parsing never panics or writes, an accepted
        /// command only names bytes inside the data area and has its CDB inside the entry,
        /// a rejected one fails alone (the next command still parses) and both can be
        /// completed. Most entries put their CDB in the entry's last 16 bytes, as the
        /// kernel does, so that the iovec checks after the CDB's are reached.
        #[test]
        fn arbitrary_entry_offsets_are_bounds_checked(
            iov_cnt in prop_oneof![8 => 0u32..4, 1 => any::<u32>()],
            bidi_cnt in prop_oneof![8 => 0u32..3, 1 => any::<u32>()],
            dif_cnt in prop_oneof![8 => Just(0u32), 1 => any::<u32>()],
            // None: in the entry, after the iovec table.
            cdb_off in prop_oneof![8 => Just(None), 2 => near_edges().prop_map(Some)],
            cdb_opcode in prop_oneof![8 => Just(0x28u8), 1 => any::<u8>()],
            iovs in proptest::collection::vec(
                (
                    prop_oneof![4 => EDGE_DATA_OFF..EDGE_MAP, 3 => near_edges()],
                    prop_oneof![4 => 0u64..1024, 1 => near_edges()],
                ),
                EDGE_IOVS,
            ),
        ) {
            let mut k = FakeKernel::new(EDGE_CMDR, EDGE_DATA, ALL_CAPS);
            let map = k.mem.size() as u64;
            // A CDB where `cdb_off` may point outside the entry: the data area's start.
            k.mem.write(k.data_off, &[cdb_opcode]).unwrap();
            let cdb_at = abi::REQ_IOV + EDGE_IOVS * abi::IOVEC_SIZE;
            let size = (cdb_at + 16) as u32;
            let pos = k.push_raw(size, size | abi::OP_CMD, |m, abs| {
                m.write_u16(abs + abi::HDR_CMD_ID, 1).unwrap();
                m.write_u32(abs + abi::REQ_IOV_CNT, iov_cnt).unwrap();
                m.write_u32(abs + abi::REQ_IOV_BIDI_CNT, bidi_cnt).unwrap();
                m.write_u32(abs + abi::REQ_IOV_DIF_CNT, dif_cnt).unwrap();
                m.write(abs + cdb_at, &[cdb_opcode]).unwrap();
                let off = cdb_off.unwrap_or((abs + cdb_at) as u64);
                m.write_u64(abs + abi::REQ_CDB_OFF, off).unwrap();
                for (i, (base, len)) in iovs.iter().enumerate() {
                    let at = abs + abi::REQ_IOV + i * abi::IOVEC_SIZE;
                    m.write_u64(at, *base).unwrap();
                    m.write_u64(at + 8, *len).unwrap();
                }
            });
            let good = Iov { offset: k.data_off, len: 512 };
            k.push_cmd(2, &READ10, &[good], &[]);
            let before = k.mem.snapshot();
            let mut ring = Ring::new(k.shared()).unwrap();
            let evs = consume_all(&mut ring);
            prop_assert!(k.mem.snapshot() == before, "parsing wrote to the ring");
            prop_assert_eq!(evs.len(), 2);
            let first = match &evs[0] {
                RingEvent::Command { slot, cmd } => {
                    prop_assert_eq!(cmd.iovs.len() as u64, u64::from(iov_cnt));
                    prop_assert_eq!(cmd.bidi_iovs.len() as u64, u64::from(bidi_cnt));
                    prop_assert_eq!(dif_cnt, 0);
                    let entry = (k.cmdr_off + pos as usize) as u64;
                    let at = cdb_off.unwrap_or(entry + cdb_at as u64);
                    prop_assert!(!cmd.cdb.is_empty());
                    prop_assert!(
                        at >= entry && at + cmd.cdb.len() as u64 <= entry + u64::from(size),
                        "CDB at {} ({} bytes) outside the entry at {}", at, cmd.cdb.len(), entry
                    );
                    for iov in cmd.iovs.iter().chain(&cmd.bidi_iovs) {
                        prop_assert!(iov.offset >= k.data_off, "{:?} starts in the ring", iov);
                        prop_assert!(iov.offset as u64 + iov.len as u64 <= map, "{:?} ends past the map", iov);
                    }
                    let mut buf = Vec::new();
                    ring.gather(&cmd.iovs, &mut buf).unwrap();
                    scatter(&**ring.memory(), &cmd.bidi_iovs, &buf, true).unwrap();
                    (*slot, CmdResponse::GOOD)
                }
                RingEvent::Malformed { slot, .. } => (*slot, CmdResponse::check_condition(SENSE)),
                other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
            };
            let (second, cmd2) = expect_cmd(&evs[1]);
            prop_assert_eq!(cmd2.iovs.as_slice(), &[good]);
            ring.complete(first.0, first.1).unwrap();
            ring.complete(second, CmdResponse::GOOD).unwrap();
            let (done, _) = k.reap(0);
            prop_assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), vec![1, 2]);
            prop_assert!(ring.is_drained().unwrap());
        }
    }

    const EDGE_CMDR: u32 = 1024;
    const EDGE_DATA: usize = 4096;
    const EDGE_IOVS: usize = 8;
    const EDGE_DATA_OFF: u64 = (abi::MAILBOX_SIZE + EDGE_CMDR as usize) as u64;
    const EDGE_MAP: u64 = EDGE_DATA_OFF + EDGE_DATA as u64;

    /// Values at and around the data area's start and the mapping's end of a
    /// `FakeKernel::new(EDGE_CMDR, EDGE_DATA, ..)`, near `u64::MAX`, or anything.
    fn near_edges() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            0..=EDGE_MAP + 16,
            (0u64..32).prop_map(|d| EDGE_DATA_OFF + d - 16),
            (0u64..32).prop_map(|d| EDGE_MAP + d - 16),
            (0u64..32).prop_map(|d| u64::MAX - d),
        ]
    }
}
