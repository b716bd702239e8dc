//! The reservation state of one logical unit (SPC-4 5.13), its APTPL text form and its
//! shared (cluster) text form.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::nexus::Nexus;
use crate::sense::Sense;
use crate::tpg::{TargetPort, TargetPortName};
use crate::transport::TransportId;

use super::store::Versioned;
use super::PrType;

/// Upper bound of registrations (INSUFFICIENT REGISTRATION RESOURCES beyond).
pub(crate) const MAX_REGISTRATIONS: usize = 1024;

/// How many store versions the unit-attention event log of a [`ReservationState`]
/// covers: a unit that re-reads the shared state at most this many commits after its
/// last look raises every attention meant for its nexuses; one further behind misses the
/// older ones (it still sees the current registrations and reservation).
pub const EVENT_WINDOW: u64 = 256;

/// Upper bound of logged events (a CLEAR with [`MAX_REGISTRATIONS`] registrations logs
/// one per other registrant); the oldest go first.
pub(crate) const MAX_EVENTS: usize = 4 * MAX_REGISTRATIONS;

/// A unit attention a committed change establishes for the nexuses of a registration
/// (SPC-4 5.13.11: RESERVATIONS PREEMPTED, RESERVATIONS RELEASED, REGISTRATIONS
/// PREEMPTED), kept in the state so units other than the one that made the change
/// raise it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UaEvent {
    /// Store version of the commit that raised it; 0 until [`super::PrState::update`]
    /// stamps it at commit time.
    pub(crate) version: u64,
    /// Whose nexuses get it ([`Registration::matches`]); `None`: every nexus of the
    /// logical unit (a reset made through one unit, SAM-5 6.3.3).
    pub(crate) to: Option<Registration>,
    /// One of the three reservation unit attentions, or a reset's.
    pub(crate) sense: Sense,
}

