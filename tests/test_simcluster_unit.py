"""Fast checks of the simulator's pure parts (no kubectl): selectors, patches, SPDY bits."""

from __future__ import annotations

import asyncio
import hashlib
import http.client as http_client
import json
import socket
import urllib.error
import urllib.request
import zlib
from collections import deque
from typing import Optional, Tuple

import pytest

from .sim_backends import Backend, pattern_bytes
from .sim_tunnel import (
    FLAG_FIN,
    GOAWAY,
    MAX_FRAME,
    PING,
    QUEUE_HIGH,
    REFUSED_STREAM,
    RST_STREAM,
    SPDY_DICTIONARY,
    SYN_REPLY,
    SpdyClient,
    UpgradeRefused,
    kubelet_error,
    ws_accept,
)
from .simcluster import (
    ContainerPort,
    ServicePort,
    SimCluster,
    _json_patch,
    _strategic_merge,
    canonical_resource,
    expired_status,
    field_matcher,
    forbidden_status,
    kind_of,
    label_matcher,
    request_verb,
    selector_name,
)


def test_label_selectors():
    labels = {"app": "web", "tier": "front"}
    assert label_matcher("app=web,tier!=back")(labels)
    assert label_matcher("app in (web, api),!canary")(labels)
    assert not label_matcher("app notin (web)")(labels)
    assert label_matcher("tier")(labels) and not label_matcher("missing")(labels)
    assert label_matcher("")(labels)


def test_field_selectors():
    ev = {"involvedObject": {"name": "p", "kind": "Pod"}, "type": "Warning"}
    assert field_matcher("involvedObject.name=p,type==Warning")(ev)
    assert not field_matcher("type!=Warning")(ev)


def test_kind_aliases():
    assert kind_of("deploy").plural == kind_of("Deployment").plural == "deployments"
    assert kind_of("po").kind == "Pod" and kind_of("svc").plural == "services"
    with pytest.raises(ValueError):
        kind_of("widgets")


def test_patches():
    doc = {"spec": {"containers": [{"name": "a", "image": "x", "ports": [1]}, {"name": "b"}]}}
    patch = {
        "spec": {"$setElementOrder/containers": [], "containers": [{"name": "a", "image": "y"}]}
    }
    _strategic_merge(doc, patch)
    assert doc["spec"]["containers"][0] == {"name": "a", "image": "y", "ports": [1]}
    _json_patch(doc, [{"op": "replace", "path": "/spec/containers/1/name", "value": "c"}])
    _json_patch(doc, [{"op": "add", "path": "/metadata/labels", "value": {"k": "v"}}])
    assert doc["spec"]["containers"][1]["name"] == "c" and doc["metadata"]["labels"] == {"k": "v"}


def test_spdy_and_websocket_constants():
    assert len(SPDY_DICTIONARY) == 1423 and zlib.adler32(SPDY_DICTIONARY) == 3821447106
    # RFC 6455 section 1.3 example.
    assert ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert kubelet_error(80, "abc", "boom") == "error forwarding port 80 to pod abc, uid : boom"
    assert pattern_bytes(300)[255:258] == b"\xff\x00\x01"


