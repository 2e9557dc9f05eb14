"""The simulated cluster, driven through the real kubectl binary (1.37 and the image's 1.32).

Every test id names the kubectl it ran (``kubectl-1.37`` / ``kubectl-1.32``) and, for
port-forward, the transport (``websocket`` / ``spdy``).  The version seen by the server is also
asserted from the User-Agent kubectl sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml

from .kubectl_proc import (
    PF_TRANSPORT_ENV,
    Kubectl,
    KubectlProcess,
    kubectl_version,
    venv_kubectl,
)
from .sim_backends import pattern_bytes, tls_files
from .simcluster import Backend, ContainerPort, ServicePort, SimCluster

pytestmark = pytest.mark.e2e

LOST = "error: lost connection to pod"


@pytest.fixture
def transport(pf_transport: str) -> str:
    return pf_transport


@pytest.fixture
def web(sim_cluster: SimCluster) -> SimCluster:
    """Deployment ``web`` (2 pods) with HTTP, echo, sha256-sink, TLS and refusing ports."""
    sim_cluster.add_deployment(
        "web",
        replicas=2,
        ports=[
            ContainerPort("http", 8080),
            ContainerPort("echo", 7000),
            ContainerPort("sink", 7001),
            ContainerPort("https", 8443),
            ContainerPort("dead", 9999),
        ],
        backends={
            8080: Backend.http(),
            7000: Backend.echo(),
            7001: Backend.sha256(),
            8443: Backend.tls(),
            9999: Backend.refuse(),
        },
    )
    sim_cluster.add_service(
        "web",
        selector={"app": "web"},
        ports=[ServicePort(80, "http", name="http"), ServicePort(7000, "echo", name="echo")],
    )
    return sim_cluster


def forward(kubectl, transport: str, *args: str) -> tuple[KubectlProcess, int]:
    p = kubectl.bg("port-forward", *args, env=PF_TRANSPORT_ENV[transport])
    return p, p.local_port()


def http_get(port: int, path: str = "/", timeout: float = 10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def echo_roundtrip(port: int, payload: bytes, timeout: float = 20) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        out = bytearray()

        def send() -> None:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=send)
        t.start()
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            out += chunk
        t.join()
        return bytes(out)


def poke(port: int, data: bytes = b"") -> bytes:
    """One connection through a tunnel that is about to fail: kubectl may close it with a
    RST (unread bytes), so a reset counts as the end too."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            if data:
                s.sendall(data)
            return s.recv(1)
        except ConnectionResetError:
            return b""


def assert_version_seen(sim: SimCluster, kubectl) -> None:
    agents = " | ".join(sim.user_agents)
    assert "kubectl" in agents, agents
    # The image's kubectl is a gcloud dispatcher that may exec a sibling build; report it.
    print("kubectl %s at %s; server saw: %s" % (kubectl.version, kubectl.path, agents))


###############################################################################
# get / describe / discovery
###############################################################################


