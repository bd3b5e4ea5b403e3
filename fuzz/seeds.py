#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets: fuzz/corpus/<target>/<name>, one input a file,
named by what it holds. The input layouts are the ones tests/fuzz_checks/mod.rs documents.
Running it again rewrites these seeds (byte for byte: nothing here depends on the clock) and
leaves any other file in the corpus alone.

    python3 fuzz/seeds.py
"""

import base64
import hashlib
import hmac
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

# Must match JWT_SECRET in tests/fuzz_checks/mod.rs.
JWT_SECRET = b"wsgate fuzz secret"
NOW = 1_700_000_000
LEEWAY = 30
MAX_LIFETIME = 3600  # seconds: a revocation window of an hour
HS256_HEADER = '{"alg":"HS256","typ":"JWT"}'

seeds = {"jwt": {}, "http_head": {}, "frame": {}, "envelope": {},
         "upgrade": {}, "origin": {}, "connection": {}}


def add(target, name, data):
    assert name not in seeds[target], name
    seeds[target][name] = data if isinstance(data, bytes) else data.encode()


# ---- jwt: [mode][now u64][leeway u16][max_lifetime u32] token ----

def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(claims, header=HS256_HEADER, secret=JWT_SECRET):
    """A compact HS256 JWS over the exact JSON texts given (dicts are dumped compactly)."""
    if not isinstance(claims, str):
        claims = json.dumps(claims, separators=(",", ":"))
    signing_input = b64(header.encode()) + "." + b64(claims.encode())
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)


def jwt(name, tok, mode=0, now=NOW, leeway=LEEWAY, max_lifetime=MAX_LIFETIME):
    params = struct.pack("<BQHI", mode, now, leeway, max_lifetime)
    add("jwt", name, params + (tok.encode() if isinstance(tok, str) else tok))


def simplejwt(**changes):
    claims = {
        "token_type": "access",
        "exp": NOW + 300,
        "iat": NOW,
        "jti": "9f3c2b7e5d1a4c6e8b0f2a4c6e8b0f2a",
        "user_id": 42,
    }
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


jwt("simplejwt-access-int-user", token(simplejwt()))
jwt("simplejwt-access-string-user", token(simplejwt(user_id="42")))
jwt("simplejwt-groups", token(simplejwt(groups=["room.1", "chat.*"])))
jwt("sub-only", token({"exp": NOW + 60, "sub": "alice"}))
jwt("nbf-past-unknown-nested-claims",
    token(simplejwt(nbf=NOW - 60, extra={"a": [1, {"b": None}], "c": 'd"e'})))
jwt("aud-present-none-configured", token(simplejwt(aud="api")))
jwt("leeway-expired-within", token(simplejwt(exp=NOW - 10)))
jwt("leeway-iat-ahead-within", token(simplejwt(iat=NOW + 10)))
# Finding: an exp of 2^63 or more overflowed the worker's deadline arithmetic. With the lifetime
# bound these are refused, with or without iat.
for label, exp in [("2pow63", 1 << 63), ("2pow63-minus-30", (1 << 63) - 30),
                   ("u64max", 18446744073709551615)]:
    jwt(f"huge-exp-{label}-iat", token(simplejwt(exp=exp)))
    jwt(f"huge-exp-{label}-no-iat", token(simplejwt(exp=exp, iat=None)))
    # Accepted at a clock next to it: the deadline (exp + leeway) at the edge of u64.
    jwt(f"huge-exp-{label}-iat-at-now", token(simplejwt(exp=exp, iat=exp - 60)),
        now=exp - 60)
jwt("huge-exp-2pow63-no-lifetime-bound", token(simplejwt(exp=1 << 63)),
    max_lifetime=0xFFFFFFFF)
jwt("exp-equals-now", token(simplejwt(exp=NOW)), leeway=0)
jwt("exp-float", token(simplejwt(exp=NOW + 300.5)))
jwt("iat-future", token(simplejwt(iat=NOW + 3600)))
jwt("refresh-token-type", token(simplejwt(token_type="refresh")))
jwt("user-empty", token(simplejwt(user_id="")))
jwt("wrong-secret", token(simplejwt(), secret=b"not the secret"))
jwt("alg-none", b64(b'{"alg":"none","typ":"JWT"}') + "." + token(simplejwt()).split(".")[1] + ".")
jwt("alg-hs512-header", token(simplejwt(), header='{"alg":"HS512","typ":"JWT"}'))
jwt("header-crit", token(simplejwt(), header='{"alg":"HS256","crit":["exp"]}'))
jwt("header-kid", token(simplejwt(), header='{"alg":"HS256","typ":"JWT","kid":"k1"}'))
jwt("two-segments", ".".join(token(simplejwt()).split(".")[:2]))
jwt("garbage", "not a token")
# Modes 1 (signature replaced by the check) and 2 (JSON signed by the check).
jwt("resign-simplejwt-bad-signature", token(simplejwt())[:-4] + "AAAA", mode=1)
jwt("json-simplejwt-default-header", json.dumps(simplejwt()), mode=2)
jwt("json-header-and-claims",
    HS256_HEADER + "\0" + '{"exp": 1700000300, "user_id": "caf\\u00e9", "groups": ["*"]}',
    mode=2)
jwt("json-escaped-alg",
    '{"alg":"HS\\u0032\\u0035\\u0036"}\0' + json.dumps(simplejwt()), mode=2)
# Found by the jwt target: claims that are not UTF-8 (in a member wsgate skips) were accepted,
# where RFC 7519 section 7.2 wants UTF-8 JSON, and jsonwebtoken and PyJWT refuse them. The
# header case is not a difference (jsonwebtoken skips unknown header members unchecked too).
jwt("claims-invalid-utf8-in-unknown-claim", b'{"exp":1700000300,"user_id":42,"x":"\xff"}', mode=2)
jwt("header-invalid-utf8-in-unknown-member",
    b'{"alg":"HS256","x":"\xff"}\0{"exp":1700000300,"user_id":42}', mode=2)


# ---- http_head: [step][limit] bytes ----

DEFAULT_LIMIT = 0x80  # 8 KiB


def head(name, data, step=0x0F, limit=DEFAULT_LIMIT):
    add("http_head", name, bytes([step, limit]) + (data.encode() if isinstance(data, str) else data))


def crlf(*lines):
    return "\r\n".join(lines) + "\r\n\r\n"


CHROME = crlf(
    "GET /ws HTTP/1.1",
    "Host: app.example.com",
    "Connection: Upgrade",
    "Pragma: no-cache",
    "Cache-Control: no-cache",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Upgrade: websocket",
    "Origin: https://app.example.com",
    "Sec-WebSocket-Version: 13",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Accept-Language: en-US,en;q=0.9",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    "Sec-WebSocket-Protocol: wsgate.v1",
)
head("chrome-upgrade", CHROME)
head("chrome-upgrade-byte-by-byte", CHROME, step=0)
head("chrome-upgrade-one-read", CHROME, step=0xFF)
head("firefox-upgrade-keep-alive-upgrade", crlf(
    "GET /ws?room=1 HTTP/1.1",
    "Host: localhost:8080",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Accept: */*",
    "Sec-WebSocket-Version: 13",
    "Origin: http://localhost:8080",
    "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==",
    "Connection: keep-alive, Upgrade",
    "Upgrade: websocket",
))
bearer = token(simplejwt())
head("upgrade-bearer-subprotocol", crlf(
    "GET /ws HTTP/1.1", "Host: gw", "Upgrade: websocket", "Connection: Upgrade",
    "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    f"Sec-WebSocket-Protocol: wsgate.v1, wsgate.bearer.{bearer}",
))
head("upgrade-authorization-header", crlf(
    "GET /ws HTTP/1.1", "Host: gw", "Upgrade: websocket", "Connection: Upgrade",
    "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    f"Authorization: Bearer {bearer}",
))
head("upgrade-version-8-two-origins", crlf(
    "GET /ws HTTP/1.1", "Host: gw", "Upgrade: websocket", "Connection: Upgrade",
    "Sec-WebSocket-Version: 8", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Origin: https://a.example", "Origin: https://b.example",
))
head("upgrade-bad-key-duplicate-host", crlf(
    "GET /ws HTTP/1.1", "Host: gw", "Host: other", "Upgrade: websocket", "Connection: Upgrade",
    "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ",
))
# Finding: httparse ended a head at a bare-LF blank line while the gateway delimits heads at
# CRLFCRLF, so the pipelined request between the two was dropped unseen.
head("bare-lf-blank-line-then-pipelined-request",
     "GET /healthz HTTP/1.1\r\nHost: x\n\nGET /metrics HTTP/1.1\r\n\r\n")
head("bare-lf-request-line", "GET /healthz HTTP/1.1\nHost: x\r\n\r\n")
head("bare-lf-first-byte", "\nGET /healthz HTTP/1.1\r\n\r\n")
head("bare-lf-double-blank", "GET /healthz HTTP/1.1\r\nHost: x\r\n\n\r\n\r\n")
# Finding: only the first 8 X-Forwarded-For lines were read.
xff = ["GET /ws HTTP/1.1", "Host: gw", "Upgrade: websocket", "Connection: Upgrade",
       "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
head("x-forwarded-for-9-lines-client-last",
     crlf(*xff, *[f"X-Forwarded-For: 10.0.0.{i}" for i in range(2, 10)],
          "X-Forwarded-For: 198.51.100.7"))
head("x-forwarded-for-20-lines-mixed",
     crlf(*xff, *[f"x-forwarded-for: 203.0.113.{i}, 10.1.{i}.1" for i in range(20)]))
head("x-forwarded-for-garbage-entries",
     crlf(*xff, "X-Forwarded-For: unknown, [2001:db8::1]:4711", "X-Forwarded-For: ,,  ::1 ,10.0.0.3",
          "X-Forwarded-For: 192.0.2.1:4711, ::ffff:10.0.0.9"))
# Finding: tokens under names other than token/ticket reached the debug log unredacted.
for name, target in [
    ("query-access-token", f"/ws?access_token={bearer}"),
    ("query-token-pct3d-no-equals", f"/ws?token%3D{bearer}"),
    ("query-jwt-and-semicolon", f"/ws?room=1&jwt={bearer}&x=1;token={bearer}"),
    ("query-bare-jwt", f"/ws?{bearer}"),
    ("query-pct-encoded-name", f"/ws?%74oken={bearer}&&=&a="),
]:
    head(name, crlf(f"GET {target} HTTP/1.1", *xff[1:]))
head("api-post-with-body",
     "POST /api/groups/room.1/messages HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer s3cret\r\n"
     "Content-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"data\":true}")
head("healthz-http10", "GET /healthz HTTP/1.0\r\n\r\n")
head("too-many-headers-65", crlf("GET / HTTP/1.1", *[f"X-{i}: y" for i in range(65)]))
head("head-ends-exactly-at-limit-64", "GET / HTTP/1.1\r\nX: " + "a" * 41 + "\r\n\r\n", limit=64)
head("head-one-past-limit-64", "GET / HTTP/1.1\r\nX: " + "a" * 42 + "\r\n\r\n", limit=64)
head("head-over-8k", "GET / HTTP/1.1\r\nX: " + "a" * 8200 + "\r\n\r\n", step=0xFF)
head("terminator-split-across-reads", "GET / HTTP/1.1\r\n\r\n", step=1)
head("lone-newlines", "\n\n\n\r\n\n\n\r\n\r\n")


# ---- frame: [flags][max_frame u32][max_message u32] bytes ----

MIB = 1 << 20
MASK = b"\x37\xfa\x21\x3d"


def ws_frame(opcode, payload=b"", fin=True, length=None, mask=MASK, rsv=0, masked=True):
    """A client frame; `length` overrides the announced length (payload still appended)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv << 4 | opcode
    if n < 126:
        hdr = bytes([b0, (0x80 if masked else 0) | n])
    elif n < 1 << 16:
        hdr = bytes([b0, (0x80 if masked else 0) | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, (0x80 if masked else 0) | 127]) + struct.pack(">Q", n)
    if not masked:
        return hdr + payload
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def frames(name, data, pre_auth=True, step=0x10, max_frame=MIB, max_message=MIB):
    flags = (step << 1) | (1 if pre_auth else 0)
    add("frame", name, struct.pack("<BII", flags & 0xFF, max_frame, max_message) + data)


TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10
auth = json.dumps({"action": "authenticate", "token": bearer}, separators=(",", ":"))
frames("text-authenticate", ws_frame(TEXT, auth))
frames("text-authenticate-then-send-and-close",
       ws_frame(TEXT, auth) + ws_frame(TEXT, '{"action":"send","group":"room.1","data":1}')
       + ws_frame(CLOSE, struct.pack(">H", 1000) + b"bye"))
# Finding: before authentication a client could announce (and make the gateway buffer) up to
# the post-auth limits; now 16 KiB is the cap, decided from the header.
frames("pre-auth-frame-announcing-1mib", ws_frame(TEXT, b"", length=MIB))
frames("pre-auth-frame-16k-plus-1",
       ws_frame(BINARY, b"x" * (16 * 1024 + 1)))
frames("post-auth-frame-announcing-1mib", ws_frame(TEXT, auth) + ws_frame(TEXT, b"", length=MIB),
       step=0x7F)
# Finding: fragments could add up past the pre-auth cap, each under it.
chunk = b"a" * 5000
frames("pre-auth-fragments-adding-past-16k",
       ws_frame(TEXT, chunk, fin=False) + ws_frame(CONT, chunk, fin=False)
       + ws_frame(CONT, chunk, fin=False) + ws_frame(CONT, chunk))
