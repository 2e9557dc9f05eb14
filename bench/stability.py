"""Discovery and stability of `kubectl vibe pf` against the simulated cluster (the many-targets
issue's budgets), each beside plain kubectl measured in the same run:

- discovery: one `kubectl vibe pf -l tier=many` finding the 20 Services s1 … s20 by their label;
  seconds from process start until all 20 printed their `Forwarding from` line, then one request
  per forward answered by its own Service's pod. Beside it: 20 plain `kubectl port-forward`s
  of the same Services started at once (the footprint section's row, same run).
- stability: one `kubectl vibe pf -l fleet=yes` session of 30 forwards and, at the same time on
  the same Services, 30 plain `kubectl port-forward`s, both under the same mixed traffic
  (keep-alive request series, new-connection requests, 1 MB downloads checked byte for byte)
  for the whole window. Sampled every few seconds: RSS and PSS of every process of each side,
  the plugin's open fds and threads. Flat means: the mean RSS of the last fifth of the samples
  is within RSS_GROWTH_LIMIT of the first fifth's (after a warm-up); fds and threads counted
  with the traffic stopped, before and after, must match.
"""

from __future__ import annotations

import http.client
import itertools
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence

from cluster import HTTP_BLOCK, Cluster, tree_names
from footprint import Launcher, Subject, Tree, await_forwarding, served_by, spawn
from report import Row

DISCOVERY_SELECTOR = "tier=many"  # bench/sim_runner.py: s1 … s20
STABLE_SELECTOR = "fleet=yes"  # bench/sim_runner.py: s1 … s30
DISCOVERED = ["s%d" % i for i in range(1, 21)]
FLEET = ["s%d" % i for i in range(1, 31)]
SERVICE_PORT = 80
PLUGIN_DISCOVERY = "kubectl vibe pf -l tier=many (20 Services)"
PLUGIN_STABLE = "kubectl vibe pf -l fleet=yes (30 forwards)"
KUBECTL_STABLE = "30 × kubectl port-forward"
#: Traffic threads per side; each walks the forwards round-robin.
WORKERS = 4
KEEPALIVE_REQUESTS = 20
DOWNLOAD_BYTES = 1_000_000
#: After ready, before the first sample: tunnels to every pod opened, caches filled.
WARMUP_S = 5.0
#: Traffic stopped: in-flight connections closed, before fds and threads are counted.
SETTLE_S = 2.0
REQUEST_TIMEOUT_S = 15.0


# ---- discovery: 20 Services by one selector ---------------------------------------------------


def discovery_row(cluster: Cluster, launcher: Launcher) -> Row:
    """One `kubectl vibe pf -l tier=many`: time until 20 Forwarding lines, each forward
    answered by its own Service's pod, nothing left after the stop."""
    row = Row("discovery", PLUGIN_DISCOVERY, {"label": launcher.label})
    t0 = time.perf_counter()
    proc = spawn(cluster, launcher, ["-l", DISCOVERY_SELECTOR])
    left: List[str] = []
    try:
        ports = await_forwarding([proc], len(DISCOVERED))[0]
        row.values["ready_s"] = time.perf_counter() - t0
        answered = sorted(served_by(port) for port in ports)
        row.values.update(forwards=len(ports), processes=tree_names(proc.pid))
    except Exception as exc:
        row.error = "%s: %s" % (type(exc).__name__, exc)
        return row
    finally:
        left = cluster.stop_tree(proc)
    row.verified = answered == sorted(DISCOVERED)
    if not row.verified:
        row.values["answered"] = answered
    if left:
        row.error = "left running after exit: " + ", ".join(left)
    return row


# ---- stability: 30 forwards under mixed traffic ------------------------------------------------


@dataclass
class Tally:
    """What one side's traffic did: ok and failed requests, bytes checked."""

    ok: int = 0
    failed: int = 0
    bytes: int = 0
    first_failure: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ok: bool, size: int = 0, why: str = "") -> None:
        with self.lock:
            if ok:
                self.ok += 1
                self.bytes += size
                return
            self.failed += 1
            self.first_failure = self.first_failure or why


