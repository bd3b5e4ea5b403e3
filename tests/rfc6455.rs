//! RFC 6455 on the server side, with raw frames: protocol errors get their RFC close codes even
//! before authentication; fragmentation with interleaved control frames; the close handshake.

mod common;

use common::*;

/// A named sequence of client frames: (first byte, payload).
type Case<'a> = (&'a str, &'a [(u8, &'a [u8])]);
use serde_json::Value;

fn close_code_after(driver: &str, flags: &[&str], frames: &[(u8, &[u8])]) -> Option<u16> {
    let srv = start_open(driver, flags);
    let mut s = raw_ws(srv.addr, &[]);
    for (first, payload) in frames {
        send_frame(&mut s, *first, payload);
    }
    let code = read_close_code(&mut s);
    assert!(
        closed_by_server(&mut s),
        "{driver}: TCP left open after the close"
    );
    code
}

#[test]
fn protocol_errors_close_1002_before_authentication() {
    for driver in drivers() {
        let cases: [Case; 6] = [
            ("RSV1 set", &[(0xc1, b"{}")]),
            ("reserved opcode 3", &[(0x83, b"")]),
            ("reserved control opcode 11", &[(0x8b, b"")]),
            ("ping over 125 bytes", &[(0x89, &[0u8; 126])]),
            ("fragmented ping", &[(0x09, b"a")]),
            ("continuation without a start", &[(0x80, b"x")]),
        ];
        for (what, frames) in cases {
            assert_eq!(
                close_code_after(driver, &[], frames),
                Some(1002),
                "{driver}: {what}"
            );
        }
    }
}

#[test]
fn an_unmasked_client_frame_closes_1002() {
    use std::io::Write;
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let mut s = raw_ws(srv.addr, &[]);
        s.write_all(&[0x81, 0x05, b'H', b'e', b'l', b'l', b'o'])
            .unwrap();
        assert_eq!(read_close_code(&mut s), Some(1002), "{driver}");
    }
}

#[test]
fn invalid_utf8_closes_1007_even_across_fragments() {
    for driver in drivers() {
        assert_eq!(
            close_code_after(driver, &[], &[(0x81, &[0xff, 0xfe])]),
            Some(1007),
            "{driver}"
        );
        // A valid prefix, then a fragment that breaks the sequence.
        let frames: &[(u8, &[u8])] = &[(0x01, &[b'a', 0xe2, 0x82]), (0x80, b"b")];
        assert_eq!(
            close_code_after(driver, &[], frames),
            Some(1007),
            "{driver}"
        );
        // A close reason that is not UTF-8.
        let frames: &[(u8, &[u8])] = &[(0x88, &[0x03, 0xe8, 0xff])];
        assert_eq!(
            close_code_after(driver, &[], frames),
            Some(1007),
            "{driver}"
        );
    }
}

#[test]
fn oversized_frames_and_messages_close_1009() {
    for driver in drivers() {
        let flags = ["--max-frame-bytes", "100", "--max-message-bytes", "150"];
        // Over the frame limit: refused from the header, before the payload is read.
        assert_eq!(
            close_code_after(driver, &flags, &[(0x81, &[b'a'; 101])]),
            Some(1009)
        );
        // Each fragment fits, the message does not.
        let frames: &[(u8, &[u8])] = &[(0x01, &[b'a'; 100]), (0x80, &[b'a'; 60])];
        assert_eq!(
            close_code_after(driver, &flags, frames),
            Some(1009),
            "{driver}"
        );
    }
}

#[test]
fn bad_close_frames_close_1002() {
    for driver in drivers() {
        for payload in [
            &[0x03][..],
            &[0x03, 0xed],
            &[0x03, 0xee],
            &[0x00, 0x00],
            &[0x13, 0x88],
        ] {
            let code = close_code_after(driver, &[], &[(0x88, payload)]);
            assert_eq!(code, Some(1002), "{driver}: close payload {payload:?}");
        }
    }
}

#[test]
fn the_close_handshake_echoes_the_code_and_closes_tcp() {
    for driver in drivers() {
        assert_eq!(
            close_code_after(driver, &[], &[(0x88, &[0x03, 0xe8, b'b', b'y', b'e'])]),
            Some(1000)
        );
        assert_eq!(
            close_code_after(driver, &[], &[(0x88, &[0x0f, 0xa0])]),
            Some(4000),
            "{driver}"
        );
        assert_eq!(
            close_code_after(driver, &[], &[(0x88, b"")]),
            None,
            "{driver}"
        );
    }
}

#[test]
fn a_fragmented_authenticate_with_an_interleaved_ping_works() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let mut s = raw_ws(srv.addr, &[]);
        let cmd = authenticate_cmd("frag");
        let (a, rest) = cmd.as_bytes().split_at(10);
        let (b, c) = rest.split_at(rest.len() / 2);
        send_frame(&mut s, 0x01, a);
        send_frame(&mut s, 0x89, b"are you there");
        send_frame(&mut s, 0x00, b);
        send_frame(&mut s, 0x80, c);
        let (first, payload) = read_frame(&mut s);
        assert_eq!(
            (first, payload.as_slice()),
            (0x8a, &b"are you there"[..]),
            "{driver}: pong first"
        );
        let (first, payload) = read_frame(&mut s);
        assert_eq!(first, 0x81);
        assert_eq!(
            serde_json::from_slice::<Value>(&payload).unwrap(),
            auth_ok("frag"),
            "{driver}"
        );
    }
}

#[test]
fn frames_pipelined_behind_the_head_are_served() {
    use std::io::Write;
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        // The upgrade and the first frame in one write: the frame must not be lost.
        let mut s = tcp(srv.addr);
        let mut bytes = upgrade_request(srv.addr, "/ws", &[]).into_bytes();
        let cmd = authenticate_cmd("p");
        let mask = [1u8, 2, 3, 4];
        bytes.extend_from_slice(&[0x81, 0x80 | 126]);
        bytes.extend_from_slice(&(cmd.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&mask);
        bytes.extend(cmd.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        s.write_all(&bytes).unwrap();
        assert_eq!(status(&read_head(&mut s)), 101);
        let (first, payload) = read_frame(&mut s);
        assert_eq!(first, 0x81);
        assert_eq!(
            serde_json::from_slice::<Value>(&payload).unwrap(),
            auth_ok("p"),
            "{driver}"
        );
    }
}
