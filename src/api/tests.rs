//! The API's rules on byte vectors: routing, framing, keys, bodies, responses.

use super::body::*;
use super::request::*;
use super::response::*;
use super::*;
use crate::auth::api_keys::ApiKeys;
use crate::metrics;

fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
    httparse::Header {
        name,
        value: value.as_bytes(),
    }
}

/// An error, its status, whether it closes the connection, and its required header.
type Expected = (ApiError, u16, bool, Option<(&'static str, &'static str)>);

/// Every variant with what it must mean on the wire.
const ALL: [Expected; 12] = [
    (ApiError::NotFound, 404, false, None),
    (
        ApiError::MethodNotAllowed("GET"),
        405,
        false,
        Some(("Allow", "GET")),
    ),
    (
        ApiError::MethodNotAllowed("POST"),
        405,
        false,
        Some(("Allow", "POST")),
    ),
    (
        ApiError::Unauthorized,
        401,
        false,
        Some(("WWW-Authenticate", "Bearer")),
    ),
    (ApiError::ApiDisabled, 403, false, None),
    (ApiError::LengthRequired, 411, true, None),
    (ApiError::TransferEncoding, 411, true, None),
    (ApiError::BadContentLength, 400, true, None),
    (ApiError::BodyTooLarge, 413, true, None),
    (ApiError::UnsupportedMediaType, 415, false, None),
    (ApiError::BadJson("invalid JSON"), 400, false, None),
    (ApiError::BadGroup, 400, false, None),
];

fn error_response(err: &ApiError, keep_alive: bool) -> String {
    let mut out = Vec::new();
    write_error(&mut out, err, keep_alive);
    String::from_utf8(out).unwrap()
}

/// Splits a response into (status, headers, body), checking the framing on the way.
fn split_response(text: &str) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line[9..12].parse().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (n, v) = line.split_once(": ").unwrap();
            (n.to_owned(), v.to_owned())
        })
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "Content-Length")
        .unwrap()
        .1
        .parse::<usize>()
        .unwrap();
    assert_eq!(length, body.len());
    (status, headers, body.to_owned())
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn every_error_maps_to_its_status() {
    for (err, status, closes, header) in ALL {
        assert_eq!(err.status(), status, "{err:?}");
        assert_eq!(err.closes_connection(), closes, "{err:?}");
        assert_eq!(err.header(), header, "{err:?}");
        assert_eq!(err.to_string(), err.detail(), "{err:?}");
        assert!(!http::reason_phrase(status).is_empty(), "{status}");
    }
}

#[test]
fn error_bodies_are_json_with_the_detail() {
    for (err, status, closes, header) in ALL {
        for keep_alive in [false, true] {
            let text = error_response(&err, keep_alive);
            let (got_status, headers, body) = split_response(&text);
            assert_eq!(got_status, status);
            assert_eq!(header_of(&headers, "Content-Type"), Some(JSON));
            let want_conn = if keep_alive && !closes {
                "keep-alive"
            } else {
                "close"
            };
            assert_eq!(
                header_of(&headers, "Connection"),
                Some(want_conn),
                "{err:?}"
            );
            if let Some((name, value)) = header {
                assert_eq!(header_of(&headers, name), Some(value));
            }
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json, serde_json::json!({ "error": err.detail() }));
            let compact = format!(
                r#"{{"error":{}}}"#,
                serde_json::to_string(err.detail()).unwrap()
            );
            assert_eq!(body, compact);
        }
    }
    assert_eq!(
        error_response(&ApiError::BadJson("say \"hi\""), false)
            .rsplit("\r\n")
            .next(),
        Some(r#"{"error":"say \"hi\""}"#)
    );
}

