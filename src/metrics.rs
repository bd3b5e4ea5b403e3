//! Per-core counters and their Prometheus text rendering (docs/protocol.md §5, `GET /metrics`).
//! Each core owns one cache-line-aligned `CoreStats` and is its only writer, so its updates
//! (relaxed `fetch_add`s) never contend for the line with another core's; any thread may read
//! it at scrape time. `render` writes every metric in the text exposition format 0.0.4, one sample
//! per core (`core="<i>"`). Pure: no IO, no clock, no dependency on other wsgate modules.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a handshake was refused (docs/protocol.md §1), the `outcome` label of `wsgate_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// 400: malformed head, bad key, several `Origin` headers.
    BadRequest400,
    /// 403: `Origin` not allowed, or a refused token on the upgrade request.
    Forbidden403,
    /// 404: neither the ws path nor an API route.
    NotFound404,
    /// 426: `Sec-WebSocket-Version` other than 13.
    UpgradeRequired426,
    /// 431: head over the configured size.
    TooLarge431,
    /// 503: over a connection limit.
    Unavailable503,
    /// No complete head within the handshake timeout (closed without a response).
    Timeout,
}

impl Rejection {
    /// Every rejection, in the order of `CoreStats::handshakes_rejected`.
    pub const ALL: [Self; 7] = [
        Self::BadRequest400,
        Self::Forbidden403,
        Self::NotFound404,
        Self::UpgradeRequired426,
        Self::TooLarge431,
        Self::Unavailable503,
        Self::Timeout,
    ];