def test_get_formats_and_selectors(kubectl, web):
    pods = web.pods("web-")
    assert len(pods) == 2
    r = kubectl("get", "pods", "-o", "json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)["items"]
    assert sorted(i["metadata"]["name"] for i in items) == pods
    assert all(i["status"]["phase"] == "Running" for i in items)
    r = kubectl("get", "deploy", "web", "-o", "yaml")
    doc = yaml.safe_load(r.stdout)
    assert doc["kind"] == "Deployment" and doc["status"]["readyReplicas"] == 2
    r = kubectl("get", "pods")
    assert re.match(r"NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE", r.stdout), r.stdout
    assert r.stdout.count("Running") == 2
    r = kubectl("get", "pods", "-l", "app=web", "-o", "name")
    assert sorted(r.stdout.split()) == ["pod/" + p for p in pods]
    r = kubectl("get", "pods", "-l", "app in (nope)")
    assert r.returncode == 0 and "No resources found in default namespace." in r.stderr
    r = kubectl("get", "pods", "--field-selector", "metadata.name=%s" % pods[0], "-o", "name")
    assert r.stdout.split() == ["pod/" + pods[0]]
    r = kubectl("get", "svc", "web", "-o", "jsonpath={.spec.ports[0].targetPort}")
    assert r.stdout == "http"
    r = kubectl("get", "endpoints,endpointslices,rs,ns,nodes,events", "-o", "name")
    assert r.returncode == 0, r.stderr
    assert "endpoints/web" in r.stdout and "namespace/default" in r.stdout
    r = kubectl("get", "pod", "nope")
    assert r.returncode == 1 and 'Error from server (NotFound): pods "nope" not found' in r.stderr
    r = kubectl("describe", "pod", pods[0])
    assert r.returncode == 0 and "Controlled By:  ReplicaSet/web-" in r.stdout
    assert "Started container app" in r.stdout
    assert_version_seen(web, kubectl)


def test_get_watch_sees_changes(kubectl, sim_cluster):
    sim_cluster.add_pod("alpha")
    w = kubectl.bg("get", "pods", "-w")
    w.wait_line(r"^alpha\s+1/1\s+Running")
    sim_cluster.add_pod("beta", start_delay=0.3)
    w.wait_line(r"^beta\s+0/1\s+(Pending|ContainerCreating)")
    w.wait_line(r"^beta\s+1/1\s+Running")
    sim_cluster.restart_container("alpha", reason="OOMKilled", exit_code=137)
    w.wait_line(r"^alpha\s+0/1\s+CrashLoopBackOff\s+1 \(")
    w.stop()


###############################################################################
# wait
###############################################################################


def test_wait_condition_while_state_changes(kubectl, sim_cluster):
    sim_cluster.add_pod("slow", start_delay=0.3, ready_delay=1.0)
    t0 = time.monotonic()
    r = kubectl("wait", "--for=condition=Ready", "pod/slow", "--timeout=20s")
    assert r.returncode == 0 and r.stdout.strip() == "pod/slow condition met", r.stderr
    assert time.monotonic() - t0 > 0.8
    assert any("watch=true" in path for _, path in sim_cluster.requests)
    if kubectl.minor >= 35:
        assert any("sendInitialEvents=true" in path for _, path in sim_cluster.requests)


def test_conditions_phases_and_events_on_timers(kubectl, sim_cluster):
    sim_cluster.add_pod("flip")
    sim_cluster.set_condition("pod", "flip", "Ready", "False", "Flipped", "by a timer", after=0.5)
    r = kubectl("wait", "--for=condition=Ready=false", "pod/flip", "--timeout=20s")
    assert r.returncode == 0, r.stderr
    sim_cluster.set_condition("pod", "flip", "example.com/Degraded", "True", after=0.3)
    r = kubectl("wait", "--for=condition=example.com/degraded", "pod/flip", "--timeout=20s")
    assert r.returncode == 0, r.stderr
    sim_cluster.set_phase("flip", "Succeeded", after=0.3)
    r = kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/flip", "--timeout=20s")
    assert r.returncode == 0, r.stderr
    sim_cluster.emit_event("pod", "flip", "Unhealthy", "Readiness probe failed: 503", "Warning")
    r = kubectl(
        "get", "events", "--field-selector", "involvedObject.name=flip,type=Warning", "-o", "json"
    )
    events = json.loads(r.stdout)["items"]
    assert [(e["reason"], e["message"]) for e in events] == [
        ("Unhealthy", "Readiness probe failed: 503")
    ]


def test_wait_delete_jsonpath_create(kubectl, sim_cluster):
    sim_cluster.add_pod("doomed")
    sim_cluster.create_later(0.5, lambda: sim_cluster.delete("pod", "doomed"))
    r = kubectl("wait", "--for=delete", "pod/doomed", "--timeout=20s")
    assert r.returncode == 0 and "pod/doomed condition met" in r.stdout, r.stderr

    sim_cluster.add_pod("late-runner", start_delay=0.8)
    r = kubectl(
        "wait", "--for=jsonpath={.status.phase}=Running", "pod/late-runner", "--timeout=20s"
    )
    assert r.returncode == 0 and "condition met" in r.stdout, r.stderr

    manifest = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": "born-later", "labels": {"app": "later"}},
        "spec": {
            "containers": [{"name": "app", "image": "busybox", "ports": [{"containerPort": 80}]}]
        },
    }
    sim_cluster.create_later(0.8, manifest)
    r = kubectl("wait", "--for=create", "pod/born-later", "--timeout=20s")
    assert r.returncode == 0 and "pod/born-later condition met" in r.stdout, r.stderr


def test_wait_deployment_after_pod_replacement(kubectl, web):
    victim = web.pods("web-")[0]
    old = web.get("pod", victim)
    web.replace_delay = 1.5  # room for a slow kubectl to see the deployment unavailable
    r = kubectl("delete", "pod", victim)
    assert r.returncode == 0 and 'pod "%s" deleted' % victim in r.stdout, r.stderr
    r = kubectl(
        "get", "deploy", "web", "-o", "jsonpath={.status.conditions[?(@.type=='Available')].status}"
    )
    assert r.stdout == "False"
    r = kubectl("wait", "--for=condition=Available", "deploy/web", "--timeout=20s")
    assert r.returncode == 0, r.stderr
    names = web.pods("web-", ready=True)
    assert len(names) == 2 and victim not in names
    new = [web.get("pod", n) for n in names if n != old["metadata"]["name"]]
    assert {p["status"]["podIP"] for p in new}.isdisjoint({old["status"]["podIP"]})
    reasons = [e["reason"] for e in web.list("events")]
    assert "Killing" in reasons and "SuccessfulCreate" in reasons


