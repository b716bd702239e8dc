//! The `TCM-USER` generic netlink protocol: device add/remove/reconfigure events from the
//! kernel and the `*_DONE` replies it waits for.
//!
//! The kernel multicasts `TCMU_CMD_{ADDED,REMOVED,RECONFIG}_DEVICE` on the `config` group
//! with the UIO name, UIO minor and LIO device index. When the daemon has announced
//! `TCMU_ATTR_SUPP_KERN_CMD_REPLY` with `TCMU_CMD_SET_FEATURES`, the configfs write that
//! triggered the event blocks until the matching `*_DONE` reply carrying the same
//! `TCMU_ATTR_DEVICE_ID` and a `TCMU_ATTR_CMD_STATUS` (0 or a negative errno) arrives.
//!
//! Messages are encoded with `netlink-packet-generic`; sockets come from `netlink-sys`.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    emit_i32, emit_u32, emit_u64, parse_i32, parse_string, parse_u32, parse_u64, parse_u8,
    DecodeError, DefaultNla, Emitable, NetlinkMessage, NetlinkPayload, Nla, NlaBuffer,
    NlasIterator, Parseable, ParseableParametrized, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::{GenlCtrlAttrs, McastGrpAttrs};
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::abi::{self, attr, cmd};
use crate::error::{Error, Result};

/// Longest `dev_config` the kernel keeps: `TCMU_CONFIG_LEN` (256) with its NUL
/// (drivers/target/target_core_user.c). Longer strings never come from a real device.
pub const MAX_DEV_CONFIG: usize = 255;
/// Longest UIO name accepted: `tcm-user/<hba>/<device>/<dev_config>` with a u32 HBA
/// number, a configfs item name (≤ 255 bytes) and a `dev_config`, with room to spare.
pub const MAX_UIO_NAME: usize = 1024;

/// Whether a datagram comes from the kernel (netlink port 0). Other senders (only
/// privileged processes can address us at all) are ignored rather than trusted.
pub fn from_kernel(sender: &SocketAddr) -> bool {
    sender.port_number() == 0
}

/// Checks a string attribute: bounded length, no control characters (they would end up
/// in logs and configfs paths).
fn check_string(what: &str, s: &str, max: usize) -> std::result::Result<(), String> {
    if s.len() > max {
        return Err(format!("{what} is {} bytes (at most {max})", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} contains a control character"));
    }
    Ok(())
}

/// One attribute of a TCM-USER message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcmuAttr {
    /// `TCMU_ATTR_DEVICE`: UIO name.
    Device(String),
    /// `TCMU_ATTR_MINOR`: UIO minor.
    Minor(u32),
    /// `TCMU_ATTR_DEV_CFG`: new `dev_config`.
    DevCfg(String),
    /// `TCMU_ATTR_DEV_SIZE`: new size in bytes.
    DevSize(u64),
    /// `TCMU_ATTR_WRITECACHE`: new write cache setting.
    WriteCache(u8),
    /// `TCMU_ATTR_CMD_STATUS`: reply status.
    CmdStatus(i32),
    /// `TCMU_ATTR_DEVICE_ID`: LIO device index.
    DeviceId(u32),
    /// `TCMU_ATTR_SUPP_KERN_CMD_REPLY`: the daemon replies to kernel commands.
    SuppKernCmdReply(u8),
    /// Anything else (kept, not interpreted).
    Other(DefaultNla),
}

