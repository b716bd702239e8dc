//! The reservation state of one logical unit (SPC-4 5.13) and its APTPL text form.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::nexus::Nexus;
use crate::tpg::TargetPortName;
use crate::transport::TransportId;

use super::PrType;

/// Upper bound of registrations (INSUFFICIENT REGISTRATION RESOURCES beyond).
pub(crate) const MAX_REGISTRATIONS: usize = 1024;

/// A registered I_T nexus (or, with ALL_TG_PT, an initiator port on every target port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registration {
    pub(crate) initiator: TransportId,
    /// `None` when registered with ALL_TG_PT = 1.
    pub(crate) target: Option<TargetPortName>,
    pub(crate) relative_target_port_id: u16,
    pub(crate) key: u64,
}

impl Registration {
    /// The registration of `n` with `key` (ALL_TG_PT = 0 unless `all_tg_pt`).
    pub(crate) fn of(n: &Nexus, key: u64, all_tg_pt: bool) -> Registration {
        Registration {
            initiator: n.initiator.clone(),
            target: (!all_tg_pt).then(|| n.target.name.clone()),
            relative_target_port_id: n.target.relative_id,
            key,
        }
    }

    pub(crate) fn matches(&self, n: &Nexus) -> bool {
        self.initiator == n.initiator && self.target.as_ref().is_none_or(|t| *t == n.target.name)
    }
}

/// The persistent reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reservation {
    pub(crate) pr_type: PrType,
    /// Index into the registrations of the holder; unused for all-registrants types.
    pub(crate) holder: usize,
}

/// Reservation state of one logical unit: registrations, the persistent reservation,
/// APTPL, the PRgeneration and the SPC-2 reservation.
///
/// `generation` here is the PRgeneration of SPC-4 6.15.2 (READ KEYS): a 32-bit counter
/// the device server increments, wrapping, on every PERSISTENT RESERVE OUT except
/// RESERVE, RELEASE and failed commands. It is *not* the version a
/// [`super::ReservationStore`] uses for compare-and-set, which increases by one on every
/// committed change of any kind (SPC-2 RESERVE and persistent RESERVE included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReservationState {
    pub(crate) generation: u32,
    pub(crate) registrations: Vec<Registration>,
    pub(crate) reservation: Option<Reservation>,
    pub(crate) aptpl: bool,
    /// SPC-2 RESERVE holder (never persisted: SPC-2 reservations end with the nexus).
    pub(crate) spc2: Option<Nexus>,
}

impl ReservationState {
    /// Whether APTPL (activate persist through power loss) is in effect: the persistent
    /// part must survive a restart (SPC-4 5.13.4).
    pub fn aptpl(&self) -> bool {
        self.aptpl
    }

    /// Whether any SPC-2 or persistent reservation exists (commands must be checked).
    pub fn is_active(&self) -> bool {
        self.reservation.is_some() || self.spc2.is_some()
    }

    /// Whether `other` differs in what APTPL persists (everything but the SPC-2
    /// reservation).
    pub fn same_persistent_part(&self, other: &ReservationState) -> bool {
        self.generation == other.generation
            && self.registrations == other.registrations
            && self.reservation == other.reservation
            && self.aptpl == other.aptpl
    }

    /// The persistent part in the APTPL text format (what [`super::MemoryStore`] writes
    /// to its file; another store may keep the same text elsewhere).
    pub fn encode(&self) -> String {
        format_aptpl(self)
    }

    /// Reads [`Self::encode`]'s text, also the files written before port identities
    /// were typed. `source` names where the text came from, for the error.
    pub fn decode(source: &Path, text: &str) -> Result<ReservationState, Error> {
        parse_aptpl(source, text)
    }

    pub(crate) fn registration(&self, n: &Nexus) -> Option<usize> {
        self.registrations.iter().position(|r| r.matches(n))
    }

    pub(crate) fn registration_index(&self, r: &Registration) -> Option<usize> {
        self.registrations.iter().position(|x| x == r)
    }

