//! INQUIRY (SPC-4 6.6) and the vital product data pages (SPC-4 7.8, SBC-4 6.6).

use crate::lu::{Fail, LogicalUnit};
use crate::nexus::Request;
use crate::sense::Sense;

/// VPD pages we return, ascending (SPC-4 7.8.13 requires ascending order).
pub(crate) const VPD_PAGES: [u8; 8] = [0x00, 0x80, 0x83, 0x86, 0x8f, 0xb0, 0xb1, 0xb2];

/// Version descriptors (SPC-4 6.6.2 table 148): SAM-5, iSCSI, SPC-4, SBC-3.
const VERSION_DESCRIPTORS: [u16; 4] = [0x00a0, 0x0960, 0x0460, 0x04c0];

/// Length of our standard INQUIRY data: through the last version descriptor slot.
const STD_INQUIRY_LEN: usize = 74;

/// Copies `s` into `dst`, space padded (SPC-4 4.3.1: ASCII fields are left aligned and
/// padded with spaces).
fn put_ascii(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    for (d, b) in dst.iter_mut().zip(s.bytes()) {
        *d = if (0x20..0x7f).contains(&b) { b } else { b' ' };
    }
}

/// Appends a VPD page: header (peripheral byte 00h, page code, 16-bit length) + body.
fn vpd(out: &mut Vec<u8>, page: u8, body: &[u8]) {
    out.push(0x00);
    out.push(page);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// Appends a designation descriptor (SPC-4 7.8.6.1).
fn designator(
    out: &mut Vec<u8>,
    protocol: Option<u8>,
    code_set: u8,
    association: u8,
    ty: u8,
    value: &[u8],
) {
    let piv = protocol.is_some();
    out.push((protocol.unwrap_or(0) << 4) | code_set);
    out.push((u8::from(piv) << 7) | (association << 4) | ty);
    out.push(0);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

impl LogicalUnit {
    /// Fills `out` with standard INQUIRY data or a VPD page.
    pub(crate) fn inquiry(
        &self,
        req: &Request<'_>,
        evpd: bool,
        page: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), Fail> {
        if !evpd {
            self.standard_inquiry(out);
            return Ok(());
        }
        match page {
            0x00 => vpd(out, 0x00, &VPD_PAGES),
            0x80 => vpd(out, 0x80, self.config.unit_serial.as_bytes()),
            0x83 => self.device_identification(req, out),
            0x86 => self.extended_inquiry(out),
            0x8f => self.third_party_copy_vpd(out),
            0xb0 => self.block_limits(out),
            0xb1 => self.block_device_characteristics(out),
            0xb2 => self.logical_block_provisioning(out),
            _ => return Err(Sense::invalid_field_in_cdb(2, None).into()),
        }
        Ok(())
    }

    /// Standard INQUIRY data (SPC-4 6.6.2).
    fn standard_inquiry(&self, out: &mut Vec<u8>) {
        let mut d = [0u8; STD_INQUIRY_LEN];
        d[0] = 0x00; // PERIPHERAL QUALIFIER 000b, direct access block device
        d[1] = 0x00; // RMB = 0
        d[2] = 0x06; // VERSION: SPC-4
        d[3] = 0x10 | 0x02; // HISUP, RESPONSE DATA FORMAT 2
        d[4] = (STD_INQUIRY_LEN - 5) as u8;
        // TPGS from the unit's ALUA mode (01b, implicit, by default; 11b, implicit and
        // explicit, in a gateway group, which supports SET TARGET PORT GROUPS), 3PC
        // (EXTENDED COPY).
        let tpgs = if self.group_alua().is_some() {
            crate::tpg::TPGS_IMPLICIT_AND_EXPLICIT
        } else {
            self.config.alua.tpgs()
        };
        d[5] = (tpgs << 4) | 0x08;
        d[6] = 0x00;
        d[7] = 0x02; // CMDQUE
        put_ascii(&mut d[8..16], &self.config.vendor);
        put_ascii(&mut d[16..32], &self.config.product);
        put_ascii(&mut d[32..36], &self.config.revision);
        for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
            d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&d);
    }

    /// Device Identification VPD page (SPC-4 7.8.6).
    fn device_identification(&self, req: &Request<'_>, out: &mut Vec<u8>) {
        let nexus = req.nexus;
        let mut body = Vec::with_capacity(128);
        // NAA IEEE Registered Extended, logical unit association, binary.
        designator(&mut body, None, 0x1, 0b00, 0x3, &self.naa);
        // T10 vendor ID based: vendor (8 bytes) + unit serial, ASCII.
        let mut t10 = [b' '; 8].to_vec();
        put_ascii(&mut t10, &self.config.vendor);
        t10.extend_from_slice(self.config.unit_serial.as_bytes());
        t10.truncate(255);
        designator(&mut body, None, 0x2, 0b00, 0x1, &t10);
        // Target port designators carry the protocol identifier of the port's transport
        // when it has one (SPC-4 7.8.6.1 PIV).
        let port = nexus.target();
        let proto = port.name.protocol().map(|p| p.code());
        let mut rtp = [0u8; 4];
        rtp[2..].copy_from_slice(&port.relative_id.to_be_bytes());
        designator(&mut body, proto, 0x1, 0b01, 0x4, &rtp);
        let mut tpg = [0u8; 4];
        tpg[2..].copy_from_slice(&port.group.0.to_be_bytes());
        designator(&mut body, proto, 0x1, 0b01, 0x5, &tpg);
        // SCSI name string of the target port: UTF-8, null terminated, padded to a
        // multiple of 4 (SPC-4 7.8.6.11).
        if let Some(name) = port.name.scsi_name() {
            let mut name = name.into_bytes();
            name.truncate(251);
            name.push(0);
            while name.len() % 4 != 0 {
                name.push(0);
            }
            designator(&mut body, proto, 0x3, 0b01, 0x8, &name);
        }
        vpd(out, 0x83, &body);
    }

    /// Extended INQUIRY Data VPD page (SPC-4 7.8.7).
    fn extended_inquiry(&self, out: &mut Vec<u8>) {
        let mut body = [0u8; 0x3c];
        // byte 5 of the page (body[1]): HEADSUP, ORDSUP, SIMPSUP.
        body[1] = 0x04 | 0x02 | 0x01;
        // byte 6: V_SUP when the backstore has a volatile cache.
        if self.backstore.capabilities().volatile_cache {
            body[2] = 0x01;
        }
        // byte 7: LUICLR = 1 (unit attentions are cleared per I_T nexus).
        body[3] = 0x01;
        vpd(out, 0x86, &body);
    }

    /// Block Limits VPD page (SBC-4 6.6.3).
    fn block_limits(&self, out: &mut Vec<u8>) {
        let c = &self.config;
        let mut b = [0u8; 0x3c];
        // Offsets below are page offsets minus 4.
        b[0] = 0; // WSNZ = 0
        b[1] = c.max_compare_write_blocks;
        let granularity = 1u16 << c.physical_block_exponent;
        b[2..4].copy_from_slice(&granularity.to_be_bytes());
        b[4..8].copy_from_slice(&c.max_transfer_blocks.to_be_bytes());
        b[8..12].copy_from_slice(
            &c.optimal_transfer_blocks
                .min(c.max_transfer_blocks)
                .to_be_bytes(),
        );
        // MAXIMUM PREFETCH LENGTH: 0 = no limit reported.
        if self.supports_unmap() {
            b[16..20].copy_from_slice(&c.max_unmap_blocks.to_be_bytes());
            b[20..24].copy_from_slice(&c.max_unmap_descriptors.to_be_bytes());
            b[24..28].copy_from_slice(&u32::from(granularity).to_be_bytes());
            // UGAVALID = 1, alignment 0.
            b[28] = 0x80;
        }
        b[32..40].copy_from_slice(&c.max_write_same_blocks.to_be_bytes());
        vpd(out, 0xb0, &b);
    }

    /// Block Device Characteristics VPD page (SBC-4 6.6.2).
    fn block_device_characteristics(&self, out: &mut Vec<u8>) {
        let mut b = [0u8; 0x3c];
        // MEDIUM ROTATION RATE: 0001h non-rotating; 0000h not reported for rotating
        // media (we do not know the speed).
        let rate: u16 = if self.backstore.capabilities().rotational {
            0
        } else {
            1
        };
        b[0..2].copy_from_slice(&rate.to_be_bytes());
        vpd(out, 0xb1, &b);
    }

    /// Logical Block Provisioning VPD page (SBC-4 6.6.4).
    fn logical_block_provisioning(&self, out: &mut Vec<u8>) {
        let caps = self.backstore.capabilities();
        let mut b = [0u8; 4];
        if caps.discard {
            // LBPU, LBPWS, LBPWS10.
            b[1] = 0x80 | 0x40 | 0x20;
            if caps.discard_zeroes {
                b[1] |= 0x04; // LBPRZ = 001b
            }
            b[2] = 0x02; // PROVISIONING TYPE: thin
        }
        vpd(out, 0xb2, &b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_fields_are_space_padded() {
        let mut d = [0u8; 8];
        put_ascii(&mut d, "ab\u{7f}");
        assert_eq!(&d, b"ab      ");
    }

    #[test]
    fn designator_header() {
        let mut v = Vec::new();
        designator(&mut v, Some(5), 1, 1, 4, &[0, 0, 0, 1]);
        assert_eq!(v, [0x51, 0x94, 0, 4, 0, 0, 0, 1]);
    }

    #[test]
    fn vpd_pages_ascending() {
        assert!(VPD_PAGES.windows(2).all(|w| w[0] < w[1]));
    }
}