impl Nla for TcmuAttr {
    fn value_len(&self) -> usize {
        match self {
            TcmuAttr::Device(s) | TcmuAttr::DevCfg(s) => s.len() + 1,
            TcmuAttr::Minor(_) | TcmuAttr::CmdStatus(_) | TcmuAttr::DeviceId(_) => 4,
            TcmuAttr::DevSize(_) => 8,
            TcmuAttr::WriteCache(_) | TcmuAttr::SuppKernCmdReply(_) => 1,
            TcmuAttr::Other(n) => n.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            TcmuAttr::Device(_) => attr::DEVICE,
            TcmuAttr::Minor(_) => attr::MINOR,
            TcmuAttr::DevCfg(_) => attr::DEV_CFG,
            TcmuAttr::DevSize(_) => attr::DEV_SIZE,
            TcmuAttr::WriteCache(_) => attr::WRITECACHE,
            TcmuAttr::CmdStatus(_) => attr::CMD_STATUS,
            TcmuAttr::DeviceId(_) => attr::DEVICE_ID,
            TcmuAttr::SuppKernCmdReply(_) => attr::SUPP_KERN_CMD_REPLY,
            TcmuAttr::Other(n) => n.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            TcmuAttr::Device(s) | TcmuAttr::DevCfg(s) => {
                buf[..s.len()].copy_from_slice(s.as_bytes());
                buf[s.len()] = 0;
            }
            TcmuAttr::Minor(v) | TcmuAttr::DeviceId(v) => {
                let _ = emit_u32(buf, *v);
            }
            TcmuAttr::CmdStatus(v) => {
                let _ = emit_i32(buf, *v);
            }
            TcmuAttr::DevSize(v) => {
                let _ = emit_u64(buf, *v);
            }
            TcmuAttr::WriteCache(v) | TcmuAttr::SuppKernCmdReply(v) => buf[0] = *v,
            TcmuAttr::Other(n) => n.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for TcmuAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            attr::DEVICE => TcmuAttr::Device(parse_string(v)?),
            attr::MINOR => TcmuAttr::Minor(parse_u32(v)?),
            attr::DEV_CFG => TcmuAttr::DevCfg(parse_string(v)?),
            attr::DEV_SIZE => TcmuAttr::DevSize(parse_u64(v)?),
            attr::WRITECACHE => TcmuAttr::WriteCache(parse_u8(v)?),
            attr::CMD_STATUS => TcmuAttr::CmdStatus(parse_i32(v)?),
            attr::DEVICE_ID => TcmuAttr::DeviceId(parse_u32(v)?),
            attr::SUPP_KERN_CMD_REPLY => TcmuAttr::SuppKernCmdReply(parse_u8(v)?),
            _ => TcmuAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A TCM-USER generic netlink message (command and attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcmuMessage {
    /// `TCMU_CMD_*`.
    pub cmd: u8,
    /// Protocol version from the generic netlink header.
    pub version: u8,
    /// Attributes.
    pub attrs: Vec<TcmuAttr>,
}

impl GenlFamily for TcmuMessage {
    fn family_name() -> &'static str {
        abi::GENL_FAMILY
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        self.version
    }
}

impl Emitable for TcmuMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for TcmuMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attrs = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| TcmuAttr::parse(&nla)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TcmuMessage {
            cmd: header.cmd,
            version: header.version,
            attrs,
        })
    }
}

/// A reconfiguration carried by `TCMU_CMD_RECONFIG_DEVICE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconfig {
    /// `dev_config` changed.
    DevConfig(String),
    /// `dev_size` changed (bytes).
    DevSize(u64),
    /// `emulate_write_cache` changed.
    WriteCache(bool),
}

/// What the kernel announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A device was enabled.
    Added,
    /// A device is being removed.
    Removed,
    /// A device attribute changed.
    Reconfig,
}

impl EventKind {
    /// The `*_DONE` command that answers this event.
    pub fn done_cmd(self) -> u8 {
        match self {
            EventKind::Added => cmd::ADDED_DEVICE_DONE,
            EventKind::Removed => cmd::REMOVED_DEVICE_DONE,
            EventKind::Reconfig => cmd::RECONFIG_DEVICE_DONE,
        }
    }
}

/// A device event from the kernel, checked for the attributes libtcmu requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    /// What happened.
    pub kind: EventKind,
    /// The UIO name (`tcm-user/...`).
    pub uio_name: String,
    /// The UIO minor.
    pub minor: u32,
    /// LIO device index, to echo in the reply (absent from version 1 messages, which get
    /// no reply).
    pub device_id: Option<u32>,
    /// For [`EventKind::Reconfig`]: what changed (`None` if the attribute is unknown).
    pub reconfig: Option<Reconfig>,
}