def keepalive_series(port: int, tally: Tally) -> None:
    """KEEPALIVE_REQUESTS requests on one connection."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        for _ in range(KEEPALIVE_REQUESTS):
            conn.request("GET", "/healthz")
            body = conn.getresponse().read()
            tally.add(body == b"ok\n", len(body), "keep-alive body %r" % body[:40])
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        tally.add(False, why="keep-alive on %d: %s" % (port, exc))


def download(port: int, tally: Tally) -> None:
    """One 1 MB download on a new connection, compared byte for byte with the pattern."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        conn.request("GET", "/bytes/%d" % DOWNLOAD_BYTES)
        body = conn.getresponse().read()
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        tally.add(False, why="download on %d: %s" % (port, exc))
        return
    expected = (HTTP_BLOCK * (DOWNLOAD_BYTES // len(HTTP_BLOCK) + 1))[:DOWNLOAD_BYTES]
    tally.add(body == expected, len(body), "download on %d: %d bytes differ" % (port, len(body)))


def traffic(ports: Sequence[int], start: int, stop: threading.Event, tally: Tally) -> None:
    """Round-robin over the forwards from `start`: a keep-alive series, a new-connection
    request, and every fifth turn a 1 MB download."""
    for turn in itertools.count():
        if stop.is_set():
            return
        port = ports[(start + turn) % len(ports)]
        keepalive_series(port, tally)
        served = served_by(port)
        tally.add(served.startswith("s"), 0, "new connection: %s" % served)
        if turn % 5 == 0:
            download(port, tally)


@dataclass
class Side:
    """One side of the stability run: its root processes, ports, samples and traffic."""

    name: str
    pids: List[int]
    ports: List[int]
    tally: Tally = field(default_factory=Tally)
    rss_mb: List[float] = field(default_factory=list)
    pss_mb: List[float] = field(default_factory=list)

    def sample(self) -> None:
        memory = Tree(self.pids).memory_mb()
        self.pss_mb.append(sum(pss for pss, _ in memory.values()))
        self.rss_mb.append(sum(rss for _, rss in memory.values()))


def handles(pid: int) -> Dict[str, int]:
    """Open fds and threads of one process (the plugin: its leaks would show here)."""
    import psutil

    proc = psutil.Process(pid)
    return {"fds": proc.num_fds(), "threads": proc.num_threads()}


def fifth_means(samples: List[float]) -> Dict[str, float]:
    """Mean of the first and the last fifth of the samples (at least one each)."""
    n = max(1, len(samples) // 5)
    return {"first_mb": statistics.mean(samples[:n]), "last_mb": statistics.mean(samples[-n:])}


def run_traffic(sides: Sequence[Side], seconds: float, every: float) -> None:
    """Both sides' workers for `seconds`, sampling memory every `every` seconds."""
    stop = threading.Event()
    workers = [
        threading.Thread(target=traffic, args=(side.ports, i * 7, stop, side.tally), daemon=True)
        for side in sides
        for i in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(every, max(0.0, deadline - time.monotonic())))
            for side in sides:
                side.sample()
    finally:
        stop.set()
        for worker in workers:
            worker.join(REQUEST_TIMEOUT_S * KEEPALIVE_REQUESTS)


def side_row(side: Side, path: str, label: str, seconds: float) -> Row:
    values: Dict[str, Any] = {
        "label": label,
        "seconds": seconds,
        "forwards": len(side.ports),
        "requests_ok": side.tally.ok,
        "requests_failed": side.tally.failed,
        "bytes_checked": side.tally.bytes,
        "samples": len(side.rss_mb),
    }
    if side.rss_mb:
        rss, pss = fifth_means(side.rss_mb), fifth_means(side.pss_mb)
        values.update(
            rss_first_mb=rss["first_mb"],
            rss_last_mb=rss["last_mb"],
            rss_max_mb=max(side.rss_mb),
            pss_first_mb=pss["first_mb"],
            pss_last_mb=pss["last_mb"],
            rss_growth_pct=100.0 * (rss["last_mb"] / rss["first_mb"] - 1.0),
        )
    row = Row("stability", path, values, verified=side.tally.failed == 0)
    if side.tally.failed:
        values["first_failure"] = side.tally.first_failure
    return row


def start_sides(cluster: Cluster, plugin: Launcher, kubectl: Launcher) -> List[Any]:
    """The plugin session and the 30 plain kubectls, started together; their processes."""
    session = spawn(cluster, plugin, ["-l", STABLE_SELECTOR])
    singles = [spawn(cluster, kubectl, ["svc/" + name, ":%d" % SERVICE_PORT]) for name in FLEET]
    return [session, *singles]


def measure_stability(
    cluster: Cluster, plugin: Launcher, kubectl: Launcher, seconds: float, every: float
) -> List[Row]:
    procs = start_sides(cluster, plugin, kubectl)
    session, singles = procs[0], procs[1:]
    try:
        plugin_ports = await_forwarding([session], len(FLEET))[0]
        kubectl_ports = [p[0] for p in await_forwarding(singles, 1)]
        sides = [
            Side(PLUGIN_STABLE, [session.pid], plugin_ports),
            Side(KUBECTL_STABLE, [p.pid for p in singles], kubectl_ports),
        ]
        run_traffic(sides, WARMUP_S, WARMUP_S)  # warm-up: not sampled below
        for side in sides:
            side.rss_mb.clear(), side.pss_mb.clear()
        time.sleep(SETTLE_S)
        before = handles(session.pid)
        run_traffic(sides, seconds, every)
        time.sleep(SETTLE_S)
        after = handles(session.pid)
        names = tree_names(session.pid)
    except Exception as exc:
        why = "%s: %s" % (type(exc).__name__, exc)
        return [Row("stability", path, error=why) for path in (PLUGIN_STABLE, KUBECTL_STABLE)]
    finally:
        left = [name for proc in procs for name in cluster.stop_tree(proc)]
    rows = [side_row(sides[0], PLUGIN_STABLE, plugin.label, seconds)]
    rows.append(side_row(sides[1], KUBECTL_STABLE, kubectl.label, seconds))
    rows[0].values.update(
        fds_before=before["fds"],
        fds_after=after["fds"],
        threads_before=before["threads"],
        threads_after=after["threads"],
        processes=names,
    )
    if left:
        rows[0].error = "left running after exit: " + ", ".join(left)
    return rows


def measure_discovery_and_stability(
    cluster: Cluster, found: List[Launcher], plugin: Launcher, seconds: float, every: float
) -> List[Row]:
    kubectl = next(launcher for launcher in found if launcher.subject is Subject.KUBECTL)
    rows = [discovery_row(cluster, plugin)]
    return rows + measure_stability(cluster, plugin, kubectl, seconds, every)


def interval_for(seconds: float) -> float:
    """About 30 samples over the window, at most one a second."""
    return max(1.0, seconds / 30.0)