/// Why a shared-format text ([`ReservationState::decode_shared`]) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reservation state, line {line}: {reason}")]
pub struct DecodeError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

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
            initiator: n.initiator().clone(),
            target: (!all_tg_pt).then(|| n.target().name.clone()),
            relative_target_port_id: n.target().relative_id,
            key,
        }
    }

    pub(crate) fn matches(&self, n: &Nexus) -> bool {
        &self.initiator == n.initiator()
            && self.target.as_ref().is_none_or(|t| *t == n.target().name)
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
    /// SPC-2 RESERVE holder (never persisted through APTPL: SPC-2 reservations end
    /// with the nexus; a shared store carries it so every gateway enforces it).
    pub(crate) spc2: Option<Nexus>,
    /// Unit attentions of the last [`EVENT_WINDOW`] commits, for units that share the
    /// store (not APTPL data).
    pub(crate) events: Vec<UaEvent>,
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

    /// Logs unit attentions of the change being computed (stamped at commit by
    /// [`Self::stamp_events`]).
    pub(crate) fn log_events(&mut self, uas: &[(Registration, Sense)]) {
        self.events.extend(uas.iter().map(|(to, sense)| UaEvent {
            version: 0,
            to: Some(to.clone()),
            sense: *sense,
        }));
    }

    /// Logs a unit attention for every nexus of the logical unit (a reset's).
    pub(crate) fn log_event_for_all(&mut self, sense: Sense) {
        self.events.push(UaEvent {
            version: 0,
            to: None,
            sense,
        });
    }

    /// Stamps the events logged for this commit with its store `version` and forgets
    /// those older than [`EVENT_WINDOW`] versions (and beyond [`MAX_EVENTS`]).
    pub(crate) fn stamp_events(&mut self, version: u64) {
        for e in &mut self.events {
            if e.version == 0 {
                e.version = version;
            }
        }
        let oldest = version.saturating_sub(EVENT_WINDOW);
        self.events.retain(|e| e.version > oldest);
        let excess = self.events.len().saturating_sub(MAX_EVENTS);
        self.events.drain(..excess);
    }

    /// The full state at store `version` in the shared text format, for stores that
    /// several gateways read (e.g. one Ceph object): unlike [`Self::encode`] it carries
    /// everything — APTPL flag, all registrations whatever APTPL says, the persistent
    /// and the SPC-2 reservation, the PRgeneration and the unit-attention event log.
    ///
    /// One record per line, fields separated by one space, port names percent-encoded
    /// (`%XX` for every byte outside `!`..`~` and for `%` and `*`), so any name fits:
    ///
    /// ```text
    /// rustio-pr-shared 1
    /// version <store version>
    /// generation <PRgeneration>
    /// aptpl <0|1>
    /// reg <key hex> <relative target port id> <initiator port> <target port|*>
    /// res <type> <holder: index of a reg line>
    /// spc2 <relative target port id> <target port group> <initiator port> <target port>
    /// ua <version> <reservations-preempted|reservations-released|registrations-preempted> <initiator port> <target port|*>
    /// ```
    pub fn encode_shared(&self, version: u64) -> String {
        let mut s = String::from("rustio-pr-shared 1\n");
        let _ = writeln!(s, "version {version}");
        let _ = writeln!(s, "generation {}", self.generation);
        let _ = writeln!(s, "aptpl {}", u8::from(self.aptpl));
        let target = |t: &Option<TargetPortName>| {
            t.as_ref()
                .map_or_else(|| "*".to_string(), |t| pct(&t.to_string()))
        };
        for r in &self.registrations {
            let _ = writeln!(
                s,
                "reg {:016x} {} {} {}",
                r.key,
                r.relative_target_port_id,
                pct(&r.initiator.to_string()),
                target(&r.target)
            );
        }
        if let Some(res) = &self.reservation {
            let _ = writeln!(s, "res {} {}", res.pr_type as u8, res.holder);
        }
        if let Some(n) = &self.spc2 {
            let _ = writeln!(
                s,
                "spc2 {} {} {} {}",
                n.target().relative_id,
                n.target().group.0,
                pct(&n.initiator().to_string()),
                pct(&n.target().name.to_string())
            );
        }
        for e in &self.events {
            // `* *`: every nexus (`pct` never writes a bare `*`).
            let (ini, tgt) = match &e.to {
                Some(to) => (pct(&to.initiator.to_string()), target(&to.target)),
                None => ("*".to_string(), "*".to_string()),
            };
            let _ = writeln!(s, "ua {} {} {ini} {tgt}", e.version, ua_name(e.sense));
        }
        s
    }

    /// Reads [`Self::encode_shared`]'s text back with its store version. Never panics;
    /// anything malformed or beyond the bounds (registrations, events) is a
    /// [`DecodeError`].
    pub fn decode_shared(text: &str) -> Result<Versioned, DecodeError> {
        let bad = |line: usize, reason: &'static str| DecodeError { line, reason };
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, "rustio-pr-shared 1")) => {}
            _ => return Err(bad(1, "missing 'rustio-pr-shared 1' header")),
        }
        let mut st = ReservationState::default();
        let mut version = None;
        for (i, line) in lines {
            let n = i.saturating_add(1);
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                [""] => {}
                ["version", v] => version = Some(v.parse().map_err(|_| bad(n, "bad version"))?),
                ["generation", g] => {
                    st.generation = g.parse().map_err(|_| bad(n, "bad generation"))?;
                }
                ["aptpl", a] => {
                    st.aptpl = match *a {
                        "0" => false,
                        "1" => true,
                        _ => return Err(bad(n, "bad aptpl")),
                    }
                }
                ["reg", key, rtpi, ini, tgt] => {
                    if st.registrations.len() >= MAX_REGISTRATIONS {
                        return Err(bad(n, "too many registrations"));
                    }
                    st.registrations.push(Registration {
                        key: u64::from_str_radix(key, 16).map_err(|_| bad(n, "bad key"))?,
                        relative_target_port_id: rtpi.parse().map_err(|_| bad(n, "bad port id"))?,
                        initiator: shared_initiator(ini).ok_or_else(|| bad(n, "bad initiator"))?,
                        target: shared_target(tgt).ok_or_else(|| bad(n, "bad target port"))?,
                    });
                }
                ["res", ty, holder] => {
                    if st.reservation.is_some() {
                        return Err(bad(n, "two reservations"));
                    }
                    let pr_type = ty
                        .parse::<u8>()
                        .ok()
                        .and_then(PrType::from_u8)
                        .ok_or_else(|| bad(n, "bad reservation type"))?;
                    let holder: usize = holder.parse().map_err(|_| bad(n, "bad holder"))?;
                    st.reservation = Some(Reservation { pr_type, holder });
                }
                ["spc2", rtpi, group, ini, tgt] => {
                    let name = unpct(tgt)
                        .as_deref()
                        .and_then(TargetPortName::from_port_name)
                        .ok_or_else(|| bad(n, "bad target port"))?;
                    st.spc2 = Some(Nexus::new(
                        shared_initiator(ini).ok_or_else(|| bad(n, "bad initiator"))?,
                        TargetPort::new(
                            rtpi.parse().map_err(|_| bad(n, "bad port id"))?,
                            group.parse().map_err(|_| bad(n, "bad port group"))?,
                            name,
                        ),
                    ));
                }
                ["ua", v, kind, ini, tgt] => {
                    if st.events.len() >= MAX_EVENTS {
                        return Err(bad(n, "too many events"));
                    }
                    let to = match (*ini, *tgt) {
                        ("*", "*") => None,
                        _ => Some(Registration {
                            initiator: shared_initiator(ini)
                                .ok_or_else(|| bad(n, "bad initiator"))?,
                            target: shared_target(tgt).ok_or_else(|| bad(n, "bad target port"))?,
                            relative_target_port_id: 0,
                            key: 0,
                        }),
                    };
                    st.events.push(UaEvent {
                        version: v.parse().map_err(|_| bad(n, "bad event version"))?,
                        sense: ua_from_name(kind).ok_or_else(|| bad(n, "bad event"))?,
                        to,
                    });
                }
                _ => return Err(bad(n, "unknown record")),
            }
        }
        // The holder must be a registration (checked once all are read, whatever the
        // line order).
        if let Some(res) = &st.reservation {
            if (!res.pr_type.all_registrants() && res.holder >= st.registrations.len())
                || st.registrations.is_empty()
            {
                return Err(bad(0, "reservation holder is not a registration"));
            }
        }
        let version = version.ok_or_else(|| bad(0, "missing version"))?;
        Ok(Versioned {
            state: std::sync::Arc::new(st),
            version,
        })
    }
}

