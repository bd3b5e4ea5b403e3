//! `wsgate-load`: the load client for wsgate. Thread-per-core on monoio (`--workers`,
//! `--pin-cores`), its own client framing, HS256 tokens minted from `--secret`. Every scenario is
//! bounded in count and in time, checks every message it expects, and reports its own CPU use.

#![forbid(unsafe_code)]

mod client;
mod connect;
mod echo;
mod fanout;
mod harness;
mod http;
mod idle;
mod payload;
mod report;
mod token;
mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// Load scenarios against a running wsgate.
#[derive(Parser, Debug)]
#[command(name = "wsgate-load", version)]
struct Opt {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Options every scenario shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Gateway WebSocket URL (ws:// only; loopback addresses in this workplace).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Client worker threads, each with its own monoio runtime.
    #[arg(long, global = true, default_value_t = 1)]
    pub workers: usize,
    /// Pin client worker i to CPU (--first-cpu + i).
    #[arg(long, global = true)]
    pub pin_cores: bool,
    /// First CPU for --pin-cores (keep the client off the server's cores).
    #[arg(long, global = true, default_value_t = 0)]
    pub first_cpu: usize,
    /// HS256 secret the gateway verifies with (or WSGATE_JWT_SECRET, or --secret-file).
    #[arg(
        long = "secret",
        value_name = "SECRET",
        global = true,
        env = "WSGATE_JWT_SECRET",
        hide_env_values = true
    )]
    secret_arg: Option<String>,
    /// File holding the HS256 secret (one trailing newline is ignored).
    #[arg(long, global = true)]
    secret_file: Option<std::path::PathBuf>,
    /// The secret, from --secret, WSGATE_JWT_SECRET or --secret-file.
    #[arg(skip)]
    pub secret: String,
    /// Origin header sent on every upgrade.
    #[arg(long, global = true, default_value = "http://localhost")]
    pub origin: String,
    /// Give up after this many seconds, whatever the scenario's state.
    #[arg(long, global = true, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Print the summary as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// PID of the server: its CPU use is reported beside the client's (idle: its RSS too).
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Client I/O driver. epoll is the default: reading many busy sockets it costs the client
    /// less CPU than io_uring's completion per segment.
    #[arg(long, global = true, value_enum, default_value_t = Driver::Epoll)]
    pub driver: Driver,
}

/// The client's I/O driver.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    /// io_uring only.
    IoUring,
    /// epoll only.
    Epoll,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// N sessions at concurrency K: connect, upgrade, authenticate, close; sessions/s.
    Connect(connect::ConnectOpt),
    /// C connections each send to their own group with W in flight; messages/s, round trip.
    Echo(echo::EchoOpt),
    /// N members of one group, WebSocket publishers; deliveries/s, publish-to-delivery latency.
    Fanout(fanout::FanoutOpt),
    /// The same fan-out fed through POST /api/publish.
    Publish(fanout::PublishOpt),
    /// Hold N authenticated connections idle and report the server's RSS per connection.
    Idle(idle::IdleOpt),
}

/// Where to connect, parsed from `--url`.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Request path (with query).
    pub path: String,
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    let Some(rest) = url.strip_prefix("ws://") else {
        bail!("--url must start with ws://");
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = host
        .parse()
        .with_context(|| format!("--url host {host:?} is not ip:port"))?;
    if !addr.ip().is_loopback() {
        bail!("--url must be a loopback address: load runs stay on this machine");
    }
    Ok(Target {
        addr,
        host: host.to_owned(),
        path: path.to_owned(),
    })
}

fn main() {
    if let Err(e) = run(Opt::parse()) {
        eprintln!("wsgate-load: {e:#}");
        std::process::exit(1);
    }
}

/// The secret from the flag or environment, else from the file.
fn resolve_secret(common: &Common) -> anyhow::Result<String> {
    match (&common.secret_arg, &common.secret_file) {
        (Some(s), None) => Ok(s.clone()),
        (_, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --secret-file {}", path.display()))?;
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            Ok(secret.strip_suffix('\r').unwrap_or(secret).to_owned())
        }
        (None, None) => bail!("set the token secret: --secret, WSGATE_JWT_SECRET or --secret-file"),
    }
}

fn run(mut opt: Opt) -> anyhow::Result<()> {
    opt.common.secret = resolve_secret(&opt.common)?;
    anyhow::ensure!(!opt.common.secret.is_empty(), "the token secret is empty");
    let target = parse_url(&opt.common.url)?;
    if opt.common.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let deadline = Duration::from_secs(opt.common.timeout_secs.max(1));
    let c = &opt.common;
    match opt.scenario {
        Scenario::Connect(o) => connect::run(c, &target, &o, deadline),
        Scenario::Echo(o) => echo::run(c, &target, &o, deadline),
        Scenario::Fanout(o) => fanout::run(c, &target, &o, fanout::Feed::WebSocket, deadline),
        Scenario::Publish(o) => fanout::run(
            c,
            &target,
            &o.fanout,
            fanout::Feed::Api(o.api_key),
            deadline,
        ),
        Scenario::Idle(o) => idle::run(c, &target, &o, deadline),
    }
}
