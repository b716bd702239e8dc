//! Fuzzes the login state machine with CHAP (RFC 7143 6.3, 11.12, 11.13, 12.1.3).
//!
//! The input is a small program (read front to back, missing bytes read as 0, so short
//! inputs are valid) that drives [`LoginMachine::step`] with a sequence of Login
//! Requests built from real key names and fuzzed values:
//!
//! ```text
//! byte 0        configuration: bits 0-2 pick the session's target (see `Setup`),
//!               bit 3 connects through an address that is no portal of any TPG
//! per request   H  header: bits 0-1 NSG, 2-3 CSG, bit 7 T, bit 6 C,
//!                  bit 5 = raw data segment (length byte + bytes) instead of keys
//!               M  modifiers: bit 0 Version-min 1, bit 1 ISID changed, bit 2 TSIH 1,
//!                  bit 3 CID changed, bit 4 send the text in two PDUs (C bit), the split
//!                  point given by the next byte
//!               N  number of keys (N % 16), then per key K (key table index) and V
//!                  (value: V % 8 selects canned good / canned bad / number / raw /
//!                  hex / base64 / long / other forms)
//! ```
//!
//! The harness reads each response the way an initiator would: it remembers every
//! challenge (CHAP_A, CHAP_I, CHAP_C) and can answer it with the right secret (value
//! form 0 of CHAP_R), so the success path is reached, not only the failures.
//!
//! Invariants checked:
//! * no panic;
//! * every response PDU is a Login Response whose data segment is at most 8192 bytes
//!   (RFC 7143 11.12.3 / 11.13: the login data segment limit), failures carry a
//!   non-success status;
//! * a login never reaches `Complete` for a session that requires CHAP unless some
//!   request carried the right CHAP_N and a CHAP_R computed with the right secret over
//!   a challenge the target sent;
//! * an empty secret never authenticates;
//! * in mutual CHAP the target's CHAP_N/CHAP_R answer is the mutual user and
//!   `H(CHAP_I || mutual secret || CHAP_C)` for values the initiator sent.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rustio_iscsi::config::{ChapCredentials, DiscoveryAuth, PortalConfig, TargetConfig, TpgConfig};
use rustio_iscsi::login::{LoginMachine, Step};
use rustio_iscsi::ServerConfig;
use rustio_iscsi_proto::chap::ChapAlgorithm;
use rustio_iscsi_proto::pdu::{Header, LoginRequest, Pdu, Stage};
use rustio_iscsi_proto::text;

/// Largest login data segment either side may send (RFC 7143 11.12.3, 11.13).
const LOGIN_DATA_MAX: usize = 8192;

const INIT: &str = "iqn.2024-01.org.rustio:init";
const T_CHAP: &str = "iqn.2024-01.org.rustio:chap";
const T_MUTUAL: &str = "iqn.2024-01.org.rustio:mutual";
const T_OPEN: &str = "iqn.2024-01.org.rustio:open";
const T_EMPTY: &str = "iqn.2024-01.org.rustio:empty";
const USER: &str = "user";
const SECRET: &str = "secretsecret";
const MUSER: &str = "tuser";
const MSECRET: &str = "tsecret12345";
const DUSER: &str = "discuser";
const DSECRET: &str = "discsecret12";

fn local() -> SocketAddr {
    "127.0.0.1:3260".parse().unwrap()
}

fn creds(u: &str, p: &str, mutual: Option<(&str, &str)>) -> ChapCredentials {
    ChapCredentials {
        userid: u.into(),
        password: p.into(),
        mutual: mutual.map(|(a, b)| (a.to_string(), b.to_string())),
    }
}

fn tpg(auth: bool, chap: Option<ChapCredentials>) -> Arc<TpgConfig> {
    let mut t = TpgConfig::new(1);
    t.portals.push(PortalConfig { addr: local() });
    // Demo mode with TPG-wide credentials: every initiator may try, CHAP decides.
    t.generate_node_acls = true;
    t.authentication = auth;
    t.chap = chap;
    Arc::new(t)
}