def test_api_and_admin_without_kubectl(sim_cluster: SimCluster):
    sim_cluster.add_deployment("web", replicas=2, ports=[ContainerPort("http", 8080)])
    sim_cluster.add_service("web", {"app": "web"}, [ServicePort(80, "http", name="http")])
    url = sim_cluster.url + "/api/v1/namespaces/default/endpoints/web"
    ep = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert len(ep["subsets"][0]["addresses"]) == 2 and ep["subsets"][0]["ports"][0]["port"] == 8080
    req = urllib.request.Request(sim_cluster.admin_url + "/nope", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 404
    state = sim_cluster.state()
    assert {p["ip"] for p in state["pods"]} == {"10.244.0.11", "10.244.0.12"}


def test_backend_speakers_directly(sim_cluster: SimCluster):
    sim_cluster.add_pod("r", ports=[ContainerPort("redis", 6379)], backends={6379: Backend.redis()})
    port = sim_cluster.backend("r", 6379).port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        got = b""
        while got.count(b"\r\n") < 3:
            got += s.recv(100)
    assert got == b"+OK\r\n$1\r\nv\r\n"


###############################################################################
# API server faults: RBAC denials, SPDY refusal, watch expiry and bookmarks
###############################################################################

# The brief's example, byte for byte as kube-apiserver writes it.
PF_FORBIDDEN = (
    '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods '
    '\\"web-x\\" is forbidden: User \\"sim-user\\" cannot create resource \\"pods/portforward\\" '
    'in API group \\"\\" in the namespace \\"default\\"","reason":"Forbidden","details":'
    '{"name":"web-x","kind":"pods"},"code":403}'
)


def http(method: str, url: str, timeout: float = 5) -> Tuple[int, bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_request_verbs_like_the_authorizer():
    assert request_verb("GET", "p", None, {}) == "get"
    assert request_verb("GET", None, None, {}) == "list"
    assert request_verb("GET", None, None, {"watch": "1"}) == "watch"
    assert request_verb("GET", None, None, {"watch": "true"}) == "watch"
    assert request_verb("POST", "p", "portforward", {}) == "create"
    assert request_verb("GET", "p", "portforward", {}) == "create"  # the WebSocket upgrade
    assert request_verb("GET", "p", "log", {}) == "get"
    assert request_verb("DELETE", None, None, {}) == "deletecollection"
    assert [request_verb(m, "p", None, {}) for m in ("PUT", "PATCH", "DELETE")] == [
        "update",
        "patch",
        "delete",
    ]
    assert selector_name("metadata.name=web,status.phase=Running") == "web"
    assert selector_name("metadata.name==web") == "web"
    assert selector_name("metadata.name!=web") is None and selector_name(None) is None
    assert canonical_resource("po/portforward") == "pods/portforward"
    assert canonical_resource("deploy") == "deployments" and canonical_resource("*") == "*"


def test_forbidden_status_texts():
    st = forbidden_status("create", "", "pods", "portforward", "default", "web-x")
    assert json.dumps(st, separators=(",", ":")) == PF_FORBIDDEN
    st = forbidden_status("list", "", "pods", None, "default", "")
    assert st["message"] == (
        'pods is forbidden: User "sim-user" cannot list resource "pods" in API group "" '
        'in the namespace "default"'
    )
    assert st["details"] == {"kind": "pods"}
    st = forbidden_status("watch", "", "pods", None, "", "")
    assert st["message"].endswith(
        'cannot watch resource "pods" in API group "" at the cluster scope'
    )
    st = forbidden_status("get", "apps", "deployments", None, "prod", "web")
    assert st["message"] == (
        'deployments.apps "web" is forbidden: User "sim-user" cannot get resource "deployments" '
        'in API group "apps" in the namespace "prod"'
    )
    assert st["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    assert expired_status("12", 15)["message"] == "too old resource version: 12 (15)"


def test_forbid_over_http(sim_cluster: SimCluster):
    sim_cluster.add_namespace("other")
    api = sim_cluster.url + "/api/v1"
    sim_cluster.forbid("create", "pods/portforward", name="web-x")
    status, body = http("POST", api + "/namespaces/default/pods/web-x/portforward")
    assert (status, body) == (403, PF_FORBIDDEN.encode() + b"\n")  # before any 404
    assert http("POST", api + "/namespaces/default/pods/other/portforward")[0] == 404
    sim_cluster.forbid("list", "po", namespace="default")
    status, body = http("GET", api + "/namespaces/default/pods?limit=500")
    assert status == 403 and json.loads(body)["details"] == {"kind": "pods"}
    assert http("GET", api + "/namespaces/other/pods")[0] == 200
    assert http("GET", api + "/pods")[0] == 200  # all namespaces is not "in default"
    status, body = http("GET", api + "/namespaces/default/pods?fieldSelector=metadata.name%3Dp")
    assert json.loads(body)["message"].startswith(
        'pods "p" is forbidden: User "sim-user" cannot list'
    )
    admin = sim_cluster.admin_url
    assert http("POST", admin + "/allow-all") == (200, b'{"ok":true}\n')
    assert http("GET", api + "/namespaces/default/pods")[0] == 200
    assert http("POST", admin + "/forbid?verb=watch&resource=pods")[0] == 200
    assert sim_cluster.state()["denials"] == [
        {"verb": "watch", "resource": "pods", "namespace": None, "name": None}
    ]
    status, body = http("GET", api + "/pods?watch=1")
    assert status == 403 and json.loads(body)["message"].endswith("at the cluster scope")
    assert http("POST", admin + "/forbid?verb=get")[0] == 400  # resource is required
    http("POST", admin + "/forbid?verb=get&resource=namespaces")
    status, body = http("GET", api + "/namespaces/other")
    assert json.loads(body)["message"] == (
        'namespaces "other" is forbidden: User "sim-user" cannot get resource "namespaces" in '
        'API group "" in the namespace "other"'
    )
    sim_cluster.allow_all()
    assert http("GET", api + "/namespaces/other")[0] == 200


async def test_spdy_upgrade_refused(make_sim_cluster):
    sim = make_sim_cluster(spdy=False)
    sim.add_pod("p", ports=[ContainerPort("echo", 7000)], backends={7000: Backend.echo()})
    with pytest.raises(UpgradeRefused) as e:
        await SpdyClient.connect(sim.port, "default", "p")
    assert e.value.status == 400
    assert json.loads(e.value.body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "SPDY is not supported by this server",
        "reason": "BadRequest",
        "code": 400,
    }
    assert http("POST", sim.admin_url + "/spdy?on=1")[0] == 200
    c = await SpdyClient.connect(sim.port, "default", "p")
    _, data = c.open_pair(7000)
    c.data(data, b"back on", fin=True)
    assert (await c.read_stream(data))[0] == b"back on"
    c.close()
    sim.set_spdy(False)
    assert sim.state()["spdy"] is False


class WatchStream:
    """A raw watch request: its chunked JSON lines, one event at a time."""

    def __init__(self, sim: SimCluster, query: str, path: str = "/api/v1/namespaces/default/pods"):
        self.sock = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
        self.sock.sendall(
            b"GET %s?%s HTTP/1.1\r\nHost: x\r\n\r\n" % (path.encode(), query.encode())
        )
        self.file = self.sock.makefile("rb")
        while self.file.readline() not in (b"\r\n", b""):
            pass

    def event(self) -> Optional[dict]:
        """The next event, or None at the end of the stream."""
        size = int(self.file.readline(), 16)
        if size == 0:
            return None
        line = self.file.read(size)
        self.file.readline()
        return json.loads(line)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_watch_expiry(sim_cluster: SimCluster):
    sim_cluster.add_pod("a")
    rv = json.loads(http("GET", sim_cluster.url + "/api/v1/namespaces/default/pods")[1])[
        "metadata"
    ]["resourceVersion"]
    w = WatchStream(sim_cluster, "watch=true&resourceVersion=%s&labelSelector=x%%3Dy" % rv)
    sim_cluster.wait_for(lambda: sim_cluster.watches("pod"))
    assert sim_cluster.watches() == [
        {
            "plural": "pods",
            "namespace": "default",
            "labelSelector": "x=y",
            "fieldSelector": "",
            "resourceVersion": rv,
        }
    ]
    assert sim_cluster.expire_watches() == 1
    new = int(rv) + 1
    expired = {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "too old resource version: %s (%d)" % (rv, new),
            "reason": "Expired",
            "code": 410,
        },
    }
    assert w.event() == expired and w.event() is None
    w.close()
    assert sim_cluster.watches() == []
    # Later watches from before the expiry point: 200, the ERROR event, end of stream.
    w = WatchStream(sim_cluster, "watch=1&resourceVersion=%s" % rv)
    assert w.event() == expired and w.event() is None
    w.close()
    # A fresh list + watch works.
    rv2 = json.loads(http("GET", sim_cluster.url + "/api/v1/pods")[1])["metadata"][
        "resourceVersion"
    ]
    assert int(rv2) == new
    w = WatchStream(sim_cluster, "watch=1&resourceVersion=%s" % rv2, "/api/v1/pods")
    sim_cluster.add_pod("b")
    ev = w.event()
    assert ev["type"] == "ADDED" and ev["object"]["metadata"]["name"] == "b"
    assert sim_cluster.watches("pods")[0]["namespace"] is None
    assert http("POST", sim_cluster.admin_url + "/expire-watches") == (200, b'{"ok":1}\n')
    events = list(iter(w.event, None))  # b's status changes, then the ERROR
    assert events[-1]["type"] == "ERROR" and events[-1]["object"]["reason"] == "Expired"
    w.close()


def test_watch_older_than_the_change_log_expires(sim_cluster: SimCluster):
    with sim_cluster._cond:
        sim_cluster.store.log = deque(sim_cluster.store.log, maxlen=3)
    for i in range(4):
        sim_cluster.add_namespace("ns%d" % i)
    oldest = sim_cluster.store.log[0][0]
    w = WatchStream(sim_cluster, "watch=1&resourceVersion=%d" % (oldest - 2), "/api/v1/namespaces")
    assert w.event()["object"]["message"] == "too old resource version: %d (%d)" % (
        oldest - 2,
        oldest - 1,
    )
    w.close()
    w = WatchStream(sim_cluster, "watch=1&resourceVersion=%d" % (oldest - 1), "/api/v1/namespaces")
    assert w.event()["type"] == "ADDED"  # everything after it is still logged: replayed
    w.close()


def test_bookmarks(make_sim_cluster):
    sim = make_sim_cluster(bookmark_interval=0.1)
    sim.add_pod("a")
    w = WatchStream(sim, "watch=1&allowWatchBookmarks=true&fieldSelector=metadata.name%3Da")
    assert w.event()["type"] == "ADDED"
    rv = sim.get("pod", "a")["metadata"]["resourceVersion"]
    sim.add_pod("b")  # another object: the bookmark still carries the newest resourceVersion
    mark = w.event()
    assert mark == {
        "type": "BOOKMARK",
        "object": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(sim.store.rv)},
        },
    }
    assert int(mark["object"]["metadata"]["resourceVersion"]) > int(rv)
    assert w.event()["type"] == "BOOKMARK"
    w.close()
    # A streaming list keeps its initial-events-end bookmark first.
    w = WatchStream(
        sim,
        "watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
    )
    events = [w.event() for _ in range(3)]
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
    assert events[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    w.close()
    sim.bookmark_interval = 0  # off: nothing but events
    w = WatchStream(sim, "watch=1&allowWatchBookmarks=true&labelSelector=n%3Dm")
    w.sock.settimeout(0.4)
    with pytest.raises(socket.timeout):
        w.event()
    w.close()


def test_request_count(sim_cluster: SimCluster):
    base = sim_cluster.request_count()
    for _ in range(3):
        http("GET", sim_cluster.url + "/api/v1/namespaces/default/pods?limit=500")
    http("GET", sim_cluster.url + "/api/v1/nodes")
    assert sim_cluster.request_count() == base + 4
    assert sim_cluster.request_count("GET", "/api/v1/namespaces/default/pods") == 3
    assert sim_cluster.request_count("POST") == 0


def test_unreachable_and_back_on_the_same_port(sim_cluster: SimCluster):
    port = sim_cluster.port
    w = WatchStream(sim_cluster, "watch=1")
    sim_cluster.wait_for(lambda: sim_cluster.watches())
    keepalive = http_client.HTTPConnection("127.0.0.1", port, timeout=5)
    keepalive.request("GET", "/api/v1/namespaces")
    assert keepalive.getresponse().read()
    sim_cluster.set_reachable(False)
    with pytest.raises((ConnectionResetError, ValueError)):
        while w.event() is not None:  # dropped mid-stream, no final chunk
            pass
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    with pytest.raises((http_client.HTTPException, ConnectionError)):
        keepalive.request("GET", "/api/v1/namespaces")
        keepalive.getresponse()
    assert sim_cluster.watches() == []
    sim_cluster.set_reachable(False)  # idempotent
    sim_cluster.set_reachable(True)
    assert sim_cluster.port == port
    assert http("GET", sim_cluster.url + "/api/v1/namespaces")[0] == 200
    sim_cluster.set_reachable(True)
    w.close()
    keepalive.close()


###############################################################################
# SPDY details a native client relies on (raw SPDY, no kubectl)
###############################################################################


async def _pair(sim: SimCluster, pod: str, port: int) -> Tuple[SpdyClient, int, int]:
    c = await SpdyClient.connect(sim.port, "default", pod)
    err, data = c.open_pair(port)
    replies = [await c.frame(), await c.frame()]
    assert [(f.ftype, f.sid) for f in replies] == [(SYN_REPLY, err), (SYN_REPLY, data)]
    return c, err, data


async def test_spdy_settings_window_update_ping_and_big_frames(sim_cluster: SimCluster):
    sim_cluster.add_pod("s", ports=[ContainerPort("sink", 7001)], backends={7001: Backend.sha256()})
    c, _, data = await _pair(sim_cluster, "s", 7001)
    c.settings({4: 1000, 7: 1 << 20})  # MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE
    c.window_update(data, 1 << 20)
    c.window_update(0, 1 << 20)
    c.ping(7)
    f = await c.frame()
    assert (f.ftype, f.sid) == (PING, 7)
    sent = hashlib.sha256()
    for size in (1 << 20, MAX_FRAME, 5):  # 1 MiB, 16 MiB - 1, and a small one
        chunk = pattern_bytes(size)
        sent.update(chunk)
        c.data(data, chunk)
        await c.drain()
    c.data(data, b"", fin=True)
    got, others = await c.read_stream(data)
    assert got.decode().split() == [sent.hexdigest(), str((1 << 20) + MAX_FRAME + 5)]
    assert others == []
    c.close()


async def test_spdy_backpressure_when_the_backend_lags(sim_cluster: SimCluster):
    """A stalled backend: the tunnel stops reading after QUEUE_HIGH bytes (the client's TCP
    window closes, as with a kubelet), then everything arrives once it flows again."""
    sim_cluster.add_pod("s", ports=[ContainerPort("sink", 7001)], backends={7001: Backend.sha256()})
    c, _, data = await _pair(sim_cluster, "s", 7001)
    sim_cluster.tunnel_faults.stall("s")
    chunk, sent = pattern_bytes(1 << 20), 0
    with pytest.raises(asyncio.TimeoutError):
        while sent < 8 * QUEUE_HIGH:
            c.data(data, chunk)
            sent += len(chunk)
            await asyncio.wait_for(c.drain(), 0.5)
    session = sim_cluster._tunnels[0].session
    assert session.streams[data].queued <= QUEUE_HIGH + len(chunk)
    sim_cluster.tunnel_faults.stall("s", False)
    c.data(data, b"", fin=True)
    got, _ = await c.read_stream(data)
    assert got.decode().split()[1] == str(sent)
    c.close()


async def test_spdy_goaway_lets_open_streams_finish(sim_cluster: SimCluster):
    sim_cluster.add_pod("e", ports=[ContainerPort("echo", 7000)], backends={7000: Backend.echo()})
    c, err, data = await _pair(sim_cluster, "e", 7000)
    c.data(data, b"one")
    assert (await c.frame()).data == b"one"
    sim_cluster.tunnel_faults.goaway("e")
    f = await c.frame()
    assert (f.ftype, f.sid, f.status) == (GOAWAY, data, 0)  # last good stream id, status OK
    assert sim_cluster.tunnels("e")[0]["going_away"] is True
    # A stream opened after the GOAWAY is refused and its data dropped...
    err2, data2 = c.open_pair(7000)
    c.data(data2, b"dropped", fin=True)
    refused = [await c.frame(), await c.frame()]
    assert [(f.ftype, f.sid, f.status) for f in refused] == [
        (RST_STREAM, err2, REFUSED_STREAM),
        (RST_STREAM, data2, REFUSED_STREAM),
    ]
    # ...while the one already open carries on to its end.
    c.data(data, b"two", fin=True)
    got, others = await c.read_stream(data)
    assert got == b"two" and all(f.ftype == 0 for f in others)
    assert sim_cluster.tunnels("e")[0]["streams_opened"] == 1
    c.ping(1)
    f = await c.frame()
    assert (f.ftype, f.sid, f.flags) == (0, err, FLAG_FIN)  # the pair's end: error stream FIN
    assert (await c.frame()).ftype == PING  # the connection stays up for the client to close
    c.close()