frames("post-auth-fragments-past-16k-within-limits",
       ws_frame(TEXT, auth) + ws_frame(TEXT, chunk, fin=False) + ws_frame(PING, b"p")
       + ws_frame(CONT, chunk, fin=False) + ws_frame(CONT, chunk, fin=False)
       + ws_frame(CONT, chunk), step=0x7F)
frames("fragments-small-message-limit",
       ws_frame(BINARY, b"0123456789", fin=False) + ws_frame(CONT, b"0123456789"),
       pre_auth=False, max_frame=16, max_message=15)
euro = "€".encode()  # 3 bytes, split across fragments
frames("utf8-split-across-fragments",
       ws_frame(TEXT, b"x" + euro[:1], fin=False) + ws_frame(PONG)
       + ws_frame(CONT, euro[1:2], fin=False) + ws_frame(CONT, euro[2:]), pre_auth=False)
frames("utf8-invalid-last-fragment",
       ws_frame(TEXT, b"ok", fin=False) + ws_frame(CONT, euro[:2]), pre_auth=False)
frames("close-one-byte", ws_frame(CLOSE, b"\x03"))
frames("close-reserved-code-1005", ws_frame(CLOSE, struct.pack(">H", 1005)))
frames("close-empty", ws_frame(CLOSE))
frames("ping-126-bytes-control-too-long", ws_frame(PING, b"p" * 126))
frames("ping-not-fin", ws_frame(PING, b"p", fin=False))
frames("reserved-bits", ws_frame(TEXT, "x", rsv=4))
frames("reserved-opcode-3", ws_frame(3, "x"))
frames("unmasked-text", ws_frame(TEXT, "hello", masked=False))
frames("length-high-bit-set", ws_frame(BINARY, b"", length=1 << 63))
frames("continuation-without-start", ws_frame(CONT, "x"))
frames("new-text-inside-fragmented", ws_frame(TEXT, "a", fin=False) + ws_frame(TEXT, "b"),
       pre_auth=False)
