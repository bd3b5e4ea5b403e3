//! Configuration: one clap `Config` (every flag also read from `WSGATE_<FLAG>`) parsed once into
//! typed, immutable `Settings`. Secrets come from the environment or a file, never from argv, and
//! a bad value is a start-up error that names the flag. Pure: the caller passes the environment.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::auth::api_keys::ApiKeys;
use crate::auth::{Algorithm, Verifier};
use crate::hub::MAX_CORES;
use crate::limits::TrustedProxies;
use crate::origin::{OriginError, OriginPolicy};
use crate::tables::TableSizes;

/// Command-line flags and their `WSGATE_*` environment twins.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "wsgate",
    version,
    about = "A thread-per-core WebSocket gateway"
)]
pub struct Config {
    /// Address every worker listens on (one SO_REUSEPORT listener per worker).
    #[arg(long, env = "WSGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Worker threads, each with its own runtime and listener [default: all available cores].
    #[arg(long, env = "WSGATE_WORKERS")]
    pub workers: Option<NonZeroUsize>,

    /// Pin worker i to CPU i (modulo the CPUs this process may use).
    #[arg(long, env = "WSGATE_PIN_CORES")]
    pub pin_cores: bool,

    /// Share the listen address with a gateway already listening on it, to hand over without
    /// a gap (start the new one with this flag, then stop the old one). Without it, an address
    /// already in use is a start-up error: two gateways on one port split every group.
    #[arg(long, env = "WSGATE_HANDOVER")]
    pub handover: bool,

    /// io_uring submission-queue entries per worker (at least 256).
    #[arg(long, env = "WSGATE_RING_ENTRIES", default_value_t = 1024)]
    pub ring_entries: u32,

    /// Listen backlog per worker (also capped by net.core.somaxconn).
    #[arg(long, env = "WSGATE_BACKLOG", default_value_t = 4096)]
    pub backlog: u32,

    /// I/O driver: auto uses io_uring and falls back to epoll where it is refused.
    #[arg(long, env = "WSGATE_DRIVER", value_enum, default_value_t = DriverChoice::Auto)]
    pub driver: DriverChoice,

    /// How io_uring delivers completions to a worker: coop at the worker's next system call,
    /// signal by interrupting it (the kernel's default).
    #[arg(long, env = "WSGATE_URING_TASKRUN", value_enum, default_value_t = TaskRun::Coop)]
    pub uring_taskrun: TaskRun,

    /// Open connections allowed in the whole process; beyond it upgrades get 503.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Open connections allowed per worker [default: --max-connections].
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS_PER_WORKER")]
    pub max_connections_per_worker: Option<usize>,

    /// Seconds a 503 answer asks the client to wait (Retry-After).
    #[arg(long, env = "WSGATE_RETRY_AFTER_SECS", default_value_t = 1)]
    pub retry_after_secs: u32,

    /// Path of the WebSocket endpoint.
    #[arg(long, env = "WSGATE_WS_PATH", default_value = "/ws")]
    pub ws_path: String,

