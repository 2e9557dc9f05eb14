"""Benchmark rows that need real kubectl and the simulated cluster (tests/simcluster.py):
end to end (plain `kubectl port-forward` vs `kubectl vibe pf` on the same pod), the idle cost
of the live view (in a pseudo-terminal), and failover under steady load.

`kubectl vibe` is dispatched by real kubectl: a temporary PATH entry `kubectl-vibe` execs this
checkout's kubectl_vibe_pf.py, so the plugin process is the one kubectl starts.
"""

from __future__ import annotations

import enum
import hashlib
import http.client
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from common import (
    PING_SIZE,
    REPO_ROOT,
    Helper,
    connect,
    content_length,
    die_with_parent,
    python_helper,
    recv_head,
)

sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

FORWARDING = re.compile(r"^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)$", re.M)
FORWARD_TIMEOUT_S = 30.0
REMOTE_PORTS = (8080, 9000, 9001)  # http, echo, sha256 (bench/sim_runner.py)
HTTP_BLOCK = bytes(range(256)) * 256  # what the sim's /bytes/N repeats
HTTP_BLOCK2 = HTTP_BLOCK + HTTP_BLOCK
SAMPLE = 64
LOAD_INTERVAL_S = 0.01
LOAD_TIMEOUT_S = 15.0
PTY_COLUMNS, PTY_LINES = "160", "30"


def find_kubectl() -> Optional[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "kubectl")
    return beside if os.access(beside, os.X_OK) else shutil.which("kubectl")


def cluster_missing() -> Optional[str]:
    if not os.path.exists(os.path.join(REPO_ROOT, "tests", "simcluster.py")):
        return "simulated cluster (tests/simcluster.py) not on this branch"
    if not find_kubectl():
        return "no kubectl on PATH"
    return None


@dataclass
class Cluster:
    """The simulated cluster process, kubectl, and the PATH that makes `kubectl vibe` work."""

    sim: Helper
    kubectl: str
    env: Dict[str, str]
    pod: str
    bindir: str
    procs: List[subprocess.Popen] = field(default_factory=list)

    @classmethod
    def start(cls) -> Cluster:
        import json

        sim = python_helper("sim_runner.py", [], "simulated cluster", stdin=True)
        lines = dict(line.split(" ", 1) for line in sim.lines if " " in line)
        kubectl = find_kubectl() or "kubectl"
        bindir = tempfile.mkdtemp(prefix="vibe-bench-bin-")
        wrapper = os.path.join(bindir, "kubectl-vibe")
        with open(wrapper, "w") as f:
            f.write(
                '#!/bin/sh\nexec "%s" "%s" "$@"\n'
                % (sys.executable, os.path.join(REPO_ROOT, "kubectl_vibe_pf.py"))
            )
        os.chmod(wrapper, 0o755)
        env = json.loads(lines["ENV"])
        env["PATH"] = os.pathsep.join([bindir, os.path.dirname(kubectl), env.get("PATH", "")])
        return cls(sim, kubectl, env, lines["POD"], bindir)

    def popen(self, args: List[str], **kw: Any) -> subprocess.Popen:
        proc = subprocess.Popen(
            [self.kubectl, *args],
            env=kw.pop("env", self.env),
            start_new_session=True,
            preexec_fn=die_with_parent,
            **kw,
        )
        self.procs.append(proc)
        return proc

    def stop_proc(self, proc: subprocess.Popen) -> None:
        """SIGINT to the group (kubectl's and the plugin's clean exit), then SIGKILL."""
        for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stray kubectl children
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        for proc in self.procs:
            self.stop_proc(proc)
        self.sim.stop()
        shutil.rmtree(self.bindir, ignore_errors=True)

    def replace_pod(self, timeout: float = 60.0) -> Tuple[float, str, float]:
        """Delete the pod; returns (replacement Ready at, its name, deleted at)."""
        self.sim.proc.stdin.write(b"delete\n")
        self.sim.proc.stdin.flush()
        line = self.sim.read_line(timeout)
        if not line or not line.startswith("READY "):
            raise TimeoutError("no replacement pod Ready within %ds (%r)" % (timeout, line))
        _, at, name, deleted = line.split()
        return float(at), name, float(deleted)