def test_rollouts_and_graceful_delete(kubectl, web):
    before = set(web.pods("web-"))
    r = kubectl("rollout", "restart", "deploy/web")
    assert r.returncode == 0, r.stderr
    r = kubectl("rollout", "status", "deploy/web", "--timeout=30s")
    assert r.returncode == 0 and 'deployment "web" successfully rolled out' in r.stdout, r.stderr
    after = set(web.pods("web-", ready=True))
    assert len(after) == 2 and not after & before and set(web.pods("web-")) == after
    r = kubectl("set", "image", "deploy/web", "app=nginx:1.28")
    assert r.returncode == 0, r.stderr
    r = kubectl("rollout", "status", "deploy/web", "--timeout=30s")
    assert r.returncode == 0, r.stderr
    pods = [web.get("pod", n) for n in web.pods("web-")]
    assert [p["spec"]["containers"][0]["image"] for p in pods] == ["nginx:1.28"] * 2
    assert next(cp["name"] for cp in pods[0]["spec"]["containers"][0]["ports"]) == "http"
    r = kubectl("get", "rs", "-o", "name")
    assert len(r.stdout.split()) == 3
    web.rollout("web", image="nginx:1.29")
    web.wait_for(
        lambda: (
            [
                web.get("pod", n)["spec"]["containers"][0]["image"]
                for n in web.pods("web-", ready=True)
            ]
            == ["nginx:1.29"] * 2
            and len(web.pods("web-")) == 2
        ),
        timeout=20,
    )
    r = kubectl("scale", "deploy/web", "--replicas=3")
    assert r.returncode == 0, r.stderr
    web.wait_for(lambda: len(web.pods("web-", ready=True)) == 3, timeout=20)
    assert [r["spec"]["replicas"] for r in web.list("rs")].count(0) == 3  # old ones stay at 0
    victim = web.pods("web-")[0]
    web.delete_pod(victim, grace=30)
    r = kubectl("get", "pod", victim)
    assert re.search(r"0/1\s+Terminating", r.stdout), r.stdout


def test_job_complete_and_failed(kubectl, sim_cluster):
    sim_cluster.add_job("ok", duration=0.5)
    sim_cluster.add_job("bad", duration=60)
    sim_cluster.create_later(0.5, lambda: sim_cluster.fail_job("bad"))
    r = kubectl("wait", "--for=condition=Complete", "job/ok", "--timeout=20s")
    assert r.returncode == 0, r.stderr
    r = kubectl("wait", "--for=condition=Failed", "job/bad", "--timeout=20s")
    assert r.returncode == 0, r.stderr


###############################################################################
# pod faults visible through get / describe
###############################################################################