    /// The `outcome` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::BadRequest400 => "bad_request",
            Self::Forbidden403 => "forbidden",
            Self::NotFound404 => "not_found",
            Self::UpgradeRequired426 => "upgrade_required",
            Self::TooLarge431 => "too_large",
            Self::Unavailable503 => "unavailable",
            Self::Timeout => "timeout",
        }
    }

    /// The rejection an HTTP status answers, for statuses a refused handshake can have.
    ///
    /// Other 4xx statuses count as `BadRequest400`; anything else (a 101, a 5xx other than
    /// 503) is not a handshake rejection and gives `None`.
    pub fn from_status(status: u16) -> Option<Self> {
        match status {
            403 => Some(Self::Forbidden403),
            404 => Some(Self::NotFound404),
            426 => Some(Self::UpgradeRequired426),
            431 => Some(Self::TooLarge431),
            503 => Some(Self::Unavailable503),
            400..=499 => Some(Self::BadRequest400),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One core's counters: written only by that core's worker, read by any thread at scrape time.
///
/// Aligned to 128 bytes (two cache lines: the adjacent-line prefetcher pairs them) so that one
/// core's writes never invalidate the line another core's counters live on. Counters only grow
/// (wrapping at 2^64); the two gauges go up and down. Update with the helper methods, which
/// rely on the single-writer rule.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CoreStats {
    /// Gauge: WebSocket connections currently open on this core (upgraded, not yet closed).
    pub open_connections: AtomicU64,
    /// Upgrades answered with 101.
    pub handshakes_ok: AtomicU64,
    /// Refused handshakes, indexed by `Rejection` (use `rejected`).
    pub handshakes_rejected: [AtomicU64; Rejection::ALL.len()],
    /// Successful authentications (the 200 `authentication` message), refreshes included.
    pub auth_ok: AtomicU64,
    /// Authentications refused with 4401 (bad, expired or revoked token).
    pub auth_invalid: AtomicU64,
    /// Authentications refused with 4403 (valid token, not allowed).
    pub auth_forbidden: AtomicU64,
    /// Connections closed with 4408 because no authentication came in time.
    pub auth_timeout: AtomicU64,
    /// Complete data messages received from clients.
    pub messages_in: AtomicU64,
    /// Bytes read from client sockets (heads and frame headers included).
    pub bytes_in: AtomicU64,
    /// Frames queued to clients (replies, fan-out deliveries, control frames).
    pub messages_out: AtomicU64,
    /// Bytes written to client sockets.
    pub bytes_out: AtomicU64,
    /// Frames queued to group members by fan-out on this core.
    pub fanout_deliveries: AtomicU64,
    /// Gauge: messages waiting in this core's cross-core inbox, as last seen by its worker.
    pub cross_core_queue_depth: AtomicU64,
    /// Messages this core could not hand to another core, whose queue was full.
    pub cross_core_lost: AtomicU64,
    /// Connections closed with 1008 because their outbound buffer exceeded its budget.
    pub slow_consumer_closes: AtomicU64,
    /// Non-upgrade HTTP requests answered by the API (any status).
    pub http_requests: AtomicU64,
    /// `POST /api/publish` requests accepted (202).
    pub api_publishes: AtomicU64,
    /// Connections closed with 4429 for exceeding their message rate.
    pub rate_limited_closes: AtomicU64,
    /// Connections closed with 4401 because their token expired.
    pub expired_closes: AtomicU64,
    /// Connections closed with 4401 by a revocation.
    pub revoked_closes: AtomicU64,
    /// Tickets issued by `POST /ws-auth`.
    pub tickets_issued: AtomicU64,
    /// Upgrades authenticated with a ticket.
    pub tickets_redeemed: AtomicU64,
    /// Upgrades refused for an unknown, used or expired ticket.
    pub tickets_refused: AtomicU64,
    /// `POST /ws-auth` requests refused by a ticket quota (429) or a full store (503).
    pub tickets_not_issued: AtomicU64,
    /// Upgrades refused with 503: the client address has too many connections open.
    pub ip_concurrent_refusals: AtomicU64,
    /// Upgrades refused with 503: the client address upgrades too often.
    pub ip_rate_refusals: AtomicU64,
}

impl CoreStats {
    /// A refused handshake or HTTP request.
    pub fn reject(&self, why: Rejection) {
        self.rejected(why).fetch_add(1, Ordering::Relaxed);
    }

    /// An authentication attempt's outcome (`still_awaiting`: none happened).
    pub fn count_auth(&self, still_awaiting: bool, verdict: crate::session::Verdict) {
        use crate::proto::close::CloseCode;
        use crate::session::Verdict;
        match verdict {
            Verdict::Continue if !still_awaiting => {
                self.auth_ok.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Close(CloseCode::TOKEN_INVALID, _) => {
                self.auth_invalid.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Close(CloseCode::FORBIDDEN, _) => {
                self.auth_forbidden.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// The counter of handshakes refused for `reason`.
    #[inline]
    pub fn rejected(&self, reason: Rejection) -> &AtomicU64 {
        // `index` is below `Rejection::ALL.len()`, the array's length, by construction.
        &self.handshakes_rejected[reason.index()]
    }
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Prometheus metric type.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// A metric with one sample per core.
struct Plain {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    field: fn(&CoreStats) -> &AtomicU64,
}

const PLAIN: [Plain; 20] = [
    Plain {
        name: "wsgate_open_connections",
        help: "WebSocket connections currently open.",
        kind: Kind::Gauge,
        field: |s| &s.open_connections,
    },
    Plain {
        name: "wsgate_received_messages_total",
        help: "Complete data messages received from clients.",
        kind: Kind::Counter,
        field: |s| &s.messages_in,
    },
    Plain {
        name: "wsgate_received_bytes_total",
        help: "Bytes read from client sockets.",
        kind: Kind::Counter,
        field: |s| &s.bytes_in,
    },
    Plain {
        name: "wsgate_sent_messages_total",
        help: "Frames queued to clients.",
        kind: Kind::Counter,
        field: |s| &s.messages_out,
    },
    Plain {
        name: "wsgate_sent_bytes_total",
        help: "Bytes written to client sockets.",
        kind: Kind::Counter,
        field: |s| &s.bytes_out,
    },
    Plain {
        name: "wsgate_fanout_deliveries_total",
        help: "Frames queued to group members by group fan-out.",
        kind: Kind::Counter,
        field: |s| &s.fanout_deliveries,
    },
    Plain {
        name: "wsgate_cross_core_queue_messages",
        help: "Messages waiting in the core's cross-core inbox.",
        kind: Kind::Gauge,
        field: |s| &s.cross_core_queue_depth,
    },
    Plain {
        name: "wsgate_cross_core_lost_total",
        help: "Publishes this core could not hand to another core because that core's queue was full (the group's members there are closed 1008).",
        kind: Kind::Counter,
        field: |s| &s.cross_core_lost,
    },
    Plain {
        name: "wsgate_slow_consumer_closes_total",
        help: "Connections closed with 1008 for exceeding their outbound buffer budget.",
        kind: Kind::Counter,
        field: |s| &s.slow_consumer_closes,
    },
    Plain {
        name: "wsgate_http_requests_total",
        help: "Non-upgrade HTTP API requests answered.",
        kind: Kind::Counter,
        field: |s| &s.http_requests,
    },
    Plain {
        name: "wsgate_api_publishes_total",
        help: "Publish requests accepted by the HTTP API.",
        kind: Kind::Counter,
        field: |s| &s.api_publishes,
    },
    Plain {
        name: "wsgate_rate_limited_closes_total",
        help: "Connections closed with 4429 for exceeding their message rate.",
        kind: Kind::Counter,
        field: |s| &s.rate_limited_closes,
    },
    Plain {
        name: "wsgate_expired_closes_total",
        help: "Connections closed with 4401 because their token expired.",
        kind: Kind::Counter,
        field: |s| &s.expired_closes,
    },
    Plain {
        name: "wsgate_revoked_closes_total",
        help: "Connections closed with 4401 by a revocation.",
        kind: Kind::Counter,
        field: |s| &s.revoked_closes,
    },
    Plain {
        name: "wsgate_tickets_issued_total",
        help: "Tickets issued by POST /ws-auth.",
        kind: Kind::Counter,
        field: |s| &s.tickets_issued,
    },
    Plain {
        name: "wsgate_tickets_redeemed_total",
        help: "Upgrades authenticated with a ticket.",
        kind: Kind::Counter,
        field: |s| &s.tickets_redeemed,
    },
    Plain {
        name: "wsgate_tickets_refused_total",
        help: "Upgrades refused for an unknown, used or expired ticket.",
        kind: Kind::Counter,
        field: |s| &s.tickets_refused,
    },
    Plain {
        name: "wsgate_tickets_not_issued_total",
        help: "POST /ws-auth refused by a user's or an address's ticket quota (429) or a full ticket store (503).",
        kind: Kind::Counter,
        field: |s| &s.tickets_not_issued,
    },
    Plain {
        name: "wsgate_ip_concurrent_refusals_total",
        help: "Upgrades refused with 503 because the client address had too many connections.",
        kind: Kind::Counter,
        field: |s| &s.ip_concurrent_refusals,
    },
    Plain {
        name: "wsgate_ip_rate_refusals_total",
        help: "Upgrades refused with 503 because the client address upgraded too often.",
        kind: Kind::Counter,
        field: |s| &s.ip_rate_refusals,
    },
];

/// `Content-Type` of the rendered text (Prometheus text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric with `# HELP` and `# TYPE` lines, names `wsgate_<noun>_<unit>` with
/// `_total` on counters, one sample per core labelled `core="<i>"` (plus `outcome="..."` for
/// handshakes and authentication), in the text exposition format 0.0.4.
///
/// Each family's samples are contiguous, as the format requires; `cores[i]` is core `i`. The
/// values are read one by one with relaxed loads, so a scrape is not an atomic snapshot.
pub fn render(cores: &[&CoreStats], out: &mut String) {
    out.reserve(4096 + cores.len() * 1024);

    let name = "wsgate_handshakes_total";
    family_header(
        out,
        name,
        "WebSocket upgrade requests by outcome.",
        Kind::Counter,
    );
    for (i, core) in cores.iter().enumerate() {
        sample(out, name, i, Some("ok"), read(&core.handshakes_ok));
        for reason in Rejection::ALL {
            sample(
                out,
                name,
                i,
                Some(reason.label()),
                read(core.rejected(reason)),
            );
        }
    }

    let name = "wsgate_auth_total";
    family_header(
        out,
        name,
        "Authentication outcomes: ok, invalid (4401), forbidden (4403), timeout (4408).",
        Kind::Counter,
    );
    for (i, core) in cores.iter().enumerate() {
        for (outcome, counter) in [
            ("ok", &core.auth_ok),
            ("invalid", &core.auth_invalid),
            ("forbidden", &core.auth_forbidden),
            ("timeout", &core.auth_timeout),
        ] {
            sample(out, name, i, Some(outcome), read(counter));
        }
    }

    for metric in &PLAIN {
        family_header(out, metric.name, metric.help, metric.kind);
        for (i, core) in cores.iter().enumerate() {
            sample(out, metric.name, i, None, read((metric.field)(core)));
        }
    }
}

fn family_header(out: &mut String, name: &str, help: &str, kind: Kind) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    out.push_str(help);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind.as_str());
    out.push('\n');
}

/// One sample line. Label values here are core numbers and fixed words: nothing to escape.
fn sample(out: &mut String, name: &str, core: usize, outcome: Option<&str>, value: u64) {
    out.push_str(name);
    // Writing to a String cannot fail.
    let _ = write!(out, "{{core=\"{core}\"");
    if let Some(outcome) = outcome {
        out.push_str(",outcome=\"");
        out.push_str(outcome);
        out.push('"');
    }
    let _ = writeln!(out, "}} {value}");
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(gauge: &AtomicU64, n: u64) {
        let now = gauge.load(Ordering::Relaxed);
        gauge.store(now.saturating_sub(n), Ordering::Relaxed);
    }

    fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// One parsed sample line: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, u64);

    /// Parses the exposition text strictly: HELP and TYPE once per family and before its
    /// samples, a family's samples contiguous, every sample `name{k="v",...} value`.
    fn parse(text: &str) -> (BTreeMap<String, &str>, Vec<Sample>) {
        assert!(text.ends_with('\n'));
        let mut types: BTreeMap<String, &str> = BTreeMap::new();
        let mut helped = BTreeSet::new();
        let mut finished = BTreeSet::new();
        let mut current: Option<String> = None;
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty());
                assert!(helped.insert(name.to_owned()), "HELP twice: {name}");
                if let Some(prev) = current.replace(name.to_owned()) {
                    finished.insert(prev);
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(kind == "counter" || kind == "gauge", "{line}");
                assert_eq!(current.as_deref(), Some(name), "TYPE after HELP: {line}");
                assert!(types.insert(name.to_owned(), kind).is_none(), "TYPE twice");
                continue;
            }
            assert!(!line.starts_with('#'), "{line}");
            let (name, rest) = line.split_once('{').unwrap();
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert_eq!(current.as_deref(), Some(name), "sample outside its family");
            assert!(!finished.contains(name), "family split: {name}");
            let (labels, value) = rest.split_once("} ").unwrap();
            let labels: BTreeMap<String, String> = labels
                .split(',')
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap();
                    let v = v.strip_prefix('"').unwrap().strip_suffix('"').unwrap();
                    assert!(!v.contains(['"', '\\', '\n']));
                    (k.to_owned(), v.to_owned())
                })
                .collect();
            samples.push((name.to_owned(), labels, value.parse().unwrap()));
        }
        assert_eq!(helped.len(), types.len());
        (types, samples)
    }

    fn rendered(cores: &[&CoreStats]) -> String {
        let mut out = String::new();
        render(cores, &mut out);
        out
    }

    fn value(samples: &[Sample], name: &str, core: usize, outcome: Option<&str>) -> u64 {
        let matching: Vec<u64> = samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && labels.get("core").map(String::as_str) == Some(&core.to_string())
                    && labels.get("outcome").map(String::as_str) == outcome
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(matching.len(), 1, "{name} core {core} {outcome:?}");
        matching[0]
    }

    #[test]
    fn renders_valid_exposition_text() {
        let cores = [
            CoreStats::default(),
            CoreStats::default(),
            CoreStats::default(),
        ];
        let refs: Vec<&CoreStats> = cores.iter().collect();
        let text = rendered(&refs);
        let (types, samples) = parse(&text);
        for (name, kind) in &types {
            assert!(name.starts_with("wsgate_"), "{name}");
            assert_eq!(*kind == "counter", name.ends_with("_total"), "{name}");
            for core in 0..cores.len() {
                assert!(
                    samples
                        .iter()
                        .any(|(n, labels, _)| n == name
                            && labels.get("core") == Some(&core.to_string())),
                    "{name} has no sample for core {core}"
                );
            }
        }
        assert!(samples.iter().all(|(_, _, v)| *v == 0));
        assert!(samples.iter().all(|(n, _, _)| types.contains_key(n)));
        // handshakes: ok + 7 rejections, auth: 4 outcomes, 10 plain metrics; per core.
        assert_eq!(samples.len(), cores.len() * (8 + 4 + PLAIN.len()));
        assert_eq!(types.len(), 2 + PLAIN.len());
    }

    #[test]
    fn values_match_what_was_added() {
        let cores = [CoreStats::default(), CoreStats::default()];
        let (a, b) = (&cores[0], &cores[1]);
        inc(&a.handshakes_ok);
        add(&a.handshakes_ok, 4);
        inc(a.rejected(Rejection::Forbidden403));
        add(b.rejected(Rejection::Timeout), 9);
        inc(b.rejected(Rejection::TooLarge431));
        add(&a.auth_ok, 3);
        add(&b.auth_invalid, 2);
        inc(&b.auth_forbidden);
        inc(&a.auth_timeout);
        add(&a.messages_in, 10);
        add(&a.bytes_in, 1_000);
        add(&b.messages_out, 20);
        add(&b.bytes_out, u64::MAX);
        add(&a.fanout_deliveries, 7);
        add(&a.open_connections, 5);
        sub(&a.open_connections, 2);
        inc(&b.open_connections);
        sub(&b.open_connections, 3);
        set(&b.cross_core_queue_depth, 42);
        add(&a.cross_core_lost, 12);
        inc(&a.slow_consumer_closes);
        add(&b.http_requests, 6);
        inc(&b.api_publishes);
        add(&a.rate_limited_closes, 2);
        add(&b.expired_closes, 3);
        add(&a.revoked_closes, 4);
        add(&b.tickets_issued, 5);
        add(&a.tickets_redeemed, 6);
        add(&b.tickets_refused, 7);
        add(&a.tickets_not_issued, 11);
        add(&a.ip_concurrent_refusals, 8);
        add(&b.ip_rate_refusals, 9);

        let (_, s) = parse(&rendered(&[a, b]));
        let hs = "wsgate_handshakes_total";
        assert_eq!(value(&s, hs, 0, Some("ok")), 5);
        assert_eq!(value(&s, hs, 1, Some("ok")), 0);
        assert_eq!(value(&s, hs, 0, Some("forbidden")), 1);
        assert_eq!(value(&s, hs, 1, Some("timeout")), 9);
        assert_eq!(value(&s, hs, 1, Some("too_large")), 1);
        assert_eq!(value(&s, hs, 0, Some("timeout")), 0);
        for reason in Rejection::ALL {
            value(&s, hs, 0, Some(reason.label()));
            value(&s, hs, 1, Some(reason.label()));
        }
        let auth = "wsgate_auth_total";
        assert_eq!(value(&s, auth, 0, Some("ok")), 3);
        assert_eq!(value(&s, auth, 1, Some("invalid")), 2);
        assert_eq!(value(&s, auth, 1, Some("forbidden")), 1);
        assert_eq!(value(&s, auth, 0, Some("timeout")), 1);
        assert_eq!(value(&s, auth, 1, Some("timeout")), 0);
        let plain = [
            ("wsgate_open_connections", 3, 0),
            ("wsgate_received_messages_total", 10, 0),
            ("wsgate_received_bytes_total", 1_000, 0),
            ("wsgate_sent_messages_total", 0, 20),
            ("wsgate_sent_bytes_total", 0, u64::MAX),
            ("wsgate_fanout_deliveries_total", 7, 0),
            ("wsgate_cross_core_queue_messages", 0, 42),
            ("wsgate_cross_core_lost_total", 12, 0),
            ("wsgate_slow_consumer_closes_total", 1, 0),
            ("wsgate_http_requests_total", 0, 6),
            ("wsgate_api_publishes_total", 0, 1),
            ("wsgate_rate_limited_closes_total", 2, 0),
            ("wsgate_expired_closes_total", 0, 3),
            ("wsgate_revoked_closes_total", 4, 0),
            ("wsgate_tickets_issued_total", 0, 5),
            ("wsgate_tickets_redeemed_total", 6, 0),
            ("wsgate_tickets_refused_total", 0, 7),
            ("wsgate_tickets_not_issued_total", 11, 0),
            ("wsgate_ip_concurrent_refusals_total", 8, 0),
            ("wsgate_ip_rate_refusals_total", 0, 9),
        ];
        assert_eq!(plain.len(), PLAIN.len());
        for (name, on_a, on_b) in plain {
            assert_eq!(value(&s, name, 0, None), on_a, "{name}");
            assert_eq!(value(&s, name, 1, None), on_b, "{name}");
        }
    }

    #[test]
    fn no_cores_still_describes_every_metric() {
        let text = rendered(&[]);
        let (types, samples) = parse(&text);
        assert_eq!(types.len(), 2 + PLAIN.len());
        assert!(samples.is_empty());
    }

    #[test]
    fn rejections_have_distinct_labels_and_statuses() {
        let labels: BTreeSet<&str> = Rejection::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Rejection::ALL.len());
        assert!(!labels.contains("ok"));
        for (i, r) in Rejection::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let cases = [
            (400, Some(Rejection::BadRequest400)),
            (403, Some(Rejection::Forbidden403)),
            (404, Some(Rejection::NotFound404)),
            (426, Some(Rejection::UpgradeRequired426)),
            (431, Some(Rejection::TooLarge431)),
            (503, Some(Rejection::Unavailable503)),
            (405, Some(Rejection::BadRequest400)),
            (101, None),
            (200, None),
            (500, None),
        ];
        for (status, want) in cases {
            assert_eq!(Rejection::from_status(status), want, "{status}");
        }
    }

    #[test]
    fn layout_is_cache_line_padded() {
        assert_eq!(align_of::<CoreStats>(), 128);
        assert_eq!(size_of::<CoreStats>() % 128, 0);
        let two = [CoreStats::default(), CoreStats::default()];
        let gap = std::ptr::from_ref(&two[1]) as usize - std::ptr::from_ref(&two[0]) as usize;
        assert!(gap >= 128);
    }

    #[test]
    fn readable_from_another_thread() {
        let stats = CoreStats::default();
        add(&stats.messages_in, 3);
        let seen = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut out = String::new();
                    render(&[&stats], &mut out);
                    out
                })
                .join()
                .unwrap()
        });
        assert!(
            seen.contains("wsgate_received_messages_total{core=\"0\"} 3\n"),
            "{seen}"
        );
    }
}