# ---- forwards ---------------------------------------------------------------------------------


def forwarded_ports(proc: subprocess.Popen, want: int) -> Dict[int, int]:
    """remote port → local port, from the `Forwarding from 127.0.0.1:L -> R` lines."""
    seen: Dict[int, int] = {}
    text = ""
    deadline = time.monotonic() + FORWARD_TIMEOUT_S
    while len(seen) < want and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            data = os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
            if not data:
                break
            text += data
            seen = {int(r): int(lo) for lo, r in FORWARDING.findall(text)}
    if len(seen) < want:
        err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
        raise RuntimeError("port-forward did not report its ports: %r %s" % (text, err[-400:]))
    return seen


def start_forward(
    cluster: Cluster, vibe: bool, target: str, ports: List[str], extra: Sequence[str] = ()
) -> Tuple[subprocess.Popen, Dict[int, int]]:
    if vibe:
        args = ["vibe", "pf", target, *ports, "--no-live", *extra]
    else:
        args = ["port-forward", target, *ports]
    proc = cluster.popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    return proc, forwarded_ports(proc, len(ports))


# ---- traffic ----------------------------------------------------------------------------------


def pattern_digest(n: int) -> str:
    digest = hashlib.sha256()
    view = memoryview(HTTP_BLOCK)
    for off in range(0, n, len(HTTP_BLOCK)):
        digest.update(view[: min(len(HTTP_BLOCK), n - off)])
    return digest.hexdigest()


def upload_sha256(port: int, n: int, expected: str) -> Tuple[float, bool]:
    """n bytes to the sha256 backend, which answers `<sha256> <length>` after our EOF."""
    t0 = time.perf_counter()
    sock = connect(port)
    try:
        view = memoryview(HTTP_BLOCK)
        sent = 0
        while sent < n:
            k = min(len(HTTP_BLOCK), n - sent)
            sock.sendall(view[:k])
            sent += k
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while not answer.endswith(b"\n"):
            data = sock.recv(4096)
            if not data:
                break
            answer += data
        elapsed = time.perf_counter() - t0
        return elapsed, answer.decode().split() == [expected, str(n)]
    finally:
        sock.close()


def download_http(port: int, n: int) -> Tuple[float, bool]:
    """GET /bytes/n; count + head/tail of every chunk checked against the sim's pattern."""
    t0 = time.perf_counter()
    sock = connect(port)
    try:
        sock.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: bench\r\n\r\n" % n)
        head, rest = recv_head(sock)
        ok = head.startswith(b"HTTP/1.1 200") and content_length(head) == n
        got, buf = 0, bytearray(1 << 20)
        view = memoryview(buf)
        chunk = memoryview(rest)
        while True:
            if len(chunk):
                ok = ok and sample_http(chunk, got)
                got += len(chunk)
            if got >= n:
                break
            k = sock.recv_into(view)
            if not k:
                break
            chunk = view[:k]
        return time.perf_counter() - t0, ok and got == n
    finally:
        sock.close()


def sample_http(chunk: memoryview, offset: int) -> bool:
    k = min(SAMPLE, len(chunk))
    start = offset % len(HTTP_BLOCK)
    tail = (offset + len(chunk) - k) % len(HTTP_BLOCK)
    return (
        chunk[:k] == HTTP_BLOCK2[start : start + k]
        and chunk[len(chunk) - k :] == HTTP_BLOCK2[tail : tail + k]
    )


def echo_ping_pong(port: int, count: int, warmup: int = 50) -> List[float]:
    sock = connect(port)
    try:
        msg = bytes(range(PING_SIZE))
        samples = []
        for i in range(count + warmup):
            t0 = time.perf_counter_ns()
            sock.sendall(msg)
            got = b""
            while len(got) < PING_SIZE:
                data = sock.recv(PING_SIZE - len(got))
                if not data:
                    raise ConnectionError("echo closed mid ping-pong")
                got += data
            if got != msg:
                raise ConnectionError("echo differs")
            if i >= warmup:
                samples.append((time.perf_counter_ns() - t0) / 1000.0)
        return samples
    finally:
        sock.close()