def test_pod_faults_in_status_and_events(kubectl, web):
    p0, p1 = web.pods("web-")
    web.restart_container(p0, reason="OOMKilled", exit_code=137)
    pod = json.loads(kubectl("get", "pod", p0, "-o", "json").stdout)
    cs = pod["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 1
    assert cs["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert cs["lastState"]["terminated"]["exitCode"] == 137
    r = kubectl("get", "events", "--field-selector", "type=Warning,reason=BackOff", "-o", "json")
    assert any(p0 in e["message"] for e in json.loads(r.stdout)["items"])
    web.wait_for(lambda: p0 in web.pods(ready=True))
    r = kubectl("logs", p0, "--previous")
    assert r.returncode == 0 and "fatal error: runtime: out of memory" in r.stdout, r.stderr
    r = kubectl("logs", p1, "--previous")
    assert r.returncode == 1
    assert 'previous terminated container "app" in pod "%s" not found' % p1 in r.stderr

    web.make_unschedulable(p1)
    r = kubectl("get", "pod", p1)
    assert re.search(r"0/1\s+Pending", r.stdout), r.stdout
    r = kubectl("describe", "pod", p1)
    assert "FailedScheduling" in r.stdout and "Insufficient cpu" in r.stdout

    bad = web.make_image_pull_backoff("deploy/web", "registry.invalid/web:nope")
    r = kubectl("get", "pod", bad)
    assert "ImagePullBackOff" in r.stdout, r.stdout
    web.patch_status("pod", p0, {"phase": "Failed"})
    r = kubectl("get", "pod", p0, "-o", "jsonpath={.status.phase}")
    assert r.stdout == "Failed"


###############################################################################
# port-forward
###############################################################################


def test_port_forward_targets(kubectl, web, transport):
    pod = web.pods("web-")[0]
    rs = web.list("rs")[0]["metadata"]["name"]
    http = dict(ports=[ContainerPort("http", 8080)], backends={8080: Backend.http()})
    web.add_statefulset("st", replicas=2, labels={"app": "st"}, **http)
    web.add_daemonset("agent", labels={"app": "agent"}, **http)
    web.add_job("batch", duration=600, labels={"app": "batch"}, **http)
    # Headless: kubectl ignores targetPort and forwards to the Service port itself.
    web.add_service("st", {"app": "st"}, [ServicePort(8080, "nope", name="web")], headless=True)
    for target, spec, remote in (
        ("pod/" + pod, ":8080", 8080),
        ("svc/web", ":80", 8080),
        ("deploy/web", ":http", None),
        ("rs/" + rs, ":8080", 8080),
        ("sts/st", ":http", None),
        ("svc/st", ":8080", 8080),
        ("ds/agent", ":8080", 8080),
        ("job/batch", ":8080", 8080),
    ):
        p = kubectl.bg("port-forward", target, spec, env=PF_TRANSPORT_ENV[transport])
        m = p.wait_line(r"^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)$")
        if remote:
            assert int(m.group(2)) == remote
        status, _headers, body = http_get(int(m.group(1)))
        assert status == 200 and body.startswith(b"hello from "), body
        p.wait_line(r"^Handling connection for %s$" % m.group(1))
        assert p.stop() == 0  # SIGINT: clean exit
    kinds = {t["transport"] for t in web.tunnels()}
    assert kinds <= {transport}
    assert web.tunnels_opened() == 8
    assert web.tunnels_opened("st-0") == 2  # sts/st and svc/st both pick the oldest pod


def test_port_forward_waits_for_a_pod(kubectl, sim_cluster):
    """svc/ with no pods yet: kubectl watches by label selector until one appears."""
    sim_cluster.add_service("later", {"app": "later"}, [ServicePort(80, "http", name="http")])
    sim_cluster.create_later(
        0.5, lambda: sim_cluster.add_deployment("later", ports=[ContainerPort("http", 8080)])
    )
    p = kubectl.bg("port-forward", "svc/later", ":80", "--pod-running-timeout=20s")
    assert http_get(p.local_port(20))[0] == 200
    p2 = kubectl.bg("port-forward", "svc/nothing", ":80", "--pod-running-timeout=1s")
    assert p2.wait(15) == 1
    assert p2.stderr[-1] == 'Error from server (NotFound): services "nothing" not found'


def test_port_forward_falls_back_to_spdy(kubectl_bin, make_sim_cluster):
    sim = make_sim_cluster(websockets=False)  # no PortForwardWebsockets: 400 on the upgrade
    sim.add_pod("p", ports=[ContainerPort("http", 8080)])
    k = Kubectl(kubectl_bin, kubectl_version(kubectl_bin), sim.env())
    try:
        p = k.bg("port-forward", "pod/p", ":8080")
        assert http_get(p.local_port())[0] == 200
        assert [t["transport"] for t in sim.tunnels("p")] == ["spdy"]
    finally:
        k.close()


async def test_usable_from_asyncio(kubectl, sim_cluster):
    """pytest-asyncio tests share the same API; the cluster runs on its own loop."""
    sim_cluster.add_pod(
        "a", ports=[ContainerPort("echo", 7000)], backends={7000: Backend.echo()}, ready_delay=0.2
    )
    await sim_cluster.async_wait_for(lambda: "a" in sim_cluster.pods(ready=True), timeout=5)
    proc = await asyncio.create_subprocess_exec(
        kubectl.path,
        "port-forward",
        "pod/a",
        ":7000",
        env=kubectl.env,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        port = int(re.match(r"Forwarding from 127\.0\.0\.1:(\d+)", line).group(1))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"async hello")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b"async hello"
        writer.close()
        await sim_cluster.async_wait_for(lambda: sim_cluster.active_streams("a") == 0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def test_many_concurrent_connections(kubectl, web, transport):
    p, port = forward(kubectl, transport, "deploy/web", ":7000")
    payloads = [os.urandom(32 * 1024 + i) for i in range(60)]
    with concurrent.futures.ThreadPoolExecutor(60) as pool:
        got = list(pool.map(lambda b: echo_roundtrip(port, b), payloads))
    assert got == payloads
    assert sum(t["streams_opened"] for t in web.tunnels()) == 60
    assert len(web.tunnels()) == 1
    web.wait_for(lambda: web.active_streams() == 0)
    assert p.proc.poll() is None


@pytest.mark.slow
def test_large_transfers_byte_exact(kubectl, web, transport):
    pod = web.pods("web-")[0]
    p, _ = forward(kubectl, transport, "pod/" + pod, ":7000", ":8080", ":7001")
    ports = [
        int(p.wait_line(r"^Forwarding from 127\.0\.0\.1:(\d+) -> %d$" % remote).group(1))
        for remote in (7000, 8080, 7001)
    ]
    # Both ways at once through the echo port: 100 MiB on kubectl's default path, else 24 MiB.
    big = os.urandom((100 if transport == "websocket" and kubectl.minor >= 37 else 24) << 20)
    got = echo_roundtrip(ports[0], big, timeout=120)
    assert len(got) == len(big) and hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
    del big, got
    size = 24 * 1024 * 1024
    data = os.urandom(size)
    # Download.
    status, _, body = http_get(ports[1], "/bytes/%d" % size, timeout=60)
    assert (
        status == 200
        and hashlib.sha256(body).digest() == hashlib.sha256(pattern_bytes(size)).digest()
    )
    # Upload, then half-close; the sink answers after our FIN.
    with socket.create_connection(("127.0.0.1", ports[2]), timeout=60) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer = s.makefile("rb").read()
    assert answer.decode().split() == [hashlib.sha256(data).hexdigest(), str(size)]


def test_half_close_and_protocol_speakers(kubectl, sim_cluster, transport):
    sim_cluster.add_pod(
        "sink", ports=[ContainerPort("sink", 7001)], backends={7001: Backend.sha256()}
    )
    sim_cluster.add_deployment(
        "db", ports=[ContainerPort("postgres", 5432)], backends={5432: Backend.postgres()}
    )
    sim_cluster.add_deployment(
        "cache", ports=[ContainerPort("redis", 6379)], backends={6379: Backend.redis()}
    )
    sim_cluster.add_deployment(
        "mysql", ports=[ContainerPort("mysql", 3306)], backends={3306: Backend.mysql()}
    )
    _, port = forward(kubectl, transport, "pod/sink", ":7001")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"hello")
        s.shutdown(socket.SHUT_WR)
        assert s.makefile("rb").read() == ("%s 5\n" % hashlib.sha256(b"hello").hexdigest()).encode()
    _, port = forward(kubectl, transport, "deploy/cache", ":6379")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert s.recv(100) == b"+PONG\r\n"
    _, port = forward(kubectl, transport, "deploy/db", ":5432")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # SSLRequest
        assert s.recv(1) == b"N"
        startup = b"\x00\x03\x00\x00user\x00postgres\x00\x00"
        s.sendall(len(startup).to_bytes(4, "big") + startup)
        buf = b""
        while not buf.endswith(b"Z\x00\x00\x00\x05I"):
            buf += s.recv(4096)
        assert buf.startswith(b"R\x00\x00\x00\x08\x00\x00\x00\x00")
    _, port = forward(kubectl, transport, "deploy/mysql", ":3306")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        head = s.recv(4)
        body = s.recv(int.from_bytes(head[:3], "little"))
        assert body[0] == 10 and b"mysql_native_password" in body


def test_tls_backend_through_tunnel(kubectl, web, transport):
    _, port = forward(kubectl, transport, "deploy/web", ":8443")
    ctx = ssl.create_default_context(cafile=tls_files()[0])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = s.makefile("rb").read()
    assert data.startswith(b"HTTP/1.1 200 OK") and b"hello from web-" in data


def test_backend_faults(kubectl, web, transport):
    pod = web.pods("web-")[0]
    _, port = forward(kubectl, transport, "pod/" + pod, ":8080")
    srv = web.backend(pod, 8080)
    srv.return_status(503)
    assert http_get(port)[0] == 503
    srv.return_status(None)
    srv.slow(0.3)
    t0 = time.monotonic()
    assert http_get(port)[0] == 200 and time.monotonic() - t0 >= 0.3
    srv.slow(0)
    assert srv.requests == 2
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /delay/5 HTTP/1.1\r\nHost: x\r\n\r\n")
        web.wait_for(lambda: srv.requests == 3)
        srv.reset_connections()
        with pytest.raises(ConnectionResetError):
            s.recv(10)


###############################################################################
# pod death and tunnel faults: kubectl's exact reactions
###############################################################################


def _error_line(kubectl, local: int, remote: int) -> str:
    if kubectl.minor >= 37:
        return (
            r'"An error occurred forwarding" err="error forwarding port %d to pod [0-9a-f]{64}, '
            r'uid : %%s" localPort=%d remotePort=%d' % (remote, local, remote)
        )
    return (
        r'"Unhandled Error" err="an error occurred forwarding %d -> %d: '
        r"error forwarding port %d to pod [0-9a-f]{64}, uid : %%s" % (local, remote, remote)
    )


def test_pod_deleted_with_active_connection(kubectl, web, transport):
    pod = web.pods("web-")[0]
    p, port = forward(kubectl, transport, "pod/" + pod, ":7000")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"ping")
        assert s.recv(4) == b"ping"
        web.delete_pod(pod)
        assert p.wait(15) == 1
    reset = (
        r'failed to execute portforward in network namespace \\"/var/run/netns/cni-[0-9a-f]+\\": '
        r"read tcp4 127\.0\.0\.1:\d+->127\.0\.0\.1:7000: read: connection reset by peer"
    )
    assert re.search(_error_line(kubectl, port, 7000) % reset, p.err), p.err
    assert p.stderr[-1] == LOST


def test_pod_deleted_while_idle(kubectl, web, transport):
    pod = web.pods("web-")[0]
    p, port = forward(kubectl, transport, "pod/" + pod, ":8080")
    assert http_get(port)[0] == 200
    web.wait_for(lambda: web.active_streams() == 0)
    web.delete_pod(pod, replace_delay=0.1)
    web.wait_for(lambda: len(web.pods("web-", ready=True)) == 2 and pod not in web.pods())
    assert p.proc.poll() is None  # kubectl never watches the pod
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        http_get(port, timeout=5)
    assert p.wait(15) == 1
    assert re.search(
        _error_line(kubectl, port, 8080)
        % r'failed to find sandbox \\"[0-9a-f]{64}\\" in store: not found',
        p.err,
    ), p.err
    assert p.stderr[-1] == LOST


def test_tunnel_faults(kubectl, web, transport):
    pod = web.pods("web-")[0]
    p, port = forward(kubectl, transport, "pod/" + pod, ":7000")
    # Clean EOF: that connection ends, kubectl keeps running.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        web.tunnel_faults.eof(pod)
        assert s.recv(10) == b""
    assert echo_roundtrip(port, b"still alive") == b"still alive"
    assert p.proc.poll() is None
    # Stall: bytes stop flowing until released.
    web.tunnel_faults.stall(pod)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"stuck")
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(5)
        web.tunnel_faults.stall(pod, False)
        s.settimeout(10)
        assert s.recv(5) == b"stuck"
    # Error text on the next connection: kubectl gives up on the whole tunnel.
    web.tunnel_faults.error(pod, on="next")
    poke(port, b"y")
    assert p.wait(15) == 1
    assert "read: connection reset by peer" in p.err and p.stderr[-1] == LOST
    # Abrupt close (GOAWAY + TCP close / WebSocket close) of an idle tunnel.
    p2, _ = forward(kubectl, transport, "pod/" + pod, ":8080")
    web.tunnel_faults.close(pod)
    assert p2.wait(15) == 1 and p2.stderr[-1] == LOST


