//! MODE SENSE(6)/(10) and MODE SELECT(6)/(10) (SPC-4 6.9-6.12, 7.5; SBC-4 6.5).
//!
//! Pages: 01h READ-WRITE ERROR RECOVERY, 08h CACHING, 0Ah CONTROL, 1Ch INFORMATIONAL
//! EXCEPTIONS CONTROL, and 3Fh (all pages). Only two bits are changeable: WCE in the
//! caching page (write-back vs write-through) and SWP in the control page (software
//! write protect). They live in atomics so the I/O path reads them without locks. Saved
//! pages are not implemented. Mode parameters are shared by all I_T nexuses; a change
//! raises MODE PARAMETERS CHANGED for the other nexuses (SPC-4 7.5.2).

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::cdb::Command;
use crate::config::LuConfig;
use crate::lu::{Fail, LogicalUnit, Outcome};
use crate::nexus::{Nexus, Request};
use crate::sense::Sense;
use crate::status::Status;

/// Page codes we implement, in ascending order (MODE SENSE page 3Fh returns them in this
/// order, SPC-4 6.11).
const PAGES: [u8; 4] = [0x01, 0x08, 0x0a, 0x1c];

/// PAGE CONTROL values (SPC-4 6.11 table 174).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageControl {
    Current,
    Changeable,
    Default,
}

/// Mode parameters of one logical unit.
#[derive(Debug)]
pub(crate) struct ModeState {
    wce: AtomicBool,
    swp: AtomicBool,
    default_wce: bool,
    /// Serialises MODE SELECT (validate then apply).
    select: Mutex<()>,
}

impl ModeState {
    pub(crate) fn new(config: &LuConfig) -> ModeState {
        ModeState {
            wce: AtomicBool::new(config.write_cache),
            swp: AtomicBool::new(false),
            default_wce: config.write_cache,
            select: Mutex::new(()),
        }
    }

    /// Current WCE: write-back caching enabled.
    pub(crate) fn wce(&self) -> bool {
        self.wce.load(Ordering::Relaxed)
    }

    /// Current SWP: software write protect.
    pub(crate) fn swp(&self) -> bool {
        self.swp.load(Ordering::Relaxed)
    }

    /// Back to default values (power on).
    pub(crate) fn reset(&self) {
        self.wce.store(self.default_wce, Ordering::Relaxed);
        self.swp.store(false, Ordering::Relaxed);
    }

    /// The page (without subpage) in the given page control, or `None` if we do not
    /// implement it.
    fn page(&self, code: u8, pc: PageControl) -> Option<Vec<u8>> {
        let mut p = match code {
            // READ-WRITE ERROR RECOVERY (SBC-4 6.5.9): no retries or recovery options to
            // report; all fields zero.
            0x01 => vec![0u8; 12],
            // CACHING (SBC-4 6.5.5).
            0x08 => {
                let mut p = vec![0u8; 20];
                let wce = match pc {
                    PageControl::Current => self.wce(),
                    PageControl::Changeable => true,
                    PageControl::Default => self.default_wce,
                };
                if wce {
                    p[2] |= 0x04;
                }
                p
            }
            // CONTROL (SPC-4 7.5.8).
            0x0a => {
                let mut p = vec![0u8; 12];
                match pc {
                    PageControl::Changeable => p[4] = 0x08,
                    PageControl::Current | PageControl::Default => {
                        // TST = 000b, D_SENSE = 0, GLTSD = 1 (no log parameters saved).
                        p[2] = 0x02;
                        // QUEUE ALGORITHM MODIFIER = 1 (unrestricted reordering), QERR = 00b.
                        p[3] = 0x10;
                        // UA_INTLCK_CTRL = 00b; SWP.
                        if pc == PageControl::Current && self.swp() {
                            p[4] |= 0x08;
                        }
                        // TAS = 0, BUSY TIMEOUT PERIOD unlimited.
                        p[8] = 0xff;
                        p[9] = 0xff;
                    }
                }
                p
            }
            // INFORMATIONAL EXCEPTIONS CONTROL (SPC-4 7.5.11): DEXCPT = 1 (disabled).
            0x1c => {
                let mut p = vec![0u8; 12];
                if pc != PageControl::Changeable {
                    p[2] = 0x08;
                }
                p
            }
            _ => return None,
        };
        p[0] = code;
        p[1] = (p.len() - 2) as u8;
        Some(p)
    }
}

