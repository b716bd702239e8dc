//! Target ports and target port groups (SPC-4 5.16 asymmetric logical unit access).
//!
//! Every I_T nexus names the [`TargetPort`] a command came through; a logical unit
//! reports its ports grouped in [`TargetPortGroup`]s through REPORT TARGET PORT GROUPS
//! (SPC-4 6.37) and the Device Identification VPD page (SPC-4 7.8.6). Today a transport
//! has one group with one port per iSCSI target portal group; several groups (one per
//! gateway) are described with [`crate::LuConfig::target_port_groups`].

use std::fmt;

use crate::transport::ProtocolId;

/// The name of a target port, as the transport knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetPortName {
    /// iSCSI target port: target name and target portal group tag; its SCSI name is
    /// `"<name>,t,0x<tpgt>"` (RFC 7143 4.2.7.1, SPC-4 7.8.6.11).
    Iscsi {
        /// iSCSI target name.
        name: String,
        /// Target portal group tag.
        tpgt: u16,
    },
    /// SAS target port address.
    Sas(u64),
    /// Fibre Channel target N_Port name.
    Fc(u64),
    /// A port with no protocol name: TCMU devices (the kernel fabric in front of them
    /// is not visible to us) and iSCSI discovery sessions.
    Local(String),
}

impl TargetPortName {
    /// PROTOCOL IDENTIFIER for the target port designators of VPD 0x83; `None` leaves
    /// PROTOCOL IDENTIFIER VALID (PIV) clear (SPC-4 7.8.6.1).
    pub fn protocol(&self) -> Option<ProtocolId> {
        match self {
            TargetPortName::Iscsi { .. } => Some(ProtocolId::Iscsi),
            TargetPortName::Sas(_) => Some(ProtocolId::Sas),
            TargetPortName::Fc(_) => Some(ProtocolId::Fc),
            TargetPortName::Local(_) => None,
        }
    }

    /// The SCSI name string of the port (SPC-4 7.8.6.11), when it has one: iSCSI only
    /// (SAS and FC ports are named by NAA designators, local ports not at all).
    pub fn scsi_name(&self) -> Option<String> {
        matches!(self, TargetPortName::Iscsi { .. }).then(|| self.to_string())
    }

    /// Reads the [`Display`](fmt::Display) form back (APTPL files).
    pub fn from_port_name(s: &str) -> Option<TargetPortName> {
        if let Some(l) = s.strip_prefix("local:") {
            return (!l.is_empty()).then(|| TargetPortName::Local(l.to_string()));
        }
        let hex64 = |h: &str| {
            (!h.is_empty() && h.len() <= 16)
                .then(|| u64::from_str_radix(h, 16).ok())
                .flatten()
        };
        if let Some(h) = s.strip_prefix("sas:0x") {
            return hex64(h).map(TargetPortName::Sas);
        }
        if let Some(h) = s.strip_prefix("fc:0x") {
            return hex64(h).map(TargetPortName::Fc);
        }
        let at = s.to_ascii_lowercase().find(",t,0x")?;
        let name = s.get(..at).filter(|n| !n.is_empty())?;
        let tag = s.get(at + 5..)?;
        if tag.is_empty() || tag.len() > 4 {
            return None;
        }
        Some(TargetPortName::Iscsi {
            name: name.to_string(),
            tpgt: u16::from_str_radix(tag, 16).ok()?,
        })
    }
}

impl fmt::Display for TargetPortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetPortName::Iscsi { name, tpgt } => write!(f, "{name},t,0x{tpgt:04x}"),
            TargetPortName::Sas(a) => write!(f, "sas:0x{a:016x}"),
            TargetPortName::Fc(a) => write!(f, "fc:0x{a:016x}"),
            TargetPortName::Local(l) => write!(f, "local:{l}"),
        }
    }
}

/// TARGET PORT GROUP identifier (SPC-4 6.37).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetPortGroupId(pub u16);

/// One target port of the SCSI target device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetPort {
    /// RELATIVE TARGET PORT IDENTIFIER (SPC-4 7.8.6.5); 1..=FFFFh, 0 is reserved.
    /// iSCSI uses the target portal group tag.
    pub relative_id: u16,
    /// The target port group this port belongs to.
    pub group: TargetPortGroupId,
    /// The port's name on its transport.
    pub name: TargetPortName,
}

impl TargetPort {
    /// A port with relative identifier `relative_id` in group `group`.
    pub fn new(relative_id: u16, group: u16, name: TargetPortName) -> TargetPort {
        TargetPort {
            relative_id,
            group: TargetPortGroupId(group),
            name,
        }
    }
}

/// ASYMMETRIC ACCESS STATE of a target port group (SPC-4 6.37 table 244, 5.16.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AluaState {
    /// Active/optimized, 0h.
    #[default]
    ActiveOptimized,
    /// Active/non-optimized, 1h.
    ActiveNonOptimized,
    /// Standby, 2h.
    Standby,
    /// Unavailable, 3h.
    Unavailable,
    /// Transitioning between states, Fh.
    Transitioning,
}