#[test]
fn routes_every_method_and_path() {
    let methods = [
        "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "get", "post",
    ];
    let paths = [
        (PUBLISH_PATH, Some(Endpoint::Publish)),
        (HEALTHZ_PATH, Some(Endpoint::Healthz)),
        (METRICS_PATH, Some(Endpoint::Metrics)),
        (REVOKE_PATH, Some(Endpoint::Revoke)),
        (WS_AUTH_PATH, Some(Endpoint::WsAuth)),
        ("/ws", None),
        ("/", None),
        ("", None),
        ("/healthz/", None),
        ("/HEALTHZ", None),
        ("/api/publish/", None),
        ("/api/publish?x", None),
        ("//healthz", None),
        ("/metrics.txt", None),
    ];
    for (path, endpoint) in paths {
        for method in methods {
            let got = route(method, path);
            match endpoint {
                None => assert_eq!(got, Err(ApiError::NotFound), "{method} {path}"),
                Some(e) if method == e.method() => assert_eq!(got, Ok(e)),
                Some(e) => assert_eq!(
                    got,
                    Err(ApiError::MethodNotAllowed(e.method())),
                    "{method} {path}"
                ),
            }
        }
    }
    assert_eq!(route("POST", "/api/publish"), Ok(Endpoint::Publish));
    assert_eq!(route("GET", "/healthz"), Ok(Endpoint::Healthz));
    assert_eq!(route("GET", "/metrics"), Ok(Endpoint::Metrics));
    assert_eq!(
        route("GET", "/api/publish"),
        Err(ApiError::MethodNotAllowed("POST"))
    );
    assert_eq!(
        route("HEAD", "/healthz"),
        Err(ApiError::MethodNotAllowed("GET"))
    );
}