impl LogicalUnit {
    /// Sets WCE of the caching page (SBC-4 6.5.5) from outside the SCSI command set — a
    /// fabric's own configuration, e.g. LIO's `emulate_write_cache` reconfigured for a
    /// TCMU device. Same effect as a MODE SELECT through nexus `by`: a change raises MODE
    /// PARAMETERS CHANGED for every other I_T nexus (SPC-4 7.5.2).
    pub fn set_write_cache(&self, enabled: bool, by: &Nexus) {
        let _guard = self.mode.select.lock();
        if self.mode.wce.swap(enabled, Ordering::Relaxed) != enabled {
            self.ua
                .raise_all(Sense::UA_MODE_PARAMETERS_CHANGED, Some(by));
        }
    }

    /// MODE SENSE(6)/(10) (SPC-4 6.11, 6.12).
    pub(crate) fn mode_sense(&self, req: &Request<'_>, cmd: Command, out: &mut Vec<u8>) -> Outcome {
        let Command::ModeSense {
            ten,
            dbd,
            llbaa,
            pc,
            page,
            subpage,
            alloc,
        } = cmd
        else {
            return Err(Sense::INVALID_FIELD_IN_CDB.into());
        };
        let pc = match pc {
            0 => PageControl::Current,
            1 => PageControl::Changeable,
            2 => PageControl::Default,
            _ => return Err(Sense::SAVING_PARAMETERS_NOT_SUPPORTED.into()),
        };
        // We have no subpages: subpage 00h is the page itself, FFh "all subpages" of it.
        if subpage != 0x00 && subpage != 0xff {
            return Err(Sense::invalid_field_in_cdb(3, None).into());
        }
        let mut pages = Vec::new();
        if page == 0x3f {
            for code in PAGES {
                pages.extend(self.mode.page(code, pc).unwrap_or_default());
            }
        } else {
            match self.mode.page(page, pc) {
                Some(p) => pages.extend(p),
                None => return Err(Sense::invalid_field_in_cdb(2, Some(5)).into()),
            }
        }
        // Device-specific parameter (SBC-4 6.5.1): WP and DPOFUA.
        let mut dsp = 0x10u8;
        if self.write_protected(req) {
            dsp |= 0x80;
        }
        let mut bd = Vec::new();
        if !dbd {
            let blocks = if pc == PageControl::Changeable {
                0
            } else {
                self.capacity_blocks()
            };
            let bs = if pc == PageControl::Changeable {
                0
            } else {
                self.block_size
            };
            if ten && llbaa {
                bd.extend_from_slice(&blocks.to_be_bytes());
                bd.extend_from_slice(&[0; 4]);
                bd.extend_from_slice(&bs.to_be_bytes());
            } else {
                let b32 = u32::try_from(blocks).unwrap_or(u32::MAX);
                bd.extend_from_slice(&b32.to_be_bytes());
                bd.push(0);
                bd.extend_from_slice(&bs.to_be_bytes()[1..]);
            }
        }
        if ten {
            let total = 8 + bd.len() + pages.len();
            out.extend_from_slice(&((total - 2) as u16).to_be_bytes());
            out.push(0); // MEDIUM TYPE
            out.push(dsp);
            out.push(u8::from(llbaa && !dbd)); // LONGLBA
            out.push(0);
            out.extend_from_slice(&(bd.len() as u16).to_be_bytes());
        } else {
            let total = 4 + bd.len() + pages.len();
            out.push(u8::try_from(total - 1).unwrap_or(u8::MAX));
            out.push(0);
            out.push(dsp);
            out.push(bd.len() as u8);
        }
        out.extend_from_slice(&bd);
        out.extend_from_slice(&pages);
        out.truncate(alloc as usize);
        Ok(Status::Good)
    }