/// The name of a reservation unit attention in the shared format.
/// The unit attentions the shared format carries, with their names: the reservation
/// ones (SPC-4 5.13.11) and the resets' (SAM-5 6.3.3).
const UA_NAMES: [(&str, Sense); 6] = [
    ("reservations-preempted", Sense::UA_RESERVATIONS_PREEMPTED),
    ("reservations-released", Sense::UA_RESERVATIONS_RELEASED),
    ("registrations-preempted", Sense::UA_REGISTRATIONS_PREEMPTED),
    ("bus-device-reset", Sense::UA_BUS_DEVICE_RESET),
    ("power-on-reset", Sense::UA_POWER_ON_RESET),
    ("power-on", Sense::UA_POWER_ON),
];

/// The name of a logged unit attention in the shared format.
fn ua_name(s: Sense) -> &'static str {
    UA_NAMES
        .iter()
        .find(|(_, u)| *u == s)
        // Nothing else is ever logged (`log_events` callers).
        .map_or("registrations-preempted", |(n, _)| n)
}

fn ua_from_name(s: &str) -> Option<Sense> {
    UA_NAMES.iter().find(|(n, _)| *n == s).map(|(_, u)| *u)
}

fn shared_initiator(s: &str) -> Option<TransportId> {
    TransportId::from_port_name(&unpct(s)?)
}

fn shared_target(s: &str) -> Option<Option<TargetPortName>> {
    if s == "*" {
        return Some(None);
    }
    TargetPortName::from_port_name(&unpct(s)?).map(Some)
}