def http_request_latency(port: int, count: int, warmup: int = 20) -> List[float]:
    """GET /healthz on one keep-alive connection, microseconds per request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LOAD_TIMEOUT_S)
    samples = []
    try:
        for i in range(count + warmup):
            t0 = time.perf_counter_ns()
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or body != b"ok\n":
                raise ConnectionError("GET /healthz answered %d %r" % (response.status, body))
            if i >= warmup:
                samples.append((time.perf_counter_ns() - t0) / 1000.0)
        return samples
    finally:
        conn.close()


def quantiles(samples: List[float]) -> Tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# ---- rows -------------------------------------------------------------------------------------


class E2EPath(enum.Enum):
    """How the client reaches the pod."""

    KUBECTL = "kubectl port-forward"
    VIBE = "kubectl vibe pf"
    VIBE_NO_INSPECT = "kubectl vibe pf --inspect=false"
    RELAY_KUBECTL = "asyncio relay → kubectl port-forward"  # control: one extra Python hop


def measure_e2e(
    cluster: Cluster, path: E2EPath, n: int, repeats: int, pings: int, digest: str
) -> Dict[str, Any]:
    vibe = path in (E2EPath.VIBE, E2EPath.VIBE_NO_INSPECT)
    extra = ["--inspect=false"] if path is E2EPath.VIBE_NO_INSPECT else []
    proc, ports = start_forward(
        cluster, vibe, "pod/" + cluster.pod, [":%d" % p for p in REMOTE_PORTS], extra
    )
    relays: List[Helper] = []
    try:
        if path is E2EPath.RELAY_KUBECTL:
            relays = [
                python_helper("relays.py", ["protocol", str(ports[r])], "relay") for r in ports
            ]
            ports = {r: relay.port for r, relay in zip(ports, relays)}
        cpu0 = process_cpu(proc.pid)
        values, ok = e2e_bulk(ports, n, repeats, digest)
        mine, kubectl = (c1 - c0 for c1, c0 in zip(process_cpu(proc.pid), cpu0))
        moved_gib = 2 * repeats * n / (1 << 30)
        values["kubectl_cpu_s_per_gib"] = (kubectl if vibe else mine) / moved_gib
        if vibe:  # the plugin is the process kubectl exec'd; kubectl port-forward its child
            values["plugin_cpu_s_per_gib"] = mine / moved_gib
        values["p50_us"], values["p99_us"] = quantiles(echo_ping_pong(ports[9000], pings))
        requests = http_request_latency(ports[8080], pings)
        values["req_p50_us"], values["req_p99_us"] = quantiles(requests)
        values["verified"] = ok
        return values
    finally:
        for relay in relays:
            relay.stop()
        cluster.stop_proc(proc)


def e2e_bulk(
    ports: Dict[int, int], n: int, repeats: int, digest: str
) -> Tuple[Dict[str, Any], bool]:
    values: Dict[str, Any] = {}
    ok = True
    for name, fn in (
        ("up", lambda: upload_sha256(ports[9001], n, digest)),
        ("down", lambda: download_http(ports[8080], n)),
    ):
        best = float("inf")
        for _ in range(repeats):
            elapsed, good = fn()
            ok = ok and good
            best = min(best, elapsed)
        values[name + "_mbps"] = n / best / 1e6
    return values, ok


def process_cpu(pid: int) -> Tuple[float, float]:
    """(CPU seconds of the process itself, of its descendants)."""
    import psutil

    proc = psutil.Process(pid)
    kids = 0.0
    for child in proc.children(recursive=True):
        try:
            kids += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return sum(proc.cpu_times()[:2]), kids


def read_pty(master: int, seconds: float, until: Optional[bytes] = None) -> bytes:
    chunks: List[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunks.append(os.read(master, 65536))
            except OSError:
                break
            if until is not None and until in b"".join(chunks[-4:]):
                break
    return b"".join(chunks)


def measure_idle_live_view(cluster: Cluster, seconds: float) -> Dict[str, Any]:
    import pty

    import psutil

    env = dict(cluster.env, COLUMNS=PTY_COLUMNS, LINES=PTY_LINES, TERM="xterm-256color")
    master, slave = pty.openpty()
    proc = cluster.popen(
        ["vibe", "pf", "pod/" + cluster.pod, ":8080"],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    try:
        shown = read_pty(master, 15.0, until=b"ready")
        if b"ready" not in shown:
            raise RuntimeError("live view never showed `ready`: %r" % shown[-300:])
        read_pty(master, 1.0)  # let the first repaint settle
        plugin = psutil.Process(proc.pid)
        kids = plugin.children(recursive=True)
        cpu0 = sum(plugin.cpu_times()[:2])
        kid0 = sum(sum(k.cpu_times()[:2]) for k in kids)
        t0 = time.monotonic()
        idle = read_pty(master, seconds)
        wall = time.monotonic() - t0
        cpu = sum(plugin.cpu_times()[:2]) - cpu0
        kid = sum(sum(k.cpu_times()[:2]) for k in kids) - kid0
        return {
            "cpu_pct": 100 * cpu / wall,
            "bytes_per_s": len(idle) / wall,
            "kubectl_child_cpu_pct": 100 * kid / wall,
            "seconds": wall,
        }
    finally:
        cluster.stop_proc(proc)
        os.close(master)


class Outcome(enum.Enum):
    OK = "ok"
    REFUSED = "refused"
    RESET = "reset"
    HTTP_ERROR = "http error"
    OTHER_ERROR = "other error"


@dataclass(frozen=True)
class Attempt:
    start: float
    end: float
    outcome: Outcome
    pod: str = ""


def one_request(port: int) -> Tuple[Outcome, str]:
    """A new connection, GET /healthz; (outcome, the pod that answered)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LOAD_TIMEOUT_S)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        conn.close()
    except ConnectionRefusedError:
        return Outcome.REFUSED, ""
    except ConnectionResetError:
        return Outcome.RESET, ""
    except (OSError, http.client.HTTPException):
        return Outcome.OTHER_ERROR, ""
    pod = response.getheader("X-Pod") or ""
    return (Outcome.OK if response.status == 200 else Outcome.HTTP_ERROR), pod


