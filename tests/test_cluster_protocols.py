"""§10 cluster protocols, pure: HTTP/1.1 answers of kubectl proxy, the API server's errors in
kubectl's words, SPDY/3.1 frames and header blocks, the list+watch cache. No sockets."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, List, Tuple

import pytest

import kubectl_vibe_pf as vibe

from .sim_tunnel import SPDY_DICTIONARY

# -- HTTP/1.1 -------------------------------------------------------------------------------------


def feed_all(parser: vibe.HttpResponseParser, data: bytes, step: int = 0) -> List[Any]:
    """Every event from `data`, fed whole or `step` bytes at a time."""
    if not step:
        return parser.feed(data)
    events: List[Any] = []
    for offset in range(0, len(data), step):
        events.extend(parser.feed(data[offset : offset + step]))
    return events


def body_of(events: List[Any]) -> bytes:
    return b"".join(event for event in events if isinstance(event, bytes))


def test_a_request_names_localhost_as_kubectl_proxys_filter_wants() -> None:
    request = vibe.http_request("GET", "/api/v1/pods", (("Accept", "application/json"),))
    lines = request.decode().split("\r\n")
    assert lines[:2] == ["GET /api/v1/pods HTTP/1.1", "Host: localhost"]
    assert "Accept: application/json" in lines
    assert request.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("step", [0, 1, 7])
def test_a_content_length_body_is_read_exactly_whatever_the_pieces(step: int) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    raw = head + b'{"a": [12]}'
    parser = vibe.HttpResponseParser()
    events = feed_all(parser, raw + b"HTTP/1.1", step)

    head = events[0]
    assert (head.status, head.get("content-type")) == (200, "application/json")
    assert body_of(events) == b'{"a": [12]}' and events[-1] is vibe.HttpEnd
    assert parser.leftover == b"HTTP/1.1"  # the next response, untouched
    assert vibe.http_keeps_alive(head)


@pytest.mark.parametrize("step", [0, 1, 5])
def test_a_chunked_body_is_unchunked(step: int) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n"
    )
    events = feed_all(vibe.HttpResponseParser(), raw, step)
    assert body_of(events) == b"hello, world" and events[-1] is vibe.HttpEnd


def test_a_body_without_length_ends_when_the_connection_closes() -> None:
    parser = vibe.HttpResponseParser()
    events = parser.feed(b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\ndial")
    events += parser.feed(b" tcp")
    events += parser.feed(b"")
    assert body_of(events) == b"dial tcp" and events[-1] is vibe.HttpEnd
    assert not vibe.http_keeps_alive(events[0])


def test_a_101_answer_stops_at_its_head_and_keeps_the_upgraded_bytes() -> None:
    parser = vibe.HttpResponseParser()
    events = parser.feed(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\n\x80\x03\x00\x06"
    )
    assert [type(event) for event in events] == [vibe.HttpHead]
    assert parser.done and parser.leftover == b"\x80\x03\x00\x06"


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_what_is_not_http_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(vibe.HttpProtocolError):
        vibe.HttpResponseParser().feed(raw)


def test_an_endless_head_is_refused_once_over_the_bound() -> None:
    parser = vibe.HttpResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(vibe.HttpProtocolError, match="head over"):
        for _ in range(100):
            parser.feed(b"X-Junk: " + b"a" * 1000 + b"\r\n")


def test_a_connection_closed_mid_body_is_an_error() -> None:
    parser = vibe.HttpResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(vibe.HttpProtocolError):
        parser.feed(b"")


# -- the API server's answers, as kubectl words them --------------------------------------------


def status(code: int, reason: str, message: str) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    ).encode()


@pytest.mark.parametrize(
    "code, ctype, body, line",
    [
        (404, "application/json", status(404, "NotFound", 'services "web" not found'),
         'Error from server (NotFound): services "web" not found'),
        (403, "application/json", status(403, "Forbidden", 'pods is forbidden: User "u" cannot '
         'list resource "pods"'), 'Error from server (Forbidden): pods is forbidden: User "u" '
         'cannot list resource "pods"'),
        (401, "application/json", status(401, "Unauthorized", "Unauthorized"),
         "error: You must be logged in to the server (Unauthorized)"),
        (500, "text/plain; charset=utf-8",
         b"dial tcp 127.0.0.1:6443: connect: connection refused\n",
         "The connection to the server 127.0.0.1:6443 was refused - did you specify the right "
         "host or port?"),
        (500, "text/plain; charset=utf-8", b"getting credentials: exec: executable aws not found",
         "Unable to connect to the server: getting credentials: exec: executable aws not found"),
        (404, "text/html", b"<html>nope</html>",
         "Error from server (NotFound): the server could not find the requested resource"),
        (503, "application/json", status(503, "", "etcd is slow"),
         "Error from server: etcd is slow"),
    ],
)  # fmt: skip
def test_api_errors_read_as_kubectl_prints_them(code: int, ctype: str, body: bytes, line: str):
    assert vibe.api_error(code, ctype, body).kubectl_text == line


FORBIDDEN = vibe.ApiError(
    403,
    "Forbidden",
    'pods "web-1" is forbidden: User "u" cannot create resource "pods/portforward"',
)


@pytest.mark.parametrize(
    "error, minor, text",
    [
        (FORBIDDEN, 37, "error upgrading connection: unable to upgrade connection: pods \"web-1\" "
         'is forbidden: User "u" cannot create resource "pods/portforward"'),
        (FORBIDDEN, 32, 'error upgrading connection: pods "web-1" is forbidden: User "u" cannot '
         'create resource "pods/portforward"'),
        (vibe.ApiError(400, "", "Upgrade request required"), 32,
         "error upgrading connection: unable to upgrade connection: Upgrade request required"),
    ],
)  # fmt: skip
def test_a_refused_upgrade_reads_as_that_kubectl_version_says_it(error, minor, text) -> None:
    assert vibe.upgrade_error_text(error, minor) == text


def test_api_paths_and_queries() -> None:
    assert vibe.api_path("shop", "pods", "web-1", "portforward") == (
        "/api/v1/namespaces/shop/pods/web-1/portforward"
    )
    assert vibe.api_path("shop", "deployments.apps", "web") == (
        "/apis/apps/v1/namespaces/shop/deployments/web"
    )
    assert vibe.api_path("", "pods") == "/api/v1/pods"
    assert vibe.api_query(labelSelector="app=web,tier in (a,b)", fieldSelector="", limit=500) == (
        "?labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29&limit=500"
    )
    assert vibe.api_query(fieldSelector=None) == ""


# -- SPDY/3.1 ----------------------------------------------------------------------------------


def test_the_spdy_dictionary_is_the_draft_specs() -> None:
    dictionary = vibe.spdy_dictionary()
    assert (len(dictionary), zlib.adler32(dictionary)) == vibe.SPDY_DICTIONARY_CHECK
    assert dictionary == SPDY_DICTIONARY  # the simulated kubelet's own copy agrees


class Peer:
    """The server side of SPDY for the codec's tests: its own zlib streams, raw frames."""

    def __init__(self) -> None:
        self.deflate = zlib.compressobj(zdict=SPDY_DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)

    def headers(self, pairs: List[Tuple[str, str]]) -> bytes:
        raw = struct.pack(">I", len(pairs))
        for name, value in pairs:
            raw += struct.pack(">I", len(name)) + name.encode() + struct.pack(">I", len(value))
            raw += value.encode()
        return self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def control(self, kind: int, payload: bytes, flags: int = 0) -> bytes:
        return struct.pack(">HHI", 0x8003, kind, (flags << 24) | len(payload)) + payload

    def syn_reply(self, stream: int) -> bytes:
        return self.control(vibe.SPDY_SYN_REPLY, struct.pack(">I", stream) + self.headers([]))

    def data(self, stream: int, payload: bytes, fin: bool = False) -> bytes:
        return struct.pack(">II", stream, ((1 if fin else 0) << 24) | len(payload)) + payload