def test_port_refused_while_container_restarts(kubectl, web):
    pod = web.pods("web-")[0]
    p, port = forward(kubectl, "websocket", "pod/" + pod, ":8080")
    assert http_get(port)[0] == 200
    web.wait_for(lambda: web.active_streams(pod) == 0)  # else the restart resets it
    web.restart_container(pod, reason="Error", exit_code=1, back_off=30, refuse=True)
    poke(port)
    assert p.wait(15) == 1
    assert "failed to connect to localhost:8080 inside namespace" in p.err, p.err
    assert (
        web.get("pod", pod)["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"]
        == "Error"
    )


def test_refused_port(kubectl, web, transport):
    pod = web.pods("web-")[0]
    p, port = forward(kubectl, transport, "pod/" + pod, ":9999")
    poke(port)
    assert p.wait(15) == 1
    assert "failed to connect to localhost:9999 inside namespace" in p.err, p.err
    assert "connect: connection refused" in p.err and p.stderr[-1] == LOST


###############################################################################
# API server faults: RBAC, SPDY refused, watch expiry, bookmarks, unreachable
###############################################################################

PF_FORBIDDEN = (
    'pods "web-x" is forbidden: User "sim-user" cannot create resource "pods/portforward" '
    'in API group "" in the namespace "default"'
)


