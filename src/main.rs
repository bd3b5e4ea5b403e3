//! The `wsgate` binary: flags and environment → `Settings` → workers. SIGTERM/SIGINT drain and
//! stop it, SIGHUP reloads its files, and a service manager hears of each step (`notify`).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use hmac::{Hmac, Mac};
use mimalloc::MiMalloc;
use sha2::Sha256;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing_subscriber::EnvFilter;

use notify::Notifier;
use wsgate::config::{Config, DevSecret, Env, LogFormat};
use wsgate::runtime::{self, Gateway};

mod hooks;
mod notify;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.check_config {
        return check_config(config);
    }
    init_logging(config.log_format, &config.log_level)?;
    let dev = config.dev;
    let test_hooks = config.test_hooks;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut generated = None;
    let settings = config
        .clone()
        .into_settings(&Env::from_process(), cores, || {
            let secret: [u8; 32] = rand::random();
            generated = Some(secret.to_vec());
            DevSecret(secret.to_vec())
        })
        .context("invalid configuration")?;
    if settings.origin.rejects_everything() {
        tracing::warn!(
            "no allowed origins: every upgrade will be refused with 403 \
             (set --allowed-origins, --allowed-hosts, or --debug for localhost)"
        );
    }
    let ws_path = settings.ws_path.clone();
    let print_addr = settings.print_addr;
    let reload_wait = settings.timeouts.shutdown.max(Duration::from_secs(1));
    // Signals are caught before the workers start, so none is lost while they come up.
    let (signal_tx, signal_rx) = crossbeam_channel::unbounded();
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("wsgate-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal_tx.send(signal).is_err() {
                    break;
                }
            }
        })?;
    let server = if test_hooks {
        runtime::start(settings, hooks::Hooked(Gateway))
    } else {
        runtime::start(settings, Gateway)
    }
    .context("cannot start the workers")?;
    let addr = server.local_addr();
    if print_addr {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{addr}")?;
        stdout.flush()?;
    }
    tracing::info!(%addr, workers = server.drivers().len(), "wsgate listening");
    if dev {
        print_dev_help(&addr.to_string(), &ws_path, generated.as_deref());
    }
    let handle = server.handle();
    let notifier = Arc::new(Notifier::from_env().context("NOTIFY_SOCKET")?);
    notifier.send(&format!("READY=1\n{}", status(&handle)));
    let stopping = Arc::new(AtomicBool::new(false));
    if notifier.enabled() {
        let (handle, notifier, stopping) = (handle.clone(), notifier.clone(), stopping.clone());
        std::thread::Builder::new()
            .name("wsgate-watchdog".into())
            .spawn(move || supervise(&handle, &notifier, &stopping))?;
    }
    let failures = handle.failures();
    let failed = loop {
        crossbeam_channel::select! {
            recv(signal_rx) -> signal => match signal {
                Ok(SIGHUP) => reload(
                    &config,
                    generated.as_deref(),
                    &handle,
                    &notifier,
                    reload_wait,
                ),
                Ok(signal) => {
                    tracing::info!(
                        signal,
                        "shutting down: every connection gets close 1001 (a second signal exits at once)"
                    );
                    break None;
                }
                Err(_) => anyhow::bail!("the signal thread ended"),
            },
            recv(failures) -> failure => {
                // A dead worker's share of the port is lost: the other workers drain, and the
                // process exits non-zero so that the service manager starts a whole gateway.
                let failure = failure.context("the workers' failure channel closed")?;
                tracing::error!(
                    worker = failure.worker,
                    "a worker panicked ({}): draining the others, then exiting with status {EXIT_WORKER_PANICKED}",
                    failure.message
                );
                notifier.send(&format!("STATUS=worker {} panicked: {}", failure.worker, failure.message));
                break Some(failure);
            }
        }
    };
    stopping.store(true, Ordering::SeqCst);
    notifier.send("STOPPING=1");
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("wsgate-shutdown".into())
        .spawn(move || {
            server.shutdown();
            let _ = done_tx.send(());
        })?;
    loop {
        crossbeam_channel::select! {
            recv(done_rx) -> _ => break,
            recv(signal_rx) -> signal => match signal {
                Ok(SIGHUP) => tracing::info!("reload ignored: shutting down"),
                Ok(signal) => {
                    tracing::warn!(signal, "second signal: exiting now");
                    std::process::exit(1);
                }
                Err(_) => {}
            },
        }
    }
    if failed.is_some() {
        std::process::exit(EXIT_WORKER_PANICKED);
    }
    tracing::info!("stopped");
    Ok(())
}

/// The exit status after a worker panicked (`EX_SOFTWARE`): systemd's `Restart=on-failure`
/// starts the gateway again.
const EXIT_WORKER_PANICKED: i32 = 70;

/// SIGHUP: re-reads every file (origins, JWT keys, API keys) and puts the new settings in
/// force without closing a connection; an invalid configuration is refused with a log line and
/// the running one stays.
fn reload(
    config: &Config,
    generated: Option<&[u8]>,
    handle: &runtime::Handle,
    notifier: &Notifier,
    wait: Duration,
) {
    notifier.reloading();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // `--dev` keeps the secret it generated at start-up, or every token it printed would die.
    let dev_secret = || DevSecret(generated.map(<[u8]>::to_vec).unwrap_or_default());
    let outcome = config
        .clone()
        .into_settings(&Env::from_process(), cores, dev_secret)
        .map_err(|e| e.to_string())
        .and_then(|settings| handle.reload(settings, wait));
    match outcome {
        Ok(()) => {
            tracing::info!("configuration reloaded");
            notifier.send(&format!("READY=1\n{}", status(handle)));
        }
        Err(e) => {
            tracing::error!("reload refused, the running configuration stays in force: {e}");
            notifier.send(&format!("READY=1\nSTATUS=reload refused: {e}"));
        }
    }
}