    /// Allowed Origin patterns, comma-separated, repeatable (docs/protocol.md §2).
    #[arg(
        long,
        env = "WSGATE_ALLOWED_ORIGINS",
        value_delimiter = ',',
        conflicts_with = "allowed_hosts"
    )]
    pub allowed_origins: Vec<String>,

    /// File of allowed Origin patterns, one per line (`#` starts a comment), added to
    /// --allowed-origins; re-read on SIGHUP.
    #[arg(
        long,
        env = "WSGATE_ALLOWED_ORIGINS_FILE",
        conflicts_with = "allowed_hosts"
    )]
    pub allowed_origins_file: Option<PathBuf>,

    /// Allowed hosts (AllowedHostsOriginValidator mode), comma-separated, repeatable; this mode is
    /// the default when --allowed-origins is not given.
    #[arg(long, env = "WSGATE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Debug mode: with an empty --allowed-hosts list, allow localhost, 127.0.0.1 and [::1].
    #[arg(long, env = "WSGATE_DEBUG")]
    pub debug: bool,

    /// Development mode: --debug, plus a generated HS256 secret when none is set, and a
    /// ready-to-use token and browser snippet printed at start-up.
    #[arg(long, env = "WSGATE_DEV")]
    pub dev: bool,

    /// File holding the HS256 secret (the secret may instead be in WSGATE_JWT_SECRET).
    #[arg(long, env = "WSGATE_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// File holding the previous HS256 secret during a key rotation (or
    /// WSGATE_JWT_PREVIOUS_SECRET): tokens signed with it are accepted until
    /// --jwt-previous-secret-until, or until the time on the file's optional second line
    /// `until=<time>` (re-read on SIGHUP, so a rotation needs no restart).
    #[arg(long, env = "WSGATE_JWT_PREVIOUS_SECRET_FILE")]
    pub jwt_previous_secret_file: Option<PathBuf>,

    /// When the previous HS256 secret stops being accepted: an RFC 3339 time
    /// (`2026-12-01T00:00:00Z`) or Unix seconds. Required with a previous secret.
    #[arg(long, env = "WSGATE_JWT_PREVIOUS_SECRET_UNTIL")]
    pub jwt_previous_secret_until: Option<String>,

    /// PEM public key file for RS256/ES256 tokens (set --jwt-algorithm to match).
    #[arg(long, env = "WSGATE_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// The one JWT algorithm accepted; every other `alg` is refused.
    #[arg(long, env = "WSGATE_JWT_ALGORITHM", value_enum)]
    pub jwt_algorithm: Option<JwtAlgorithm>,

    /// Seconds of clock leeway for exp, nbf and iat.
    #[arg(long, env = "WSGATE_JWT_LEEWAY_SECS", default_value_t = 0)]
    pub jwt_leeway_secs: u64,

    /// Required `aud` claim (not checked when unset).
    #[arg(long, env = "WSGATE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim (not checked when unset).
    #[arg(long, env = "WSGATE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Authentication methods accepted, comma-separated.
    #[arg(
        long,
        env = "WSGATE_AUTH_METHODS",
        value_enum,
        value_delimiter = ',',
        default_value = "first-frame,header,subprotocol,ticket"
    )]
    pub auth_methods: Vec<AuthMethod>,

    /// Accept `?token=<JWT>` on the upgrade URL (off: such upgrades get 401 and close 4401).
    #[arg(long, env = "WSGATE_ALLOW_QUERY_TOKEN")]
    pub allow_query_token: bool,

    /// Seconds a ticket from `POST /ws-auth` stays redeemable (never beyond its token's exp).
    #[arg(long, env = "WSGATE_TICKET_TTL", default_value_t = 10)]
    pub ticket_ttl: u64,

    /// Tickets issued and not yet redeemed or expired, at most (beyond: 503).
    #[arg(long, env = "WSGATE_MAX_TICKETS", default_value_t = 100_000)]
    pub max_tickets: usize,

    /// Tickets one user may hold outstanding (issued, not redeemed, not expired), at most
    /// (beyond: 429; 0: no limit).
    #[arg(long, env = "WSGATE_MAX_TICKETS_PER_USER", default_value_t = 10)]
    pub max_tickets_per_user: usize,

    /// Tickets one client address (IPv6 by /64) may hold outstanding, at most (beyond: 429;
    /// 0: no limit).
    #[arg(long, env = "WSGATE_MAX_TICKETS_PER_IP", default_value_t = 100)]
    pub max_tickets_per_ip: usize,

    /// Longest lifetime a token may claim, in seconds: a token whose `exp - iat` (or, without
    /// `iat`, whose `exp - now`) is longer is refused (401 "token lifetime too long"), and a
    /// revocation is kept this long plus twice the leeway, so no revoked token outlives it.
    #[arg(long, env = "WSGATE_MAX_TOKEN_LIFETIME_SECS", default_value_t = 86_400)]
    pub max_token_lifetime_secs: u64,

    /// Revoked users and jtis kept at once, at most (beyond: `POST /api/revoke` gets 503).
    #[arg(long, env = "WSGATE_MAX_REVOCATIONS", default_value_t = 100_000)]
    pub max_revocations: usize,

    /// Messages a connection may send per second on average (0: no limit); beyond its burst
    /// the connection is closed with 4429.
    #[arg(long, env = "WSGATE_MAX_MESSAGES_PER_SEC", default_value_t = 0)]
    pub max_messages_per_sec: u32,

    /// Messages a connection may send at once above the average rate.
    #[arg(long, env = "WSGATE_BURST", default_value_t = 100)]
    pub burst: u32,

    /// Open connections one client address may hold (0: no limit; IPv6 counts per /64);
    /// beyond it upgrades get 503 with Retry-After.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: u32,

    /// New upgrades one client address may make per second (0: no limit), with a burst of
    /// --upgrade-burst; beyond it 503 with Retry-After.
    #[arg(long, env = "WSGATE_MAX_UPGRADES_PER_IP_PER_SEC", default_value_t = 0)]
    pub max_upgrades_per_ip_per_sec: u32,

    /// Upgrades one client address may make at once above that rate.
    #[arg(long, env = "WSGATE_UPGRADE_BURST", default_value_t = 20)]
    pub upgrade_burst: u32,

    /// Proxies whose X-Forwarded-For is believed (addresses or CIDRs, comma-separated); without
    /// any, X-Forwarded-For is ignored and the peer address is the client's.
    #[arg(long, env = "WSGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Milliseconds allowed for the whole upgrade request head.
    #[arg(long, env = "WSGATE_HANDSHAKE_TIMEOUT_MS", default_value_t = 5_000)]
    pub handshake_timeout_ms: u64,

    /// Milliseconds after the upgrade within which the client must authenticate.
    #[arg(long, env = "WSGATE_AUTH_TIMEOUT_MS", default_value_t = 5_000)]
    pub auth_timeout_ms: u64,

    /// Largest upgrade or HTTP request head in bytes (beyond: 431).
    #[arg(long, env = "WSGATE_MAX_HEAD_BYTES", default_value_t = 8_192)]
    pub max_head_bytes: usize,

    /// Largest frame payload in bytes (beyond: close 1009).
    #[arg(long, env = "WSGATE_MAX_FRAME_BYTES", default_value_t = 1 << 20)]
    pub max_frame_bytes: usize,

    /// Largest message in bytes, all fragments together (beyond: close 1009).
    #[arg(long, env = "WSGATE_MAX_MESSAGE_BYTES", default_value_t = 1 << 20)]
    pub max_message_bytes: usize,

    /// Bytes a connection may have queued for sending (beyond: close 1008).
    #[arg(long, env = "WSGATE_MAX_OUTBOUND_BYTES", default_value_t = 1 << 20)]
    pub max_outbound_bytes: usize,

    /// Milliseconds without any frame from the client before the server pings it.
    #[arg(long, env = "WSGATE_PING_INTERVAL_MS", default_value_t = 20_000)]
    pub ping_interval_ms: u64,

    /// Milliseconds without any frame from the client before closing with 4408.
    #[arg(long, env = "WSGATE_KEEPALIVE_TIMEOUT_MS", default_value_t = 30_000)]
    pub keepalive_timeout_ms: u64,

    /// Milliseconds to wait for the peer's side of a closing handshake, once our Close frame
    /// has been handed to the socket.
    #[arg(long, env = "WSGATE_CLOSE_TIMEOUT_MS", default_value_t = 1_000)]
    pub close_timeout_ms: u64,

    /// Milliseconds a closing connection's queued output and Close frame may take to reach
    /// the socket of a peer that is not reading (a slow consumer closed with 1008 that reads
    /// again gets its messages and the 1008); then the connection is dropped.
    #[arg(long, env = "WSGATE_CLOSE_FLUSH_TIMEOUT_MS", default_value_t = 10_000)]
    pub close_flush_timeout_ms: u64,

    /// Seconds a shutdown (SIGTERM/SIGINT) may take: connections get close 1001 and their
    /// queued output is flushed; whatever is still open then is dropped. A second signal exits
    /// at once.
    #[arg(long, env = "WSGATE_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,

    /// Groups one connection may be in at once (a join beyond it gets a 400 error).
    #[arg(long, env = "WSGATE_MAX_GROUPS_PER_CONNECTION", default_value_t = 100)]
    pub max_groups_per_connection: usize,

    /// Publishes one worker's queue from the other workers holds; a publish that finds it full
    /// is lost for that worker, counted, and the group's members there are closed 1008.
    #[arg(long, env = "WSGATE_HUB_QUEUE_MESSAGES", default_value_t = crate::hub::INBOX_CAPACITY)]
    pub hub_queue_messages: usize,

    /// File with the HTTP API's bearer keys, one per line (or put one key in WSGATE_API_KEY);
    /// without any key, `POST /api/publish` and `POST /api/revoke` answer 403.
    #[arg(long, env = "WSGATE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Largest HTTP API request body in bytes (beyond: 413).
    #[arg(long, env = "WSGATE_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Log format.
    #[arg(long, env = "WSGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level or filter directive (e.g. `info`, `wsgate=debug`).
    #[arg(long, env = "WSGATE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Print the bound listen address on the first line of stdout (for scripts using port 0).
    #[arg(long, env = "WSGATE_PRINT_ADDR")]
    pub print_addr: bool,

    /// Validate every flag, variable and file, print a summary, and exit (0: valid).
    #[arg(long)]
    pub check_config: bool,

    /// Test hooks (never in production): `POST /debug/stall?ms=N` blocks the worker thread
    /// that serves it, as a stuck core would; `POST /debug/panic` panics it.
    #[arg(long, hide = true)]
    pub test_hooks: bool,
}

