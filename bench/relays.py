"""Reference relays (candidate data-path designs), each run in its own process.

    python bench/relays.py DESIGN UPSTREAM_PORT [--sockbuf BYTES]   → prints `PORT <n>`

Designs:
    streams      asyncio streams, reader.read(64 KiB) → writer.write + drain (the usual way)
    protocol     asyncio.Protocol, data_received → write, pause/resume_reading backpressure
    protocol1m   the same, with the transport's read size raised from 256 KiB to 1 MiB
    buffered256  asyncio.BufferedProtocol, one reusable 256 KiB bytearray per direction,
                 memoryview writes, reading paused while the peer's write buffer is non-empty
    buffered1m   the same with 1 MiB
    shared       BufferedProtocol reading into ONE process-wide 1 MiB buffer (renewed when a
                 transport keeps a view of it), default write limits
    sockloop     loop.sock_recv_into / loop.sock_sendall coroutines, 256 KiB buffer
    rawfd        add_reader callbacks doing recv_into (one shared 1 MiB buffer) + send directly,
                 no transports; a partial send copies the rest and waits for writable
    splice       Linux os.splice socket → pipe → socket (data never enters Python), driven by
                 add_reader/add_writer
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import signal
import socket
import sys
from typing import Callable, Dict, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import announce_port, raise_nofile

UPSTREAM_HOST = "127.0.0.1"
LISTEN_BACKLOG = 4096
STREAMS_READ = 64 << 10
SOCKLOOP_BUF = 256 << 10
SPLICE_PIPE = 1 << 20
SPLICE_CHUNK = 1 << 20
F_SETPIPE_SZ = 1031

TASKS: set = set()  # keeps connection tasks referenced until they end

SOCKBUF: Optional[int] = None  # set from --sockbuf: SO_SNDBUF/SO_RCVBUF on both relay sockets


def spawn(loop, coro) -> None:
    task = loop.create_task(coro)
    TASKS.add(task)
    task.add_done_callback(TASKS.discard)


def tune(sock: Optional[socket.socket]) -> None:
    if sock is None:
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if SOCKBUF:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKBUF)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKBUF)


# ---- (a) streams ------------------------------------------------------------------------------


async def _streams_pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(STREAMS_READ)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def _streams_client(
    upstream: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(UPSTREAM_HOST, upstream)
    except OSError:
        writer.close()
        return
    tune(writer.get_extra_info("socket"))
    tune(up_writer.get_extra_info("socket"))
    await asyncio.gather(_streams_pipe(reader, up_writer), _streams_pipe(up_reader, writer))
    writer.close()
    up_writer.close()


async def serve_streams(upstream: int) -> asyncio.AbstractServer:
    async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _streams_client(upstream, r, w)

    return await asyncio.start_server(on_client, "127.0.0.1", 0, backlog=LISTEN_BACKLOG)


# ---- (b) Protocol and (c) BufferedProtocol ----------------------------------------------------


class _Half:
    """One side of a relayed pair: reads from its transport, writes into the peer's."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.peer: Optional[_Half] = None
        self.eof = False
        self.pending: list = []  # bytes read before the peer connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        tune(transport.get_extra_info("socket"))

    def forward(self, data) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(bytes(data))
            self.transport.pause_reading()
            return
        peer.transport.write(data)

    def pause_writing(self) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.resume_reading()

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer and peer.transport and peer.transport.can_write_eof():
            peer.transport.write_eof()
        if peer and peer.eof:
            self.transport.close()
            peer.transport.close()
        return True

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.close()

    def attach(self, peer: _Half) -> None:
        self.peer, peer.peer = peer, self
        for data in self.pending:
            peer.transport.write(data)
        self.pending.clear()
        if self.eof and peer.transport.can_write_eof():
            peer.transport.write_eof()
        self.transport.resume_reading()


