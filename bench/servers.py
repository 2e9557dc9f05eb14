"""Upstream server for the benchmark (its own process): a thread per connection, big buffers.

    POST /sink   (Content-Length N)  reads N bytes, checks every chunk's head/tail against the
                                     pattern, answers {"received": N, "ok": true|false}
    GET /source?n=N                  answers N bytes of the pattern
    POST /echo   (Content-Length N)  answers the body back as it arrives (sha256 checked by
                                     the client)
    GET /ping                        101, then echoes PING_SIZE-byte messages until EOF

Run: python bench/servers.py   → prints `PORT <n>`, serves until killed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (
    ENDPOINT_CHUNK,
    PATTERN2,
    PATTERN_SIZE,
    PING_SIZE,
    announce_port,
    content_length,
    raise_nofile,
    recv_head,
    sample_ok,
    tune_endpoint,
)

THREAD_STACK = 256 << 10  # 1,000 connection threads must not cost 8 MiB of stack each


def reply(sock: socket.socket, status: str, body: bytes = b"", extra: str = "") -> None:
    head = "HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n" % (status, len(body), extra)
    sock.sendall(head.encode() + body)


def serve_sink(sock: socket.socket, n: int, rest: bytes) -> None:
    got = len(rest)
    ok = sample_ok(memoryview(rest), 0) if rest else True
    buf = bytearray(ENDPOINT_CHUNK)
    view = memoryview(buf)
    while got < n:
        k = sock.recv_into(view, min(len(buf), n - got))
        if not k:
            break
        ok = sample_ok(view[:k], got) and ok
        got += k
    reply(sock, "200 OK", json.dumps({"received": got, "ok": ok and got == n}).encode())


def serve_source(sock: socket.socket, n: int) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
    view = memoryview(PATTERN2)
    sent = 0
    while sent < n:
        k = min(PATTERN_SIZE, n - sent)
        start = sent % PATTERN_SIZE
        sock.sendall(view[start : start + k])
        sent += k


def serve_echo(sock: socket.socket, n: int, rest: bytes) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + rest)
    got = len(rest)
    buf = bytearray(256 << 10)
    view = memoryview(buf)
    while got < n:
        k = sock.recv_into(view, min(len(buf), n - got))
        if not k:
            break
        sock.sendall(view[:k])
        got += k


def serve_ping(sock: socket.socket, rest: bytes) -> None:
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ping\r\nConnection: Upgrade\r\n\r\n"
    )
    pending = bytearray(rest)
    while True:
        while len(pending) < PING_SIZE:
            data = sock.recv(65536)
            if not data:
                return
            pending += data
        whole = len(pending) - len(pending) % PING_SIZE
        sock.sendall(pending[:whole])
        del pending[:whole]


def handle(sock: socket.socket) -> None:
    try:
        tune_endpoint(sock)
        head, rest = recv_head(sock)
        target = head.split(b" ", 2)[1]
        path, _, query = target.partition(b"?")
        if path == b"/sink":
            serve_sink(sock, content_length(head), rest)
        elif path == b"/source":
            serve_source(sock, int(query.partition(b"=")[2]))
        elif path == b"/echo":
            serve_echo(sock, content_length(head), rest)
        elif path == b"/ping":
            serve_ping(sock, rest)
        else:
            reply(sock, "404 Not Found")
    except (OSError, ValueError) as exc:
        sys.stderr.write("server: %s: %s\n" % (type(exc).__name__, exc))
    finally:
        sock.close()


def main() -> None:
    raise_nofile()
    threading.stack_size(THREAD_STACK)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    announce_port(listener.getsockname()[1])
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=handle, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
