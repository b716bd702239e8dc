//! The kernel ABI of `target_core_user` (TCMU): ring layout, entry offsets and the generic
//! netlink protocol numbers.
//!
//! Values follow `include/uapi/linux/target_core_user.h` (mailbox version 2). The header
//! declares the structures `__packed`, but the anonymous `req`/`rsp` structs inside the
//! entry union are *not* packed, so `cdb_off` sits at byte 24 and `iov[]` at byte 48 of an
//! entry; the offsets below were checked against the header with `offsetof` on x86_64.
//! Every offset is relative to the start of the shared mapping (the mailbox), never to an
//! entry, exactly as the kernel writes them.

/// The only mailbox version this runner speaks (`TCMU_MAILBOX_VERSION`).
pub const MAILBOX_VERSION: u16 = 2;

/// `struct tcmu_mailbox` is 128 bytes (`cmd_tail` is aligned to its own 64-byte line).
pub const MAILBOX_SIZE: usize = 128;
/// Offset of `__u16 version` in the mailbox.
pub const MB_VERSION: usize = 0;
/// Offset of `__u16 flags` in the mailbox.
pub const MB_FLAGS: usize = 2;
/// Offset of `__u32 cmdr_off` in the mailbox.
pub const MB_CMDR_OFF: usize = 4;
/// Offset of `__u32 cmdr_size` in the mailbox.
pub const MB_CMDR_SIZE: usize = 8;
/// Offset of `__u32 cmd_head` (written by the kernel) in the mailbox.
pub const MB_CMD_HEAD: usize = 12;
/// Offset of `__u32 cmd_tail` (written by userspace) in the mailbox.
pub const MB_CMD_TAIL: usize = 64;

/// `TCMU_MAILBOX_FLAG_CAP_OOOC`: commands may be completed out of order.
pub const FLAG_CAP_OOOC: u16 = 1 << 0;
/// `TCMU_MAILBOX_FLAG_CAP_READ_LEN`: `rsp.read_len` is honoured with `UFLAG_READ_LEN`.
pub const FLAG_CAP_READ_LEN: u16 = 1 << 1;
/// `TCMU_MAILBOX_FLAG_CAP_TMR`: the kernel can queue TMR notification entries.
pub const FLAG_CAP_TMR: u16 = 1 << 2;
/// `TCMU_MAILBOX_FLAG_CAP_KEEP_BUF`: data buffers may be kept after completion (unused).
pub const FLAG_CAP_KEEP_BUF: u16 = 1 << 3;

/// Entry opcode `TCMU_OP_PAD`: skip `len` bytes.
pub const OP_PAD: u32 = 0;
/// Entry opcode `TCMU_OP_CMD`: a SCSI command.
pub const OP_CMD: u32 = 1;
/// Entry opcode `TCMU_OP_TMR`: a task management notification.
pub const OP_TMR: u32 = 2;
/// The opcode lives in the low three bits of `len_op`; the length is 8-byte aligned.
pub const OP_MASK: u32 = 0x7;
/// Entries are multiples of `TCMU_OP_ALIGN_SIZE` bytes.
pub const OP_ALIGN: u32 = 8;

/// Size of `struct tcmu_cmd_entry_hdr`.
pub const HDR_SIZE: usize = 8;
/// Offset of `__u32 len_op` in an entry.
pub const HDR_LEN_OP: usize = 0;
/// Offset of `__u16 cmd_id` in an entry.
pub const HDR_CMD_ID: usize = 4;
/// Offset of `__u8 kflags` in an entry.
pub const HDR_KFLAGS: usize = 6;
/// Offset of `__u8 uflags` in an entry.
pub const HDR_UFLAGS: usize = 7;

/// `TCMU_UFLAG_UNKNOWN_OP`: userspace did not understand the entry.
pub const UFLAG_UNKNOWN_OP: u8 = 0x1;
/// `TCMU_UFLAG_READ_LEN`: `rsp.read_len` holds the number of data-in bytes.
pub const UFLAG_READ_LEN: u8 = 0x2;

