//! PERSISTENT RESERVE IN (SPC-4 6.15).

use crate::cdb::PrInAction;
use crate::lu::Fail;
use crate::nexus::Nexus;

use super::PrState;

impl PrState {
    /// PERSISTENT RESERVE IN (SPC-4 6.15).
    pub(crate) fn reserve_in(
        &self,
        _nexus: &Nexus,
        action: PrInAction,
        out: &mut Vec<u8>,
    ) -> Result<(), Fail> {
        let cur = self.load()?;
        let inner = &*cur.state;
        match action {
            PrInAction::ReadKeys => {
                out.extend_from_slice(&inner.generation.to_be_bytes());
                let len = inner.registrations.len() * 8;
                out.extend_from_slice(&(len as u32).to_be_bytes());
                for r in &inner.registrations {
                    out.extend_from_slice(&r.key.to_be_bytes());
                }
            }
            PrInAction::ReadReservation => {
                out.extend_from_slice(&inner.generation.to_be_bytes());
                match &inner.reservation {
                    None => out.extend_from_slice(&0u32.to_be_bytes()),
                    Some(res) => {
                        out.extend_from_slice(&16u32.to_be_bytes());
                        // All-registrants reservations report key 0 (SPC-4 6.15.3.3).
                        let key = if res.pr_type.all_registrants() {
                            0
                        } else {
                            inner.registrations.get(res.holder).map_or(0, |r| r.key)
                        };
                        out.extend_from_slice(&key.to_be_bytes());
                        out.extend_from_slice(&[0; 4]);
                        out.push(0);
                        out.push(res.pr_type as u8); // SCOPE 0h: LU_SCOPE
                        out.extend_from_slice(&[0; 2]);
                    }
                }
            }
            PrInAction::ReportCapabilities => {
                out.extend_from_slice(&8u16.to_be_bytes());
                // CRH = 1, SIP_C = 0, ATP_C = 1, PTPL_C when we can persist.
                let mut b2 = 0x10 | 0x04;
                if self.persists() {
                    b2 |= 0x01;
                }
                out.push(b2);
                // TMV = 1, ALLOW COMMANDS = 001b, PTPL_A.
                out.push(0x80 | 0x10 | u8::from(inner.aptpl));
                // PERSISTENT RESERVATION TYPE MASK: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC,
                // WR_EX; EX_AC_AR.
                out.push(0x80 | 0x40 | 0x20 | 0x08 | 0x02);
                out.push(0x01);
                out.extend_from_slice(&[0; 2]);
            }
            PrInAction::ReadFullStatus => {
                out.extend_from_slice(&inner.generation.to_be_bytes());
                out.extend_from_slice(&[0; 4]);
                for (i, r) in inner.registrations.iter().enumerate() {
                    out.extend_from_slice(&r.key.to_be_bytes());
                    out.extend_from_slice(&[0; 4]);
                    let holder = inner.is_holder_index(i);
                    out.push(u8::from(r.target.is_none()) << 1 | u8::from(holder));
                    out.push(if holder {
                        inner.reservation.as_ref().map_or(0, |x| x.pr_type as u8)
                    } else {
                        0
                    });
                    out.extend_from_slice(&[0; 4]);
                    out.extend_from_slice(&r.relative_target_port_id.to_be_bytes());
                    let tid = r.initiator.to_bytes();
                    out.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                    out.extend_from_slice(&tid);
                }
                let len = (out.len() - 8) as u32;
                out[4..8].copy_from_slice(&len.to_be_bytes());
            }
        }
        Ok(())
    }
}
