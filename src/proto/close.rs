//! Close codes (RFC 6455 §7.4 and docs/protocol.md §3): named by meaning, plus the rule for which
//! codes a peer may put on the wire.

/// A WebSocket close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection is fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is going away (shutdown).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: Self = Self(1003);
    /// 1007: a text message that is not UTF-8.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: policy violation (a message before auth, a slow consumer).
    pub const POLICY: Self = Self(1008);
    /// 1009: a frame or message over the configured size.
    pub const TOO_BIG: Self = Self(1009);
    /// 1011: the server hit an internal error.
    pub const INTERNAL: Self = Self(1011);
    /// 4401: token missing, malformed, bad signature, expired or revoked.
    pub const TOKEN_INVALID: Self = Self(4401);
    /// 4403: authenticated but not allowed.
    pub const FORBIDDEN: Self = Self(4403);
    /// 4408: auth timeout or keepalive timeout.
    pub const TIMEOUT: Self = Self(4408);
    /// 4429: message rate limit exceeded.
    pub const RATE_LIMITED: Self = Self(4429);

    /// Whether a peer may send this code in a Close frame (RFC 6455 §7.4.1-7.4.2): 1004, 1005,
    /// 1006 and 1015 are reserved for local use, 1016-2999 are unassigned or protocol-reserved,
    /// and nothing outside 1000-4999 is defined.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_follows_rfc_6455() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4401,
            4999,
        ] {
            assert!(CloseCode(ok).is_valid_on_wire(), "{ok} should be valid");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(
                !CloseCode(bad).is_valid_on_wire(),
                "{bad} should be invalid"
            );
        }
    }
}
