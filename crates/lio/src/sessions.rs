//! Live iSCSI sessions, parsed from `acls/<initiator>/info` (read-only).
//!
//! The kernel prints (iscsi_target_configfs.c, `lio_target_nacl_info_show`):
//!
//! ```text
//! InitiatorName: iqn.1993-08.org.debian:01:abc
//! InitiatorAlias: host1
//! LIO Session ID: 1   ISID: 0x00 0x02 0x3d 0x00 0x00 0x00  TSIH: 1  SessionType: Normal
//! Session State: TARG_SESS_STATE_LOGGED_IN
//! ---------------------[iSCSI Session Values]-----------------------
//!   CmdSN/WR  :  CmdSN/WC  :  ExpCmdSN  :  MaxCmdSN  :     ITT    :     TTT
//!  0x00000000   0x00000000   0x00000010   0x00000050   0x00000000   0x00000000
//! ----------------------[iSCSI Connections]-------------------------
//! CID: 0  Connection State: TARG_CONN_STATE_LOGGED_IN
//!    Address 192.168.122.1 TCP  StatSN: 0x00000010
//! ```
//!
//! or `No active iSCSI Session for Initiator Endpoint: <name>`.

use serde::Serialize;

/// One iSCSI session of an initiator (RFC 7143 4.4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Session {
    /// Initiator name.
    pub initiator: String,
    /// InitiatorAlias key, when sent.
    pub alias: Option<String>,
    /// LIO session id.
    pub sid: Option<u64>,
    /// `Normal` or `Discovery`.
    pub session_type: Option<String>,
    /// Session state without the `TARG_SESS_STATE_` prefix.
    pub state: Option<String>,
    /// Connections of the session.
    pub connections: Vec<Connection>,
}

/// One connection of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Connection {
    /// Connection id.
    pub cid: u64,
    /// State without the `TARG_CONN_STATE_` prefix.
    pub state: String,
    /// Initiator address.
    pub address: Option<String>,
    /// Transport (`TCP`, `iSER`, ...).
    pub transport: Option<String>,
}

fn after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.find(key).map(|i| line[i + key.len()..].trim())
}

fn first_word(s: &str) -> Option<&str> {
    s.split_whitespace().next()
}

/// Parses an ACL `info` file; `None` when there is no active session.
pub fn parse_acl_info(text: &str) -> Option<Session> {
    let first = text.lines().next()?.trim();
    if first.is_empty() || first.starts_with("No active") {
        return None;
    }
    let mut s = Session::default();
    let mut seen_name = false;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(v) = after(line, "InitiatorName:") {
            s.initiator = v.to_owned();
            seen_name = true;
        } else if let Some(v) = after(line, "InitiatorAlias:") {
            if !v.is_empty() {
                s.alias = Some(v.to_owned());
            }
        } else if line.contains("LIO Session ID:") {
            s.sid = after(line, "LIO Session ID:")
                .and_then(first_word)
                .and_then(|w| w.parse().ok());
            s.session_type = after(line, "SessionType:")
                .and_then(first_word)
                .map(str::to_owned);
        } else if let Some(i) = line.find("TARG_SESS_STATE_") {
            s.state = first_word(&line[i + "TARG_SESS_STATE_".len()..]).map(str::to_owned);
        } else if line.contains("TARG_CONN_STATE_") {
            let cid = after(line, "CID:")
                .and_then(first_word)
                .and_then(|w| w.parse().ok())
                .unwrap_or(0);
            let state = line
                .find("TARG_CONN_STATE_")
                .and_then(|i| first_word(&line[i + "TARG_CONN_STATE_".len()..]))
                .unwrap_or("")
                .to_owned();
            s.connections.push(Connection {
                cid,
                state,
                address: None,
                transport: None,
            });
        } else if let Some(rest) = after(line, "Address") {
            if let Some(c) = s.connections.last_mut() {
                let mut words = rest.split_whitespace();
                c.address = words.next().map(str::to_owned);
                c.transport = words.next().map(str::to_owned);
            }
        }
    }
    seen_name.then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGGED_IN: &str = "InitiatorName: iqn.1993-08.org.debian:01:abc\n\
InitiatorAlias: host1\n\
LIO Session ID: 7   ISID: 0x00 0x02 0x3d 0x00 0x00 0x00  TSIH: 1  SessionType: Normal\n\
Session State: TARG_SESS_STATE_LOGGED_IN\n\
---------------------[iSCSI Session Values]-----------------------\n\
  CmdSN/WR  :  CmdSN/WC  :  ExpCmdSN  :  MaxCmdSN  :     ITT    :     TTT\n\
 0x00000000   0x00000000   0x00000010   0x00000050   0x00000000   0x00000000\n\
----------------------[iSCSI Connections]-------------------------\n\
CID: 0  Connection State: TARG_CONN_STATE_LOGGED_IN\n\
   Address 192.168.122.1 TCP  StatSN: 0x00000010\n";

    #[test]
    fn parses_a_logged_in_session() {
        let s = parse_acl_info(LOGGED_IN).unwrap();
        assert_eq!(s.initiator, "iqn.1993-08.org.debian:01:abc");
        assert_eq!(s.alias.as_deref(), Some("host1"));
        assert_eq!(s.sid, Some(7));
        assert_eq!(s.session_type.as_deref(), Some("Normal"));
        assert_eq!(s.state.as_deref(), Some("LOGGED_IN"));
        assert_eq!(
            s.connections,
            vec![Connection {
                cid: 0,
                state: "LOGGED_IN".into(),
                address: Some("192.168.122.1".into()),
                transport: Some("TCP".into()),
            }]
        );
    }

    #[test]
    fn no_session() {
        assert_eq!(
            parse_acl_info("No active iSCSI Session for Initiator Endpoint: iqn.x\n"),
            None
        );
        assert_eq!(parse_acl_info(""), None);
        assert_eq!(parse_acl_info("garbage\nmore"), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = parse_acl_info(&s);
        }
    }
}
