"""A small, bounded HTTP traffic generator for the README demo (standard library only).

    python3 tests/traffic.py --url http://127.0.0.1:8080 --duration 30

Sends a mix of requests that the simulated cluster's HTTP backend understands (``/``,
``/bytes/N``, ``/delay/S``, ``/status/503``, ``POST /echo``, ``/healthz``) to a *loopback*
address only (typically the local end of ``kubectl vibe pf``), at most ``--rate`` requests per
second per worker, for at most ``--duration`` seconds and ``--max-requests`` requests; then
prints a one-line summary and exits 0 (1 if every request failed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
from collections import Counter
from typing import List, Optional, Tuple
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MIX: List[Tuple[float, str, str]] = [
    (0.45, "GET", "/"),
    (0.15, "GET", "/bytes/65536"),
    (0.05, "GET", "/bytes/1048576"),
    (0.10, "GET", "/delay/0.2"),
    (0.05, "GET", "/status/503"),
    (0.15, "POST", "/echo"),
    (0.05, "GET", "/healthz"),
]


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self.bytes = 0
        self.status: Counter = Counter()

    def add(self, status: Optional[int], n: int) -> None:
        with self.lock:
            self.requests += 1
            self.bytes += n
            if status is None:
                self.errors += 1
            else:
                self.status[status] += 1


def _pick(rng: random.Random) -> Tuple[str, str]:
    x, acc = rng.random(), 0.0
    for weight, method, path in MIX:
        acc += weight
        if x < acc:
            return method, path
    return MIX[0][1], MIX[0][2]


def worker(
    host: str, port: int, stop_at: float, budget: List[int], rate: float, stats: Stats, seed: int
) -> None:
    rng = random.Random(seed)
    conn: Optional[http.client.HTTPConnection] = None
    while time.monotonic() < stop_at:
        with stats.lock:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        started = time.monotonic()
        method, path = _pick(rng)
        body = rng.randbytes(4096) if method == "POST" and hasattr(rng, "randbytes") else None
        if method == "POST" and body is None:
            body = bytes(rng.getrandbits(8) for _ in range(4096))
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            data = resp.read()
            stats.add(resp.status, len(data))
        except (OSError, http.client.HTTPException):
            stats.add(None, 0)
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.2)  # back off a little while the tunnel is down
        pause = 1.0 / rate - (time.monotonic() - started)
        if pause > 0:
            time.sleep(min(pause, max(0.0, stop_at - time.monotonic())))
    if conn is not None:
        conn.close()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="http://127.0.0.1:PORT (loopback only)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds (max 600)")
    ap.add_argument("--rate", type=float, default=5.0, help="requests per second per worker")
    ap.add_argument("--concurrency", type=int, default=2, help="workers (max 16)")
    ap.add_argument("--max-requests", type=int, default=5000)
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args(argv)
    u = urlsplit(args.url)
    if u.scheme != "http" or u.hostname not in LOOPBACK or not u.port:
        ap.error("--url must be http://<loopback>:PORT")
    duration = min(max(args.duration, 0.1), 600.0)
    rate = min(max(args.rate, 0.1), 200.0)
    stats = Stats()
    budget = [max(1, min(args.max_requests, 100000))]
    stop_at = time.monotonic() + duration
    threads = [
        threading.Thread(
            target=worker, args=(u.hostname, u.port, stop_at, budget, rate, stats, i), daemon=True
        )
        for i in range(max(1, min(args.concurrency, 16)))
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join(duration + 15)
    except KeyboardInterrupt:
        pass
    summary = {
        "requests": stats.requests,
        "errors": stats.errors,
        "bytes": stats.bytes,
        "status": {str(k): v for k, v in sorted(stats.status.items())},
    }
    if args.json:
        print(json.dumps(summary))
    else:
        codes = " ".join("%s=%d" % kv for kv in summary["status"].items())
        print(
            "traffic: %d requests, %d errors, %d bytes, status %s"
            % (stats.requests, stats.errors, stats.bytes, codes or "-")
        )
    return 1 if stats.requests and stats.errors == stats.requests else 0


if __name__ == "__main__":
    sys.exit(main())