def upgrade_error(kubectl, message: str) -> str:
    """kubectl's line when the port-forward upgrade is answered with a Status: 1.37 adds
    "unable to upgrade connection: " (1.27-1.33 do not; 1.34-1.36 were not checked)."""
    prefix = "unable to upgrade connection: " if kubectl.minor >= 37 else ""
    return "error: error upgrading connection: %s%s\n" % (prefix, message)


def test_forbidden_port_forward(kubectl, sim_cluster, transport):
    """Both transports print the same: a 403 on the WebSocket upgrade falls back to SPDY."""
    sim_cluster.add_pod("web-x", ports=[ContainerPort("http", 8080)])
    sim_cluster.forbid("create", "pods/portforward")
    r = kubectl("port-forward", "pod/web-x", "8080", env=PF_TRANSPORT_ENV[transport])
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == upgrade_error(kubectl, PF_FORBIDDEN)
    assert sim_cluster.tunnels_opened() == 0
    pf = "/api/v1/namespaces/default/pods/web-x/portforward"
    assert sim_cluster.request_count("POST", pf) == 1
    assert sim_cluster.request_count("GET", pf) == (1 if transport == "websocket" else 0)
    sim_cluster.allow_all()
    _, port = forward(kubectl, transport, "pod/web-x", ":8080")
    assert http_get(port)[0] == 200