    pub(crate) fn is_holder(&self, n: &Nexus) -> bool {
        match &self.reservation {
            None => false,
            Some(res) if res.pr_type.all_registrants() => self.registration(n).is_some(),
            Some(res) => self
                .registrations
                .get(res.holder)
                .is_some_and(|r| r.matches(n)),
        }
    }

    pub(crate) fn is_holder_index(&self, i: usize) -> bool {
        match &self.reservation {
            None => false,
            Some(res) => res.pr_type.all_registrants() || res.holder == i,
        }
    }

    /// Removes registration `i`, keeping the holder index valid.
    pub(crate) fn remove_registration(&mut self, i: usize) -> Registration {
        let r = self.registrations.remove(i);
        if let Some(res) = &mut self.reservation {
            if !res.pr_type.all_registrants() {
                if res.holder == i {
                    self.reservation = None;
                } else if res.holder > i {
                    res.holder -= 1;
                }
            } else if self.registrations.is_empty() {
                self.reservation = None;
            }
        }
        r
    }

    /// Increments the PRgeneration (SPC-4 6.15.2), wrapping.
    pub(crate) fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }
}

/// APTPL file format, one record per line:
/// `rustio-pr 1`, `generation <n>`, `reg <key-hex> <rtpi> <initiator> <target|*>`,
/// `res <type> <holder-index>`. Ports are written in their display form
/// ([`TransportId`], [`TargetPortName`]): for iSCSI exactly the port names of the
/// untyped format (`iqn…,i,0x<isid>`, `iqn…,t,0x<tpgt>`), so old files load. Port
/// names never contain spaces (iSCSI names, RFC 7143 4.2.7.1), which PERSISTENT RESERVE
/// OUT enforces when APTPL is on.
pub(crate) fn format_aptpl(p: &ReservationState) -> String {
    let mut s = String::from("rustio-pr 1\n");
    let _ = writeln!(s, "generation {}", p.generation);
    for r in &p.registrations {
        let _ = writeln!(
            s,
            "reg {:016x} {} {} {}",
            r.key,
            r.relative_target_port_id,
            r.initiator,
            r.target
                .as_ref()
                .map_or_else(|| "*".to_string(), ToString::to_string)
        );
    }
    if let Some(res) = &p.reservation {
        let _ = writeln!(s, "res {} {}", res.pr_type as u8, res.holder);
    }
    s
}