/// Offset of `req.iov_cnt` in a command entry.
pub const REQ_IOV_CNT: usize = 8;
/// Offset of `req.iov_bidi_cnt`.
pub const REQ_IOV_BIDI_CNT: usize = 12;
/// Offset of `req.iov_dif_cnt`.
pub const REQ_IOV_DIF_CNT: usize = 16;
/// Offset of `req.cdb_off` (a `__u64` offset into the mapping).
pub const REQ_CDB_OFF: usize = 24;
/// Offset of `req.iov[0]`.
pub const REQ_IOV: usize = 48;
/// Size of one `struct iovec` (64-bit `iov_base` offset, 64-bit `iov_len`).
pub const IOVEC_SIZE: usize = 16;

/// Offset of `rsp.scsi_status`.
pub const RSP_SCSI_STATUS: usize = 8;
/// Offset of `rsp.read_len`.
pub const RSP_READ_LEN: usize = 12;
/// Offset of `rsp.sense_buffer`.
pub const RSP_SENSE: usize = 16;
/// `TCMU_SENSE_BUFFERSIZE`.
pub const SENSE_BUFFER_SIZE: usize = 96;
/// `sizeof(struct tcmu_cmd_entry)`: every command entry is at least this long, so any
/// command slot can hold a response.
pub const CMD_ENTRY_MIN: usize = 112;

/// Offset of `tmr_type` in a `struct tcmu_tmr_entry`.
pub const TMR_TYPE: usize = 8;
/// Offset of `cmd_cnt` in a TMR entry.
pub const TMR_CMD_CNT: usize = 12;
/// Offset of `cmd_ids[0]` (`__u16` each) in a TMR entry.
pub const TMR_CMD_IDS: usize = 32;

/// `TCMU_TMR_*` values of `tmr_type`.
pub mod tmr {
    /// Unknown function.
    pub const UNKNOWN: u8 = 0;
    /// ABORT TASK.
    pub const ABORT_TASK: u8 = 1;
    /// ABORT TASK SET.
    pub const ABORT_TASK_SET: u8 = 2;
    /// CLEAR ACA.
    pub const CLEAR_ACA: u8 = 3;
    /// CLEAR TASK SET.
    pub const CLEAR_TASK_SET: u8 = 4;
    /// LOGICAL UNIT RESET.
    pub const LUN_RESET: u8 = 5;
    /// TARGET WARM RESET.
    pub const TARGET_WARM_RESET: u8 = 6;
    /// TARGET COLD RESET.
    pub const TARGET_COLD_RESET: u8 = 7;
    /// Pseudo reset caused by a PERSISTENT RESERVE OUT (preempt and abort).
    pub const LUN_RESET_PRO: u8 = 128;
}

/// Generic netlink family name of TCMU.
pub const GENL_FAMILY: &str = "TCM-USER";
/// Multicast group on which the kernel announces device changes.
pub const GENL_MCAST_GROUP: &str = "config";
/// Protocol version we send (`TCMU_NL_VERSION` of libtcmu); version 2 carries device ids.
pub const GENL_VERSION: u8 = 2;

/// `enum tcmu_genl_cmd`.
pub mod cmd {
    /// Unspecified.
    pub const UNSPEC: u8 = 0;
    /// A device was enabled; reply with [`ADDED_DEVICE_DONE`].
    pub const ADDED_DEVICE: u8 = 1;
    /// A device is being removed; reply with [`REMOVED_DEVICE_DONE`].
    pub const REMOVED_DEVICE: u8 = 2;
    /// A device attribute changed; reply with [`RECONFIG_DEVICE_DONE`].
    pub const RECONFIG_DEVICE: u8 = 3;
    /// Reply to [`ADDED_DEVICE`].
    pub const ADDED_DEVICE_DONE: u8 = 4;
    /// Reply to [`REMOVED_DEVICE`].
    pub const REMOVED_DEVICE_DONE: u8 = 5;
    /// Reply to [`RECONFIG_DEVICE`].
    pub const RECONFIG_DEVICE_DONE: u8 = 6;
    /// Tell the kernel what the daemon supports.
    pub const SET_FEATURES: u8 = 7;
}