def test_forbidden_get_and_list(kubectl, sim_cluster):
    sim_cluster.add_deployment("web", ports=[ContainerPort("http", 8080)])
    sim_cluster.forbid("list", "pods")
    r = kubectl("get", "pods")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        'Error from server (Forbidden): pods is forbidden: User "sim-user" cannot list resource '
        '"pods" in API group "" in the namespace "default"\n'
    )
    r = kubectl("get", "pods", "-A")
    assert r.returncode == 1 and r.stderr.endswith('in API group "" at the cluster scope\n')
    sim_cluster.forbid("get", "deploy", namespace="default", name="web")
    r = kubectl("get", "deploy", "web")
    assert r.stderr == (
        'Error from server (Forbidden): deployments.apps "web" is forbidden: User "sim-user" '
        'cannot get resource "deployments" in API group "apps" in the namespace "default"\n'
    )
    assert kubectl("get", "deploy").returncode == 0  # a list is another verb
    sim_cluster.allow_all()
    r = kubectl("get", "pods", "-o", "name")
    assert r.returncode == 0 and r.stdout.startswith("pod/web-")


def test_spdy_refused(kubectl, sim_cluster, transport):
    """No SPDY: kubectl's default WebSocket transport forwards; SPDY-only kubectl fails."""
    sim_cluster.add_pod("web-x", ports=[ContainerPort("http", 8080)])
    sim_cluster.set_spdy(False)
    if transport == "websocket":
        _, port = forward(kubectl, transport, "pod/web-x", ":8080")
        assert http_get(port)[0] == 200
        assert [t["transport"] for t in sim_cluster.tunnels()] == ["websocket"]
        return
    r = kubectl("port-forward", "pod/web-x", "8080", env=PF_TRANSPORT_ENV[transport])
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == upgrade_error(kubectl, "SPDY is not supported by this server")


def test_watch_expiry(kubectl, sim_cluster):
    """410 Expired: ``kubectl wait`` re-watches or relists and carries on; ``get -w`` does
    not relist: it prints the Status as a row and exits 0 (both versions)."""
    sim_cluster.add_pod("alpha")
    w = kubectl.bg("get", "pods", "-w", "-l", "run=alpha")
    w.wait_line(r"^alpha\s+1/1\s+Running")
    (watch,) = sim_cluster.wait_for(lambda: sim_cluster.watches("pods"))
    assert watch["labelSelector"] == "run=alpha" and watch["resourceVersion"].isdigit()
    assert sim_cluster.expire_watches() == 1
    assert w.wait(15) == 0
    assert w.stdout[-2:] == [
        "STATUS    REASON    MESSAGE",
        "Failure   Expired   too old resource version: %s (%d)"
        % (watch["resourceVersion"], int(watch["resourceVersion"]) + 1),
    ]
    sim_cluster.add_pod("slow", ready_delay=3600)  # made Ready by hand below
    p = kubectl.bg("wait", "--for=condition=Ready", "pod/slow", "--timeout=30s")
    sim_cluster.wait_for(lambda: sim_cluster.watches("pods"))
    assert sim_cluster.expire_watches() == 1
    sim_cluster.wait_for(lambda: sim_cluster.watches("pods"))  # watching again
    watches = [t for _, t in sim_cluster.requests if "watch=true" in t and "slow" in t]
    assert len(watches) == 2
    if kubectl.minor < 35:  # list + watch: a relist from the last resourceVersion in between
        assert sim_cluster.request_count("GET", "/api/v1/namespaces/default/pods?field") == 2
    sim_cluster.set_condition("pod", "slow", "Ready", "True")
    assert p.wait(20) == 0 and p.out == "pod/slow condition met"


def test_wait_with_frequent_bookmarks(kubectl_bin, make_sim_cluster):
    sim = make_sim_cluster(bookmark_interval=0.1)
    k = Kubectl(kubectl_bin, kubectl_version(kubectl_bin), sim.env())
    try:
        sim.add_pod("slow", ready_delay=0.6)
        r = k("wait", "--for=condition=Ready", "pod/slow", "--timeout=20s")
        assert r.returncode == 0 and r.stdout == "pod/slow condition met\n", r.stderr
        assert any("allowWatchBookmarks=true" in t for _, t in sim.requests)
    finally:
        k.close()


