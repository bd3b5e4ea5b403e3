//! docs/protocol.md §3 and §6: every authentication method, every failure's message and close code,
//! over real sockets with tungstenite, on each driver. The auth and keepalive timeouts are rules
//! of `wsgate::connection`, unit-tested there on an injected clock; here one test each proves
//! the runtime keeps them, with short deadlines and reads that give up at ten times them.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

fn failure(status: u16, text: &str) -> (u16, String) {
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["action"], "authentication", "{text}");
    let payload = &v["payload"];
    let expected_text = if status == 401 {
        "Unauthorized"
    } else {
        "Forbidden"
    };
    assert_eq!(payload["status_text"], expected_text, "{text}");
    assert!(payload["data"]["detail"].is_string(), "{text}");
    assert_eq!(payload["data"].as_object().unwrap().len(), 1, "{text}");
    (
        payload["status_code"].as_u64().unwrap() as u16,
        text.to_owned(),
    )
}

#[test]
fn first_frame_token_authenticates_with_the_exact_message() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let (_ws, reply) = ws_authenticated(srv.addr, json!("42"));
        assert_eq!(reply, auth_ok("42"), "{driver}");
        // simplejwt before 5.5.1 sent integer ids; they come back as strings.
        let (_ws, reply) = ws_authenticated(srv.addr, json!(7));
        assert_eq!(reply, auth_ok("7"), "{driver}");
    }
}

fn first_frame_failure(
    driver: &str,
    token: &str,
    flags: &[&str],
) -> (Vec<String>, Option<(u16, String)>) {
    let srv = start_open(driver, flags);
    let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
    let cmd = json!({"action": "authenticate", "token": token});
    ws.send(Message::text(cmd.to_string())).unwrap();
    read_until_close(&mut ws)
}

#[test]
fn bad_tokens_get_the_401_message_then_4401() {
    for driver in drivers() {
        let expired = token_with(json!({"token_type":"access","exp": now() - 10,"user_id":"1"}));
        let refresh = token_with(json!({"token_type":"refresh","exp": now() + 60,"user_id":"1"}));
        let future_nbf = token_with(json!({"exp": now() + 60,"nbf": now() + 60,"user_id":"1"}));
        let no_user = token_with(json!({"exp": now() + 60}));
        let no_exp = token_with(json!({"user_id": "1"}));
        let wrong_key = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"exp": now() + 60, "user_id": "1"}),
            &jsonwebtoken::EncodingKey::from_secret(b"another secret"),
        )
        .unwrap();
        let hs512 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
            &json!({"exp": now() + 60, "user_id": "1"}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        // alg "none" with the claims of a valid token.
        let none = {
            let valid = token(json!("1"));
            let payload = valid.split('.').nth(1).unwrap().to_owned();
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
        };
        for bad in [
            &expired,
            &refresh,
            &future_nbf,
            &no_user,
            &no_exp,
            &wrong_key,
            &hs512,
            &none,
            "garbage",
        ] {
            let (texts, close) = first_frame_failure(driver, bad, &[]);
            assert_eq!(
                texts.len(),
                1,
                "{driver}: one auth message before the close: {texts:?}"
            );
            let (status, _) = failure(401, &texts[0]);
            assert_eq!(status, 401);
            assert_eq!(close.map(|c| c.0), Some(4401), "{driver}: {bad}");
        }
    }
}

#[test]
fn leeway_audience_and_issuer_are_configurable() {
    for driver in drivers() {
        let just_expired = token_with(json!({"exp": now() - 5, "user_id": "1"}));
        let (_, close) = first_frame_failure(driver, &just_expired, &[]);
        assert_eq!(close.map(|c| c.0), Some(4401));
        let srv = start_open(driver, &["--jwt-leeway-secs", "60"]);
        let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
        ws.send(Message::text(
            json!({"action":"authenticate","token":just_expired}).to_string(),
        ))
        .unwrap();
        assert_eq!(next_json(&mut ws), auth_ok("1"));

        let flags = ["--jwt-audience", "gw", "--jwt-issuer", "django"];
        let good = token_with(
            json!({"exp": now() + 60, "user_id": "1", "aud": ["x", "gw"], "iss": "django"}),
        );
        let bad_aud =
            token_with(json!({"exp": now() + 60, "user_id": "1", "aud": "x", "iss": "django"}));
        let bad_iss =
            token_with(json!({"exp": now() + 60, "user_id": "1", "aud": "gw", "iss": "other"}));
        let srv = start_open(driver, &flags);
        let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
        ws.send(Message::text(
            json!({"action":"authenticate","token":good}).to_string(),
        ))
        .unwrap();
        assert_eq!(next_json(&mut ws), auth_ok("1"));
        for bad in [bad_aud, bad_iss] {
            let (_, close) = first_frame_failure(driver, &bad, &flags);
            assert_eq!(close.map(|c| c.0), Some(4401), "{driver}");
        }
    }
}