    /// MODE SELECT(6)/(10) (SPC-4 6.9, 6.10): validates the whole parameter list against
    /// the current and changeable values, then applies it.
    pub(crate) fn mode_select(
        &self,
        req: &Request<'_>,
        ten: bool,
        pf: bool,
        sp: bool,
        len: u32,
    ) -> Outcome {
        if !pf {
            // Vendor specific (non page format) parameter lists are not supported.
            return Err(Sense::invalid_field_in_cdb(1, Some(4)).into());
        }
        if sp {
            // No saved pages (SPC-4 6.9.1).
            return Err(Sense::invalid_field_in_cdb(1, Some(0)).into());
        }
        if len == 0 {
            return Ok(Status::Good);
        }
        let p = req
            .data_out
            .get(..len as usize)
            .ok_or(Fail::Check(Sense::PARAMETER_LIST_LENGTH_ERROR))?;
        let mut pos = select_header(p, ten, self.block_size)?;

        let _guard = self.mode.select.lock();
        let mut new_wce = self.mode.wce();
        let mut new_swp = self.mode.swp();
        while pos < p.len() {
            let new = self.select_page(p, pos)?;
            match new[0] & 0x3f {
                0x08 => new_wce = new[2] & 0x04 != 0,
                0x0a => new_swp = new[4] & 0x08 != 0,
                _ => {}
            }
            pos += new.len();
        }
        let changed = new_wce != self.mode.wce() || new_swp != self.mode.swp();
        self.mode.wce.store(new_wce, Ordering::Relaxed);
        self.mode.swp.store(new_swp, Ordering::Relaxed);
        if changed {
            self.ua
                .raise_all(Sense::UA_MODE_PARAMETERS_CHANGED, Some(req.nexus));
        }
        Ok(Status::Good)
    }

    /// Checks the mode page at `pos` of parameter list `p`: a page we have, of its
    /// length, changing only changeable bits (SPC-4 6.9.1). Returns the page's bytes.
    fn select_page<'p>(&self, p: &'p [u8], pos: usize) -> Result<&'p [u8], Fail> {
        let len = p.len();
        if len - pos < 2 {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let code = p[pos] & 0x3f;
        if p[pos] & 0x40 != 0 {
            // SPF: subpage format; we have no subpages.
            return Err(Sense::invalid_field_in_param(pos as u16, Some(6)).into());
        }
        let page_len = 2 + usize::from(p[pos + 1]);
        if pos + page_len > len {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let unknown = || Fail::Check(Sense::invalid_field_in_param(pos as u16, Some(5)));
        let cur = self
            .mode
            .page(code, PageControl::Current)
            .ok_or_else(unknown)?;
        let chg = self
            .mode
            .page(code, PageControl::Changeable)
            .ok_or_else(unknown)?;
        if page_len != cur.len() {
            return Err(Sense::invalid_field_in_param((pos + 1) as u16, None).into());
        }
        let new = &p[pos..pos + page_len];
        if let Some((i, bit)) = unchangeable_bit(new, &cur, &chg) {
            return Err(Sense::invalid_field_in_param((pos + i) as u16, Some(bit)).into());
        }
        Ok(new)
    }
}

