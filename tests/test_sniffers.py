"""§10 protocol sniffers: sans-IO, so every test feeds bytes and reads events (no sockets).

Every sniffer is fed four ways (style.md "What to absorb" 15): whole, one byte at a time, in
odd-sized pieces, with trailing data, and over its limit; garbage must never raise. Bytes are
real where it matters: psql and PyMySQL captures, h2-encoded gRPC frames (HPACK with Huffman and
dynamic-table references), and live TLS handshakes from Python's ssl module over MemoryBIOs.
"""

from __future__ import annotations

import random
import ssl
import struct
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import pytest

import kubectl_vibe_pf as k
from kubectl_vibe_pf import Direction, ProtocolKind

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT
CERT = Path(__file__).parent / "data" / "sniff-test-cert.pem"
Script = Sequence[Tuple[Direction, bytes, float]]
#: None: each step whole; 1: one byte at a time; 7: odd pieces that split every header.
CHUNKINGS = [None, 1, 7]


def feed_like_proxy(
    sniffer: k.Sniffer, direction: Direction, data: bytes, now: float, chunk: Optional[int]
) -> None:
    """Feed as the proxy does: memoryviews over one reused buffer, scribbled over afterwards
    (a sniffer that kept a reference instead of a copy would then read garbage)."""
    size = chunk or max(1, len(data))
    buffer = bytearray(size)
    for start in range(0, len(data), size):
        piece = data[start : start + size]
        buffer[: len(piece)] = piece
        sniffer.feed(direction, memoryview(buffer)[: len(piece)], now)
        buffer[: len(piece)] = b"\xa5" * len(piece)


def run(
    kind_or_class: Any, script: Script, chunk: Optional[int] = None, eof: bool = False
) -> k.Sniffer:
    stats = k.ProtocolStats()
    cls = k.SNIFFERS[kind_or_class] if isinstance(kind_or_class, ProtocolKind) else kind_or_class
    sniffer = cls(stats)
    for direction, data, now in script:
        feed_like_proxy(sniffer, direction, data, now, chunk)
    if eof:
        sniffer.close(script[-1][2] if script else 0.0)
    return sniffer


def events(sniffer: k.Sniffer) -> List[Any]:
    return list(sniffer.events)


def gave_up(sniffer: k.Sniffer) -> List[str]:
    return [e.reason for e in sniffer.events if isinstance(e, k.ProtocolGaveUp)]


# ---- real captures (see module docstring) ----------------------------------------------------

H2_FLIGHTS = [
    (
        C2S,
        bytes.fromhex(
            "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a00002a040000000000000100001000000200"
            "00000100040000ffff000500004000000800000000000300000064000600010000"
        ),
    ),
    (
        S2C,
        bytes.fromhex(
            "00002a04000000000000010000100000020000000000040000ffff000500004000000800000000000300"
            "000064000600010000000000040100000000"
        ),
    ),
    (C2S, bytes.fromhex("000000040100000000")),
    (
        C2S,
        bytes.fromhex(
            "00003c010400000001838644956272d141fc1eca245f15852a4b631b87eb1968a0ff41899ac29525b2e3"
            "6003615f8b1d75d0620d263d4c4d65644082497f864d833505b11f00000c00010000000100000000070a"
            "05776f726c64"
        ),
    ),
    (
        S2C,
        bytes.fromhex(
            "00000e010400000001885f8b1d75d0620d263d4c4d6564000012000000000001000000000d0a0b48656c"
            "6c6f20776f726c6400000c01050000000140889acac8b21234da8f8107"
        ),
    ),
    (
        C2S,
        bytes.fromhex("0000060104000000038386c1c0bfbe00000c00010000000300000000070a05776f726c64"),
    ),
    (
        S2C,
        bytes.fromhex(
            "00000201040000000388bf000012000000000003000000000d0a0b48656c6c6f20776f726c6400002001"
            "05000000037e820b5f40899acac8b5254207317f90b6b426c28e95087aaa2912a16cb0f67f"
        ),
    ),
    (C2S, bytes.fromhex("0000060104000000058386c1c0bfbe")),
    (C2S, bytes.fromhex("00000403000000000500000008")),
    (S2C, bytes.fromhex("0000080700000000000000000500000000")),
]
PG_CLIENT_0 = bytes.fromhex(
    "0000000804d2162f00000038000300007573657200626164006461746162617365006f72646572730061"
    "70706c69636174696f6e5f6e616d65007073716c0000700000000a77726f6e6700"
)
PG_CLIENT_1 = bytes.fromhex(
    "0000000804d2162f00000038000300007573657200617070006461746162617365006f72646572730061"
    "70706c69636174696f6e5f6e616d65007073716c0000510000000d73656c6563742031005800000004"
)
MY_CLIENT_0 = bytes.fromhex(
    "8c0000010da23a00ffffff002d00000000000000000000000000000000000000000000006170700014bf"
    "f6ee7a3f40fe7b6b61ccd674c4fcce55c1f5e66f7264657273006d7973716c5f6e61746976655f706173"
    "73776f726400350c5f636c69656e745f6e616d650770796d7973716c0f5f636c69656e745f7665727369"
    "6f6e05312e322e34045f7069640436333739"
)
MY_CLIENT_1 = bytes.fromhex(
    "8c0000010da23a00ffffff002d00000000000000000000000000000000000000000000006170700014f7"
    "c0c34f7ddf026c28f840d5a3d40591171b43a66f7264657273006d7973716c5f6e61746976655f706173"
    "73776f726400350c5f636c69656e745f6e616d650770796d7973716c0f5f636c69656e745f7665727369"
    "6f6e05312e322e34045f70696404363337391200000003534554204e414d455320757466386d6234"
)
MY_GREETING = bytes.fromhex(
    "4a0000000a382e302e3336002a0000006162636465666768000fa2ff02003b0015000000000000000000"
    "00696a6b6c6d6e6f7071727374006d7973716c5f6e61746976655f70617373776f726400"
)


# ---- detection ---------------------------------------------------------------------------------

PG_SSL_REQUEST = struct.pack(">II", 8, 80877103)
CLIENT_HELLO_START = bytes.fromhex("160301020001")