/// Which I/O driver the workers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverChoice {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    /// io_uring only; start-up fails where it is refused.
    IoUring,
    /// epoll only.
    Epoll,
}

/// `--uring-taskrun` values: when the kernel runs the work that posts an io_uring completion
/// (a socket became readable, an accept finished) for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskRun {
    /// At the worker's next system call or wait, with no inter-processor interrupt
    /// (`IORING_SETUP_COOP_TASKRUN`, Linux 5.19+; without it the ring is made as for `signal`).
    Coop,
    /// At once, interrupting the worker's core (the io_uring default).
    Signal,
}

/// `--jwt-algorithm` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256, public key in PEM.
    Rs256,
    /// ECDSA P-256 with SHA-256, public key in PEM.
    Es256,
}

/// Ways a connection may authenticate (docs/protocol.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMethod {
    /// `{"action":"authenticate","token":...}` as the first frame.
    FirstFrame,
    /// `Authorization: Bearer <JWT>` on the upgrade request.
    Header,
    /// `Sec-WebSocket-Protocol: wsgate.v1, wsgate.bearer.<JWT>`.
    Subprotocol,
    /// `?ticket=<t>` from `POST /ws-auth`.
    Ticket,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Size limits on everything reachable from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (431 beyond).
    pub max_head_bytes: usize,
    /// Largest frame payload (1009 beyond).
    pub max_frame_bytes: usize,
    /// Largest assembled message (1009 beyond).
    pub max_message_bytes: usize,
    /// Largest outbound queue per connection (1008 beyond).
    pub max_outbound_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: 8 * 1024,
            max_frame_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
            max_outbound_bytes: 1 << 20,
        }
    }
}

