"""Benchmark rows that need real kubectl and the simulated cluster (tests/simcluster.py):
end to end (plain `kubectl port-forward`, socat or an asyncio relay in front of it, and
`kubectl vibe pf` with its native engine and with `--engine kubectl`, all on the same pod,
beside a direct connection to the pod's ports), the idle cost of the live view (in a
pseudo-terminal), and failover under steady load.

`kubectl vibe` is dispatched by real kubectl: a temporary PATH entry `kubectl-vibe` execs this
checkout's kubectl_vibe_pf.py, so the plugin process is the one kubectl starts. Which processes
the plugin ran while measured is recorded per row, and checked against its engine: the native
engine has one `kubectl proxy` child and no `kubectl port-forward`.
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
    spawn_socat,
    stop_process,
)

sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

FORWARDING = re.compile(r"^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)$", re.M)
FORWARD_TIMEOUT_S = 30.0
REMOTE_PORTS = (8080, 9000, 9001)  # http, echo, sha256 (bench/sim_runner.py)
HTTP_BLOCK = bytes(range(256)) * 256  # what the sim's /bytes/N repeats
HTTP_BLOCK2 = HTTP_BLOCK + HTTP_BLOCK
SAMPLE = 64
LEFT_BEHIND_S = 5.0  # a child still running this long after its plugin exited was left behind
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
    backends: Dict[int, int]  # the pod's container port → the loopback port its backend uses
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
        backends = {int(k): v for k, v in json.loads(lines["BACKENDS"]).items()}
        return cls(sim, kubectl, env, lines["POD"], bindir, backends)

    def popen(self, args: List[str], **kw: Any) -> subprocess.Popen:
        return self.spawn([self.kubectl, *args], **kw)

    def spawn(self, argv: List[str], **kw: Any) -> subprocess.Popen:
        """Any command in its own session, stopped by close() at the latest."""
        proc = subprocess.Popen(
            argv,
            env=kw.pop("env", self.env),
            start_new_session=True,
            preexec_fn=die_with_parent,
            **kw,
        )
        self.procs.append(proc)
        return proc

    def stop_proc(self, proc: subprocess.Popen) -> None:
        """SIGINT to the group (kubectl's and the plugin's clean exit), then SIGKILL."""
        if proc in self.procs:
            self.procs.remove(proc)
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

    def stop_tree(self, proc: subprocess.Popen) -> List[str]:
        """stop_proc, then wait for every descendant it had (the plugin's children live in
        their own process group, which the plugin itself must end). Returns the ones still
        running after LEFT_BEHIND_S, which are then killed by pid."""
        import psutil

        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        self.stop_proc(proc)
        _, alive = psutil.wait_procs(descendants, timeout=LEFT_BEHIND_S)
        left = [describe_process(p) for p in alive]
        for straggler in alive:
            try:
                straggler.kill()
            except psutil.Error:
                pass
        return left

    def close(self) -> None:
        for proc in list(self.procs):
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

    DIRECT = "direct to the pod's ports"  # baseline: what each path adds is measured over it
    KUBECTL = "kubectl port-forward"
    VIBE = "kubectl vibe pf"  # native engine: SPDY through one kubectl proxy
    VIBE_NO_INSPECT = "kubectl vibe pf --inspect=false"
    VIBE_KUBECTL_ENGINE = "kubectl vibe pf --engine kubectl"
    SOCAT_KUBECTL = "socat → kubectl port-forward"  # the reference for the native tunnel
    RELAY_KUBECTL = "asyncio relay → kubectl port-forward"  # control: one extra Python hop


class Engine(enum.Enum):
    """How a `kubectl vibe pf` row makes its tunnels, i.e. which children it must have."""

    NATIVE = "native"
    KUBECTL = "kubectl"


#: The plugin's flags per `kubectl vibe pf` row, and the engine they select.
VIBE_PATHS: Dict[E2EPath, Tuple[List[str], Engine]] = {
    E2EPath.VIBE: ([], Engine.NATIVE),
    E2EPath.VIBE_NO_INSPECT: (["--inspect=false"], Engine.NATIVE),
    E2EPath.VIBE_KUBECTL_ENGINE: (["--engine", "kubectl"], Engine.KUBECTL),
}


@dataclass
class E2EForward:
    """One way to the pod, open for the whole end-to-end section; accumulates its figures."""

    path: E2EPath
    proc: Optional[subprocess.Popen]  # kubectl or the plugin; None for the direct baseline
    ports: Dict[int, int]  # remote port → the local port the client uses
    relays: List[Helper] = field(default_factory=list)
    socats: List[subprocess.Popen] = field(default_factory=list)
    values: Dict[str, Any] = field(default_factory=dict)
    verified: bool = True
    error: Optional[str] = None

    @property
    def vibe(self) -> bool:
        return self.path in VIBE_PATHS

    def hop_pids(self) -> List[int]:
        """The relay processes in front of kubectl, whose CPU is the hop's."""
        return [r.pid for r in self.relays] + [s.pid for s in self.socats]

    def close(self, cluster: Cluster) -> None:
        for relay in self.relays:
            relay.stop()
        for socat in self.socats:
            stop_process(socat)
        if self.proc is not None:
            left = cluster.stop_tree(self.proc)
            if left and self.error is None:
                self.error = "left running after exit: " + ", ".join(left)


