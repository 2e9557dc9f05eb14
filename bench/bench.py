#!/usr/bin/env python3
"""kubectl-vibe performance benchmark (issue 7, and the start-up and footprint budgets of the
20-Service issue): one command, loopback only, every reference measured in the same run.

    python bench/bench.py                 full run (1 GiB each way, 1,000 × 1 MiB, …) < 5 min
    python bench/bench.py --quick         small sizes, a few seconds: proves every path works
    python bench/bench.py --designs       also measure the candidate relay designs (bench/relays.py)

Prints a table and writes JSON (default bench/results/last.json). Exit status 1 when any byte
failed verification or a row errored; a row whose prerequisite is missing prints
"skipped: <why>" (with --strict, e.g. CI, a skipped row is an error too).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

from common import (  # noqa: E402
    ENDPOINT_CHUNK,
    PATTERN2,
    PATTERN_SIZE,
    PING_SIZE,
    REPO_ROOT,
    SOCAT_BUFFER,
    Helper,
    connect,
    content_length,
    cpu_awake,
    ensure_socat,
    python_helper,
    raise_nofile,
    recv_head,
    sample_ok,
    spawn_socat,
    stop_process,
)
from executable import current_executable, shebang_python  # noqa: E402
from report import GIB, MIB, Row, evaluate_targets, failed_rows, print_table  # noqa: E402

DEFAULT_JSON = os.path.join(BENCH_DIR, "results", "last.json")


@dataclass
class Sizes:
    bulk: int
    repeats: int
    pings: int
    conns: int
    conn_bytes: int
    startup_runs: int
    idle_seconds: float
    e2e_bytes: int
    e2e_pings: int
    failover_settle: float
    latency_rounds: int
    e2e_rounds: int
    stability_seconds: float

    @classmethod
    def for_mode(cls, quick: bool) -> Sizes:
        if quick:
            return cls(16 * MIB, 1, 300, 100, 256 << 10, 3, 2.0, 2 * MIB, 100, 0.5, 1, 1, 8.0)
        # latency: 20 short rounds rather than a few long ones. On this 2-core machine a
        # round's p50 is bimodal (e.g. 18 or 60 µs for the direct socket, depending on where the
        # scheduler puts the three processes); many short rounds let every path hit the fast mode.
        # stability: the many-targets issue's 10 minutes of mixed traffic on 30 forwards
        return cls(GIB, 5, 5000, 1000, MIB, 20, 10.0, 64 * MIB, 4000, 1.0, 20, 5, 600.0)


# ---- paths under test -------------------------------------------------------------------------


@dataclass
class Path:
    """Something that listens on a loopback port and forwards to the upstream server."""

    key: str
    label: str
    port: int
    helper: Optional[Helper] = None
    stop_hook: Optional[Callable[[], None]] = None

    @property
    def pid(self) -> Optional[int]:
        return self.helper.pid if self.helper else None

    def stop(self) -> str:
        if self.stop_hook:
            self.stop_hook()
        return self.helper.stop() if self.helper else ""


def start_socat(upstream: int) -> Path:
    proc, port = spawn_socat(upstream)
    path = Path("socat", "socat -b %d" % SOCAT_BUFFER, port, stop_hook=lambda: stop_process(proc))
    path.socat_pid = proc.pid  # type: ignore[attr-defined]
    return path


def plugin_missing() -> Optional[str]:
    sys.path.insert(0, REPO_ROOT)
    try:
        import kubectl_vibe_pf
    except Exception as exc:  # a broken module is a skip reason, not a crash
        return "kubectl_vibe_pf does not import: %s" % exc
    if not hasattr(kubectl_vibe_pf, "open_static_forward"):
        return "kubectl_vibe_pf.open_static_forward not on this branch yet"
    return None


def start_relay(design: str, upstream: int, sockbuf: int = 0) -> Path:
    args = [design, str(upstream)] + (["--sockbuf", str(sockbuf)] if sockbuf else [])
    helper = python_helper("relays.py", args, "relay " + design)
    key = "relay:" + design + (":sockbuf%dk" % (sockbuf >> 10) if sockbuf else "")
    label = RELAY_LABELS[design] + (" +SO_*BUF %d KiB" % (sockbuf >> 10) if sockbuf else "")
    return Path(key, label, helper.port, helper)


def start_plugin(upstream: int, inspect: bool) -> Path:
    args = [str(upstream)] + (["--inspect"] if inspect else [])
    helper = python_helper("plugin_runner.py", args, "plugin runner")
    if inspect:
        return Path("plugin:sniff", "plugin proxy, HTTP sniffing", helper.port, helper)
    return Path("plugin", "plugin proxy, inspection off", helper.port, helper)


RELAY_LABELS = {
    "streams": "asyncio streams relay 64 KiB",
    "protocol": "asyncio Protocol relay",
    "protocol1m": "asyncio Protocol relay, 1 MiB reads",
    "buffered256": "BufferedProtocol 256 KiB",
    "buffered1m": "BufferedProtocol 1 MiB",
    "shared": "BufferedProtocol, 1 shared 1 MiB buffer",
    "sockloop": "sock_recv_into/sock_sendall",
    "rawfd": "add_reader + recv_into/send, no transport",
    "splice": "os.splice via pipe",
}


# ---- process accounting -----------------------------------------------------------------------


def cpu_seconds(pid: Optional[int]) -> float:
    """CPU time of a process and its children (socat forks one per connection)."""
    if pid is None:
        return 0.0
    import psutil

    try:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:4])  # children: socat's forks
        for child in proc.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0.0


def settle_children(pid: Optional[int], timeout: float = 2.0) -> None:
    """Wait until a forking relay (socat) has reaped its per-connection children, so their CPU
    is in the parent's children times before we read them."""
    if pid is None:
        return
    import psutil

    deadline = time.monotonic() + timeout
    try:
        proc = psutil.Process(pid)
        while proc.children() and time.monotonic() < deadline:
            time.sleep(0.01)
    except psutil.Error:
        pass