class CopyHalf(_Half, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self.forward(data)


class CopyHalf1M(CopyHalf):
    """Protocol relay reading up to 1 MiB per recv (asyncio's selector transport reads 256 KiB)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.max_size = 1 << 20  # type: ignore[attr-defined]


class BufferedHalf(_Half, asyncio.BufferedProtocol):
    size = 256 << 10

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray(self.size)
        self.view = memoryview(self.buf)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # high=0: the peer pauses our reading whenever a byte of ours is still queued, so the
        # transport never holds a view into a buffer we are about to overwrite.
        transport.set_write_buffer_limits(high=0)  # type: ignore[attr-defined]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.forward(self.view[:nbytes])


class BufferedHalf1M(BufferedHalf):
    size = 1 << 20


class SharedBuffer:
    """One receive buffer for every connection of the process (the loop is single-threaded and
    each read is handed to the peer's transport before the next read starts)."""

    size = 1 << 20

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        # Python 3.12+ transports queue a memoryview of a partly-sent buffer instead of copying
        # it: when that happens the old buffer is left to the transport and reads use a new one.
        self.view = memoryview(bytearray(self.size))
        self.renewals = getattr(self, "renewals", -1) + 1


SHARED = SharedBuffer()


class SharedHalf(_Half, asyncio.BufferedProtocol):
    """BufferedProtocol reading into the process-wide buffer; zero allocations while the peer
    keeps up, default write limits (pause_reading at the peer's high-water mark)."""

    def get_buffer(self, sizehint: int) -> memoryview:
        return SHARED.view

    def buffer_updated(self, nbytes: int) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.forward(SHARED.view[:nbytes])
            return
        peer.transport.write(SHARED.view[:nbytes])
        if peer.transport.get_write_buffer_size():
            SHARED.renew()


async def serve_protocol(upstream: int, cls: Callable[[], _Half]) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()

    def accepted() -> _Half:
        down = cls()
        spawn(loop, _dial(loop, upstream, cls, down))
        return down

    return await loop.create_server(accepted, "127.0.0.1", 0, backlog=LISTEN_BACKLOG)


async def _dial(loop, upstream: int, cls: Callable[[], _Half], down: _Half) -> None:
    await asyncio.sleep(0)  # let connection_made run first
    try:
        _, up = await loop.create_connection(cls, UPSTREAM_HOST, upstream)
    except OSError:
        down.transport.close()
        return
    up.attach(down)
    down.attach(up)


# ---- (d) sock_recv_into / sock_sendall --------------------------------------------------------


async def _sock_pipe(loop, src: socket.socket, dst: socket.socket) -> None:
    buf = bytearray(SOCKLOOP_BUF)
    view = memoryview(buf)
    try:
        while True:
            n = await loop.sock_recv_into(src, view)
            if not n:
                break
            await loop.sock_sendall(dst, view[:n])
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


async def _sock_client(loop, upstream: int, down: socket.socket) -> None:
    up = socket.socket()
    up.setblocking(False)
    try:
        await loop.sock_connect(up, (UPSTREAM_HOST, upstream))
    except OSError:
        down.close()
        up.close()
        return
    tune(down)
    tune(up)
    await asyncio.gather(_sock_pipe(loop, down, up), _sock_pipe(loop, up, down))
    down.close()
    up.close()


async def _accept_loop(listener: socket.socket, upstream: int, client) -> None:
    loop = asyncio.get_running_loop()
    while True:
        sock, _ = await loop.sock_accept(listener)
        sock.setblocking(False)
        spawn(loop, client(loop, upstream, sock))


# ---- (e) splice -------------------------------------------------------------------------------


class SpliceDirection:
    """Moves bytes src → pipe → dst with os.splice; Python only sees byte counts."""

    def __init__(self, loop, src: socket.socket, dst: socket.socket, done) -> None:
        self.loop, self.src, self.dst, self.done = loop, src, dst, done
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        try:
            fcntl.fcntl(self.w, F_SETPIPE_SZ, SPLICE_PIPE)
        except OSError:
            pass
        self.in_pipe = 0
        self.eof = False
        loop.add_reader(src.fileno(), self.on_readable)

    def on_readable(self) -> None:
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        try:
            n = os.splice(self.src.fileno(), self.w, SPLICE_CHUNK, flags=flags)
        except BlockingIOError:
            n = -1
        except OSError:
            return self.finish()
        if n == 0:
            self.eof = True
            self.loop.remove_reader(self.src.fileno())
        elif n > 0:
            self.in_pipe += n
        self.flush()

    def flush(self) -> None:
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        while self.in_pipe:
            try:
                n = os.splice(self.r, self.dst.fileno(), self.in_pipe, flags=flags)
            except BlockingIOError:
                self.loop.remove_reader(self.src.fileno())
                self.loop.add_writer(self.dst.fileno(), self.on_writable)
                return
            except OSError:
                return self.finish()
            self.in_pipe -= n
        if self.eof:
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.finish()

    def on_writable(self) -> None:
        self.loop.remove_writer(self.dst.fileno())
        if not self.eof:
            self.loop.add_reader(self.src.fileno(), self.on_readable)
        self.flush()

    def finish(self) -> None:
        for fd, remove in (
            (self.src, self.loop.remove_reader),
            (self.dst, self.loop.remove_writer),
        ):
            try:
                remove(fd.fileno())
            except (OSError, ValueError):
                pass
        if self.r >= 0:
            os.close(self.r)
            os.close(self.w)
            self.r = self.w = -1
            self.done()


class SplicePair:
    def __init__(self, loop, down: socket.socket, up: socket.socket) -> None:
        self.socks = (down, up)
        self.open = 2
        SpliceDirection(loop, down, up, self.one_done)
        SpliceDirection(loop, up, down, self.one_done)

    def one_done(self) -> None:
        self.open -= 1
        if self.open == 0:
            for s in self.socks:
                s.close()


async def _splice_client(loop, upstream: int, down: socket.socket) -> None:
    up = socket.socket()
    up.setblocking(False)
    try:
        await loop.sock_connect(up, (UPSTREAM_HOST, upstream))
    except OSError:
        down.close()
        up.close()
        return
    tune(down)
    tune(up)
    SplicePair(loop, down, up)


# ---- (f) raw add_reader callbacks ------------------------------------------------------------


class RawDirection:
    """recv_into a shared buffer and send at once, from a plain add_reader callback (no
    transport, no protocol, no future). A partial send copies the rest and waits for writable."""

    def __init__(self, loop, src: socket.socket, dst: socket.socket, done) -> None:
        self.loop, self.src, self.dst, self.done = loop, src, dst, done
        self.backlog = b""
        self.closed = False
        loop.add_reader(src.fileno(), self.on_readable)

    def on_readable(self) -> None:
        try:
            n = self.src.recv_into(RAW_VIEW)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self.finish()
        if n == 0:
            return self.finish(eof=True)
        try:
            sent = self.dst.send(RAW_VIEW[:n])
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return self.finish()
        if sent < n:
            self.backlog = bytes(RAW_VIEW[sent:n])
            self.loop.remove_reader(self.src.fileno())
            self.loop.add_writer(self.dst.fileno(), self.on_writable)

    def on_writable(self) -> None:
        try:
            sent = self.dst.send(self.backlog)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self.finish()
        self.backlog = self.backlog[sent:]
        if not self.backlog:
            self.loop.remove_writer(self.dst.fileno())
            self.loop.add_reader(self.src.fileno(), self.on_readable)

    def finish(self, eof: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.src.fileno())
        self.loop.remove_writer(self.dst.fileno())
        if eof:
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.done()


RAW_BUFFER = bytearray(1 << 20)
RAW_VIEW = memoryview(RAW_BUFFER)


class RawPair:
    def __init__(self, loop, down: socket.socket, up: socket.socket) -> None:
        self.socks = (down, up)
        self.open = 2
        RawDirection(loop, down, up, self.one_done)
        RawDirection(loop, up, down, self.one_done)

    def one_done(self) -> None:
        self.open -= 1
        if self.open == 0:
            for s in self.socks:
                s.close()


async def _raw_client(loop, upstream: int, down: socket.socket) -> None:
    up = socket.socket()
    up.setblocking(False)
    try:
        await loop.sock_connect(up, (UPSTREAM_HOST, upstream))
    except OSError:
        down.close()
        up.close()
        return
    tune(down)
    tune(up)
    RawPair(loop, down, up)


# ---- main -------------------------------------------------------------------------------------

PROTOCOLS: Dict[str, Callable[[], _Half]] = {
    "protocol": CopyHalf,
    "protocol1m": CopyHalf1M,
    "buffered256": BufferedHalf,
    "buffered1m": BufferedHalf1M,
    "shared": SharedHalf,
}
RAW = {"sockloop": _sock_client, "splice": _splice_client, "rawfd": _raw_client}
DESIGNS = ("streams", *PROTOCOLS, *RAW)


async def amain(design: str, upstream: int) -> None:
    if design == "streams":
        server = await serve_streams(upstream)
        announce_port(server.sockets[0].getsockname()[1])
    elif design in PROTOCOLS:
        server = await serve_protocol(upstream, PROTOCOLS[design])
        announce_port(server.sockets[0].getsockname()[1])
    else:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
        announce_port(listener.getsockname()[1])
        await _accept_loop(listener, upstream, RAW[design])
    await asyncio.Event().wait()


def main() -> None:
    global SOCKBUF
    parser = argparse.ArgumentParser()
    parser.add_argument("design", choices=DESIGNS)
    parser.add_argument("upstream", type=int)
    parser.add_argument("--sockbuf", type=int, default=0)
    args = parser.parse_args()
    SOCKBUF = args.sockbuf or None
    raise_nofile()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(amain(args.design, args.upstream))


if __name__ == "__main__":
    main()