/// Deadlines, all docs/protocol.md defaults (Daphne's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Whole request head.
    pub handshake: Duration,
    /// Upgrade to successful authentication.
    pub auth: Duration,
    /// Client silence before a ping.
    pub ping_after: Duration,
    /// Client silence before close 4408.
    pub keepalive: Duration,
    /// Wait for the peer's half of a closing handshake.
    pub close: Duration,
    /// Wait for a non-reading peer's socket to take the output queued before our Close.
    pub close_flush: Duration,
    /// The whole graceful shutdown.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(5),
            auth: Duration::from_secs(5),
            ping_after: Duration::from_secs(20),
            keepalive: Duration::from_secs(30),
            close: Duration::from_secs(1),
            close_flush: Duration::from_secs(10),
            shutdown: Duration::from_secs(10),
        }
    }
}

/// How connections authenticate.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Token verifier (keys, algorithm pin, claim rules).
    pub verifier: Verifier,
    /// First-frame `authenticate` accepted.
    pub first_frame: bool,
    /// `Authorization: Bearer` on the upgrade accepted.
    pub header: bool,
    /// `wsgate.bearer.<JWT>` subprotocol accepted.
    pub subprotocol: bool,
    /// `?token=` accepted.
    pub query_token: bool,
    /// `?ticket=` accepted (and `POST /ws-auth` served).
    pub ticket: bool,
}

/// Per-connection and per-client-address limits.
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Average messages per second per connection (0: none).
    pub messages_per_sec: u32,
    /// Burst above it.
    pub burst: u32,
    /// Whose X-Forwarded-For to believe.
    pub trusted_proxies: TrustedProxies,
}

/// Which driver a worker should build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring.
    IoUring,
    /// epoll (monoio's legacy driver).
    Epoll,
}

impl Driver {
    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::IoUring => "io_uring",
            Self::Epoll => "epoll",
        }
    }
}

/// Everything the runtime needs, parsed and checked once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address (port 0 picks one; every worker then shares it).
    pub listen: SocketAddr,
    /// Number of workers.
    pub workers: usize,
    /// Pin workers to CPUs.
    pub pin_cores: bool,
    /// Share the listen address with a gateway already on it (`--handover`).
    pub handover: bool,
    /// io_uring entries per worker.
    pub ring_entries: u32,
    /// Listen backlog per worker.
    pub backlog: u32,
    /// Requested driver.
    pub driver: DriverChoice,
    /// io_uring completion delivery.
    pub uring_taskrun: TaskRun,
    /// Global connection cap.
    pub max_connections: usize,
    /// Per-worker connection cap.
    pub max_connections_per_worker: usize,
    /// Retry-After seconds on 503.
    pub retry_after_secs: u32,
    /// WebSocket path.
    pub ws_path: String,
    /// Origin rules.
    pub origin: OriginPolicy,
    /// Authentication.
    pub auth: AuthSettings,
    /// Size limits.
    pub limits: Limits,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Print the bound address on stdout.
    pub print_addr: bool,
    /// Groups one connection may join.
    pub max_groups_per_connection: usize,
    /// Capacity of each worker's queue of publishes from the others.
    pub hub_queue_messages: usize,
    /// HTTP API bearer keys.
    pub api_keys: ApiKeys,
    /// Largest HTTP API body.
    pub max_body_bytes: usize,
    /// Message and per-address limits.
    pub rate: RateLimits,
    /// Sizes of the shared tables, built once at start (`tables::Tables::new`).
    pub tables: TableSizes,
}

