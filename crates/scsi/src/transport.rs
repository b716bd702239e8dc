//! Initiator port identities: the TransportID of SPC-4 7.6.4 as a typed value.
//!
//! A transport (iSCSI, TCMU, later SAS or FC fabrics) names the initiator port of each
//! I_T nexus with a [`TransportId`]; the engine compares them to match registrations
//! (SPC-4 5.13.7), encodes them in PERSISTENT RESERVE IN READ FULL STATUS (SPC-4
//! 6.15.5) and decodes them from REGISTER AND MOVE parameter lists (SPC-4 6.16.4).
//!
//! The [`std::fmt::Display`] form is the conventional port name (for iSCSI the initiator
//! port name `"<name>,i,0x<isid>"` of RFC 7143 4.2.7.1 / SPC-4 7.6.4.6); [`TransportId::
//! from_port_name`] reads it back, which keeps logs and APTPL files readable.

use std::fmt;

/// PROTOCOL IDENTIFIER values (SPC-4 7.6.1 table 362).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolId {
    /// Fibre Channel (FCP-4), 0h.
    Fc = 0x0,
    /// SCSI RDMA Protocol (SRP), 4h.
    Srp = 0x4,
    /// Internet SCSI (iSCSI), 5h.
    Iscsi = 0x5,
    /// Serial Attached SCSI (SPL), 6h.
    Sas = 0x6,
    /// No specific protocol, Fh.
    None = 0xf,
}

impl ProtocolId {
    /// The 4-bit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// iSCSI initiator session identifier (RFC 7143 11.12.5): 6 bytes, written as 12
/// lowercase hex digits after `",i,0x"` in initiator port names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Isid(pub [u8; 6]);

impl Isid {
    /// Parses 1 to 12 hex digits (either case). Shorter strings are right aligned, so
    /// `"1"` is `000000000001` (older APTPL files and some initiators omit the zeros).
    pub fn parse_hex(s: &str) -> Option<Isid> {
        if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let v = u64::from_str_radix(s, 16).ok()?;
        let mut b = [0u8; 6];
        b.copy_from_slice(&v.to_be_bytes()[2..]);
        Some(Isid(b))
    }
}

impl fmt::Display for Isid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why bytes are not a TransportID we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransportIdError {
    /// Fewer bytes than the header or the length field says.
    #[error("TransportID truncated")]
    Truncated,
    /// A PROTOCOL IDENTIFIER we do not support.
    #[error("unsupported protocol identifier {0:#x}")]
    Protocol(u8),
    /// A FORMAT CODE the protocol does not define.
    #[error("unsupported TransportID format code {0}")]
    Format(u8),
    /// The name is empty, not UTF-8, or (format 01b) lacks a valid `,i,0x<isid>`.
    #[error("malformed name in TransportID")]
    Name,
}

/// Length of the fixed-size TransportIDs (FC, SRP, SAS: SPC-4 7.6.4.2, 7.6.4.5, 7.6.4.7).
const FIXED_LEN: usize = 24;
/// Longest port name we encode (bytes), as the engine always did.
const MAX_NAME: usize = 220;
/// Minimum ADDITIONAL LENGTH of an iSCSI TransportID (SPC-4 7.6.4.6).
const MIN_ISCSI_ADDITIONAL: usize = 20;

/// The identity of an initiator port (SPC-4 7.6.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportId {
    /// iSCSI (SPC-4 7.6.4.6): the initiator name with the ISID of the session (format
    /// 01b, initiator port) or without (format 00b, initiator device).
    Iscsi {
        /// iSCSI initiator name (RFC 7143 4.2.7).
        name: String,
        /// The session's ISID; `None` names the initiator device, every port of it.
        isid: Option<Isid>,
    },
    /// SAS (SPC-4 7.6.4.7): the 64-bit SAS address (what tcm_loop's `naa.` ports use).
    Sas(u64),
    /// Fibre Channel (SPC-4 7.6.4.2): the 64-bit N_Port name.
    Fc(u64),
    /// SRP (SPC-4 7.6.4.5): the 128-bit initiator port identifier.
    Srp([u8; 16]),
    /// An initiator port the transport cannot name. TCMU is the case: the kernel passes
    /// commands through the ring without saying which initiator (or fabric) sent them,
    /// so every command of a TCMU device arrives through one nexus labelled here. SPC-4
    /// defines no TransportID for protocol Fh ("no specific protocol"); the encoding is
    /// rustio's own: protocol Fh, format 00b and the label laid out like an iSCSI name.
    Local(String),
}