#[test]
fn anything_before_authentication_is_closed_1008_without_a_message() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let firsts = [
            Message::text(r#"{"action":"join","group":"room.1"}"#),
            Message::text("not json"),
            Message::binary(vec![1, 2, 3]),
        ];
        for first in firsts {
            let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
            ws.send(first.clone()).unwrap();
            let (texts, close) = read_until_close(&mut ws);
            assert!(texts.is_empty(), "{driver}: {first:?} got {texts:?}");
            assert_eq!(close.map(|c| c.0), Some(1008), "{driver}: {first:?}");
        }
    }
}

/// The runtime arms the auth deadline of each upgraded connection: one that never
/// authenticates is closed 4408, not before `--auth-timeout-ms` and within ten times it. (The
/// rule: `connection::tests::no_authentication_within_the_auth_timeout_is_4408`.)
#[test]
fn no_authentication_within_the_timeout_is_closed_4408() {
    const AUTH_TIMEOUT: Duration = Duration::from_millis(200);
    on_every_driver_at_once(|driver| {
        let srv = start_open(driver, &["--auth-timeout-ms", "200"]);
        // Before the upgrade begins, so the server's deadline cannot start earlier.
        let began = Instant::now();
        let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
        read_at_most_tenfold(ws.get_ref(), AUTH_TIMEOUT);
        let (texts, close) = read_until_close(&mut ws);
        let waited = began.elapsed();
        assert!(texts.is_empty(), "{driver}: {texts:?}");
        assert_eq!(
            close,
            Some((4408, "authentication timeout".to_owned())),
            "{driver}"
        );
        assert!(waited >= AUTH_TIMEOUT, "{driver}: closed after {waited:?}");
    });
}

#[test]
fn header_authentication_sends_200_right_after_the_upgrade() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let bearer = format!("Bearer {}", token(json!("9")));
        let (mut ws, _) = ws_connect(srv.addr, &[("Authorization", &bearer)]).unwrap();
        assert_eq!(next_json(&mut ws), auth_ok("9"), "{driver}");
        // A bad header token: the upgrade succeeds, then 401 and 4401, like every method.
        let (mut ws, _) = ws_connect(srv.addr, &[("Authorization", "Bearer nope")]).unwrap();
        let (texts, close) = read_until_close(&mut ws);
        assert_eq!(failure(401, &texts[0]).0, 401);
        assert_eq!(close.map(|c| c.0), Some(4401), "{driver}");
    }
}

#[test]
fn subprotocol_authentication_selects_v1_and_never_echoes_the_token() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let offer = format!("wsgate.v1, wsgate.bearer.{}", token(json!("5")));
        let (mut ws, response) =
            ws_connect(srv.addr, &[("Sec-WebSocket-Protocol", &offer)]).unwrap();
        let selected = response
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .collect::<Vec<_>>();
        assert_eq!(selected, ["wsgate.v1"], "{driver}");
        assert_eq!(next_json(&mut ws), auth_ok("5"));
    }
}

#[test]
fn query_tokens_are_refused_unless_enabled() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let path = format!("/ws?token={}", token(json!("3")));
        let (s, head) = raw_exchange(srv.addr, upgrade_request(srv.addr, &path, &[]).as_bytes());
        assert_eq!(status(&head), 101, "{head}");
        let mut ws = tungstenite::WebSocket::from_raw_socket(
            s.try_clone().unwrap(),
            tungstenite::protocol::Role::Client,
            None,
        );
        let (texts, close) = read_until_close(&mut ws);
        assert_eq!(failure(401, &texts[0]).0, 401, "{driver}");
        assert_eq!(close.map(|c| c.0), Some(4401));

        let srv = start_open(driver, &["--allow-query-token"]);
        let (s, head) = raw_exchange(srv.addr, upgrade_request(srv.addr, &path, &[]).as_bytes());
        assert_eq!(status(&head), 101);
        let mut ws =
            tungstenite::WebSocket::from_raw_socket(s, tungstenite::protocol::Role::Client, None);
        assert_eq!(next_json(&mut ws), auth_ok("3"), "{driver}");
    }
}

#[test]
fn only_configured_methods_are_accepted() {
    for driver in drivers() {
        let srv = start_open(driver, &["--auth-methods", "first-frame"]);
        let bearer = format!("Bearer {}", token(json!("9")));
        let (mut ws, _) = ws_connect(srv.addr, &[("Authorization", &bearer)]).unwrap();
        // The header is ignored: the connection still waits for a first frame.
        ws.send(Message::text(
            json!({"action":"authenticate","token":token(json!("2"))}).to_string(),
        ))
        .unwrap();
        assert_eq!(next_json(&mut ws), auth_ok("2"), "{driver}");

        let srv = start_open(driver, &["--auth-methods", "header"]);
        let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
        let (texts, close) = read_until_close(&mut ws);
        assert_eq!(failure(401, &texts[0]).0, 401);
        assert_eq!(close.map(|c| c.0), Some(4401), "{driver}");
    }
}