class Received:
    """What a SpdyParser delivered: data pieces joined per stream, FINs, control frames."""

    def __init__(self) -> None:
        self.data: dict = {}
        self.fins: List[int] = []
        self.controls: List[vibe.SpdyControl] = []
        self.pieces = 0

    def on_data(self, stream: int, view: memoryview, fin: bool) -> None:
        self.data[stream] = self.data.get(stream, b"") + bytes(view)
        self.pieces += 1
        if fin:
            self.fins.append(stream)

    def parser(self, size: int = vibe.SPDY_READ_BUFFER_BYTES) -> vibe.SpdyParser:
        return vibe.SpdyParser(self.on_data, self.controls.append, size)


def conversation(peer: Peer) -> bytes:
    big = bytes(range(256)) * 1000  # 256,000 bytes: one frame bigger than a small buffer
    return b"".join(
        [
            peer.syn_reply(1),
            peer.syn_reply(3),
            peer.data(3, b"HTTP/1.1 200 OK\r\n"),
            peer.control(vibe.SPDY_PING, struct.pack(">I", 2)),
            peer.data(3, big),
            peer.data(1, b"", fin=True),
            peer.data(3, b"", fin=True),
            peer.control(vibe.SPDY_RST_STREAM, struct.pack(">II", 5, vibe.SPDY_CANCEL)),
            peer.control(vibe.SPDY_SETTINGS, struct.pack(">III", 1, 4, 1000)),
            peer.control(vibe.SPDY_WINDOW_UPDATE, struct.pack(">II", 3, 65536)),
            peer.control(vibe.SPDY_GOAWAY, struct.pack(">II", 7, 0)),
        ]
    )