def open_e2e_forward(cluster: Cluster, path: E2EPath) -> E2EForward:
    if path is E2EPath.DIRECT:
        return E2EForward(path, None, dict(cluster.backends))
    extra, _ = VIBE_PATHS.get(path, ([], Engine.NATIVE))
    proc, ports = start_forward(
        cluster, path in VIBE_PATHS, "pod/" + cluster.pod, [":%d" % p for p in REMOTE_PORTS], extra
    )
    forward = E2EForward(path, proc, ports)
    if path is E2EPath.RELAY_KUBECTL:
        forward.relays = [
            python_helper("relays.py", ["protocol", str(ports[r])], "relay") for r in ports
        ]
        forward.ports = {r: relay.port for r, relay in zip(ports, forward.relays)}
    elif path is E2EPath.SOCAT_KUBECTL:
        spawned = {r: spawn_socat(ports[r]) for r in ports}
        forward.socats = [socat for socat, _ in spawned.values()]
        forward.ports = {r: port for r, (_, port) in spawned.items()}
    return forward


def e2e_bulk_round(forward: E2EForward, n: int, digest: str) -> None:
    """One upload (checked by the pod's sha256) and one download; keeps the best MB/s."""
    for name, (elapsed, good) in (
        ("up", upload_sha256(forward.ports[9001], n, digest)),
        ("down", download_http(forward.ports[8080], n)),
    ):
        forward.verified = forward.verified and good
        key = name + "_mbps"
        forward.values[key] = max(n / elapsed / 1e6, forward.values.get(key, 0.0))


def e2e_latency_round(forward: E2EForward, pings: int) -> None:
    """Echo ping-pong and keep-alive GETs; keeps each series' best round (by p50)."""
    for prefix, samples in (
        ("", echo_ping_pong(forward.ports[9000], pings)),
        ("req_", http_request_latency(forward.ports[8080], pings)),
    ):
        p50, p99 = quantiles(samples)
        if p50 < forward.values.get(prefix + "p50_us", float("inf")):
            forward.values[prefix + "p50_us"], forward.values[prefix + "p99_us"] = p50, p99