frames("non-minimal-64bit-length", bytes([0x81, 0xFF]) + struct.pack(">Q", 5) + MASK
       + bytes(b ^ MASK[i % 4] for i, b in enumerate(b"hello")), step=0)
frames("zero-limits", ws_frame(TEXT, "") + ws_frame(TEXT, "x"), pre_auth=False,
       max_frame=0, max_message=0)
frames("partial-frame-pending", ws_frame(TEXT, auth)[:40])


# ---- envelope: a text frame's payload ----

def nested(depth, kind="array"):
    opens, closes = [], []
    for i in range(depth):
        obj = kind == "object" or (kind == "mixed" and i % 2)
        opens.append('{"k":' if obj else "[")
        closes.append("}" if obj else "]")
    return "".join(opens) + "1" + "".join(reversed(closes))


def send(data, group="room.1"):
    return '{"action":"send","group":"%s","data":%s}' % (group, data)


add("envelope", "authenticate-command", auth)
add("envelope", "refresh-command", '{"action":"refresh","token":"a.b.c"}')
add("envelope", "join-command", '{"action":"join","group":"room.1"}')
add("envelope", "leave-command-escaped", '{"action":"l\\u0065ave","group":"r\\u00e9\\ud83d\\ude00"}')
add("envelope", "send-object", send('{"text":"hi","n":3,"tags":["a","b"]}'))
add("envelope", "send-no-data", '{"action":"send","group":"room.1"}')
add("envelope", "send-null-data", send("null"))
# Finding: data was relayed at any depth; deeper than 64 levels is now refused.
add("envelope", "send-data-nested-64", send(nested(64)))
add("envelope", "send-data-nested-65", send(nested(65)))
add("envelope", "send-data-nested-64-objects", send(nested(64, "object")))
add("envelope", "send-data-nested-65-mixed", send(nested(65, "mixed")))
add("envelope", "send-data-nested-200000", send(nested(200_000)))
add("envelope", "send-data-nested-64-whitespace",
    '{ "action" : "send" ,\n "group" : "g" ,\t"data" :\r\n' + " [ " * 64 + " 1 " + " ] " * 64 + " }")
add("envelope", "send-data-nested-65-whitespace",
    '{ "action" : "send" ,\n "group" : "g" ,\t"data" :\r\n' + "[\n\t" * 65 + "1" + "\n]" * 65 + " }\n")
add("envelope", "send-data-brackets-in-strings",
    send('["[[[[", {"]]": "\\"[{"}, "\\\\", "{\\u005b"]'))
add("envelope", "unknown-member-nested-200", '{"action":"join","group":"g","x":%s}' % nested(200))
add("envelope", "unknown-action", '{"action":"dance"}')
add("envelope", "duplicate-action", '{"action":"join","action":"join","group":"g"}')
add("envelope", "not-an-object", "[1,2,3]")
add("envelope", "not-json", '{"action":"join","group":"g"')



# ---- upgrade: a request head ----

def upgrade(name, *lines, request_line="GET /ws HTTP/1.1"):
    add("upgrade", name, crlf(request_line, *lines))


UPGRADE = ["Host: gw", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]


def without(prefix, lines=UPGRADE):
    return [line for line in lines if not line.lower().startswith(prefix.lower())]


add("upgrade", "chrome", CHROME)
upgrade("minimal", *UPGRADE)
upgrade("token-lists-any-case", "host: gw", "upgrade: h2c, WebSocket", "CONNECTION: keep-alive , UPGRADE",
        "sec-websocket-version: 13", "sec-websocket-key: \t x3JJHMbDL1EzLkh9GBhXDw==  ")
upgrade("query-ticket", *UPGRADE, request_line="GET /ws?ticket=abc&x=1 HTTP/1.1")
upgrade("bearer-subprotocol-and-v1", *UPGRADE,
        f"Sec-WebSocket-Protocol: wsgate.bearer.{bearer}", "Sec-WebSocket-Protocol: x, wsgate.v1")
