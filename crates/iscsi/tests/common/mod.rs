//! A minimal iSCSI initiator for integration tests, written against RFC 7143 directly
//! (it shares only the PDU codec with the server).

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustio_backstore::RamBackstore;
use rustio_iscsi::config::{PortalConfig, ServerConfig, TargetConfig, TpgConfig};
use rustio_iscsi::{LunConfig, Server, ServerHandle};
use rustio_iscsi_proto::pdu::{
    read_pdu, DataOut, Digests, Header, LoginRequest, LogoutReason, LogoutRequest, NopOut, Pdu,
    ScsiCommand, Stage, TaskAttribute, TaskMgmtRequest, TextRequest, TmfFunction, RESERVED_TAG,
};
use rustio_scsi::{LogicalUnit, LuConfig};

pub const TARGET: &str = "iqn.2024-01.org.rustio.test:disk";
pub const INITIATOR: &str = "iqn.2024-01.org.rustio.test:initiator";

/// A RAM logical unit of `blocks` 512-byte blocks.
pub fn ram_lu(blocks: u64, serial: &str) -> Arc<LogicalUnit> {
    LogicalUnit::new(
        Arc::new(RamBackstore::new(blocks * 512, 512).unwrap()),
        LuConfig::new(serial, serial),
    )
    .unwrap()
}

/// Binds 127.0.0.1:0 and builds a one-target demo-mode configuration on it.
pub fn start(edit: impl FnOnce(&mut ServerConfig, &mut TpgConfig)) -> (ServerHandle, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut tpg = TpgConfig::new(1);
    tpg.portals.push(PortalConfig { addr });
    tpg.generate_node_acls = true;
    tpg.params.offer.max_recv_data_segment_length = 65536;
    tpg.luns.push(LunConfig {
        index: 0,
        lu: ram_lu(8192, "lun0"),
        name: "lun0".into(),
    });
    let mut cfg = ServerConfig {
        workers: 4,
        queue_depth: 16,
        shutdown_grace: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    edit(&mut cfg, &mut tpg);
    cfg.targets.push(Arc::new(TargetConfig {
        iqn: TARGET.into(),
        tpgs: vec![Arc::new(tpg)],
    }));
    let h = Server::start(cfg, vec![l]).unwrap();
    (h, addr)
}

/// Result of a SCSI command.
#[derive(Debug, Default)]
pub struct ScsiResult {
    pub status: u8,
    pub data: Vec<u8>,
    pub sense: Vec<u8>,
    pub underflow: bool,
    pub overflow: bool,
    pub residual: u32,
    pub data_pdus: u32,
    pub r2ts: u32,
}

/// Login options.
#[derive(Debug, Clone)]
pub struct LoginOpts {
    pub target: Option<String>,
    pub initiator: String,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub cid: u16,
    pub keys: Vec<(String, String)>,
    pub chap: Option<(String, String)>,
    /// After login, clear LUN 0's power-on unit attention with TEST UNIT READY.
    pub clear_ua: bool,
}

impl Default for LoginOpts {
    fn default() -> Self {
        LoginOpts {
            target: Some(TARGET.into()),
            initiator: INITIATOR.into(),
            isid: [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a],
            tsih: 0,
            cid: 1,
            keys: vec![
                ("HeaderDigest".into(), "None".into()),
                ("DataDigest".into(), "None".into()),
                ("MaxRecvDataSegmentLength".into(), "8192".into()),
                ("InitialR2T".into(), "Yes".into()),
                ("ImmediateData".into(), "Yes".into()),
                ("MaxBurstLength".into(), "16384".into()),
                ("FirstBurstLength".into(), "4096".into()),
                ("ErrorRecoveryLevel".into(), "0".into()),
            ],
            chap: None,
            clear_ua: true,
        }
    }
}

impl LoginOpts {
    /// These options with `key` offered as `value` (replaced, or added).
    pub fn with_key(mut self, key: &str, value: &str) -> LoginOpts {
        match self.keys.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.into(),
            None => self.keys.push((key.into(), value.into())),
        }
        self
    }
}

/// A connected initiator.
pub struct Initiator {
    pub s: TcpStream,
    pub itt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub digests: Digests,
    pub tsih: u16,
    pub max_cmd_sn: u32,
    pub exp_cmd_sn: u32,
    pub login_status: (u8, u8),
    pub keys: Vec<(String, String)>,
}

fn kv(pairs: &[(String, String)]) -> Vec<u8> {
    rustio_iscsi_proto::text::encode(pairs)
}

impl Initiator {
    pub fn connect(addr: SocketAddr) -> Initiator {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Initiator {
            s,
            itt: 1,
            cmd_sn: 1,
            exp_stat_sn: 0,
            digests: Digests::default(),
            tsih: 0,
            max_cmd_sn: 0,
            exp_cmd_sn: 0,
            login_status: (0, 0),
            keys: Vec::new(),
        }
    }

