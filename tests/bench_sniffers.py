"""Throughput of the §10 sniffers, printed, never asserted: `python tests/bench_sniffers.py`.

Each scenario feeds a sniffer the way the proxy does (64 KiB memoryviews over one reused
buffer) and prints MB/s next to a bare loop over the same chunks, so the numbers show what
inspection adds to the relay. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kubectl_vibe_pf as k

C2S = k.Direction.CLIENT_TO_SERVER
S2C = k.Direction.SERVER_TO_CLIENT
CHUNK = 64 * 1024
Stream = List[Tuple[k.Direction, bytes]]


def chunks(direction: k.Direction, data: bytes) -> Stream:
    return [(direction, data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]


def measure(name: str, kind: k.ProtocolKind, stream: Stream, unit: str, units: int) -> None:
    buffer = bytearray(CHUNK)
    views = []
    for direction, data in stream:
        views.append((direction, memoryview(buffer)[: len(data)], data))
    total = sum(len(data) for _, data in stream)

    def bare() -> None:
        for _direction, view, data in views:
            view[:] = data

    def sniffed() -> None:
        sniffer = k.sniffer_for(kind, k.ProtocolStats())
        for direction, view, data in views:
            view[:] = data
            sniffer.feed(direction, view, 1.0)
        assert k.ProtocolGaveUp not in {type(e) for e in sniffer.events}, sniffer

    base = best_of(bare)
    spent = best_of(sniffed)
    print(
        "%-34s %8.0f MB/s  (bare copy loop %6.0f MB/s)  %s"
        % (name, total / spent / 1e6, total / base / 1e6, "%.0f %s/s" % (units / spent, unit))
    )


def best_of(function: Callable[[], None], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def http1_big_body() -> None:
    size = 256 * 1024 * 1024
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
    stream = [(C2S, b"GET /big HTTP/1.1\r\n\r\n"), (S2C, head)]
    stream += [(S2C, bytes(CHUNK))] * (size // CHUNK)
    measure("HTTP/1 one 256 MiB body", k.ProtocolKind.HTTP1, stream, "bodies", 1)


def http1_small_exchanges() -> None:
    request = b"GET /api/users/42 HTTP/1.1\r\nHost: api\r\nAccept: */*\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    stream: Stream = []
    for _ in range(20_000):
        stream += [(C2S, request), (S2C, response)]
    measure("HTTP/1 20k small exchanges", k.ProtocolKind.HTTP1, stream, "exchanges", 20_000)


def http1_chunked() -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (4096, bytes(4096)) for _ in range(16 * 1024)) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    stream = [(C2S, b"GET / HTTP/1.1\r\n\r\n"), *chunks(S2C, head + body)]
    measure("HTTP/1 64 MiB in 4 KiB chunks", k.ProtocolKind.HTTP1, stream, "chunks", 16 * 1024)


def http2_data() -> None:
    frame = struct.pack(">I", 16384)[1:] + b"\x00\x00" + struct.pack(">I", 1) + bytes(16384)
    data = k.HTTP2_PREFACE + frame * (16 * 1024)
    stream = chunks(C2S, data)
    measure("HTTP/2 256 MiB of 16 KiB DATA frames", k.ProtocolKind.HTTP2, stream, "frames", 16384)


def postgres_rows() -> None:
    startup = struct.pack(">I", 4 + 4 + 9 + 1) + b"\0\x03\0\0user\0app\0\0"
    row = b"D" + struct.pack(">I", 4 + 2 + 4 + 40) + b"\0\x01" + struct.pack(">I", 40) + bytes(40)
    count = 1_000_000
    stream = [(C2S, startup), (C2S, b"Q\0\0\0\x0dselect 1\0"), *chunks(S2C, row * count)]
    measure("Postgres 1M 51-byte DataRows", k.ProtocolKind.POSTGRES, stream, "rows", count)


def redis_pipeline() -> None:
    command = b"*2\r\n$3\r\nGET\r\n$10\r\nkey:000042\r\n"
    reply = b"$20\r\n" + b"v" * 20 + b"\r\n"
    count = 100_000
    stream = [*chunks(C2S, command * count), *chunks(S2C, reply * count)]
    measure("Redis 100k pipelined GETs", k.ProtocolKind.REDIS, stream, "commands", count)


def tls_after_handshake() -> None:
    record = b"\x17\x03\x03" + struct.pack(">H", 16384) + bytes(16384)
    change_cipher_spec = b"\x14\x03\x03\x00\x01\x01"  # from here on both sides are encrypted
    stream = [(C2S, change_cipher_spec), (S2C, change_cipher_spec)]
    stream += chunks(S2C, record * 16 * 1024)
    measure("TLS 256 MiB after the handshake", k.ProtocolKind.TLS, stream, "records", 16 * 1024)


if __name__ == "__main__":
    print("Python %s" % sys.version.split()[0])
    scenarios = [http1_big_body, http1_chunked, http1_small_exchanges, http2_data]
    scenarios += [postgres_rows, redis_pipeline, tls_after_handshake]
    for scenario in scenarios:
        scenario()
