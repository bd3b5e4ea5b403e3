//! Origin validation for the upgrade request (docs/protocol.md §2): Channels' `OriginValidator` and
//! `AllowedHostsOriginValidator` semantics, with the deliberate differences listed on
//! [`OriginPolicy`]. Patterns are parsed once at start-up; [`OriginPolicy::allows`] then checks
//! one `Origin` header value per request by hand, without allocating.
//! Pure code: no IO, no clock; uses only std, `idna` (start-up only) and `thiserror`.

use std::net::Ipv6Addr;

/// A pattern of the allowed-origins list that cannot be used; a start-up error, never on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// A `*` inside a host (`*.example.com`): not a wildcard since Channels 2.1.
    #[error("allowed origin {pattern:?}: `*` is not a wildcard inside a host; {}", star_hint(.pattern))]
    StarWildcard {
        /// The pattern as configured.
        pattern: String,
    },
    /// Any other malformed pattern: empty, bad scheme, bad port, broken IPv6, a path, ...
    #[error("allowed origin {pattern:?} is invalid: {reason}")]
    Invalid {
        /// The pattern as configured.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Builds the advice of a `StarWildcard` error: the leading-dot form of the pattern when obvious.
fn star_hint(pattern: &str) -> String {
    let trimmed = pattern.trim();
    match trimmed.split_once("*.") {
        // Only a `*.` that starts the host has an obvious leading-dot form.
        Some((before, after))
            if (before.is_empty() || before.ends_with("://")) && !after.contains('*') =>
        {
            format!("write `{before}.{after}` to allow that domain and all its subdomains")
        }
        _ => "write a leading dot, e.g. `.example.com`, to allow a domain and all its \
              subdomains, or `*` alone to allow any origin"
            .to_owned(),
    }
}

/// The allowed origins, parsed once at start-up and checked on every upgrade request.
///
/// Where docs/protocol.md §2 is silent or Channels behaves differently, wsgate decides:
/// - `*.example.com` (any `*` that is not the whole pattern) is a start-up error; Channels keeps
///   it as a pattern that never matches.
/// - `example.com:8080` (host and port, no scheme) matches that host with that port under any
///   scheme, the origin's port being its explicit port or its scheme's default (80 for
///   `http`/`ws`, 443 for `https`/`wss`). Channels treats the form as dead (Python >= 3.9 reads
///   `example.com` as a scheme) or, for IPv4 and leading-dot hosts, ignores the port.
/// - A scheme pattern pins the port, explicit or default; for other schemes (`ftp`,
///   `chrome-extension`) the ports must be equal, both absent counting as equal.
/// - A Unicode pattern host is stored in punycode; IPv6 literals compare as addresses, so
///   `[::1]` equals `[0:0::1]`. Trailing dots are not normalised (as in Channels).
/// - Patterns are trimmed of surrounding whitespace; a path, query, fragment, user info, an
///   empty host, port 0 or a port above 65535 is a start-up error (Channels ignores a path).
/// - An `Origin` value is trimmed of surrounding spaces and tabs, then must be exactly
///   `scheme "://" host [":" port]` in ASCII: a trailing path (even `/`), user info, an empty
///   port, port 0 or above 65535, a broken or zoned IPv6 literal, or a host byte other than a
///   letter, digit, `-`, `_` or `.` makes it unparsable. Unparsable, missing, empty and `null`
///   origins are refused (403) unless `*` is listed; Channels answers 500 for some of them and
///   accepts a non-numeric port under a host-only pattern.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    /// `*` was listed: every request passes, with or without a parsable origin.
    any: bool,
    patterns: Vec<Pattern>,
}

impl OriginPolicy {
    /// Parses `--allowed-origins`; the first bad pattern is an error naming it.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, OriginError> {
        let mut policy = OriginPolicy {
            any: false,
            patterns: Vec::with_capacity(patterns.len()),
        };
        for raw in patterns {
            let raw = raw.as_ref();
            match Pattern::parse(raw)? {
                Some(pattern) => policy.patterns.push(pattern),
                None => policy.any = true,
            }
        }
        Ok(policy)
    }

    /// Builds the `--allowed-hosts` policy; an empty list becomes the local hosts only with `debug`.
    pub fn allowed_hosts<S: AsRef<str>>(hosts: &[S], debug: bool) -> Result<Self, OriginError> {
        if hosts.is_empty() && debug {
            // A replacement, not an addition, and `localhost` without a dot, as in Channels.
            Self::parse(&["localhost", "127.0.0.1", "[::1]"])
        } else {
            Self::parse(hosts)
        }
    }

    /// Whether an upgrade with this `Origin` header value (None when absent) may proceed.
    pub fn allows(&self, origin: Option<&[u8]>) -> bool {
        if self.any {
            return true;
        }
        let Some(origin) = origin.and_then(Origin::parse) else {
            return false;
        };
        self.patterns.iter().any(|pattern| pattern.matches(&origin))
    }

    /// A one-line summary for `--check-config`: `*`, or how many patterns.
    pub fn describe(&self) -> String {
        if self.any {
            "any origin (*)".to_owned()
        } else {
            format!("{} pattern(s)", self.patterns.len())
        }
    }

    /// True when no origin at all can pass (an empty list), which start-up reports.
    pub fn rejects_everything(&self) -> bool {
        !self.any && self.patterns.is_empty()
    }
}