/// `enum tcmu_genl_attr`.
pub mod attr {
    /// `NLA_STRING`: the UIO device name, `tcm-user/<hba>/<dev>/<dev_config>`.
    pub const DEVICE: u16 = 1;
    /// `NLA_U32`: UIO minor number (`/dev/uio<minor>`).
    pub const MINOR: u16 = 2;
    /// Padding for 64-bit attributes.
    pub const PAD: u16 = 3;
    /// `NLA_STRING`: new `dev_config` (RECONFIG).
    pub const DEV_CFG: u16 = 4;
    /// `NLA_U64`: new device size in bytes (RECONFIG).
    pub const DEV_SIZE: u16 = 5;
    /// `NLA_U8`: new `emulate_write_cache` value (RECONFIG).
    pub const WRITECACHE: u16 = 6;
    /// `NLA_S32`: status of a `*_DONE` reply (0 or a negative errno).
    pub const CMD_STATUS: u16 = 7;
    /// `NLA_U32`: LIO device index, echoed in replies.
    pub const DEVICE_ID: u16 = 8;
    /// `NLA_U8`: the daemon answers kernel commands with `*_DONE` replies.
    pub const SUPP_KERN_CMD_REPLY: u16 = 9;
}

// The response must fit in the smallest command entry the kernel builds, and the layout
// constants must agree with each other (checked at compile time).
const _: () = assert!(RSP_SENSE + SENSE_BUFFER_SIZE == CMD_ENTRY_MIN);
const _: () = assert!(CMD_ENTRY_MIN % OP_ALIGN as usize == 0);
const _: () = assert!(MB_CMD_TAIL + 4 <= MAILBOX_SIZE);
const _: () = assert!(REQ_IOV % 8 == 0 && REQ_IOV >= REQ_CDB_OFF + 8);

/// Length of a CDB from its operation code, as the kernel's `scsi_command_size()`:
/// by group code (SPC-4 4.2.5.1), and `cdb[7] + 8` for variable-length CDBs (opcode 7Fh,
/// SPC-4 4.2.3). `additional_len` is `cdb[7]` and is only consulted for 7Fh.
pub fn cdb_len(opcode: u8, additional_len: Option<u8>) -> Option<usize> {
    const VARIABLE_LENGTH_CMD: u8 = 0x7f;
    if opcode == VARIABLE_LENGTH_CMD {
        return additional_len.map(|a| usize::from(a) + 8);
    }
    Some(match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        3 => 12, // reserved group other than 7Fh: `scsi_command_size_tbl` says 12
        4 => 16,
        5 => 12,
        _ => 10, // vendor specific groups 6 and 7
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdb_lengths_follow_group_codes() {
        // SPC-4 table 3: group 0 = 6 bytes, 1/2 = 10, 4 = 16, 5 = 12.
        assert_eq!(cdb_len(0x08, None), Some(6)); // READ(6)
        assert_eq!(cdb_len(0x28, None), Some(10)); // READ(10)
        assert_eq!(cdb_len(0x5a, None), Some(10)); // MODE SENSE(10)
        assert_eq!(cdb_len(0x88, None), Some(16)); // READ(16)
        assert_eq!(cdb_len(0xa0, None), Some(12)); // REPORT LUNS
        assert_eq!(cdb_len(0xc0, None), Some(10)); // vendor
                                                   // Group 3 (60h-7Eh), reserved: 12 bytes in the kernel's `scsi_command_size_tbl`
                                                   // ({6, 10, 10, 12, 16, 12, 10, 10}), which fills the entry.
        assert_eq!(cdb_len(0x60, None), Some(12));
        assert_eq!(cdb_len(0x7e, Some(0)), Some(12));
        assert_eq!(cdb_len(0x7f, Some(0x18)), Some(32)); // 32-byte variable length CDB
        assert_eq!(cdb_len(0x7f, None), None);
    }
}