impl AluaState {
    /// The 4-bit ASYMMETRIC ACCESS STATE code.
    pub fn code(self) -> u8 {
        match self {
            AluaState::ActiveOptimized => 0x0,
            AluaState::ActiveNonOptimized => 0x1,
            AluaState::Standby => 0x2,
            AluaState::Unavailable => 0x3,
            AluaState::Transitioning => 0xf,
        }
    }
}

/// How the logical unit supports asymmetric access: the TPGS field of standard INQUIRY
/// data (SPC-4 6.6.2 table 146).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AluaMode {
    /// TPGS = 00b: asymmetric access not reported.
    None,
    /// TPGS = 01b: implicit ALUA only (the target changes states; no SET TARGET PORT
    /// GROUPS).
    #[default]
    Implicit,
}

impl AluaMode {
    /// The TPGS field value (bits 5..4 of byte 5).
    pub fn tpgs(self) -> u8 {
        match self {
            AluaMode::None => 0b00,
            AluaMode::Implicit => 0b01,
        }
    }
}

/// TPGS = 11b (SPC-4 6.6.2 table 146): implicit and explicit asymmetric access, what a
/// unit of a gateway group reports ([`crate::alua`]).
pub const TPGS_IMPLICIT_AND_EXPLICIT: u8 = 0b11;

/// A target port group: ports that share one asymmetric access state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetPortGroup {
    /// TARGET PORT GROUP.
    pub id: TargetPortGroupId,
    /// ASYMMETRIC ACCESS STATE.
    pub state: AluaState,
    /// PREF: the preferred group for this logical unit.
    pub preferred: bool,
    /// RELATIVE TARGET PORT IDENTIFIERs of the ports in the group.
    pub ports: Vec<u16>,
}

impl TargetPortGroup {
    /// The group a lone port forms when no groups are configured: preferred and
    /// active/optimized (what every rustio target reported so far).
    pub fn of_port(port: &TargetPort) -> TargetPortGroup {
        TargetPortGroup {
            id: port.group,
            state: AluaState::ActiveOptimized,
            preferred: true,
            ports: vec![port.relative_id],
        }
    }

    /// Appends the target port group descriptor (SPC-4 6.37 table 243). Port lists
    /// beyond 255 entries are cut (TARGET PORT COUNT is one byte).
    pub(crate) fn descriptor(&self, out: &mut Vec<u8>) {
        out.push((u8::from(self.preferred) << 7) | self.state.code());
        // Supported states we can report: T_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP.
        out.push(0x80 | 0x08 | 0x04 | 0x02 | 0x01);
        out.extend_from_slice(&self.id.0.to_be_bytes());
        out.push(0);
        out.push(0); // STATUS CODE: no status available
        out.push(0); // vendor specific
        let ports = &self.ports[..self.ports.len().min(255)];
        out.push(ports.len() as u8); // TARGET PORT COUNT, at most 255 above
        for p in ports {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPC-4 6.37 table 243 for one active/optimized preferred group 1 with port 1.
    #[test]
    fn lone_port_descriptor() {
        let port = TargetPort::new(1, 1, TargetPortName::Local("x".into()));
        let mut d = Vec::new();
        TargetPortGroup::of_port(&port).descriptor(&mut d);
        assert_eq!(d, [0x80, 0x8f, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
    }

    /// Two ports, standby, not preferred.
    #[test]
    fn group_with_two_ports() {
        let g = TargetPortGroup {
            id: TargetPortGroupId(0x102),
            state: AluaState::Standby,
            preferred: false,
            ports: vec![3, 0x1234],
        };
        let mut d = Vec::new();
        g.descriptor(&mut d);
        assert_eq!(
            d,
            [0x02, 0x8f, 1, 2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0x12, 0x34]
        );
    }

    #[test]
    fn state_codes() {
        assert_eq!(AluaState::ActiveNonOptimized.code(), 1);
        assert_eq!(AluaState::Unavailable.code(), 3);
        assert_eq!(AluaState::Transitioning.code(), 0xf);
        assert_eq!(AluaMode::Implicit.tpgs(), 1);
        assert_eq!(AluaMode::None.tpgs(), 0);
    }

    #[test]
    fn port_names() {
        let p = TargetPortName::Iscsi {
            name: "iqn.2024-01.io.rustio:tgt".into(),
            tpgt: 1,
        };
        assert_eq!(p.to_string(), "iqn.2024-01.io.rustio:tgt,t,0x0001");
        assert_eq!(
            p.scsi_name().as_deref(),
            Some("iqn.2024-01.io.rustio:tgt,t,0x0001")
        );
        assert_eq!(p.protocol(), Some(ProtocolId::Iscsi));
        for n in [
            p,
            TargetPortName::Sas(5),
            TargetPortName::Fc(6),
            TargetPortName::Local("tcmu.x".into()),
        ] {
            assert_eq!(TargetPortName::from_port_name(&n.to_string()), Some(n));
        }
        // Old short tags read back.
        assert_eq!(
            TargetPortName::from_port_name("iqn.t,t,0x1"),
            Some(TargetPortName::Iscsi {
                name: "iqn.t".into(),
                tpgt: 1
            })
        );
        assert_eq!(TargetPortName::from_port_name("nothing"), None);
        assert_eq!(TargetPortName::Local("d".into()).scsi_name(), None);
    }
}
