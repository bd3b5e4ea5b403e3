#!/usr/bin/env python3
"""Which Autobahn|Testsuite cases wsgate runs, and what each gateway case must end with.

Used by run.sh (to write the fuzzingclient spec) and by check_results.py (to judge the
reports). Python 3 standard library only; the case ids are those of autobahntestsuite
25.10.1 (pinned in run.sh).

    python3 cases.py spec echo|gateway <ws-url> <outdir>   # prints the fuzzingclient spec

Echo mode: sections 1-10 in full (301 cases in 25.10.1; section 8 does not exist).
12.* and 13.* are permessage-deflate, which wsgate does not negotiate (docs/protocol.md section 1).

Gateway mode: the real gateway requires authentication first, so every complete data
message it gets before auth is closed with 1008 and no case that expects an echo can pass.
What is still fully specified is how the gateway fails a connection on a protocol error
and how it answers control frames and the close handshake: these happen in the codec,
before any message reaches the auth policy, so the RFC 6455 outcome must hold even
before authentication. The cases below are exactly those in which the client sends no
complete, valid data message before the frame under test.
"""

import json
import sys

PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007
NORMAL = 1000

AGENT = "wsgate"

ECHO_CASES = ["%d.*" % n for n in range(1, 11)]
# Sanity floor: fewer reported cases means the run broke off (the fuzzingclient stops
# and writes partial reports when it cannot connect).
ECHO_MIN_CASES = 200


def _ids(prefix, first, last):
    return ["%s.%d" % (prefix, i) for i in range(first, last + 1)]


# Group A: protocol errors. The server must fail the connection with exactly this code.
# (Autobahn itself also passes a bare TCP drop here; the checker does not.)
_protocol_1002 = (
    ["2.5"]  # ping with a 126-byte payload: control frames carry at most 125 (RFC 5.5)
    + ["3.1", "3.5", "3.6", "3.7"]  # RSV bits set with no extension (RFC 5.2); as the
    # first frame. 3.2-3.4 send a valid text message first (would get 1008) -> excluded.
    + ["4.1.1", "4.1.2", "4.2.1", "4.2.2"]  # reserved data/control opcodes as the first
    # frame (RFC 5.2). 4.1.3-5, 4.2.3-5 send a text message first -> excluded.
    + ["5.1", "5.2"]  # fragmented ping / pong (RFC 5.4)
    + _ids("5", 9, 14)  # continuation frame with nothing to continue, as the first frame
    + ["5.16", "5.17"]  # same, repeated; the first frame is the stray continuation
    + ["5.18"]  # text fragment then a second text frame instead of a continuation:
    # no message is complete before the violation. 5.15 completes a message first
    # (would get 1008) -> excluded.
    + ["7.3.2"]  # close frame with a 1-byte payload (RFC 5.5.1)
    + ["7.3.6"]  # close frame of 126 bytes (reason too long: control frame > 125)
    + _ids("7.9", 1, 9)  # close codes 0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999
    # (RFC 7.4.1/7.4.2: not to be sent on the wire, or reserved and unassigned)
)
# 7.13.1/7.13.2 (close codes 5000, 65535) are excluded: Autobahn calls the outcome
# undefined by the spec.

_invalid_utf8_1007 = (
    ["7.5.1"]  # close reason that is not UTF-8. Autobahn accepts 1002 or 1007; we
    # require 1007, the code docs/protocol.md gives to invalid UTF-8.
    + ["6.3.1", "6.3.2"]  # invalid UTF-8 text message, in one frame / in 1-byte frames
    + _ids("6.4", 1, 4)  # fragmented text, valid first fragment, invalid later: 1007
    # as soon as the bad bytes arrive (fail-fast is OK, at message end NON-STRICT)
    # 6.5.* and up: generated from Markus Kuhn's UTF-8 decoder test file; these are the
    # ones whose payload is NOT valid UTF-8 (the valid ones need an echo -> excluded).
    + ["6.6.1", "6.6.3", "6.6.4", "6.6.6", "6.6.8", "6.6.10", "6.8.1", "6.8.2"]
    + _ids("6.10", 1, 3)
    + ["6.11.5"]
    + _ids("6.12", 1, 8)
    + _ids("6.13", 1, 5)
    + _ids("6.14", 1, 10)
    + ["6.15.1"]
    + _ids("6.16", 1, 3)
    + _ids("6.17", 1, 5)
    + _ids("6.18", 1, 5)
    + _ids("6.19", 1, 5)
    + _ids("6.20", 1, 7)
    + _ids("6.21", 1, 8)
)

# Group B: control frames and the close handshake with no data message at all. Pings
# must be answered before auth (a ping is not a data frame) and a client's close must be
# answered with a close; the server's close code must be 1000 or the code the client sent
# (or absent, which RFC 6455 5.5.1 allows in a reply), and the suite's close verdict OK.
_control = (
    _ids("2", 1, 4)  # ping with empty / text / binary / 125-byte payload
    + _ids("2", 6, 11)  # chopped ping, unsolicited pongs, 10 pings
    + ["7.1.2", "7.1.3"]  # second close frame / ping after close: ignored
    + ["7.3.1", "7.3.3", "7.3.4", "7.3.5"]  # close with empty payload / code / reason
)
_CLOSE_7_7 = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]


def gateway_expectations():
    """case id -> (group, set of acceptable close codes sent by the server)."""
    exp = {}
    for c in _protocol_1002:
        exp[c] = ("protocol", {PROTOCOL_ERROR})
    for c in _invalid_utf8_1007:
        exp[c] = ("utf-8", {INVALID_PAYLOAD})
    for c in _control:
        exp[c] = ("control", {NORMAL, None})
    for i, code in enumerate(_CLOSE_7_7, start=1):  # 7.7.N: valid close code, echoed or 1000
        exp["7.7.%d" % i] = ("control", {NORMAL, code, None})
    return exp


GATEWAY = gateway_expectations()
assert len(GATEWAY) == len(_protocol_1002) + len(_invalid_utf8_1007) + len(_control) + 13


def case_key(case_id):
    return tuple(int(p) for p in case_id.split("."))


def spec(mode, url, outdir):
    if mode == "echo":
        cases = ECHO_CASES
    elif mode == "gateway":
        cases = sorted(GATEWAY, key=case_key)
    else:
        raise SystemExit("unknown mode %r" % mode)
    return {
        "outdir": outdir,
        "servers": [{"agent": AGENT, "url": url}],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }


def main(argv):
    if len(argv) == 5 and argv[1] == "spec":
        json.dump(spec(argv[2], argv[3], argv[4]), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    sys.stderr.write("usage: cases.py spec echo|gateway <ws-url> <outdir>\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