/// A configuration that cannot start, with the flag or variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No way to verify tokens was configured.
    #[error(
        "no token key: set WSGATE_JWT_SECRET (HS256 secret), or --jwt-secret-file, or \
         --jwt-public-key-file with --jwt-algorithm rs256|es256 (or run with --dev to try it out)"
    )]
    NoKey,
    /// A key file could not be read.
    #[error("{flag}: cannot read {path}: {source}")]
    ReadFile {
        /// The flag naming the file.
        flag: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key or flag value is unusable.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag or variable.
        flag: &'static str,
        /// Why.
        reason: String,
    },
    /// An origin or host pattern is invalid.
    #[error("{flag}: {source}")]
    Origin {
        /// The flag.
        flag: &'static str,
        /// The pattern error.
        source: OriginError,
    },
}

/// The environment's part of the configuration (secrets never come from argv).
#[derive(Clone, Default)]
pub struct Env {
    /// `WSGATE_JWT_SECRET`.
    pub jwt_secret: Option<String>,
    /// `WSGATE_API_KEY`.
    pub api_key: Option<String>,
    /// `WSGATE_JWT_PREVIOUS_SECRET`.
    pub jwt_previous_secret: Option<String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = self.jwt_secret.as_ref().map(|_| "[redacted]");
        let api_key = self.api_key.as_ref().map(|_| "[redacted]");
        let previous = self.jwt_previous_secret.as_ref().map(|_| "[redacted]");
        f.debug_struct("Env")
            .field("jwt_secret", &secret)
            .field("api_key", &api_key)
            .field("jwt_previous_secret", &previous)
            .finish()
    }
}

impl Env {
    /// Reads the variables from the process environment.
    pub fn from_process() -> Self {
        let var = |name| std::env::var(name).ok().filter(|s: &String| !s.is_empty());
        Self {
            jwt_secret: var("WSGATE_JWT_SECRET"),
            api_key: var("WSGATE_API_KEY"),
            jwt_previous_secret: var("WSGATE_JWT_PREVIOUS_SECRET"),
        }
    }
}

/// An HS256 secret produced by `--dev` when none was configured.
#[derive(Clone)]
pub struct DevSecret(pub Vec<u8>);

impl std::fmt::Debug for DevSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevSecret([redacted])")
    }
}

impl Config {
    /// Builds `Settings`. `dev_secret` is used only in `--dev` mode when no key is configured.
    pub fn into_settings(
        self,
        env: &Env,
        available_cores: usize,
        dev_secret: impl FnOnce() -> DevSecret,
    ) -> Result<Settings, ConfigError> {
        let debug = self.debug || self.dev;
        let verifier = self.verifier(env, dev_secret)?;
        let origin = self.origin_policy(debug)?;
        if !self.ws_path.starts_with('/') {
            return Err(invalid("--ws-path", "must start with '/'"));
        }
        if self.auth_methods.is_empty() {
            return Err(invalid("--auth-methods", "name at least one method"));
        }
        if self.max_head_bytes < 256 {
            return Err(invalid("--max-head-bytes", "must be at least 256"));
        }
        if self.max_frame_bytes == 0 || self.max_message_bytes == 0 {
            return Err(invalid(
                "--max-frame-bytes/--max-message-bytes",
                "must be positive",
            ));
        }
        if self.keepalive_timeout_ms <= self.ping_interval_ms {
            return Err(invalid(
                "--keepalive-timeout-ms",
                "must be longer than --ping-interval-ms",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("--max-connections", "must be positive"));
        }
        let workers = self
            .workers
            .map_or(available_cores.max(1), NonZeroUsize::get);
        if workers > MAX_CORES {
            return Err(invalid(
                "--workers",
                "at most 64 (one bit per worker in a group's mask)",
            ));
        }
        let api_keys = self.api_keys(env)?;
        let trusted_proxies = TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| invalid("--trusted-proxies", &e))?;
        let has = |m| self.auth_methods.contains(&m);
        Ok(Settings {
            listen: self.listen,
            workers,
            pin_cores: self.pin_cores,
            handover: self.handover,
            ring_entries: self.ring_entries.max(256),
            backlog: self.backlog.max(1),
            driver: self.driver,
            uring_taskrun: self.uring_taskrun,
            max_connections: self.max_connections,
            max_connections_per_worker: self
                .max_connections_per_worker
                .unwrap_or(self.max_connections),
            retry_after_secs: self.retry_after_secs,
            ws_path: self.ws_path,
            origin,
            auth: AuthSettings {
                verifier,
                first_frame: has(AuthMethod::FirstFrame),
                header: has(AuthMethod::Header),
                subprotocol: has(AuthMethod::Subprotocol),
                query_token: self.allow_query_token,
                ticket: has(AuthMethod::Ticket),
            },
            tables: TableSizes {
                ticket_ttl_secs: self.ticket_ttl,
                max_tickets: self.max_tickets,
                max_tickets_per_user: self.max_tickets_per_user,
                max_tickets_per_address: self.max_tickets_per_ip,
                // A token accepted at the revocation lives at most this long after it: without
                // `iat` (or with one ahead of the clock) its lifetime counts from a check that
                // has the leeway, and its end has the leeway again.
                revocation_ttl_secs: self
                    .max_token_lifetime_secs
                    .saturating_add(self.jwt_leeway_secs.saturating_mul(2)),
                max_revocations: self.max_revocations,
                max_connections_per_address: self.max_connections_per_ip,
                upgrades_per_address_per_sec: self.max_upgrades_per_ip_per_sec,
                upgrade_burst: self.upgrade_burst,
                max_addresses: 1_000_000,
            },
            limits: Limits {
                max_head_bytes: self.max_head_bytes,
                max_frame_bytes: self.max_frame_bytes,
                max_message_bytes: self.max_message_bytes.max(self.max_frame_bytes.min(1)),
                max_outbound_bytes: self.max_outbound_bytes.max(1024),
            },
            timeouts: Timeouts {
                handshake: Duration::from_millis(self.handshake_timeout_ms.max(1)),
                auth: Duration::from_millis(self.auth_timeout_ms.max(1)),
                ping_after: Duration::from_millis(self.ping_interval_ms.max(1)),
                keepalive: Duration::from_millis(self.keepalive_timeout_ms),
                close: Duration::from_millis(self.close_timeout_ms.max(1)),
                close_flush: Duration::from_millis(self.close_flush_timeout_ms.max(1)),
                shutdown: Duration::from_secs(self.shutdown_timeout),
            },
            print_addr: self.print_addr,
            max_groups_per_connection: self.max_groups_per_connection.max(1),
            hub_queue_messages: self.hub_queue_messages.max(1),
            api_keys,
            max_body_bytes: self.max_body_bytes,
            rate: RateLimits {
                messages_per_sec: self.max_messages_per_sec,
                burst: self.burst.max(1),
                trusted_proxies,
            },
        })
    }