upgrade("authorization-and-origin", *UPGRADE, f"Authorization: Bearer {bearer}",
        "Origin: https://app.example.com")
upgrade("other-path", *UPGRADE, request_line="GET /ws/ HTTP/1.1")
upgrade("post", *UPGRADE, request_line="POST /ws HTTP/1.1")
upgrade("lower-case-method", *UPGRADE, request_line="get /ws HTTP/1.1")
upgrade("http-1-0", *UPGRADE, request_line="GET /ws HTTP/1.0")
upgrade("no-host", *without("Host"))
upgrade("two-hosts", *UPGRADE, "Host: other")
upgrade("empty-host", "Host:", *without("Host"))
upgrade("no-upgrade-token", "Upgrade: h2c", *without("Upgrade"))
upgrade("no-connection-token", "Connection: keep-alive", *without("Connection"))
upgrade("no-version", *without("Sec-WebSocket-Version"))
upgrade("version-8", "Sec-WebSocket-Version: 8", *without("Sec-WebSocket-Version"))
upgrade("version-8-and-no-key", "Sec-WebSocket-Version: 8",
        *without("Sec-WebSocket-Key", without("Sec-WebSocket-Version")))
upgrade("two-versions", *UPGRADE, "Sec-WebSocket-Version: 13")
upgrade("no-key", *without("Sec-WebSocket-Key"))
upgrade("two-keys", *UPGRADE, "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==")
upgrade("key-trailing-bits", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==", *without("Sec-WebSocket-Key"))
upgrade("key-unpadded", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ", *without("Sec-WebSocket-Key"))
upgrade("key-17-bytes", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZTE=", *without("Sec-WebSocket-Key"))
upgrade("key-url-safe-alphabet", "Sec-WebSocket-Key: _-_-_-_-_-_-_-_-_-_-_w==",
        *without("Sec-WebSocket-Key"))
upgrade("two-origins", *UPGRADE, "Origin: https://a.example", "Origin: https://b.example")
upgrade("two-authorizations", *UPGRADE, "Authorization: Bearer a", "Authorization: Bearer b")
upgrade("extensions-ignored", *UPGRADE, "Sec-WebSocket-Extensions: permessage-deflate")


# ---- origin: [mode] patterns 0x00 header ----

FLAG, FILE, HOSTS, HOSTS_DEBUG, NO_HEADER = 0, 1, 2, 3, 4


def origin(name, patterns, header, mode=FLAG):
    body = patterns.encode() if isinstance(patterns, str) else patterns
    if header is not None:
        body += b"\0" + (header.encode() if isinstance(header, str) else header)
    add("origin", name, bytes([mode]) + body)


origin("exact-host-any-scheme-port", "example.com", "https://example.com:8443")
origin("exact-host-other-host", "example.com", "https://badexample.com")
origin("domain-deep-subdomain", ".example.com", "https://a.b.c.example.com:9000")
origin("domain-label-boundary", ".example.com", "http://badexample.com")
origin("scheme-default-port", "https://example.com", "https://example.com:443")
origin("scheme-other-port", "https://example.com", "https://example.com:8443")
origin("scheme-http-is-not-ws", "http://example.com", "ws://example.com")
origin("scheme-domain-port", "https://.example.com:8443", "HTTPS://A.Example.COM:8443")
origin("host-port-any-scheme", "example.com:8080", "ws://example.com:8080")
origin("host-port-default-port", "example.com:443", "https://example.com")
origin("unknown-scheme-no-port", "chrome-extension://abcdef", "chrome-extension://abcdef")
origin("unknown-scheme-port-given", "ftp://example.com", "ftp://example.com:21")
origin("ipv6-as-address", "[0:0::1]", "http://[::1]:8000")
origin("ipv6-zoned", "[::1]", "http://[fe80::1%25eth0]")
origin("idna-pattern", "bücher.example", "https://XN--BCHER-KVA.example")
origin("trailing-dot-kept", "example.com.", "http://example.com.")
origin("ows-around-origin", "example.com", " \thttp://example.com\t ")
origin("origin-with-path", "example.com", "http://example.com/")
origin("origin-port-zero", "example.com", "http://example.com:0")
origin("origin-port-six-digits", "example.com", "http://example.com:000080")
origin("origin-port-65536", "example.com", "http://example.com:65536")
origin("origin-null", "example.com", "null")
origin("origin-empty", "example.com", "")
origin("origin-not-utf8", "example.com", b"http://ex\xffample.com")
origin("origin-user-info", "example.com", "http://user@example.com")
origin("origin-empty-label", ".example.com", "http://a..example.com")
origin("star-admits-garbage", "*", b"\xff\xfe")
origin("star-admits-absent", "example.com,*", None)
origin("absent-refused", "example.com", "http://example.com", mode=FLAG | NO_HEADER)
origin("star-inside-host-refused", "*.example.com", "http://a.example.com")
origin("pattern-with-path-refused", "https://example.com/app", "https://example.com")
origin("pattern-port-zero-refused", "example.com:0", "http://example.com")
origin("pattern-unbracketed-ipv6-refused", "::1", "http://[::1]")
origin("pattern-leading-dot-ipv6-refused", ".[::1]", "http://[::1]")
origin("flag-list-blank-items", " , example.com ,, .example.org ", "https://x.example.org")
origin("flag-list-all-blank", " , ,", "http://localhost")
origin("file-comments-and-blank-lines",
       "# allowed\nexample.com  # the app\n\n\t.example.org\r\nhttps://[::1]:8443\n",
       "https://[::1]:8443", mode=FILE)
origin("file-only-comments", "# nothing\n\n", "http://localhost", mode=FILE)
origin("hosts-empty-debug-local", "", "http://[::1]:8000", mode=HOSTS_DEBUG)
origin("hosts-empty-no-debug", "", "http://localhost", mode=HOSTS)
origin("hosts-given-debug", "example.com", "http://localhost:8000", mode=HOSTS_DEBUG)
origin("unicode-whitespace-trimmed", "\u3000example.com\u2003", "http://example.com")


# ---- connection: [settings] then a script (see `connection` in tests/fuzz_checks/mod.rs) ----

UNBOUNDED, RATE, SMALL, FAST, LONG, EXTREME = 1, 2, 4, 8, 16, 24


def c_feed(data):
    """One read of these bytes."""
    if len(data) < 64:
        return bytes([len(data)]) + data
    assert len(data) < 1 << 14
    return bytes([0x40 | len(data) >> 8, len(data) & 0xFF]) + data


def c_frame(b0, payload=b"", repeat=None, length=None, masked=True):
    """One frame built by the script: `payload`, or `length` copies of the byte `repeat`."""
    op = 0x80 | (0 if masked else 2)
    if repeat is not None:
        return bytes([op | 1, b0]) + struct.pack("<H", length) + bytes([repeat])
    if isinstance(payload, str):
        payload = payload.encode()
    return bytes([op, b0]) + struct.pack("<H", len(payload)) + payload


def c_token(claims, refresh=False, fragmented=False):
    """An authenticate (or refresh) command with the claims signed by the script."""
    if not isinstance(claims, str):
        claims = json.dumps(claims, separators=(",", ":"))
    assert len(claims) < 256
    return bytes([0xA0 | int(refresh) | int(fragmented) << 1, len(claims)]) + claims.encode()


def c_advance(ms):
    for shift in range(32):
        if ms % (1 << shift) == 0 and 1 <= ms >> shift <= 256:
            return bytes([0xC0 | shift, (ms >> shift) - 1])
    raise ValueError(ms)


def c_timer(late=0, at_deadline=True):
    """The timer fires `late` ms after the deadline (or now)."""
    for shift in range(16):
        if late % (1 << shift) == 0 and late >> shift <= 255:
            return bytes([0xE0 | (0x10 if at_deadline else 0) | shift, late >> shift])
    raise ValueError(late)


def connection(name, settings, *steps):
    add("connection", name, bytes([settings]) + b"".join(steps))


def command(obj):
    return json.dumps(obj, separators=(",", ":"))


USER = {"exp": NOW + 300, "user_id": 42}
ROOMS = {"exp": NOW + 300, "user_id": 42, "groups": ["room.*"]}

connection("authenticate-join-send-leave-then-ping-and-4408", 0,
           c_token(ROOMS),
           c_frame(0x81, command({"action": "join", "group": "room.1"})),
           c_frame(0x81, command({"action": "send", "group": "room.1", "data": {"a": [1, None]}})),
           c_frame(0x81, command({"action": "send", "group": "room.2", "data": 1})),
           c_frame(0x81, command({"action": "join", "group": "lobby"})),
           c_frame(0x81, command({"action": "leave", "group": "room.1"})),
           c_timer(), c_timer(), c_timer())
connection("join-past-the-group-limit", 0, c_token(ROOMS),
           *[c_frame(0x81, command({"action": "join", "group": f"room.{i}"})) for i in range(6)])
connection("authenticate-raw-token-byte-by-byte", 0,
           *[c_feed(bytes([b])) for b in ws_frame(TEXT, auth)])
connection("authenticate-split-mid-header-and-mask", 0,
           c_feed(ws_frame(TEXT, auth)[:1]), c_feed(ws_frame(TEXT, auth)[1:5]),
           c_feed(ws_frame(TEXT, auth)[5:100]), c_advance(10), c_feed(ws_frame(TEXT, auth)[100:]))
# Findings: an exp of 2^63 or 2^64 - 1 overflowed the deadline arithmetic. With the lifetime
# bound lifted they are accepted; the timer waits an hour at a time.
for label, exp in [("2pow63", 1 << 63), ("u64max", (1 << 64) - 1)]:
    connection(f"huge-exp-{label}-accepted-timer-waits", UNBOUNDED | LONG,
               c_token({"exp": exp, "user_id": 1}),
               c_timer(), c_timer(), c_frame(0x8A), c_advance(1 << 25), c_timer(), c_frame(0x8A),
               c_timer(255 << 15))
    connection(f"huge-exp-{label}-short-timers", UNBOUNDED | FAST,
               c_token({"exp": exp, "user_id": 1}),
               c_timer(), c_frame(0x8A), c_timer(), c_timer())
    connection(f"huge-exp-{label}-refused-by-lifetime", 0, c_token({"exp": exp, "user_id": 1}))
    connection(f"huge-exp-{label}-refresh", UNBOUNDED | LONG, c_token(USER),
               c_token({"exp": exp, "user_id": 42}, refresh=True), c_timer(), c_timer())
connection("huge-iat-refused", UNBOUNDED, c_token({"exp": NOW + 60, "iat": (1 << 64) - 1, "user_id": 1}))
connection("huge-iat-and-exp", UNBOUNDED,
           c_token({"exp": (1 << 64) - 1, "iat": (1 << 64) - 1, "user_id": 1}))
connection("huge-nbf", UNBOUNDED, c_token({"exp": NOW + 60, "nbf": (1 << 64) - 1, "user_id": 1}))
connection("expiry-then-401", 0, c_token({"exp": NOW + 10, "user_id": 1}), c_timer(), c_timer())
connection("expiry-with-leeway", FAST, c_token({"exp": NOW + 1, "user_id": 1}),
           c_frame(0x89, "a"), c_advance(1536), c_frame(0x8A), c_timer(), c_timer())
connection("refresh-moves-expiry", 0, c_token({"exp": NOW + 10, "user_id": 1}), c_advance(9216),
           c_token({"exp": NOW + 20, "user_id": 1}, refresh=True), c_timer(), c_timer())
connection("refresh-other-user-4403", 0, c_token(USER),
           c_token({"exp": NOW + 300, "user_id": 7}, refresh=True))
connection("refresh-drops-groups", 0, c_token(ROOMS),
           c_frame(0x81, command({"action": "join", "group": "room.1"})),
           c_token({"exp": NOW + 300, "user_id": 42, "groups": ["lobby"]}, refresh=True))
connection("refresh-expired-4401", 0, c_token(USER),
           c_token({"exp": NOW - 10, "user_id": 42}, refresh=True))
connection("second-authenticate-is-an-error", 0, c_token(USER), c_token(USER))
connection("auth-timeout-4408", 0, c_frame(0x89, "hi"), c_timer())
connection("auth-timeout-after-late-timer", FAST, c_advance(5120), c_timer(0, at_deadline=False))
connection("timer-before-the-deadline", 0, c_timer(100, at_deadline=False), c_advance(4096),
           c_timer(960, at_deadline=False), c_timer())
connection("first-message-not-authenticate-1008", 0,
           c_frame(0x81, command({"action": "join", "group": "room.1"})))
connection("first-message-binary-1008", 0, c_frame(0x82, b"\x00\x01"))
connection("first-message-not-json-1008", 0, c_frame(0x81, "hello"))
connection("authenticate-without-token-4401", 0, c_frame(0x81, '{"action":"authenticate"}'))
connection("authenticate-bad-signature-4401", 0,
           c_frame(0x81, command({"action": "authenticate", "token": token(USER, secret=b"x")})))
# Findings: before authentication a frame or a message may not exceed 16 KiB.
connection("pre-auth-frame-16k-plus-1", 0, c_frame(0x82, repeat=0x20, length=16 * 1024 + 1))
connection("pre-auth-frame-16k-exactly-binary", 0, c_frame(0x82, repeat=0x20, length=16 * 1024))
connection("pre-auth-frame-16k-partial-then-more", 0,
           c_feed(ws_frame(TEXT, b" " * (16 * 1024))[:16000]),
           c_feed(ws_frame(TEXT, b" " * (16 * 1024))[16000:16200]))
connection("pre-auth-header-announcing-1mib", 0, c_feed(ws_frame(TEXT, b"", length=MIB)[:10]))
connection("pre-auth-fragments-past-16k", 0,
           c_frame(0x01, repeat=0x20, length=8 * 1024), c_frame(0x89, "p"),
           c_frame(0x00, repeat=0x20, length=8 * 1024), c_frame(0x80, repeat=0x20, length=1))
connection("post-auth-frame-past-16k", 0, c_token(USER),
           c_frame(0x81, repeat=0x20, length=40000), c_timer())
connection("small-limits-message-too-big", SMALL, c_token(USER),
           c_frame(0x01, repeat=0x20, length=512), c_frame(0x00, repeat=0x20, length=512),
           c_frame(0x00, repeat=0x20, length=512), c_frame(0x00, repeat=0x20, length=512),
           c_frame(0x80, repeat=0x20, length=1))
connection("small-limits-frame-too-big", SMALL, c_token(USER), c_frame(0x81, repeat=0x20, length=513))
# Close frames: a peer's valid code is echoed, an invalid one is a protocol error.
for code in [1000, 1001, 1003, 1014, 3000, 4000, 4999]:
    connection(f"close-{code}-echoed", 0, c_frame(0x88, struct.pack(">H", code) + b"bye"))
for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]:
    connection(f"close-invalid-code-{code}", 0, c_frame(0x88, struct.pack(">H", code)))
connection("close-one-byte", 0, c_frame(0x88, b"\x03"))
connection("close-empty", 0, c_token(USER), c_frame(0x88))
connection("close-reason-invalid-utf8", 0, c_frame(0x88, struct.pack(">H", 1000) + b"\xc3\x28"))
connection("close-reason-123-bytes", 0, c_frame(0x88, struct.pack(">H", 1000) + b"r" * 123))
connection("close-reason-124-bytes", 0, c_frame(0x88, struct.pack(">H", 1000) + b"r" * 124))
# A ping flood: every ping answered, none of it counted as a message.
flood = b"".join(ws_frame(PING, bytes([i % 256]) * (i % 126)) for i in range(300))
connection("ping-flood-before-auth", 0,
           *[c_feed(flood[i:i + 16000]) for i in range(0, len(flood), 16000)], c_token(USER))
connection("ping-flood-rate-limited-after-auth", RATE, c_token(USER),
           *[c_frame(0x89, b"x" * 125) for _ in range(100)], c_timer())
connection("rate-limit-4429", RATE, c_token(USER),
           *[c_frame(0x81, command({"action": "x"})) for _ in range(5)])
connection("rate-limit-refills", RATE, c_token(USER), c_frame(0x81, command({"action": "x"})),
           c_advance(1000), c_frame(0x81, command({"action": "x"})),
           c_frame(0x81, command({"action": "x"})))
# Fragmented messages with pings (and a pong) between the fragments.
connection("fragmented-authenticate-with-ping", 0, c_token(USER, fragmented=True),
           c_token(USER, refresh=True, fragmented=True))
connection("fragmented-commands-interleaved-pings", 0, c_token(ROOMS),
           c_frame(0x01, '{"action":"jo'), c_frame(0x89, "1"), c_frame(0x00, 'in","group"'),
           c_frame(0x8A, "2"), c_frame(0x89, ""), c_frame(0x80, ':"room.1"}'))
connection("fragment-then-new-text-1002", 0, c_token(USER), c_frame(0x01, "a"), c_frame(0x81, "b"))
connection("continuation-without-start-1002", 0, c_frame(0x80, "x"))
connection("ping-not-fin-1002", 0, c_frame(0x09, "p"))
connection("ping-126-bytes-1002", 0, c_frame(0x89, b"p" * 126))
connection("reserved-bits-1002", 0, c_frame(0xC1, "x"))
connection("reserved-opcode-1002", 0, c_frame(0x83, "x"))
connection("unmasked-1002", 0, c_frame(0x81, "hello", masked=False))
connection("length-high-bit-1002", 0, c_feed(ws_frame(BINARY, b"", length=1 << 63)))
# Invalid UTF-8 text: 1007, before and after authentication, whole or across fragments.
connection("text-invalid-utf8-pre-auth", 0, c_frame(0x81, b"\xff\xfe"))
connection("text-invalid-utf8-post-auth", 0, c_token(USER), c_frame(0x81, b'{"action":"\xc3\x28"}'))
connection("text-utf8-split-across-fragments", 0, c_token(USER),
           c_frame(0x01, b'{"action":"x' + euro[:1]), c_frame(0x89), c_frame(0x00, euro[1:2]),
           c_frame(0x80, euro[2:] + b'"}'))
connection("text-invalid-utf8-last-fragment", 0, c_token(USER), c_frame(0x01, b"ok"),
           c_frame(0x80, euro[:2]))
connection("binary-after-auth-is-an-error", 0, c_token(USER), c_frame(0x82, b"\x00"))
connection("send-data-nested-65", 0, c_token(ROOMS),
           c_frame(0x81, command({"action": "join", "group": "room.1"})),
           c_frame(0x81, send(nested(65))))
connection("keepalive-reset-by-pong", FAST, c_token(USER), c_timer(), c_frame(0x8A),
           c_timer(), c_advance(512), c_frame(0x89, "x"), c_timer(), c_timer())
connection("extreme-timers", EXTREME, c_timer(), c_frame(0x8A), c_timer(), c_token(USER),
           c_timer(), c_timer(), c_timer())
connection("clock-far-ahead", UNBOUNDED | FAST, c_token({"exp": NOW + 10, "user_id": 1}),
           c_advance(255 << 31), c_advance(255 << 31), c_timer(255 << 15, at_deadline=False))


def main():
    for target, files in seeds.items():
        directory = os.path.join(ROOT, target)
        os.makedirs(directory, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(files)} seeds")


if __name__ == "__main__":
    main()