impl TransportId {
    /// An iSCSI initiator port (format 01b).
    pub fn iscsi_port(name: impl Into<String>, isid: [u8; 6]) -> TransportId {
        TransportId::Iscsi {
            name: name.into(),
            isid: Some(Isid(isid)),
        }
    }

    /// The protocol this identity belongs to.
    pub fn protocol(&self) -> ProtocolId {
        match self {
            TransportId::Iscsi { .. } => ProtocolId::Iscsi,
            TransportId::Sas(_) => ProtocolId::Sas,
            TransportId::Fc(_) => ProtocolId::Fc,
            TransportId::Srp(_) => ProtocolId::Srp,
            TransportId::Local(_) => ProtocolId::None,
        }
    }

    /// The initiator device name: for iSCSI the initiator name without the ISID,
    /// otherwise the whole identity (SAS, FC and SRP ports are their own device name).
    pub fn device_name(&self) -> String {
        match self {
            TransportId::Iscsi { name, .. } | TransportId::Local(name) => name.clone(),
            other => other.to_string(),
        }
    }

    /// Whether this TransportID, received from an initiator (REGISTER AND MOVE), names
    /// `port`: equal identities, or an iSCSI device name (format 00b) naming every
    /// port of that initiator.
    pub fn designates(&self, port: &TransportId) -> bool {
        match (self, port) {
            (TransportId::Iscsi { name, isid: None }, TransportId::Iscsi { name: n, .. }) => {
                name == n
            }
            _ => self == port,
        }
    }