impl DeviceEvent {
    /// Interprets a TCM-USER message. Returns `Err` with a reason for messages that
    /// cannot be acted on (missing attributes, unknown command).
    pub fn from_message(msg: &TcmuMessage) -> std::result::Result<DeviceEvent, String> {
        let kind = match msg.cmd {
            cmd::ADDED_DEVICE => EventKind::Added,
            cmd::REMOVED_DEVICE => EventKind::Removed,
            cmd::RECONFIG_DEVICE => EventKind::Reconfig,
            other => return Err(format!("unexpected TCM-USER command {other}")),
        };
        let mut uio_name = None;
        let mut minor = None;
        let mut device_id = None;
        let mut reconfig = None;
        for a in &msg.attrs {
            match a {
                TcmuAttr::Device(s) => uio_name = Some(s.clone()),
                TcmuAttr::Minor(m) => minor = Some(*m),
                TcmuAttr::DeviceId(d) => device_id = Some(*d),
                TcmuAttr::DevCfg(c) => reconfig = Some(Reconfig::DevConfig(c.clone())),
                TcmuAttr::DevSize(s) => reconfig = Some(Reconfig::DevSize(*s)),
                TcmuAttr::WriteCache(w) => reconfig = Some(Reconfig::WriteCache(*w != 0)),
                _ => {}
            }
        }
        let (Some(uio_name), Some(minor)) = (uio_name, minor) else {
            return Err("TCMU_ATTR_DEVICE or TCMU_ATTR_MINOR missing".into());
        };
        check_string("TCMU_ATTR_DEVICE", &uio_name, MAX_UIO_NAME)?;
        if let Some(Reconfig::DevConfig(c)) = &reconfig {
            check_string("TCMU_ATTR_DEV_CFG", c, MAX_DEV_CONFIG)?;
        }
        if msg.version > 1 && device_id.is_none() {
            return Err(format!(
                "TCMU_ATTR_DEVICE_ID missing from a version {} message",
                msg.version
            ));
        }
        Ok(DeviceEvent {
            kind,
            uio_name,
            minor,
            device_id,
            reconfig,
        })
    }
}

/// Serialises `msg` for family `family_id` with netlink `flags` and `seq`.
pub fn encode(msg: TcmuMessage, family_id: u16, flags: u16, seq: u32) -> Vec<u8> {
    let mut g = GenlMessage::from_payload(msg);
    g.set_resolved_family_id(family_id);
    g.finalize();
    let mut nl = NetlinkMessage::from(g);
    nl.header.flags = flags;
    nl.header.sequence_number = seq;
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    buf
}

/// What one received netlink message was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A TCM-USER message.
    Tcmu(TcmuMessage),
    /// An acknowledgement (`code == 0`) or error (negative errno) for request `seq`.
    Ack {
        /// Sequence number of the request.
        seq: u32,
        /// 0 or a negative errno.
        code: i32,
    },
    /// A message of another type, or one that did not decode (with the reason).
    Ignored(String),
}

/// Splits a datagram into netlink messages and decodes each. Never panics on arbitrary
/// input; stops at the first message whose length field is unusable.
pub fn decode_datagram(mut buf: &[u8], family_id: u16) -> Vec<Received> {
    const NLMSG_HDRLEN: usize = 16;
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            out.push(Received::Ignored(format!(
                "netlink message length {len} invalid for {} remaining bytes",
                buf.len()
            )));
            break;
        }
        let msg_type = u16::from_ne_bytes([buf[4], buf[5]]);
        let one = &buf[..len];
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if msg_type == family_id || msg_type == netlink_packet_core::NLMSG_ERROR {
            match NetlinkMessage::<GenlMessage<TcmuMessage>>::deserialize(one) {
                Ok(m) => match m.payload {
                    NetlinkPayload::InnerMessage(g) => out.push(Received::Tcmu(g.payload)),
                    NetlinkPayload::Error(e) => out.push(Received::Ack {
                        seq,
                        code: e.raw_code(),
                    }),
                    other => out.push(Received::Ignored(format!("{other:?}"))),
                },
                Err(e) => out.push(Received::Ignored(format!("undecodable message: {e}"))),
            }
        } else {
            out.push(Received::Ignored(format!(
                "netlink message type {msg_type}"
            )));
        }
        // Messages are 4-byte aligned within a datagram.
        let adv = len.next_multiple_of(4).min(buf.len());
        buf = &buf[adv..];
    }
    out
}

