"""`kubectl vibe port-forward` end to end: real kubectl, the simulated cluster, both engines.

Each test runs with the native engine (one `kubectl proxy`, the plugin's own SPDY tunnels) and
with the kubectl engine (kubectl port-forward children) over both of kubectl's transports.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import sys
import threading
import time
from typing import Dict, Iterator, List, Sequence

import psutil
import pytest

from .kubectl_proc import KubectlProcess, run_kubectl
from .sim_backends import Backend, pattern_bytes
from .simcluster import ContainerPort, ServicePort, SimCluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(REPO, "kubectl_vibe_pf.py")
FORWARDING = r"^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)$"

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["native", "kubectl-websocket", "kubectl-spdy"])
def engine(request) -> str:
    return request.param


@pytest.fixture
def cluster(sim_cluster: SimCluster) -> SimCluster:
    """The demo shape: deployment web (2 pods, http 8080 + echo 9000) behind svc web 80."""
    sim_cluster.add_deployment(
        "web",
        replicas=2,
        ports=[ContainerPort("http", 8080), ContainerPort("echo", 9000)],
        backends={8080: Backend.http(), 9000: Backend.echo()},
    )
    sim_cluster.add_service(
        "web",
        selector={"app": "web"},
        ports=[ServicePort(80, "http", name="http"), ServicePort(9000, 9000, name="echo")],
    )
    sim_cluster.wait_for(lambda: len(sim_cluster.pods("web", ready=True)) == 2, timeout=10)
    return sim_cluster


class Vibe:
    """Runs `kubectl_vibe_pf.py` with the kubectl under test; every process ends at teardown."""

    def __init__(self, sim: SimCluster, kubectl: str, engine: str) -> None:
        self.kubectl = kubectl
        self.engine = engine
        self.env = sim.env()
        self.env["KUBECTL_PATH"] = kubectl
        self.env["PATH"] = os.path.dirname(kubectl) + os.pathsep + self.env.get("PATH", "")
        if engine == "kubectl-spdy":
            self.env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "false"
        self.procs: List[KubectlProcess] = []

    @property
    def native(self) -> bool:
        return self.engine == "native"

    def argv(self, args: Sequence[str]) -> List[str]:
        engine = ["--engine", "kubectl"] if not self.native and args[:1] == ("pf",) else []
        return [MODULE, *args, *engine]

    def start(self, *args: str) -> KubectlProcess:
        proc = KubectlProcess(sys.executable, self.argv(args), self.env)
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 30):
        return run_kubectl(sys.executable, self.argv(args), self.env, timeout)

    def kubectl_run(self, *args: str, timeout: float = 30):
        return run_kubectl(self.kubectl, list(args), self.env, timeout)

    def close(self) -> None:
        for proc in self.procs:
            pid = proc.proc.pid
            children = _descendants(pid)
            proc.stop()
            _wait_gone(children)


def _descendants(pid: int) -> List[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_gone(processes: List[psutil.Process], timeout: float = 10) -> List[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return alive


def _kubectl_children(pid: int, verb: str) -> List[psutil.Process]:
    """The plugin's kubectl children running `verb` (port-forward, proxy)."""
    found = []
    for child in _descendants(pid):
        try:
            if verb in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture
def vibe(cluster: SimCluster, kubectl_bin: str, engine: str) -> Iterator[Vibe]:
    runner = Vibe(cluster, kubectl_bin, engine)
    yield runner
    runner.close()


def http_get(port: int, path: str = "/", timeout: float = 10) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path)
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def echo_roundtrip(port: int, payload: bytes, timeout: float = 60) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        received = bytearray()

        def reader() -> None:
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    return
                received.extend(chunk)

        thread = threading.Thread(target=reader)
        thread.start()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        thread.join(timeout)
        return bytes(received)


# -- specifications ------------------------------------------------------------------------------


def test_forwards_a_service_and_prints_kubectls_own_lines(vibe: Vibe) -> None:
    proc = vibe.start("pf", "svc/web", ":80", "--no-live")
    match = proc.wait_line(FORWARDING)
    port = int(match.group(1))

    assert match.group(2) == "8080"  # the resolved container port, as kubectl prints it
    response = http_get(port)
    assert response.status == 200 and response.body.startswith(b"hello from web-")
    proc.wait_line(r"^Handling connection for %d$" % port)


def test_relays_100_mib_both_ways_byte_exact(vibe: Vibe) -> None:
    proc = vibe.start("pf", "deploy/web", ":9000", "--no-live")
    port = int(proc.wait_line(FORWARDING).group(1))
    payload = pattern_bytes(100 * 1024 * 1024)

    echoed = echo_roundtrip(port, payload)

    assert len(echoed) == len(payload)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