/// Checks the mode parameter header and the optional block descriptor of a MODE SELECT
/// parameter list `p` (SPC-4 7.5.5, 7.5.6; SBC-4 6.5.2): a descriptor, if any, must be
/// of the size LONGLBA says and repeat our block size. Returns where the pages start.
fn select_header(p: &[u8], ten: bool, block_size: u32) -> Result<usize, Fail> {
    let len = p.len();
    let hdr = if ten { 8 } else { 4 };
    if len < hdr {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
    }
    let (bd_len, longlba, bd_len_at) = if ten {
        (
            usize::from(u16::from_be_bytes([p[6], p[7]])),
            p[4] & 1 != 0,
            6u16,
        )
    } else {
        (usize::from(p[3]), false, 3u16)
    };
    let bd_size = if longlba { 16 } else { 8 };
    if bd_len != 0 && bd_len != bd_size {
        return Err(Sense::invalid_field_in_param(bd_len_at, None).into());
    }
    if hdr + bd_len > len {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
    }
    if bd_len != 0 {
        let d = &p[hdr..hdr + bd_len];
        let (bs, at) = if longlba {
            (u32::from_be_bytes([d[12], d[13], d[14], d[15]]), 12)
        } else {
            (u32::from_be_bytes([0, d[5], d[6], d[7]]), 5)
        };
        if bs != block_size {
            return Err(Sense::invalid_field_in_param((hdr + at) as u16, None).into());
        }
    }
    Ok(hdr + bd_len)
}

/// The first byte (from byte 2, after the page header) and its highest bit where `new`
/// differs from `cur` in a bit `chg` does not mark changeable.
fn unchangeable_bit(new: &[u8], cur: &[u8], chg: &[u8]) -> Option<(usize, u8)> {
    (2..new.len()).find_map(|i| {
        let diff = (new[i] ^ cur[i]) & !chg[i];
        (diff != 0).then(|| (i, 7 - diff.leading_zeros() as u8))
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn select_header_finds_the_pages_after_the_block_descriptor() {
        // MODE SELECT(6) header (SPC-4 7.5.5, 4 bytes), BLOCK DESCRIPTOR LENGTH at byte 3;
        // short block descriptor (SBC-4 6.5.2) with the block length in bytes 5-7.
        let mut p = vec![0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0x08, 0x06];
        assert_eq!(select_header(&p, false, 512), Ok(12));
        let e = select_header(&p, false, 4096);
        assert_eq!(e, Err(Sense::invalid_field_in_param(9, None).into()));
        p[3] = 4;
        let e = select_header(&p, false, 512);
        assert_eq!(e, Err(Sense::invalid_field_in_param(3, None).into()));
        // MODE SELECT(10) (8-byte header) with LONGLBA and a 16-byte descriptor whose
        // block length is in bytes 12-15.
        let mut q = vec![0u8; 24];
        q[4] = 1;
        q[7] = 16;
        q[8 + 12..8 + 16].copy_from_slice(&4096u32.to_be_bytes());
        assert_eq!(select_header(&q, true, 4096), Ok(24));
        assert_eq!(
            select_header(&q[..20], true, 4096),
            Err(Fail::Check(Sense::PARAMETER_LIST_LENGTH_ERROR))
        );
        assert_eq!(select_header(&[0, 0, 0, 0], false, 512), Ok(4));
        assert_eq!(
            select_header(&[0, 0, 0], false, 512),
            Err(Fail::Check(Sense::PARAMETER_LIST_LENGTH_ERROR))
        );
    }

    #[test]
    fn unchangeable_bit_points_at_the_highest_differing_bit() {
        // Caching page (SBC-4 6.5.5): only WCE (byte 2 bit 2) changeable.
        let cur = [0x08, 0x12, 0x04, 0x00];
        let chg = [0x00, 0x00, 0x04, 0x00];
        assert_eq!(
            unchangeable_bit(&[0x08, 0x12, 0x00, 0x00], &cur, &chg),
            None
        );
        assert_eq!(
            unchangeable_bit(&[0x08, 0x12, 0x05, 0x00], &cur, &chg),
            Some((2, 0))
        );
        assert_eq!(
            unchangeable_bit(&[0x08, 0x12, 0x04, 0x90], &cur, &chg),
            Some((3, 7))
        );
        // The page header (bytes 0-1) is not compared.
        assert_eq!(
            unchangeable_bit(&[0x48, 0x00, 0x04, 0x00], &cur, &chg),
            None
        );
    }
}