def e2e_rounds(forwards: List[E2EForward], rounds: int, measure: Any, *args: Any) -> None:
    """Every forward once per round, like the loopback sections."""
    for _ in range(rounds):
        for forward in forwards:
            if forward.error is None:
                try:
                    measure(forward, *args)
                except Exception as exc:
                    forward.error = "%s: %s" % (type(exc).__name__, exc)


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds at one moment: of kubectl (or the plugin), its descendants, the relays."""

    mine: float
    kids: float
    hops: float


def cpu_mark(forward: E2EForward) -> CpuMark:
    if forward.proc is None:
        return CpuMark(0.0, 0.0, 0.0)
    mine, kids = process_cpu(forward.proc.pid)
    return CpuMark(mine, kids, sum(relay_cpu(pid) for pid in forward.hop_pids()))


def record_cpu(forwards: List[E2EForward], before: List[CpuMark], gib: float) -> None:
    for forward, cpu0 in zip(forwards, before):
        if forward.proc is None:
            continue
        cpu1 = cpu_mark(forward)
        mine, kids = cpu1.mine - cpu0.mine, cpu1.kids - cpu0.kids
        # the plugin is the process kubectl exec'd; its kubectl children (the proxy, or
        # kubectl port-forward with --engine kubectl) are the "kubectl" figure
        forward.values["kubectl_cpu_s_per_gib"] = (kids if forward.vibe else mine + kids) / gib
        if forward.vibe:
            forward.values["hop_cpu_s_per_gib"] = mine / gib
        elif forward.hop_pids():
            forward.values["hop_cpu_s_per_gib"] = (cpu1.hops - cpu0.hops) / gib


def check_engine(forward: E2EForward) -> None:
    """Record the plugin's process tree while it carried traffic, and fail the row when it is
    not the engine the row claims to measure (e.g. a silent fallback to kubectl port-forward)."""
    if forward.proc is None or not forward.vibe:
        return
    names = tree_names(forward.proc.pid)
    forward.values["processes"] = names
    _, engine = VIBE_PATHS[forward.path]
    forwarders = sum(n == "kubectl port-forward" for n in names)
    proxies = sum(n == "kubectl proxy" for n in names)
    if engine is Engine.NATIVE and (forwarders or proxies != 1):
        forward.error = "not the native engine: " + ", ".join(names)
    elif engine is Engine.KUBECTL and not forwarders:
        forward.error = "no kubectl port-forward child: " + ", ".join(names)


def measure_e2e(
    cluster: Cluster,
    n: int,
    repeats: int,
    pings: int,
    latency_rounds: int,
    paths: Sequence[E2EPath] = tuple(E2EPath),
) -> List[E2EForward]:
    """All end-to-end paths open at once, measured in interleaved rounds."""
    digest = pattern_digest(n)
    forwards: List[E2EForward] = []
    try:
        for path in paths:
            forwards.append(open_e2e_forward(cluster, path))
        before = [cpu_mark(f) for f in forwards]
        e2e_rounds(forwards, repeats, e2e_bulk_round, n, digest)
        record_cpu(forwards, before, 2 * repeats * n / (1 << 30))
        e2e_rounds(forwards, latency_rounds, e2e_latency_round, max(1, pings // latency_rounds))
        for forward in forwards:
            check_engine(forward)
        return forwards
    finally:
        for forward in forwards:
            forward.close(cluster)


def process_cpu(pid: int) -> Tuple[float, float]:
    """(CPU seconds of the process itself, of its live descendants)."""
    import psutil

    proc = psutil.Process(pid)
    kids = 0.0
    for child in proc.children(recursive=True):
        try:
            kids += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return sum(proc.cpu_times()[:2]), kids


def relay_cpu(pid: int) -> float:
    """CPU seconds of a relay, its reaped children (socat forks one per connection) and its
    live ones."""
    import psutil

    try:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:4])
        for child in proc.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0.0


# ---- process trees ----------------------------------------------------------------------------


def describe_process(proc: Any) -> str:
    """kubectl by its verb ("kubectl proxy"), anything else by its executable's name."""
    import psutil

    try:
        argv = proc.cmdline()
    except psutil.Error:
        return "pid %d (gone)" % proc.pid
    if not argv:
        return proc.name()
    name = os.path.basename(argv[0])
    if name == "kubectl" and len(argv) > 1:
        return "kubectl " + argv[1]
    return name


def tree_names(pid: int) -> List[str]:
    """The process and every descendant, the root named "plugin (<interpreter>)"."""
    import psutil

    root = psutil.Process(pid)
    return ["plugin (%s)" % describe_process(root)] + [
        describe_process(child) for child in root.children(recursive=True)
    ]


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