/// Four targets (one-way CHAP, mutual CHAP, no authentication, and CHAP required with
/// an empty secret, which must never let anyone in) and discovery CHAP enforced.
fn config() -> Arc<ServerConfig> {
    static CFG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let target = |iqn: &str, t| {
            Arc::new(TargetConfig {
                iqn: iqn.into(),
                tpgs: vec![t],
            })
        };
        Arc::new(ServerConfig {
            targets: vec![
                target(T_CHAP, tpg(true, Some(creds(USER, SECRET, None)))),
                target(
                    T_MUTUAL,
                    tpg(true, Some(creds(USER, SECRET, Some((MUSER, MSECRET))))),
                ),
                target(T_OPEN, tpg(false, None)),
                target(T_EMPTY, tpg(true, Some(creds(USER, "", None)))),
            ],
            discovery_auth: DiscoveryAuth {
                enforce: true,
                chap: Some(creds(DUSER, DSECRET, None)),
            },
            ..ServerConfig::default()
        })
    })
    .clone()
}

/// Which session the program's canned "good" values aim at.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Chap,
    Mutual,
    Open,
    Discovery,
    Empty,
}

impl Setup {
    fn from(b: u8) -> Setup {
        match b % 5 {
            0 => Setup::Chap,
            1 => Setup::Mutual,
            2 => Setup::Open,
            3 => Setup::Discovery,
            _ => Setup::Empty,
        }
    }
    fn target(self) -> &'static str {
        match self {
            Setup::Chap | Setup::Discovery => T_CHAP,
            Setup::Mutual => T_MUTUAL,
            Setup::Open => T_OPEN,
            Setup::Empty => T_EMPTY,
        }
    }
    fn user(self) -> &'static str {
        match self {
            Setup::Discovery => DUSER,
            _ => USER,
        }
    }
    fn secret(self) -> &'static str {
        match self {
            Setup::Discovery => DSECRET,
            Setup::Empty => "",
            _ => SECRET,
        }
    }
}

/// Every non-empty (user, secret) pair the configuration holds, for the "right answer"
/// check (an empty secret proves nothing, so it never counts).
const ALL_CREDS: [(&str, &str); 2] = [(USER, SECRET), (DUSER, DSECRET)];

struct Input<'a> {
    d: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.d.split_first() {
            Some((b, rest)) => {
                self.d = rest;
                *b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.d.len());
        let (a, b) = self.d.split_at(n);
        self.d = b;
        a
    }
    fn is_empty(&self) -> bool {
        self.d.is_empty()
    }
}

/// A challenge the target sent: algorithm, identifier, challenge bytes.
#[derive(Clone)]
struct Challenge {
    alg: ChapAlgorithm,
    id: u8,
    c: Vec<u8>,
}

const KEYS: &[&str] = &[
    "InitiatorName",
    "TargetName",
    "SessionType",
    "AuthMethod",
    "CHAP_A",
    "CHAP_N",
    "CHAP_R",
    "CHAP_I",
    "CHAP_C",
    "MaxRecvDataSegmentLength",
    "HeaderDigest",
    "DataDigest",
    "MaxBurstLength",
    "FirstBurstLength",
    "InitialR2T",
    "ImmediateData",
    "MaxOutstandingR2T",
    "ErrorRecoveryLevel",
    "InitiatorAlias",
    "SendTargets",
    "MaxConnections",
    "DefaultTime2Wait",
    "DefaultTime2Retain",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "OFMarker",
    "TargetAlias",
    "TargetPortalGroupTag",
    "TaskReporting",
    "iSCSIProtocolLevel",
    "X-com.example.key",
    // Index 31 ("many"): a burst of distinct unknown keys, to probe the reply size.
    "*many*",
    // Index 32: a key whose name comes from the input.
    "*raw*",
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "512",
    "8192",
    "65536",
    "262144",
    "16777215",
    "16777216",
    "4294967296",
    "18446744073709551616",
    "-1",
    "0x10",
    "0x",
    "",
    "Yes",
    "No",
    "None",
    "CRC32C,None",
    "None,CRC32C",
    "CRC32C",
    "Irrelevant",
    "Reject",
    "NotUnderstood",
    "1,2",
];

struct Harness {
    setup: Setup,
    challenges: Vec<Challenge>,
    /// Some request carried the right CHAP_N and CHAP_R for a challenge we were sent.
    chap_ok: bool,
    /// Text since the last request without the C bit (mirrors the machine's buffer).
    pending: Vec<u8>,
    seq: u32,
}

