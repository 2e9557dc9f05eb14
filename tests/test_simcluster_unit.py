"""Fast checks of the simulator's pure parts (no kubectl): selectors, patches, SPDY bits."""

from __future__ import annotations

import json
import socket
import urllib.request
import zlib

import pytest

from .sim_backends import Backend, pattern_bytes
from .sim_tunnel import SPDY_DICTIONARY, kubelet_error, ws_accept
from .simcluster import (
    ContainerPort,
    ServicePort,
    SimCluster,
    _json_patch,
    _strategic_merge,
    field_matcher,
    kind_of,
    label_matcher,
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