    /// Encodes the TransportID (SPC-4 7.6.4). iSCSI: ADDITIONAL LENGTH at least 20 and
    /// a multiple of 4, the name null terminated and zero padded (SPC-4 7.6.4.6); names
    /// beyond 220 bytes are cut.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            TransportId::Iscsi { isid, .. } => {
                let format = if isid.is_some() { 0x40 } else { 0 };
                named(format | ProtocolId::Iscsi.code(), &self.to_string())
            }
            TransportId::Local(name) => named(ProtocolId::None.code(), name),
            TransportId::Sas(addr) => {
                let mut t = vec![0u8; FIXED_LEN];
                t[0] = ProtocolId::Sas.code();
                t[4..12].copy_from_slice(&addr.to_be_bytes());
                t
            }
            TransportId::Fc(wwpn) => {
                let mut t = vec![0u8; FIXED_LEN];
                t[0] = ProtocolId::Fc.code();
                t[8..16].copy_from_slice(&wwpn.to_be_bytes());
                t
            }
            TransportId::Srp(id) => {
                let mut t = vec![0u8; FIXED_LEN];
                t[0] = ProtocolId::Srp.code();
                t[8..24].copy_from_slice(id);
                t
            }
        }
    }

    /// Decodes a TransportID at the start of `b`; returns it and the bytes it used.
    /// Reserved bits are ignored; an iSCSI separator is accepted in either case.
    pub fn parse(b: &[u8]) -> Result<(TransportId, usize), TransportIdError> {
        let first = *b.first().ok_or(TransportIdError::Truncated)?;
        let format = first >> 6;
        let proto = first & 0x0f;
        let fixed = |b: &[u8]| -> Result<[u8; FIXED_LEN], TransportIdError> {
            if format != 0 {
                return Err(TransportIdError::Format(format));
            }
            let mut a = [0u8; FIXED_LEN];
            a.copy_from_slice(b.get(..FIXED_LEN).ok_or(TransportIdError::Truncated)?);
            Ok(a)
        };
        let be64 = |s: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_be_bytes(a)
        };
        match proto {
            0x0 => {
                let t = fixed(b)?;
                Ok((TransportId::Fc(be64(&t[8..16])), FIXED_LEN))
            }
            0x4 => {
                let t = fixed(b)?;
                let mut id = [0u8; 16];
                id.copy_from_slice(&t[8..24]);
                Ok((TransportId::Srp(id), FIXED_LEN))
            }
            0x6 => {
                let t = fixed(b)?;
                Ok((TransportId::Sas(be64(&t[4..12])), FIXED_LEN))
            }
            0x5 | 0xf => {
                if format > u8::from(proto == 0x5) {
                    return Err(TransportIdError::Format(format));
                }
                let hdr = b.get(..4).ok_or(TransportIdError::Truncated)?;
                let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
                let end = len.checked_add(4).ok_or(TransportIdError::Truncated)?;
                let body = b.get(4..end).ok_or(TransportIdError::Truncated)?;
                let stop = body.iter().position(|&c| c == 0).unwrap_or(body.len());
                let name =
                    std::str::from_utf8(&body[..stop]).map_err(|_| TransportIdError::Name)?;
                if name.is_empty() {
                    return Err(TransportIdError::Name);
                }
                let id = match (proto, format) {
                    (0xf, 0) => TransportId::Local(name.to_string()),
                    (0x5, 0) => TransportId::Iscsi {
                        name: name.to_string(),
                        isid: None,
                    },
                    (0x5, 1) => parse_iscsi_port(name).ok_or(TransportIdError::Name)?,
                    _ => return Err(TransportIdError::Format(format)),
                };
                Ok((id, end))
            }
            p => Err(TransportIdError::Protocol(p)),
        }
    }

    /// Reads the [`Display`](fmt::Display) form back: `"<name>,i,0x<isid>"` and bare
    /// names are iSCSI (what APTPL files written before typed identities hold), `sas:`,
    /// `fc:`, `srp:` and `local:` prefixes the other kinds. iSCSI names start with
    /// `iqn.`, `eui.` or `naa.` (RFC 7143 4.2.7.1), so the prefixes cannot collide.
    pub fn from_port_name(s: &str) -> Option<TransportId> {
        if s.is_empty() {
            return None;
        }
        let hex64 = |h: &str| {
            (!h.is_empty() && h.len() <= 16)
                .then(|| u64::from_str_radix(h, 16).ok())
                .flatten()
        };
        if let Some(h) = s.strip_prefix("sas:0x") {
            return hex64(h).map(TransportId::Sas);
        }
        if let Some(h) = s.strip_prefix("fc:0x") {
            return hex64(h).map(TransportId::Fc);
        }
        if let Some(h) = s.strip_prefix("srp:0x") {
            if h.len() != 32 {
                return None;
            }
            let v = u128::from_str_radix(h, 16).ok()?;
            return Some(TransportId::Srp(v.to_be_bytes()));
        }
        if let Some(l) = s.strip_prefix("local:") {
            return (!l.is_empty()).then(|| TransportId::Local(l.to_string()));
        }
        if s.to_ascii_lowercase().contains(",i,0x") {
            return parse_iscsi_port(s);
        }
        Some(TransportId::Iscsi {
            name: s.to_string(),
            isid: None,
        })
    }
}

/// `"<name>,i,0x<isid>"` (separator in either case) into an iSCSI initiator port.
fn parse_iscsi_port(s: &str) -> Option<TransportId> {
    let at = s.to_ascii_lowercase().find(",i,0x")?;
    let name = s.get(..at).filter(|n| !n.is_empty())?;
    let isid = Isid::parse_hex(s.get(at + 5..)?)?;
    Some(TransportId::Iscsi {
        name: name.to_string(),
        isid: Some(isid),
    })
}

/// A name-based TransportID: header, name, NUL, zero padding to a multiple of 4 and at
/// least 20 bytes of additional length (SPC-4 7.6.4.6).
fn named(byte0: u8, name: &str) -> Vec<u8> {
    let mut body = name.as_bytes().to_vec();
    body.truncate(MAX_NAME);
    body.push(0);
    while body.len() % 4 != 0 || body.len() < MIN_ISCSI_ADDITIONAL {
        body.push(0);
    }
    let mut t = Vec::with_capacity(4 + body.len());
    t.push(byte0);
    t.push(0);
    // At most MAX_NAME + 4 bytes: fits the 16-bit field.
    t.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
    t.extend_from_slice(&body);
    t
}