/// One parsed pattern other than `*`. Host names are stored lower-case ASCII.
#[derive(Debug, Clone)]
struct Pattern {
    /// Lower-case scheme when the pattern pins one.
    scheme: Option<Box<str>>,
    host: HostRule,
    port: PortRule,
}

#[derive(Debug, Clone)]
enum HostRule {
    /// Exactly this host.
    Exact(Box<str>),
    /// This host and every subdomain at any depth (stored without the leading dot).
    Domain(Box<str>),
    /// An IPv6 literal, compared as an address.
    Ipv6(Ipv6Addr),
}

#[derive(Debug, Clone, Copy)]
enum PortRule {
    /// No scheme and no port in the pattern.
    Any,
    /// The origin's effective port must equal this (None: an unknown scheme without a port).
    Is(Option<u16>),
}

impl Pattern {
    /// Ok(None) for `*`; otherwise the pattern or an error naming it.
    fn parse(raw: &str) -> Result<Option<Self>, OriginError> {
        let text = raw.trim();
        let invalid = |reason: &'static str| OriginError::Invalid {
            pattern: raw.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("the pattern is empty"));
        }
        if text == "*" {
            return Ok(None);
        }
        if text.contains('*') {
            return Err(OriginError::StarWildcard {
                pattern: raw.to_owned(),
            });
        }
        let (scheme, authority) = match text.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, text),
        };
        if let Some(scheme) = scheme {
            check_scheme(scheme.as_bytes()).map_err(invalid)?;
        }
        if authority.starts_with(".[") {
            return Err(invalid("a leading dot cannot apply to an IPv6 address"));
        }
        let (host, port) = split_authority(authority.as_bytes()).map_err(invalid)?;
        let host = match host {
            HostPart::Ipv6(addr) => HostRule::Ipv6(addr),
            HostPart::Name(bytes) => {
                // Split at ASCII delimiters only, so the host is still valid UTF-8.
                let name =
                    std::str::from_utf8(bytes).map_err(|_| invalid("the host is not UTF-8"))?;
                match name.strip_prefix('.') {
                    Some("") => return Err(invalid("there is no host after the leading dot")),
                    Some(domain) => HostRule::Domain(ascii_host(domain).map_err(invalid)?),
                    None => HostRule::Exact(ascii_host(name).map_err(invalid)?),
                }
            }
        };
        let scheme = scheme.map(|s| s.to_ascii_lowercase().into_boxed_str());
        let port = match (&scheme, port) {
            (Some(scheme), port) => PortRule::Is(port.or(default_port(scheme.as_bytes()))),
            (None, Some(port)) => PortRule::Is(Some(port)),
            (None, None) => PortRule::Any,
        };
        Ok(Some(Pattern { scheme, host, port }))
    }

    fn matches(&self, origin: &Origin<'_>) -> bool {
        if let Some(scheme) = &self.scheme
            && !scheme.as_bytes().eq_ignore_ascii_case(origin.scheme)
        {
            return false;
        }
        if let PortRule::Is(port) = self.port
            && origin.effective_port() != port
        {
            return false;
        }
        match (&self.host, &origin.host) {
            (HostRule::Exact(want), HostPart::Name(host)) => {
                want.as_bytes().eq_ignore_ascii_case(host)
            }
            (HostRule::Domain(domain), HostPart::Name(host)) => in_domain(host, domain.as_bytes()),
            (HostRule::Ipv6(want), HostPart::Ipv6(addr)) => want == addr,
            _ => false,
        }
    }
}

