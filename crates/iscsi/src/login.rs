//! The login phase as a pure state machine (RFC 7143 6.3, 11.12, 11.13, 12).
//!
//! [`LoginMachine::step`] takes one Login Request (header and data segment) and answers
//! with the Login Response to send, a failure response to send before closing the
//! connection, or — when both sides agree to enter the full feature phase — a
//! [`LoginDone`] that the server turns into a session (assigning or checking the TSIH)
//! and then completes with [`LoginMachine::finish`]. No sockets are involved, so every
//! rule is unit-tested below. The protocol vocabulary it speaks — status codes, session
//! types, stage-transition rules, text keys, CHAP — is `rustio_iscsi_proto`; what is
//! decided here is the target's policy (which targets, ACLs and credentials apply).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, error, warn};

use rustio_iscsi_proto::chap::{self, ChapAlgorithm};
use rustio_iscsi_proto::login::{stages_valid, status, SessionType};
use rustio_iscsi_proto::pdu::{Header, LoginRequest, LoginResponse, Pdu, Stage};
use rustio_iscsi_proto::text::{self, Answer, Negotiated, NegotiationScope};

use crate::authguard::AuthGuard;
use crate::config::{ChapCredentials, ServerConfig, TargetConfig, TpgConfig};

/// Most Login Request PDUs we accept in one login before giving up.
const MAX_LOGIN_PDUS: u32 = 64;
/// Most bytes of text accumulated across continued (C bit) Login Requests.
const MAX_LOGIN_TEXT: usize = 64 * 1024;
/// Largest data segment of a Login Response: during login the default
/// MaxRecvDataSegmentLength of 8192 applies (RFC 7143 13.12), and we do not split
/// replies over continued (C bit) responses, so a reply that would not fit fails the
/// login instead.
pub const MAX_LOGIN_REPLY: usize = 8192;

/// What the login produced once both sides agreed to enter full feature phase.
#[derive(Debug, Clone)]
pub struct LoginDone {
    /// InitiatorName.
    pub initiator_name: String,
    /// InitiatorAlias, if declared.
    pub initiator_alias: Option<String>,
    /// ISID.
    pub isid: [u8; 6],
    /// TSIH requested (0 = new session).
    pub tsih: u16,
    /// Connection ID.
    pub cid: u16,
    /// Session type.
    pub session_type: SessionType,
    /// Target and TPG (normal sessions).
    pub target: Option<(Arc<TargetConfig>, Arc<TpgConfig>)>,
    /// Operational parameters.
    pub negotiated: Negotiated,
    /// CmdSN of the login requests (the session's initial CmdSN for a new session).
    pub cmd_sn: u32,
    /// StatSN the final Login Response will carry.
    pub stat_sn: u32,
}