#[test]
fn body_length_cases() {
    let max = 1024;
    let cases: &[(&[httparse::Header<'_>], Result<usize, ApiError>)] = &[
        (&[h("Content-Length", "0")], Ok(0)),
        (&[h("Content-Length", "17")], Ok(17)),
        (&[h("content-length", "1024")], Ok(1024)),
        (&[h("CONTENT-LENGTH", " 5 \t")], Ok(5)),
        (&[h("Content-Length", "007")], Ok(7)),
        (&[h("Content-Length", "1025")], Err(ApiError::BodyTooLarge)),
        (
            &[h("Content-Length", "99999999999999999999999999")],
            Err(ApiError::BodyTooLarge),
        ),
        (&[], Err(ApiError::LengthRequired)),
        (&[h("Host", "x")], Err(ApiError::LengthRequired)),
        (&[h("Content-Length", "")], Err(ApiError::BadContentLength)),
        (
            &[h("Content-Length", "  ")],
            Err(ApiError::BadContentLength),
        ),
        (
            &[h("Content-Length", "-1")],
            Err(ApiError::BadContentLength),
        ),
        (
            &[h("Content-Length", "+5")],
            Err(ApiError::BadContentLength),
        ),
        (
            &[h("Content-Length", "5x")],
            Err(ApiError::BadContentLength),
        ),
        (
            &[h("Content-Length", "0x10")],
            Err(ApiError::BadContentLength),
        ),
        (
            &[h("Content-Length", "1 2")],
            Err(ApiError::BadContentLength),
        ),
        (
            &[h("Content-Length", "5, 5")],
            Err(ApiError::BadContentLength),
        ),
        (
            &[h("Content-Length", "\u{663}")],
            Err(ApiError::BadContentLength),
        ),
        (
            &[h("Content-Length", "5"), h("Content-Length", "5")],
            Err(ApiError::BadContentLength),
        ),
        (
            &[h("Content-Length", "5"), h("content-length", "6")],
            Err(ApiError::BadContentLength),
        ),
        (
            &[h("Transfer-Encoding", "chunked")],
            Err(ApiError::TransferEncoding),
        ),
        (
            &[h("Content-Length", "5"), h("Transfer-Encoding", "chunked")],
            Err(ApiError::TransferEncoding),
        ),
        (
            &[h("transfer-encoding", "identity"), h("Content-Length", "5")],
            Err(ApiError::TransferEncoding),
        ),
    ];
    for (headers, want) in cases {
        assert_eq!(body_length(headers, max), *want, "{headers:?}");
    }
    assert_eq!(
        body_length(&[h("Content-Length", "0")], 0),
        Ok(0),
        "zero fits a zero limit"
    );
    assert_eq!(
        body_length(&[h("Content-Length", "1")], 0),
        Err(ApiError::BodyTooLarge)
    );
}

#[test]
fn expected_body_per_endpoint() {
    let json = h("Content-Type", "application/json");
    let cl = h("Content-Length", "10");
    assert_eq!(expected_body(Endpoint::Publish, &[cl, json], 100), Ok(10));
    assert_eq!(expected_body(Endpoint::Publish, &[cl], 100), Ok(10));
    for ok in [
        "application/json; charset=utf-8",
        "Application/JSON",
        " application/json ;charset=UTF-8",
    ] {
        assert_eq!(
            expected_body(Endpoint::Publish, &[cl, h("Content-Type", ok)], 100),
            Ok(10),
            "{ok}"
        );
    }
    for bad in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/jsonx",
        "",
    ] {
        assert_eq!(
            expected_body(Endpoint::Publish, &[cl, h("Content-Type", bad)], 100),
            Err(ApiError::UnsupportedMediaType),
            "{bad}"
        );
    }
    assert_eq!(
        expected_body(Endpoint::Publish, &[cl, json, json], 100),
        Err(ApiError::UnsupportedMediaType)
    );
    // Framing is judged first, so a 415 always has a known length.
    assert_eq!(
        expected_body(Endpoint::Publish, &[h("Content-Type", "text/plain")], 100),
        Err(ApiError::LengthRequired)
    );
    assert_eq!(
        expected_body(Endpoint::Publish, &[json], 100),
        Err(ApiError::LengthRequired)
    );
    assert_eq!(
        expected_body(Endpoint::Publish, &[cl, json], 9),
        Err(ApiError::BodyTooLarge)
    );
    for get in [Endpoint::Healthz, Endpoint::Metrics] {
        assert_eq!(expected_body(get, &[], 100), Ok(0));
        assert_eq!(
            expected_body(get, &[h("Content-Type", "text/plain")], 100),
            Ok(0)
        );
        assert_eq!(expected_body(get, &[h("Content-Length", "0")], 100), Ok(0));
        assert_eq!(expected_body(get, &[cl], 100), Err(ApiError::BodyTooLarge));
        assert_eq!(
            expected_body(get, &[h("Transfer-Encoding", "chunked")], 100),
            Err(ApiError::TransferEncoding)
        );
        assert_eq!(
            expected_body(get, &[h("Content-Length", "x")], 100),
            Err(ApiError::BadContentLength)
        );
    }
}

#[test]
fn keep_alive_follows_version_and_connection() {
    let cases: &[(u8, &[httparse::Header<'_>], bool)] = &[
        (1, &[], true),
        (0, &[], false),
        (1, &[h("Connection", "close")], false),
        (1, &[h("connection", "Keep-Alive, CLOSE")], false),
        (
            1,
            &[h("Connection", "keep-alive"), h("Connection", "close")],
            false,
        ),
        (1, &[h("Connection", "keep-alive")], true),
        (1, &[h("Connection", "closed")], true),
        (0, &[h("Connection", "keep-alive")], true),
        (0, &[h("Connection", " Keep-Alive ")], true),
        (0, &[h("Connection", "keep-alive, close")], false),
        (0, &[h("Keep-Alive", "timeout=5")], false),
    ];
    for (version, headers, want) in cases {
        assert_eq!(
            wants_keep_alive(*version, headers),
            *want,
            "{version} {headers:?}"
        );
    }
}

#[test]
fn single_headers() {
    let headers = [h("Authorization", "a"), h("X", "1"), h("x", "2")];
    assert_eq!(single_header(&headers, "authorization"), Some(&b"a"[..]));
    assert_eq!(single_header(&headers, "x"), None);
    assert_eq!(single_header(&headers, "missing"), None);
}

#[test]
fn authorize_cases() {
    let keys = ApiKeys::new(["k"]);
    assert_eq!(authorize(&keys, &[h("Authorization", "Bearer k")]), Ok(()));
    assert_eq!(authorize(&keys, &[h("authorization", "bearer k")]), Ok(()));
    assert_eq!(authorize(&keys, &[]), Err(ApiError::Unauthorized));
    assert_eq!(
        authorize(&keys, &[h("Authorization", "Bearer x")]),
        Err(ApiError::Unauthorized)
    );
    assert_eq!(
        authorize(
            &keys,
            &[
                h("Authorization", "Bearer k"),
                h("Authorization", "Bearer k")
            ]
        ),
        Err(ApiError::Unauthorized)
    );
    assert_eq!(
        authorize(&ApiKeys::default(), &[h("Authorization", "Bearer k")]),
        Err(ApiError::ApiDisabled)
    );
}

#[test]
fn parses_good_publish_bodies() {
    let cases = [
        (r#"{"group":"room.1","data":"hi"}"#, "room.1", r#""hi""#),
        (r#"{"group":"room.1","data":42}"#, "room.1", "42"),
        (r#"{"group":"room.1","data":-1.5e3}"#, "room.1", "-1.5e3"),
        (
            r#"{"group":"r","data":{"a": [1, {"b": null}], "c": "\u00e9"}}"#,
            "r",
            r#"{"a": [1, {"b": null}], "c": "\u00e9"}"#,
        ),
        (
            r#"{"group":"r","data":[1,"two",3.0]}"#,
            "r",
            r#"[1,"two",3.0]"#,
        ),
        (r#"{"group":"r","data":null}"#, "r", "null"),
        (r#"{"group":"r","data":true}"#, "r", "true"),
        (
            " \r\n\t{ \"data\" : \"x\" , \"group\" : \"A-b_c.9\" } \n",
            "A-b_c.9",
            r#""x""#,
        ),
        (r#"{"group":"room\u002e1","data":1}"#, "room.1", "1"),
        (r#"{"gr\u006fup":"g","d\u0061ta":1}"#, "g", "1"),
    ];
    for (body, group, data) in cases {
        let publish = parse_publish(body.as_bytes()).unwrap();
        assert_eq!(publish.group, group, "{body}");
        assert_eq!(publish.data.get(), data, "{body}");
    }
    let plain = parse_publish(br#"{"group":"room.1","data":1}"#).unwrap();
    assert!(matches!(plain.group, Cow::Borrowed(_)));
    let escaped = parse_publish(br#"{"group":"room\u002e1","data":1}"#).unwrap();
    assert!(matches!(escaped.group, Cow::Owned(_)));
    let longest = format!(r#"{{"group":"{}","data":0}}"#, "g".repeat(99));
    assert_eq!(parse_publish(longest.as_bytes()).unwrap().group.len(), 99);
    // `data` nests at most `MAX_DATA_DEPTH` levels (skipped without recursion up to there).
    let nested = format!("{}{}", "[".repeat(64), "]".repeat(64));
    let deep = format!(r#"{{"group":"g","data":{nested}}}"#);
    assert_eq!(parse_publish(deep.as_bytes()).unwrap().data.get(), nested);
    for depth in [65, 200_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let deep = format!(r#"{{"group":"g","data":{nested}}}"#);
        assert_eq!(
            parse_publish(deep.as_bytes()).unwrap_err(),
            ApiError::BadJson("data nested too deeply")
        );
    }
}

#[test]
fn refuses_bad_publish_bodies() {
    let too_long = format!(r#"{{"group":"{}","data":0}}"#, "g".repeat(100));
    let cases: Vec<(&[u8], ApiError)> = vec![
        (b"", ApiError::BadJson("invalid JSON")),
        (b"   ", ApiError::BadJson("invalid JSON")),
        (b"hello", ApiError::BadJson("invalid JSON")),
        (b"{", ApiError::BadJson("invalid JSON")),
        (
            br#"{"group":"g","data":}"#,
            ApiError::BadJson("invalid JSON"),
        ),
        (
            br#"{"group":"g","data":1,}"#,
            ApiError::BadJson("invalid JSON"),
        ),
        (
            br#"{"group":"g","data":1} x"#,
            ApiError::BadJson("invalid JSON"),
        ),
        (
            br#"{"group":"g","data":1}{}"#,
            ApiError::BadJson("invalid JSON"),
        ),
        (
            br#"{group:"g","data":1}"#,
            ApiError::BadJson("invalid JSON"),
        ),
        (
            br#"{"group":"g","data":NaN}"#,
            ApiError::BadJson("invalid JSON"),
        ),
        (
            br#"{"group":"a","group":"b","data":1}"#,
            ApiError::BadJson("invalid JSON"),
        ),
        (
            br#"{"group":"g","data":1,"data":2}"#,
            ApiError::BadJson("invalid JSON"),
        ),
        (
            b"\xef\xbb\xbf{\"group\":\"g\",\"data\":1}",
            ApiError::BadJson("invalid JSON"),
        ),
        (
            b"{\"group\":\"g\",\"data\":\"\xff\"}",
            ApiError::BadJson("body is not UTF-8"),
        ),
        (b"[]", ApiError::BadJson("body must be a JSON object")),
        (
            br#"["g",1]"#,
            ApiError::BadJson("body must be a JSON object"),
        ),
        (b"null", ApiError::BadJson("body must be a JSON object")),
        (b"42", ApiError::BadJson("body must be a JSON object")),
        (
            br#""group""#,
            ApiError::BadJson("body must be a JSON object"),
        ),
        (b"{}", ApiError::BadJson("missing group")),
        (br#"{"data":1}"#, ApiError::BadJson("missing group")),
        (
            br#"{"group":null,"data":1}"#,
            ApiError::BadJson("group must be a string"),
        ),
        (
            br#"{"group":1,"data":1}"#,
            ApiError::BadJson("group must be a string"),
        ),
        (
            br#"{"group":["g"],"data":1}"#,
            ApiError::BadJson("group must be a string"),
        ),
        (
            br#"{"group":{"g":1},"data":1}"#,
            ApiError::BadJson("group must be a string"),
        ),
        (br#"{"group":"g"}"#, ApiError::BadJson("missing data")),
        (
            br#"{"group":"g","data":1,"extra":true}"#,
            ApiError::BadJson("unknown field: only group and data are allowed"),
        ),
        (
            br#"{"grop":"g","data":1}"#,
            ApiError::BadJson("unknown field: only group and data are allowed"),
        ),
        (
            br#"{"Group":"g","data":1}"#,
            ApiError::BadJson("unknown field: only group and data are allowed"),
        ),
        (br#"{"group":"","data":1}"#, ApiError::BadGroup),
        (br#"{"group":"room 1","data":1}"#, ApiError::BadGroup),
        (br#"{"group":"room*","data":1}"#, ApiError::BadGroup),
        (br#"{"group":"caf\u00e9","data":1}"#, ApiError::BadGroup),
        (br#"{"group":"room\n","data":1}"#, ApiError::BadGroup),
        (too_long.as_bytes(), ApiError::BadGroup),
    ];
    for (body, want) in cases {
        let got = parse_publish(body).unwrap_err();
        assert_eq!(got, want, "{}", String::from_utf8_lossy(body));
        assert_eq!(got.status(), 400);
    }
}

#[test]
fn response_layout() {
    let mut out = Vec::new();
    write_json_response(&mut out, 202, &[("X-A", "1\r\nInjected: yes")], b"{}", true);
    assert_eq!(
        out,
        b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nX-A: 1Injected: yes\r\n\
          Content-Length: 2\r\nConnection: keep-alive\r\n\r\n{}"
    );
    out.clear();
    write_accepted(&mut out, false);
    assert_eq!(
        out,
        b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n\
          Content-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}"
    );
    out.clear();
    write_healthz(&mut out, &[], true);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
          Content-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
    );
    out.clear();
    write_healthz(&mut out, &[1, 3], false);
    let (status, _, body) = split_response(std::str::from_utf8(&out).unwrap());
    assert_eq!(
        (status, body.as_str()),
        (503, "workers not responding: 1 3")
    );
    out.clear();
    write_metrics(&mut out, "# x\n", false);
    let (status, headers, body) = split_response(std::str::from_utf8(&out).unwrap());
    assert_eq!(status, 200);
    assert_eq!(
        header_of(&headers, "Content-Type"),
        Some(metrics::CONTENT_TYPE)
    );
    assert_eq!(body, "# x\n");
    // Appends, and every response parses back with httparse.
    let mut out = b"prefix".to_vec();
    write_error(&mut out, &ApiError::MethodNotAllowed("POST"), true);
    assert!(out.starts_with(b"prefixHTTP/1.1 405 Method Not Allowed\r\n"));
    let mut storage = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut storage);
    assert!(resp.parse(&out[6..]).unwrap().is_complete());
    assert_eq!(resp.code, Some(405));
}

/// The pure handler: whole requests in, a response and a command out.
mod handler {
    use clap::Parser;

    use super::super::*;
    use crate::config::{Config, DevSecret, Env};

    const SECRET: &str = "api-handler-test-secret";
    const KEY: &str = "api-handler-test-key-0123";
    const NOW: u64 = 1_800_000_000;

    struct Fixture {
        settings: Settings,
        tables: Tables,
        stats: Arc<CoreStats>,
    }

    impl Fixture {
        fn new() -> Self {
            let env = Env {
                jwt_secret: Some(SECRET.into()),
                api_key: Some(KEY.into()),
                ..Env::default()
            };
            let settings = Config::try_parse_from(["wsgate", "--allowed-origins", "*"])
                .unwrap()
                .into_settings(&env, 1, || DevSecret(Vec::new()))
                .unwrap();
            Self {
                tables: Tables::new(&settings.tables),
                settings,
                stats: Arc::new(CoreStats::default()),
            }
        }

        /// Handles `head` + `body` with these workers unresponsive; the response text.
        fn call<'b>(
            &self,
            head: &str,
            body: &'b [u8],
            unresponsive: &[usize],
        ) -> (String, Handled<'b>) {
            let all = [self.stats.clone()];
            let ctx = Context {
                settings: &self.settings,
                tables: &self.tables,
                stats: &self.stats,
                all_stats: &all,
                unresponsive,
                client: Some("192.0.2.1".parse().unwrap()),
            };
            let mut out = Vec::new();
            let handled = handle(head.as_bytes(), body, &ctx, NOW, &mut out);
            (String::from_utf8(out).unwrap(), handled)
        }
    }

    fn token(claims: &str) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use hmac::{Hmac, Mac};
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn post(path: &str, auth: &str, body: &[u8]) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
    }

    #[test]
    fn a_publish_is_accepted_and_handed_out_as_a_command() {
        let f = Fixture::new();
        let body = br#"{"group":"room.1","data":{"n":1}}"#;
        let (text, handled) = f.call(&post(PUBLISH_PATH, KEY, body), body, &[]);
        assert!(text.starts_with("HTTP/1.1 202 "), "{text}");
        assert!(handled.keep_alive);
        let Some(Command::Publish { group, data }) = handled.command else {
            panic!("expected a publish");
        };
        assert_eq!((group.as_ref(), data.get()), ("room.1", r#"{"n":1}"#));
        // A bad body is answered 400 and publishes nothing; the connection stays.
        let bad = br#"{"group":"room 1","data":1}"#;
        let (text, handled) = f.call(&post(PUBLISH_PATH, KEY, bad), bad, &[]);
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(handled.command.is_none() && handled.keep_alive);
        // The wrong key never reaches the body.
        let (text, handled) = f.call(&post(PUBLISH_PATH, "wrong", body), body, &[]);
        assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
        assert!(handled.command.is_none());
    }

    #[test]
    fn a_revocation_is_recorded_before_its_connections_are_closed() {
        let f = Fixture::new();
        let body = br#"{"user":"42"}"#;
        let (text, handled) = f.call(&post(REVOKE_PATH, KEY, body), body, &[]);
        // The answer waits for the count of connections closed.
        assert!(text.is_empty(), "{text}");
        let Some(Command::Revoke { by_user, key, .. }) = handled.command else {
            panic!("expected a revocation");
        };
        assert!(by_user);
        assert_eq!(key, f.tables.fingerprint("42"));
        // Recorded: a token for the user issued before now no longer authenticates.
        let old = token(&format!(
            r#"{{"user_id":"42","iat":{},"exp":{}}}"#,
            NOW - 5,
            NOW + 60
        ));
        let identity = f
            .settings
            .auth
            .verifier
            .verify(old.as_bytes(), NOW)
            .unwrap();
        assert!(f.tables.revocations.is_revoked(&identity, NOW));
    }

    #[test]
    fn ws_auth_issues_a_ticket_that_redeems_to_the_tokens_identity() {
        let f = Fixture::new();
        let jwt = token(&format!(r#"{{"user_id":"9","exp":{}}}"#, NOW + 60));
        let head = format!(
            "POST {WS_AUTH_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {jwt}\r\n\r\n"
        );
        let (text, handled) = f.call(&head, b"", &[]);
        assert!(text.starts_with("HTTP/1.1 201 "), "{text}");
        assert!(text.contains("Cache-Control: no-store"), "{text}");
        assert!(handled.command.is_none() && handled.keep_alive);
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let answer: serde_json::Value = serde_json::from_str(body).unwrap();
        let ticket = answer["ticket"].as_str().unwrap();
        let identity = f.tables.tickets.redeem(ticket, NOW).unwrap();
        assert_eq!(identity.user.as_str(), "9");
        // Without a bearer token: 401 with the challenge.
        let bare = format!("POST {WS_AUTH_PATH} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (text, _) = f.call(&bare, b"", &[]);
        assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
        assert!(text.contains("WWW-Authenticate: Bearer"), "{text}");
    }

    #[test]
    fn healthz_names_the_workers_that_do_not_answer() {
        let f = Fixture::new();
        let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let (text, _) = f.call(get, b"", &[]);
        assert!(
            text.starts_with("HTTP/1.1 200 ") && text.ends_with("ok"),
            "{text}"
        );
        let (text, _) = f.call(get, b"", &[1, 3]);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.ends_with("workers not responding: 1 3"), "{text}");
    }

    #[test]
    fn a_framing_error_closes_the_connection_whatever_the_client_asked() {
        let f = Fixture::new();
        let head = "POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (text, handled) = f.call(head, b"", &[]);
        assert!(text.starts_with("HTTP/1.1 411 "), "{text}");
        assert!(text.contains("Connection: close"), "{text}");
        assert!(!handled.keep_alive);
    }
}