/// Lower-cases an ASCII host, or converts a Unicode one to punycode, and checks the result.
fn ascii_host(name: &str) -> Result<Box<str>, &'static str> {
    let ascii = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(name)
            .map_err(|_| "the host is not a valid internationalised domain name")?
    };
    if !is_host_name(ascii.as_bytes()) {
        return Err(
            "the host may only hold letters, digits, '-', '_' and non-empty dot-separated labels",
        );
    }
    Ok(ascii.into_boxed_str())
}

/// `host` equals `domain` or ends with `.` + `domain`, ASCII case-insensitively.
fn in_domain(host: &[u8], domain: &[u8]) -> bool {
    match host.len().checked_sub(domain.len()) {
        Some(0) => host.eq_ignore_ascii_case(domain),
        Some(cut) => {
            let (head, tail) = host.split_at(cut);
            head.last() == Some(&b'.') && tail.eq_ignore_ascii_case(domain)
        }
        None => false,
    }
}

/// The parts of an `Origin` header value, borrowed from the request head.
struct Origin<'a> {
    scheme: &'a [u8],
    host: HostPart<'a>,
    port: Option<u16>,
}

impl<'a> Origin<'a> {
    /// Parses `scheme "://" host [":" port]`; None when it is anything else.
    fn parse(raw: &'a [u8]) -> Option<Self> {
        let raw = raw.trim_ascii();
        let at = raw.windows(3).position(|w| w == b"://")?;
        let (scheme, rest) = raw.split_at(at);
        check_scheme(scheme).ok()?;
        let (host, port) = split_authority(rest.get(3..)?).ok()?;
        if let HostPart::Name(name) = host
            && !is_host_name(name)
        {
            return None;
        }
        Some(Origin { scheme, host, port })
    }

    /// The explicit port, else the scheme's default, else None.
    fn effective_port(&self) -> Option<u16> {
        self.port.or(default_port(self.scheme))
    }
}

/// A host as written: a name (unchecked here) or a bracketed IPv6 literal.
enum HostPart<'a> {
    Name(&'a [u8]),
    Ipv6(Ipv6Addr),
}

/// Splits `host [":" port]`, shared by patterns and origins; the error says why, without allocating.
fn split_authority(authority: &[u8]) -> Result<(HostPart<'_>, Option<u16>), &'static str> {
    if authority.iter().any(|b| matches!(b, b'/' | b'?' | b'#')) {
        return Err("an origin has no path, query or fragment (not even a trailing '/')");
    }
    if authority.contains(&b'@') {
        return Err("an origin has no user info ('@')");
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix(b"[") {
        let close = inner
            .iter()
            .position(|&b| b == b']')
            .ok_or("the IPv6 literal has no closing ']'")?;
        let (literal, after) = inner.split_at(close);
        let addr = std::str::from_utf8(literal)
            .ok()
            .and_then(|text| text.parse::<Ipv6Addr>().ok())
            .ok_or("the IPv6 literal is not a valid IPv6 address")?;
        let port = match after.get(1..) {
            Some([]) | None => None,
            Some([b':', port @ ..]) => Some(port),
            Some(_) => return Err("only ':' and a port may follow an IPv6 literal"),
        };
        (HostPart::Ipv6(addr), port)
    } else {
        let mut parts = authority.splitn(2, |&b| b == b':');
        let host = parts.next().unwrap_or_default();
        let port = parts.next();
        if port.is_some_and(|port| port.contains(&b':')) {
            return Err("an IPv6 address must be written in brackets, e.g. [::1]");
        }
        if host.is_empty() {
            return Err("there is no host");
        }
        (HostPart::Name(host), port)
    };
    let port = port.map(parse_port).transpose()?;
    Ok((host, port))
}

/// A decimal port 1-65535 (leading zeros allowed, at most five digits).
fn parse_port(digits: &[u8]) -> Result<u16, &'static str> {
    const BAD: &str = "the port must be a number from 1 to 65535";
    if digits.is_empty() || digits.len() > 5 {
        return Err(BAD);
    }
    let mut value: u32 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(BAD);
        }
        value = value * 10 + u32::from(b - b'0');
    }
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(BAD),
    }
}

/// RFC 3986 scheme syntax: a letter, then letters, digits, '+', '-' or '.'.
fn check_scheme(scheme: &[u8]) -> Result<(), &'static str> {
    match scheme.split_first() {
        Some((first, rest))
            if first.is_ascii_alphabetic()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            Ok(())
        }
        Some(_) => Err("the scheme must be a letter followed by letters, digits, '+', '-' or '.'"),
        None => Err("the scheme before '://' is empty"),
    }
}