def test_200_concurrent_connections_all_succeed(vibe: Vibe) -> None:
    proc = vibe.start("pf", "svc/web", ":9000", "--no-live")
    port = int(proc.wait_line(FORWARDING).group(1))
    payloads = [os.urandom(4096 + n) for n in range(200)]
    results: Dict[int, bytes] = {}

    def one(index: int) -> None:
        results[index] = echo_roundtrip(port, payloads[index])

    threads = [threading.Thread(target=one, args=(n,)) for n in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert [results.get(n) == payloads[n] for n in range(200)] == [True] * 200


def test_a_deleted_pod_is_replaced_behind_the_same_local_port(
    vibe: Vibe, cluster: SimCluster
) -> None:
    port = _free_port()
    proc = vibe.start("pf", "svc/web", "%d:80" % port, "--no-live")
    proc.wait_line(FORWARDING)
    first = http_get(port).getheader("X-Pod")

    cluster.delete_pod(first)
    # connections opened during the gap wait for the replacement instead of failing
    answers = [http_get(port, timeout=30) for _ in range(3)]

    assert all(a.status == 200 for a in answers)
    assert {a.getheader("X-Pod") for a in answers}.isdisjoint({first})
    proc.wait_line(r"now forwarding to pod", stream="stderr")


def test_an_error_on_one_connection_does_not_stop_the_others(
    vibe: Vibe, cluster: SimCluster
) -> None:
    proc = vibe.start("pf", "svc/web", ":80", "--no-live")
    port = int(proc.wait_line(FORWARDING).group(1))
    pod = http_get(port).getheader("X-Pod")

    cluster.tunnel_faults.error(
        pod, "read tcp4 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer", on="next"
    )
    first = _try_get(port)
    answers = [http_get(port) for _ in range(5)]

    assert first is None or first.status == 200  # the faulty one may die; it is counted
    assert all(a.status == 200 for a in answers)
    if vibe.native:  # one stream failed; its tunnel (and every other connection) is fine
        proc.wait_line(r"connection_failed: reset: the app in the pod reset", stream="stderr")
        assert not any("tunnel_lost" in line for line in proc.stderr)
    else:  # kubectl closes its whole tunnel on any connection's error
        proc.wait_line(r"tunnel_lost: .*(reset|lost)", stream="stderr")


def _try_get(port: int):
    try:
        return http_get(port)
    except (OSError, http.client.HTTPException):
        return None


def test_kubectl_killed_under_it_is_restarted(vibe: Vibe) -> None:
    proc = vibe.start("pf", "deploy/web", ":8080", "--no-live")
    port = int(proc.wait_line(FORWARDING).group(1))
    assert http_get(port).status == 200
    verb = "proxy" if vibe.native else "port-forward"
    killed = _kubectl_children(proc.proc.pid, verb)
    assert killed

    for child in killed:
        child.kill()

    assert http_get(port, timeout=30).status == 200
    proc.wait_line(r"tunnel_lost", stream="stderr")
    if vibe.native:
        proc.wait_line(r"kubectl proxy cluster: kubectl proxy exited .*restarting", stream="stderr")
        proc.wait_line(r"kubectl proxy is serving again", stream="stderr")
        assert len(_kubectl_children(proc.proc.pid, "proxy")) == 1


def test_a_busy_local_port_fails_like_kubectl(vibe: Vibe) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ours = vibe.run("pf", "pod/" + _a_pod(vibe), "%d:8080" % port, "--address", "127.0.0.1")
        theirs = vibe.kubectl_run(
            "port-forward", "pod/" + _a_pod(vibe), "%d:8080" % port, "--address", "127.0.0.1"
        )

    assert ours.returncode == theirs.returncode == 1
    assert ours.stderr.splitlines()[-1] == theirs.stderr.splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _a_pod(vibe: Vibe) -> str:
    out = vibe.kubectl_run("get", "pods", "-l", "app=web", "-o", "name").stdout.split()
    return out[0].split("/", 1)[1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_kubectl_outlives_the_plugin(vibe: Vibe, sig: int) -> None:
    proc = vibe.start("pf", "svc/web", ":80", "--no-live")
    proc.wait_line(FORWARDING)
    children = _descendants(proc.proc.pid)
    assert _kubectl_children(proc.proc.pid, "proxy" if vibe.native else "port-forward")

    os.kill(proc.proc.pid, sig)
    code = proc.proc.wait(15)

    assert _wait_gone(children) == []
    if sig != signal.SIGKILL:
        assert code == 0
        proc.wait_line(r"kubectl vibe port-forward: ", stream="stderr")


def test_json_output_is_one_object_per_event(vibe: Vibe) -> None:
    import json

    proc = vibe.start("pf", "svc/web", ":80", "-o", "json")
    line = proc.wait_line(r'"event": "forwarding"').string
    event = json.loads(line)
    assert event["target"] == "svc/web" and event["remote_port"] == 8080
    http_get(event["port"])
    proc.wait_line(r'"event": "connection"')
    os.kill(proc.proc.pid, signal.SIGINT)
    assert proc.wait() == 0
    summary = json.loads(proc.wait_line(r'"event": "stopped"').string)
    assert summary["forwards"][0]["connections"] == 1


def test_the_summary_counts_bytes_and_connections(vibe: Vibe) -> None:
    proc = vibe.start("pf", "svc/web", ":80", "--no-live")
    port = int(proc.wait_line(FORWARDING).group(1))
    for _ in range(3):
        http_get(port, "/bytes/1000")
    time.sleep(0.2)

    os.kill(proc.proc.pid, signal.SIGINT)
    assert proc.wait() == 0
    assert "3 connections: 3 closed, 0 failed, 0 reset" in proc.err


def _read_pty(master: int, seconds: float) -> bytes:
    import select

    chunks = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunks.append(os.read(master, 65536))
            except OSError:
                break
    return b"".join(chunks)


@pytest.mark.parametrize("engine", ["native"])
def test_the_live_view_in_a_terminal_shows_state_ports_bytes_and_activity(
    cluster: SimCluster, kubectl_bin: str, engine: str
) -> None:
    import pty
    import re
    import subprocess

    env = Vibe(cluster, kubectl_bin, engine).env
    env.update(COLUMNS="160", LINES="30", TERM="xterm-256color")
    master, slave = pty.openpty()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, MODULE, "pf", "svc/web", "%d:80" % port],
        env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    try:
        _read_pty(master, 3.0)
        for _ in range(5):
            http_get(port, "/bytes/200000")
        screen = _read_pty(master, 2.0).decode("utf-8", "replace")
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
        assert "ready" in plain and "127.0.0.1:%d → svc/web (web-" % port in plain
        assert ":8080" in plain and "0/5" in plain  # no active connection, 5 in total
        assert re.search(r"9\d\d(\.\d)? KiB", plain)  # ~977 KiB came down
        assert re.search(r"HTTP: 5 requests", plain)
        idle = _read_pty(master, 4.0)
        assert len(idle) < 4 * 512, "an idle live view writes at most ~0.5 KiB/s"
        os.killpg(proc.pid, signal.SIGINT)
        summary = _read_pty(master, 3.0).decode("utf-8", "replace")
        assert proc.wait(10) == 0
        assert "5 connections: 5 closed, 0 failed, 0 reset" in summary
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        os.close(master)


@pytest.mark.parametrize("engine", ["native", "kubectl-websocket"])
def test_a_restarted_container_is_correlated_with_its_events_and_in_the_summary(
    vibe: Vibe, cluster: SimCluster
) -> None:
    proc = vibe.start("pf", "deploy/web", ":8080", "--no-live")
    port = int(proc.wait_line(FORWARDING).group(1))
    pod = http_get(port).getheader("X-Pod")

    cluster.restart_container(pod, reason="OOMKilled", exit_code=137)
    proc.wait_line(r"pod %s: .*OOMKilled" % pod, stream="stderr", timeout=20)
    assert http_get(port, timeout=30).status == 200

    os.kill(proc.proc.pid, signal.SIGINT)
    assert proc.wait() == 0
    assert "OOMKilled" in proc.err.split("problems:")[-1]
    assert "kubectl logs %s -n default --previous" % pod in proc.err


@pytest.mark.parametrize("engine", ["native", "kubectl-websocket"])
def test_connections_cut_by_a_pod_deletion_are_blamed_on_the_pod(
    vibe: Vibe, cluster: SimCluster
) -> None:
    proc = vibe.start("pf", "svc/web", ":9000", "--no-live")
    port = int(proc.wait_line(FORWARDING).group(1))
    holder = socket.create_connection(("127.0.0.1", port), timeout=10)
    holder.sendall(b"ping")
    assert holder.recv(4) == b"ping"
    pod = next(p for p in cluster.pods("web") if cluster.active_streams(p))

    cluster.delete_pod(pod)
    proc.wait_line(r"now forwarding to pod", stream="stderr", timeout=30)
    holder.close()
    os.kill(proc.proc.pid, signal.SIGINT)
    assert proc.wait() == 0

    problems = proc.err.split("problems:")[-1]
    assert "1 connections reset: the pod (or its sandbox) is gone" in problems
    assert "reconnects 1 (the pod (or its sandbox) is gone" in proc.err


def test_an_idle_keep_alive_connection_survives_its_pod_being_deleted(
    vibe: Vibe, cluster: SimCluster
) -> None:
    proc = vibe.start("pf", "svc/web", ":80", "--no-live")
    port = int(proc.wait_line(FORWARDING).group(1))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/")
    first = conn.getresponse()
    first.read()
    pod = first.getheader("X-Pod")

    cluster.delete_pod(pod)
    proc.wait_line(r"now forwarding to pod", stream="stderr", timeout=30)
    conn.request("GET", "/")  # the same TCP connection, now served by the replacement
    second = conn.getresponse()
    second.read()
    conn.close()

    assert second.status == 200 and second.getheader("X-Pod") != pod
    os.kill(proc.proc.pid, signal.SIGINT)
    assert proc.wait() == 0
    assert "1 connections: 1 closed, 0 failed, 0 reset, 1 moved to a new tunnel" in proc.err