/// Splits a text segment into pairs without failing (the check must over-approximate
/// what the machine could have accepted, never under-approximate).
fn lenient_pairs(data: &[u8]) -> Vec<(String, String)> {
    data.split(|&b| b == 0)
        .filter_map(|raw| {
            let s = String::from_utf8_lossy(raw);
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

impl Harness {
    fn last(&self) -> Option<&Challenge> {
        self.challenges.last()
    }

    /// The value of key `k` for value selector `v` (see the module comment).
    fn value(&mut self, inp: &mut Input, k: &str, v: u8) -> String {
        let alt = usize::from(v >> 3);
        match v % 8 {
            0 => self.good(k),
            1 => self.bad(k, alt),
            2 => inp.u32().to_string(),
            3 => {
                let n = usize::from(inp.u8());
                String::from_utf8_lossy(inp.bytes(n)).into_owned()
            }
            4 => {
                let n = usize::from(inp.u8());
                text::format_binary(inp.bytes(n))
            }
            5 => {
                let n = usize::from(inp.u8());
                let b = inp.bytes(n).to_vec();
                format!("0b{}", base64(&b))
            }
            6 => {
                // Long values around the text limits (RFC 7143 6.1: 255 bytes for most
                // values, 8192 for binary ones).
                let n = usize::from(inp.u8()) * 64 + alt;
                if matches!(k, "CHAP_R" | "CHAP_C") {
                    format!("0x{}", "ab".repeat(n / 2))
                } else {
                    "9".repeat(n)
                }
            }
            _ => NUMBERS[alt % NUMBERS.len()].to_string(),
        }
    }

    fn good(&mut self, k: &str) -> String {
        let s = self.setup;
        match k {
            "InitiatorName" => INIT.into(),
            "TargetName" => s.target().into(),
            "SessionType" => if s == Setup::Discovery {
                "Discovery"
            } else {
                "Normal"
            }
            .into(),
            "AuthMethod" => if s == Setup::Open {
                "None"
            } else {
                "CHAP,None"
            }
            .into(),
            "CHAP_A" => "5".into(),
            "CHAP_N" => s.user().into(),
            "CHAP_R" => match self.last() {
                Some(c) => text::format_binary(&c.alg.response(c.id, s.secret().as_bytes(), &c.c)),
                None => "0x00".into(),
            },
            "CHAP_I" => "77".into(),
            "CHAP_C" => text::format_binary(&[9u8; 16]),
            "MaxRecvDataSegmentLength" => "65536".into(),
            "HeaderDigest" | "DataDigest" => "CRC32C,None".into(),
            "MaxBurstLength" => "262144".into(),
            "FirstBurstLength" => "65536".into(),
            "InitialR2T" | "DataPDUInOrder" | "DataSequenceInOrder" => "Yes".into(),
            "ImmediateData" => "No".into(),
            "MaxOutstandingR2T" | "MaxConnections" => "1".into(),
            "ErrorRecoveryLevel" => "0".into(),
            "SendTargets" => "All".into(),
            _ => "1".into(),
        }
    }

    fn bad(&mut self, k: &str, alt: usize) -> String {
        let s = self.setup;
        let pick = |l: &[&str]| l[alt % l.len()].to_string();
        match k {
            "InitiatorName" => pick(&[
                "iqn.2024-01.org.rustio:other",
                "IQN.2024-01.ORG.RUSTIO:INIT",
                "iqn.2026-13.EXAMPLE:t",
                "eui.0123456789abcdef",
                "naa.0123456789abcdef",
                "iqn.",
                "",
                "x",
            ]),
            "TargetName" => pick(&[
                T_CHAP,
                T_MUTUAL,
                T_OPEN,
                T_EMPTY,
                "iqn.2024-01.org.rustio:nope",
                "",
            ]),
            "SessionType" => pick(&["Normal", "Discovery", "Bogus", ""]),
            "AuthMethod" => pick(&[
                "CHAP",
                "None",
                "None,CHAP",
                "SRP,CHAP",
                "KRB5",
                "",
                "CHAP,CHAP",
                "Reject",
            ]),
            "CHAP_A" => pick(&["5", "6", "7", "8", "7,5", "1,2,6", "56", "", "0x5", "5,"]),
            "CHAP_N" => pick(&[USER, MUSER, DUSER, "", "other", "USER"]),
            "CHAP_R" => match self.last().cloned() {
                Some(c) => {
                    let right = c.alg.response(c.id, s.secret().as_bytes(), &c.c);
                    match alt % 8 {
                        0 => text::format_binary(&c.alg.response(c.id, b"wrong", &c.c)),
                        1 => format!("0b{}", base64(&right)),
                        2 => text::format_binary(&right[..right.len() / 2]),
                        3 => text::format_binary(&c.alg.response(
                            c.id.wrapping_add(1),
                            s.secret().as_bytes(),
                            &c.c,
                        )),
                        4 => text::format_binary(&c.alg.response(c.id, b"", &c.c)),
                        5 => format!("0X{}", hex_upper(&right)),
                        6 => {
                            // The right answer under another algorithm.
                            let other = if c.alg == ChapAlgorithm::Md5 {
                                ChapAlgorithm::Sha256
                            } else {
                                ChapAlgorithm::Md5
                            };
                            text::format_binary(&other.response(c.id, s.secret().as_bytes(), &c.c))
                        }
                        _ => "".into(),
                    }
                }
                None => pick(&["0x", "", "0b", "0x0"]),
            },
            "CHAP_I" => match self.last() {
                // Reflecting the target's own identifier.
                Some(c) if alt & 1 == 0 => c.id.to_string(),
                _ => pick(&["0", "255", "256", "-1", "0x4d", ""]),
            },
            "CHAP_C" => match self.last() {
                // A reflected challenge must be refused (RFC 7143 12.1.3).
                Some(c) if alt & 1 == 0 => text::format_binary(&c.c),
                _ => pick(&["0x", "0x00", "0b", "", "0bAAAA"]),
            },
            _ => NUMBERS[alt % NUMBERS.len()].to_string(),
        }
    }

    /// Records challenges and checks the response PDU's invariants.
    fn check_pdu(&mut self, pdu: &Pdu, fail: bool, sent: &[(String, String)]) {
        let Header::LoginResponse(h) = pdu.header else {
            panic!("login answered with {:?}", pdu.header);
        };
        assert!(
            pdu.data.len() <= LOGIN_DATA_MAX,
            "login response data segment of {} bytes (limit {LOGIN_DATA_MAX})",
            pdu.data.len()
        );
        if fail {
            assert_ne!(h.status_class, 0, "failure with a success status");
        }
        let pairs = lenient_pairs(&pdu.data);
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.as_str())
        };
        if let (Some(a), Some(i), Some(c)) = (get("CHAP_A"), get("CHAP_I"), get("CHAP_C")) {
            let alg = text::parse_number(a)
                .and_then(|v| u32::try_from(v).ok())
                .and_then(ChapAlgorithm::from_code)
                .expect("CHAP_A the target sent is a known algorithm");
            let id = text::parse_number(i)
                .and_then(|v| u8::try_from(v).ok())
                .expect("CHAP_I the target sent is a byte");
            let c = text::parse_binary(c).expect("CHAP_C the target sent decodes");
            assert!(c.len() >= 16, "challenge too short");
            self.challenges.push(Challenge { alg, id, c });
        }
        if let (Some(n), Some(r)) = (get("CHAP_N"), get("CHAP_R")) {
            // Mutual CHAP: the target proves it knows the mutual secret over the
            // identifier and challenge the initiator sent.
            assert_eq!(n, MUSER, "target answered mutual CHAP with another name");
            let r = text::parse_binary(r).expect("target CHAP_R decodes");
            let ids: Vec<u8> = sent
                .iter()
                .filter(|(k, _)| k == "CHAP_I")
                .filter_map(|(_, v)| text::parse_number(v).and_then(|v| u8::try_from(v).ok()))
                .collect();
            let cs: Vec<Vec<u8>> = sent
                .iter()
                .filter(|(k, _)| k == "CHAP_C")
                .filter_map(|(_, v)| text::parse_binary(v))
                .collect();
            let ok = self.challenges.iter().any(|ch| {
                ids.iter().any(|&i| {
                    cs.iter()
                        .any(|c| ch.alg.response(i, MSECRET.as_bytes(), c) == r)
                })
            });
            assert!(ok, "mutual CHAP_R is not H(I || mutual secret || C)");
        }
    }

    /// Whether `pairs` (text the machine may have seen) proves the right secret.
    fn note_sent(&mut self, pairs: &[(String, String)]) {
        for (user, secret) in ALL_CREDS {
            let named = pairs.iter().any(|(k, v)| k == "CHAP_N" && v == user);
            if !named {
                continue;
            }
            let right = pairs.iter().filter(|(k, _)| k == "CHAP_R").any(|(_, v)| {
                text::parse_binary(v).is_some_and(|r| {
                    self.challenges
                        .iter()
                        .any(|c| c.alg.response(c.id, secret.as_bytes(), &c.c) == r)
                })
            });
            if right {
                self.chap_ok = true;
            }
        }
    }
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for ch in b.chunks(3) {
        let n = ch
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= ch.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input { d: data };
    let cfg = config();
    let c0 = inp.u8();
    let setup = Setup::from(c0 & 7);
    let addr = if c0 & 8 != 0 {
        "127.0.0.2:3260".parse().unwrap()
    } else {
        local()
    };
    let mut m = LoginMachine::new(cfg.clone(), addr);
    let mut h = Harness {
        setup,
        challenges: Vec::new(),
        chap_ok: false,
        pending: Vec::new(),
        seq: 0,
    };
    let base = LoginRequest {
        transit: true,
        cont: false,
        csg: Stage::Security,
        nsg: Stage::Operational,
        version_max: 0,
        version_min: 0,
        isid: [0x80, 0, 0, 0, 0, 1],
        tsih: 0,
        itt: 7,
        cid: 0,
        cmd_sn: 100,
        exp_stat_sn: 0,
    };
    for _ in 0..80 {
        if inp.is_empty() {
            break;
        }
        let hb = inp.u8();
        let mb = inp.u8();
        let mut req = base;
        req.nsg = Stage::from_bits(hb & 3);
        req.csg = Stage::from_bits((hb >> 2) & 3);
        req.cont = hb & 0x40 != 0;
        req.transit = hb & 0x80 != 0;
        if mb & 1 != 0 {
            req.version_min = 1;
            req.version_max = 1;
        }
        if mb & 2 != 0 {
            req.isid[5] = 2;
        }
        if mb & 4 != 0 {
            req.tsih = 1;
        }
        if mb & 8 != 0 {
            req.cid = 1;
        }
        h.seq = h.seq.wrapping_add(1);
        req.itt = h.seq;
        let body = if hb & 0x20 != 0 {
            let n = usize::from(inp.u8()) * 4;
            inp.bytes(n).to_vec()
        } else {
            let n = inp.u8() % 16;
            let mut pairs: Vec<(String, String)> = Vec::new();
            for _ in 0..n {
                let k = KEYS[usize::from(inp.u8()) % KEYS.len()];
                let v = inp.u8();
                match k {
                    "*many*" => {
                        // Many distinct unknown keys: each is answered NotUnderstood.
                        let count = usize::from(v) * 4;
                        for i in 0..count {
                            pairs.push((format!("X-org.rustio.k{i}"), "1".into()));
                        }
                    }
                    "*raw*" => {
                        let n = usize::from(v % 64);
                        let key = String::from_utf8_lossy(inp.bytes(n)).into_owned();
                        let val = h.value(&mut inp, "", 3);
                        pairs.push((key, val));
                    }
                    _ => {
                        let val = h.value(&mut inp, k, v);
                        pairs.push((k.to_string(), val));
                    }
                }
            }
            text::encode(&pairs)
        };
        // Optionally send the text as two PDUs, the first with the C bit (11.12.2).
        let mut parts: Vec<(LoginRequest, Vec<u8>)> = Vec::new();
        if mb & 0x10 != 0 && !body.is_empty() {
            let at = (usize::from(inp.u8()) * 8).min(body.len());
            let mut first = req;
            first.cont = true;
            first.transit = false;
            parts.push((first, body[..at].to_vec()));
            parts.push((req, body[at..].to_vec()));
        } else {
            parts.push((req, body));
        }
        for (r, d) in parts {
            h.pending.extend_from_slice(&d);
            let mut sent = lenient_pairs(&d);
            if !r.cont {
                // The machine sees the whole text at once; so does the check.
                sent = lenient_pairs(&h.pending);
                h.pending.clear();
            }
            h.note_sent(&sent);
            match m.step(&r, &d) {
                Step::Respond(pdu) => h.check_pdu(&pdu, false, &sent),
                Step::Fail(pdu) => {
                    h.check_pdu(&pdu, true, &sent);
                    return;
                }
                Step::Complete(done) => {
                    let required = match &done.target {
                        Some((_, tpg)) => tpg.auth_required(&done.initiator_name),
                        None => cfg.discovery_auth.enforce,
                    };
                    if required {
                        assert!(
                            h.chap_ok,
                            "login completed for {:?} without the right CHAP response",
                            done.target.as_ref().map(|(t, _)| &t.iqn)
                        );
                    }
                    if let Some((t, _)) = &done.target {
                        assert!(
                            t.iqn != T_EMPTY,
                            "a target whose CHAP secret is empty was entered"
                        );
                    }
                    let fin = m.finish(1, 100, 100);
                    h.check_pdu(&fin, false, &sent);
                    return;
                }
            }
        }
    }
});