@pytest.mark.parametrize("step, size", [(0, 256 * 1024), (1, 64), (1000, 4096), (65536, 512)])
def test_the_parser_reads_a_whole_conversation_in_any_pieces(step: int, size: int) -> None:
    peer, received = Peer(), Received()
    raw = conversation(peer)
    parser = received.parser(size)

    if step:
        for offset in range(0, len(raw), step):
            parser.feed(raw[offset : offset + step])
    else:
        parser.feed(raw)

    assert received.data[3] == b"HTTP/1.1 200 OK\r\n" + bytes(range(256)) * 1000
    assert received.data[1] == b"" and received.fins == [1, 3]
    kinds = [(c.kind, c.stream, c.value) for c in received.controls]
    assert kinds == [
        (vibe.SPDY_SYN_REPLY, 1, 0),
        (vibe.SPDY_SYN_REPLY, 3, 0),
        (vibe.SPDY_PING, 0, 2),
        (vibe.SPDY_RST_STREAM, 5, vibe.SPDY_CANCEL),
        (vibe.SPDY_SETTINGS, 0, 0),
        (vibe.SPDY_WINDOW_UPDATE, 3, 65536),
        (vibe.SPDY_GOAWAY, 7, 0),
    ]


def test_data_is_handed_on_as_it_arrives_not_when_a_frame_is_complete() -> None:
    peer, received = Peer(), Received()
    parser = received.parser()
    frame = peer.data(3, b"x" * 1000)

    parser.feed(frame[:508])  # header + 500 bytes of payload

    assert received.data == {3: b"x" * 500} and received.fins == []
    parser.feed(frame[508:])
    assert received.data == {3: b"x" * 1000}


def test_a_consumer_that_keeps_a_view_gets_a_stable_buffer() -> None:
    """handed_over(): a transport's partial write kept the view; the parser must not reuse it."""
    peer = Peer()
    kept: List[memoryview] = []
    parser: vibe.SpdyParser

    def keep(stream: int, view: memoryview, fin: bool) -> None:
        kept.append(view)
        parser.handed_over()

    parser = vibe.SpdyParser(keep, lambda control: None, 64)
    parser.feed(b"".join(peer.data(1, bytes([n]) * 40) for n in range(10)))

    assert b"".join(bytes(view) for view in kept) == b"".join(bytes([n]) * 40 for n in range(10))


def test_headers_of_both_sides_round_trip_through_one_zlib_stream_each() -> None:
    writer = vibe.SpdyWriter()
    inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)
    for request in range(3):  # later blocks depend on the earlier ones: one stream
        for kind in ("error", "data"):
            headers = vibe.portforward_stream_headers(kind, 8080, request)
            frame = writer.syn_stream(1 + 2 * request, headers, fin=kind == "error")
            flags_length = struct.unpack(">I", frame[4:8])[0]
            assert frame[:4] == b"\x80\x03\x00\x01"
            assert flags_length >> 24 == (vibe.SPDY_FLAG_FIN if kind == "error" else 0)
            block = inflate.decompress(frame[18:])
            assert vibe.parse_spdy_header_block(block) == (
                ("streamtype", kind), ("port", "8080"), ("requestid", str(request)),
            )  # fmt: skip


def test_syn_replies_with_headers_are_decoded_by_the_parser() -> None:
    peer, received = Peer(), Received()
    payload = struct.pack(">I", 9) + peer.headers([("x-thing", "a\x00b")])
    received.parser().feed(peer.control(vibe.SPDY_SYN_REPLY, payload))
    assert received.controls[0].headers == (("x-thing", "a"),)  # http.Header.Get: the first


def test_control_frames_of_the_client() -> None:
    writer = vibe.SpdyWriter()
    assert writer.ping(3) == b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x03"
    assert writer.rst_stream(5, vibe.SPDY_CANCEL) == (
        b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x05\x00\x00\x00\x05"
    )
    assert writer.goaway(0) == b"\x80\x03\x00\x07\x00\x00\x00\x08" + b"\x00" * 8
    assert vibe.SpdyWriter.data_head(7, 0, fin=True) == b"\x00\x00\x00\x07\x01\x00\x00\x00"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01",  # SPDY/2
        b"\x80\x03\x00\x02\x00\x00\x00\x08\x00\x00\x00\x01garbage!",  # not a zlib block
        b"\x80\x03\x00\x03\x00\x00\x00\x02\x00\x00",  # RST_STREAM too short
    ],
)
def test_broken_frames_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(vibe.SpdyProtocolError):
        Received().parser().feed(raw)