@pytest.mark.parametrize(
    ("client", "server", "port", "expected"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"", 80, ProtocolKind.HTTP1),
        (b"POST /api/orders", b"", 8080, ProtocolKind.HTTP1),
        (b"OPTIONS * HTTP/1.1\r\n", b"", 80, ProtocolKind.HTTP1),
        (b"G", b"", 80, None),
        (k.HTTP2_PREFACE, b"", 80, ProtocolKind.HTTP2),
        (k.HTTP2_PREFACE[:10], b"", 80, None),
        (CLIENT_HELLO_START, b"", 443, ProtocolKind.TLS),
        (CLIENT_HELLO_START[:2], b"", 443, None),
        (PG_SSL_REQUEST, b"", 5432, ProtocolKind.POSTGRES),
        (PG_CLIENT_1[8:], b"", 5432, ProtocolKind.POSTGRES),
        (b"*1\r\n$4\r\nPING\r\n", b"", 6379, ProtocolKind.REDIS),
        (b"PING\r\n", b"", 6379, ProtocolKind.REDIS),
        (b"get foo\r\n", b"", 6379, ProtocolKind.REDIS),
        (b"get foo\r\n", b"", 9000, ProtocolKind.UNKNOWN),
        (b"", MY_GREETING, 3306, ProtocolKind.MYSQL),
        (b"", MY_GREETING[:3], 3306, None),
        (b"", b"SSH-2.0-OpenSSH_9.6\r\n", 22, ProtocolKind.UNKNOWN),
        (b"", b"", 80, None),
        (b"howdy", b"", 9999, None),
        (b"howdy world\n", b"", 9999, ProtocolKind.UNKNOWN),
        (b"howdy", b"220 smtp.example ESMTP\r\n", 25, ProtocolKind.UNKNOWN),
        (b"a" * k.SNIFF_DETECT_MAX_BYTES, b"", 80, ProtocolKind.UNKNOWN),
        (b"\x00\x01\x02\x03\x04\x05\x06\x07\x08", b"", 80, ProtocolKind.UNKNOWN),
    ],
)
def test_detect_protocol_table(client: bytes, server: bytes, port: int, expected: Any) -> None:
    assert k.detect_protocol(client, server, port) == expected


def test_detect_protocol_answers_for_any_prefix_and_is_bounded() -> None:
    for seed in range(300):
        rng = random.Random(seed)
        client = rng.randbytes(rng.randrange(0, 64))
        server = rng.randbytes(rng.choice([0, 0, 5, 40]))
        kind = k.detect_protocol(client, server, rng.choice([80, 3306, 6379]))
        assert kind is None or isinstance(kind, ProtocolKind)
    big = random.Random(1).randbytes(k.SNIFF_DETECT_MAX_BYTES)
    assert k.detect_protocol(b"GET" + big, b"", 80) is not None


def test_every_kind_has_a_sniffer_and_unknown_is_inert() -> None:
    stats = k.ProtocolStats()
    for kind in ProtocolKind:
        assert isinstance(k.sniffer_for(kind, stats), k.Sniffer)
    null = k.sniffer_for(ProtocolKind.UNKNOWN, stats)
    null.feed(C2S, b"anything", 1.0)
    assert not null.active and events(null) == []
    assert stats.connections.counts[ProtocolKind.UNKNOWN] == 2  # one per sniffer made


# ---- HTTP/1 ------------------------------------------------------------------------------------

GET_USERS = b"GET /api/users/42?x=1 HTTP/1.1\r\nHost: api\r\n\r\n"
OK_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
)
POST_ORDERS = b"POST /api/orders HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_http1_pairs_keep_alive_requests_with_length_and_chunked_bodies(chunk: Any) -> None:
    sniffer = run(
        ProtocolKind.HTTP1,
        [
            (C2S, GET_USERS, 10.0),
            (S2C, OK_LENGTH, 10.012),
            (C2S, POST_ORDERS, 11.0),
            (S2C, CHUNKED, 11.5),
        ],
        chunk,
    )
    assert events(sniffer) == [
        k.HttpExchange(
            "GET", "/api/users/:id", 200, pytest.approx(0.012), len(GET_USERS), len(OK_LENGTH)
        ),
        k.HttpExchange("POST", "/api/orders", 200, 0.5, len(POST_ORDERS), len(CHUNKED)),
    ]
    assert sniffer.active


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_http1_pipelined_requests_are_answered_in_order(chunk: Any) -> None:
    sniffer = run(
        ProtocolKind.HTTP1,
        [(C2S, GET_USERS + POST_ORDERS, 1.0), (S2C, UNAVAILABLE + OK_LENGTH, 2.0)],
        chunk,
    )
    assert [(e.method, e.status) for e in events(sniffer)] == [("GET", 503), ("POST", 200)]


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_http1_head_204_and_304_responses_have_no_body(chunk: Any) -> None:
    head = b"HEAD /big HTTP/1.1\r\n\r\n"
    get = b"GET /x HTTP/1.1\r\n\r\n"
    sniffer = run(
        ProtocolKind.HTTP1,
        [
            (C2S, head + get + get, 1.0),
            (S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n", 1.1),
            (S2C, b"HTTP/1.1 204 No Content\r\n\r\n", 1.2),
            (S2C, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 1.3),
        ],
        chunk,
    )
    assert [(e.method, e.status) for e in events(sniffer)] == [
        ("HEAD", 200),
        ("GET", 204),
        ("GET", 304),
    ]


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_http1_interim_100_continue_is_not_the_answer(chunk: Any) -> None:
    head = b"PUT /upload HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    final = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    sniffer = run(
        ProtocolKind.HTTP1,
        [(C2S, head, 1.0), (S2C, interim, 1.1), (C2S, b"data", 1.2), (S2C, final, 1.5)],
        chunk,
    )
    assert events(sniffer) == [
        k.HttpExchange("PUT", "/upload", 201, 0.5, len(head) + 4, len(interim) + len(final)),
    ]


def test_http1_websocket_upgrade_stops_parsing() -> None:
    upgrade = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    sniffer = run(
        ProtocolKind.HTTP1,
        [(C2S, upgrade, 1.0), (S2C, switching + b"\x81\x05hello", 1.1), (C2S, b"\x81\x85", 1.2)],
    )
    assert events(sniffer) == [
        k.HttpExchange("GET", "/ws", 101, pytest.approx(0.1), len(upgrade), len(switching)),
        k.HttpUpgraded("websocket", "/ws"),
    ]
    assert not sniffer.active and not gave_up(sniffer)