def peak_rss(pid: int) -> int:
    """Peak resident set (VmHWM) of a process, in bytes; falls back to the current RSS."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return psutil.Process(pid).memory_info().rss


# ---- bulk throughput --------------------------------------------------------------------------


def upload(port: int, n: int) -> Tuple[float, bool]:
    """POST n pattern bytes to /sink; the server checks count and every chunk's head/tail."""
    t0 = time.perf_counter()
    sock = connect(port)
    try:
        sock.sendall(b"POST /sink HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % n)
        view = memoryview(PATTERN2)
        sent = 0
        while sent < n:
            k = min(PATTERN_SIZE, n - sent)
            start = sent % PATTERN_SIZE
            sock.sendall(view[start : start + k])
            sent += k
        head, rest = recv_head(sock)
        want = content_length(head)
        while len(rest) < want:
            data = sock.recv(4096)
            if not data:
                break
            rest += data
        elapsed = time.perf_counter() - t0
        verdict = json.loads(rest.decode())
        return elapsed, bool(verdict["ok"] and verdict["received"] == n)
    finally:
        sock.close()


def download(port: int, n: int) -> Tuple[float, bool]:
    """GET n pattern bytes from /source; count + every chunk's head/tail checked here."""
    t0 = time.perf_counter()
    sock = connect(port)
    try:
        sock.sendall(b"GET /source?n=%d HTTP/1.1\r\nHost: bench\r\n\r\n" % n)
        head, rest = recv_head(sock)
        ok = head.startswith(b"HTTP/1.1 200") and content_length(head) == n
        got = len(rest)
        ok = ok and (not rest or sample_ok(memoryview(rest), 0))
        buf = bytearray(ENDPOINT_CHUNK)
        view = memoryview(buf)
        while got < n:
            k = sock.recv_into(view, min(len(buf), n - got))
            if not k:
                break
            ok = sample_ok(view[:k], got) and ok
            got += k
        return time.perf_counter() - t0, ok and got == n
    finally:
        sock.close()


def bulk_round(path: Path, sizes: Sizes, row: Row) -> None:
    """One upload and one download; keeps the best time and sums the relay's CPU."""
    pid = path.pid or getattr(path, "socat_pid", None)
    for name, fn in (("up", upload), ("down", download)):
        cpu0 = cpu_seconds(pid)
        elapsed, good = fn(path.port, sizes.bulk)
        settle_children(pid)
        row.verified = bool(good and row.verified is not False)
        gbps = sizes.bulk / elapsed / 1e9
        row.values[name + "_gbps"] = max(gbps, row.values.get(name + "_gbps", 0.0))
        if pid:
            key = name + "_cpu_s_per_gib"
            per_gib = (cpu_seconds(pid) - cpu0) / (sizes.bulk / GIB)
            row.values[key] = min(per_gib, row.values.get(key, float("inf")))


# ---- latency ----------------------------------------------------------------------------------

PING_WARMUP = 200


def ping_pong(port: int, count: int) -> List[float]:
    sock = connect(port)
    try:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: bench\r\nUpgrade: ping\r\n\r\n")
        head, rest = recv_head(sock)
        if not head.startswith(b"HTTP/1.1 101") or rest:
            raise ConnectionError("no 101 for /ping: %r" % head[:60])
        msg = bytes(range(PING_SIZE))
        samples = []
        clock = time.perf_counter_ns
        for i in range(count + PING_WARMUP):
            t0 = clock()
            sock.sendall(msg)
            got = b""
            while len(got) < PING_SIZE:
                data = sock.recv(PING_SIZE - len(got))
                if not data:
                    raise ConnectionError("closed mid ping-pong")
                got += data
            t1 = clock()
            if got != msg:
                raise ConnectionError("ping-pong echo differs")
            if i >= PING_WARMUP:
                samples.append((t1 - t0) / 1000.0)
        return samples
    finally:
        sock.close()


def percentile(samples: List[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_round(path: Path, sizes: Sizes, row: Row) -> None:
    """One ping-pong series; the row keeps the series with the best p50."""
    samples = ping_pong(path.port, sizes.pings)
    p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
    if p50 < row.values.get("p50_us", float("inf")):
        row.values["p50_us"], row.values["p99_us"] = p50, p99
    row.verified = True  # every echo compared byte for byte


# ---- concurrency ------------------------------------------------------------------------------

CONNECT_PARALLEL = 100
CONN_WRITE_CHUNK = 64 << 10
CONCURRENCY_TIMEOUT_S = 180.0


def conn_payload(index: int, size: int) -> memoryview:
    """A distinct payload per connection: the pattern read from a per-connection offset."""
    start = (index * 7919) % PATTERN_SIZE
    if size > PATTERN_SIZE:
        raise ValueError("per-connection payload larger than the pattern")
    return memoryview(PATTERN2)[start : start + size]


async def echo_one(port: int, index: int, size: int, gate: asyncio.Event, opened) -> bool:
    async with opened["sem"]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    opened["n"] += 1
    if opened["n"] == opened["total"]:
        gate.set()
    await gate.wait()
    payload = conn_payload(index, size)
    want = hashlib.sha256(payload).digest()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % size)

    async def send() -> None:
        for off in range(0, size, CONN_WRITE_CHUNK):
            writer.write(payload[off : off + CONN_WRITE_CHUNK])
            await writer.drain()

    sender = asyncio.ensure_future(send())
    head = await reader.readuntil(b"\r\n\r\n")
    ok = head.startswith(b"HTTP/1.1 200") and content_length(head[:-4]) == size
    digest = hashlib.sha256()
    got = 0
    while got < size:
        data = await reader.read(1 << 20)
        if not data:
            break
        digest.update(data)
        got += len(data)
    await sender
    writer.close()
    return ok and got == size and digest.digest() == want


async def run_concurrency(port: int, conns: int, size: int) -> List[bool]:
    gate = asyncio.Event()
    opened = {"n": 0, "total": conns, "sem": asyncio.Semaphore(CONNECT_PARALLEL)}
    tasks = [echo_one(port, i, size, gate, opened) for i in range(conns)]
    return list(await asyncio.wait_for(asyncio.gather(*tasks), CONCURRENCY_TIMEOUT_S))


def measure_concurrency(path: Path, sizes: Sizes) -> Row:
    row = Row("concurrency", path.key, {"label": path.label, "conns": sizes.conns})
    row.values["bytes_each"] = sizes.conn_bytes
    t0 = time.perf_counter()
    results = asyncio.run(run_concurrency(path.port, sizes.conns, sizes.conn_bytes))
    row.values["seconds"] = time.perf_counter() - t0
    row.values["byte_exact"] = sum(results)
    if path.pid:
        row.values["peak_rss_mb"] = peak_rss(path.pid) / 1e6
    row.verified = all(results) and len(results) == sizes.conns
    return row


# ---- start-up ---------------------------------------------------------------------------------


def startup_env() -> Dict[str, str]:
    """A user's environment: bytecode caching on (CI and this machine set
    PYTHONDONTWRITEBYTECODE=1, which would recompile the 10,000-line module on every call)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def time_command(argv: List[str], runs: int) -> Tuple[float, subprocess.CompletedProcess]:
    """Best wall time of `runs` calls, after one warm-up call (fills the bytecode cache)."""
    best = float("inf")
    env = startup_env()
    done = subprocess.run(argv, capture_output=True, cwd=REPO_ROOT, check=False, env=env)
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, cwd=REPO_ROOT, check=False, env=env)
        best = min(best, time.perf_counter() - t0)
    return best, done  # type: ignore[return-value]


def startup_subject(exe: Optional[str]) -> Tuple[str, str, List[str]]:
    """(what runs, its interpreter, argv): the built executable, else the module imported
    from this checkout (cached bytecode, like the executable; running the file as a script
    would recompile 8,000 lines on every call)."""
    if exe:
        return "built executable " + os.path.relpath(exe, REPO_ROOT), shebang_python(exe), [exe]
    code = "import sys; sys.path.insert(0, %r); import kubectl_vibe_pf as m; sys.exit(m.main())"
    argv = [sys.executable, "-c", code % REPO_ROOT]
    return "fallback: python3 -c 'import kubectl_vibe_pf; main()'", sys.executable, argv


def measure_startup(sizes: Sizes, exe: Optional[str]) -> List[Row]:
    kind, python, argv = startup_subject(exe)
    base, _ = time_command([python, "-c", "pass"], sizes.startup_runs)
    rows = [Row("startup", "python3 -c pass", {"ms": base * 1000, "label": python}, True)]
    for flag in ("--version", "--help"):
        took, done = time_command([*argv, flag], sizes.startup_runs)
        out = done.stdout.decode(errors="replace")
        ok = done.returncode == 0 and ("kubectl-vibe" in out or "Usage" in out or "usage" in out)
        values = {"ms": took * 1000, "over_python_ms": (took - base) * 1000, "label": kind}
        rows.append(Row("startup", "kubectl-vibe " + flag, values, ok))
        if not ok:
            rows[-1].error = "exit %d: %s" % (done.returncode, (out + done.stderr.decode())[-200:])
    return rows


# ---- rows that need the simulated cluster and port-forward ------------------------------------


def cluster_specs() -> List[Tuple[str, str]]:
    """(section, path) of every row that needs the simulated cluster."""
    import cluster as cl
    import footprint as fp

    specs = [("e2e", path.value) for path in cl.E2EPath]
    specs += [("idle", "live view"), ("failover", "kubectl vibe pf")]
    specs += [("ready", subject.value) for subject in fp.Subject]
    import stability as st

    specs += [("footprint", fp.PLUGIN_SESSION), ("footprint", fp.KUBECTL_SESSIONS)]
    specs += [("discovery", st.PLUGIN_DISCOVERY)]
    return [*specs, ("stability", st.PLUGIN_STABLE), ("stability", st.KUBECTL_STABLE)]


def measure_cluster_rows(
    sizes: Sizes, held: Dict[str, bool], hold: bool, exe: Optional[str]
) -> List[Row]:
    """End to end, idle live view, failover, start-up to the first Forwarding line and the
    20-forward footprint: real kubectl against the simulated cluster."""
    import cluster as cl

    why = cl.cluster_missing()
    if why:
        return [Row(section, path, skipped=why) for section, path in cluster_specs()]
    try:
        sim = cl.Cluster.start()
    except Exception as exc:
        why = "simulated cluster: %s" % exc
        return [Row(section, path, error=why) for section, path in cluster_specs()]
    try:
        with cpu_awake(hold) as held["e2e"]:
            rows = e2e_rows(sim, sizes)
        idle = lambda: cl.measure_idle_live_view(sim, sizes.idle_seconds)  # noqa: E731
        rows.append(guarded("idle", "live view", idle))
        failover = lambda: cl.measure_failover(sim, sizes.failover_settle)  # noqa: E731
        rows.append(guarded("failover", "kubectl vibe pf", failover))
        rows.extend(startup_and_footprint_rows(sim, sizes, exe))
    finally:
        sim.close()
    return rows


def e2e_rows(sim: Any, sizes: Sizes) -> List[Row]:
    """Every end-to-end path; the socat one is skipped (with why) when socat is missing."""
    import cluster as cl

    socat_missing = ensure_socat()
    paths = [p for p in cl.E2EPath if not (p is cl.E2EPath.SOCAT_KUBECTL and socat_missing)]
    skipped = [] if len(paths) == len(cl.E2EPath) else [cl.E2EPath.SOCAT_KUBECTL]
    try:
        forwards = cl.measure_e2e(
            sim, sizes.e2e_bytes, sizes.repeats, sizes.e2e_pings, sizes.e2e_rounds, paths
        )
    except Exception as exc:
        why = "%s: %s" % (type(exc).__name__, exc)
        return [Row("e2e", path.value, error=why) for path in cl.E2EPath]
    rows = [Row("e2e", f.path.value, f.values, f.verified, error=f.error) for f in forwards]
    return rows + [Row("e2e", path.value, skipped=socat_missing) for path in skipped]


def startup_and_footprint_rows(sim: Any, sizes: Sizes, exe: Optional[str]) -> List[Row]:
    import footprint as fp

    try:
        return fp.measure_startup_and_footprint(
            sim, exe, sizes.startup_runs, sizes.idle_seconds, sizes.stability_seconds
        )
    except Exception as exc:
        why = "%s: %s" % (type(exc).__name__, exc)
        late = ("ready", "footprint", "discovery", "stability")
        specs = [spec for spec in cluster_specs() if spec[0] in late]
        return [Row(section, path, error=why) for section, path in specs]


def guarded(section: str, path: str, measure: Callable[[], Dict[str, Any]]) -> Row:
    """One row; its `verified` comes from the measurement (bytes checked, new pod served)."""
    try:
        values = measure()
    except Exception as exc:
        return Row(section, path, error="%s: %s" % (type(exc).__name__, exc))
    if section == "failover":
        verified = bool(values.get("served_by_new_pod"))
    else:
        verified = bool(values.pop("verified", True))
    return Row(section, path, values, verified)


# ---- the run ----------------------------------------------------------------------------------


SECTIONS = ("bulk", "latency", "concurrency")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = Sizes.for_mode(args.quick)
        self.rows: List[Row] = []
        self.load: Dict[str, float] = {}  # 1-minute load average at the end of each section
        self.cpu_awake_held: Dict[str, bool] = {}
        # --quick proves correctness only: no reason to touch the machine's idle states
        self.hold_cpus = args.cpu_awake and not args.quick
        self.server: Optional[Helper] = None

    def log(self, text: str) -> None:
        if not self.args.json_only:
            print(text, file=sys.stderr, flush=True)

    def path_starters(self, upstream: int) -> List[Tuple[str, Callable[[], Path], Optional[str]]]:
        starters: List[Tuple[str, Callable[[], Path], Optional[str]]] = [
            ("direct", lambda: Path("direct", "direct socket", upstream), None),
            ("socat", lambda: start_socat(upstream), ensure_socat()),
            ("relay:streams", lambda: start_relay("streams", upstream), None),
            ("relay:protocol", lambda: start_relay("protocol", upstream), None),
        ]
        if self.args.designs:
            for design in (
                "protocol1m",
                "buffered256",
                "buffered1m",
                "shared",
                "rawfd",
                "sockloop",
                "splice",
            ):
                starters.append(("relay:" + design, _bind(start_relay, design, upstream), None))
            for design in ("protocol", "buffered1m", "splice"):
                starters.append(
                    (
                        "relay:%s:sockbuf" % design,
                        _bind(start_relay, design, upstream, 4 * MIB),
                        None,
                    )
                )
        missing = plugin_missing()
        starters.append(("plugin", _bind(start_plugin, upstream, False), missing))
        starters.append(("plugin:sniff", _bind(start_plugin, upstream, True), missing))
        return starters

    def start_paths(self, upstream: int) -> List[Path]:
        paths = []
        for key, start, skip in self.path_starters(upstream):
            if self.args.only and not any(key.startswith(o) for o in self.args.only):
                continue
            if skip:
                self.rows.extend(Row(s, key, skipped=skip) for s in SECTIONS)
                continue
            try:
                paths.append(start())
            except Exception as exc:
                self.rows.extend(Row(s, key, error="start: %s" % exc) for s in SECTIONS)
        return paths

    def interleaved(self, section: str, paths: List[Path], measure: Callable, rounds: int) -> None:
        """Round r measures every path before round r+1 starts, so a burst of load from the
        other users of the machine hits all paths alike; each row keeps its best round."""
        rows = {p.key: Row(section, p.key, {"label": p.label}) for p in paths}
        for rnd in range(rounds):
            self.log("· %s, round %d/%d" % (section, rnd + 1, rounds))
            for path in paths:
                row = rows[path.key]
                if row.error:
                    continue
                try:
                    measure(path, self.sizes, row)
                except Exception as exc:
                    row.error = "%s: %s" % (type(exc).__name__, exc)
        self.rows.extend(rows.values())
        self.load[section] = os.getloadavg()[0]

    def concurrency(self, paths: List[Path]) -> None:
        for path in paths:
            if not self.wants_concurrency(path.key):
                continue
            self.log("· concurrency %s" % path.key)
            try:
                self.rows.append(measure_concurrency(path, self.sizes))
            except Exception as exc:
                self.rows.append(
                    Row("concurrency", path.key, error="%s: %s" % (type(exc).__name__, exc))
                )

    def run_loopback(self, upstream: int) -> None:
        paths = self.start_paths(upstream)
        try:
            self.interleaved("bulk", paths, bulk_round, self.sizes.repeats)
            with cpu_awake(self.hold_cpus) as self.cpu_awake_held["latency"]:
                self.interleaved("latency", paths, latency_round, self.sizes.latency_rounds)
            self.concurrency(paths)
        finally:
            for path in paths:
                stderr = path.stop()
                if "Traceback" in stderr:
                    self.log("  %s stderr: %s" % (path.key, stderr.strip()[-600:]))

    def wants_concurrency(self, key: str) -> bool:
        """The 1,000-connection row is about the plugin; direct and the references keep it
        honest. The 1 MiB BufferedProtocol holds 2 MiB per connection (2 GB at 1,000): its
        RSS is shown by --quick only."""
        if self.args.quick:
            return True
        return "buffered1m" not in key

    def run(self) -> Dict[str, Any]:
        raise_nofile()
        started = time.time()
        load_before = os.getloadavg()
        self.server = python_helper("servers.py", [], "upstream server")
        try:
            self.run_loopback(self.server.port)
        finally:
            self.server.stop()
        self.log("· start-up")
        # built (~2 s) when none is as new as the module, in --quick too: the start-up rows
        # and `kubectl vibe pf` dispatched by kubectl measure what users install
        exe = current_executable(build=True)
        self.rows.extend(measure_startup(self.sizes, exe))
        if not self.args.only:
            self.log(
                "· simulated cluster: end to end, idle live view, failover, time to the first "
                "Forwarding line, 20 forwards, discovery, stability"
            )
            self.rows.extend(
                measure_cluster_rows(self.sizes, self.cpu_awake_held, self.hold_cpus, exe)
            )
        return self.report(started, load_before)

    def report(self, started: float, load_before: Tuple[float, float, float]) -> Dict[str, Any]:
        return {
            "mode": "quick" if self.args.quick else "full",
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": time.time() - started,
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "sizes": self.sizes.__dict__,
            "load_after_section": self.load,
            "cpu_awake": self.cpu_awake_held,
            "verification": {
                "bulk": "byte count + first/last 64 bytes of every received chunk vs the pattern",
                "latency": "every echoed 64-byte message compared",
                "concurrency": "sha256 of every byte, per connection",
                "e2e": "uploads: sha256 by the pod; downloads: count + sampled; the plugin's "
                "processes match its engine",
                "ready": "every run: its Forwarding line for the asked port, a request answered "
                "by the web pod, no process left after exit",
                "footprint": "each of the 20 forwards answered by its own Service's pod; no "
                "process left after exit",
                "discovery": "each of the 20 discovered forwards answered by its own Service's "
                "pod; no process left after exit",
                "stability": "every request's body checked (1 MB downloads byte for byte), every "
                "new connection answered by a Service's pod; no process left after exit",
            },
            "rows": [r.__dict__ for r in self.rows],
            "targets": evaluate_targets(self.rows),
        }


def _bind(fn: Callable[..., Path], *args: Any) -> Callable[[], Path]:
    return lambda: fn(*args)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--designs", action="store_true", help="also the candidate relays")
    parser.add_argument("--json", default=DEFAULT_JSON, help="where to write the JSON")
    parser.add_argument("--only", action="append", help="run paths starting with this key")
    parser.add_argument(
        "--strict",
        action="store_true",
        default=os.environ.get("CI") == "true",
        help="a skipped row is an error (default when CI=true)",
    )
    parser.add_argument("--json-only", action="store_true", help="no table, no progress")
    parser.add_argument(
        "--no-cpu-awake",
        dest="cpu_awake",
        action="store_false",
        help="do not hold /dev/cpu_dma_latency at 0 during the latency rounds",
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    result = Bench(args).run()
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    if not args.json_only:
        print_table(result)
        print("\nJSON: %s" % args.json)
    bad = failed_rows(result, args.strict)
    for line in bad:
        print("FAILED " + line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