    /// `--allowed-origins` plus the patterns in `--allowed-origins-file`, or the allowed-hosts
    /// mode when neither is given.
    fn origin_policy(&self, debug: bool) -> Result<OriginPolicy, ConfigError> {
        // An empty value (`--allowed-hosts ''`, `WSGATE_ALLOWED_HOSTS=` in an env file) is an
        // empty list, and an empty item in a list is no item.
        let present = |items: &[String]| -> Vec<String> {
            items
                .iter()
                .filter(|item| !item.trim().is_empty())
                .cloned()
                .collect()
        };
        let mut patterns = present(&self.allowed_origins);
        if let Some(path) = &self.allowed_origins_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                flag: "--allowed-origins-file",
                path: path.clone(),
                source,
            })?;
            patterns.extend(
                text.lines()
                    .map(|line| line.split('#').next().unwrap_or("").trim())
                    .filter(|line| !line.is_empty())
                    .map(str::to_owned),
            );
        }
        if patterns.is_empty() && self.allowed_origins_file.is_none() {
            return OriginPolicy::allowed_hosts(&present(&self.allowed_hosts), debug).map_err(
                |source| ConfigError::Origin {
                    flag: "--allowed-hosts",
                    source,
                },
            );
        }
        let flag = if self.allowed_origins_file.is_some() {
            "--allowed-origins/--allowed-origins-file"
        } else {
            "--allowed-origins"
        };
        OriginPolicy::parse(&patterns).map_err(|source| ConfigError::Origin { flag, source })
    }

    /// Keys from `WSGATE_API_KEY` and `--api-key-file` (one per line, blank lines ignored).
    fn api_keys(&self, env: &Env) -> Result<ApiKeys, ConfigError> {
        let mut keys: Vec<Vec<u8>> = env.api_key.iter().map(|k| k.as_bytes().to_vec()).collect();
        if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                flag: "--api-key-file",
                path: path.clone(),
                source,
            })?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| l.as_bytes().to_vec()),
            );
        }
        if keys.iter().any(|k| k.len() < 16) {
            return Err(invalid(
                "WSGATE_API_KEY/--api-key-file",
                "API keys need 16 bytes or more",
            ));
        }
        Ok(ApiKeys::new(keys))
    }

    fn verifier(
        &self,
        env: &Env,
        dev_secret: impl FnOnce() -> DevSecret,
    ) -> Result<Verifier, ConfigError> {
        let file_secret = match &self.jwt_secret_file {
            Some(path) => Some(read_secret_file("--jwt-secret-file", path)?),
            None => None,
        };
        let secret = match (env.jwt_secret.as_deref(), file_secret) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "WSGATE_JWT_SECRET",
                    "set either WSGATE_JWT_SECRET or --jwt-secret-file, not both",
                ));
            }
            (Some(s), None) => Some(s.as_bytes().to_vec()),
            (None, Some(s)) => Some(s),
            (None, None) => None,
        };
        let verifier = match (&self.jwt_public_key_file, secret) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "--jwt-public-key-file",
                    "give either an HS256 secret or a public key, not both",
                ));
            }
            (Some(path), None) => {
                let alg = match self.jwt_algorithm {
                    Some(JwtAlgorithm::Rs256) => Algorithm::Rs256,
                    Some(JwtAlgorithm::Es256) => Algorithm::Es256,
                    _ => {
                        return Err(invalid(
                            "--jwt-algorithm",
                            "a public key needs --jwt-algorithm rs256 or es256",
                        ));
                    }
                };
                let pem = std::fs::read(path).map_err(|source| ConfigError::ReadFile {
                    flag: "--jwt-public-key-file",
                    path: path.clone(),
                    source,
                })?;
                Verifier::from_public_pem(alg, &pem)
                    .map_err(|e| invalid("--jwt-public-key-file", &e.to_string()))?
            }
            (None, secret) => {
                if matches!(
                    self.jwt_algorithm,
                    Some(JwtAlgorithm::Rs256 | JwtAlgorithm::Es256)
                ) {
                    return Err(invalid(
                        "--jwt-algorithm",
                        "rs256/es256 need --jwt-public-key-file",
                    ));
                }
                let secret = match secret {
                    Some(s) => s,
                    None if self.dev => dev_secret().0,
                    None => return Err(ConfigError::NoKey),
                };
                if secret.is_empty() {
                    return Err(invalid("WSGATE_JWT_SECRET", "the secret is empty"));
                }
                Verifier::hs256(&secret)
            }
        };
        let mut verifier = verifier
            .with_leeway(self.jwt_leeway_secs)
            .with_max_lifetime(self.max_token_lifetime_secs);
        if let Some((previous, until)) = self.previous_secret(env)? {
            if self.jwt_public_key_file.is_some() {
                return Err(invalid(
                    "--jwt-previous-secret-file",
                    "a previous secret rotates HS256 keys; it cannot go with a public key",
                ));
            }
            verifier = verifier.with_previous_hs256(&previous, until);
        }
        if let Some(aud) = &self.jwt_audience {
            verifier = verifier.with_audience(aud.clone());
        }
        if let Some(iss) = &self.jwt_issuer {
            verifier = verifier.with_issuer(iss.clone());
        }
        Ok(verifier)
    }
}