impl fmt::Display for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportId::Iscsi {
                name,
                isid: Some(isid),
            } => write!(f, "{name},i,0x{isid}"),
            TransportId::Iscsi { name, isid: None } => f.write_str(name),
            TransportId::Sas(a) => write!(f, "sas:0x{a:016x}"),
            TransportId::Fc(a) => write!(f, "fc:0x{a:016x}"),
            TransportId::Srp(id) => write!(f, "srp:0x{:032x}", u128::from_be_bytes(*id)),
            TransportId::Local(l) => write!(f, "local:{l}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn port(name: &str, isid: u64) -> TransportId {
        let mut b = [0u8; 6];
        b.copy_from_slice(&isid.to_be_bytes()[2..]);
        TransportId::iscsi_port(name, b)
    }

    /// SPC-4 7.6.4.6 table 376/377: format 01b, protocol 5h, "name,i,0x<isid>", NUL,
    /// padded to a multiple of 4, ADDITIONAL LENGTH >= 20.
    #[test]
    fn iscsi_initiator_port_format_01() {
        let t = port("iqn.x", 0x1234).to_bytes();
        assert_eq!(t[0], 0x45);
        assert_eq!(t[1], 0);
        assert_eq!(usize::from(u16::from_be_bytes([t[2], t[3]])), t.len() - 4);
        assert_eq!((t.len() - 4) % 4, 0);
        assert_eq!(&t[4..26], b"iqn.x,i,0x000000001234");
        assert_eq!(t[26], 0);
        assert_eq!(TransportId::parse(&t), Ok((port("iqn.x", 0x1234), t.len())));
    }

    /// Format 00b: the initiator device name alone; short names still get 20 bytes.
    #[test]
    fn iscsi_device_name_format_00() {
        let id = TransportId::Iscsi {
            name: "iqn.y".into(),
            isid: None,
        };
        let t = id.to_bytes();
        assert_eq!(t, {
            let mut v = vec![0x05, 0, 0, 20];
            v.extend_from_slice(b"iqn.y");
            v.resize(24, 0);
            v
        });
        assert_eq!(TransportId::parse(&t), Ok((id, 24)));
    }

    /// The separator is accepted in upper case; the ISID is normalised.
    #[test]
    fn iscsi_separator_case_and_trailing_data() {
        let mut t = vec![0x45, 0, 0, 24];
        t.extend_from_slice(b"iqn.z,I,0X23D000000001");
        t.resize(28, 0);
        t.extend_from_slice(&[0xff; 8]); // whatever follows is not ours
        assert_eq!(
            TransportId::parse(&t),
            Ok((port("iqn.z", 0x23d0_0000_0001), 28))
        );
    }

    /// SPC-4 7.6.4.7 (SAS) and 7.6.4.2 (FC): 24 bytes, address at 4..12 / 8..16.
    #[test]
    fn sas_and_fc() {
        let sas = TransportId::Sas(0x5001_4050_0000_0001);
        let t = sas.to_bytes();
        assert_eq!(t.len(), 24);
        assert_eq!(t[0], 0x06);
        assert_eq!(&t[4..12], &[0x50, 0x01, 0x40, 0x50, 0, 0, 0, 1]);
        assert_eq!(TransportId::parse(&t), Ok((sas, 24)));
        let fc = TransportId::Fc(0x2100_0024_ff00_0001);
        let t = fc.to_bytes();
        assert_eq!(t[0], 0x00);
        assert_eq!(&t[8..16], &0x2100_0024_ff00_0001u64.to_be_bytes());
        assert_eq!(TransportId::parse(&t), Ok((fc, 24)));
        assert_eq!(
            TransportId::parse(&t[..23]),
            Err(TransportIdError::Truncated)
        );
        let srp = TransportId::Srp([7; 16]);
        assert_eq!(TransportId::parse(&srp.to_bytes()), Ok((srp, 24)));
    }

    #[test]
    fn rejects() {
        assert_eq!(TransportId::parse(&[]), Err(TransportIdError::Truncated));
        assert_eq!(
            TransportId::parse(&[0x01, 0, 0, 0]),
            Err(TransportIdError::Protocol(1))
        );
        assert_eq!(
            TransportId::parse(&[0x85, 0, 0, 0]),
            Err(TransportIdError::Format(2))
        );
        // Empty name, ISID missing, bad hex, length beyond the buffer.
        assert_eq!(
            TransportId::parse(&[0x05, 0, 0, 4, 0, 0, 0, 0]),
            Err(TransportIdError::Name)
        );
        let mut t = vec![0x45, 0, 0, 8];
        t.extend_from_slice(b"iqn.a\0\0\0");
        assert_eq!(TransportId::parse(&t), Err(TransportIdError::Name));
        let mut t = vec![0x45, 0, 0, 12];
        t.extend_from_slice(b"a,i,0xzz\0\0\0\0");
        assert_eq!(TransportId::parse(&t), Err(TransportIdError::Name));
        assert_eq!(
            TransportId::parse(&[0x05, 0, 0, 8, b'a']),
            Err(TransportIdError::Truncated)
        );
    }

    /// The Display form is today's port name and reads back.
    #[test]
    fn port_names() {
        let p = port("iqn.1994-05.com.redhat:i", 0x23d0_0000_0001);
        assert_eq!(p.to_string(), "iqn.1994-05.com.redhat:i,i,0x23d000000001");
        assert_eq!(p.device_name(), "iqn.1994-05.com.redhat:i");
        assert_eq!(TransportId::from_port_name(&p.to_string()), Some(p.clone()));
        // Short ISIDs (older files) are right aligned.
        assert_eq!(
            TransportId::from_port_name("iqn.a,i,0x1"),
            Some(port("iqn.a", 1))
        );
        for id in [
            TransportId::Sas(0x5001_4050_0000_0001),
            TransportId::Fc(1),
            TransportId::Srp([0xab; 16]),
            TransportId::Local("tcmu".into()),
            TransportId::Iscsi {
                name: "iqn.x".into(),
                isid: None,
            },
        ] {
            assert_eq!(TransportId::from_port_name(&id.to_string()), Some(id));
        }
        assert_eq!(TransportId::from_port_name(""), None);
        assert_eq!(TransportId::from_port_name("iqn.a,i,0x"), None);
    }

    #[test]
    fn device_name_designates_every_port() {
        let dev = TransportId::Iscsi {
            name: "iqn.a".into(),
            isid: None,
        };
        assert!(dev.designates(&port("iqn.a", 1)));
        assert!(!dev.designates(&port("iqn.b", 1)));
        assert!(port("iqn.a", 1).designates(&port("iqn.a", 1)));
        assert!(!port("iqn.a", 2).designates(&port("iqn.a", 1)));
    }

    fn any_id() -> impl Strategy<Value = TransportId> {
        // iSCSI names start with iqn./eui./naa. (RFC 7143 4.2.7.1).
        let name = "iqn\\.[a-z0-9.:-]{0,60}";
        prop_oneof![
            (name, proptest::option::of(any::<[u8; 6]>())).prop_map(|(n, i)| {
                TransportId::Iscsi {
                    name: n,
                    isid: i.map(Isid),
                }
            }),
            any::<u64>().prop_map(TransportId::Sas),
            any::<u64>().prop_map(TransportId::Fc),
            any::<[u8; 16]>().prop_map(TransportId::Srp),
            "[a-z][a-z0-9.:-]{0,60}".prop_map(TransportId::Local),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok((_, used)) = TransportId::parse(&b) {
                prop_assert!(used <= b.len());
            }
        }

        #[test]
        fn encode_parse_round_trip(id in any_id(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut t = id.to_bytes();
            let len = t.len();
            prop_assert_eq!(len % 4, 0);
            t.extend_from_slice(&tail);
            prop_assert_eq!(TransportId::parse(&t), Ok((id.clone(), len)));
            prop_assert_eq!(TransportId::from_port_name(&id.to_string()), Some(id));
        }
    }
}