def test_http1_refused_upgrade_replays_what_the_client_sent_meanwhile() -> None:
    upgrade = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
    sniffer = run(
        ProtocolKind.HTTP1,
        [
            (C2S, upgrade + b"GET /next HTTP/1.1\r\n\r\n", 1.0),
            (S2C, b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n" + OK_LENGTH, 2.0),
        ],
    )
    assert [(e.path, e.status) for e in events(sniffer)] == [("/ws", 426), ("/next", 200)]


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_http1_response_without_length_ends_at_eof(chunk: Any) -> None:
    sniffer = run(
        ProtocolKind.HTTP1,
        [(C2S, b"GET / HTTP/1.0\r\n\r\n", 1.0), (S2C, b"HTTP/1.0 200 OK\r\n\r\nbody...", 1.2)],
        chunk,
        eof=True,
    )
    assert events(sniffer) == [k.HttpExchange("GET", "/", 200, pytest.approx(0.2), 18, 26)]
    assert not sniffer.active


def test_http1_reports_cut_off_responses_and_unanswered_requests_at_eof() -> None:
    sniffer = run(
        ProtocolKind.HTTP1,
        [
            (C2S, GET_USERS + POST_ORDERS, 1.0),
            (S2C, b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 100\r\n\r\npartial", 1.3),
        ],
        eof=True,
    )
    assert events(sniffer) == [
        k.HttpExchange(
            "GET", "/api/users/:id", 502, pytest.approx(0.3), len(GET_USERS), 56, complete=False
        ),
        k.HttpRequestUnanswered("POST", "/api/orders"),
    ]
    problems = sniffer.stats.problems()
    assert "1 × HTTP 502 from /api/users/:id" in problems
    assert "1 HTTP request(s) never answered (connection closed)" in problems


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_http1_trailing_partial_message_emits_nothing_yet(chunk: Any) -> None:
    sniffer = run(
        ProtocolKind.HTTP1,
        [(C2S, GET_USERS + b"GET /next HT", 1.0), (S2C, OK_LENGTH + b"HTTP/1.1 2", 2.0)],
        chunk,
    )
    assert [e.path for e in events(sniffer)] == ["/api/users/:id"]
    assert sniffer.active


@pytest.mark.parametrize("chunk", [None, 1000])
def test_http1_header_block_over_the_limit_gives_up_quietly(chunk: Any) -> None:
    huge = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * k.SNIFF_MAX_HEADER_BYTES + b"\r\n\r\n"
    sniffer = run(ProtocolKind.HTTP1, [(C2S, huge, 1.0), (S2C, OK_LENGTH, 2.0)], chunk)
    assert gave_up(sniffer) == ["HTTP header block over %d bytes" % k.SNIFF_MAX_HEADER_BYTES]
    assert not sniffer.active and len(sniffer.events) == 1


def test_http1_header_block_just_under_the_limit_is_fine() -> None:
    head = b"GET / HTTP/1.1\r\nX-Big: "
    big = head + b"a" * (k.SNIFF_MAX_HEADER_BYTES - len(head) - 4) + b"\r\n\r\n"
    assert len(big) == k.SNIFF_MAX_HEADER_BYTES
    sniffer = run(ProtocolKind.HTTP1, [(C2S, big, 1.0), (S2C, OK_LENGTH, 2.0)], 1)
    assert [e.status for e in events(sniffer)] == [200]


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        (b"\x16\x03\x01\x00\x10hello", "not HTTP/1 (byte 0x16 starts a message)"),
        (b"HELLO\r\n\r\n", "not an HTTP/1 request line"),
        (b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", "invalid Content-Length '1, 2'"),
        ("POST / HTTP/1.1\r\nContent-Length: 3¹\r\n\r\n".encode(), "invalid Content-Length '3¹'"),
    ],
)
def test_http1_garbage_gives_up_with_a_reason(client: bytes, reason: str) -> None:
    sniffer = run(ProtocolKind.HTTP1, [(C2S, client, 1.0)])
    assert gave_up(sniffer) == [reason]
    sniffer.feed(C2S, GET_USERS, 2.0)  # a no-op from now on
    assert len(sniffer.events) == 1


def test_http1_large_bodies_are_counted_not_kept() -> None:
    body_size = 5 * 1024 * 1024
    stats = k.ProtocolStats()
    sniffer = k.Http1Sniffer(stats)
    sniffer.feed(C2S, GET_USERS, 1.0)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % body_size
    sniffer.feed(S2C, head, 1.1)
    chunk = memoryview(bytes(64 * 1024))
    for _ in range(body_size // len(chunk)):
        sniffer.feed(S2C, chunk, 1.2)
        assert not sniffer._server.reasm.buf  # nothing of the body is buffered
    assert events(sniffer)[0].response_bytes == body_size + len(head)
    assert stats.http.response_bytes == events(sniffer)[0].response_bytes


def test_http1_chunked_body_with_bad_chunk_size_gives_up() -> None:
    bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    sniffer = run(ProtocolKind.HTTP1, [(C2S, GET_USERS, 1.0), (S2C, bad, 1.1)])
    assert gave_up(sniffer) == ["invalid chunk size line"]


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/api/users/42?x=1", "/api/users/:id"),
        ("/orders/3fa85f64-5717-4562-b3fc-2c963f66afa6/items", "/orders/:id/items"),
        ("http://api.internal/v1/things", "/v1/things"),
        ("/static/app.js", "/static/app.js"),
        ("*", "*"),
    ],
)
def test_paths_are_folded_into_routes(target: str, path: str) -> None:
    assert k.normalize_path(target) == path


# ---- TLS (live handshakes between two ssl.SSLObjects over MemoryBIOs) -------------------------


