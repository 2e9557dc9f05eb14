"""Port-forward tunnels of the simulated cluster: SPDY/3.1 over a raw upgraded connection
(legacy, ``Upgrade: SPDY/3.1``) or inside WebSocket binary messages
(``Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io``, kubectl's default since 1.31).

Standard library only; runs on CPython 3.9+.  The session plays the kubelet's side: every
local connection of kubectl arrives as an (error, data) stream pair with the same
``requestid``; the data stream is relayed to the pod's backend on 127.0.0.1, and the error
stream carries the kubelet / container-runtime error text, if any, before its FIN.

Like a kubelet the session accepts SETTINGS and WINDOW_UPDATE (and ignores them: no flow
control), echoes PINGs, takes data frames of any size up to 16 MiB - 1, refuses new streams
(RST_STREAM REFUSED_STREAM) after a graceful ``go_away()``, and stops reading the connection
while a backend lags ``QUEUE_HIGH`` bytes behind.  ``SpdyClient`` is a raw client for tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import traceback
import zlib
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

###############################################################################
# SPDY/3 header dictionary ####################################################
###############################################################################

_DICT_WORDS = (
    (
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base "
        "content-encoding content-language content-length content-location content-md5 "
        "content-range content-type date etag expect expires from host if-match "
        "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
        "server te trailer transfer-encoding upgrade user-agent vary via warning "
        "www-authenticate method get status|200 OK|version|HTTP/1.1|url|public|set-cookie|"
        "keep-alive|origin"
    )
    .replace(" ", "|")
    .replace("200|OK", "200 OK")
    .split("|")
)
_DICT_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504"
    "505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 "
    "Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 "
    "Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, "
    "Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
#: The SPDY/3 zlib preset dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1).
SPDY_DICTIONARY = (
    b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICT_WORDS) + _DICT_TAIL.encode()
)
assert len(SPDY_DICTIONARY) == 1423 and zlib.adler32(SPDY_DICTIONARY) == 3821447106

# Control frame types and flags.
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
)
FLAG_FIN = 0x01
#: RST_STREAM status codes (SPDY/3.1 §2.6.3) and the GOAWAY status OK.
REFUSED_STREAM, CANCEL = 3, 5
GOAWAY_OK = 0
MAX_DATA = 32 * 1024  # what the sim (like kubelet and kubectl) sends per data frame
MAX_FRAME = (1 << 24) - 1  # the 24-bit length field: a client may send frames up to this
#: Bytes queued for one backend before the tunnel stops reading (a kubelet's TCP backpressure).
QUEUE_HIGH = 8 << 20
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_PROTOCOL = "SPDY/3.1+portforward.k8s.io"

#: Runtime error texts, as containerd prints them (wrapped by the kubelet, see ``kubelet_error``).
MSG_RESET = (
    'failed to execute portforward in network namespace "/var/run/netns/cni-{ns}": '
    "read tcp4 127.0.0.1:{cport}->127.0.0.1:{port}: read: connection reset by peer"
)
MSG_SANDBOX_GONE = 'failed to find sandbox "{sandbox}" in store: not found'
MSG_REFUSED = (
    'failed to connect to localhost:{port} inside namespace "{sandbox}", IPv4: dial tcp4 '
    "127.0.0.1:{port}: connect: connection refused IPv6 dial tcp6 [::1]:{port}: connect: "
    "connection refused "
)


def kubelet_error(port: int, sandbox: str, message: str) -> str:
    """The text the kubelet writes on the error stream (``httpstream.go``)."""
    return "error forwarding port %d to pod %s, uid : %s" % (port, sandbox, message)


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


###############################################################################
# Transports ##################################################################
###############################################################################


class RawTransport:
    """The upgraded TCP connection itself (legacy SPDY)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def read(self) -> bytes:
        return await self.reader.read(256 * 1024)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def abort(self) -> None:
        self.writer.close()


