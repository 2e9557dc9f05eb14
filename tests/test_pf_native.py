"""The native engine end to end: ONE `kubectl proxy --unix-socket` per context carries every
lookup, watch and SPDY tunnel; real kubectl (1.37 and 1.32) against the simulated cluster."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import sys
import threading
import time
from typing import Dict, Iterator, List

import psutil
import pytest

from .kubectl_proc import KubectlProcess, run_kubectl
from .sim_backends import Backend
from .simcluster import ContainerPort, ServicePort, SimCluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(REPO, "kubectl_vibe_pf.py")
FORWARDING = r"^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)$"

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(sim_cluster: SimCluster) -> SimCluster:
    """web (2 pods: http 8080, echo 9000, sha256 9100, nothing on 7000) behind svc web; db."""
    sim_cluster.add_deployment(
        "web",
        replicas=2,
        ports=[ContainerPort("http", 8080), ContainerPort("echo", 9000),
               ContainerPort("sum", 9100), ContainerPort("dead", 7000)],
        backends={8080: Backend.http(), 9000: Backend.echo(), 9100: Backend.sha256(),
                  7000: Backend.refuse()},
    )  # fmt: skip
    sim_cluster.add_service("web", {"app": "web"}, [ServicePort(80, "http", name="http")])
    sim_cluster.add_deployment("db", ports=[ContainerPort("pg", 5432)],
                               backends={5432: Backend.echo()})  # fmt: skip
    sim_cluster.add_service("db", {"app": "db"}, [ServicePort(5432, "pg", name="pg")])
    sim_cluster.wait_for(lambda: len(sim_cluster.pods(ready=True)) == 3, timeout=10)
    return sim_cluster


class Plugin:
    """`kubectl_vibe_pf.py pf ...` with the kubectl under test; all processes end at teardown."""

    def __init__(self, sim: SimCluster, kubectl: str) -> None:
        self.sim = sim
        self.kubectl = kubectl
        self.env = sim.env()
        self.env["KUBECTL_PATH"] = kubectl
        self.procs: List[KubectlProcess] = []

    def start(self, *args: str) -> KubectlProcess:
        proc = KubectlProcess(sys.executable, [MODULE, "pf", *args, "--no-live"], self.env)
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 30):
        return run_kubectl(sys.executable, [MODULE, "pf", *args, "--no-live"], self.env, timeout)

    def kubectl_run(self, *args: str, timeout: float = 30):
        return run_kubectl(self.kubectl, list(args), self.env, timeout)

    def close(self) -> None:
        for proc in self.procs:
            children = _descendants(proc.proc.pid)
            proc.stop()
            psutil.wait_procs(children, timeout=10)


@pytest.fixture
def plugin(cluster: SimCluster, kubectl_bin: str) -> Iterator[Plugin]:
    runner = Plugin(cluster, kubectl_bin)
    yield runner
    runner.close()


def _descendants(pid: int) -> List[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _commands(pid: int) -> List[List[str]]:
    found = []
    for child in _descendants(pid):
        try:
            found.append(child.cmdline())
        except psutil.NoSuchProcess:
            pass
    return found


def free_ports(count: int) -> List[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def ready(proc: KubectlProcess, *ports: int) -> None:
    """Until every port has its Forwarding line (forwards get ready in any order)."""
    for port in ports:
        proc.wait_line(r"^Forwarding from 127\.0\.0\.1:%d -> \d+$" % port)


def ports_of(proc: KubectlProcess, count: int) -> List[int]:
    """The local ports of the first `count` Forwarding lines (one forward only: in order)."""
    seen: List[int] = []
    deadline = time.monotonic() + 20
    while len(seen) < count and time.monotonic() < deadline:
        seen = [int(line.split(":")[1].split()[0]) for line in proc.stdout
                if line.startswith("Forwarding from 127.0.0.1:")]  # fmt: skip
        time.sleep(0.05)
    assert len(seen) >= count, proc.stdout
    return seen[:count]


def http_get(port: int, path: str = "/", timeout: float = 10) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path)
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def echo(port: int, payload: bytes, timeout: float = 30) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        received = bytearray()
        reader = threading.Thread(target=_read_all, args=(sock, received))
        reader.start()
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the plugin closed a connection that could not reach the pod
            pass
        reader.join(timeout)
        return bytes(received)


def _read_all(sock: socket.socket, into: bytearray) -> None:
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except OSError:
            return
        if not chunk:
            return
        into.extend(chunk)


def stop(proc: KubectlProcess) -> int:
    os.kill(proc.proc.pid, signal.SIGINT)
    return proc.wait()


# -- one kubectl per context ----------------------------------------------------------------------


def test_one_kubectl_proxy_serves_every_target_lookup_watch_and_tunnel(
    plugin: Plugin, cluster: SimCluster
) -> None:
    pod = cluster.pods("web")[0]
    web, echo_port, direct, db = free_ports(4)
    proc = plugin.start("svc/web", "%d:80" % web, "deploy/web", "%d:9000" % echo_port,
                        "pod/" + pod, "%d:8080" % direct, "svc/db", "%d:5432" % db)  # fmt: skip
    ready(proc, web, echo_port, direct, db)

    assert http_get(web).status == 200
    assert echo(echo_port, b"ping") == b"ping"
    assert http_get(direct).getheader("X-Pod") == pod
    assert echo(db, b"select 1") == b"select 1"
    kubectls = [argv for argv in _commands(proc.proc.pid) if "kubectl" in os.path.basename(argv[0])]
    assert [argv[1] for argv in kubectls] == ["proxy"]  # no port-forward, no get -w: one kubectl
    assert "--unix-socket" in kubectls[0]
    pod_watches = sorted(
        (w["labelSelector"], w["fieldSelector"]) for w in cluster.watches("pods")
    )  # one per namespace and selector: svc/web and deploy/web share app=web
    assert pod_watches == [("", "metadata.name=" + pod), ("app=db", ""), ("app=web", "")]


def test_the_proxy_socket_is_private_to_this_user(plugin: Plugin) -> None:
    proc = plugin.start("svc/web", ":80")
    ports_of(proc, 1)
    (argv,) = [a for a in _commands(proc.proc.pid) if "proxy" in a]
    path = argv[argv.index("--unix-socket") + 1]
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
    assert stop(proc) == 0
    assert not os.path.exists(os.path.dirname(path))  # removed at the end


# -- the tunnel: one SPDY connection per pod -----------------------------------------------------


def test_200_concurrent_connections_share_one_spdy_connection_to_the_pod(
    plugin: Plugin, cluster: SimCluster
) -> None:
    pod = cluster.pods("web")[0]
    proc = plugin.start("pod/" + pod, ":9000")
    (port,) = ports_of(proc, 1)
    payloads = [os.urandom(2048 + n) for n in range(200)]
    results: Dict[int, bytes] = {}

    def one(index: int) -> None:
        results[index] = echo(port, payloads[index])

    threads = [threading.Thread(target=one, args=(n,)) for n in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert [results.get(n) == payloads[n] for n in range(200)] == [True] * 200
    tunnels = cluster.tunnels(pod)
    assert len(tunnels) == 2  # the active connection and its idle standby
    assert sorted(t["streams_opened"] for t in tunnels) == [0, 200]
    assert {t["transport"] for t in tunnels} == {"spdy"}


def test_large_transfers_are_byte_exact_both_ways(plugin: Plugin) -> None:
    proc = plugin.start("deploy/web", ":9000", ":9100")
    echo_port, sum_port = ports_of(proc, 2)
    payload = os.urandom(32 * 1024 * 1024)

    echoed = echo(echo_port, payload, timeout=120)
    answer = echo(sum_port, payload, timeout=120)  # half-close: the pod answers after our EOF

    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert answer.decode() == "%s %d\n" % (hashlib.sha256(payload).hexdigest(), len(payload))


def test_nothing_listening_fails_that_connection_only(plugin: Plugin, cluster: SimCluster) -> None:
    proc = plugin.start("deploy/web", ":7000", ":8080")
    dead, alive = ports_of(proc, 2)
    opened = cluster.tunnels_opened()

    assert echo(dead, b"hello?") == b""  # the kubelet's error stream: closed, nothing sent
    assert http_get(alive).status == 200  # the same tunnel goes on serving

    proc.wait_line(r"connection_failed: failed: nothing listening on pod port 7000",
                   stream="stderr")  # fmt: skip
    assert cluster.tunnels_opened() == opened
    assert not any("tunnel_lost" in line for line in proc.stderr)
    assert stop(proc) == 0
    assert "1 connections failed: nothing listening on pod port 7000" in proc.err
    assert "kubectl exec web-" in proc.err and "ss -ltn" in proc.err


def test_a_goaway_sends_new_connections_to_the_standby(plugin: Plugin, cluster: SimCluster):
    proc = plugin.start("deploy/web", ":9000")
    (port,) = ports_of(proc, 1)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
        held.sendall(b"before")
        assert held.recv(6) == b"before"
        pod = next(p for p in cluster.pods("web") if cluster.active_streams(p))

        cluster.tunnel_faults.goaway(pod)
        proc.wait_line(r"tunnel_lost: .*GOAWAY", stream="stderr")
        assert echo(port, b"after") == b"after"  # a new connection, on another tunnel
        held.sendall(b"still")  # the open one finishes on the old connection
        assert held.recv(5) == b"still"


# -- failures of the cluster access ---------------------------------------------------------------


def test_the_pod_watch_relists_after_410_gone_and_still_sees_deletions(
    plugin: Plugin, cluster: SimCluster
) -> None:
    proc = plugin.start("svc/web", ":80")
    (port,) = ports_of(proc, 1)
    first = http_get(port).getheader("X-Pod")
    cluster.wait_for(lambda: cluster.watches("pods"))

    assert cluster.expire_watches() >= 1
    cluster.wait_for(lambda: cluster.watches("pods"), timeout=10)  # watching again
    cluster.delete_pod(first)

    proc.wait_line(r"now forwarding to pod", stream="stderr", timeout=30)
    assert http_get(port, timeout=30).getheader("X-Pod") != first


def test_an_api_server_gone_for_two_seconds_is_waited_for(plugin: Plugin, cluster: SimCluster):
    proc = plugin.start("svc/web", ":80")
    (port,) = ports_of(proc, 1)
    assert http_get(port).status == 200

    cluster.set_reachable(False)
    result: Dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(r=http_get(port, timeout=30)))
    thread.start()  # a connection made during the outage waits for the tunnel
    time.sleep(2.0)
    cluster.set_reachable(True)
    thread.join(40)

    assert getattr(result.get("r"), "status", None) == 200
    assert http_get(port, timeout=30).status == 200
    assert stop(proc) == 0


def test_an_api_server_that_refuses_spdy_is_served_by_kubectl_port_forward(
    plugin: Plugin, cluster: SimCluster
) -> None:
    cluster.set_spdy(False)
    web, db = free_ports(2)
    proc = plugin.start("svc/web", "%d:80" % web, "svc/db", "%d:5432" % db)
    ready(proc, web, db)

    assert http_get(web).status == 200
    assert echo(db, b"ok") == b"ok"
    refusals = [line for line in proc.stderr if "refused the native tunnel" in line]
    assert len(refusals) == 1, proc.stderr  # said once, for the whole context
    assert "SPDY is not supported by this server" in refusals[0]
    verbs = sorted(argv[1] for argv in _commands(proc.proc.pid) if "kubectl" in argv[0])
    assert verbs.count("proxy") == 1 and "port-forward" in verbs
    assert {t["transport"] for t in cluster.tunnels()} == {"websocket"}


def test_forbidden_port_forward_is_kubectls_error_with_a_can_i_hint(
    plugin: Plugin, cluster: SimCluster
) -> None:
    pod = cluster.pods("web")[0]
    cluster.forbid("create", "pods/portforward")

    ours = plugin.run("pod/" + pod, "8080")
    theirs = plugin.kubectl_run("port-forward", "pod/" + pod, "8080")

    assert (ours.returncode, ours.stdout) == (1, "")  # no Forwarding lines, no summary
    assert ours.stderr.splitlines()[0] == theirs.stderr.splitlines()[-1]
    assert ours.stderr.splitlines()[1] == (
        "Fix: check your rights: kubectl auth can-i create pods/portforward -n default"
    )
    assert theirs.returncode == 1


def test_lookups_use_kubectls_words_for_missing_objects_and_denied_lists(
    plugin: Plugin, cluster: SimCluster
) -> None:
    for target in ("svc/nope", "nope", "deploy/nope"):
        ours = plugin.run(target, "80")
        theirs = plugin.kubectl_run("port-forward", target, "80")
        assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr), target

    cluster.forbid("list", "pods")
    denied = plugin.run("svc/web", "80", "--pod-running-timeout=3s")
    assert denied.returncode == 1
    assert denied.stderr.strip() == (
        'Error from server (Forbidden): pods is forbidden: User "sim-user" cannot list resource '
        '"pods" in API group "" in the namespace "default"'
    )


# -- many forwards, independent -------------------------------------------------------------------


def test_one_failing_target_never_stops_the_others(plugin: Plugin) -> None:
    web, db = free_ports(2)
    proc = plugin.start("svc/web", "%d:80" % web, "svc/missing", ":80", "svc/db", "%d:5432" % db)
    ready(proc, web, db)

    assert http_get(web).status == 200 and echo(db, b"x") == b"x"
    proc.wait_line(r'\[vibe\] svc/missing error: Error from server \(NotFound\): services '
                   r'"missing" not found', stream="stderr")  # fmt: skip
    assert stop(proc) == 0
    assert "127.0.0.1:%d → svc/web" % web in proc.err and "→ svc/db :5432" in proc.err


def test_when_no_target_can_start_each_failure_is_named_and_the_exit_code_is_1(plugin: Plugin):
    done = plugin.run("svc/missing", ":80", "deploy/gone", ":80")
    theirs = [
        plugin.kubectl_run("port-forward", target, "80").stderr.strip()
        for target in ("svc/missing", "deploy/gone")
    ]

    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (
        "error: no forward could start: svc/missing: %s; deploy/gone: %s" % tuple(theirs)
    )