/// Resolves a generic netlink family: its id and the id of multicast group `group`.
fn resolve_family(family: &str, group: &str) -> Result<(u16, u32)> {
    let mut sock = Socket::new(NETLINK_GENERIC).map_err(|source| Error::Netlink {
        context: "create control socket",
        source,
    })?;
    sock.bind_auto().map_err(|source| Error::Netlink {
        context: "bind control socket",
        source,
    })?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|source| Error::Netlink {
            context: "connect control socket",
            source,
        })?;
    let mut g = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(family.to_owned())],
    });
    g.finalize();
    let mut nl = NetlinkMessage::from(g);
    nl.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    nl.header.sequence_number = 1;
    nl.finalize();
    let mut tx = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut tx);
    sock.send(&tx, 0).map_err(|source| Error::Netlink {
        context: "send CTRL_CMD_GETFAMILY",
        source,
    })?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut family_id = None;
    let mut group_id = None;
    while Instant::now() < deadline {
        wait_readable(&sock, Duration::from_millis(500))?;
        let mut rx = Vec::with_capacity(16384);
        match sock.recv(&mut rx, libc::MSG_DONTWAIT) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(source) => {
                return Err(Error::Netlink {
                    context: "receive CTRL_CMD_GETFAMILY reply",
                    source,
                })
            }
        }
        let mut at = 0;
        while at < rx.len() {
            let Ok(m) = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&rx[at..]) else {
                break;
            };
            let len = m.header.length as usize;
            match m.payload {
                NetlinkPayload::InnerMessage(g) => {
                    for a in g.payload.nlas {
                        match a {
                            GenlCtrlAttrs::FamilyId(id) => family_id = Some(id),
                            GenlCtrlAttrs::McastGroups(groups) => {
                                for grp in groups {
                                    let mut name = None;
                                    let mut id = None;
                                    for ga in grp {
                                        match ga {
                                            McastGrpAttrs::Name(n) => name = Some(n),
                                            McastGrpAttrs::Id(i) => id = Some(i),
                                        }
                                    }
                                    if name.as_deref() == Some(group) {
                                        group_id = id;
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(Error::FamilyNotFound);
                }
                NetlinkPayload::Error(_) => {
                    // The ACK closes the exchange.
                    return match (family_id, group_id) {
                        (Some(f), Some(g)) => Ok((f, g)),
                        _ => Err(Error::FamilyNotFound),
                    };
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len.next_multiple_of(4);
        }
        if let (Some(f), Some(g)) = (family_id, group_id) {
            return Ok((f, g));
        }
    }
    Err(Error::FamilyNotFound)
}

fn wait_readable(sock: &Socket, timeout: Duration) -> Result<bool> {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(Error::Netlink {
            context: "poll",
            source: e.into(),
        }),
    }
}

/// A subscribed TCM-USER netlink socket.
#[derive(Debug)]
pub struct NetlinkClient {
    sock: Socket,
    family_id: u16,
    seq: u32,
    pending: VecDeque<TcmuMessage>,
    /// Whether the kernel accepted `SET_FEATURES` (it then waits for our replies).
    pub replies_enabled: bool,
}

impl NetlinkClient {
    /// Resolves the family, joins the `config` group and announces reply support with
    /// `TCMU_CMD_SET_FEATURES` (older kernels without it are tolerated).
    pub fn connect() -> Result<NetlinkClient> {
        let (family_id, group) = resolve_family(abi::GENL_FAMILY, abi::GENL_MCAST_GROUP)?;
        let mut sock = Socket::new(NETLINK_GENERIC).map_err(|source| Error::Netlink {
            context: "create socket",
            source,
        })?;
        sock.bind_auto().map_err(|source| Error::Netlink {
            context: "bind socket",
            source,
        })?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|source| Error::Netlink {
                context: "connect socket",
                source,
            })?;
        sock.add_membership(group)
            .map_err(|source| Error::Netlink {
                context: "join the TCM-USER config group",
                source,
            })?;
        // Device adds can burst; a large buffer avoids ENOBUFS.
        let _ = sock.set_rx_buf_sz(1 << 20);
        let mut client = NetlinkClient {
            sock,
            family_id,
            seq: 1,
            pending: VecDeque::new(),
            replies_enabled: false,
        };
        client.set_features()?;
        Ok(client)
    }

    fn send(&mut self, msg: TcmuMessage, flags: u16) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let buf = encode(msg, self.family_id, flags, self.seq);
        self.sock.send(&buf, 0).map_err(|source| Error::Netlink {
            context: "send",
            source,
        })?;
        Ok(self.seq)
    }

    fn set_features(&mut self) -> Result<()> {
        let seq = self.send(
            TcmuMessage {
                cmd: cmd::SET_FEATURES,
                version: abi::GENL_VERSION,
                attrs: vec![TcmuAttr::SuppKernCmdReply(1)],
            },
            NLM_F_REQUEST | NLM_F_ACK,
        )?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            for r in self.recv_raw(Duration::from_millis(200))? {
                match r {
                    Received::Ack { seq: s, code } if s == seq => {
                        if code == 0 {
                            self.replies_enabled = true;
                        } else if code == -libc::EOPNOTSUPP || code == -libc::EINVAL {
                            tracing::warn!(code, "kernel does not support TCMU_CMD_SET_FEATURES; running without netlink replies");
                        } else {
                            return Err(Error::NetlinkProtocol(format!(
                                "TCMU_CMD_SET_FEATURES failed with {code}"
                            )));
                        }
                        return Ok(());
                    }
                    Received::Tcmu(m) => self.pending.push_back(m),
                    _ => {}
                }
            }
        }
        tracing::warn!("no answer to TCMU_CMD_SET_FEATURES; assuming an old kernel");
        Ok(())
    }

    fn recv_raw(&mut self, timeout: Duration) -> Result<Vec<Received>> {
        if !wait_readable(&self.sock, timeout)? {
            return Ok(Vec::new());
        }
        let mut rx = Vec::with_capacity(65536);
        match self.sock.recv_from(&mut rx, libc::MSG_DONTWAIT) {
            Ok((_, sender)) if !from_kernel(&sender) => {
                tracing::warn!(
                    port = sender.port_number(),
                    "netlink datagram not from the kernel ignored"
                );
                Ok(Vec::new())
            }
            Ok(_) => Ok(decode_datagram(&rx, self.family_id)),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                Ok(Vec::new())
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::error!(
                    "netlink receive buffer overrun: device events were lost; rescanning is needed"
                );
                Ok(Vec::new())
            }
            Err(source) => Err(Error::Netlink {
                context: "receive",
                source,
            }),
        }
    }

    /// Waits up to `timeout` for the next TCM-USER message. Acknowledgements of our
    /// replies are consumed here (failures are logged).
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<TcmuMessage>> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(Some(m));
        }
        for r in self.recv_raw(timeout)? {
            match r {
                Received::Tcmu(m) => self.pending.push_back(m),
                Received::Ack { code, seq } if code != 0 => {
                    tracing::warn!(seq, code, "kernel refused a netlink reply");
                }
                Received::Ack { .. } => {}
                Received::Ignored(why) => tracing::debug!(why, "ignored netlink message"),
            }
        }
        Ok(self.pending.pop_front())
    }

    /// Sends the `*_DONE` reply for `kind` with `status` (0 or a negative errno).
    pub fn reply(&mut self, kind: EventKind, device_id: u32, status: i32) -> Result<()> {
        self.send(
            TcmuMessage {
                cmd: kind.done_cmd(),
                version: abi::GENL_VERSION,
                attrs: vec![TcmuAttr::CmdStatus(status), TcmuAttr::DeviceId(device_id)],
            },
            NLM_F_REQUEST | NLM_F_ACK,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn added(version: u8) -> TcmuMessage {
        TcmuMessage {
            cmd: cmd::ADDED_DEVICE,
            version,
            attrs: vec![
                TcmuAttr::Device("tcm-user/1/d/file//tmp/x".into()),
                TcmuAttr::Minor(3),
                TcmuAttr::DeviceId(42),
            ],
        }
    }

    #[test]
    fn reply_encoding_matches_the_kernel_layout() {
        let buf = encode(
            TcmuMessage {
                cmd: cmd::ADDED_DEVICE_DONE,
                version: 2,
                attrs: vec![TcmuAttr::CmdStatus(-22), TcmuAttr::DeviceId(7)],
            },
            0x1f,
            NLM_F_REQUEST | NLM_F_ACK,
            9,
        );
        // nlmsghdr (16) + genlmsghdr (4) + 2 attributes of 8 bytes.
        assert_eq!(buf.len(), 36);
        assert_eq!(u32::from_ne_bytes(buf[0..4].try_into().unwrap()), 36);
        assert_eq!(u16::from_ne_bytes(buf[4..6].try_into().unwrap()), 0x1f);
        assert_eq!(
            u16::from_ne_bytes(buf[6..8].try_into().unwrap()),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(u32::from_ne_bytes(buf[8..12].try_into().unwrap()), 9);
        assert_eq!(&buf[16..20], &[cmd::ADDED_DEVICE_DONE, 2, 0, 0]);
        // nla_len 8, nla_type CMD_STATUS, value -22.
        assert_eq!(&buf[20..24], &[8, 0, attr::CMD_STATUS as u8, 0]);
        assert_eq!(i32::from_ne_bytes(buf[24..28].try_into().unwrap()), -22);
        assert_eq!(&buf[28..32], &[8, 0, attr::DEVICE_ID as u8, 0]);
        assert_eq!(u32::from_ne_bytes(buf[32..36].try_into().unwrap()), 7);
    }

    #[test]
    fn kernel_events_decode() {
        let mut dgram = encode(added(2), 0x1f, 0, 0);
        let mut reconf = encode(
            TcmuMessage {
                cmd: cmd::RECONFIG_DEVICE,
                version: 2,
                attrs: vec![
                    TcmuAttr::Device("tcm-user/1/d/file//tmp/x".into()),
                    TcmuAttr::Minor(3),
                    TcmuAttr::DeviceId(42),
                    TcmuAttr::DevSize(1 << 30),
                ],
            },
            0x1f,
            0,
            0,
        );
        dgram.append(&mut reconf);
        let got = decode_datagram(&dgram, 0x1f);
        assert_eq!(got.len(), 2);
        let Received::Tcmu(m) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(
            DeviceEvent::from_message(m).unwrap(),
            DeviceEvent {
                kind: EventKind::Added,
                uio_name: "tcm-user/1/d/file//tmp/x".into(),
                minor: 3,
                device_id: Some(42),
                reconfig: None,
            }
        );
        let Received::Tcmu(m) = &got[1] else {
            panic!("{got:?}")
        };
        let ev = DeviceEvent::from_message(m).unwrap();
        assert_eq!(ev.kind, EventKind::Reconfig);
        assert_eq!(ev.reconfig, Some(Reconfig::DevSize(1 << 30)));
        assert_eq!(ev.kind.done_cmd(), cmd::RECONFIG_DEVICE_DONE);
    }

    #[test]
    fn events_missing_attributes_are_refused() {
        let mut m = added(2);
        m.attrs.retain(|a| !matches!(a, TcmuAttr::DeviceId(_)));
        assert!(DeviceEvent::from_message(&m).is_err());
        m.version = 1;
        assert_eq!(DeviceEvent::from_message(&m).unwrap().device_id, None);
        m.attrs.retain(|a| !matches!(a, TcmuAttr::Minor(_)));
        assert!(DeviceEvent::from_message(&m).is_err());
        assert!(DeviceEvent::from_message(&TcmuMessage {
            cmd: cmd::SET_FEATURES,
            version: 2,
            attrs: vec![]
        })
        .is_err());
    }

    #[test]
    fn oversized_or_control_strings_are_refused() {
        // Before, any length and any bytes were accepted and flowed into paths and logs.
        let mut m = added(2);
        m.attrs[0] = TcmuAttr::Device(format!("tcm-user/1/{}/ram/", "d".repeat(2000)));
        let e = DeviceEvent::from_message(&m).unwrap_err();
        assert!(e.contains("TCMU_ATTR_DEVICE is 2016 bytes"), "{e}");
        let mut m = added(2);
        m.attrs[0] = TcmuAttr::Device("tcm-user/1/d\n/ram/".into());
        assert!(DeviceEvent::from_message(&m)
            .unwrap_err()
            .contains("control character"));
        let mut m = added(2);
        m.cmd = cmd::RECONFIG_DEVICE;
        m.attrs
            .push(TcmuAttr::DevCfg(format!("file/{}", "x".repeat(300))));
        assert!(DeviceEvent::from_message(&m)
            .unwrap_err()
            .contains("TCMU_ATTR_DEV_CFG is 305 bytes (at most 255)"));
        let mut m = added(2);
        m.cmd = cmd::RECONFIG_DEVICE;
        m.attrs
            .push(TcmuAttr::DevCfg(format!("file/{}", "x".repeat(250))));
        assert!(DeviceEvent::from_message(&m).is_ok());
    }

    #[test]
    fn only_the_kernel_is_listened_to() {
        assert!(from_kernel(&SocketAddr::new(0, 1)));
        assert!(!from_kernel(&SocketAddr::new(4242, 0)));
    }

    #[test]
    fn acks_and_errors_decode() {
        // NLMSG_ERROR with error -95 echoing a 16-byte request header.
        let mut m = vec![0u8; 36];
        m[0..4].copy_from_slice(&36u32.to_ne_bytes());
        m[4..6].copy_from_slice(&netlink_packet_core::NLMSG_ERROR.to_ne_bytes());
        m[8..12].copy_from_slice(&5u32.to_ne_bytes());
        m[16..20].copy_from_slice(&(-95i32).to_ne_bytes());
        m[20..24].copy_from_slice(&16u32.to_ne_bytes());
        assert_eq!(
            decode_datagram(&m, 0x1f),
            vec![Received::Ack { seq: 5, code: -95 }]
        );
        // Foreign message types are ignored, truncated lengths stop decoding.
        let mut other = encode(added(2), 0x20, 0, 0);
        assert!(matches!(
            decode_datagram(&other, 0x1f)[0],
            Received::Ignored(_)
        ));
        other[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(matches!(
            decode_datagram(&other, 0x20)[0],
            Received::Ignored(_)
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for r in decode_datagram(&bytes, 0x1f) {
                if let Received::Tcmu(m) = r {
                    let _ = DeviceEvent::from_message(&m);
                }
            }
        }

        #[test]
        fn attributes_round_trip(name in "[a-z/0-9]{1,40}", minor in any::<u32>(), id in any::<u32>(), size in any::<u64>()) {
            let msg = TcmuMessage {
                cmd: cmd::RECONFIG_DEVICE,
                version: 2,
                attrs: vec![TcmuAttr::Device(name), TcmuAttr::Minor(minor), TcmuAttr::DeviceId(id), TcmuAttr::DevSize(size)],
            };
            let got = decode_datagram(&encode(msg.clone(), 0x1f, 0, 1), 0x1f);
            prop_assert_eq!(got, vec![Received::Tcmu(msg)]);
        }
    }
}