class WebSocketTransport(RawTransport):
    """SPDY bytes inside binary WebSocket messages (client frames masked, ours not)."""

    async def read(self) -> bytes:
        while True:
            head = await self.reader.readexactly(2)
            opcode, n = head[0] & 0x0F, head[1] & 0x7F
            if n == 126:
                n = struct.unpack(">H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", await self.reader.readexactly(8))[0]
            mask = await self.reader.readexactly(4) if head[1] & 0x80 else b""
            payload = await self.reader.readexactly(n) if n else b""
            if mask and n:
                key = (mask * (n // 4 + 1))[:n]
                payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
                    n, "big"
                )
            if opcode in (0, 1, 2):
                if payload:
                    return payload
            elif opcode == 8:
                self._frame(8, payload[:2])
                return b""
            elif opcode == 9:
                self._frame(10, payload)

    def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
        self.writer.write(head + payload)

    def write(self, data: bytes) -> None:
        self._frame(2, data)

    def abort(self) -> None:
        try:
            self._frame(8, struct.pack(">H", 1011) + b"tunnel closed")
        finally:
            self.writer.close()


###############################################################################
# SPDY session ################################################################
###############################################################################


class Stream:
    __slots__ = (
        "drained",
        "fin_received",
        "fin_sent",
        "headers",
        "inbox",
        "queued",
        "reading",
        "reset",
        "sid",
    )

    def __init__(self, sid: int, headers: Dict[str, str]):
        self.sid, self.headers = sid, headers
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.fin_sent = self.fin_received = self.reset = False
        self.queued = 0  # payload bytes in ``inbox``
        self.reading = False  # a consumer takes from ``inbox`` (backpressure applies)
        self.drained = asyncio.Event()  # set while ``queued`` is low enough to read more
        self.drained.set()

    def put(self, chunk: bytes) -> None:
        self.queued += len(chunk)
        if self.queued > QUEUE_HIGH:
            self.drained.clear()
        self.inbox.put_nowait(chunk)

    async def take(self) -> Optional[bytes]:
        chunk = await self.inbox.get()
        if chunk is not None:
            self.queued -= len(chunk)
            if self.queued <= QUEUE_HIGH // 2:
                self.drained.set()
        return chunk

    def blocks_reading(self) -> bool:
        return self.reading and not self.reset and not self.drained.is_set()

    def stop_reading(self) -> None:
        self.reading = False
        self.drained.set()


class StreamPair:
    """One kubectl local connection: an error stream and a data stream."""

    def __init__(self, session: PortForwardSession, request_id: str):
        self.session, self.request_id = session, request_id
        self.error: Optional[Stream] = None
        self.data: Optional[Stream] = None
        self.port = 0
        self.backend_writer: Optional[asyncio.StreamWriter] = None
        self.done = asyncio.Event()
        self.task: Optional[asyncio.Task] = None

    def fail(self, message: str) -> None:
        """Write a runtime error on the error stream and end both streams (kubelet style)."""
        s = self.session
        if self.done.is_set():
            return
        s.send_data(self.error, kubelet_error(self.port, s.sandbox(), message).encode())
        self.finish()

    def finish(self) -> None:
        """FIN the data stream, then the error stream, and drop the backend connection."""
        if self.done.is_set():
            return
        self.done.set()
        if self.data is not None:
            self.data.stop_reading()  # nobody takes its bytes any more
        self.session.fin(self.data)
        self.session.fin(self.error)
        if self.backend_writer is not None:
            self.backend_writer.close()
        self.session.pairs.pop(self.request_id, None)
        self.session.changed()


class PortForwardSession:
    """Serves one port-forward tunnel to one pod.

    ``resolve(port)`` returns ``("ok", backend_port)``, ``("refused", None)`` or
    ``("gone", None)``; ``hooks`` is the owning cluster's tunnel bookkeeping object with
    ``pod_name``, ``sandbox``, ``next_fault()``, ``stalled`` (an ``asyncio.Event`` cleared
    while stalled) and ``changed()``.
    """

    def __init__(self, transport: RawTransport, resolve: Callable, hooks):
        self.transport = transport
        self.resolve = resolve
        self.hooks = hooks
        self.streams: Dict[int, Stream] = {}
        self.pairs: Dict[str, StreamPair] = {}
        self.deflate = zlib.compressobj(zdict=SPDY_DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)
        self.closed = asyncio.Event()
        self.last_stream = 0
        self.tasks: List[asyncio.Task] = []
        self.held_replies: List[int] = []  # SYN_REPLYs withheld while streams are stalled
        self.going_away = False  # GOAWAY sent by go_away(): no new streams

    def release_replies(self) -> None:
        for sid in self.held_replies:
            self._control(SYN_REPLY, 0, struct.pack(">I", sid) + self._headers({}))
        self.held_replies = []

    # -- helpers -------------------------------------------------------------
    def sandbox(self) -> str:
        return self.hooks.sandbox

    def changed(self) -> None:
        self.hooks.changed()

    def _control(self, ftype: int, flags: int, payload: bytes) -> None:
        if self.closed.is_set():
            return
        head = struct.pack(">HHI", 0x8003, ftype, (flags << 24) | len(payload))
        self.transport.write(head + payload)

    def _headers(self, headers: Dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for k, v in headers.items():
            raw += struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
        return self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def _parse_headers(self, block: bytes) -> Dict[str, str]:
        raw = self.inflate.decompress(block)
        (count,) = struct.unpack_from(">I", raw, 0)
        pos, out = 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", raw, pos)
            name = raw[pos + 4 : pos + 4 + n].decode().lower()
            pos += 4 + n
            (n,) = struct.unpack_from(">I", raw, pos)
            out[name] = raw[pos + 4 : pos + 4 + n].decode().split("\x00")[0]
            pos += 4 + n
        return out

    def send_data(self, stream: Optional[Stream], data: bytes, fin: bool = False) -> None:
        if stream is None or stream.fin_sent or stream.reset or self.closed.is_set():
            return
        for i in range(0, max(len(data), 1), MAX_DATA):
            chunk = data[i : i + MAX_DATA]
            last = fin and i + MAX_DATA >= len(data)
            head = struct.pack(
                ">II", stream.sid & 0x7FFFFFFF, ((FLAG_FIN if last else 0) << 24) | len(chunk)
            )
            self.transport.write(head + chunk)
        if fin:
            stream.fin_sent = True
            self._maybe_forget(stream)

    def fin(self, stream: Optional[Stream]) -> None:
        self.send_data(stream, b"", fin=True)

    def _maybe_forget(self, stream: Stream) -> None:
        if (stream.fin_sent and stream.fin_received) or stream.reset:
            self.streams.pop(stream.sid, None)

    def goaway(self) -> None:
        self._control(GOAWAY, 0, struct.pack(">II", self.last_stream, GOAWAY_OK))

    def go_away(self) -> None:
        """Graceful GOAWAY: open streams carry on to their end; later SYN_STREAMs get
        RST_STREAM REFUSED_STREAM.  The connection stays up until the client closes it."""
        if self.going_away or self.closed.is_set():
            return
        self.going_away = True
        self.goaway()
        self.changed()

    def abort(self) -> None:
        """Abrupt tunnel close: GOAWAY, then drop the connection."""
        if self.closed.is_set():
            return
        self.goaway()
        self.closed.set()
        self._wake()
        self.transport.abort()

    def drop(self) -> None:
        """The API server went away: the TCP connection just ends (no GOAWAY, no close frame)."""
        self.closed.set()
        self._wake()
        self.transport.writer.transport.abort()

    def _wake(self) -> None:
        """Release a read loop held back by a lagging backend (the session is ending)."""
        for stream in self.streams.values():
            stream.stop_reading()

    # -- main loop -----------------------------------------------------------
    async def run(self) -> None:
        buf = bytearray()
        try:
            while not self.closed.is_set():
                data = await self.transport.read()
                if not data:
                    break
                buf += data
                used = self._frames(buf)
                if used:
                    del buf[:used]  # CPython just moves the start of a bytearray: no copy
                await self.transport.drain()
                await self._backpressure()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except (struct.error, zlib.error, ValueError, IndexError):
            traceback.print_exc()  # a protocol error: drop the tunnel like a kubelet would
            self.abort()
        finally:
            self._end()

    def _end(self) -> None:
        self.closed.set()
        self._wake()
        for pair in list(self.pairs.values()):
            pair.done.set()
            if pair.backend_writer is not None:
                pair.backend_writer.close()
        self.pairs.clear()
        for t in self.tasks:
            t.cancel()
        self.transport.writer.close()
        self.changed()

    def _frames(self, buf: bytearray) -> int:
        """Handle every whole frame in ``buf``; return the bytes they took.  Frames are read
        through a memoryview, so a payload is copied once (1 MiB frames cost no re-slicing)."""
        off, size = 0, len(buf)
        with memoryview(buf) as view:
            while size - off >= 8:
                end = off + 8 + int.from_bytes(view[off + 5 : off + 8], "big")
                if end > size:
                    break
                if view[off] & 0x80:
                    self._control_frame(bytes(view[off:end]))
                else:
                    self._data_frame(view[off:end])
                off = end
        return off

    async def _backpressure(self) -> None:
        """Stop reading while a backend lags behind: like a kubelet whose frame workers block,
        so the client's TCP window closes (and every stream of the tunnel waits)."""
        for stream in list(self.streams.values()):
            while stream.blocks_reading() and not self.closed.is_set():
                await stream.drained.wait()

    def _control_frame(self, frame: bytes) -> None:
        flags = frame[4]
        (ftype,) = struct.unpack_from(">H", frame, 2)
        payload = frame[8:]
        if ftype == SYN_STREAM:
            sid = struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF
            self._syn_stream(sid, self._parse_headers(payload[10:]), flags)
        elif ftype == PING:
            self._control(PING, 0, payload[:4])
        elif ftype == RST_STREAM:
            sid = struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF
            stream = self.streams.pop(sid, None)
            if stream is not None:
                stream.reset = True
                stream.stop_reading()
                stream.inbox.put_nowait(None)
        elif ftype == GOAWAY:
            self.closed.set()
        elif ftype == HEADERS:
            self._parse_headers(payload[4:])  # keep the zlib stream in step
        # SETTINGS and WINDOW_UPDATE need no answer: like kubelet, no flow control is enforced.

    def _data_frame(self, frame: memoryview) -> None:
        sid = int.from_bytes(frame[0:4], "big") & 0x7FFFFFFF
        stream = self.streams.get(sid)
        if stream is None:
            return  # a reset, refused or unknown stream: its data is dropped
        if len(frame) > 8:
            stream.put(frame[8:].tobytes())
        if frame[4] & FLAG_FIN:
            stream.fin_received = True
            stream.inbox.put_nowait(None)
            self._maybe_forget(stream)

    def _syn_stream(self, sid: int, headers: Dict[str, str], flags: int) -> None:
        if self.going_away:  # after our GOAWAY: refused, and its data frames are dropped
            self._control(RST_STREAM, 0, struct.pack(">II", sid, REFUSED_STREAM))
            return
        self.last_stream = max(self.last_stream, sid)
        stream = Stream(sid, headers)
        self.streams[sid] = stream
        if getattr(self.hooks, "stall_streams", False) and not self.hooks.stalled.is_set():
            self.held_replies.append(sid)  # kubectl: "error creating ... stream: Timeout"
        else:
            self._control(SYN_REPLY, 0, struct.pack(">I", sid) + self._headers({}))
        if flags & FLAG_FIN:
            stream.fin_received = True
            stream.inbox.put_nowait(None)
        rid = headers.get("requestid", str(sid))
        pair = self.pairs.get(rid)
        if pair is None:
            pair = self.pairs[rid] = StreamPair(self, rid)
        if headers.get("streamtype") == "error":
            pair.error = stream
        else:
            pair.data = stream
        try:
            pair.port = int(headers.get("port", "0"))
        except ValueError:
            pair.port = 0
        if pair.error is not None and pair.data is not None and pair.task is None:
            pair.task = asyncio.ensure_future(self._serve_pair(pair))
            self.tasks.append(pair.task)
            self.tasks = [t for t in self.tasks if not t.done()]
            self.changed()

    async def _serve_pair(self, pair: StreamPair) -> None:
        try:
            await self._serve_pair_inner(pair)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a simulator bug: say so on the error stream
            traceback.print_exc()
            pair.fail("simcluster internal error: %r" % e)

    async def _serve_pair_inner(self, pair: StreamPair) -> None:
        self.hooks.streams_opened += 1
        state, backend_port = self.resolve(pair.port)
        if state == "gone":
            pair.fail(MSG_SANDBOX_GONE.format(sandbox=self.sandbox()))
            return
        if self._apply_fault(pair):
            return
        if state != "ok":
            pair.fail(MSG_REFUSED.format(port=pair.port, sandbox=self.sandbox()))
            return
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", backend_port)
        except OSError:
            pair.fail(MSG_REFUSED.format(port=pair.port, sandbox=self.sandbox()))
            return
        pair.backend_writer = writer
        up = asyncio.ensure_future(self._upstream(pair, writer))
        try:
            await self._downstream(pair, reader)
        finally:
            up.cancel()
            pair.finish()

    def _apply_fault(self, pair: StreamPair) -> bool:
        """A fault queued for the next connection(s); True if it ended this pair."""
        fault = self.hooks.next_fault()
        if fault is None:
            return False
        kind, message = fault
        if kind == "error":
            pair.fail(message or self.reset_text(pair.port))
        elif kind == "eof":
            pair.finish()
        elif kind == "close":
            self.abort()
        elif kind == "goaway":
            self.go_away()  # this pair still goes on: it was opened before the GOAWAY
            return False
        return True

    def reset_text(self, port: int) -> str:
        return MSG_RESET.format(ns=self.sandbox()[:8], cport=40000 + port % 20000, port=port)

    async def _upstream(self, pair: StreamPair, writer: asyncio.StreamWriter) -> None:
        """kubectl -> backend; a FIN on the data stream half-closes the backend socket."""
        stream = pair.data
        assert stream is not None
        stream.reading = True
        try:
            while True:
                chunk = await stream.take()
                await self.hooks.stalled.wait()
                if chunk is None:
                    if stream.reset:
                        writer.close()
                    elif writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(chunk)
                self.hooks.bytes_up += len(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            stream.stop_reading()

    async def _downstream(self, pair: StreamPair, reader: asyncio.StreamReader) -> None:
        """backend -> kubectl; backend EOF ends the pair (FIN data, FIN error)."""
        try:
            while not pair.done.is_set():
                chunk = await reader.read(MAX_DATA)
                await self.hooks.stalled.wait()
                if not chunk or pair.done.is_set():
                    return
                self.hooks.bytes_down += len(chunk)
                self.send_data(pair.data, chunk)
                await self.transport.drain()
        except ConnectionResetError:
            if not pair.done.is_set():
                pair.fail(self.reset_text(pair.port))
        except (ConnectionError, OSError):
            pass


###############################################################################
# A raw SPDY client (tests) ###################################################
###############################################################################

_UPGRADE_REQUEST = (
    "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n"
)


class UpgradeRefused(Exception):
    """The API server answered the SPDY upgrade with ``status`` (not 101) and ``body``."""

    def __init__(self, status: int, body: bytes):
        super().__init__("upgrade refused: %d %s" % (status, body[:200]))
        self.status, self.body = status, body


class Frame(NamedTuple):
    """A frame as ``SpdyClient.frame()`` reads it.  ``ftype`` is 0 for data; ``sid`` is the
    stream id (GOAWAY: last good stream id, PING: ping id); ``status`` of RST_STREAM / GOAWAY."""

    ftype: int
    sid: int
    flags: int
    data: bytes = b""
    headers: Optional[Dict[str, str]] = None
    status: int = 0


class SpdyClient:
    """A minimal raw SPDY/3.1 port-forward client, as a native client would speak it (also
    what ``kubectl proxy`` passes through), for tests and throughput checks::

        c = await SpdyClient.connect(sim.port, "default", "web-x")
        error, data = c.open_pair(7000)          # kubectl's stream pair for one connection
        c.data(data, b"hello", fin=True)          # any frame size up to 16 MiB - 1
        f = await c.frame()                       # SYN_REPLY, data, RST_STREAM, GOAWAY, PING
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.deflate = zlib.compressobj(zdict=SPDY_DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)
        self.next_sid, self.next_request = 1, 0

    @classmethod
    async def connect(cls, port: int, namespace: str, pod: str, host: str = "127.0.0.1"):
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        path = "/api/v1/namespaces/%s/pods/%s/portforward" % (namespace, pod)
        writer.write((_UPGRADE_REQUEST % path).encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(None, 2)[1])
        if status != 101:
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length)
            writer.close()
            raise UpgradeRefused(status, body)
        return cls(reader, writer)

    # -- sending ---------------------------------------------------------------
    def control(self, ftype: int, payload: bytes, flags: int = 0) -> None:
        self.writer.write(struct.pack(">HHI", 0x8003, ftype, (flags << 24) | len(payload)))
        self.writer.write(payload)

    def syn_stream(self, sid: int, headers: Dict[str, str], fin: bool = False) -> None:
        raw = struct.pack(">I", len(headers))
        for k, v in headers.items():
            raw += struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
        block = self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        flags = FLAG_FIN if fin else 0
        self.control(SYN_STREAM, struct.pack(">IIBB", sid, 0, 0, 0) + block, flags)

    def open_pair(self, port: int) -> Tuple[int, int]:
        """Open kubectl's (error, data) stream pair for one connection; the error stream is
        half-closed at once, as kubectl does.  Returns both stream ids."""
        error, data = self.next_sid, self.next_sid + 2
        self.next_sid += 4
        rid = str(self.next_request)
        self.next_request += 1
        self.syn_stream(error, {"streamtype": "error", "port": str(port), "requestid": rid})
        self.data(error, b"", fin=True)
        self.syn_stream(data, {"streamtype": "data", "port": str(port), "requestid": rid})
        return error, data

    def data(self, sid: int, payload: bytes, fin: bool = False) -> None:
        """One data frame (no splitting: frames up to MAX_FRAME bytes are valid SPDY)."""
        flags = FLAG_FIN if fin else 0
        self.writer.write(struct.pack(">II", sid & 0x7FFFFFFF, (flags << 24) | len(payload)))
        self.writer.write(payload)

    def ping(self, ping_id: int) -> None:
        self.control(PING, struct.pack(">I", ping_id))

    def settings(self, values: Dict[int, int]) -> None:
        entries = b"".join(struct.pack(">II", k & 0xFFFFFF, v) for k, v in values.items())
        self.control(SETTINGS, struct.pack(">I", len(values)) + entries)

    def window_update(self, sid: int, delta: int) -> None:
        self.control(WINDOW_UPDATE, struct.pack(">II", sid, delta))

    def rst(self, sid: int, status: int = CANCEL) -> None:
        self.control(RST_STREAM, struct.pack(">II", sid, status))

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()

    # -- receiving ---------------------------------------------------------------
    async def frame(self) -> Frame:
        """The next frame (raises asyncio.IncompleteReadError at EOF)."""
        head = await self.reader.readexactly(8)
        n = int.from_bytes(head[5:8], "big")
        payload = await self.reader.readexactly(n) if n else b""
        flags = head[4]
        if not head[0] & 0x80:
            return Frame(0, int.from_bytes(head[:4], "big") & 0x7FFFFFFF, flags, payload)
        (ftype,) = struct.unpack_from(">H", head, 2)
        sid = struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF if n >= 4 else 0
        if ftype in (SYN_STREAM, SYN_REPLY, HEADERS):
            skip = 10 if ftype == SYN_STREAM else 4
            return Frame(ftype, sid, flags, payload, self._headers(payload[skip:]))
        status = struct.unpack_from(">I", payload, 4)[0] if n >= 8 else 0
        return Frame(ftype, sid, flags, payload, None, status)

    def _headers(self, block: bytes) -> Dict[str, str]:
        raw = self.inflate.decompress(block)
        (count,) = struct.unpack_from(">I", raw, 0)
        pos, out = 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", raw, pos)
            name = raw[pos + 4 : pos + 4 + n].decode()
            pos += 4 + n
            (n,) = struct.unpack_from(">I", raw, pos)
            out[name] = raw[pos + 4 : pos + 4 + n].decode()
            pos += 4 + n
        return out

    async def read_stream(self, sid: int, timeout: float = 30) -> Tuple[bytes, List[Frame]]:
        """Data of stream ``sid`` up to its FIN, and the other frames seen meanwhile."""
        got, others = bytearray(), []
        while True:
            f = await asyncio.wait_for(self.frame(), timeout)
            if f.ftype == 0 and f.sid == sid:
                got += f.data
                if f.flags & FLAG_FIN:
                    return bytes(got), others
            else:
                others.append(f)
