//! docs/protocol.md §2 over real upgrades: 403 and no upgrade for a refused Origin, on each driver.

mod common;

use common::*;

fn upgrade_status(srv: &TestServer, origin: Option<&str>) -> u16 {
    let line = origin.map(|o| format!("Origin: {o}"));
    let extra: Vec<&str> = line.iter().map(String::as_str).collect();
    let (mut s, head) = raw_exchange(
        srv.addr,
        upgrade_request(srv.addr, "/ws", &extra).as_bytes(),
    );
    let code = status(&head);
    if code == 403 {
        assert!(closed_by_server(&mut s), "403 must close the connection");
    }
    code
}

#[test]
fn allowed_origins_decide_the_upgrade() {
    for driver in drivers() {
        let srv = start(
            driver,
            &["--allowed-origins", "http://localhost,https://.example.com"],
        );
        let cases = [
            (Some("http://localhost"), 101),
            (Some("http://localhost:80"), 101),
            (Some("http://localhost:8080"), 403),
            (Some("https://example.com"), 101),
            (Some("https://deep.sub.example.com"), 101),
            (Some("https://badexample.com"), 403),
            (Some("http://example.com"), 403),
            (Some("null"), 403),
            (Some(""), 403),
            (Some("http://[::1"), 403),
            (None, 403),
        ];
        for (origin, expected) in cases {
            assert_eq!(
                upgrade_status(&srv, origin),
                expected,
                "{driver}: {origin:?}"
            );
        }
    }
}

#[test]
fn star_allows_a_missing_origin() {
    for driver in drivers() {
        let srv = start(driver, &["--allowed-origins", "*"]);
        assert_eq!(upgrade_status(&srv, None), 101);
        assert_eq!(upgrade_status(&srv, Some("null")), 101, "{driver}");
    }
}

#[test]
fn allowed_hosts_mode_mirrors_channels() {
    for driver in drivers() {
        // No list and no --debug: everything is refused.
        let srv = start(driver, &[]);
        assert_eq!(upgrade_status(&srv, Some("http://localhost")), 403);
        // --debug with an empty list: the local hosts, any port.
        let srv = start(driver, &["--debug"]);
        assert_eq!(upgrade_status(&srv, Some("http://localhost:3000")), 101);
        assert_eq!(upgrade_status(&srv, Some("http://127.0.0.1:8000")), 101);
        assert_eq!(upgrade_status(&srv, Some("http://[::1]:8000")), 101);
        assert_eq!(upgrade_status(&srv, Some("http://evil.test")), 403);
        // --debug with a list: the list only (a replacement, not an addition).
        let srv = start(driver, &["--debug", "--allowed-hosts", ".example.com"]);
        assert_eq!(
            upgrade_status(&srv, Some("https://www.example.com:8443")),
            101
        );
        assert_eq!(
            upgrade_status(&srv, Some("http://localhost:3000")),
            403,
            "{driver}"
        );
    }
}
