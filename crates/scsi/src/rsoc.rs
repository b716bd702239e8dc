//! REPORT SUPPORTED OPERATION CODES (SPC-4 6.35) and REPORT SUPPORTED TASK MANAGEMENT
//! FUNCTIONS (SPC-4 6.36), generated from [`crate::cdb::COMMANDS`] — the same table that
//! drives dispatch.

use crate::cdb::{self, OpInfo, COMMANDS};
use crate::lu::{Fail, LogicalUnit};
use crate::sense::Sense;

/// Length of a command timeouts descriptor (SPC-4 6.35.4), including its length field.
const TIMEOUTS_DESC_LEN: u16 = 12;

fn push_timeouts(out: &mut Vec<u8>, info: &OpInfo) {
    out.extend_from_slice(&(TIMEOUTS_DESC_LEN - 2).to_be_bytes());
    out.push(0);
    out.push(0); // COMMAND SPECIFIC
    out.extend_from_slice(&info.timeout_secs.to_be_bytes()); // NOMINAL
    out.extend_from_slice(&info.timeout_secs.saturating_mul(2).to_be_bytes()); // RECOMMENDED
}

impl LogicalUnit {
    /// Whether this unit executes `info`: UNMAP needs a backstore that can discard, SET
    /// TARGET PORT GROUPS (explicit ALUA) a gateway group ([`crate::alua`]).
    pub(crate) fn op_supported(&self, info: &OpInfo) -> bool {
        match info.opcode {
            cdb::op::UNMAP => self.supports_unmap(),
            cdb::op::MAINTENANCE_OUT => self.group_alua().is_some(),
            _ => true,
        }
    }

    /// REPORT SUPPORTED OPERATION CODES.
    pub(crate) fn report_supported_opcodes(
        &self,
        rctd: bool,
        options: u8,
        opcode: u8,
        sa: u16,
        out: &mut Vec<u8>,
    ) -> Result<(), Fail> {
        if options == 0 {
            // All commands (SPC-4 6.35.2).
            out.extend_from_slice(&[0; 4]);
            for info in COMMANDS.iter().filter(|i| self.op_supported(i)) {
                out.push(info.opcode);
                out.push(0);
                out.extend_from_slice(&info.service_action.unwrap_or(0).to_be_bytes());
                out.push(0);
                out.push(u8::from(rctd) << 1 | u8::from(info.service_action.is_some()));
                out.extend_from_slice(&(info.cdb_len() as u16).to_be_bytes());
                if rctd {
                    push_timeouts(out, info);
                }
            }
            let len = (out.len() - 4) as u32;
            out[..4].copy_from_slice(&len.to_be_bytes());
            return Ok(());
        }
        let has_sa = cdb::has_service_action(opcode);
        let key = match options {
            // 001b: opcode without service action.
            1 if has_sa => return Err(Sense::invalid_field_in_cdb(2, Some(2)).into()),
            1 => None,
            // 010b: opcode and service action.
            2 if !has_sa => return Err(Sense::invalid_field_in_cdb(2, Some(2)).into()),
            2 => Some(sa),
            // 011b: service action used only if the opcode has service actions.
            _ => has_sa.then_some(sa),
        };
        let info = cdb::find(opcode, key).filter(|i| self.op_supported(i));
        out.push(0);
        match info {
            Some(info) => {
                // SUPPORT = 011b: supported in conformance with a SCSI standard.
                out.push(u8::from(rctd) << 7 | 0x03);
                out.extend_from_slice(&(info.cdb_len() as u16).to_be_bytes());
                out.extend_from_slice(info.usage);
                if rctd {
                    push_timeouts(out, info);
                }
            }
            None => {
                // SUPPORT = 001b: not supported.
                out.push(0x01);
                out.extend_from_slice(&[0, 0]);
            }
        }
        Ok(())
    }
}

/// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 6.36): ABORT TASK, ABORT TASK SET,
/// CLEAR ACA is not supported (no NACA), CLEAR TASK SET, LOGICAL UNIT RESET, QUERY
/// TASK, I_T NEXUS RESET.
pub(crate) fn report_supported_tmfs(repd: bool, out: &mut Vec<u8>) {
    // byte 0: ATS(7) ATSS(6) CACAS(5) CTSS(4) LURS(3) QTS(2) TRS(1) WAKES(0).
    out.push(0x80 | 0x40 | 0x10 | 0x08 | 0x04 | 0x02);
    // byte 1: QAES(2) QTSS(1) ITNRS(0).
    out.push(0x04 | 0x02 | 0x01);
    out.push(0);
    if repd {
        out.push(0x0c); // ADDITIONAL DATA LENGTH
        out.extend_from_slice(&[0; 12]);
    } else {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmf_data() {
        let mut v = Vec::new();
        report_supported_tmfs(false, &mut v);
        assert_eq!(v, [0xde, 0x07, 0, 0]);
        v.clear();
        report_supported_tmfs(true, &mut v);
        assert_eq!(v.len(), 16);
        assert_eq!(v[3], 0x0c);
    }
}
