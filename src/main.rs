//! The `wsgate` binary: flags and environment → `Settings` → workers; SIGTERM/SIGINT stop it.

use std::io::{IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use hmac::{Hmac, Mac};
use mimalloc::MiMalloc;
use sha2::Sha256;
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing_subscriber::EnvFilter;

use wsgate::config::{Config, DevSecret, Env, LogFormat};
use wsgate::runtime::{self, Gateway};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_logging(config.log_format, &config.log_level)?;
    let dev = config.dev;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut generated = None;
    let settings = config
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
    let server = runtime::start(settings, Gateway).context("cannot start the workers")?;
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
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("cannot install signal handlers")?;
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "stopping");
    }
    server.shutdown();
    Ok(())
}

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level).with_context(|| format!("--log-level {level:?}"))?;
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