def steady_load(port: int, stop: threading.Event, attempts: List[Attempt]) -> None:
    """A new connection and one request every LOAD_INTERVAL_S until stopped."""
    while not stop.is_set():
        start = time.time()
        outcome, pod = one_request(port)
        attempts.append(Attempt(start, time.time(), outcome, pod))
        stop.wait(LOAD_INTERVAL_S)


def measure_failover(cluster: Cluster, settle: float) -> Dict[str, Any]:
    proc, ports = start_forward(cluster, True, "deploy/bench", [":8080"])
    attempts: List[Attempt] = []
    stop = threading.Event()
    load = threading.Thread(target=steady_load, args=(ports[8080], stop, attempts), daemon=True)
    load.start()
    try:
        time.sleep(settle)
        ready_at, new_pod, deleted_at = cluster.replace_pod()
        deadline = time.time() + LOAD_TIMEOUT_S
        while time.time() < deadline and not any(a.pod == new_pod for a in attempts):
            time.sleep(0.05)
        time.sleep(settle)
    finally:
        stop.set()
        load.join(LOAD_TIMEOUT_S + 5)
        cluster.stop_proc(proc)
    served = [a.end for a in attempts if a.outcome is Outcome.OK and a.pod == new_pod]
    outcomes = {o.value: sum(a.outcome is o for a in attempts) for o in Outcome}
    return {
        "first_new_after_ready_s": (min(served) - ready_at) if served else None,
        "replacement_ready_after_delete_s": ready_at - deleted_at,
        "requests": len(attempts),
        "refused": outcomes[Outcome.REFUSED.value],
        "failed": len(attempts) - outcomes[Outcome.OK.value],
        "outcomes": outcomes,
        "served_by_new_pod": len(served),
    }
