//! The `wsgate` binary as an operator meets it: refusing to start without a key (saying what to
//! set), --dev, --print-addr, WSGATE_* variables, and the driver named in the start-up log.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn wsgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    // Nothing from the developer's environment may leak into these runs.
    for (key, _) in std::env::vars() {
        if key.starts_with("WSGATE_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn no_secret_and_no_key_refuses_to_start_and_says_what_to_set() {
    let out = wsgate().args(["--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WSGATE_JWT_SECRET"), "{stderr}");
    assert!(stderr.contains("--jwt-public-key-file"), "{stderr}");
}

#[test]
fn a_bad_origin_pattern_is_a_start_up_error_naming_it() {
    let out = wsgate()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--allowed-origins",
            "*.example.com",
        ])
        .env("WSGATE_JWT_SECRET", "s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("*.example.com") && stderr.contains(".example.com"),
        "{stderr}"
    );
}

/// Starts the binary and returns it with its first stdout line (the address) and a reader
/// of its stderr.
fn spawn(cmd: &mut Command) -> (Running, String, BufReader<std::process::ChildStderr>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut addr = String::new();
    stdout.read_line(&mut addr).unwrap();
    (Running(child), addr.trim().to_owned(), stderr)
}

#[test]
fn print_addr_env_flags_and_driver_logging() {
    for driver in ["epoll", "auto"] {
        let (_child, addr, mut stderr) = spawn(
            wsgate()
                .env("WSGATE_JWT_SECRET", "s")
                .env("WSGATE_LISTEN", "127.0.0.1:0")
                .env("WSGATE_WORKERS", "2")
                .env("WSGATE_DRIVER", driver)
                .args(["--print-addr", "--allowed-origins", "*"]),
        );
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        assert_ne!(addr.port(), 0);
        // Each worker names its driver before the process reports that it listens.
        let mut log = String::new();
        while !log.contains("wsgate listening") {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "stderr ended: {log}"
            );
            log.push_str(&line);
        }
        assert_eq!(log.matches("worker listening").count(), 2, "{log}");
        if driver == "epoll" {
            assert_eq!(log.matches("driver=\"epoll\"").count(), 2, "{log}");
        }
        let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        drop(s);
    }
}

#[test]
fn dev_mode_prints_a_working_token() {
    let (_child, addr, mut stderr) = spawn(wsgate().args([
        "--dev",
        "--print-addr",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
    ]));
    let mut text = String::new();
    let mut token = None;
    while token.is_none() {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "stderr ended: {text}"
        );
        if line.starts_with("eyJ") {
            token = Some(line.trim().to_owned());
        }
        text.push_str(&line);
    }
    let token = token.unwrap();
    // The token works against the running gateway, from a localhost origin (--dev implies --debug).
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "http://localhost:3000".parse().unwrap());
    let (mut ws, _) = tungstenite::client(request, stream).unwrap();
    let cmd = format!(r#"{{"action":"authenticate","token":"{token}"}}"#);
    ws.send(tungstenite::Message::text(cmd)).unwrap();
    let reply = ws.read().unwrap().into_text().unwrap();
    assert!(
        reply.contains(r#""status_code":200"#) && reply.contains(r#""user":"dev""#),
        "{reply}"
    );
}

/// A second gateway on an address where one listens is refused at start (with SO_REUSEPORT it
/// would bind beside the first and split every group), unless it is a hand-over.
#[test]
fn a_second_gateway_on_the_same_address_is_refused_unless_handing_over() {
    let (_first, addr, _) = spawn(wsgate().env("WSGATE_JWT_SECRET", "s").args([
        "--listen",
        "127.0.0.1:0",
        "--print-addr",
        "--workers",
        "1",
    ]));
    let out = wsgate()
        .env("WSGATE_JWT_SECRET", "s")
        .args(["--listen", &addr, "--workers", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("--handover"),
        "{stderr}"
    );
    let (_second, second_addr, _) = spawn(wsgate().env("WSGATE_JWT_SECRET", "s").args([
        "--listen",
        &addr,
        "--print-addr",
        "--workers",
        "1",
        "--handover",
    ]));
    assert_eq!(second_addr, addr);
}
