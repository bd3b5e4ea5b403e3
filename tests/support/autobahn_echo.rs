//! Conformance echo server for the Autobahn|Testsuite: the gateway's own listener, handshake,
//! frame codec, message assembler and connection loop, with a handler that echoes every message
//! instead of requiring authentication. A test-support binary (`cargo build --example
//! autobahn-echo`), not something the gateway can be switched into.
//!
//! Usage: `autobahn-echo [wsgate flags...]`; defaults: one worker on 127.0.0.1:9001, every origin
//! allowed, WebSocket path `/` (the suite connects there), 64 MiB frames and messages (its 9.*
//! cases send 16 MiB).

use std::io::Write;

use clap::{CommandFactory, FromArgMatches};
use wsgate::config::{Config, DevSecret, Env, Settings};
use wsgate::proto::frame::{self, OpCode};
use wsgate::proto::handshake::Upgrade;
use wsgate::runtime::{self, Handler, Service};
use wsgate::session::{Groups, Verdict};
use wsgate::tables::Tables;

struct Echo;

impl Handler for Echo {
    fn on_open(
        &mut self,
        _: &Upgrade<'_>,
        _: &Settings,
        _: &Tables,
        _: u64,
        _: &mut Vec<u8>,
    ) -> Verdict {
        Verdict::Continue
    }

    fn on_text(
        &mut self,
        text: &str,
        _: &Settings,
        _: &Tables,
        _: u64,
        out: &mut Vec<u8>,
        _: &mut dyn Groups,
    ) -> Verdict {
        frame::write_frame(out, OpCode::Text, text.as_bytes());
        Verdict::Continue
    }

    fn on_binary(&mut self, data: &[u8], _: &Settings, _: u64, out: &mut Vec<u8>) -> Verdict {
        frame::write_frame(out, OpCode::Binary, data);
        Verdict::Continue
    }

    fn awaiting_auth(&self) -> bool {
        false
    }
}

struct EchoService;

impl Service for EchoService {
    type Handler = Echo;

    fn handler(&self) -> Echo {
        Echo
    }
}

fn main() -> anyhow::Result<()> {
    let big = (64usize << 20).to_string();
    let mut args: Vec<String> = [
        "autobahn-echo",
        "--ws-path",
        "/",
        "--listen",
        "127.0.0.1:9001",
        "--workers",
        "1",
        "--allowed-origins",
        "*",
        "--max-frame-bytes",
        &big,
        "--max-message-bytes",
        &big,
        "--max-outbound-bytes",
        &big,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(std::env::args().skip(1));
    let matches = Config::command()
        .args_override_self(true)
        .try_get_matches_from(args)?;
    let config = Config::from_arg_matches(&matches)?;
    let print_addr = config.print_addr;
    // The echo server verifies no tokens; the verifier just needs some key.
    let env = Env {
        jwt_secret: Some("autobahn-echo-unused".into()),
        ..Env::default()
    };
    let settings = config.into_settings(&env, 1, || DevSecret(Vec::new()))?;
    let server = runtime::start(settings, EchoService)?;
    let mut stdout = std::io::stdout().lock();
    if print_addr {
        writeln!(stdout, "{}", server.local_addr())?;
    }
    writeln!(
        stdout,
        "autobahn-echo on {} ({:?})",
        server.local_addr(),
        server.drivers()
    )?;
    stdout.flush()?;
    drop(stdout);
    server.join();
    Ok(())
}