impl Config {
    /// The previous HS256 secret and the Unix time it stops being accepted, when configured.
    fn previous_secret(&self, env: &Env) -> Result<Option<(Vec<u8>, u64)>, ConfigError> {
        let (file, file_until) = match &self.jwt_previous_secret_file {
            // Configured once, written only during a rotation: absent or empty means none.
            Some(path) if !path.exists() => (None, None),
            Some(path) => {
                let text = read_secret_file("--jwt-previous-secret-file", path)?;
                if text.iter().all(u8::is_ascii_whitespace) {
                    (None, None)
                } else {
                    split_until(text)?
                }
            }
            None => (None, None),
        };
        let secret = match (env.jwt_previous_secret.as_deref(), file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "WSGATE_JWT_PREVIOUS_SECRET",
                    "set either WSGATE_JWT_PREVIOUS_SECRET or --jwt-previous-secret-file, not both",
                ));
            }
            (Some(s), None) => s.as_bytes().to_vec(),
            (None, Some(s)) => s,
            (None, None) => {
                if self.jwt_previous_secret_until.is_some()
                    && self.jwt_previous_secret_file.is_none()
                {
                    return Err(invalid(
                        "--jwt-previous-secret-until",
                        "given without a previous secret",
                    ));
                }
                return Ok(None);
            }
        };
        if secret.is_empty() {
            return Err(invalid("--jwt-previous-secret-file", "the secret is empty"));
        }
        let Some(until) = file_until
            .as_ref()
            .or(self.jwt_previous_secret_until.as_ref())
        else {
            return Err(invalid(
                "--jwt-previous-secret-until",
                "a previous secret needs the time it stops being accepted",
            ));
        };
        Ok(Some((secret, parse_time(until)?)))
    }
}

/// A previous-secret file: the secret, then optionally a line `until=<time>`.
fn split_until(mut text: Vec<u8>) -> Result<(Option<Vec<u8>>, Option<String>), ConfigError> {
    let Some(newline) = text.iter().position(|&b| b == b'\n') else {
        return Ok((Some(text), None));
    };
    let rest = String::from_utf8_lossy(&text[newline + 1..])
        .trim()
        .to_owned();
    text.truncate(newline);
    if text.last() == Some(&b'\r') {
        text.pop();
    }
    if rest.is_empty() {
        return Ok((Some(text), None));
    }
    match rest.strip_prefix("until=") {
        Some(until) if !until.contains('\n') => Ok((Some(text), Some(until.trim().to_owned()))),
        _ => Err(invalid(
            "--jwt-previous-secret-file",
            "after the secret, only one line `until=<time>` may follow",
        )),
    }
}