/// The watchdog and status thread: `WATCHDOG=1` only when every worker answered the previous
/// probe (a stuck core stops the pings, and systemd restarts the service), `STATUS=` with the
/// open connections each period.
fn supervise(handle: &runtime::Handle, notifier: &Notifier, stopping: &AtomicBool) {
    let watchdog = notify::watchdog_interval();
    let period = watchdog.map_or(STATUS_PERIOD, |w| w.min(STATUS_PERIOD));
    let mut reported = Vec::new();
    let mut prober = handle.prober();
    loop {
        std::thread::sleep(period);
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let late = prober.probe();
        if late != reported {
            if late.is_empty() {
                tracing::info!("every worker responds again");
            } else {
                tracing::error!(workers = ?late, "worker not responding: watchdog pings withheld");
            }
            reported = late.clone();
        }
        let mut state = status(handle);
        if watchdog.is_some() && late.is_empty() {
            state.push_str("\nWATCHDOG=1");
        }
        notifier.send(&state);
    }
}

/// How often `STATUS=` is refreshed when no faster watchdog period is asked for.
const STATUS_PERIOD: Duration = Duration::from_secs(5);

/// `STATUS=<n> connections (<per worker>)`.
fn status(handle: &runtime::Handle) -> String {
    let open = handle.open_per_worker();
    let total: u64 = open.iter().sum();
    let per: Vec<String> = open.iter().map(u64::to_string).collect();
    format!(
        "STATUS={total} connections (per worker: {})",
        per.join(" + ")
    )
}

/// `--check-config`: builds the settings exactly as a start would (reading every file), prints
/// a summary without any secret, and exits; an error exits 1 naming the flag.
fn check_config(config: Config) -> anyhow::Result<()> {
    log_filter(&config.log_level)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let settings = config
        .into_settings(&Env::from_process(), cores, || DevSecret(vec![0; 32]))
        .context("invalid configuration")?;
    let auth = &settings.auth;
    let methods: Vec<&str> = [
        (auth.first_frame, "first-frame"),
        (auth.header, "header"),
        (auth.subprotocol, "subprotocol"),
        (auth.ticket, "ticket"),
        (auth.query_token, "query-token"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| *name)
    .collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "configuration OK")?;
    writeln!(out, "listen            {}", settings.listen)?;
    writeln!(out, "workers           {}", settings.workers)?;
    writeln!(out, "driver            {:?}", settings.driver)?;
    writeln!(out, "uring taskrun     {:?}", settings.uring_taskrun)?;
    writeln!(out, "ws path           {}", settings.ws_path)?;
    writeln!(out, "origins           {}", settings.origin.describe())?;
    writeln!(
        out,
        "tokens            {} ({})",
        auth.verifier.algorithm().as_str(),
        methods.join(", ")
    )?;
    writeln!(out, "api keys          {}", settings.api_keys.len())?;
    writeln!(
        out,
        "connections       {} ({} per worker)",
        settings.max_connections, settings.max_connections_per_worker
    )?;
    writeln!(out, "limits            {:?}", settings.limits)?;
    writeln!(out, "timeouts          {:?}", settings.timeouts)?;
    Ok(())
}

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = log_filter(level)?;
    // Colour only on a terminal: the journal and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// The `--log-level` filter. A bare word must be a level: `EnvFilter` would read `verbose` as
/// "everything from a module named verbose", and the gateway would then log nothing at all.
fn log_filter(spec: &str) -> anyhow::Result<EnvFilter> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |word: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word.trim()));
    for directive in spec.split(',').filter(|d| !d.trim().is_empty()) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !is_level(level) {
            anyhow::bail!(
                "--log-level {spec:?}: {level:?} is not a level ({}); a filter names one per \
                 target, as in `info,wsgate=debug`",
                LEVELS.join(", ")
            );
        }
    }
    EnvFilter::try_new(spec).with_context(|| format!("--log-level {spec:?}"))
}

/// `--dev`: a token for user "dev" allowed into every group, and a browser snippet using it.
fn print_dev_help(addr: &str, ws_path: &str, generated: Option<&[u8]>) {
    let Some(secret) = generated else {
        eprintln!("wsgate --dev: using the configured secret; mint tokens with it (see README).");
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = format!(
        r#"{{"token_type":"access","exp":{},"iat":{now},"jti":"dev-{now}","user_id":"dev","groups":["*"]}}"#,
        now + 24 * 3600
    );
    let token = sign_hs256(&claims, secret);
    eprintln!(
        "\nwsgate --dev: a generated HS256 secret is in use (it changes at every start).\n\
         A token for user \"dev\", valid 24 h:\n\n{token}\n\n\
         Try it from a browser console on http://localhost:<any port>:\n\n\
         const ws = new WebSocket(\"ws://{addr}{ws_path}\");\n\
         ws.onopen = () => ws.send(JSON.stringify({{action: \"authenticate\", token: \"{token}\"}}));\n\
         ws.onmessage = (e) => console.log(e.data);\n"
    );
}

fn sign_hs256(claims: &str, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims);
    let signing_input = format!("{header}.{payload}");
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}