def test_a_control_frame_over_the_bound_is_refused_before_it_is_buffered() -> None:
    huge = struct.pack(">HHI", 0x8003, vibe.SPDY_SETTINGS, vibe.SPDY_MAX_CONTROL_BYTES + 1)
    with pytest.raises(vibe.SpdyProtocolError, match="control frame"):
        Received().parser().feed(huge)


@pytest.mark.parametrize(
    "text, cause",
    [
        ('error forwarding port 8080 to pod 4f2a, uid : failed to find sandbox "4f2a" in store: '
         "not found", vibe.ErrorCause.POD_GONE),
        ("error forwarding port 8080 to pod 4f2a, uid : failed to connect to localhost:8080 "
         'inside namespace "4f2a", IPv4: dial tcp4 127.0.0.1:8080: connect: connection refused ',
         vibe.ErrorCause.NOT_LISTENING),
        ("error forwarding port 80 to pod 4f2a, uid : failed to execute portforward in network "
         'namespace "/var/run/netns/cni-1": read tcp4 127.0.0.1:1->127.0.0.1:80: read: connection '
         "reset by peer", vibe.ErrorCause.PEER_RESET),
    ],
)  # fmt: skip
def test_the_error_streams_texts_are_classified(text: str, cause: vibe.ErrorCause) -> None:
    assert vibe.classify_error(text) is cause


# -- the list+watch cache ---------------------------------------------------------------------


def pod(name: str, version: str, namespace: str = "ns") -> dict:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": version}}


def test_watch_events_update_the_cache_and_bookmarks_only_move_the_version() -> None:
    cache = vibe.ObjectCache()
    assert cache.replace([pod("a", "1")], "10") == [("ADDED", pod("a", "1"))]
    assert cache.apply("MODIFIED", pod("a", "11")) == [("MODIFIED", pod("a", "11"))]
    assert cache.apply("BOOKMARK", {"metadata": {"resourceVersion": "15"}}) == []
    assert cache.version == "15"
    assert cache.apply("DELETED", pod("a", "16")) == [("DELETED", pod("a", "16"))]
    assert cache.objects == {} and cache.version == "16"


def test_a_relist_after_410_gone_reports_only_what_changed() -> None:
    cache = vibe.ObjectCache()
    cache.replace([pod("a", "1"), pod("b", "2"), pod("c", "3")], "3")

    changes = cache.replace([pod("a", "1"), pod("b", "9"), pod("d", "8")], "9")

    assert changes == [("MODIFIED", pod("b", "9")), ("ADDED", pod("d", "8")),
                       ("DELETED", pod("c", "3"))]  # fmt: skip
    assert sorted(cache.objects) == ["ns/a", "ns/b", "ns/d"] and cache.version == "9"


def test_a_watch_error_event_is_410_expired_or_an_api_error() -> None:
    cache = vibe.ObjectCache()
    expired = {"type": "ERROR", "object": json.loads(status(410, "Expired", "too old"))}
    with pytest.raises(vibe.WatchExpired):
        vibe.watch_event_changes(cache, expired)
    forbidden = {"type": "ERROR", "object": json.loads(status(403, "Forbidden", "no"))}
    with pytest.raises(vibe.ApiRequestError) as caught:
        vibe.watch_event_changes(cache, forbidden)
    assert caught.value.render() == "Error from server (Forbidden): no"
    assert vibe.watch_event_changes(cache, {"type": "ADDED", "object": pod("x", "1")}) == [
        ("ADDED", pod("x", "1"))
    ]


# -- the command line: several targets ----------------------------------------------------------


@pytest.mark.parametrize(
    "args, groups",
    [
        (["svc/web", "8080:80"], [("svc/web", ["8080:80"])]),
        (["mypod", "5000", "http"], [("mypod", ["5000", "http"])]),
        (["svc/web", "8080:80", "svc/db", "5432", "deploy/cache", ":6379"],
         [("svc/web", ["8080:80"]), ("svc/db", ["5432"]), ("deploy/cache", [":6379"])]),
    ],
)  # fmt: skip
def test_each_target_takes_the_ports_that_follow_it(args: List[str], groups) -> None:
    assert vibe.split_targets(args) == groups


def test_a_target_without_ports_is_named_in_the_error() -> None:
    with pytest.raises(vibe.UsageError) as caught:
        vibe.parse_targets(["svc/web", "8080:80", "svc/db"])
    assert caught.value.message == "svc/db: at least 1 PORT is required for port-forward"
