//! Login-phase vocabulary shared by both ends (RFC 7143 6.3, 11.12, 11.13): the status
//! codes of a Login Response, the session types and the stage-transition rules. The
//! target's login state machine (which consults its configuration, ACLs and CHAP
//! credentials) lives in `rustio-iscsi`.

use crate::pdu::Stage;

/// Login status codes (RFC 7143 11.13.5), as `(class, detail)`.
pub mod status {
    /// Success.
    pub const SUCCESS: (u8, u8) = (0x00, 0x00);
    /// Initiator error (malformed request, protocol violation).
    pub const INITIATOR_ERROR: (u8, u8) = (0x02, 0x00);
    /// Authentication failure.
    pub const AUTH_FAILURE: (u8, u8) = (0x02, 0x01);
    /// Authorization failure (initiator not allowed on this target).
    pub const AUTHORIZATION_FAILURE: (u8, u8) = (0x02, 0x02);
    /// Target not found.
    pub const NOT_FOUND: (u8, u8) = (0x02, 0x03);
    /// Target removed.
    pub const TARGET_REMOVED: (u8, u8) = (0x02, 0x04);
    /// Unsupported version.
    pub const UNSUPPORTED_VERSION: (u8, u8) = (0x02, 0x05);
    /// Too many connections.
    pub const TOO_MANY_CONNECTIONS: (u8, u8) = (0x02, 0x06);
    /// Missing parameter.
    pub const MISSING_PARAMETER: (u8, u8) = (0x02, 0x07);
    /// Can't include in session.
    pub const CANT_INCLUDE_IN_SESSION: (u8, u8) = (0x02, 0x08);
    /// Session type not supported.
    pub const SESSION_TYPE_NOT_SUPPORTED: (u8, u8) = (0x02, 0x09);
    /// Session does not exist.
    pub const SESSION_DOES_NOT_EXIST: (u8, u8) = (0x02, 0x0a);
    /// Invalid request during login.
    pub const INVALID_DURING_LOGIN: (u8, u8) = (0x02, 0x0b);
    /// Target error.
    pub const TARGET_ERROR: (u8, u8) = (0x03, 0x00);
    /// Service unavailable.
    pub const SERVICE_UNAVAILABLE: (u8, u8) = (0x03, 0x01);
    /// Out of resources.
    pub const OUT_OF_RESOURCES: (u8, u8) = (0x03, 0x02);
}

/// Session type (RFC 7143 13.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    /// Normal session to one target.
    Normal,
    /// Discovery session (SendTargets only).
    Discovery,
}

impl SessionType {
    /// The session type a leading Login Request declares with its `SessionType` key
    /// value (`None` when the key is absent, which means `Normal`, RFC 7143 13.21);
    /// `None` for a value RFC 7143 does not define.
    pub fn from_key(value: Option<&str>) -> Option<SessionType> {
        match value {
            None | Some("Normal") => Some(SessionType::Normal),
            Some("Discovery") => Some(SessionType::Discovery),
            Some(_) => None,
        }
    }
}

/// Whether the CSG/NSG fields of a Login Request are acceptable on their own (RFC 7143
/// 11.12.3 and 6.3): the current stage must be SecurityNegotiation or
/// LoginOperationalNegotiation, and a transit request (T bit) must name a later stage
/// that is not the reserved value 2.
pub fn stages_valid(csg: Stage, nsg: Stage, transit: bool) -> bool {
    if csg == Stage::Reserved || csg == Stage::FullFeature {
        return false;
    }
    !(transit && (nsg <= csg || nsg == Stage::Reserved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_match_rfc7143_11_13_5() {
        assert_eq!(status::SUCCESS, (0, 0));
        assert_eq!(status::AUTH_FAILURE, (2, 1));
        assert_eq!(status::NOT_FOUND, (2, 3));
        assert_eq!(status::SESSION_DOES_NOT_EXIST, (2, 0x0a));
        assert_eq!(status::INVALID_DURING_LOGIN, (2, 0x0b));
        assert_eq!(status::OUT_OF_RESOURCES, (3, 2));
    }

    #[test]
    fn session_type_key_values() {
        assert_eq!(SessionType::from_key(None), Some(SessionType::Normal));
        assert_eq!(
            SessionType::from_key(Some("Normal")),
            Some(SessionType::Normal)
        );
        assert_eq!(
            SessionType::from_key(Some("Discovery")),
            Some(SessionType::Discovery)
        );
        // Values are case-sensitive (RFC 7143 6.1).
        assert_eq!(SessionType::from_key(Some("discovery")), None);
        assert_eq!(SessionType::from_key(Some("")), None);
    }

    #[test]
    fn stage_transitions_per_rfc7143_11_12_3() {
        use Stage::*;
        // The common paths: 0→1, 0→3, 1→3.
        assert!(stages_valid(Security, Operational, true));
        assert!(stages_valid(Security, FullFeature, true));
        assert!(stages_valid(Operational, FullFeature, true));
        // Without T, NSG is ignored.
        assert!(stages_valid(Operational, Security, false));
        // Going back or staying with T set, or naming the reserved stage.
        assert!(!stages_valid(Operational, Security, true));
        assert!(!stages_valid(Operational, Operational, true));
        assert!(!stages_valid(Security, Reserved, true));
        // CSG may never be 2 or 3.
        assert!(!stages_valid(Reserved, FullFeature, true));
        assert!(!stages_valid(FullFeature, FullFeature, false));
    }
}
