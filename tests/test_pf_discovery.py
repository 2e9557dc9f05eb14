"""Many targets, discovery, automatic ports and --balance, end to end: real kubectl (1.37 and
1.32, for kubectl proxy) against the simulated cluster."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, Iterator, List, Optional

import psutil
import pytest

from .kubectl_proc import KubectlProcess, run_kubectl
from .sim_backends import Backend
from .simcluster import ContainerPort, ServicePort, SimCluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(REPO, "kubectl_vibe_pf.py")

pytestmark = pytest.mark.e2e


def add_app(
    sim: SimCluster,
    name: str,
    namespace: str = "default",
    replicas: int = 1,
    labels: Optional[Dict[str, str]] = None,
    annotations: Optional[Dict[str, str]] = None,
) -> None:
    """A deployment `name` (http 8080 "http", echo 9000 "echo") behind svc `name` (80 "web" ->
    http, 9000 "echo" -> echo), labelled app=NAME plus `labels`."""
    sim.add_deployment(
        name,
        replicas=replicas,
        namespace=namespace,
        ports=[ContainerPort("http", 8080), ContainerPort("echo", 9000)],
        backends={8080: Backend.http(), 9000: Backend.echo()},
    )
    sim.add_service(
        name,
        {"app": name},
        [ServicePort(80, "http", name="web"), ServicePort(9000, "echo", name="echo")],
        namespace=namespace,
    )
    metadata = {"labels": {"app": name, **(labels or {})}, "annotations": annotations or {}}
    sim.patch("svc", name, {"metadata": metadata}, namespace=namespace)


class Plugin:
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

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return run_kubectl(sys.executable, [MODULE, "pf", *args, "--no-live"], self.env, timeout)

    def kubectl_run(self, *args: str) -> subprocess.CompletedProcess:
        return run_kubectl(self.kubectl, list(args), self.env, 30)

    def close(self) -> None:
        for proc in self.procs:
            children = _descendants(proc.proc.pid)
            proc.stop()
            psutil.wait_procs(children, timeout=10)


def _descendants(pid: int) -> List[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def plugin(sim_cluster: SimCluster, kubectl_bin: str) -> Iterator[Plugin]:
    runner = Plugin(sim_cluster, kubectl_bin)
    yield runner
    runner.close()


def free_ports(count: int) -> List[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def ready(proc: KubectlProcess, *ports: int) -> None:
    for port in ports:
        proc.wait_line(r"^Forwarding from 127\.0\.0\.1:%d -> \d+$" % port)


def forwarded(proc: KubectlProcess, count: int) -> Dict[int, int]:
    """local port → remote port, once `count` ports have their Forwarding lines."""
    deadline = time.monotonic() + 20
    found: Dict[int, int] = {}
    while len(found) < count and time.monotonic() < deadline:
        for line in list(proc.stdout):
            match = re.match(r"^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)$", line)
            if match:
                found[int(match.group(1))] = int(match.group(2))
        time.sleep(0.05)
    assert len(found) == count, (proc.stdout, proc.stderr)
    return found


def get(port: int, conn: Optional[http.client.HTTPConnection] = None) -> http.client.HTTPResponse:
    connection = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    connection.request("GET", "/")
    response = connection.getresponse()
    response.read()
    if conn is None:
        connection.close()
    return response


def echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk


def stop(proc: KubectlProcess) -> int:
    os.kill(proc.proc.pid, signal.SIGINT)
    return proc.wait()


# -- many targets ---------------------------------------------------------------------------------


def test_three_targets_in_two_namespaces_and_one_pod_deleted(plugin: Plugin, sim_cluster) -> None:
    sim_cluster.add_namespace("prod")
    add_app(sim_cluster, "web")
    add_app(sim_cluster, "db")
    add_app(sim_cluster, "api", namespace="prod")
    sim_cluster.wait_for(lambda: len(sim_cluster.pods(ready=True)) == 2)
    web, db, api = free_ports(3)
    proc = plugin.start(
        "svc/web", "%d:80" % web, "svc/db", "%d:80" % db, "prod/svc/api", "%d:80" % api
    )
    ready(proc, web, db, api)
    keep_alive = http.client.HTTPConnection("127.0.0.1", db, timeout=20)
    db_pod = get(db, keep_alive).getheader("X-Pod")
    first = get(web).getheader("X-Pod")
    assert get(api).getheader("X-Pod").startswith("api-")

    sim_cluster.delete_pod(first)
    proc.wait_line(r"\[vibe\] svc/web pod: now forwarding to pod", stream="stderr", timeout=30)

    assert get(web).getheader("X-Pod") != first
    assert get(db, keep_alive).getheader("X-Pod") == db_pod  # the same connection, untouched
    keep_alive.close()
    assert stop(proc) == 0
    assert not [
        line
        for line in proc.stderr
        if re.match(
            r"\[vibe\] (svc/db|prod/svc/api) (pod|"
            r"tunnel_lost|reconnect)",
            line,
        )
    ]
    sections = [line for line in proc.err.splitlines() if re.match(r"  127\.0\.0\.1:\d+ → ", line)]
    assert len(sections) == 3 and any("prod/svc/api" in line for line in sections)


def test_several_targets_keep_kubectls_messages_for_each_form(plugin: Plugin, sim_cluster):
    add_app(sim_cluster, "web")
    pod = "pod/" + sim_cluster.wait_for(lambda: sim_cluster.pods(ready=True))[0]
    for bad in ("abc:80", "8080:0"):  # the grammar: nothing starts, kubectl's line
        ours = plugin.run("svc/web", "18080:80", pod, bad)
        theirs = plugin.kubectl_run("port-forward", pod, bad)
        assert ours.returncode == theirs.returncode == 1
        assert ours.stderr.splitlines()[-1] == theirs.stderr.splitlines()[-1], bad
    theirs = plugin.kubectl_run("port-forward", pod, "8080:nope").stderr.strip()
    proc = plugin.start("svc/web", "18080:80", pod, "8080:nope")  # a lookup: that one only
    ready(proc, 18080)
    proc.wait_line(re.escape("[vibe] %s error: %s" % (pod, theirs[len("error: ") :])),
                   stream="stderr")  # fmt: skip


def test_the_same_local_port_twice_is_refused_before_anything_starts(plugin: Plugin) -> None:
    done = plugin.run("svc/web", "8080:80", "svc/db", "8080:9000")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines()[0] == (
        "error: local port 8080 is asked for twice: svc/web 8080:80 and svc/db 8080:9000"
    )
    assert not any("kubectl" in " ".join(p.cmdline()) for p in psutil.Process().children())


# -- discovery ------------------------------------------------------------------------------------


def test_a_selector_forwards_every_tcp_port_of_each_matching_service(
    plugin: Plugin, sim_cluster: SimCluster
) -> None:
    add_app(sim_cluster, "web", labels={"tier": "front"})
    add_app(sim_cluster, "shop", labels={"tier": "front"})
    add_app(sim_cluster, "db", labels={"tier": "back"})
    sim_cluster.wait_for(lambda: len(sim_cluster.pods(ready=True)) == 3)

    proc = plugin.start("-l", "tier in (front)")
    ports = forwarded(proc, 4)  # svc/shop and svc/web, 80 (named "web") and 9000 each

    assert sorted(ports.values()) == [8080, 8080, 9000, 9000]
    http_ports = [local for local, remote in ports.items() if remote == 8080]
    assert sorted(get(port).getheader("X-Pod").split("-")[0] for port in http_ports) == [
        "shop",
        "web",
    ]
    found = [line for line in proc.stderr if " found: " in line]
    assert len(found) == 4 and not any("svc/db" in line for line in found)
    assert any(re.search(r"svc/web found: port 80 → local 808\d", line) for line in found)


def test_a_selector_without_a_service_falls_back_to_workloads(plugin: Plugin, sim_cluster):
    sim_cluster.add_deployment(
        "worker", ports=[ContainerPort("metrics", 9100)], backends={9100: Backend.http()}
    )
    sim_cluster.wait_for(lambda: sim_cluster.pods("worker", ready=True))
    proc = plugin.start("-l", "app=worker")
    (port,) = forwarded(proc, 1)
    assert get(port).status == 200
    proc.wait_line(r"\[vibe\] deploy/worker found: port 9100 → local 9100", stream="stderr")


def test_an_empty_selector_names_what_exists_nearby(plugin: Plugin, sim_cluster) -> None:
    add_app(sim_cluster, "web")
    sim_cluster.add_namespace("prod")
    add_app(sim_cluster, "cache", namespace="prod")

    typo = plugin.run("-l", "app=wbe")
    elsewhere = plugin.run("-l", "app=cache")

    assert (typo.returncode, typo.stdout) == (1, "")
    assert typo.stderr.splitlines() == [
        "error: no Service, Deployment, StatefulSet, DaemonSet or pod in namespace default "
        "matches -l app=wbe",
        "Fix: labels close to it here: app=web",
    ]
    assert elsewhere.returncode == 1
    assert "it matches in namespace prod (add -n NAMESPACE, or -A)" in elsewhere.stderr
    everywhere = plugin.start("-l", "app=cache", "-A")
    (_port, _) = forwarded(everywhere, 2)
    everywhere.wait_line(r"prod/svc/cache found", stream="stderr")


def test_annotations_say_what_to_forward_and_a_bad_one_is_one_warning(plugin: Plugin, sim_cluster):
    vibe_port, kftray_port, k9s_port = free_ports(3)
    add_app(sim_cluster, "web", annotations={"kubectl-vibe.io/ports": "%d:web,x:y:z" % vibe_port})
    add_app(sim_cluster, "shop", annotations={"kftray.app/configs": "shop-%d-echo" % kftray_port})
    add_app(sim_cluster, "blog", annotations={"kftray.app/enabled": "true"})
    add_app(
        sim_cluster, "admin", annotations={"k9scli.io/auto-port-forwards": "app::%d:web" % k9s_port}
    )
    add_app(sim_cluster, "plain")  # not annotated: not forwarded by --annotated
    sim_cluster.wait_for(lambda: len(sim_cluster.pods(ready=True)) == 5)

    proc = plugin.start("--annotated")
    ports = forwarded(proc, 5)  # web 1, shop 1, blog 2 (every port), admin 1

    assert ports[vibe_port] == 8080 and ports[kftray_port] == 9000 and ports[k9s_port] == 8080
    assert get(vibe_port).getheader("X-Pod").startswith("web-")
    assert echo(kftray_port, b"kftray") == b"kftray"
    assert get(k9s_port).getheader("X-Pod").startswith("admin-")
    warnings = [line for line in proc.stderr if "warning" in line]
    assert warnings == [
        "[vibe] discovery found: warning: svc/web: ignored kubectl-vibe.io/ports: 'x:y:z'"
    ]
    assert not any("svc/plain" in line for line in proc.stderr)


# -- local ports ----------------------------------------------------------------------------------


def hold(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_held_port_is_named_and_with_auto_ports_the_next_free_one_is_taken(
    plugin: Plugin, sim_cluster: SimCluster
) -> None:
    add_app(sim_cluster, "web")
    sim_cluster.wait_for(lambda: sim_cluster.pods(ready=True))
    (wanted,) = free_ports(1)
    with hold(wanted):
        refused = plugin.run("svc/web", "%d:80" % wanted, "--address", "127.0.0.1")
        proc = plugin.start("svc/web", "%d:80" % wanted, "--address", "127.0.0.1", "--auto-ports")
        (chosen,) = forwarded(proc, 1)

    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1] == (
        "error: unable to listen on any of the requested ports: [{%d 8080}]" % wanted
    )
    holder = "port %d is held by pid %d (" % (wanted, os.getpid())
    assert any(holder in line for line in refused.stderr.splitlines()), refused.stderr
    assert chosen > wanted and get(chosen).status == 200
    proc.wait_line(
        r"\[vibe\] svc/web ports: %d:80: local port %d: port %d is held by pid %d"
        % (wanted, chosen, wanted, os.getpid()),
        stream="stderr",
    )


def test_ports_left_out_are_chosen_in_order_around_held_ones(plugin: Plugin, sim_cluster) -> None:
    add_app(sim_cluster, "web")
    add_app(sim_cluster, "shop")
    sim_cluster.wait_for(lambda: len(sim_cluster.pods(ready=True)) == 2)
    first = next(port for port in range(8080, 8180) if port_free(port))
    with hold(first):  # 80 -> 8080 (or the first free one above): taken, so the next ones
        expected = [port for port in range(first + 1, first + 100) if port_free(port)][:2]
        proc = plugin.start("svc/web", ":80", "svc/shop", ":80", "--address", "127.0.0.1")
        ports = forwarded(proc, 2)
    web = proc.wait_line(r"svc/web ports: :80: local port (\d+)", stream="stderr")
    shop = proc.wait_line(r"svc/shop ports: :80: local port (\d+)", stream="stderr")
    assert [int(web.group(1)), int(shop.group(1))] == expected == sorted(ports)


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- --balance ------------------------------------------------------------------------------------


def test_balance_spreads_300_connections_over_3_pods_and_follows_a_scale_down(
    plugin: Plugin, sim_cluster: SimCluster
) -> None:
    add_app(sim_cluster, "web", replicas=3)
    sim_cluster.wait_for(lambda: len(sim_cluster.pods("web", ready=True)) == 3)
    proc = plugin.start("svc/web", ":9000", "--balance")
    (port,) = forwarded(proc, 1)
    for pod in sim_cluster.pods("web"):
        proc.wait_line(r"pod %s joins the balance" % pod, stream="stderr")

    threads = [threading.Thread(target=echo, args=(port, b"x" * 1000)) for _ in range(300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    spread = {t["pod"]: t["streams_opened"] for t in sim_cluster.tunnels() if t["open"]}
    assert sum(spread.values()) == 300 and min(spread.values()) >= 90, spread  # least busy

    sim_cluster.scale("deploy", "web", 2)
    proc.wait_line(r"pod web-\S+ leaves the balance", stream="stderr", timeout=20)
    left = set(sim_cluster.pods("web"))
    sim_cluster.wait_for(lambda: {t["pod"] for t in sim_cluster.tunnels() if t["open"]} == left)
    before = {t["pod"]: t["streams_opened"] for t in sim_cluster.tunnels() if t["open"]}
    for _ in range(20):
        assert echo(port, b"after") == b"after"
    after = {t["pod"]: t["streams_opened"] for t in sim_cluster.tunnels() if t["open"]}
    assert set(after) == left and sum(after.values()) - sum(before.values()) == 20
    assert stop(proc) == 0
    shares = [line for line in proc.err.splitlines() if line.startswith("    balanced: ")]
    assert (
        len(shares) == 3
        and sum(int(re.search(r"(\d+) connections", line).group(1)) for line in shares) == 320
    )