def tls_flights(
    client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, hostname: str = "api.internal"
) -> List[Tuple[Direction, bytes, float]]:
    """The records each side sent, in order, until the handshake finished or failed."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    flights: List[Tuple[Direction, bytes, float]] = []
    done = [False, False]
    for step in range(8):
        for index, endpoint in enumerate((client, server)):
            try:
                endpoint.do_handshake()
                done[index] = True
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
        if all(done):
            client.write(b"GET / HTTP/1.1\r\n\r\n")
        for direction, out, into in ((C2S, c_out, s_in), (S2C, s_out, c_in)):
            data = out.read()
            if data:
                flights.append((direction, data, float(step)))
                into.write(data)
    return flights


def client_context(maximum: Any = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    if maximum is not None:
        context.maximum_version = maximum
    return context


def server_context(minimum: Any = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT)
    context.set_alpn_protocols(["h2"])
    if minimum is not None:
        context.minimum_version = minimum
    return context


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_tls_real_handshake_yields_hellos_then_stops(chunk: Any) -> None:
    flights = tls_flights(client_context(), server_context())
    sniffer = run(ProtocolKind.TLS, flights, chunk)
    hello, server_hello = events(sniffer)
    assert hello == k.TlsClientHello("TLS 1.3", "api.internal", ("h2", "http/1.1"))
    assert (server_hello.version, server_hello.alpn) == ("TLS 1.3", "")  # ALPN is encrypted
    assert server_hello.cipher.startswith("0x13")  # a TLS 1.3 suite
    assert not sniffer.active and not gave_up(sniffer)  # encrypted both ways: nothing to learn
    assert sniffer.stats.summary_lines() == ["TLS 1.3 SNI=api.internal ALPN offered=h2,http/1.1"]


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_tls_plaintext_alert_from_server_is_a_problem(chunk: Any) -> None:
    flights = tls_flights(
        client_context(maximum=ssl.TLSVersion.TLSv1_2),
        server_context(minimum=ssl.TLSVersion.TLSv1_3),
    )
    sniffer = run(ProtocolKind.TLS, flights, chunk)
    assert events(sniffer) == [
        k.TlsClientHello("TLS 1.2", "api.internal", ("h2", "http/1.1")),
        k.TlsAlert("fatal", "protocol_version", S2C),
    ]
    assert sniffer.stats.problems() == ["TLS alert from server: protocol_version"]


def test_tls_1_2_handshake_stops_after_both_change_cipher_specs() -> None:
    flights = tls_flights(client_context(maximum=ssl.TLSVersion.TLSv1_2), server_context())
    sniffer = run(ProtocolKind.TLS, flights, 1)
    assert [type(e) for e in events(sniffer)] == [k.TlsClientHello, k.TlsServerHello]
    assert (events(sniffer)[1].version, events(sniffer)[1].alpn) == ("TLS 1.2", "h2")
    assert sniffer.stats.summary_lines() == ["TLS 1.2 SNI=api.internal ALPN=h2"]
    assert not sniffer.active


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_tls_trailing_partial_record_emits_nothing_more(chunk: Any) -> None:
    hello = tls_flights(client_context(), server_context())[0][1]
    sniffer = run(ProtocolKind.TLS, [(C2S, hello + b"\x14\x03", 1.0)], chunk)
    assert [type(e) for e in events(sniffer)] == [k.TlsClientHello]
    assert sniffer.active


def test_tls_handshake_message_over_the_limit_gives_up() -> None:
    claim = b"\x01\xff\xff\xff"  # a ClientHello claiming 16 MiB
    record = b"\x16\x03\x01" + struct.pack(">H", 16384) + claim + bytes(16380)
    sniffer = run(ProtocolKind.TLS, [(C2S, record * 3, 1.0)])
    assert gave_up(sniffer) == [
        "TLS handshake message over %d bytes" % k.SNIFF_MAX_TLS_HANDSHAKE_BYTES
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", "not a TLS record"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "unexpected TLS handshake message 2"),
        (b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03", "truncated message"),
    ],
)
def test_tls_garbage_gives_up_with_a_reason(data: bytes, reason: str) -> None:
    assert gave_up(run(ProtocolKind.TLS, [(C2S, data, 1.0)])) == [reason]


# ---- PostgreSQL (client bytes captured from psql 17; server messages built per the docs) -------


def pg(msg_type: bytes, body: bytes) -> bytes:
    return msg_type + struct.pack(">I", len(body) + 4) + body


PG_AUTH_OK = pg(b"R", b"\0\0\0\0")
PG_READY = pg(b"Z", b"I")
PG_PASSWORD_FAILED = pg(
    b"E", b'SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user "bad"\0\0'
)
PG_STARTUP_LENGTH = 8 + 0x38  # SSLRequest, then the StartupMessage


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_postgres_psql_with_a_wrong_password(chunk: Any) -> None:
    client = PG_CLIENT_0
    sniffer = run(
        ProtocolKind.POSTGRES,
        [
            (C2S, client[:8], 1.0),
            (S2C, b"N", 1.1),
            (C2S, client[8:PG_STARTUP_LENGTH], 1.2),
            (S2C, pg(b"R", struct.pack(">I", 3)), 1.3),  # cleartext password, please
            (C2S, client[PG_STARTUP_LENGTH:], 1.4),
            (S2C, PG_PASSWORD_FAILED, 1.5),
        ],
        chunk,
    )
    assert events(sniffer) == [
        k.PostgresEncryptionAnswered("SSL", False),
        k.PostgresStartup("bad", "orders", "psql", True),
        k.PostgresError("FATAL", "28P01", 'password authentication failed for user "bad"'),
    ]
    assert sniffer.stats.problems() == [
        'Postgres 28P01 password authentication failed for user "bad"'
    ]


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_postgres_psql_query_is_counted_and_timed(chunk: Any) -> None:
    client = PG_CLIENT_1
    rows = pg(b"T", b"\0\x01?column?\0" + bytes(18)) + pg(b"D", b"\0\x01\0\0\0\x011") * 50
    sniffer = run(
        ProtocolKind.POSTGRES,
        [
            (C2S, client[:8], 1.0),
            (S2C, b"N", 1.0),
            (C2S, client[8:PG_STARTUP_LENGTH], 1.0),
            (S2C, PG_AUTH_OK + pg(b"S", b"server_version\x0016.4\0") + PG_READY, 1.1),
            (C2S, client[PG_STARTUP_LENGTH:-5], 2.0),  # Q "select 1"
            (S2C, rows + pg(b"C", b"SELECT 50\0") + PG_READY, 2.25),
            (C2S, client[-5:] + pg(b"Q", b"select"), 3.0),  # Terminate, then trailing bytes
        ],
        chunk,
    )
    assert events(sniffer) == [
        k.PostgresEncryptionAnswered("SSL", False),
        k.PostgresStartup("app", "orders", "psql", True),
        k.PostgresServerVersion("16.4"),
        k.PostgresQueryDone(0.25),
    ]
    assert sniffer.stats.summary_lines() == [
        "Postgres 16.4: user=app db=orders, 1 query, p50 250 ms, p99 250 ms"
    ]


def test_postgres_extended_protocol_sync_is_one_query() -> None:
    startup = PG_CLIENT_1[8:PG_STARTUP_LENGTH]
    extended = pg(b"P", b"\0select $1\0\0\0") + pg(b"B", bytes(8)) + pg(b"E", bytes(5))
    sniffer = run(
        ProtocolKind.POSTGRES,
        [
            (C2S, startup, 1.0),
            (S2C, PG_AUTH_OK + PG_READY, 1.0),
            (C2S, extended + pg(b"S", b""), 2.0),
            (S2C, pg(b"1", b"") + pg(b"2", b"") + pg(b"C", b"SELECT 1\0") + PG_READY, 2.5),
        ],
    )
    assert events(sniffer)[-1] == k.PostgresQueryDone(0.5)


def test_postgres_ssl_accepted_hands_the_connection_to_tls() -> None:
    hello = tls_flights(client_context(), server_context())[0][1]
    sniffer = run(
        ProtocolKind.POSTGRES, [(C2S, PG_SSL_REQUEST, 1.0), (S2C, b"S", 1.1), (C2S, hello, 1.2)], 1
    )
    assert events(sniffer) == [k.PostgresEncryptionAnswered("SSL", True)]
    assert sniffer.stats.tls.client_hellos == 1  # the TLS sniffer reports into the same stats
    assert sniffer.stats.summary_lines() == [
        "TLS 1.3 SNI=api.internal ALPN offered=h2,http/1.1",
        "Postgres: TLS via SSLRequest (user and database encrypted)",
    ]


def test_postgres_long_error_message_keeps_a_prefix_and_goes_on() -> None:
    long_error = pg(b"E", b"SERROR\0C42P01\0M" + b"x" * (2 * k.SNIFF_MAX_MESSAGE_BYTES) + b"\0\0")
    sniffer = run(
        ProtocolKind.POSTGRES,
        [
            (C2S, PG_CLIENT_1[8:PG_STARTUP_LENGTH], 1.0),
            (S2C, PG_AUTH_OK + PG_READY, 1.0),
            (C2S, pg(b"Q", b"select * from missing\0"), 2.0),
            (S2C, long_error + PG_READY, 2.5),
        ],
        4096,
    )
    error = events(sniffer)[-2]
    assert (error.code, len(error.message)) == ("42P01", k.SNIFF_MAX_TEXT_CHARS)
    assert events(sniffer)[-1] == k.PostgresQueryDone(0.5) and sniffer.active


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        (struct.pack(">II", 20000, 196608), "invalid Postgres startup length 20000"),
        (struct.pack(">II", 8, 1234), "unsupported Postgres protocol 0.1234"),
    ],
)
def test_postgres_over_the_limit_or_garbage_gives_up(client: bytes, reason: str) -> None:
    assert gave_up(run(ProtocolKind.POSTGRES, [(C2S, client, 1.0)])) == [reason]


# ---- Redis -------------------------------------------------------------------------------------


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"


@pytest.mark.parametrize("chunk", [*CHUNKINGS, 29, 64])  # 29, 64: the fast path, split
def test_redis_commands_replies_and_errors(chunk: Any) -> None:
    sniffer = run(
        ProtocolKind.REDIS,
        [
            (C2S, resp(b"get", b"foo") + resp(b"LPUSH", b"foo", b"bar"), 1.0),
            (S2C, b"$-1\r\n" + WRONGTYPE, 1.002),
            (C2S, resp(b"SET", b"k", b"v" * 300), 2.0),
            (S2C, b"+OK\r\n" + b"$5\r\nhel", 2.001),  # trailing partial reply
        ],
        chunk,
    )
    assert events(sniffer) == [
        k.RedisCommand("GET"),
        k.RedisCommand("LPUSH"),
        k.RedisReply(pytest.approx(0.002)),
        k.RedisError("WRONGTYPE", WRONGTYPE[1:-2].decode()),
        k.RedisReply(pytest.approx(0.002)),
        k.RedisCommand("SET"),
        k.RedisReply(pytest.approx(0.001)),
    ]
    line = sniffer.stats.summary_lines()[0]
    assert line.startswith("Redis: 3 commands, 1 error (WRONGTYPE), p50 2 ms")


def test_redis_resp3_maps_attributes_pushes_and_blob_errors() -> None:
    hello_reply = b"%2\r\n+server\r\n+redis\r\n+modules\r\n*1\r\n%1\r\n+name\r\n$2\r\nft\r\n"
    attribute = b"|1\r\n+ttl\r\n:3\r\n"
    push = b">3\r\n+message\r\n+news\r\n$2\r\nhi\r\n"
    blob_error = b"!21\r\nSYNTAX invalid syntax\r\n"
    sniffer = run(
        ProtocolKind.REDIS,
        [
            (C2S, resp(b"HELLO", b"3") + resp(b"GET", b"a") + resp(b"EVAL", b"x", b"0"), 1.0),
            (S2C, hello_reply + attribute + b",3.5\r\n" + push + blob_error, 1.5),
        ],
        1,
    )
    replies = [e for e in events(sniffer) if isinstance(e, k.RedisReply)]
    assert len(replies) == 3  # the attribute decorates a reply, the push answers nothing
    assert [e for e in events(sniffer) if isinstance(e, k.RedisError)] == [
        k.RedisError("SYNTAX", "SYNTAX invalid syntax")
    ]


def test_redis_command_names_are_uppercased_as_ascii() -> None:
    sniffer = run(
        ProtocolKind.REDIS, [(C2S, resp("gét".encode("latin-1"), b"k") + b"\xb5x\r\n", 1.0)]
    )
    assert [e.name for e in events(sniffer)] == ["G\ufffdT", "\ufffdX"] and not gave_up(sniffer)


def test_redis_inline_commands_and_subscriptions() -> None:
    sniffer = run(
        ProtocolKind.REDIS,
        [
            (C2S, b"PING\r\n\r\n", 1.0),
            (S2C, b"+PONG\r\n", 1.1),
            (C2S, b"subscribe news\r\n", 1.0),
            (S2C, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n", 1.1),
            (S2C, b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n", 9.0),
        ],
    )
    names = [e.name for e in events(sniffer) if isinstance(e, k.RedisCommand)]
    assert names == ["PING", "SUBSCRIBE"]
    assert len([e for e in events(sniffer) if isinstance(e, k.RedisReply)]) == 1  # only PONG


def test_redis_large_values_are_skipped_not_kept() -> None:
    sniffer = k.RedisSniffer(k.ProtocolStats())
    sniffer.feed(C2S, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10000000\r\n", 1.0)
    for _ in range(100):
        sniffer.feed(C2S, bytes(100_000), 1.0)
        assert not sniffer._sides[C2S].reasm.buf
    sniffer.feed(C2S, b"\r\n", 1.0)
    sniffer.feed(S2C, b"+OK\r\n", 1.5)
    assert events(sniffer) == [k.RedisCommand("SET"), k.RedisReply(0.5)]


@pytest.mark.parametrize(
    ("direction", "data", "reason"),
    [
        (C2S, b"*1\r\n$3\r\nGET" + b"x" * k.SNIFF_MAX_RESP_LINE_BYTES, None),
        (C2S, b"GET " + b"x" * k.SNIFF_MAX_RESP_LINE_BYTES, "RESP line over 65536 bytes"),
        (S2C, b"*1\r\n" * (k.SNIFF_MAX_RESP_DEPTH + 1), "RESP nested deeper than 32"),
        (S2C, b"?what\r\n", "not RESP (line starts with b'?')"),
        (C2S, b"*x\r\n", "invalid RESP length b'*x'"),
    ],
)
def test_redis_over_the_limit_or_garbage(direction: Direction, data: bytes, reason: Any) -> None:
    sniffer = run(ProtocolKind.REDIS, [(direction, data, 1.0)], 4096)
    assert gave_up(sniffer) == ([reason] if reason else [])


# ---- MySQL (client bytes captured from PyMySQL 1.2.4) -----------------------------------------


def mysql_packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


ACCESS_DENIED = mysql_packet(
    2, b"\xff\x15\x04#28000Access denied for user 'app'@'localhost' (using password: YES)"
)


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_mysql_pymysql_login_refused(chunk: Any) -> None:
    sniffer = run(
        ProtocolKind.MYSQL,
        [(S2C, MY_GREETING, 1.0), (C2S, MY_CLIENT_0, 1.1), (S2C, ACCESS_DENIED, 1.2)],
        chunk,
    )
    assert events(sniffer) == [
        k.MysqlGreeting("8.0.36"),
        k.MysqlLogin("app", "orders", False),
        k.MysqlError(
            1045, "28000", "Access denied for user 'app'@'localhost' (using password: YES)"
        ),
    ]
    assert sniffer.stats.problems() == [
        "MySQL 1045 Access denied for user 'app'@'localhost' (using password: YES)"
    ]


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_mysql_commands_and_query_errors_after_login(chunk: Any) -> None:
    login_end = len(MY_CLIENT_0)
    missing = mysql_packet(1, b"\xff\x7a\x04#42S02Table 'orders.missing' doesn't exist")
    rows = mysql_packet(1, b"\x01") + mysql_packet(2, b"\x03def" + bytes(20)) * 3
    sniffer = run(
        ProtocolKind.MYSQL,
        [
            (S2C, MY_GREETING, 1.0),
            (C2S, MY_CLIENT_1[:login_end], 1.1),
            (S2C, mysql_packet(2, b"\0\0\0\2\0\0\0"), 1.2),
            (C2S, MY_CLIENT_1[login_end:], 1.3),  # COM_QUERY "SET NAMES utf8mb4"
            (S2C, rows, 1.4),
            (C2S, mysql_packet(0, b"\x03SELECT * FROM missing"), 1.5),
            (S2C, missing + missing[:6], 1.6),  # trailing partial packet
        ],
        chunk,
    )
    assert events(sniffer)[2:] == [
        k.MysqlCommand("Query"),
        k.MysqlCommand("Query"),
        k.MysqlError(1146, "42S02", "Table 'orders.missing' doesn't exist"),
    ]
    assert sniffer.stats.summary_lines() == [
        "MySQL 8.0.36: user=app db=orders, 2 queries, "
        "1 error: 1146 Table 'orders.missing' doesn't exist"
    ]


def test_mysql_ssl_request_hands_the_connection_to_tls() -> None:
    caps = struct.pack("<I", 0x200 | 0x800 | 0x8000)
    ssl_request = mysql_packet(1, caps + struct.pack("<I", 1 << 24) + b"\xff" + bytes(23))
    hello = tls_flights(client_context(), server_context())[0][1]
    sniffer = run(ProtocolKind.MYSQL, [(S2C, MY_GREETING, 1.0), (C2S, ssl_request + hello, 1.1)], 7)
    assert events(sniffer) == [k.MysqlGreeting("8.0.36"), k.MysqlLogin("", "", True)]
    assert sniffer.stats.tls.snis.counts == {"api.internal": 1}


def test_mysql_huge_packets_keep_a_bounded_prefix() -> None:
    huge_error = mysql_packet(1, b"\xff\x01\x04#HY000" + b"m" * (3 * k.SNIFF_MAX_MESSAGE_BYTES))
    sniffer = run(
        ProtocolKind.MYSQL,
        [
            (S2C, MY_GREETING, 1.0),
            (C2S, MY_CLIENT_1[: len(MY_CLIENT_0)], 1.1),
            (S2C, mysql_packet(2, b"\0\0\0\2\0\0\0"), 1.2),
            (C2S, mysql_packet(0, b"\x03SELECT 1"), 1.3),
            (S2C, huge_error + mysql_packet(1, b"\xff\x02\x04#HY000two"), 1.4),
        ],
        1000,
    )
    errors = [e for e in events(sniffer) if isinstance(e, k.MysqlError)]
    assert [(e.code, len(e.message)) for e in errors] == [(1025, 120), (1026, 3)]


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ([(C2S, b"hello there", 1.0)], "MySQL client spoke before the server greeting"),
        ([(S2C, mysql_packet(0, b"\x09old"), 1.0)], "unsupported MySQL protocol 9"),
        ([(S2C, mysql_packet(0, b"\xff\x01"), 1.0)], "truncated message"),
    ],
)
def test_mysql_garbage_gives_up(script: Any, reason: str) -> None:
    assert gave_up(run(ProtocolKind.MYSQL, script)) == [reason]


# ---- HTTP/2 and gRPC (frames and HPACK produced by the h2 library, see H2_FLIGHTS) -------------

H2_SCRIPT = [(direction, data, float(step)) for step, (direction, data) in enumerate(H2_FLIGHTS)]
SAY_HELLO = "/helloworld.Greeter/SayHello"


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_http2_grpc_streams_statuses_resets_and_goaway(chunk: Any) -> None:
    sniffer = run(ProtocolKind.HTTP2, H2_SCRIPT, chunk)
    assert events(sniffer) == [
        k.Http2Stream(1, "POST", SAY_HELLO, 200, True, 1.0, 12, 18, ""),
        k.GrpcStatus(SAY_HELLO, 0, ""),
        # stream 3's headers are all dynamic-table references (HPACK state carried over)
        k.Http2Stream(3, "POST", SAY_HELLO, 200, True, 1.0, 12, 18, ""),
        k.GrpcStatus(SAY_HELLO, 14, "upstream connect error"),
        k.Http2Reset(5, "CANCEL", C2S),
        k.Http2Stream(5, "POST", SAY_HELLO, 0, True, None, 0, 0, "CANCEL"),
        k.Http2GoAway(5, "NO_ERROR", "", S2C),
    ]
    assert sniffer.stats.summary_lines() == [
        "gRPC: 3 streams, 1 gRPC error, p50 1.0 s, p99 1.0 s, RST_STREAM CANCEL, "
        "GOAWAY NO_ERROR; top: POST " + SAY_HELLO
    ]
    assert sniffer.stats.problems() == [
        "gRPC UNAVAILABLE from %s: upstream connect error" % SAY_HELLO
    ]


def test_http2_trailing_partial_frame_and_open_streams_at_eof() -> None:
    script = [*H2_SCRIPT[:4], (S2C, H2_FLIGHTS[4][1][:20], 9.0)]  # response cut mid-frame
    sniffer = run(ProtocolKind.HTTP2, script, 1)
    assert events(sniffer) == []
    sniffer.close(10.0)
    assert events(sniffer) == [
        k.Http2Stream(1, "POST", SAY_HELLO, 0, True, 9.0 - 3.0, 12, 0, "connection closed")
    ]


def test_http2_header_block_over_the_limit_loses_names_but_keeps_counting() -> None:
    big = b"\x00" + b"\x7f\xff\x7f" + b"a" * (k.SNIFF_MAX_H2_HEADER_BLOCK_BYTES + 100)
    frame = struct.pack(">I", len(big))[1:] + b"\x01\x05" + struct.pack(">I", 1) + big
    goaway = struct.pack(">I", 8)[1:] + b"\x07\x00" + bytes(4) + struct.pack(">II", 1, 0xB)
    sniffer = run(
        ProtocolKind.HTTP2,
        [(C2S, k.HTTP2_PREFACE + frame, 1.0), (S2C, goaway, 2.0)],
        4096,
        eof=True,
    )
    assert events(sniffer) == [
        k.Http2GoAway(1, "ENHANCE_YOUR_CALM", "", S2C),
        k.Http2Stream(1, "", "", 0, False, None, 0, 0, "connection closed"),
    ]
    assert sniffer.stats.problems() == ["HTTP/2 GOAWAY ENHANCE_YOUR_CALM"]
    assert not gave_up(sniffer)


def test_http2_without_preface_gives_up() -> None:
    sniffer = run(ProtocolKind.HTTP2, [(C2S, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1.0)])
    assert gave_up(sniffer) == ["no HTTP/2 client preface"]


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [  # RFC 7541 Appendix C.4
        ("f1e3c2e5f23a6ba0ab90f4ff", b"www.example.com"),
        ("a8eb10649cbf", b"no-cache"),
        ("25a849e95ba97d7f", b"custom-key"),
        ("25a849e95bb8e8b4bf", b"custom-value"),
    ],
)
def test_hpack_huffman_decodes_the_rfc_examples(encoded: str, decoded: bytes) -> None:
    assert k.huffman_decode(bytes.fromhex(encoded)) == decoded


def test_hpack_decoder_follows_the_rfc_request_sequence() -> None:
    decoder = k.HpackDecoder()
    first = decoder.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff"))
    second = decoder.decode(bytes.fromhex("828684be5886a8eb10649cbf"))
    assert first == [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
    ]
    assert second[-2:] == [(b":authority", b"www.example.com"), (b"cache-control", b"no-cache")]


@pytest.mark.parametrize("block", ["ff", "bf", "3fe1ffffff0f", "0085ffffffffff"])
def test_hpack_rejects_bad_blocks_without_raising_out_of_the_sniffer(block: str) -> None:
    with pytest.raises(k._GiveUp):
        k.HpackDecoder().decode(bytes.fromhex(block))


# ---- aggregates --------------------------------------------------------------------------------


def exchange(status: int, path: str = "/api/orders", latency: float = 0.01) -> k.HttpExchange:
    return k.HttpExchange("GET", path, status, latency, 100, 200)


def test_http_summary_line_and_problems() -> None:
    stats = k.ProtocolStats()
    for index, status in enumerate([200] * 96 + [503, 503, 503, 404]):
        stats.record(exchange(status, latency=0.001 * (index + 1)), float(index) * 60)
    assert stats.summary_lines() == [
        "HTTP: 100 requests, 3 × 503, 1 × 404, p50 50 ms, p99 99 ms; top: GET /api/orders"
    ]
    assert stats.problems() == ["3 × HTTP 503 from /api/orders"]  # spread out: no burst


def test_5xx_burst_is_reported_once_per_burst() -> None:
    stats = k.ProtocolStats()
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0, 200.0, 201.0, 202.0, 203.0, 204.0]
    for now in times:
        stats.record(exchange(502), now)
    assert stats.http.bursts == 2 and stats.http.worst_burst == k.SNIFF_BURST_COUNT
    assert "HTTP 5xx burst: 5 server errors within 10s (2 bursts)" in stats.problems()


def test_top_counter_keeps_a_bounded_number_of_keys() -> None:
    counter = k._TopCounter(cap=3)
    for key in ["a", "b", "a", "c", "d", "e", "a"]:
        counter.add(key)
    assert counter.counts == {"a": 3, "b": 1, "c": 1, "other": 2}
    assert counter.total == 7 and counter.most_common(1) == [("a", 3)]


def test_latency_reservoir_is_bounded_and_representative() -> None:
    reservoir = k.LatencyReservoir(size=500)
    assert reservoir.percentile(0.5) is None
    for value in range(100_000):
        reservoir.add(value / 100_000)
    assert len(reservoir.samples) == 500 and reservoir.count == 100_000
    assert reservoir.percentile(0.5) == pytest.approx(0.5, abs=0.08)
    assert reservoir.percentile(0.99) == pytest.approx(0.99, abs=0.03)


def test_nearest_rank_percentiles_on_small_samples() -> None:
    reservoir = k.LatencyReservoir()
    for value in (0.004, 0.001, 0.003, 0.002):
        reservoir.add(value)
    assert (reservoir.percentile(0.5), reservoir.percentile(0.99)) == (0.002, 0.004)


def test_per_forward_stats_cover_every_protocol_in_one_summary() -> None:
    stats = k.ProtocolStats()
    feed = [
        k.TlsClientHello("TLS 1.3", "api.internal", ("h2",)),
        k.TlsAlert("warning", "close_notify", S2C),
        k.PostgresStartup("app", "orders", "", False),
        k.PostgresError("FATAL", "28P01", 'password authentication failed for user "app"'),
        k.PostgresError("FATAL", "28P01", 'password authentication failed for user "app"'),
        k.RedisCommand("GET"),
        k.RedisError("NOAUTH", "NOAUTH Authentication required."),
        k.MysqlGreeting("8.4.0"),
        k.ProtocolGaveUp(ProtocolKind.HTTP1, "HTTP header block over 16384 bytes"),
    ]
    for event in feed:
        stats.record(event, 1.0)
    assert stats.summary_lines() == [
        "TLS 1.3 SNI=api.internal ALPN offered=h2",
        "Postgres: user=app db=orders, "
        '2 errors: 28P01 password authentication failed for user "app"',
        "Redis: 1 command, 1 error (NOAUTH); top: GET",
        "MySQL 8.4.0: 0 queries",
        "not understood: 1 connection(s) (HTTP/1: HTTP header block over 16384 bytes)",
    ]
    assert stats.problems() == [
        "1 TLS ClientHello(s) got no ServerHello",  # close_notify is not a problem
        '2 × Postgres 28P01 password authentication failed for user "app"',
        "Redis NOAUTH Authentication required.",
    ]


def test_events_are_bounded_per_connection_but_all_counted() -> None:
    request = b"GET /a HTTP/1.1\r\n\r\n"
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    count = k.SNIFF_MAX_EVENTS + 50
    sniffer = run(ProtocolKind.HTTP1, [(C2S, request, 1.0), (S2C, answer, 2.0)] * count)
    assert len(sniffer.events) == k.SNIFF_MAX_EVENTS
    assert sniffer.stats.http.exchanges == count


# ---- nothing ever raises into the proxy --------------------------------------------------------

REAL_SCRIPTS = {
    ProtocolKind.HTTP1: [(C2S, GET_USERS + POST_ORDERS, 1.0), (S2C, CHUNKED + OK_LENGTH, 2.0)],
    ProtocolKind.HTTP2: H2_SCRIPT,
    ProtocolKind.POSTGRES: [(C2S, PG_CLIENT_1[8:], 1.0), (S2C, PG_AUTH_OK + PG_READY, 2.0)],
    ProtocolKind.REDIS: [
        (C2S, resp(b"GET", b"k"), 1.0),
        (S2C, b"*2\r\n$1\r\na\r\n-ERR x\r\n", 2.0),
    ],
    ProtocolKind.MYSQL: [(S2C, MY_GREETING, 1.0), (C2S, MY_CLIENT_1, 2.0)],
}


@pytest.mark.parametrize(
    "kind", [kind for kind in ProtocolKind if kind is not ProtocolKind.UNKNOWN]
)
def test_random_bytes_never_raise(kind: ProtocolKind) -> None:
    for seed in range(60):
        rng = random.Random(seed)
        sniffer = k.sniffer_for(kind, k.ProtocolStats())
        for step in range(rng.randrange(1, 6)):
            direction = rng.choice([C2S, S2C])
            feed_like_proxy(
                sniffer,
                direction,
                rng.randbytes(rng.randrange(1, 300)),
                step,
                rng.choice([1, 3, 64, None]),
            )
        sniffer.close(9.0)
        assert not sniffer.active
        sniffer.stats.summary_lines()
        sniffer.stats.problems()


@pytest.mark.parametrize("kind", sorted(REAL_SCRIPTS, key=lambda kind: kind.value))
def test_mutated_real_traffic_never_raises(kind: ProtocolKind) -> None:
    for seed in range(150):
        rng = random.Random(seed)
        sniffer = k.sniffer_for(kind, k.ProtocolStats())
        for direction, data, now in REAL_SCRIPTS[kind]:
            mutated = bytearray(data)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            feed_like_proxy(sniffer, direction, bytes(mutated), now, rng.choice([1, 5, None]))
        sniffer.close(9.0)
        bugs = [reason for reason in gave_up(sniffer) if reason.startswith("sniffer bug")]
        assert bugs == []  # garbage is given up on by design, never by accident


def test_a_sniffer_bug_becomes_a_quiet_give_up() -> None:
    class Broken(k.Http1Sniffer):
        def _receive(self, direction: Direction, data: Any, now: float) -> None:
            raise KeyError("oops")

    sniffer = Broken(k.ProtocolStats())
    sniffer.feed(C2S, b"GET / HTTP/1.1\r\n\r\n", 1.0)
    assert gave_up(sniffer) == ["sniffer bug: KeyError: 'oops'"] and not sniffer.active


def test_more_distinct_keys_than_the_cap_still_summarise() -> None:
    stats = k.ProtocolStats()
    for index in range(k.SNIFF_TOP_KEYS * 2):
        stats.record(exchange(500 + index % 4, path="/p%d" % index), float(index))
        stats.record(k.TlsAlert("fatal", "alert %d" % index, S2C), 1.0)
        stats.record(k.Http2Stream(1, "GET", "/p%d" % index, 502, False, 0.1, 0, 0, ""), 1.0)
        stats.record(k.RedisError("E%d" % index, "E%d boom" % index), 1.0)
    assert stats.http.server_errors.counts["other"] == k.SNIFF_TOP_KEYS
    assert len(stats.summary_lines()) == 3 and len(stats.problems()) > 10


def test_postgres_gssenc_accepted_and_cancel_requests_end_sniffing_quietly() -> None:
    gssenc = struct.pack(">II", 8, 80877104)
    accepted = run(ProtocolKind.POSTGRES, [(C2S, gssenc, 1.0), (S2C, b"G" + bytes(40), 1.1)])
    assert events(accepted) == [k.PostgresEncryptionAnswered("GSSENC", True)]
    cancel = struct.pack(">IIII", 16, 80877102, 1234, 5678)
    cancelled = run(ProtocolKind.POSTGRES, [(C2S, cancel, 1.0)])
    for sniffer in (accepted, cancelled):
        assert not sniffer.active and not gave_up(sniffer)


def test_http1_connect_tunnel_and_h2c_upgrade_end_http1() -> None:
    connect = b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n"
    tunnel = run(
        ProtocolKind.HTTP1,
        [(C2S, connect, 1.0), (S2C, b"HTTP/1.1 200 Connection established\r\n\r\n", 1.1)],
    )
    h2c = b"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
    upgraded = run(
        ProtocolKind.HTTP1,
        [(C2S, h2c, 1.0), (S2C, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", 1.1)],
    )
    assert events(tunnel)[1] == k.HttpUpgraded("tunnel", "db.internal:5432")
    assert events(upgraded)[1] == k.HttpUpgraded("h2c", "/")
    assert upgraded.stats.summary_lines() == [
        "HTTP: 1 request, p50 100 ms, p99 100 ms, h2c upgrade; top: GET /"
    ]


def h2_frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([frame_type, flags])
        + struct.pack(">I", stream_id)
        + payload
    )


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_http2_padded_prioritised_headers_continue_in_continuation_frames(chunk: Any) -> None:
    request_headers = H2_FLIGHTS[3][1]
    block = request_headers[9 : 9 + request_headers[2]]  # stream 1's HPACK block
    padded_priority = 0x08 | 0x20
    first = h2_frame(1, padded_priority, 1, b"\x03" + bytes(5) + block[:30] + b"pad")
    rest = h2_frame(9, 0x04, 1, block[30:])  # CONTINUATION, END_HEADERS
    data = h2_frame(0, 0x01, 1, b"\0\0\0\0\x07\n\x05world")
    sniffer = run(
        ProtocolKind.HTTP2,
        [(C2S, k.HTTP2_PREFACE + first + rest + data, 1.0), (S2C, H2_FLIGHTS[4][1], 1.25)],
        chunk,
    )
    assert events(sniffer) == [
        k.Http2Stream(1, "POST", SAY_HELLO, 200, True, 0.25, 12, 18, ""),
        k.GrpcStatus(SAY_HELLO, 0, ""),
    ]


def test_an_http_keep_alive_is_at_rest_only_between_complete_exchanges() -> None:
    sniffer = k.Http1Sniffer(k.ProtocolStats())
    up, down = k.Direction.CLIENT_TO_SERVER, k.Direction.SERVER_TO_CLIENT

    assert sniffer.at_rest  # nothing said yet
    sniffer.feed(up, b"POST /a HTTP/1.1\r\nContent-Length: 4\r\n\r\nab", 0.0)
    assert not sniffer.at_rest  # a request body is half sent
    sniffer.feed(up, b"cd", 0.1)
    assert not sniffer.at_rest  # answer pending
    sniffer.feed(down, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no", 0.2)
    assert not sniffer.at_rest  # response body half received
    sniffer.feed(down, b"k", 0.3)
    assert sniffer.at_rest


@pytest.mark.parametrize(
    "request_head, response_head",
    [
        (
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            b"GET / HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        ),
        (b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ],
)
def test_a_connection_announced_to_close_is_never_at_rest(request_head, response_head) -> None:
    sniffer = k.Http1Sniffer(k.ProtocolStats())
    sniffer.feed(k.Direction.CLIENT_TO_SERVER, request_head, 0.0)
    sniffer.feed(k.Direction.SERVER_TO_CLIENT, response_head, 0.1)

    assert not sniffer.at_rest
