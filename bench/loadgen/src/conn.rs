//! One iSCSI connection: TCP connect, login (RFC 7143 6, 13), synchronous commands for
//! setup (TEST UNIT READY, READ CAPACITY) and logout. The pipelined workload lives in
//! `engine`.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rustio_iscsi_proto::pdu::{
    pad_len, BhsInfo, Header, LoginRequest, LoginResponse, LogoutRequest, NopOut, ScsiCommand,
    Stage, TaskAttribute, BHS_LEN, MAX_DATA_SEGMENT, RESERVED_TAG,
};
use rustio_iscsi_proto::text;

use crate::scsi;

/// What the load generator declares as its MaxRecvDataSegmentLength.
pub const OUR_MAX_RECV: u32 = 262_144;
/// FirstBurstLength / MaxBurstLength offered.
pub const OUR_BURST: u32 = 262_144;
/// Socket timeout: a target silent for this long fails the run instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the load generator (message plus optional cause).
#[derive(Debug)]
pub struct Error {
    msg: String,
    source: Option<io::Error>,
}

impl Error {
    /// A protocol or usage error.
    pub fn msg(m: impl Into<String>) -> Error {
        Error {
            msg: m.into(),
            source: None,
        }
    }

    /// An I/O error with context.
    pub fn io(ctx: impl Into<String>, e: io::Error) -> Error {
        Error {
            msg: ctx.into(),
            source: Some(e),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{}: {s}", self.msg),
            None => f.write_str(&self.msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

/// What [`Conn::exec`] returns: SCSI status, data-in, and sense key/ASC/ASCQ if any.
pub type Executed = (u8, Vec<u8>, Option<(u8, u8, u8)>);

/// Session parameters after negotiation (RFC 7143 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The target's MaxRecvDataSegmentLength: the largest data segment we may send.
    pub max_xmit: u32,
    /// FirstBurstLength (unsolicited data limit).
    pub first_burst: u32,
    /// MaxBurstLength.
    pub max_burst: u32,
    /// InitialR2T: unsolicited Data-Out PDUs are forbidden when true.
    pub initial_r2t: bool,
    /// ImmediateData: data may ride in the SCSI Command PDU.
    pub immediate_data: bool,
}

impl Negotiated {
    /// Applies the target's answers to our offer (RFC 7143 13.10-13.14 result functions:
    /// OR for InitialR2T, AND for ImmediateData, minimum for the lengths). Missing or
    /// unusable answers fall back to the RFC defaults.
    pub fn from_answers(keys: &HashMap<String, String>) -> Negotiated {
        let num = |k: &str, default: u32| {
            keys.get(k)
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|&v| v >= 512)
                .unwrap_or(default)
        };
        let yes = |k: &str, default: bool| match keys.get(k).map(String::as_str) {
            Some("Yes") => true,
            Some("No") => false,
            _ => default,
        };
        Negotiated {
            max_xmit: num("MaxRecvDataSegmentLength", 8192).min(MAX_DATA_SEGMENT),
            first_burst: num("FirstBurstLength", 65536).min(OUR_BURST),
            max_burst: num("MaxBurstLength", 262_144).min(OUR_BURST),
            // We offer No; the result is Yes if the target says Yes or did not answer.
            initial_r2t: yes("InitialR2T", true),
            immediate_data: yes("ImmediateData", true),
        }
    }
}

/// Reads one PDU: returns the BHS and fills `data` with the data segment (without
/// padding). AHS are skipped.
pub fn read_pdu(r: &mut impl Read, data: &mut Vec<u8>) -> io::Result<[u8; BHS_LEN]> {
    let mut bhs = [0u8; BHS_LEN];
    r.read_exact(&mut bhs)?;
    let info = BhsInfo::of(&bhs);
    let ahs = info.ahs_len;
    let dsl = info.data_len as usize;
    let total = ahs + dsl + pad_len(dsl);
    data.resize(total, 0);
    r.read_exact(&mut data[..total])?;
    data.drain(..ahs);
    data.truncate(dsl);
    Ok(bhs)
}

/// The BHS of `h` for a data segment of `len` bytes and no AHS (lengths beyond the 24-bit
/// DataSegmentLength are clamped by the codec; callers never send that much).
pub fn bhs(h: Header, len: usize) -> [u8; BHS_LEN] {
    h.encode(0, u32::try_from(len).unwrap_or(u32::MAX))
}

/// Sense key, ASC and ASCQ from a SCSI Response data segment (RFC 7143 11.4.7: 2-byte
/// SenseLength, then fixed (SPC-4 4.5.3) or descriptor (SPC-4 4.5.2) sense data).
pub fn sense_of(seg: &[u8]) -> Option<(u8, u8, u8)> {
    let len = usize::from(u16::from_be_bytes([*seg.first()?, *seg.get(1)?]));
    let s = seg.get(2..2 + len)?;
    match s.first()? & 0x7f {
        0x70 | 0x71 => Some((s.get(2)? & 0xf, *s.get(12)?, *s.get(13)?)),
        0x72 | 0x73 => Some((s.get(1)? & 0xf, *s.get(2)?, *s.get(3)?)),
        _ => None,
    }
}

/// A logged-in connection in synchronous mode.
#[derive(Debug)]
pub struct Conn {
    /// Write half.
    pub stream: TcpStream,
    /// Buffered read half.
    pub reader: BufReader<TcpStream>,
    /// Negotiated parameters.
    pub params: Negotiated,
    /// Next CmdSN to use.
    pub cmd_sn: u32,
    /// MaxCmdSN last seen.
    pub max_cmd_sn: u32,
    /// ExpStatSN to send.
    pub exp_stat_sn: u32,
    /// LUN field of the workload (the 8-byte SAM encoding as a big-endian number).
    pub lun: u64,
    /// Connection ID.
    pub cid: u16,
    next_itt: u32,
    scratch: Vec<u8>,
}

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct LoginSpec {
    /// Target portal.
    pub portal: SocketAddr,
    /// Target IQN.
    pub target: String,
    /// Our initiator name.
    pub initiator: String,
    /// LUN used for commands.
    pub lun: u16,
    /// Index of this session among the run's sessions (part of the ISID, so that the
    /// sessions of one initiator name are distinct I_T nexuses, RFC 7143 4.4.1).
    pub session: u16,
}

impl Conn {
    /// Connects and performs a login with AuthMethod=None.
    pub fn login(spec: &LoginSpec) -> Result<Conn> {
        let stream = TcpStream::connect_timeout(&spec.portal, Duration::from_secs(10))
            .map_err(|e| Error::io(format!("connecting to {}", spec.portal), e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| Error::io("TCP_NODELAY", e))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| Error::io("socket timeouts", e))?;
        let rd = stream
            .try_clone()
            .map_err(|e| Error::io("cloning the socket", e))?;
        let mut c = Conn {
            stream,
            reader: BufReader::with_capacity(256 * 1024, rd),
            params: Negotiated::from_answers(&HashMap::new()),
            cmd_sn: 1,
            max_cmd_sn: 1,
            exp_stat_sn: 0,
            lun: u64::from_be_bytes(scsi::encode_lun(spec.lun)),
            cid: 1,
            next_itt: 1,
            scratch: Vec::new(),
        };
        c.do_login(spec)?;
        Ok(c)
    }

    /// Logs in (security stage with AuthMethod=None, then the operational stage) and
    /// takes over what the target negotiated (RFC 7143 6.3, 13).
    fn do_login(&mut self, spec: &LoginSpec) -> Result<()> {
        let isid = random_isid(spec.session);
        let mut answers: HashMap<String, String> = HashMap::new();
        let mut stage = Stage::Security;
        let mut to_send = security_keys(spec);
        let mut tsih = 0u16;
        // Bounded: a target needing more than 8 exchanges is not worth benchmarking.
        for _ in 0..8 {
            let nsg = if stage == Stage::Security {
                Stage::Operational
            } else {
                Stage::FullFeature
            };
            let text = text::encode(&to_send);
            let req = LoginRequest {
                transit: true,
                cont: false,
                csg: stage,
                nsg,
                version_max: 0,
                version_min: 0,
                isid,
                tsih,
                itt: 0,
                cid: self.cid,
                cmd_sn: self.cmd_sn,
                exp_stat_sn: self.exp_stat_sn,
            };
            let (resp, resp_text) = self.login_exchange(req, &text)?;
            let (class, detail) = (resp.status_class, resp.status_detail);
            if class != 0 {
                return Err(Error::msg(format!(
                    "login to {} rejected: status class {class:#04x} detail {detail:#04x}",
                    spec.target
                )));
            }
            tsih = resp.tsih;
            self.exp_stat_sn = resp.stat_sn.wrapping_add(1);
            self.max_cmd_sn = resp.max_cmd_sn;
            let got = text::parse(&resp_text)
                .map_err(|e| Error::msg(format!("malformed login response text: {e}")))?;
            to_send = answer_target_keys(got, &to_send, &mut answers);
            if resp.transit && resp.nsg == Stage::FullFeature {
                self.params = Negotiated::from_answers(&answers);
                self.cmd_sn = resp.exp_cmd_sn;
                return Ok(());
            }
            if resp.transit && resp.nsg == Stage::Operational && stage == Stage::Security {
                stage = Stage::Operational;
                to_send.extend(operational_keys());
            }
        }
        Err(Error::msg("login did not finish within 8 exchanges"))
    }

    /// Sends one Login Request and reads its response, asking for the rest of a
    /// continued (C bit) response text (RFC 7143 6.7). Returns the response and its text.
    fn login_exchange(
        &mut self,
        req: LoginRequest,
        text: &[u8],
    ) -> Result<(LoginResponse, Vec<u8>)> {
        self.send(&bhs(Header::LoginRequest(req), text.len()), text)?;
        let mut resp_text = Vec::new();
        loop {
            let b = read_pdu(&mut self.reader, &mut self.scratch)
                .map_err(|e| Error::io("reading the login response", e))?;
            match Header::parse(&b) {
                Header::LoginResponse(r) => {
                    resp_text.extend_from_slice(&self.scratch);
                    if r.cont {
                        // Text continues (RFC 7143 6.7): ask for the rest.
                        let more = LoginRequest {
                            transit: false,
                            nsg: Stage::Security,
                            tsih: r.tsih,
                            exp_stat_sn: r.stat_sn.wrapping_add(1),
                            ..req
                        };
                        self.send(&bhs(Header::LoginRequest(more), 0), &[])?;
                        continue;
                    }
                    return Ok((r, resp_text));
                }
                other => {
                    return Err(Error::msg(format!(
                        "unexpected PDU during login: {other:?}"
                    )))
                }
            }
        }
    }

    /// Writes a BHS and a data segment (padded).
    pub fn send(&mut self, bhs: &[u8; BHS_LEN], data: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(BHS_LEN + data.len() + 3);
        buf.extend_from_slice(bhs);
        buf.extend_from_slice(data);
        buf.resize(buf.len() + pad_len(data.len()), 0);
        self.stream
            .write_all(&buf)
            .map_err(|e| Error::io("sending a PDU", e))
    }

    /// Runs one non-data-out command synchronously: (status, data-in, sense).
    pub fn exec(&mut self, cdb: [u8; 16], read_len: u32) -> Result<Executed> {
        let itt = self.next_itt;
        self.next_itt = self.next_itt.wrapping_add(1) & 0x7fff_ffff;
        let cmd = ScsiCommand {
            immediate: false,
            final_bit: true,
            read: read_len > 0,
            write: false,
            attr: TaskAttribute::Simple,
            lun: self.lun,
            itt,
            edtl: read_len,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb,
        };
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(&bhs(Header::ScsiCommand(cmd), 0), &[])?;
        let mut data = Vec::new();
        for _ in 0..10_000 {
            let b = read_pdu(&mut self.reader, &mut self.scratch)
                .map_err(|e| Error::io("reading a response", e))?;
            match Header::parse(&b) {
                Header::DataIn(d) if d.itt == itt => {
                    let off = d.buffer_offset as usize;
                    let end = off
                        .saturating_add(self.scratch.len())
                        .min(read_len as usize);
                    if off < end {
                        if data.len() < end {
                            data.resize(end, 0);
                        }
                        data[off..end].copy_from_slice(&self.scratch[..end - off]);
                    }
                    self.max_cmd_sn = d.max_cmd_sn;
                    if d.status_present {
                        self.exp_stat_sn = d.stat_sn.wrapping_add(1);
                        return Ok((d.status, data, None));
                    }
                }
                Header::ScsiResponse(r) if r.itt == itt => {
                    self.exp_stat_sn = r.stat_sn.wrapping_add(1);
                    self.max_cmd_sn = r.max_cmd_sn;
                    if r.response != 0 {
                        return Err(Error::msg(format!("iSCSI response {:#04x}", r.response)));
                    }
                    return Ok((r.status, data, sense_of(&self.scratch)));
                }
                Header::NopIn(ping) => {
                    if ping.ttt != RESERVED_TAG {
                        let r = NopOut::reply_to(&ping, self.cmd_sn, self.exp_stat_sn);
                        self.send(&bhs(Header::NopOut(r), 0), &[])?;
                    }
                }
                Header::AsyncMessage(_) => {}
                other => return Err(Error::msg(format!("unexpected PDU: {other:?}"))),
            }
        }
        Err(Error::msg("no response after 10000 PDUs"))
    }

    /// Clears pending unit attentions (SAM-5 5.14) with TEST UNIT READY, then reads the
    /// capacity: (blocks, block length).
    pub fn prepare(&mut self) -> Result<(u64, u32)> {
        let mut last = None;
        let mut ready = false;
        for _ in 0..8 {
            let (st, _, sense) = self.exec(scsi::tur_cdb(), 0)?;
            if st == 0 {
                ready = true;
                break;
            }
            last = sense;
        }
        if !ready {
            return Err(Error::msg(format!("LUN not ready; last sense {last:02x?}")));
        }
        for _ in 0..4 {
            let (st, data, sense) = self.exec(scsi::read_capacity16_cdb(), 32)?;
            if st == 0 {
                let (blocks, bl) = scsi::parse_capacity16(&data)
                    .ok_or_else(|| Error::msg("short READ CAPACITY (16) data"))?;
                if bl == 0 || blocks == 0 {
                    return Err(Error::msg("target reports an empty LUN"));
                }
                return Ok((blocks, bl));
            }
            last = sense;
        }
        Err(Error::msg(format!(
            "READ CAPACITY (16) failed; sense {last:02x?}"
        )))
    }

    /// Logs out (bounded wait) and closes the socket.
    pub fn logout(mut self) -> Result<()> {
        let lo = LogoutRequest::close_session(0x7fff_fff0, self.cid, self.cmd_sn, self.exp_stat_sn);
        self.send(&bhs(Header::LogoutRequest(lo), 0), &[])?;
        for _ in 0..1000 {
            let b = match read_pdu(&mut self.reader, &mut self.scratch) {
                Ok(b) => b,
                Err(_) => return Ok(()),
            };
            if let Header::LogoutResponse(_) = Header::parse(&b) {
                break;
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        Ok(())
    }
}

/// An ISID of type 0x80 ("random", RFC 7143 11.12.5): B and C from the pid and clock
/// (a new value per run), D the session's index, so the sessions of one run never share
/// an ISID (same initiator name and ISID would be one session, RFC 7143 4.4.1).
fn random_isid(session: u16) -> [u8; 6] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let salt = std::process::id() ^ nanos;
    let s = salt.to_be_bytes();
    let d = session.to_be_bytes();
    [0x80, 0x00, s[2], s[3], d[0], d[1]]
}

/// The keys of the first (security stage) Login Request.
fn security_keys(spec: &LoginSpec) -> Vec<(String, String)> {
    [
        ("InitiatorName", spec.initiator.as_str()),
        ("SessionType", "Normal"),
        ("TargetName", spec.target.as_str()),
        ("AuthMethod", "None"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The operational keys we offer: no digests, immediate data, large bursts.
fn operational_keys() -> Vec<(String, String)> {
    [
        ("HeaderDigest", "None".to_string()),
        ("DataDigest", "None".to_string()),
        ("MaxConnections", "1".to_string()),
        ("InitialR2T", "No".to_string()),
        ("ImmediateData", "Yes".to_string()),
        ("MaxRecvDataSegmentLength", OUR_MAX_RECV.to_string()),
        ("MaxBurstLength", OUR_BURST.to_string()),
        ("FirstBurstLength", OUR_BURST.to_string()),
        ("DefaultTime2Wait", "0".to_string()),
        ("DefaultTime2Retain", "0".to_string()),
        ("MaxOutstandingR2T", "1".to_string()),
        ("DataPDUInOrder", "Yes".to_string()),
        ("DataSequenceInOrder", "Yes".to_string()),
        ("ErrorRecoveryLevel", "0".to_string()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect()
}

/// Records the target's answers in `answers` and returns the keys to send next: those
/// the target offered on its own (accepting its value), except declarative ones and
/// keys already settled (RFC 7143 6.2). `sent` is what we just sent.
fn answer_target_keys(
    got: Vec<(String, String)>,
    sent: &[(String, String)],
    answers: &mut HashMap<String, String>,
) -> Vec<(String, String)> {
    let mut to_send = Vec::new();
    for (k, v) in got {
        let declarative = matches!(
            k.as_str(),
            "TargetAlias" | "TargetPortalGroupTag" | "TargetAddress" | "MaxRecvDataSegmentLength"
        );
        let offered = sent.iter().any(|(s, _)| *s == k);
        if !offered && !declarative && !answers.contains_key(&k) {
            to_send.push((k.clone(), v.clone()));
        }
        answers.insert(k, v);
    }
    to_send
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn negotiation_defaults_follow_rfc() {
        // RFC 7143 13.10-13.14 defaults: InitialR2T=Yes, ImmediateData=Yes,
        // FirstBurstLength=65536, MaxBurstLength=262144, MaxRecvDataSegmentLength=8192.
        let n = Negotiated::from_answers(&HashMap::new());
        assert_eq!(
            n,
            Negotiated {
                max_xmit: 8192,
                first_burst: 65536,
                max_burst: 262_144,
                initial_r2t: true,
                immediate_data: true,
            }
        );
    }

    #[test]
    fn negotiation_applies_answers() {
        let n = Negotiated::from_answers(&keys(&[
            ("MaxRecvDataSegmentLength", "65536"),
            ("FirstBurstLength", "1048576"),
            ("MaxBurstLength", "131072"),
            ("InitialR2T", "No"),
            ("ImmediateData", "No"),
        ]));
        assert_eq!(n.max_xmit, 65536);
        assert_eq!(n.first_burst, OUR_BURST);
        assert_eq!(n.max_burst, 131_072);
        assert!(!n.initial_r2t && !n.immediate_data);
        let bad = Negotiated::from_answers(&keys(&[("MaxRecvDataSegmentLength", "Reject")]));
        assert_eq!(bad.max_xmit, 8192);
    }

    #[test]
    fn sense_formats() {
        // Fixed format: key in byte 2, ASC/ASCQ in 12/13 (SPC-4 4.5.3).
        let mut fixed = vec![0u8, 18, 0x70, 0, 0x06];
        fixed.extend_from_slice(&[0; 9]);
        fixed.extend_from_slice(&[0x29, 0x00, 0, 0, 0, 0]);
        assert_eq!(sense_of(&fixed), Some((6, 0x29, 0)));
        // Descriptor format: key/ASC/ASCQ in 1..4 (SPC-4 4.5.2).
        assert_eq!(
            sense_of(&[0, 8, 0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0]),
            Some((5, 0x24, 0))
        );
        assert_eq!(sense_of(&[0, 40, 0x70]), None);
        assert_eq!(sense_of(&[]), None);
    }

    #[test]
    fn read_pdu_strips_ahs_and_padding() {
        let mut wire = vec![0u8; BHS_LEN];
        wire[0] = 0x25;
        wire[4] = 1; // one AHS word
        wire[7] = 5; // 5 data bytes
        wire.extend_from_slice(&[9, 9, 9, 9]);
        wire.extend_from_slice(&[1, 2, 3, 4, 5, 0, 0, 0]);
        wire.extend_from_slice(&[0xee; 48]);
        let mut r = &wire[..];
        let mut data = Vec::new();
        let b = read_pdu(&mut r, &mut data).unwrap();
        assert_eq!(b[0], 0x25);
        assert_eq!(data, vec![1, 2, 3, 4, 5]);
        assert_eq!(r.len(), 48);
    }

    #[test]
    fn target_offers_are_answered_once_and_declarations_never() {
        let sent = vec![("HeaderDigest".to_string(), "None".to_string())];
        let got = vec![
            ("HeaderDigest".to_string(), "None".to_string()),
            ("TargetPortalGroupTag".to_string(), "1".to_string()),
            ("MaxRecvDataSegmentLength".to_string(), "65536".to_string()),
            ("ErrorRecoveryLevel".to_string(), "0".to_string()),
        ];
        let mut answers = HashMap::new();
        let next = answer_target_keys(got.clone(), &sent, &mut answers);
        // RFC 7143 6.2: a key the target offers on its own is answered (with its value);
        // answers to our offers and declarative keys are not.
        assert_eq!(
            next,
            vec![("ErrorRecoveryLevel".to_string(), "0".to_string())]
        );
        assert_eq!(answers.len(), 4);
        assert_eq!(answers["MaxRecvDataSegmentLength"], "65536");
        // Settled keys are not answered again.
        assert!(answer_target_keys(got, &[], &mut answers).is_empty());
        let isid = random_isid(0);
        assert_eq!(&isid[..2], &[0x80, 0x00], "ISID type 0x80 (random)");
        // The D field (bytes 4-5) carries the session index: distinct sessions, distinct ISIDs.
        assert_eq!(&random_isid(0x0102)[4..], &[0x01, 0x02]);
        assert_ne!(random_isid(1)[4..], random_isid(2)[4..]);
        assert_eq!(operational_keys().len(), 14);
        let spec = LoginSpec {
            portal: "127.0.0.1:3260".parse().unwrap(),
            target: "iqn.2024-01.org.rustio:t".into(),
            initiator: "iqn.2024-01.org.rustio:i".into(),
            lun: 0,
            session: 0,
        };
        let sec = security_keys(&spec);
        assert_eq!(
            sec[0],
            ("InitiatorName".to_string(), spec.initiator.clone())
        );
        assert_eq!(sec[3], ("AuthMethod".to_string(), "None".to_string()));
    }
}