/// Letters, digits, '-' and '_' in non-empty dot-separated labels; one trailing dot allowed.
fn is_host_name(name: &[u8]) -> bool {
    let name = name.strip_suffix(b".").unwrap_or(name);
    !name.is_empty()
        && name.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

/// 80 for `http`/`ws`, 443 for `https`/`wss` (any case), None for other schemes.
fn default_port(scheme: &[u8]) -> Option<u16> {
    if scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"ws") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case(b"https") || scheme.eq_ignore_ascii_case(b"wss") {
        Some(443)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(patterns: &[&str]) -> OriginPolicy {
        match OriginPolicy::parse(patterns) {
            Ok(policy) => policy,
            Err(err) => panic!("{patterns:?} should parse: {err}"),
        }
    }

    fn hosts_policy(hosts: &[&str], debug: bool) -> OriginPolicy {
        match OriginPolicy::allowed_hosts(hosts, debug) {
            Ok(policy) => policy,
            Err(err) => panic!("{hosts:?} should parse: {err}"),
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Expect {
        Accept,
        Reject,
        /// Stricter than a reject: the pattern list is a start-up error, so nothing ever connects.
        RefusedAtStartup,
    }
    use Expect::*;

    /// What wsgate does with `origin` under `patterns`.
    fn outcome(patterns: &[&str], origin: Option<&[u8]>) -> Expect {
        match OriginPolicy::parse(patterns) {
            Ok(policy) if policy.allows(origin) => Accept,
            Ok(_) => Reject,
            Err(_) => RefusedAtStartup,
        }
    }

    /// Allowed patterns, the `Origin` value sent (None: no header), what must happen.
    type Row<'a> = (&'a [&'a str], Option<&'a [u8]>, Expect);

    fn check_table(rows: &[Row<'_>]) {
        for (i, &(patterns, origin, expected)) in rows.iter().enumerate() {
            let shown = origin.map(String::from_utf8_lossy);
            assert_eq!(
                outcome(patterns, origin),
                expected,
                "row {i}: patterns {patterns:?}, origin {shown:?}"
            );
        }
    }

    /// django/channels tests/security/test_websocket.py::test_origin_validator, all 10 attempts.
    #[test]
    fn channels_origin_validator_suite() {
        let rows: &[Row<'_>] = &[
            (
                &["allowed-domain.com"],
                Some(b"http://allowed-domain.com"),
                Accept,
            ),
            (
                &["allowed-domain.com"],
                Some(b"http://bad-domain.com"),
                Reject,
            ),
            // Upstream: rejected; wsgate refuses the pattern at start-up (PROTOCOL §2).
            (
                &["*.allowed-domain.com"],
                Some(b"http://allowed-domain.com"),
                RefusedAtStartup,
            ),
            (
                &[".allowed-domain.com"],
                Some(b"http://www.allowed-domain.com"),
                Accept,
            ),
            (
                &["http://allowed-domain.com"],
                Some(b"http://allowed-domain.com"),
                Accept,
            ),
            (
                &["http://allowed-domain.com"],
                Some(b"https://bad-domain.com:443"),
                Reject,
            ),
            (&["*"], None, Accept),
            (&[], None, Reject),
            (&[".allowed-domain.com"], Some(b""), Reject),
            (&[".allowed-domain.com"], Some(b"something-invalid"), Reject),
        ];
        assert_eq!(rows.len(), 10);
        check_table(rows);
    }

    #[test]
    fn star_pattern_accepts_everything() {
        check_table(&[
            (&["*"], Some(b"https://anything.example:8443"), Accept),
            (&["*"], Some(b""), Accept),
            (&["*"], Some(b"null"), Accept),
            (&["*"], Some(b"something-invalid"), Accept),
            (&["*"], Some(b"http://[::1"), Accept),
            (&["*"], Some(b"http://example.com:99999"), Accept),
            (&["*"], Some(b"\xff\xfe"), Accept),
            // `*` anywhere in the list, mixed with other patterns.
            (&["example.com", "*"], None, Accept),
            (&["example.com", "*"], Some(b"http://other.example"), Accept),
        ]);
    }

    #[test]
    fn missing_empty_null_unparsable_rejected_without_star() {
        let garbage: &[&[u8]] = &[
            b"",
            b"   ",
            b"null",
            b"something-invalid",
            b"http://",
            b"http://:80",
            b"://example.com",
            b"1http://example.com",
            b"http//example.com",
            b"http://example.com:",
            b"http://example.com:abc",
            b"http://example.com:99999",
            b"http://example.com:65536",
            b"http://example.com:0",
            b"http://example.com:123456",
            b"http://example.com:-80",
            b"http://example.com:8 0",
            b"http://[::1",
            b"http://[::1]x",
            b"http://[::g]",
            b"http://[]",
            b"http://[fe80::1%25eth0]",
            b"http://::1",
            b"http://user@example.com",
            b"http://example.com/",
            b"http://example.com/path",
            b"http://example.com?q",
            b"http://example.com#f",
            b"http://exa mple.com",
            b"http://ex\xc3\xa4mple.com",
            b"http://example..com",
            b"http://.example.com",
        ];
        let everything = policy(&["example.com", ".example.com", "http://example.com", "[::1]"]);
        assert!(!everything.allows(None));
        for origin in garbage {
            let shown = String::from_utf8_lossy(origin);
            assert!(
                !everything.allows(Some(origin)),
                "{shown:?} must be rejected"
            );
        }
        // Sanity: the same policy does accept the well-formed versions.
        assert!(everything.allows(Some(b"http://example.com")));
        assert!(everything.allows(Some(b"http://[::1]:8000")));
    }

    #[test]
    fn protocol_section_2_table() {
        check_table(&[
            // `example.com`: exact host, any scheme, any port.
            (&["example.com"], Some(b"http://example.com"), Accept),
            (&["example.com"], Some(b"https://example.com:8443"), Accept),
            (&["example.com"], Some(b"ws://example.com:1"), Accept),
            (
                &["example.com"],
                Some(b"chrome-extension://example.com"),
                Accept,
            ),
            (&["example.com"], Some(b"https://www.example.com"), Reject),
            (&["example.com"], Some(b"https://badexample.com"), Reject),
            (
                &["example.com"],
                Some(b"https://example.com.evil.org"),
                Reject,
            ),
            // `.example.com`: apex and subdomains at any depth, on a label boundary.
            (&[".example.com"], Some(b"https://example.com"), Accept),
            (&[".example.com"], Some(b"https://a.example.com"), Accept),
            (
                &[".example.com"],
                Some(b"https://a.b.c.example.com:9000"),
                Accept,
            ),
            (&[".example.com"], Some(b"http://badexample.com"), Reject),
            (
                &[".example.com"],
                Some(b"http://example.com.evil.org"),
                Reject,
            ),
            (&[".example.com"], Some(b"http://xample.com"), Reject),
            (&[".example.com"], Some(b"http://com"), Reject),
            // `https://example.com`: scheme, host and the DEFAULT port pinned.
            (
                &["https://example.com"],
                Some(b"https://example.com"),
                Accept,
            ),
            (
                &["https://example.com"],
                Some(b"https://example.com:443"),
                Accept,
            ),
            (
                &["https://example.com"],
                Some(b"https://example.com:8443"),
                Reject,
            ),
            (
                &["https://example.com"],
                Some(b"http://example.com"),
                Reject,
            ),
            (&["https://example.com"], Some(b"wss://example.com"), Reject),
            (
                &["https://example.com"],
                Some(b"https://www.example.com"),
                Reject,
            ),
            (
                &["http://example.com"],
                Some(b"http://example.com:80"),
                Accept,
            ),
            (
                &["http://example.com"],
                Some(b"http://example.com:8080"),
                Reject,
            ),
            (
                &["http://example.com:80"],
                Some(b"http://example.com"),
                Accept,
            ),
            (
                &["https://example.com:443"],
                Some(b"https://example.com"),
                Accept,
            ),
            (
                &["https://example.com:8443"],
                Some(b"https://example.com:8443"),
                Accept,
            ),
            (
                &["https://example.com:8443"],
                Some(b"https://example.com"),
                Reject,
            ),
            // Schemes compare literally: http never matches ws, https never wss.
            (&["http://example.com"], Some(b"ws://example.com"), Reject),
            (&["ws://example.com"], Some(b"ws://example.com"), Accept),
            (&["ws://example.com"], Some(b"ws://example.com:80"), Accept),
            (&["ws://example.com"], Some(b"http://example.com"), Reject),
            (
                &["wss://example.com"],
                Some(b"wss://example.com:443"),
                Accept,
            ),
            (&["wss://example.com"], Some(b"https://example.com"), Reject),
            // Unknown schemes: ports must be equal, both absent counts as equal.
            (&["ftp://example.com"], Some(b"ftp://example.com"), Accept),
            (
                &["ftp://example.com"],
                Some(b"ftp://example.com:21"),
                Reject,
            ),
            (
                &["ftp://example.com:21"],
                Some(b"ftp://example.com:21"),
                Accept,
            ),
            (
                &["chrome-extension://abcdef"],
                Some(b"chrome-extension://abcdef"),
                Accept,
            ),
            // `https://.example.com:8443`: scheme, domain with subdomains, and port pinned.
            (
                &["https://.example.com:8443"],
                Some(b"https://example.com:8443"),
                Accept,
            ),
            (
                &["https://.example.com:8443"],
                Some(b"https://a.b.example.com:8443"),
                Accept,
            ),
            (
                &["https://.example.com:8443"],
                Some(b"https://a.example.com"),
                Reject,
            ),
            (
                &["https://.example.com:8443"],
                Some(b"https://a.example.com:443"),
                Reject,
            ),
            (
                &["https://.example.com:8443"],
                Some(b"http://a.example.com:8443"),
                Reject,
            ),
            (
                &["https://.example.com:8443"],
                Some(b"https://badexample.com:8443"),
                Reject,
            ),
            (
                &["http://.example.com"],
                Some(b"http://a.example.com"),
                Accept,
            ),
            (
                &["http://.example.com"],
                Some(b"http://a.example.com:8080"),
                Reject,
            ),
            // `example.com:8080`: host and port pinned, any scheme (Channels: a dead pattern).
            (
                &["example.com:8080"],
                Some(b"http://example.com:8080"),
                Accept,
            ),
            (
                &["example.com:8080"],
                Some(b"ws://example.com:8080"),
                Accept,
            ),
            (&["example.com:8080"], Some(b"http://example.com"), Reject),
            (
                &["example.com:8080"],
                Some(b"http://example.com:8081"),
                Reject,
            ),
            (
                &["example.com:8080"],
                Some(b"http://www.example.com:8080"),
                Reject,
            ),
            (&["localhost:8000"], Some(b"http://localhost:8000"), Accept),
            (&["example.com:80"], Some(b"http://example.com"), Accept),
            (&["example.com:443"], Some(b"https://example.com"), Accept),
            (&["example.com:443"], Some(b"http://example.com"), Reject),
            (
                &[".example.com:8080"],
                Some(b"https://a.example.com:8080"),
                Accept,
            ),
            (
                &[".example.com:8080"],
                Some(b"https://a.example.com"),
                Reject,
            ),
            // Case-insensitive hosts and schemes, on both sides.
            (&["Example.COM"], Some(b"http://example.com"), Accept),
            (&["example.com"], Some(b"HTTP://EXAMPLE.COM"), Accept),
            (&[".EXAMPLE.com"], Some(b"https://WWW.example.COM"), Accept),
            (
                &["HTTPS://Example.com"],
                Some(b"https://EXAMPLE.com:443"),
                Accept,
            ),
            (
                &["https://example.com"],
                Some(b"HTTPS://example.com"),
                Accept,
            ),
            (
                &["https://example.com"],
                Some(b"HtTpS://example.com"),
                Accept,
            ),
            // IPv4 literals are plain hosts.
            (&["127.0.0.1"], Some(b"http://127.0.0.1:8000"), Accept),
            (&["127.0.0.1"], Some(b"http://127.0.0.2"), Reject),
            (
                &["http://127.0.0.1:8000"],
                Some(b"http://127.0.0.1:8000"),
                Accept,
            ),
            // IPv6 literals in brackets on both sides, compared as addresses.
            (&["[::1]"], Some(b"http://[::1]"), Accept),
            (&["[::1]"], Some(b"http://[::1]:8000"), Accept),
            (&["[::1]"], Some(b"http://[0:0:0:0:0:0:0:1]"), Accept),
            (&["[::1]"], Some(b"http://[::2]"), Reject),
            (&["[::1]"], Some(b"http://localhost"), Reject),
            (&["[0:0::1]"], Some(b"https://[::1]"), Accept),
            (&["[2001:DB8::1]"], Some(b"https://[2001:db8::1]"), Accept),
            (&["http://[::1]:8000"], Some(b"http://[::1]:8000"), Accept),
            (&["http://[::1]:8000"], Some(b"http://[::1]"), Reject),
            (&["http://[::1]:8000"], Some(b"https://[::1]:8000"), Reject),
            (&["http://[::1]"], Some(b"http://[::1]:80"), Accept),
            (&["[::1]:8000"], Some(b"ws://[::1]:8000"), Accept),
            (&["[::1]:8000"], Some(b"ws://[::1]:8001"), Reject),
            (&["localhost"], Some(b"http://[::1]"), Reject),
            // A Unicode pattern matches the punycode origin browsers send.
            (
                &["bücher.example"],
                Some(b"https://xn--bcher-kva.example"),
                Accept,
            ),
            (
                &["BÜCHER.example"],
                Some(b"https://xn--bcher-kva.example"),
                Accept,
            ),
            (
                &[".bücher.example"],
                Some(b"https://shop.xn--bcher-kva.example"),
                Accept,
            ),
            (
                &["https://bücher.example"],
                Some(b"https://XN--BCHER-KVA.example:443"),
                Accept,
            ),
            (&["bücher.example"], Some(b"https://bucher.example"), Reject),
            (
                &["xn--bcher-kva.example"],
                Some(b"https://xn--bcher-kva.example"),
                Accept,
            ),
            // Bad or out-of-range ports in the origin: rejected, never an error.
            (&["example.com"], Some(b"http://example.com:abc"), Reject),
            (&["example.com"], Some(b"http://example.com:99999"), Reject),
            (
                &["http://example.com"],
                Some(b"http://example.com:abc"),
                Reject,
            ),
            (
                &["http://example.com"],
                Some(b"http://example.com:99999"),
                Reject,
            ),
            (
                &["http://example.com"],
                Some(b"http://example.com:65536"),
                Reject,
            ),
            (&["example.com"], Some(b"http://example.com:65535"), Accept),
            // Broken IPv6 literal in the origin.
            (&["[::1]"], Some(b"http://[::1"), Reject),
            (&["[::1]"], Some(b"http://[::1]]"), Reject),
            // `null`, empty and missing, with and without `*`.
            (&["example.com"], Some(b"null"), Reject),
            (&["example.com"], Some(b""), Reject),
            (&["example.com"], None, Reject),
            (&["example.com", "*"], Some(b"null"), Accept),
            (&["*"], Some(b""), Accept),
            (&["*"], None, Accept),
            // A trailing path is rejected (browsers never send one); surrounding OWS is not.
            (&["example.com"], Some(b"http://example.com/"), Reject),
            (&["example.com"], Some(b" http://example.com\t"), Accept),
            // Trailing dots are not normalised, as in Channels.
            (&["example.com."], Some(b"http://example.com."), Accept),
            (&["example.com"], Some(b"http://example.com."), Reject),
            // Any pattern may match; order does not matter.
            (
                &["a.example", "b.example", ".c.example"],
                Some(b"https://x.c.example"),
                Accept,
            ),
            (
                &["a.example", "b.example", ".c.example"],
                Some(b"https://d.example"),
                Reject,
            ),
        ]);
    }

    #[test]
    fn star_inside_a_host_is_refused_naming_the_pattern() {
        for (pattern, advice) in [
            ("*.example.com", "`.example.com`"),
            ("https://*.example.com:8443", "`https://.example.com:8443`"),
            ("*example.com", "`.example.com`"),
            ("a.*.example.com", "`.example.com`"),
            ("https://*", "`*` alone"),
            ("**", "`*` alone"),
        ] {
            let err = match OriginPolicy::parse(&[pattern]) {
                Err(err) => err,
                Ok(policy) => panic!("{pattern:?} must be refused, got {policy:?}"),
            };
            assert_eq!(
                err,
                OriginError::StarWildcard {
                    pattern: pattern.to_owned()
                }
            );
            let message = err.to_string();
            assert!(message.contains(&format!("{pattern:?}")), "{message}");
            assert!(message.contains(advice), "{message}");
        }
        // The same applies in allowed-hosts mode.
        assert!(matches!(
            OriginPolicy::allowed_hosts(&["*.example.com"], true),
            Err(OriginError::StarWildcard { .. })
        ));
    }

    #[test]
    fn invalid_patterns_are_start_up_errors_naming_the_pattern() {
        for (pattern, why) in [
            ("", "empty"),
            ("   ", "empty"),
            ("example.com:", "port"),
            ("example.com:abc", "port"),
            ("example.com:0", "port"),
            ("example.com:65536", "port"),
            ("https://example.com:99999", "port"),
            ("https://example.com:-1", "port"),
            ("[::1", "']'"),
            ("[::g]", "IPv6"),
            ("[::1]x", "IPv6"),
            ("[fe80::1%eth0]", "IPv6"),
            ("::1", "brackets"),
            ("http://::1:8000", "brackets"),
            (".[::1]", "IPv6"),
            ("https://example.com/", "path"),
            ("https://example.com/app", "path"),
            ("example.com?x=1", "query"),
            ("example.com#top", "fragment"),
            ("//example.com", "path"),
            ("https://user@example.com", "user info"),
            ("https://", "no host"),
            ("https://:443", "no host"),
            ("://example.com", "scheme"),
            ("1ttp://example.com", "scheme"),
            ("ht tp://example.com", "scheme"),
            (".", "leading dot"),
            ("example..com", "label"),
            ("exa mple.com", "label"),
            ("exa$mple.com", "label"),
        ] {
            let err = match OriginPolicy::parse(&["example.org", pattern]) {
                Err(err) => err,
                Ok(policy) => panic!("{pattern:?} must be refused, got {policy:?}"),
            };
            let OriginError::Invalid {
                pattern: named,
                reason,
            } = &err
            else {
                panic!("{pattern:?}: unexpected {err:?}");
            };
            assert_eq!(named, pattern);
            assert!(
                reason.contains(why),
                "{pattern:?}: reason {reason:?} lacks {why:?}"
            );
            assert!(err.to_string().contains(&format!("{pattern:?}")), "{err}");
        }
    }

    #[test]
    fn accepted_pattern_forms() {
        for pattern in [
            "*",
            "example.com",
            ".example.com",
            "https://example.com",
            "https://.example.com:8443",
            "example.com:8080",
            "[::1]",
            "http://[::1]:8000",
            "127.0.0.1",
            "localhost",
            "bücher.example",
            "under_score.example",
            "example.com.",
            "chrome-extension://abcdef",
            "git+ssh://example.com",
            "  example.com  ",
            "example.com:00080",
        ] {
            assert!(
                OriginPolicy::parse(&[pattern]).is_ok(),
                "{pattern:?} should parse"
            );
        }
    }

    #[test]
    fn allowed_hosts_mode() {
        // Debug with an empty list: exactly localhost, 127.0.0.1 and [::1], any scheme and port.
        let local = hosts_policy(&[], true);
        assert!(!local.rejects_everything());
        for origin in [
            &b"http://localhost:8000"[..],
            b"https://localhost",
            b"http://127.0.0.1:3000",
            b"http://[::1]:8000",
        ] {
            assert!(
                local.allows(Some(origin)),
                "{}",
                String::from_utf8_lossy(origin)
            );
        }
        for origin in [&b"http://sub.localhost"[..], b"http://example.com", b"null"] {
            assert!(
                !local.allows(Some(origin)),
                "{}",
                String::from_utf8_lossy(origin)
            );
        }
        assert!(!local.allows(None));

        // Debug with a non-empty list: the local hosts are not added.
        let configured = hosts_policy(&["example.com"], true);
        assert!(configured.allows(Some(b"https://example.com")));
        assert!(!configured.allows(Some(b"http://localhost:8000")));
        assert!(!configured.allows(Some(b"http://127.0.0.1")));

        // Without debug, the list is used as is.
        let configured = hosts_policy(&[".example.com", "127.0.0.1"], false);
        assert!(configured.allows(Some(b"https://api.example.com")));
        assert!(configured.allows(Some(b"http://127.0.0.1:8000")));
        assert!(!configured.allows(Some(b"http://localhost")));

        // Empty without debug: nothing passes, and the policy says so.
        let closed = hosts_policy(&[], false);
        assert!(closed.rejects_everything());
        assert!(!closed.allows(None));
        assert!(!closed.allows(Some(b"http://localhost")));

        // `*` allows everything, a missing Origin included.
        let open = hosts_policy(&["*"], false);
        assert!(!open.rejects_everything());
        assert!(open.allows(None));
        assert!(open.allows(Some(b"null")));
        let open = hosts_policy(&["*"], true);
        assert!(open.allows(None));
    }

    #[test]
    fn rejects_everything_only_for_an_empty_list() {
        let empty: &[&str] = &[];
        assert!(policy(empty).rejects_everything());
        assert!(!policy(&["*"]).rejects_everything());
        assert!(!policy(&["example.com"]).rejects_everything());
        let owned = vec![String::from("example.com")];
        assert!(OriginPolicy::parse(&owned).is_ok_and(|p| !p.rejects_everything()));
    }

    #[test]
    fn helpers() {
        assert!(in_domain(b"a.example.com", b"example.com"));
        assert!(in_domain(b"EXAMPLE.com", b"example.com"));
        assert!(!in_domain(b"badexample.com", b"example.com"));
        assert!(!in_domain(b"com", b"example.com"));
        assert_eq!(parse_port(b"65535"), Ok(65535));
        assert_eq!(parse_port(b"00080"), Ok(80));
        assert!(parse_port(b"000080").is_err());
        assert!(parse_port(b"0").is_err());
        assert_eq!(default_port(b"WSS"), Some(443));
        assert_eq!(default_port(b"ftp"), None);
    }
}