#[test]
fn errors_after_authentication_keep_the_connection_open() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let (mut ws, reply) = ws_authenticated(srv.addr, json!("1"));
        assert_eq!(reply, auth_ok("1"));
        let cases = [
            Message::text("{not json"),
            Message::text(json!({"action":"authenticate","token":token(json!("1"))}).to_string()),
            Message::text(r#"{"action":"dance"}"#),
            Message::binary(vec![0u8; 4]),
        ];
        for msg in cases {
            ws.send(msg.clone()).unwrap();
            let reply = next_json(&mut ws);
            assert_eq!(reply["action"], "error", "{driver}: {msg:?} -> {reply}");
            assert_eq!(reply["payload"]["status_code"], 400, "{reply}");
            assert!(reply["payload"]["detail"].is_string());
        }
    }
}

/// The runtime keeps the keepalive timer: a silent client is pinged after `--ping-interval-ms`;
/// its pong restarts the clock, so a second ping comes (a connection still counting from before
/// the pong would close instead); then silence is 4408, no sooner than `--keepalive-timeout-ms`
/// after the pong and within ten times it. The rules themselves are unit tests in
/// `connection::tests`:
/// - `silence_brings_a_ping_then_4408_and_any_frame_resets_both`,
/// - `a_data_message_or_a_ping_from_the_client_resets_the_keepalive_too`.
#[test]
fn a_silent_client_is_pinged_its_pong_restarts_the_clock_and_silence_is_4408() {
    const KEEPALIVE: Duration = Duration::from_millis(400);
    on_every_driver_at_once(|driver| {
        let srv = start_open(
            driver,
            &["--ping-interval-ms", "100", "--keepalive-timeout-ms", "400"],
        );
        // A raw client, so nothing answers a ping behind the test's back.
        let mut s = raw_ws(srv.addr, &[]);
        read_at_most_tenfold(&s, KEEPALIVE);
        send_frame(&mut s, 0x81, authenticate_cmd("1").as_bytes());
        let (first, payload) = read_frame(&mut s);
        assert_eq!(first, 0x81, "{driver}");
        assert_eq!(
            serde_json::from_slice::<Value>(&payload).unwrap(),
            auth_ok("1")
        );
        let (first, _) = read_frame(&mut s);
        assert_eq!(first, 0x89, "{driver}: a ping after the ping interval");
        // Taken before the pong leaves, so the server's clock cannot restart earlier.
        let answered = Instant::now();
        send_frame(&mut s, 0x8a, b"");
        let (first, _) = read_frame(&mut s);
        assert_eq!(first, 0x89, "{driver}: the pong restarted the clock");
        let (first, payload) = read_frame(&mut s);
        let waited = answered.elapsed();
        assert_eq!(first, 0x88, "{driver}: expected the keepalive close");
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4408);
        assert_eq!(&payload[2..], b"keepalive timeout", "{driver}");
        assert!(
            waited >= KEEPALIVE,
            "{driver}: closed {waited:?} after the pong"
        );
        assert!(closed_by_server(&mut s), "{driver}");
    });
}

fn data(file: &str) -> String {
    format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn rs256_and_es256_tokens_verify_with_a_public_key_file() {
    let cases = [
        (
            "rs256",
            "test-rsa-public.pem",
            "test-rsa-private.pem",
            jsonwebtoken::Algorithm::RS256,
        ),
        (
            "es256",
            "test-ec-public.pem",
            "test-ec-private.pem",
            jsonwebtoken::Algorithm::ES256,
        ),
    ];
    for driver in drivers() {
        for (alg, public, private, jwt_alg) in cases {
            let key_path = data(public);
            let flags = [
                "--allowed-origins",
                "*",
                "--jwt-algorithm",
                alg,
                "--jwt-public-key-file",
                &key_path,
            ];
            let srv = start_with_env(driver, &flags, wsgate::config::Env::default());
            let pem = std::fs::read(data(private)).unwrap();
            let key = match jwt_alg {
                jsonwebtoken::Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
                _ => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
            }
            .unwrap();
            let claims = json!({"token_type": "access", "exp": now() + 60, "user_id": 11});
            let good =
                jsonwebtoken::encode(&jsonwebtoken::Header::new(jwt_alg), &claims, &key).unwrap();
            let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
            ws.send(Message::text(
                json!({"action":"authenticate","token":good}).to_string(),
            ))
            .unwrap();
            assert_eq!(next_json(&mut ws), auth_ok("11"), "{driver} {alg}");
            // Algorithm confusion: an HS256 token keyed with the public key's bytes is refused.
            let public_pem = std::fs::read(&key_path).unwrap();
            let forged = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(&public_pem),
            )
            .unwrap();
            let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
            ws.send(Message::text(
                json!({"action":"authenticate","token":forged}).to_string(),
            ))
            .unwrap();
            let (texts, close) = read_until_close(&mut ws);
            assert_eq!(failure(401, &texts[0]).0, 401);
            assert_eq!(
                close.map(|c| c.0),
                Some(4401),
                "{driver} {alg}: forged HS256 accepted"
            );
        }
    }
}