/// Percent-encodes every byte outside `!`..=`~`, and `%` and `*` (the "all target
/// ports" marker), so a field never contains a space or a line break.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' && b != b'*' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Reverses [`pct`]; `None` for a bad escape or bytes that are not UTF-8.
fn unpct(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = std::str::from_utf8(b.get(i.checked_add(1)?..i.checked_add(3)?)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i = i.checked_add(3)?;
        } else {
            out.push(c);
            i = i.checked_add(1)?;
        }
    }
    String::from_utf8(out).ok()
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
            events: vec![],
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

    fn full_state() -> ReservationState {
        let a = Registration {
            initiator: iscsi("iqn.a", 1),
            target: Some(tgt(1)),
            relative_target_port_id: 1,
            key: 0xabc,
        };
        ReservationState {
            generation: u32::MAX,
            registrations: vec![
                a.clone(),
                Registration {
                    // A name APTPL could not hold: spaces, '%', '*', non-ASCII.
                    initiator: TransportId::iscsi_port("iqn.b with space%*é", [1, 2, 3, 4, 5, 6]),
                    target: None,
                    relative_target_port_id: 2,
                    key: u64::MAX,
                },
            ],
            reservation: Some(Reservation {
                pr_type: PrType::WriteExclusive,
                holder: 1,
            }),
            aptpl: false,
            spc2: Some(Nexus::new(
                iscsi("iqn.c", 3),
                TargetPort::new(7, 3, TargetPortName::Local("tcmu dev".into())),
            )),
            events: vec![
                UaEvent {
                    version: 41,
                    to: Some(Registration {
                        relative_target_port_id: 0,
                        key: 0,
                        ..a.clone()
                    }),
                    sense: Sense::UA_REGISTRATIONS_PREEMPTED,
                },
                UaEvent {
                    version: 42,
                    to: Some(Registration {
                        initiator: iscsi("iqn.d", 4),
                        target: None,
                        relative_target_port_id: 0,
                        key: 0,
                    }),
                    sense: Sense::UA_RESERVATIONS_RELEASED,
                },
                UaEvent {
                    version: 42,
                    to: Some(Registration {
                        initiator: TransportId::Sas(0x5001_4050_0000_0001),
                        target: None,
                        relative_target_port_id: 0,
                        key: 0,
                    }),
                    sense: Sense::UA_RESERVATIONS_PREEMPTED,
                },
                // A reset made through another unit: every nexus.
                UaEvent {
                    version: 42,
                    to: None,
                    sense: Sense::UA_BUS_DEVICE_RESET,
                },
            ],
        }
    }

    /// The shared format carries everything APTPL leaves out: the APTPL flag itself,
    /// the SPC-2 holder, the event log, and names with spaces.
    #[test]
    fn shared_round_trip_keeps_everything() {
        let p = full_state();
        let text = p.encode_shared(43);
        assert!(
            text.starts_with("rustio-pr-shared 1\nversion 43\ngeneration 4294967295\naptpl 0\n")
        );
        // One record per line whatever the names hold.
        assert_eq!(text.lines().count(), 4 + 2 + 1 + 1 + 4);
        // Every nexus: `* *`, which no percent-encoded name can be.
        assert!(text.ends_with("ua 42 bus-device-reset * *\n"), "{text}");
        assert!(
            text.contains(" iqn.b%20with%20space%25%2A%C3%A9,i,0x010203040506 *\n"),
            "{text}"
        );
        let v = ReservationState::decode_shared(&text).unwrap();
        assert_eq!(v.version, 43);
        assert_eq!(*v.state, p);
        // The default state at version 0 too.
        let d =
            ReservationState::decode_shared(&ReservationState::default().encode_shared(0)).unwrap();
        assert_eq!((d.version, &*d.state), (0, &ReservationState::default()));
    }

    #[test]
    fn shared_rejects_garbage() {
        let ok = full_state().encode_shared(1);
        let cases = [
            "",
            "rustio-pr 1\nversion 1\n",
            "rustio-pr-shared 1\n", // no version
            "rustio-pr-shared 1\nversion x\n",
            "rustio-pr-shared 1\nversion 1\naptpl 2\n",
            "rustio-pr-shared 1\nversion 1\nres 1 0\n", // holder without registrations
            "rustio-pr-shared 1\nversion 1\nua 1 nope iqn.a,i,0x1 *\n",
            "rustio-pr-shared 1\nversion 1\nreg 1 1 iqn.a,i,0x1%2 *\n",
            "rustio-pr-shared 1\nversion 1\nreg 1 1 %FF *\n",
            "rustio-pr-shared 1\nversion 1\nspc2 1 1 iqn.a,i,0x1 *\n",
        ];
        for c in cases {
            assert!(ReservationState::decode_shared(c).is_err(), "{c:?}");
        }
        assert!(ReservationState::decode_shared(&ok.replace("res 1 1", "res 1 9")).is_err());
        assert!(ReservationState::decode_shared(&format!("{ok}res 1 0\n")).is_err());
    }

    /// Events get the version of the commit that logs them; those older than the
    /// window are forgotten.
    #[test]
    fn events_are_stamped_and_windowed() {
        let mut s = full_state();
        let to = s.registrations[0].clone();
        s.log_events(&[(to, Sense::UA_RESERVATIONS_PREEMPTED)]);
        s.stamp_events(42 + EVENT_WINDOW);
        // 41 and both 42s are out of the window (version > 42 + W - W = 42 stays).
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].version, 42 + EVENT_WINDOW);
        assert_eq!(s.events[0].sense, Sense::UA_RESERVATIONS_PREEMPTED);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary text, and the valid text cut or with one byte changed, never
            /// make the decoder panic.
            #[test]
            fn decode_shared_never_panics(text in ".{0,400}") {
                let _ = ReservationState::decode_shared(&text);
                let _ = ReservationState::decode_shared(&format!("rustio-pr-shared 1\n{text}"));
            }

            #[test]
            fn decode_shared_survives_mutation(cut in 0usize..2000, at in 0usize..2000, b in any::<u8>()) {
                let text = full_state().encode_shared(9);
                let mut bytes = text.into_bytes();
                let at = at % bytes.len();
                bytes[at] = b;
                bytes.truncate(cut.min(bytes.len()));
                if let Ok(t) = String::from_utf8(bytes) {
                    let _ = ReservationState::decode_shared(&t);
                }
            }

            /// Round trip over generated registrations, reservation and events.
            #[test]
            fn shared_round_trip(
                regs in proptest::collection::vec(
                    ("[a-z.:]{1,12}", any::<[u8; 6]>(), any::<u64>(), any::<u16>(), proptest::option::of(any::<u16>())),
                    0..8),
                generation in any::<u32>(),
                version in any::<u64>(),
                aptpl in any::<bool>(),
                res in proptest::option::of((0usize..8, prop_oneof![Just(1u8), Just(3), Just(5), Just(6), Just(7), Just(8)])),
            ) {
                let registrations: Vec<Registration> = regs
                    .iter()
                    .map(|(n, isid, key, rtpi, t)| Registration {
                        initiator: TransportId::iscsi_port(format!("iqn.{n}"), *isid),
                        target: t.map(tgt),
                        relative_target_port_id: *rtpi,
                        key: *key,
                    })
                    .collect();
                let reservation = match res {
                    Some((h, ty)) if !registrations.is_empty() => Some(Reservation {
                        pr_type: PrType::from_u8(ty).unwrap(),
                        holder: h % registrations.len(),
                    }),
                    _ => None,
                };
                let events = registrations
                    .iter()
                    .enumerate()
                    .map(|(i, r)| UaEvent {
                        version: i as u64,
                        to: (i % 3 != 2).then(|| Registration { key: 0, relative_target_port_id: 0, ..r.clone() }),
                        sense: Sense::UA_REGISTRATIONS_PREEMPTED,
                    })
                    .collect();
                let st = ReservationState { generation, registrations, reservation, aptpl, spc2: None, events };
                let v = ReservationState::decode_shared(&st.encode_shared(version)).unwrap();
                prop_assert_eq!(v.version, version);
                prop_assert_eq!(&*v.state, &st);
            }
        }
    }
}