def test_api_server_unreachable(kubectl, sim_cluster, transport):
    sim_cluster.add_pod(
        "web-x", ports=[ContainerPort("echo", 7000)], backends={7000: Backend.echo()}
    )
    p, port = forward(kubectl, transport, "pod/web-x", ":7000")
    w = kubectl.bg("get", "pods", "-w")
    w.wait_line(r"^web-x\s")
    sim_cluster.wait_for(lambda: sim_cluster.watches("pods"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"hi")
        assert s.recv(2) == b"hi"
        sim_cluster.set_reachable(False)
        assert s.recv(10) == b""  # the tunnel's TCP connection dropped
    assert p.wait(15) == 1 and p.stderr[-1] == LOST
    assert w.wait(15) == 0  # get -w ends quietly when its watch connection drops
    r = kubectl("get", "pods")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        "The connection to the server 127.0.0.1:%d was refused - did you specify the right "
        "host or port?\n" % sim_cluster.port
    )
    sim_cluster.set_reachable(True)
    r = kubectl("get", "pods", "-o", "name")
    assert (r.returncode, r.stdout) == (0, "pod/web-x\n")
    _, port = forward(kubectl, transport, "pod/web-x", ":7000")
    assert echo_roundtrip(port, b"back") == b"back"


def test_tunnel_goaway_ends_kubectl(kubectl, web, transport):
    """kubectl does not let its open connections finish after a GOAWAY: exit 1 at once."""
    pod = web.pods("web-")[0]
    p, port = forward(kubectl, transport, "pod/" + pod, ":7000")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        web.tunnel_faults.goaway(pod)
        assert p.wait(15) == 1 and p.stderr[-1] == LOST
        assert s.recv(10) == b""  # the open connection is cut, not allowed to finish


###############################################################################
# outside pytest: demo CLI, admin endpoint, traffic generator; hygiene
###############################################################################


def test_demo_cli_admin_and_traffic(tmp_path):
    kubectl_bin = venv_kubectl()  # this checks the CLI, not kubectl: one version is enough
    assert kubectl_bin
    kc = tmp_path / "kc" / "kubeconfig"
    here = os.path.dirname(os.path.abspath(__file__))
    demo = subprocess.Popen(
        [
            sys.executable,
            os.path.join(here, "simcluster.py"),
            "demo",
            "--kubeconfig",
            str(kc),
            "--replace-delay",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    k = None
    try:
        line = demo.stdout.readline()
        m = re.match(
            r"simcluster ready: KUBECONFIG=(\S+) admin=(http://127\.0\.0\.1:\d+/_sim)$",
            line.strip(),
        )
        assert m and m.group(1) == str(kc), line
        admin = m.group(2)
        env = dict(
            os.environ,
            KUBECONFIG=str(kc),
            KUBECACHEDIR=str(tmp_path / "cache"),
            KUBECTL_KUBERC="false",
        )
        k = Kubectl(kubectl_bin, kubectl_version(kubectl_bin), env)
        r = k(
            "wait",
            "--for=condition=Available",
            "deploy/web",
            "deploy/db",
            "deploy/cache",
            "--timeout=20s",
        )
        assert r.returncode == 0, r.stderr
        p = k.bg("port-forward", "svc/web", ":80")
        port = p.local_port()
        t = subprocess.run(
            [
                sys.executable,
                os.path.join(here, "traffic.py"),
                "--url",
                "http://127.0.0.1:%d" % port,
                "--duration",
                "1.0",
                "--rate",
                "20",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        summary = json.loads(t.stdout)
        assert summary["requests"] > 10 and summary["errors"] == 0, summary
        assert sum(summary["status"].values()) == summary["requests"]
        state = state_of(admin)
        assert web_requests(state) >= summary["requests"]
        victim = next(x["name"] for x in state["pods"] if x["name"].startswith("web-"))
        req = urllib.request.Request(admin + "/delete-pod?name=" + victim, method="POST")
        assert json.loads(urllib.request.urlopen(req, timeout=5).read()) == {"ok": True}
        r = k("wait", "--for=delete", "pod/" + victim, "--timeout=10s")
        assert r.returncode == 0, r.stderr
    finally:
        if k is not None:
            k.close()
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(10) == 0
        demo.stdout.close()


def state_of(admin: str) -> dict:
    return json.loads(urllib.request.urlopen(admin + "/state", timeout=5).read())


def web_requests(state: dict) -> int:
    return sum(x["requests"] for x in state["pods"] if x["name"].startswith("web-"))


def test_start_stop_leaves_no_threads():
    before = set(threading.enumerate())
    t0 = time.monotonic()
    sim = SimCluster().start()
    assert time.monotonic() - t0 < 0.5
    sim.add_deployment("w", replicas=3, ports=[ContainerPort("http", 8080)])
    sim.delete_pod(sim.pods("w-")[0], replace_delay=0.05)
    sim.wait_for(lambda: len(sim.pods("w-", ready=True)) == 3)
    port = sim.backend(sim.pods("w-")[0], 8080).port
    assert http_get(port)[0] == 200
    sim.stop()
    assert set(threading.enumerate()) <= before