/// One step of the login.
#[derive(Debug)]
pub enum Step {
    /// Send this response and wait for the next request.
    Respond(Pdu),
    /// Send this response (a failure status) and close the connection.
    Fail(Pdu),
    /// Negotiation is complete; the caller binds the session and calls
    /// [`LoginMachine::finish`] or [`LoginMachine::fail`].
    Complete(Box<LoginDone>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ChapState {
    /// CHAP not chosen (yet).
    Idle,
    /// AuthMethod=CHAP agreed; waiting for CHAP_A.
    WantAlgorithm,
    /// Challenge sent; waiting for CHAP_N/CHAP_R.
    WantResponse {
        alg: ChapAlgorithm,
        id: u8,
        challenge: Vec<u8>,
    },
}

/// The login state machine of one connection.
#[derive(Debug)]
pub struct LoginMachine {
    cfg: Arc<ServerConfig>,
    local: SocketAddr,
    /// Stage we are in (after an agreed transition, the next one).
    stage: Stage,
    first: Option<LoginRequest>,
    initiator_name: String,
    initiator_alias: Option<String>,
    session_type: SessionType,
    target: Option<(Arc<TargetConfig>, Arc<TpgConfig>)>,
    negotiated: Negotiated,
    auth_required: bool,
    /// Security is settled (AuthMethod=None agreed or CHAP succeeded).
    authenticated: bool,
    auth_method_agreed: bool,
    chap: ChapState,
    creds: Option<ChapCredentials>,
    declared_mrdsl: bool,
    declared_tpgt: bool,
    declared_alias: bool,
    pending_text: Vec<u8>,
    pdus: u32,
    stat_sn: u32,
    /// The request and reply text of the final exchange, completed by `finish`.
    pending_final: Option<(LoginRequest, Vec<u8>)>,
    /// CHAP failure back-off shared by the server, and the peer's address.
    guard: Option<(Arc<AuthGuard>, SocketAddr)>,
    /// Source of CHAP identifiers and challenges ([`chap::random_bytes`]; tests inject a
    /// failing one).
    rng: fn(&mut [u8]) -> Result<(), chap::RngError>,
}

struct Reply {
    pairs: Vec<(String, String)>,
}

impl Reply {
    fn push(&mut self, k: &str, v: impl Into<String>) {
        self.pairs.push((k.to_string(), v.into()));
    }
}

type StepResult<T> = std::result::Result<T, (u8, u8)>;

impl LoginMachine {
    /// A machine for a connection accepted on local address `local` under `cfg`.
    pub fn new(cfg: Arc<ServerConfig>, local: SocketAddr) -> LoginMachine {
        LoginMachine {
            cfg,
            local,
            stage: Stage::Security,
            first: None,
            initiator_name: String::new(),
            initiator_alias: None,
            session_type: SessionType::Normal,
            target: None,
            negotiated: Negotiated::default(),
            auth_required: false,
            authenticated: false,
            auth_method_agreed: false,
            chap: ChapState::Idle,
            creds: None,
            declared_mrdsl: false,
            declared_tpgt: false,
            declared_alias: false,
            pending_text: Vec::new(),
            pdus: 0,
            stat_sn: 0,
            pending_final: None,
            guard: None,
            rng: chap::random_bytes,
        }
    }

    /// Subjects CHAP attempts to `guard`'s back-off and names `peer` in the logs.
    pub fn with_auth_guard(mut self, guard: Arc<AuthGuard>, peer: SocketAddr) -> LoginMachine {
        self.guard = Some((guard, peer));
        self
    }

    fn peer(&self) -> Option<SocketAddr> {
        self.guard.as_ref().map(|(_, p)| *p)
    }

    /// The negotiated parameters so far.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    fn response(
        &mut self,
        req: &LoginRequest,
        transit: bool,
        nsg: Stage,
        status: (u8, u8),
        tsih: u16,
        data: Vec<u8>,
    ) -> Pdu {
        let first = self.first.unwrap_or(*req);
        let stat_sn = self.stat_sn;
        if status == status::SUCCESS {
            self.stat_sn = self.stat_sn.wrapping_add(1);
        }
        let cmd_sn = req.cmd_sn;
        Pdu::new(
            Header::LoginResponse(LoginResponse {
                transit,
                cont: false,
                csg: req.csg,
                nsg: if transit { nsg } else { Stage::Security },
                version_max: 0,
                version_active: 0,
                isid: first.isid,
                tsih,
                itt: req.itt,
                stat_sn,
                exp_cmd_sn: cmd_sn,
                max_cmd_sn: cmd_sn,
                status_class: status.0,
                status_detail: status.1,
            }),
            data,
        )
    }

    fn failure_pdu(&mut self, req: &LoginRequest, status: (u8, u8)) -> Pdu {
        let tsih = self.first.map(|f| f.tsih).unwrap_or(req.tsih);
        self.response(req, false, Stage::Security, status, tsih, Vec::new())
    }

    fn failure(&mut self, req: &LoginRequest, status: (u8, u8)) -> Step {
        Step::Fail(self.failure_pdu(req, status))
    }

    fn final_request(&mut self) -> (LoginRequest, Vec<u8>) {
        match self.pending_final.take() {
            Some(x) => x,
            None => {
                let req = self.first.unwrap_or(LoginRequest {
                    transit: true,
                    cont: false,
                    csg: Stage::Operational,
                    nsg: Stage::FullFeature,
                    version_max: 0,
                    version_min: 0,
                    isid: [0; 6],
                    tsih: 0,
                    itt: 0,
                    cid: 0,
                    cmd_sn: 0,
                    exp_stat_sn: 0,
                });
                (req, Vec::new())
            }
        }
    }

    /// Processes one Login Request.
    pub fn step(&mut self, req: &LoginRequest, data: &[u8]) -> Step {
        self.pdus += 1;
        if self.pdus > MAX_LOGIN_PDUS {
            return self.failure(req, status::INITIATOR_ERROR);
        }
        match self.step_inner(req, data) {
            Ok(step) => step,
            Err(st) => self.failure(req, st),
        }
    }

    /// One Login Request, in the order RFC 7143 11.12 and 6.2 prescribe: the request's
    /// own checks, continued text, the stage, the keys, our declarations, the reply.
    fn step_inner(&mut self, req: &LoginRequest, data: &[u8]) -> StepResult<Step> {
        self.check_request(req)?;
        if let Some(step) = self.continued_text(req, data)? {
            return Ok(step);
        }
        let text = std::mem::take(&mut self.pending_text);
        let pairs = text::parse(&text).map_err(|_| status::INITIATOR_ERROR)?;
        self.enter_stage(req, &pairs)?;

        let mut reply = Reply { pairs: Vec::new() };
        let saw_operational = self.answer_keys(req, &pairs, &mut reply)?;
        if req.csg == Stage::Security {
            self.security(&pairs, &mut reply)?;
        }
        let transit = self.declare(req, saw_operational, &mut reply);
        let entering_ffp = transit && req.nsg == Stage::FullFeature;
        if transit {
            self.stage = req.nsg;
        }
        let data = self.encode_reply(&reply)?;
        if entering_ffp {
            return Ok(self.complete(req, data));
        }
        let tsih = req.tsih;
        Ok(Step::Respond(self.response(
            req,
            transit,
            req.nsg,
            status::SUCCESS,
            tsih,
            data,
        )))
    }

    /// Header checks: version (RFC 7143 11.12.4: only 0x00 exists) and the fields that
    /// stay the same throughout the login (11.12.5-8). The first request sets StatSN.
    fn check_request(&mut self, req: &LoginRequest) -> StepResult<()> {
        if req.version_min > 0 {
            return Err(status::UNSUPPORTED_VERSION);
        }
        if let Some(first) = &self.first {
            if first.isid != req.isid || first.tsih != req.tsih || first.cid != req.cid {
                return Err(status::INITIATOR_ERROR);
            }
        } else {
            self.stat_sn = req.exp_stat_sn;
        }
        Ok(())
    }

    /// Continued text (C bit): collects `data`, and while more is to come answers with
    /// an empty response (RFC 7143 11.12.2). `None` once the text is complete.
    fn continued_text(&mut self, req: &LoginRequest, data: &[u8]) -> StepResult<Option<Step>> {
        if self.pending_text.len() + data.len() > MAX_LOGIN_TEXT {
            return Err(status::INITIATOR_ERROR);
        }
        self.pending_text.extend_from_slice(data);
        if !req.cont {
            return Ok(None);
        }
        if req.transit {
            // T and C both set is a protocol error (11.12.2).
            return Err(status::INITIATOR_ERROR);
        }
        let tsih = req.tsih;
        Ok(Some(Step::Respond(self.response(
            req,
            false,
            Stage::Security,
            status::SUCCESS,
            tsih,
            Vec::new(),
        ))))
    }

    /// Stage rules (RFC 7143 6.3): a valid transition, never backwards; the first
    /// request's checks; skipping security only when no authentication is required.
    fn enter_stage(&mut self, req: &LoginRequest, pairs: &[(String, String)]) -> StepResult<()> {
        if !stages_valid(req.csg, req.nsg, req.transit) {
            return Err(status::INITIATOR_ERROR);
        }
        if req.csg < self.stage {
            // Going back to an earlier stage is not allowed.
            return Err(status::INITIATOR_ERROR);
        }
        if self.first.is_none() {
            self.first = Some(*req);
            self.leading_checks(pairs)?;
        }
        if req.csg == Stage::Operational && self.stage == Stage::Security {
            // Skipping security: only allowed when no authentication is required.
            if self.auth_required && !self.authenticated {
                return Err(status::AUTH_FAILURE);
            }
            self.authenticated = true;
            self.stage = Stage::Operational;
        }
        Ok(())
    }

    /// Answers every key but the security ones (which [`Self::security`] handles).
    /// Returns whether an operational key was among them.
    fn answer_keys(
        &mut self,
        req: &LoginRequest,
        pairs: &[(String, String)],
        reply: &mut Reply,
    ) -> StepResult<bool> {
        let scope = NegotiationScope {
            discovery: self.session_type == SessionType::Discovery,
            leading: self.first.map(|f| f.tsih == 0).unwrap_or(true),
        };
        let mut saw_operational = false;
        for (k, v) in pairs {
            match k.as_str() {
                "InitiatorName" | "TargetName" | "SessionType" => {
                    // Only meaningful in the first request; later repeats must agree.
                    if k == "InitiatorName" && !v.eq_ignore_ascii_case(&self.initiator_name) {
                        return Err(status::INITIATOR_ERROR);
                    }
                }
                "InitiatorAlias" => self.initiator_alias = Some(v.clone()),
                "AuthMethod" | "CHAP_A" | "CHAP_I" | "CHAP_C" | "CHAP_N" | "CHAP_R" => {
                    if req.csg != Stage::Security {
                        return Err(status::INITIATOR_ERROR);
                    }
                }
                "SendTargets" => {
                    // Full feature phase only (RFC 7143 13.3).
                    reply.push(k, "Reject");
                }
                _ => {
                    saw_operational = true;
                    let offer = self.offer();
                    let answer =
                        text::negotiate_operational(k, v, &offer, scope, &mut self.negotiated);
                    if let Answer::Reply(a) = answer {
                        reply.push(k, a);
                    }
                }
            }
        }
        Ok(saw_operational)
    }

    /// Adds the keys the target declares (TargetPortalGroupTag, MaxRecvDataSegmentLength,
    /// TargetAlias), each once per connection, and decides whether this response
    /// transits to the next stage.
    fn declare(&mut self, req: &LoginRequest, saw_operational: bool, reply: &mut Reply) -> bool {
        let normal = self.session_type == SessionType::Normal;
        if !self.declared_tpgt && normal {
            // RFC 7143 13.9: returned in the first Login Response of every connection.
            if let Some((_, tpg)) = &self.target {
                reply.push("TargetPortalGroupTag", tpg.tag.to_string());
            }
            self.declared_tpgt = true;
        }
        let stage_done = match req.csg {
            Stage::Security => self.authenticated,
            _ => true,
        };
        // An unacceptable MaxRecvDataSegmentLength was just answered with Reject: our
        // own declaration of the key waits for the next response, so that the key
        // appears once per response (RFC 7143 6.2), and we do not leave the stage yet.
        let mrdsl_rejected = reply
            .pairs
            .iter()
            .any(|(k, _)| k == "MaxRecvDataSegmentLength");
        let transit = req.transit && stage_done && !mrdsl_rejected;
        let entering_ffp = transit && req.nsg == Stage::FullFeature;
        let operational = req.csg == Stage::Operational || entering_ffp;
        if (saw_operational || operational) && !self.declared_mrdsl && !mrdsl_rejected {
            // Declarative (RFC 7143 13.12): tell the initiator what we accept.
            reply.push(
                "MaxRecvDataSegmentLength",
                self.offer().max_recv_data_segment_length.to_string(),
            );
            self.declared_mrdsl = true;
        }
        if operational && !self.declared_alias && normal {
            if let Some(alias) = self
                .target
                .as_ref()
                .and_then(|(_, t)| t.params.target_alias.clone())
            {
                reply.push("TargetAlias", alias);
            }
            self.declared_alias = true;
        }
        transit
    }

    /// Encodes the reply; one that would not fit a single Login Response fails the
    /// login (see [`MAX_LOGIN_REPLY`]).
    fn encode_reply(&self, reply: &Reply) -> StepResult<Vec<u8>> {
        let data = text::encode(&reply.pairs);
        if data.len() > MAX_LOGIN_REPLY {
            warn!(
                initiator = ?self.initiator_name,
                peer = ?self.peer(),
                bytes = data.len(),
                "login failed: the reply would exceed the 8192-byte login data limit"
            );
            return Err(status::INITIATOR_ERROR);
        }
        Ok(data)
    }

    /// Both sides agreed to enter full feature phase: hands the result to the caller and
    /// keeps the final request and reply text for [`LoginMachine::finish`].
    fn complete(&mut self, req: &LoginRequest, data: Vec<u8>) -> Step {
        if self.declared_mrdsl {
            self.negotiated.target_mrdsl = self.offer().max_recv_data_segment_length;
        }
        self.negotiated.finish();
        let first = self.first.unwrap_or(*req);
        let done = LoginDone {
            initiator_name: self.initiator_name.clone(),
            initiator_alias: self.initiator_alias.clone(),
            isid: first.isid,
            tsih: first.tsih,
            cid: first.cid,
            session_type: self.session_type,
            target: self.target.clone(),
            negotiated: self.negotiated,
            cmd_sn: req.cmd_sn,
            stat_sn: self.stat_sn,
        };
        self.pending_final = Some((*req, data));
        Step::Complete(Box::new(done))
    }

    fn offer(&self) -> text::TargetOffer {
        match &self.target {
            Some((_, tpg)) => tpg.params.offer.clone(),
            None => self
                .cfg
                .targets
                .iter()
                .flat_map(|t| t.tpgs.iter())
                .find(|t| t.reachable_via(self.local))
                .map(|t| t.params.offer.clone())
                .unwrap_or_default(),
        }
    }

    /// Checks of the first Login Request: names, session type, target, ACL.
    fn leading_checks(&mut self, pairs: &[(String, String)]) -> StepResult<()> {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.as_str())
        };
        let initiator = get("InitiatorName").ok_or(status::MISSING_PARAMETER)?;
        if !crate::config::valid_iscsi_name(initiator) {
            return Err(status::INITIATOR_ERROR);
        }
        self.initiator_name = initiator.to_string();
        self.session_type =
            SessionType::from_key(get("SessionType")).ok_or(status::SESSION_TYPE_NOT_SUPPORTED)?;
        match self.session_type {
            SessionType::Discovery => {
                if self.first.map(|f| f.tsih != 0).unwrap_or(false) {
                    // Discovery sessions have one connection.
                    return Err(status::CANT_INCLUDE_IN_SESSION);
                }
                self.auth_required = self.cfg.discovery_auth.enforce;
                self.creds = self.cfg.discovery_auth.chap.clone();
            }
            SessionType::Normal => {
                let name = get("TargetName").ok_or(status::MISSING_PARAMETER)?;
                let target = self.cfg.target(name).ok_or(status::NOT_FOUND)?.clone();
                let tpg = target
                    .tpgs
                    .iter()
                    .find(|t| t.reachable_via(self.local))
                    .ok_or(status::NOT_FOUND)?
                    .clone();
                if !tpg.enabled {
                    return Err(status::SERVICE_UNAVAILABLE);
                }
                if !tpg.allows(initiator) {
                    return Err(status::AUTHORIZATION_FAILURE);
                }
                self.auth_required = tpg.auth_required(initiator);
                self.creds = tpg.credentials(initiator).cloned();
                self.target = Some((target, tpg));
            }
        }
        Ok(())
    }

    fn chap_algorithms(&self) -> Vec<ChapAlgorithm> {
        match &self.target {
            Some((_, tpg)) => tpg.params.chap_algorithms.clone(),
            None => crate::config::TpgParams::default().chap_algorithms,
        }
    }

    /// Security stage keys (RFC 7143 12).
    fn security(&mut self, pairs: &[(String, String)], reply: &mut Reply) -> StepResult<()> {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.as_str())
        };
        self.auth_method(get("AuthMethod"), reply)?;
        if let Some(a) = get("CHAP_A") {
            self.chap_challenge(a, reply)
        } else if let Some(n) = get("CHAP_N") {
            let mutual = (get("CHAP_I"), get("CHAP_C"));
            self.chap_response(n, get("CHAP_R"), mutual, reply)
        } else if get("CHAP_R").is_some() || get("CHAP_I").is_some() || get("CHAP_C").is_some() {
            Err(status::AUTH_FAILURE)
        } else {
            Ok(())
        }
    }

    /// AuthMethod (RFC 7143 12.1): the first method in the initiator's list that we
    /// accept, once; absent, it defaults to None where no authentication is required.
    fn auth_method(&mut self, methods: Option<&str>, reply: &mut Reply) -> StepResult<()> {
        let Some(methods) = methods else {
            if !self.auth_method_agreed {
                if self.auth_required {
                    // Security stage without AuthMethod while CHAP is required.
                    return Err(status::AUTH_FAILURE);
                }
                // AuthMethod defaults to None (RFC 7143 12.1).
                self.authenticated = true;
            }
            return Ok(());
        };
        if self.auth_method_agreed {
            return Err(status::INITIATOR_ERROR);
        }
        // Never offer CHAP with a missing or empty secret (validation refuses such
        // configurations; this is the second line of defence).
        let chap_possible = self
            .creds
            .as_ref()
            .is_some_and(|c| !c.userid.is_empty() && !c.password.is_empty());
        // The first method in the initiator's list that we accept (RFC 7143 6.2).
        let choice = methods.split(',').find(|m| match *m {
            "None" => !self.auth_required,
            "CHAP" => chap_possible,
            _ => false,
        });
        match choice {
            Some("None") => {
                self.authenticated = true;
                reply.push("AuthMethod", "None");
            }
            Some(_) => {
                self.chap = ChapState::WantAlgorithm;
                reply.push("AuthMethod", "CHAP");
            }
            None => return Err(status::AUTH_FAILURE),
        }
        self.auth_method_agreed = true;
        Ok(())
    }

    /// CHAP_A (RFC 7143 12.1.3): picks an algorithm and sends CHAP_I and CHAP_C.
    fn chap_challenge(&mut self, offered: &str, reply: &mut Reply) -> StepResult<()> {
        if self.chap != ChapState::WantAlgorithm {
            return Err(status::INITIATOR_ERROR);
        }
        let Some(alg) = chap::choose_algorithm(offered, &self.chap_algorithms()) else {
            // RFC 7143 12.1.3: no acceptable algorithm; authentication cannot succeed.
            return Err(status::AUTH_FAILURE);
        };
        let mut idb = [0u8; 1];
        let mut challenge = vec![0u8; alg.digest_len().max(16)];
        // Fail closed: no challenge without the OS generator (RFC 7143 11.13.5
        // class 3 "target error").
        if let Err(e) = (self.rng)(&mut idb).and_then(|()| (self.rng)(&mut challenge)) {
            error!(
                initiator = ?self.initiator_name,
                peer = ?self.peer(),
                error = %e,
                "login failed: no CHAP challenge without the OS random generator"
            );
            return Err(status::TARGET_ERROR);
        }
        reply.push("CHAP_A", alg.code().to_string());
        reply.push("CHAP_I", idb[0].to_string());
        reply.push("CHAP_C", text::format_binary(&challenge));
        self.chap = ChapState::WantResponse {
            alg,
            id: idb[0],
            challenge,
        };
        Ok(())
    }

    /// CHAP_N and CHAP_R (RFC 7143 12.1.3): checks the initiator's response, then
    /// answers its own challenge (`mutual`: CHAP_I, CHAP_C) if it sent one.
    fn chap_response(
        &mut self,
        user: &str,
        response: Option<&str>,
        mutual: (Option<&str>, Option<&str>),
        reply: &mut Reply,
    ) -> StepResult<()> {
        let ChapState::WantResponse { alg, id, challenge } = self.chap.clone() else {
            return Err(status::INITIATOR_ERROR);
        };
        self.chap_guard_check(user)?;
        let creds = match self.verify_response(user, response, alg, id, &challenge) {
            Ok(c) => c,
            Err(reason) => {
                self.chap_failed(user, reason);
                return Err(status::AUTH_FAILURE);
            }
        };
        match mutual {
            (None, None) => {}
            (Some(i), Some(c)) => mutual_response(&creds, alg, &challenge, i, c, reply)?,
            _ => return Err(status::AUTH_FAILURE),
        }
        self.chap = ChapState::Idle;
        self.authenticated = true;
        if let Some((g, peer)) = &self.guard {
            g.success(&self.initiator_name, peer.ip());
        }
        Ok(())
    }

    /// Refuses a CHAP attempt without checking it while its source address, or its
    /// initiator name from that address, is backing off after failures (never because
    /// of failures from other addresses: see [`crate::authguard`]).
    fn chap_guard_check(&self, chap_user: &str) -> StepResult<()> {
        let Some((g, peer)) = &self.guard else {
            return Ok(());
        };
        match g.check(&self.initiator_name, peer.ip(), Instant::now()) {
            Ok(()) => Ok(()),
            Err(refusal) => {
                let (key, left) = (refusal.scope(), refusal.delay());
                debug!(
                    initiator = ?self.initiator_name,
                    chap_user = ?chap_user,
                    %peer,
                    backing_off = key,
                    retry_after_ms = left.as_millis() as u64,
                    "CHAP attempt refused during back-off"
                );
                Err(status::AUTH_FAILURE)
            }
        }
    }

    /// Checks CHAP_N and CHAP_R against the credentials; `Err` says why not (for the
    /// log only: the initiator always gets the same authentication failure).
    fn verify_response(
        &self,
        chap_user: &str,
        response: Option<&str>,
        alg: ChapAlgorithm,
        id: u8,
        challenge: &[u8],
    ) -> Result<ChapCredentials, &'static str> {
        let creds = self.creds.clone().ok_or("no CHAP credentials")?;
        if creds.userid.is_empty() || creds.password.is_empty() {
            // Never authenticate against an empty secret.
            return Err("no CHAP secret configured");
        }
        let r = response.ok_or("no CHAP_R")?;
        let r = text::parse_binary(r).ok_or("malformed CHAP_R")?;
        let expected = alg.response(id, creds.password.as_bytes(), challenge);
        // Both comparisons always run, so timing tells nothing about which one failed.
        let user_ok = chap::constant_time_eq(chap_user.as_bytes(), creds.userid.as_bytes());
        let response_ok = chap::constant_time_eq(&r, &expected);
        if !user_ok {
            return Err("unknown CHAP user");
        }
        if !response_ok {
            return Err("wrong CHAP response");
        }
        Ok(creds)
    }

    /// Logs a failed CHAP attempt (never the secret or the response) and feeds the
    /// back-off.
    fn chap_failed(&self, chap_user: &str, reason: &str) {
        warn!(
            initiator = ?self.initiator_name,
            chap_user = ?chap_user,
            peer = ?self.peer(),
            reason,
            "CHAP authentication failed"
        );
        if let Some((g, peer)) = &self.guard {
            if let Some(r) = g.failure(&self.initiator_name, peer.ip(), Instant::now()) {
                warn!(
                    initiator = ?self.initiator_name,
                    %peer,
                    refused = r.scope(),
                    refuse_for_s = r.delay().as_secs(),
                    "CHAP back-off: further CHAP logins are refused unchecked for a while"
                );
            }
        }
    }

    /// Builds the final Login Response once the server has bound the session.
    pub fn finish(&mut self, tsih: u16, exp_cmd_sn: u32, max_cmd_sn: u32) -> Pdu {
        let (req, data) = self.final_request();
        let mut pdu = self.response(&req, true, Stage::FullFeature, status::SUCCESS, tsih, data);
        if let Header::LoginResponse(h) = &mut pdu.header {
            h.exp_cmd_sn = exp_cmd_sn;
            h.max_cmd_sn = max_cmd_sn;
        }
        pdu
    }

    /// Builds a failure response after [`Step::Complete`] (e.g. session does not exist).
    pub fn fail(&mut self, st: (u8, u8)) -> Pdu {
        let (req, _) = self.final_request();
        self.failure_pdu(&req, st)
    }
}

