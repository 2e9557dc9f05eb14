"""Real local servers that back the container ports of simulated pods.

Standard library only (CPython 3.9+).  A ``Backend`` is a *spec* (what to serve); the cluster
starts one ``BackendServer`` per pod and container port on 127.0.0.1:<ephemeral>, on its own
event loop.  Fault knobs live on the running server and are safe to call from any thread:

    srv = sim.backend("web-abc12", 8080)
    srv.slow(0.5)               # delay every response / echoed chunk by 0.5 s
    srv.return_status(503)      # HTTP backends answer 503 to everything (None restores)
    srv.reset_connections()     # RST every open connection (SO_LINGER 0)

Backends (``Backend.kind``):

* ``http``   HTTP/1.1 keep-alive.  ``GET /`` greets with the pod name; ``/bytes/N`` returns N
  deterministic bytes; ``/delay/S`` waits S seconds; ``/status/N`` answers N; ``POST /echo``
  answers ``sha256 length`` of the body; ``/healthz``.  Header ``X-Pod`` names the pod.
* ``echo``   echoes bytes; on EOF from the client it flushes and half-closes.
* ``sha256`` reads to EOF, then answers ``<hex sha256> <length>\\n`` (half-close tests).
* ``tls``    the ``http`` backend behind TLS with a self-signed cert made at run time (openssl).
* ``refuse`` nothing listens; the tunnel reports containerd's "connection refused" text.
* ``postgres``, ``redis``, ``mysql``: minimal speakers of each protocol's handshake and a few
  commands (Postgres startup/SSLRequest/simple query; Redis RESP PING/ECHO/GET/SET/INFO/QUIT;
  MySQL v10 greeting, OK, COM_PING/COM_QUERY/COM_QUIT).
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections import deque
from typing import Deque, Optional, Set

KINDS = ("http", "echo", "sha256", "tls", "refuse", "postgres", "redis", "mysql")


class Backend:
    """What a container port serves.  ``Backend("http")``, ``Backend.echo()``, ..."""

    def __init__(self, kind: str = "http", **options):
        if kind not in KINDS:
            raise ValueError("unknown backend kind %r (one of %s)" % (kind, ", ".join(KINDS)))
        self.kind, self.options = kind, options

    def __repr__(self) -> str:
        return "Backend(%r)" % self.kind

    @classmethod
    def http(cls, **options) -> Backend:
        return cls("http", **options)

    @classmethod
    def echo(cls) -> Backend:
        return cls("echo")

    @classmethod
    def sha256(cls) -> Backend:
        return cls("sha256")

    @classmethod
    def tls(cls) -> Backend:
        return cls("tls")

    @classmethod
    def refuse(cls) -> Backend:
        return cls("refuse")

    @classmethod
    def postgres(cls) -> Backend:
        return cls("postgres")

    @classmethod
    def redis(cls) -> Backend:
        return cls("redis")

    @classmethod
    def mysql(cls) -> Backend:
        return cls("mysql")


def pattern_bytes(n: int) -> bytes:
    """N deterministic bytes (what ``/bytes/N`` serves)."""
    block = bytes(range(256)) * 256
    return (block * (n // len(block) + 1))[:n]


_TLS_LOCK = threading.Lock()
_TLS_FILES: Optional[tuple] = None


def tls_files() -> tuple:
    """(certfile, keyfile) of a self-signed localhost cert, made once per process."""
    global _TLS_FILES
    with _TLS_LOCK:
        if _TLS_FILES is None:
            d = tempfile.mkdtemp(prefix="simcluster-tls-")
            atexit.register(shutil.rmtree, d, True)
            cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                    key,
                    "-out",
                    cert,
                    "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )
            _TLS_FILES = (cert, key)
        return _TLS_FILES


class BackendServer:
    """One running backend for one pod's container port (lives on the cluster's loop)."""

    def __init__(self, spec: Backend, pod: str, port: int, loop: asyncio.AbstractEventLoop):
        self.spec, self.pod, self.container_port, self.loop = spec, pod, port, loop
        self.port = 0  # the real 127.0.0.1 port; 0 for ``refuse``
        self.delay = 0.0
        self.status: Optional[int] = None
        self.connections = 0
        self.requests = 0
        self._server: Optional[asyncio.AbstractServer] = None
        self._writers: Set[asyncio.StreamWriter] = set()
        #: Access-log lines (what ``kubectl logs`` shows); the cluster rotates it on restarts.
        self.log: Deque[str] = deque(maxlen=2000)

    # -- fault knobs (any thread) ----------------------------------------------
    def slow(self, delay: float) -> None:
        self.delay = float(delay)

    def return_status(self, status: Optional[int]) -> None:
        self.status = status

    def reset_connections(self) -> None:
        def _reset() -> None:
            for w in list(self._writers):
                sock = w.get_extra_info("socket")
                if sock is not None:
                    try:
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    except OSError:
                        pass
                w.transport.abort()

        if _in_loop(self.loop):
            _reset()
        else:
            self.loop.call_soon_threadsafe(_reset)

    # -- lifecycle (loop thread) ------------------------------------------------
    async def start(self) -> None:
        if self.spec.kind == "refuse":
            return
        ssl_ctx = None
        if self.spec.kind == "tls":
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_ctx.load_cert_chain(*tls_files())
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_ctx)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        kind = "http" if self.spec.kind == "tls" else self.spec.kind
        try:
            await getattr(self, "_serve_" + kind)(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            raise
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pause(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)

    # -- echo / sha256 ----------------------------------------------------------
    async def _serve_echo(self, reader, writer) -> None:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            await self._pause()
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def _serve_sha256(self, reader, writer) -> None:
        h, n = hashlib.sha256(), 0
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        await self._pause()
        writer.write(("%s %d\n" % (h.hexdigest(), n)).encode())
        await writer.drain()

    # -- http -------------------------------------------------------------------
    async def _serve_http(self, reader, writer) -> None:
        while True:
            line = await reader.readline()
            if not line.strip():
                return
            method, target = line.decode("latin-1").split()[:2]
            headers = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            body = b""
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int((await reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        await reader.readline()  # end of (empty) trailers
                        break
                    body += (await reader.readexactly(size + 2))[:-2]
            self.requests += 1
            await self._pause()
            status, payload, ctype = await self._route(method, target, body)
            close = headers.get("connection", "").lower() == "close"
            head = (
                "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nX-Pod: %s\r\n"
                "X-Backend-Port: %d\r\n%s\r\n"
                % (
                    status,
                    _REASONS.get(status, "Status"),
                    ctype,
                    len(payload),
                    self.pod,
                    self.container_port,
                    "Connection: close\r\n" if close else "",
                )
            )
            self.log.append(
                '%s - - [%s] "%s %s HTTP/1.1" %d %d'
                % (
                    "127.0.0.1",
                    time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
                    method,
                    target,
                    status,
                    len(payload),
                )
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else payload))
            await writer.drain()
            if close:
                return

    async def _route(self, method: str, target: str, body: bytes):
        path = target.split("?")[0]
        parts = [p for p in path.split("/") if p]
        text = "text/plain; charset=utf-8"
        if self.status is not None:
            return self.status, ("injected %d from %s\n" % (self.status, self.pod)).encode(), text
        try:
            if parts[:1] == ["bytes"] and len(parts) == 2:
                return 200, pattern_bytes(int(parts[1])), "application/octet-stream"
            if parts[:1] == ["delay"] and len(parts) == 2:
                await asyncio.sleep(float(parts[1]))
                return 200, ("slept %s\n" % parts[1]).encode(), text
            if parts[:1] == ["status"] and len(parts) == 2:
                code = int(parts[1])
                return code, ("status %d\n" % code).encode(), text
        except ValueError:
            return 400, b"bad number\n", text
        if parts == ["echo"]:
            digest = hashlib.sha256(body).hexdigest()
            return 200, ("%s %d\n" % (digest, len(body))).encode(), text
        if parts == ["healthz"]:
            return 200, b"ok\n", text
        if not parts:
            return 200, ("hello from %s\n" % self.pod).encode(), text
        return 404, b"not found\n", text

    # -- redis ------------------------------------------------------------------
    async def _serve_redis(self, reader, writer) -> None:
        store = {}
        while True:
            line = await reader.readline()
            if not line:
                return
            if line[:1] == b"*":
                args = []
                for _ in range(int(line[1:])):
                    n = int((await reader.readline())[1:])
                    args.append((await reader.readexactly(n + 2))[:-2])
            else:
                args = line.split()
            if not args:
                continue
            cmd = args[0].upper()
            await self._pause()
            if cmd == b"PING":
                out = _bulk(args[1]) if len(args) > 1 else b"+PONG\r\n"
            elif cmd == b"ECHO" and len(args) == 2:
                out = _bulk(args[1])
            elif cmd == b"SET" and len(args) >= 3:
                store[args[1]] = args[2]
                out = b"+OK\r\n"
            elif cmd == b"GET" and len(args) == 2:
                out = _bulk(store[args[1]]) if args[1] in store else b"$-1\r\n"
            elif cmd == b"INFO":
                out = _bulk(b"# Server\r\nredis_version:7.2.0\r\nsim_pod:" + self.pod.encode())
            elif cmd == b"QUIT":
                writer.write(b"+OK\r\n")
                await writer.drain()
                return
            else:
                out = b"-ERR unknown command '" + cmd.lower() + b"'\r\n"
            writer.write(out)
            await writer.drain()

    # -- postgres ---------------------------------------------------------------
    async def _serve_postgres(self, reader, writer) -> None:
        while True:
            (n,) = struct.unpack(">I", await reader.readexactly(4))
            body = await reader.readexactly(n - 4)
            code = struct.unpack(">I", body[:4])[0]
            if code in (80877103, 80877104):  # SSLRequest / GSSENCRequest
                writer.write(b"N")
                await writer.drain()
                continue
            if code == 80877102:  # CancelRequest
                return
            break
        await self._pause()
        out = _pg(b"R", struct.pack(">I", 0))
        for k, v in (
            (b"server_version", b"16.0 (simcluster)"),
            (b"server_encoding", b"UTF8"),
            (b"client_encoding", b"UTF8"),
            (b"DateStyle", b"ISO, MDY"),
            (b"integer_datetimes", b"on"),
            (b"standard_conforming_strings", b"on"),
        ):
            out += _pg(b"S", k + b"\0" + v + b"\0")
        out += _pg(b"K", struct.pack(">II", os.getpid() & 0x7FFFFFFF, 12345))
        out += _pg(b"Z", b"I")
        writer.write(out)
        await writer.drain()
        while True:
            tag = await reader.readexactly(1)
            (n,) = struct.unpack(">I", await reader.readexactly(4))
            body = await reader.readexactly(n - 4)
            if tag == b"X":
                return
            if tag == b"Q":
                await self._pause()
                value = self.pod.encode()
                rowdesc = (
                    struct.pack(">H", 1)
                    + b"?column?\0"
                    + struct.pack(">IHIhih", 0, 0, 25, -1, -1, 0)
                )
                out = _pg(b"T", rowdesc)
                out += _pg(b"D", struct.pack(">HI", 1, len(value)) + value)
                out += _pg(b"C", b"SELECT 1\0") + _pg(b"Z", b"I")
            else:
                out = _pg(b"E", b"SERROR\0C0A000\0Munsupported message\0\0") + _pg(b"Z", b"I")
            del body
            writer.write(out)
            await writer.drain()

    # -- mysql ------------------------------------------------------------------
    async def _serve_mysql(self, reader, writer) -> None:
        caps = 0x000FF7DF
        greeting = (
            b"\x0a8.0.36-simcluster\0"
            + struct.pack("<I", 42)
            + b"abcdefgh\0"
            + struct.pack("<H", caps & 0xFFFF)
            + b"\x21"
            + struct.pack("<H", 2)
            + struct.pack("<H", caps >> 16)
            + b"\x15"
            + b"\0" * 10
            + b"ijklmnopqrst\0"
            + b"mysql_native_password\0"
        )
        writer.write(_mysql(0, greeting))
        await writer.drain()
        await _mysql_read(reader)  # handshake response (credentials are not checked)
        await self._pause()
        writer.write(_mysql(2, b"\x00\x00\x00\x02\x00\x00\x00"))
        await writer.drain()
        while True:
            _seq, body = await _mysql_read(reader)
            if not body or body[:1] == b"\x01":  # COM_QUIT
                return
            await self._pause()
            writer.write(_mysql(1, b"\x00\x00\x00\x02\x00\x00\x00"))
            await writer.drain()


def _bulk(v: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(v), v)


def _pg(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack(">I", len(body) + 4) + body


def _mysql(seq: int, body: bytes) -> bytes:
    return struct.pack("<I", len(body))[:3] + bytes([seq]) + body


async def _mysql_read(reader: asyncio.StreamReader):
    head = await reader.readexactly(4)
    n = int.from_bytes(head[:3], "little")
    return head[3], await reader.readexactly(n)


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