    pub fn send(&mut self, pdu: &Pdu) {
        self.s.write_all(&pdu.encode(self.digests)).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    pub fn recv(&mut self) -> Pdu {
        self.try_recv().expect("PDU expected")
    }

    pub fn try_recv(&mut self) -> Option<Pdu> {
        let p = read_pdu(&mut self.s, self.digests, 1 << 24).ok()?;
        match &p.header {
            Header::ScsiResponse(h) => self.track(h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn),
            Header::DataIn(h) if h.status_present => {
                self.track(h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn)
            }
            Header::NopIn(h) if h.itt != RESERVED_TAG => {
                self.track(h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn)
            }
            Header::TaskMgmtResponse(h) => self.track(h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn),
            Header::TextResponse(h) => self.track(h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn),
            Header::LogoutResponse(h) => self.track(h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn),
            Header::Reject(h) => self.track(h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn),
            Header::AsyncMessage(h) => self.track(h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn),
            _ => {}
        }
        Some(p)
    }

    fn track(&mut self, stat_sn: u32, exp: u32, max: u32) {
        self.exp_stat_sn = stat_sn.wrapping_add(1);
        self.exp_cmd_sn = exp;
        self.max_cmd_sn = max;
    }

    fn next_itt(&mut self) -> u32 {
        self.itt += 1;
        self.itt
    }

    /// Logs in (security stage with AuthMethod, then operational), returning whether
    /// the login reached full feature phase.
    pub fn login(&mut self, o: &LoginOpts) -> bool {
        let itt = self.next_itt();
        let mut req = LoginRequest {
            transit: true,
            cont: false,
            csg: Stage::Security,
            nsg: Stage::Operational,
            version_max: 0,
            version_min: 0,
            isid: o.isid,
            tsih: o.tsih,
            itt,
            cid: o.cid,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        let mut keys = vec![("InitiatorName".to_string(), o.initiator.clone())];
        match &o.target {
            Some(t) => {
                keys.push(("TargetName".into(), t.clone()));
                keys.push(("SessionType".into(), "Normal".into()));
            }
            None => keys.push(("SessionType".into(), "Discovery".into())),
        }
        keys.push((
            "AuthMethod".into(),
            if o.chap.is_some() {
                "CHAP".into()
            } else {
                "None".into()
            },
        ));
        if o.chap.is_some() {
            req.transit = false;
        }
        let r = self.login_step(req, &keys);
        if r.is_none() {
            return false;
        }
        if let Some((user, secret)) = &o.chap {
            let r = self
                .login_step(req, &[("CHAP_A".into(), "5".into())])
                .unwrap();
            let get = |k: &str| {
                r.iter()
                    .find(|(x, _)| x == k)
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            let id: u8 = get("CHAP_I").parse().unwrap();
            let c = rustio_iscsi_proto::text::parse_binary(&get("CHAP_C")).unwrap();
            let resp =
                rustio_iscsi_proto::chap::ChapAlgorithm::Md5.response(id, secret.as_bytes(), &c);
            req.transit = true;
            if self
                .login_step(
                    req,
                    &[
                        ("CHAP_N".into(), user.clone()),
                        (
                            "CHAP_R".into(),
                            rustio_iscsi_proto::text::format_binary(&resp),
                        ),
                    ],
                )
                .is_none()
            {
                return false;
            }
        }
        let op = LoginRequest {
            csg: Stage::Operational,
            nsg: Stage::FullFeature,
            transit: true,
            ..req
        };
        match self.login_step(op, &o.keys) {
            Some(keys) => {
                self.keys = keys;
                for (k, v) in &o.keys {
                    if k == "HeaderDigest" && v.starts_with("CRC32C") {
                        self.digests.header = true;
                    }
                    if k == "DataDigest" && v.starts_with("CRC32C") {
                        self.digests.data = true;
                    }
                }
                if o.clear_ua && o.target.is_some() {
                    self.clear_ua(0);
                }
                true
            }
            None => false,
        }
    }

    fn login_step(
        &mut self,
        req: LoginRequest,
        keys: &[(String, String)],
    ) -> Option<Vec<(String, String)>> {
        self.send(&Pdu::new(Header::LoginRequest(req), kv(keys)));
        let p = self.try_recv()?;
        let Header::LoginResponse(h) = p.header else {
            panic!("expected login response, got {:?}", p.header)
        };
        self.login_status = (h.status_class, h.status_detail);
        if h.status_class != 0 {
            return None;
        }
        self.exp_stat_sn = h.stat_sn.wrapping_add(1);
        self.exp_cmd_sn = h.exp_cmd_sn;
        self.max_cmd_sn = h.max_cmd_sn;
        self.tsih = h.tsih;
        Some(rustio_iscsi_proto::text::parse(&p.data).unwrap())
    }

    /// Sends TEST UNIT READY until it returns GOOD (unit attentions are reported once).
    pub fn clear_ua(&mut self, lun: u64) {
        for _ in 0..4 {
            if self.scsi(lun, &[0, 0, 0, 0, 0, 0], 0, &[], 0).status == 0 {
                return;
            }
        }
    }

    pub fn key(&self, k: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.as_str())
    }

    /// Builds a SCSI Command PDU.
    pub fn command(
        &mut self,
        lun: u64,
        cdb: &[u8],
        read: bool,
        write: bool,
        edtl: u32,
        imm: Vec<u8>,
    ) -> (u32, Pdu) {
        let itt = self.next_itt();
        let mut c = [0u8; 16];
        c[..cdb.len()].copy_from_slice(cdb);
        let h = ScsiCommand {
            immediate: false,
            final_bit: true,
            read,
            write,
            attr: TaskAttribute::Simple,
            lun: u64::from_be_bytes(rustio_scsi::encode_lun(lun).unwrap()),
            itt,
            edtl,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: c,
        };
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        (itt, Pdu::new(Header::ScsiCommand(h), imm))
    }

    /// Runs a command to completion, answering R2Ts with `data`.
    pub fn scsi(
        &mut self,
        lun: u64,
        cdb: &[u8],
        read_len: u32,
        data: &[u8],
        imm_len: usize,
    ) -> ScsiResult {
        let write = !data.is_empty();
        let edtl = if write { data.len() as u32 } else { read_len };
        let (itt, pdu) = self.command(
            lun,
            cdb,
            read_len > 0,
            write,
            edtl,
            data[..imm_len.min(data.len())].to_vec(),
        );
        self.send(&pdu);
        self.collect(itt, data, 8192)
    }

    pub fn collect(&mut self, itt: u32, data: &[u8], seg: usize) -> ScsiResult {
        let mut r = ScsiResult::default();
        loop {
            let p = self.recv();
            match p.header {
                Header::DataIn(h) => {
                    assert_eq!(h.itt, itt);
                    assert_eq!(h.data_sn, r.data_pdus, "DataSN in order");
                    assert_eq!(h.buffer_offset as usize, r.data.len(), "offsets in order");
                    r.data_pdus += 1;
                    r.data.extend_from_slice(&p.data);
                    if h.status_present {
                        r.status = h.status;
                        r.underflow = h.underflow;
                        r.overflow = h.overflow;
                        r.residual = h.residual;
                        return r;
                    }
                }
                Header::ScsiResponse(h) => {
                    assert_eq!(h.itt, itt);
                    r.status = h.status;
                    r.underflow = h.underflow;
                    r.overflow = h.overflow;
                    r.residual = h.residual;
                    assert_eq!(h.exp_data_sn, r.data_pdus);
                    if p.data.len() >= 2 {
                        let n = u16::from_be_bytes([p.data[0], p.data[1]]) as usize;
                        r.sense = p.data[2..2 + n].to_vec();
                    }
                    return r;
                }
                Header::R2t(h) => {
                    assert_eq!(h.itt, itt);
                    assert_eq!(h.r2t_sn, r.r2ts);
                    r.r2ts += 1;
                    let mut off = h.buffer_offset as usize;
                    let end = off + h.desired_len as usize;
                    let mut sn = 0;
                    while off < end {
                        let n = (end - off).min(seg);
                        let d = DataOut {
                            final_bit: off + n == end,
                            lun: h.lun,
                            itt,
                            ttt: h.ttt,
                            exp_stat_sn: self.exp_stat_sn,
                            data_sn: sn,
                            buffer_offset: off as u32,
                        };
                        self.send(&Pdu::new(Header::DataOut(d), data[off..off + n].to_vec()));
                        sn += 1;
                        off += n;
                    }
                }
                other => panic!("unexpected PDU {other:?}"),
            }
        }
    }

    pub fn nop(&mut self, data: &[u8]) -> Pdu {
        let itt = self.next_itt();
        let h = NopOut {
            immediate: true,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(&Pdu::new(Header::NopOut(h), data.to_vec()));
        self.recv()
    }

    /// Sends an immediate task management request (RefCmdSN `ref_cmd_sn`) and returns
    /// its ITT, without waiting for the response.
    pub fn send_tmf(
        &mut self,
        function: TmfFunction,
        lun: u64,
        ref_itt: u32,
        ref_cmd_sn: u32,
    ) -> u32 {
        let itt = self.next_itt();
        let h = TaskMgmtRequest {
            immediate: true,
            function,
            lun: u64::from_be_bytes(rustio_scsi::encode_lun(lun).unwrap()),
            itt,
            ref_itt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            ref_cmd_sn,
            exp_data_sn: 0,
        };
        self.send(&Pdu::new(Header::TaskMgmtRequest(h), vec![]));
        itt
    }

    pub fn tmf(&mut self, function: TmfFunction, lun: u64, ref_itt: u32) -> u8 {
        let itt = self.send_tmf(function, lun, ref_itt, self.cmd_sn);
        loop {
            let p = self.recv();
            if let Header::TaskMgmtResponse(r) = p.header {
                assert_eq!(r.itt, itt);
                return r.response;
            }
        }
    }

    pub fn text(&mut self, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let itt = self.next_itt();
        let h = TextRequest {
            immediate: false,
            final_bit: true,
            cont: false,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.cmd_sn += 1;
        self.send(&Pdu::new(
            Header::TextRequest(h),
            rustio_iscsi_proto::text::encode(pairs),
        ));
        let p = self.recv();
        let Header::TextResponse(r) = p.header else {
            panic!("{:?}", p.header)
        };
        assert!(r.final_bit && !r.cont);
        rustio_iscsi_proto::text::parse(&p.data).unwrap()
    }

    pub fn logout(&mut self, reason: LogoutReason, cid: u16) -> u8 {
        let itt = self.next_itt();
        let h = LogoutRequest {
            immediate: true,
            reason,
            itt,
            cid,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(&Pdu::new(Header::LogoutRequest(h), vec![]));
        let p = self.recv();
        let Header::LogoutResponse(r) = p.header else {
            panic!("{:?}", p.header)
        };
        r.response
    }
}

/// Sends `n` READs of 1 MiB (LBAs 0..32 MiB of 512-byte blocks) and reads none of
/// their data: far more than the sockets' buffers hold, so the target's writes to
/// `stuck` block (a peer that stopped reading).
pub fn stall_with_reads(stuck: &mut Initiator, n: u32) {
    for k in 0..n {
        let (_, pdu) = stuck.command(
            0,
            &read10((k % 16) * 2048, 2048),
            true,
            false,
            1 << 20,
            vec![],
        );
        stuck.send(&pdu);
    }
}

/// A 1 MiB READ at LBA 0 that ends GOOD with all its data within `limit`.
pub fn read_mib_within(i: &mut Initiator, limit: Duration) {
    let t = std::time::Instant::now();
    let r = i.scsi(0, &read10(0, 2048), 1 << 20, &[], 0);
    assert_eq!(r.status, 0);
    assert_eq!(r.data.len(), 1 << 20);
    assert!(t.elapsed() < limit, "1 MiB READ took {:?}", t.elapsed());
}

/// Two sessions of the default initiator on `addr` (ISIDs differ), logged in.
pub fn two_sessions(addr: SocketAddr) -> (Initiator, Initiator) {
    let mut a = Initiator::connect(addr);
    assert!(a.login(&LoginOpts::default()));
    let mut b = Initiator::connect(addr);
    let mut o = LoginOpts::default();
    o.isid[5] = 9;
    assert!(b.login(&o));
    (a, b)
}

/// One session stops reading with 64 READs of 1 MiB outstanding on `lu` (LUN 0, at
/// least 32 MiB); another keeps being served all along, each 1 MiB READ within 2 s.
/// `during` runs while the stuck connection is still open (it must be); then the stuck
/// connection goes after the send timeout (4 s here), counted as a send timeout, and
/// the other session goes on.
pub fn stuck_peer_starves_nobody(lu: Arc<LogicalUnit>, during: impl FnOnce(&ServerHandle)) {
    let (h, addr) = start(|cfg, tpg| {
        cfg.send_timeout = Duration::from_secs(4);
        cfg.queue_depth = 128;
        cfg.workers = 4;
        tpg.luns[0].lu = lu;
    });
    let (mut stuck, mut good) = two_sessions(addr);
    stall_with_reads(&mut stuck, 64);
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        read_mib_within(&mut good, Duration::from_secs(2));
        let r = good.scsi(0, &read10(8, 8), 4096, &[], 0);
        assert_eq!(r.status, 0);
    }
    assert_eq!(
        h.connection_count(),
        2,
        "stuck connection dropped too early"
    );
    during(&h);
    assert!(
        connections_down_to(&h, 1, Duration::from_secs(15)),
        "stuck connection not dropped"
    );
    assert!(h.write_buffer_stats().send_timeouts >= 1);
    let r = good.scsi(0, &read10(0, 2048), 1 << 20, &[], 0);
    assert_eq!(r.status, 0);
    drop(stuck);
    h.shutdown();
}

/// Waits up to `limit` until the server has at most `n` connections; whether it has.
pub fn connections_down_to(h: &ServerHandle, n: usize, limit: Duration) -> bool {
    wait_until(limit, || h.connection_count() <= n)
}

pub fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

pub fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    c
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Polls `f` every 50 ms until it holds or `limit` has passed; its last answer.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