/// Mutual CHAP: answers the initiator's challenge (identifier `i`, challenge `c`) with
/// our mutual credentials. A reflected (our own) or empty challenge is refused (RFC 7143
/// 12.1.3), as is a missing mutual secret.
fn mutual_response(
    creds: &ChapCredentials,
    alg: ChapAlgorithm,
    our_challenge: &[u8],
    i: &str,
    c: &str,
    reply: &mut Reply,
) -> StepResult<()> {
    let (mu, mp) = creds
        .mutual
        .clone()
        .filter(|(u, p)| !u.is_empty() && !p.is_empty())
        .ok_or(status::AUTH_FAILURE)?;
    let i = text::parse_number(i)
        .and_then(|v| u8::try_from(v).ok())
        .ok_or(status::AUTH_FAILURE)?;
    let c = text::parse_binary(c).ok_or(status::AUTH_FAILURE)?;
    if c == our_challenge || c.is_empty() {
        return Err(status::AUTH_FAILURE);
    }
    reply.push("CHAP_N", mu);
    reply.push(
        "CHAP_R",
        text::format_binary(&alg.response(i, mp.as_bytes(), &c)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AclConfig, ChapCredentials, PortalConfig, TpgConfig};
    use rustio_iscsi_proto::pdu::LoginResponse;
    use rustio_iscsi_proto::text;

    const TARGET: &str = "iqn.2024-01.org.rustio:t";
    const INIT: &str = "iqn.2024-01.org.rustio:i";

    fn local() -> SocketAddr {
        "127.0.0.1:3260".parse().unwrap()
    }

    fn cfg(edit: impl FnOnce(&mut TpgConfig)) -> Arc<ServerConfig> {
        let mut tpg = TpgConfig::new(1);
        tpg.portals.push(PortalConfig { addr: local() });
        tpg.generate_node_acls = true;
        edit(&mut tpg);
        Arc::new(ServerConfig {
            targets: vec![Arc::new(TargetConfig {
                iqn: TARGET.into(),
                tpgs: vec![Arc::new(tpg)],
            })],
            ..ServerConfig::default()
        })
    }

    fn req(csg: Stage, nsg: Stage, transit: bool) -> LoginRequest {
        LoginRequest {
            transit,
            cont: false,
            csg,
            nsg,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0, 0, 0, 0, 1],
            tsih: 0,
            itt: 7,
            cid: 0,
            cmd_sn: 100,
            exp_stat_sn: 0,
        }
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<u8> {
        text::encode(pairs)
    }

    fn resp(step: &Step) -> (LoginResponse, Vec<(String, String)>) {
        let pdu = match step {
            Step::Respond(p) | Step::Fail(p) => p,
            Step::Complete(_) => panic!("complete"),
        };
        let Header::LoginResponse(h) = pdu.header else {
            panic!("not a login response")
        };
        (h, text::parse(&pdu.data).unwrap())
    }

    fn status_of(step: &Step) -> (u8, u8) {
        let (h, _) = resp(step);
        (h.status_class, h.status_detail)
    }

    fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
        p.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
    }

    fn first_keys() -> Vec<(&'static str, &'static str)> {
        vec![
            ("InitiatorName", INIT),
            ("TargetName", TARGET),
            ("SessionType", "Normal"),
        ]
    }

    #[test]
    fn plain_login_to_full_feature() {
        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let mut keys = first_keys();
        keys.push(("AuthMethod", "None"));
        let s = m.step(&req(Stage::Security, Stage::Operational, true), &kv(&keys));
        let (h, p) = resp(&s);
        assert!(matches!(s, Step::Respond(_)));
        assert_eq!((h.status_class, h.status_detail), (0, 0));
        assert!(h.transit);
        assert_eq!(h.nsg, Stage::Operational);
        assert_eq!(h.itt, 7);
        assert_eq!(h.exp_cmd_sn, 100);
        assert_eq!(get(&p, "AuthMethod"), Some("None"));
        assert_eq!(get(&p, "TargetPortalGroupTag"), Some("1"));
        let ops = kv(&[
            ("HeaderDigest", "None"),
            ("DataDigest", "CRC32C,None"),
            ("MaxRecvDataSegmentLength", "65536"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxOutstandingR2T", "4"),
            ("ErrorRecoveryLevel", "0"),
            ("X-com.example.key", "1"),
        ]);
        let s = m.step(&req(Stage::Operational, Stage::FullFeature, true), &ops);
        let Step::Complete(done) = s else {
            panic!("{s:?}")
        };
        assert_eq!(done.initiator_name, INIT);
        assert_eq!(done.session_type, SessionType::Normal);
        let n = done.negotiated;
        assert!(!n.header_digest && n.data_digest);
        assert_eq!(n.initiator_mrdsl, 65536);
        assert_eq!(n.target_mrdsl, 262_144);
        assert_eq!(n.max_burst_length, 262_144);
        assert!(n.initial_r2t, "OR with our Yes");
        assert_eq!(n.max_outstanding_r2t, 1, "min with our 1");
        let fin = m.finish(5, 100, 227);
        let Header::LoginResponse(h) = fin.header else {
            panic!()
        };
        assert!(h.transit);
        assert_eq!((h.csg, h.nsg), (Stage::Operational, Stage::FullFeature));
        assert_eq!(h.tsih, 5);
        assert_eq!((h.exp_cmd_sn, h.max_cmd_sn), (100, 227));
        // StatSN: 0 for the first response, 1 for the second.
        assert_eq!(h.stat_sn, 1);
        let p = text::parse(&fin.data).unwrap();
        assert_eq!(get(&p, "X-com.example.key"), Some("NotUnderstood"));
        assert_eq!(get(&p, "MaxRecvDataSegmentLength"), Some("262144"));
        assert_eq!(get(&p, "InitialR2T"), Some("Yes"));
    }

    #[test]
    fn login_errors() {
        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let s = m.step(
            &req(Stage::Operational, Stage::FullFeature, true),
            &kv(&[("TargetName", TARGET)]),
        );
        assert!(matches!(s, Step::Fail(_)));
        assert_eq!(status_of(&s), status::MISSING_PARAMETER);

        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let s = m.step(
            &req(Stage::Operational, Stage::FullFeature, true),
            &kv(&[("InitiatorName", INIT)]),
        );
        assert_eq!(status_of(&s), status::MISSING_PARAMETER);

        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let s = m.step(
            &req(Stage::Operational, Stage::FullFeature, true),
            &kv(&[
                ("InitiatorName", INIT),
                ("TargetName", "iqn.2024-01.org.rustio:nope"),
            ]),
        );
        assert_eq!(status_of(&s), status::NOT_FOUND);

        // Reached through a portal the TPG does not have.
        let mut m = LoginMachine::new(cfg(|_| {}), "127.0.0.1:3999".parse().unwrap());
        let s = m.step(
            &req(Stage::Operational, Stage::FullFeature, true),
            &kv(&first_keys()),
        );
        assert_eq!(status_of(&s), status::NOT_FOUND);

        let mut m = LoginMachine::new(cfg(|t| t.generate_node_acls = false), local());
        let s = m.step(
            &req(Stage::Operational, Stage::FullFeature, true),
            &kv(&first_keys()),
        );
        assert_eq!(status_of(&s), status::AUTHORIZATION_FAILURE);

        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let mut r = req(Stage::Operational, Stage::FullFeature, true);
        r.version_min = 2;
        r.version_max = 2;
        let s = m.step(&r, &kv(&first_keys()));
        assert_eq!(status_of(&s), status::UNSUPPORTED_VERSION);

        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let s = m.step(
            &req(Stage::Operational, Stage::FullFeature, true),
            b"InitiatorName=iqn.a:b\0InitiatorName=iqn.a:b\0",
        );
        assert_eq!(status_of(&s), status::INITIATOR_ERROR);

        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let mut keys = first_keys();
        keys[2] = ("SessionType", "Bogus");
        let s = m.step(
            &req(Stage::Operational, Stage::FullFeature, true),
            &kv(&keys),
        );
        assert_eq!(status_of(&s), status::SESSION_TYPE_NOT_SUPPORTED);

        // NSG not after CSG.
        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let s = m.step(
            &req(Stage::Operational, Stage::Security, true),
            &kv(&first_keys()),
        );
        assert_eq!(status_of(&s), status::INITIATOR_ERROR);
    }

    #[test]
    fn discovery_needs_no_target_name() {
        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let s = m.step(
            &req(Stage::Operational, Stage::FullFeature, true),
            &kv(&[
                ("InitiatorName", INIT),
                ("SessionType", "Discovery"),
                ("MaxBurstLength", "4096"),
            ]),
        );
        let Step::Complete(done) = s else { panic!() };
        assert_eq!(done.session_type, SessionType::Discovery);
        assert!(done.target.is_none());
        let fin = m.finish(9, 100, 100);
        let p = text::parse(&fin.data).unwrap();
        assert_eq!(get(&p, "MaxBurstLength"), Some("Irrelevant"));
        assert_eq!(get(&p, "TargetPortalGroupTag"), None);
    }

    fn chap_cfg(mutual: bool) -> Arc<ServerConfig> {
        acl_chap_cfg(true, None, mutual)
    }

    /// A TPG (authentication `tpg_auth`) with one ACL for INIT holding CHAP credentials
    /// and the ACL attribute `authentication` = `acl_auth`.
    fn acl_chap_cfg(tpg_auth: bool, acl_auth: Option<bool>, mutual: bool) -> Arc<ServerConfig> {
        cfg(|t| {
            t.authentication = tpg_auth;
            t.generate_node_acls = false;
            t.acls.push(AclConfig {
                initiator: INIT.into(),
                chap: Some(ChapCredentials {
                    userid: "user".into(),
                    password: "secretsecret".into(),
                    mutual: mutual.then(|| ("tuser".into(), "tsecret12345".into())),
                }),
                authentication: acl_auth,
                mapped_luns: vec![],
                tmr_warm_reset: false,
                tmr_cold_reset: false,
            });
        })
    }

    /// Runs the CHAP exchange up to the challenge; returns (machine, id, challenge).
    fn chap_start(c: Arc<ServerConfig>, algs: &str) -> (LoginMachine, u8, Vec<u8>, String) {
        let mut m = LoginMachine::new(c, local());
        let mut keys = first_keys();
        keys.push(("AuthMethod", "CHAP,None"));
        let s = m.step(&req(Stage::Security, Stage::Operational, true), &kv(&keys));
        let (h, p) = resp(&s);
        assert_eq!(get(&p, "AuthMethod"), Some("CHAP"));
        assert!(!h.transit, "cannot leave security before CHAP");
        let s = m.step(
            &req(Stage::Security, Stage::Operational, false),
            &kv(&[("CHAP_A", algs)]),
        );
        let (_, p) = resp(&s);
        let a = get(&p, "CHAP_A").unwrap().to_string();
        let id: u8 = get(&p, "CHAP_I").unwrap().parse().unwrap();
        let c = text::parse_binary(get(&p, "CHAP_C").unwrap()).unwrap();
        (m, id, c, a)
    }

    #[test]
    fn chap_one_way_md5() {
        let (mut m, id, c, a) = chap_start(chap_cfg(false), "5");
        assert_eq!(a, "5");
        assert_eq!(c.len(), 16);
        let r = ChapAlgorithm::Md5.response(id, b"secretsecret", &c);
        let s = m.step(
            &req(Stage::Security, Stage::Operational, true),
            &kv(&[("CHAP_N", "user"), ("CHAP_R", &text::format_binary(&r))]),
        );
        let (h, _) = resp(&s);
        assert!(matches!(s, Step::Respond(_)));
        assert!(h.transit);
        assert_eq!(h.nsg, Stage::Operational);
        let s = m.step(&req(Stage::Operational, Stage::FullFeature, true), &[]);
        assert!(matches!(s, Step::Complete(_)));
    }

    #[test]
    fn chap_algorithms_sha() {
        for (code, alg, len) in [
            ("6", ChapAlgorithm::Sha1, 20),
            ("7", ChapAlgorithm::Sha256, 32),
            ("8", ChapAlgorithm::Sha3_256, 32),
        ] {
            let (mut m, id, c, a) = chap_start(chap_cfg(false), code);
            assert_eq!(a, code);
            assert_eq!(c.len(), len);
            let r = alg.response(id, b"secretsecret", &c);
            let s = m.step(
                &req(Stage::Security, Stage::Operational, true),
                &kv(&[("CHAP_N", "user"), ("CHAP_R", &text::format_binary(&r))]),
            );
            assert_eq!(status_of(&s), status::SUCCESS);
        }
    }

    #[test]
    fn chap_failures() {
        // Wrong secret.
        let (mut m, id, c, _) = chap_start(chap_cfg(false), "5");
        let r = ChapAlgorithm::Md5.response(id, b"wrong", &c);
        let s = m.step(
            &req(Stage::Security, Stage::Operational, true),
            &kv(&[("CHAP_N", "user"), ("CHAP_R", &text::format_binary(&r))]),
        );
        assert!(matches!(s, Step::Fail(_)));
        assert_eq!(status_of(&s), status::AUTH_FAILURE);
        // Wrong user.
        let (mut m, id, c, _) = chap_start(chap_cfg(false), "5");
        let r = ChapAlgorithm::Md5.response(id, b"secretsecret", &c);
        let s = m.step(
            &req(Stage::Security, Stage::Operational, true),
            &kv(&[("CHAP_N", "other"), ("CHAP_R", &text::format_binary(&r))]),
        );
        assert_eq!(status_of(&s), status::AUTH_FAILURE);
        // Garbage response.
        let (mut m, _, _, _) = chap_start(chap_cfg(false), "5");
        let s = m.step(
            &req(Stage::Security, Stage::Operational, true),
            &kv(&[("CHAP_N", "user"), ("CHAP_R", "0xzz")]),
        );
        assert_eq!(status_of(&s), status::AUTH_FAILURE);
        // Unsupported algorithm list.
        let mut m = LoginMachine::new(chap_cfg(false), local());
        let mut keys = first_keys();
        keys.push(("AuthMethod", "CHAP"));
        m.step(&req(Stage::Security, Stage::Operational, true), &kv(&keys));
        let s = m.step(
            &req(Stage::Security, Stage::Operational, false),
            &kv(&[("CHAP_A", "56")]),
        );
        assert_eq!(status_of(&s), status::AUTH_FAILURE);
        // Authentication required but only None offered.
        let mut m = LoginMachine::new(chap_cfg(false), local());
        let mut keys = first_keys();
        keys.push(("AuthMethod", "None"));
        let s = m.step(&req(Stage::Security, Stage::Operational, true), &kv(&keys));
        assert_eq!(status_of(&s), status::AUTH_FAILURE);
        // Skipping the security stage while authentication is required.
        let mut m = LoginMachine::new(chap_cfg(false), local());
        let s = m.step(
            &req(Stage::Operational, Stage::FullFeature, true),
            &kv(&first_keys()),
        );
        assert_eq!(status_of(&s), status::AUTH_FAILURE);
        // Mutual requested but not configured.
        let (mut m, id, c, _) = chap_start(chap_cfg(false), "5");
        let r = ChapAlgorithm::Md5.response(id, b"secretsecret", &c);
        let s = m.step(
            &req(Stage::Security, Stage::Operational, true),
            &kv(&[
                ("CHAP_N", "user"),
                ("CHAP_R", &text::format_binary(&r)),
                ("CHAP_I", "3"),
                ("CHAP_C", "0x0102030405060708090a0b0c0d0e0f10"),
            ]),
        );
        assert_eq!(status_of(&s), status::AUTH_FAILURE);
    }

    #[test]
    fn acl_authentication_attribute_overrides_the_tpg() {
        // LIO's node ACL attrib/authentication: 1 requires CHAP for that initiator
        // even when the TPG does not, 0 waives it even when the TPG requires it.
        let with = |tpg_auth, acl_auth| acl_chap_cfg(tpg_auth, acl_auth, false);
        let skip_security = |c: Arc<ServerConfig>| {
            let mut m = LoginMachine::new(c, local());
            let s = m.step(
                &req(Stage::Operational, Stage::FullFeature, true),
                &kv(&first_keys()),
            );
            match s {
                Step::Complete(_) => status::SUCCESS,
                ref other => status_of(other),
            }
        };
        assert_eq!(skip_security(with(false, Some(true))), status::AUTH_FAILURE);
        assert_eq!(skip_security(with(false, None)), status::SUCCESS);
        assert_eq!(skip_security(with(true, Some(false))), status::SUCCESS);
        assert_eq!(skip_security(with(true, None)), status::AUTH_FAILURE);
    }

    #[test]
    fn chap_mutual() {
        let (mut m, id, c, _) = chap_start(chap_cfg(true), "5");
        let r = ChapAlgorithm::Md5.response(id, b"secretsecret", &c);
        let my_c = [9u8; 16];
        let s = m.step(
            &req(Stage::Security, Stage::Operational, true),
            &kv(&[
                ("CHAP_N", "user"),
                ("CHAP_R", &text::format_binary(&r)),
                ("CHAP_I", "77"),
                ("CHAP_C", &text::format_binary(&my_c)),
            ]),
        );
        let (h, p) = resp(&s);
        assert_eq!((h.status_class, h.status_detail), (0, 0));
        assert_eq!(get(&p, "CHAP_N"), Some("tuser"));
        let expect = ChapAlgorithm::Md5.response(77, b"tsecret12345", &my_c);
        assert_eq!(
            text::parse_binary(get(&p, "CHAP_R").unwrap()).unwrap(),
            expect
        );
        // A reflected challenge is refused (RFC 7143 12.1.3).
        let (mut m, id, c, _) = chap_start(chap_cfg(true), "5");
        let r = ChapAlgorithm::Md5.response(id, b"secretsecret", &c);
        let s = m.step(
            &req(Stage::Security, Stage::Operational, true),
            &kv(&[
                ("CHAP_N", "user"),
                ("CHAP_R", &text::format_binary(&r)),
                ("CHAP_I", &id.to_string()),
                ("CHAP_C", &text::format_binary(&c)),
            ]),
        );
        assert_eq!(status_of(&s), status::AUTH_FAILURE);
    }

    #[test]
    fn continued_login_text() {
        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let all = kv(&first_keys());
        let (a, b) = all.split_at(10);
        let mut r = req(Stage::Operational, Stage::FullFeature, false);
        r.cont = true;
        let s = m.step(&r, a);
        let (h, p) = resp(&s);
        assert!(!h.transit && p.is_empty());
        let s = m.step(&req(Stage::Operational, Stage::FullFeature, true), b);
        assert!(matches!(s, Step::Complete(_)));
    }

    #[test]
    fn isid_must_not_change() {
        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let mut keys = first_keys();
        keys.push(("AuthMethod", "None"));
        m.step(&req(Stage::Security, Stage::Operational, true), &kv(&keys));
        let mut r = req(Stage::Operational, Stage::FullFeature, true);
        r.isid[5] = 9;
        let s = m.step(&r, &[]);
        assert_eq!(status_of(&s), status::INITIATOR_ERROR);
    }

    /// A TPG requiring CHAP whose ACL holds `creds` as given (validation bypassed, as
    /// a programmatic configuration could).
    fn raw_creds_cfg(creds: ChapCredentials) -> Arc<ServerConfig> {
        cfg(|t| {
            t.authentication = true;
            t.generate_node_acls = false;
            t.acls.push(AclConfig {
                initiator: INIT.into(),
                chap: Some(creds),
                authentication: None,
                mapped_luns: vec![],
                tmr_warm_reset: false,
                tmr_cold_reset: false,
            });
        })
    }

    #[test]
    fn empty_secret_never_authenticates() {
        // The old machine agreed to CHAP and accepted H(id || "" || challenge).
        let c = raw_creds_cfg(ChapCredentials {
            userid: "user".into(),
            password: String::new(),
            mutual: None,
        });
        let mut m = LoginMachine::new(c, local());
        let mut keys = first_keys();
        keys.push(("AuthMethod", "CHAP"));
        let s = m.step(&req(Stage::Security, Stage::Operational, true), &kv(&keys));
        assert_eq!(status_of(&s), status::AUTH_FAILURE);
    }

    #[test]
    fn empty_mutual_secret_is_never_used() {
        let c = raw_creds_cfg(ChapCredentials {
            userid: "user".into(),
            password: "secretsecret".into(),
            mutual: Some(("tuser".into(), String::new())),
        });
        let (mut m, id, c, _) = chap_start(c, "5");
        let r = ChapAlgorithm::Md5.response(id, b"secretsecret", &c);
        let s = m.step(
            &req(Stage::Security, Stage::Operational, true),
            &kv(&[
                ("CHAP_N", "user"),
                ("CHAP_R", &text::format_binary(&r)),
                ("CHAP_I", "3"),
                ("CHAP_C", "0x0102030405060708090a0b0c0d0e0f10"),
            ]),
        );
        assert_eq!(status_of(&s), status::AUTH_FAILURE);
    }

    #[test]
    fn rng_failure_fails_the_login_closed() {
        // The old code fell back to a time-seeded xorshift challenge.
        let mut m = LoginMachine::new(chap_cfg(false), local());
        m.rng = |_| Err(chap::RngError::for_test());
        let mut keys = first_keys();
        keys.push(("AuthMethod", "CHAP"));
        m.step(&req(Stage::Security, Stage::Operational, false), &kv(&keys));
        let s = m.step(
            &req(Stage::Security, Stage::Operational, false),
            &kv(&[("CHAP_A", "5")]),
        );
        assert!(matches!(s, Step::Fail(_)));
        assert_eq!(status_of(&s), status::TARGET_ERROR);
        let (_, p) = resp(&s);
        assert_eq!(get(&p, "CHAP_C"), None);
    }

    #[test]
    fn repeated_chap_failures_back_off() {
        let guard = Arc::new(AuthGuard::default());
        let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let attempt = |secret: &[u8]| {
            let (m, id, c, _) = chap_start(chap_cfg(false), "5");
            let mut m = m.with_auth_guard(guard.clone(), peer);
            let r = ChapAlgorithm::Md5.response(id, secret, &c);
            let s = m.step(
                &req(Stage::Security, Stage::Operational, true),
                &kv(&[("CHAP_N", "user"), ("CHAP_R", &text::format_binary(&r))]),
            );
            status_of(&s)
        };
        assert_eq!(attempt(b"secretsecret"), status::SUCCESS);
        for _ in 0..5 {
            assert_eq!(attempt(b"guess"), status::AUTH_FAILURE);
        }
        // Backing off: even the right secret is refused (without being checked).
        assert_eq!(attempt(b"secretsecret"), status::AUTH_FAILURE);
        assert!(guard.check(INIT, peer.ip(), Instant::now()).is_err());
    }

    #[test]
    fn chap_failures_from_another_address_do_not_lock_the_initiator_out() {
        // Review of 6246fed: the back-off was keyed by the claimed InitiatorName, so any
        // host could lock the real initiator out by answering wrongly in its name.
        let guard = Arc::new(AuthGuard::default());
        let attacker: SocketAddr = "192.0.2.66:40000".parse().unwrap();
        let owner: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        let attempt = |peer: SocketAddr, secret: &[u8]| {
            let (m, id, c, _) = chap_start(chap_cfg(false), "5");
            let mut m = m.with_auth_guard(guard.clone(), peer);
            let r = ChapAlgorithm::Md5.response(id, secret, &c);
            let s = m.step(
                &req(Stage::Security, Stage::Operational, true),
                &kv(&[("CHAP_N", "user"), ("CHAP_R", &text::format_binary(&r))]),
            );
            status_of(&s)
        };
        for _ in 0..30 {
            assert_eq!(attempt(attacker, b"guess"), status::AUTH_FAILURE);
        }
        // The attacker's address is backing off: even the right secret is refused there.
        assert!(guard.check(INIT, attacker.ip(), Instant::now()).is_err());
        assert_eq!(attempt(attacker, b"secretsecret"), status::AUTH_FAILURE);
        // The owner's correct response is checked and accepted.
        assert_eq!(guard.check(INIT, owner.ip(), Instant::now()), Ok(()));
        assert_eq!(attempt(owner, b"secretsecret"), status::SUCCESS);
    }

    #[test]
    fn invalid_mrdsl_is_answered_once() {
        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let mut keys = first_keys();
        keys.push(("MaxRecvDataSegmentLength", "100"));
        let s = m.step(
            &req(Stage::Operational, Stage::FullFeature, true),
            &kv(&keys),
        );
        let (h, p) = resp(&s);
        let answers: Vec<&str> = p
            .iter()
            .filter(|(k, _)| k == "MaxRecvDataSegmentLength")
            .map(|(_, v)| v.as_str())
            .collect();
        // The old machine sent both "Reject" and its own declaration.
        assert_eq!(answers, vec!["Reject"]);
        assert!(!h.transit, "no transition with a rejected key outstanding");
        let s = m.step(&req(Stage::Operational, Stage::FullFeature, true), &[]);
        let Step::Complete(done) = s else {
            panic!("{s:?}")
        };
        assert_eq!(done.negotiated.initiator_mrdsl, 8192, "default kept");
        let fin = m.finish(1, 100, 100);
        let p = text::parse(&fin.data).unwrap();
        assert_eq!(get(&p, "MaxRecvDataSegmentLength"), Some("262144"));
    }

    #[test]
    fn reply_never_exceeds_the_login_data_limit() {
        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let names: Vec<String> = (0..200)
            .map(|i| format!("X-com.example.{i:0>40}"))
            .collect();
        let mut keys = first_keys();
        keys.extend(names.iter().map(|n| (n.as_str(), "1")));
        // 200 NotUnderstood answers are about 13 KiB: more than one login PDU carries.
        let s = m.step(
            &req(Stage::Operational, Stage::FullFeature, true),
            &kv(&keys),
        );
        let Step::Fail(pdu) = &s else { panic!("{s:?}") };
        assert!(pdu.data.len() <= MAX_LOGIN_REPLY);
        assert_eq!(status_of(&s), status::INITIATOR_ERROR);
        // A normal reply is unaffected.
        let mut m = LoginMachine::new(cfg(|_| {}), local());
        let mut keys = first_keys();
        keys.extend(names[..20].iter().map(|n| (n.as_str(), "1")));
        let s = m.step(
            &req(Stage::Operational, Stage::FullFeature, true),
            &kv(&keys),
        );
        assert!(matches!(s, Step::Complete(_)), "{s:?}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            flags in proptest::prelude::any::<u8>(),
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            tsih in proptest::prelude::any::<u16>(),
        ) {
            let mut m = LoginMachine::new(chap_cfg(true), local());
            let mut r = req(Stage::from_bits(flags >> 2), Stage::from_bits(flags), flags & 0x80 != 0);
            r.cont = flags & 0x40 != 0;
            r.tsih = tsih;
            let _ = m.step(&r, &data);
            let _ = m.step(&r, &kv(&first_keys()));
            let _ = m.step(&r, &data);
        }
    }

    #[test]
    fn mutual_response_answers_the_initiators_challenge() {
        let creds = ChapCredentials {
            userid: "u".into(),
            password: "secretsecret12".into(),
            mutual: Some(("target".into(), "mutualsecret12".into())),
        };
        let ours = [0x22u8; 16];
        let theirs = format!("0x{}", "11".repeat(16));
        let mut reply = Reply { pairs: Vec::new() };
        mutual_response(&creds, ChapAlgorithm::Md5, &ours, "1", &theirs, &mut reply).unwrap();
        // RFC 1994 4.1: MD5(identifier || secret || challenge).
        assert_eq!(
            reply.pairs,
            vec![
                ("CHAP_N".to_string(), "target".to_string()),
                (
                    "CHAP_R".to_string(),
                    "0x4550e47c7eb8c4178e3f6a4091a08c22".to_string()
                ),
            ]
        );
        let fails = |creds: &ChapCredentials, i: &str, c: &str| {
            let mut r = Reply { pairs: Vec::new() };
            mutual_response(creds, ChapAlgorithm::Md5, &ours, i, c, &mut r)
        };
        // RFC 7143 12.1.3: our own challenge reflected back is refused, as is an empty one.
        let reflected = format!("0x{}", "22".repeat(16));
        assert_eq!(fails(&creds, "1", &reflected), Err(status::AUTH_FAILURE));
        assert_eq!(fails(&creds, "1", "0x"), Err(status::AUTH_FAILURE));
        // CHAP_I is one octet.
        assert_eq!(fails(&creds, "256", &theirs), Err(status::AUTH_FAILURE));
        // No (or an empty) mutual secret: nothing to answer with.
        let one_way = ChapCredentials {
            mutual: Some(("target".into(), String::new())),
            ..creds.clone()
        };
        assert_eq!(fails(&one_way, "1", &theirs), Err(status::AUTH_FAILURE));
    }
}