/// Unix seconds, or an RFC 3339 time.
fn parse_time(text: &str) -> Result<u64, ConfigError> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            invalid(
                "--jwt-previous-secret-until",
                &format!("{text:?} is neither Unix seconds nor an RFC 3339 time ({e})"),
            )
        })?;
    u64::try_from(time.unix_timestamp())
        .map_err(|_| invalid("--jwt-previous-secret-until", "before 1970"))
}

fn invalid(flag: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        flag,
        reason: reason.to_owned(),
    }
}

/// Reads a secret file; one trailing newline (as editors write) is not part of the secret.
fn read_secret_file(flag: &'static str, path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    let mut bytes = std::fs::read(path).map_err(|source| ConfigError::ReadFile {
        flag,
        path: path.clone(),
        source,
    })?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut argv = vec!["wsgate"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).unwrap()
    }

    fn no_dev() -> DevSecret {
        panic!("dev secret requested outside --dev")
    }

    fn env_with_secret() -> Env {
        Env {
            jwt_secret: Some("s3cret".into()),
            ..Env::default()
        }
    }

    #[test]
    fn defaults_follow_protocol() {
        let s = parse(&[])
            .into_settings(&env_with_secret(), 3, no_dev)
            .unwrap();
        assert_eq!(s.workers, 3);
        assert_eq!(s.ws_path, "/ws");
        assert_eq!(s.limits, Limits::default());
        assert_eq!(s.timeouts, Timeouts::default());
        assert!(s.auth.first_frame && s.auth.header && s.auth.subprotocol);
        assert!(!s.auth.query_token);
        // No origins and no hosts without --debug: nothing is allowed, as in Django.
        assert!(s.origin.rejects_everything());
    }

    #[test]
    fn no_key_is_a_start_up_error_that_says_what_to_set() {
        let err = parse(&[])
            .into_settings(&Env::default(), 1, no_dev)
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("WSGATE_JWT_SECRET"), "{text}");
        assert!(text.contains("--jwt-public-key-file"), "{text}");
    }

    #[test]
    fn dev_mode_generates_a_secret_and_allows_localhost() {
        let s = parse(&["--dev"])
            .into_settings(&Env::default(), 1, || DevSecret(b"generated".to_vec()))
            .unwrap();
        assert!(s.origin.allows(Some(b"http://localhost:3000")));
        assert!(!s.origin.allows(Some(b"http://evil.example")));
    }

    #[test]
    fn origins_are_comma_separated_and_repeatable() {
        let s = parse(&[
            "--allowed-origins",
            "http://localhost,https://.example.com",
            "--allowed-origins",
            "other.org",
        ])
        .into_settings(&env_with_secret(), 1, no_dev)
        .unwrap();
        assert!(s.origin.allows(Some(b"http://localhost")));
        assert!(s.origin.allows(Some(b"https://a.example.com")));
        assert!(s.origin.allows(Some(b"ws://other.org:1234")));
        assert!(!s.origin.allows(Some(b"https://example.org")));
    }

    #[test]
    fn bad_origin_pattern_names_flag_and_pattern() {
        let err = parse(&["--allowed-origins", "*.example.com"])
            .into_settings(&env_with_secret(), 1, no_dev)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--allowed-origins"), "{err}");
        assert!(err.contains("*.example.com"), "{err}");
    }

    #[test]
    fn origins_and_hosts_conflict() {
        let argv = [
            "wsgate",
            "--allowed-origins",
            "a.com",
            "--allowed-hosts",
            "b.com",
        ];
        assert!(Config::try_parse_from(argv).is_err());
    }

    #[test]
    fn public_key_needs_an_algorithm_and_secret_and_key_conflict() {
        let err = parse(&["--jwt-public-key-file", "/nonexistent.pem"])
            .into_settings(&Env::default(), 1, no_dev)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--jwt-algorithm"), "{err}");
        let err = parse(&["--jwt-public-key-file", "/nonexistent.pem"])
            .into_settings(&env_with_secret(), 1, no_dev)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn keepalive_must_exceed_ping_interval() {
        let err = parse(&[
            "--ping-interval-ms",
            "30000",
            "--keepalive-timeout-ms",
            "30000",
        ])
        .into_settings(&env_with_secret(), 1, no_dev)
        .unwrap_err()
        .to_string();
        assert!(err.contains("--keepalive-timeout-ms"), "{err}");
    }

    #[test]
    fn secret_file_drops_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("wsgate-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "abc\n").unwrap();
        assert_eq!(
            read_secret_file("--jwt-secret-file", &path).unwrap(),
            b"abc"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_debug_redacts_the_secret() {
        let text = format!("{:?}", env_with_secret());
        assert!(!text.contains("s3cret"), "{text}");
    }
}