pub(crate) fn parse_aptpl(path: &Path, text: &str) -> Result<ReservationState, Error> {
    let bad = |line: usize, reason: &str| Error::AptplCorrupt {
        path: PathBuf::from(path),
        line,
        reason: reason.to_string(),
    };
    let mut p = ReservationState {
        aptpl: true,
        ..ReservationState::default()
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, "rustio-pr 1")) => {}
        _ => return Err(bad(1, "missing 'rustio-pr 1' header")),
    }
    for (i, line) in lines {
        let n = i + 1;
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            [""] => {}
            ["generation", g] => {
                p.generation = g.parse().map_err(|_| bad(n, "bad generation"))?;
            }
            ["reg", key, rtpi, ini, tgt] => {
                if p.registrations.len() >= MAX_REGISTRATIONS {
                    return Err(bad(n, "too many registrations"));
                }
                let target = if *tgt == "*" {
                    None
                } else {
                    Some(
                        TargetPortName::from_port_name(tgt)
                            .ok_or_else(|| bad(n, "bad target port"))?,
                    )
                };
                p.registrations.push(Registration {
                    key: u64::from_str_radix(key, 16).map_err(|_| bad(n, "bad key"))?,
                    relative_target_port_id: rtpi.parse().map_err(|_| bad(n, "bad port id"))?,
                    initiator: TransportId::from_port_name(ini)
                        .ok_or_else(|| bad(n, "bad initiator port"))?,
                    target,
                });
            }
            ["res", ty, holder] => {
                let pr_type = ty
                    .parse::<u8>()
                    .ok()
                    .and_then(PrType::from_u8)
                    .ok_or_else(|| bad(n, "bad reservation type"))?;
                let holder: usize = holder.parse().map_err(|_| bad(n, "bad holder"))?;
                if holder >= p.registrations.len() {
                    return Err(bad(n, "holder is not a registration"));
                }
                p.reservation = Some(Reservation { pr_type, holder });
            }
            _ => return Err(bad(n, "unknown record")),
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpg::TargetPort;

    fn iscsi(name: &str, isid: u8) -> TransportId {
        TransportId::iscsi_port(name, [0, 0, 0, 0, 0, isid])
    }

    fn tgt(tpgt: u16) -> TargetPortName {
        TargetPortName::Iscsi {
            name: "iqn.t".into(),
            tpgt,
        }
    }

    #[test]
    fn aptpl_round_trip() {
        let p = ReservationState {
            generation: 7,
            registrations: vec![
                Registration {
                    initiator: iscsi("iqn.a", 1),
                    target: Some(tgt(1)),
                    relative_target_port_id: 1,
                    key: 0xabc,
                },
                Registration {
                    initiator: iscsi("iqn.b", 2),
                    target: None,
                    relative_target_port_id: 2,
                    key: 0xdef,
                },
                Registration {
                    initiator: TransportId::Sas(0x5001_4050_0000_0001),
                    target: Some(TargetPortName::Local("tcmu.d".into())),
                    relative_target_port_id: 1,
                    key: 1,
                },
            ],
            reservation: Some(Reservation {
                pr_type: PrType::ExclusiveAccessRegistrantsOnly,
                holder: 1,
            }),
            aptpl: true,
            spc2: None,
        };
        let text = format_aptpl(&p);
        assert_eq!(parse_aptpl(Path::new("x"), &text).unwrap(), p);
        assert_eq!(
            ReservationState::decode(Path::new("x"), &p.encode()).unwrap(),
            p
        );
    }

    #[test]
    fn aptpl_rejects_garbage() {
        assert!(parse_aptpl(Path::new("x"), "nope").is_err());
        assert!(parse_aptpl(Path::new("x"), "rustio-pr 1\nres 3 0\n").is_err());
        assert!(parse_aptpl(Path::new("x"), "rustio-pr 1\nreg zz 1 a b\n").is_err());
        assert!(parse_aptpl(Path::new("x"), "rustio-pr 1\nres 2 0\n").is_err());
        // Ports that are no port names.
        assert!(parse_aptpl(Path::new("x"), "rustio-pr 1\nreg 1 1 iqn.a,i,0xzz *\n").is_err());
        assert!(parse_aptpl(Path::new("x"), "rustio-pr 1\nreg 1 1 iqn.a tgt\n").is_err());
    }

    /// A file written by the untyped engine (port names as strings, 12-digit ISID and
    /// 4-digit TPGT from the iSCSI server) still loads, and its registration matches the
    /// typed nexus of the same initiator port.
    #[test]
    fn aptpl_file_of_the_string_format_loads() {
        let old = "rustio-pr 1\ngeneration 3\n\
                   reg 0000000000000abc 1 iqn.1994-05.com.redhat:a,i,0x23d000000001 iqn.2024-01.io.rustio:tgt,t,0x0001\n\
                   reg 0000000000000def 1 iqn.1994-05.com.redhat:b,i,0x23d000000002 *\n\
                   res 5 0\n";
        let p = parse_aptpl(Path::new("old"), old).unwrap();
        assert_eq!(p.generation, 3);
        assert_eq!(
            p.reservation.as_ref().map(|r| r.pr_type),
            Some(PrType::WriteExclusiveRegistrantsOnly)
        );
        let n = Nexus::new(
            TransportId::iscsi_port("iqn.1994-05.com.redhat:a", [0x23, 0xd0, 0, 0, 0, 1]),
            TargetPort::new(
                1,
                1,
                TargetPortName::Iscsi {
                    name: "iqn.2024-01.io.rustio:tgt".into(),
                    tpgt: 1,
                },
            ),
        );
        assert_eq!(p.registration(&n), Some(0));
        assert!(p.is_holder(&n));
        // Written back, the text is the same.
        assert_eq!(format_aptpl(&p), old);
    }
}
