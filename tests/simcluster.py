"""A simulated Kubernetes cluster that the real ``kubectl`` binary talks to.

Standard library only; runs on CPython 3.9+.  A plain-HTTP API server on 127.0.0.1:<free port>
runs on its own asyncio loop in a background thread.  Pods are records in an in-memory store;
each container port of a pod is backed by a real local server (see ``sim_backends``) and
``kubectl port-forward`` reaches it through a SPDY/3.1 tunnel, either inside WebSocket messages
(kubectl's default) or over legacy SPDY (``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``); see
``sim_tunnel``.  Pod IPs (10.244.x.y) and cluster IPs are labels only: nothing routes to them.

Quick start (``tests`` is a package; from the repo root)::

    from tests.simcluster import Backend, ContainerPort, ServicePort, SimCluster

    with SimCluster() as sim:                       # starts in a few ms
        sim.add_deployment("web", replicas=2, ports=[ContainerPort("http", 8080)],
                           backends={8080: Backend.http()})
        sim.add_service("web", {"app": "web"}, [ServicePort(80, "http", name="http")])
        subprocess.run(["kubectl", "get", "pods"], env=sim.env())
        sim.delete_pod(sim.pods("web-")[0])        # replaced after ``replace_delay``
        sim.wait_for(lambda: len(sim.pods("web-", ready=True)) == 2, timeout=10)

Public API (every mutating method is thread-safe: it runs on the cluster's loop and returns
once applied; reads take the store lock and never block on the loop; calling a blocking method
from the cluster's own loop raises RuntimeError).  Pytest fixtures live in ``conftest.py``
(``sim_cluster``, ``make_sim_cluster(**options)``, ``kubectl_bin``, ``kubectl``,
``pf_transport``); kubectl process helpers in ``kubectl_proc.py``.

Lifecycle
    SimCluster(namespace="default", replace_delay=0.5, start_delay=0.1, ready_delay=0.1,
               kubeconfig_dir=None, websockets=True, spdy=True, bookmark_interval=5.0)
        websockets=False / spdy=False: 400 on that port-forward upgrade (the other works);
        bookmark_interval: seconds between BOOKMARKs on watches with allowWatchBookmarks
        (<= 0: none; streaming lists always get their initial-events-end bookmark)
    .start() -> self; .stop(); context manager; .url; .port; .admin_url; .kubeconfig (path of
    a kubeconfig: context ``sim``, namespace ``default``, no auth); .env(base=None) -> dict for
    subprocesses (os.environ + KUBECONFIG, a fresh KUBECACHEDIR, KUBECTL_KUBERC=false, NO_PROXY)
Objects (``kind`` accepts kubectl spellings: "pod", "pods", "po", "deploy", "svc", ...)
    ContainerPort(name, port, protocol="TCP"); ServicePort(port, target_port=None, name=None,
        protocol="TCP"); Backend.http() / .echo() / .sha256() / .tls() / .refuse() /
        .postgres() / .redis() / .mysql()  (TCP ports without a backend get Backend.http())
    add_namespace(name)
    add_pod(name, ports=(), backends=None, labels=None, image="nginx:1.27", namespace=None,
            start_delay=0, ready_delay=0, unschedulable=False, containers=None) -> name
    add_deployment(name, replicas=1, ports=(), backends=None, labels=None, image=...,
                   start_delay=0, ready_delay=0, namespace=None, containers=None) -> name
    add_replicaset(name, replicas, **same) / add_statefulset(name, replicas, **same) /
        add_daemonset(name, **same) / add_job(name, completions=1, duration=1.0, **same)
    add_service(name, selector, ports=(), headless=False, namespace=None, type="ClusterIP")
        (Endpoints and EndpointSlices follow pods automatically)
    create_later(delay, obj)  obj: a manifest dict, or a callable such as
        ``lambda: sim.add_pod("late")``
    delete(kind, name); get(kind, name) -> dict | None; list(kind, namespace=None,
        labels=None) -> [dict]; pods(prefix=None, ready=None) -> [names]
    patch(kind, name, patch, after=0, type="merge"|"strategic"|"json")
    patch_status(kind, name, status: dict, after=0); set_phase(pod, phase, after=0)
    set_condition(kind, name, type, status="True", reason="", message="", after=0)
    scale(kind, name, replicas); rollout(deployment, image=None)  (one new pod Ready, one
        old pod deleted, repeat)
    emit_event(kind, name, reason, message, type="Normal", namespace=None)
Faults
    delete_pod(name, replace_delay=None, grace=0)  live tunnels get containerd's "connection
        reset by peer" on their error streams, new streams ``failed to find sandbox``; owners
        recreate it (new name or, for StatefulSets, same name; new IP; Pending->Running->Ready).
        ``grace`` keeps it Terminating (not Ready, still forwarding) that long first.
    restart_container(pod, reason="OOMKilled", exit_code=137, container=None, back_off=0.3,
        refuse=False)  (restartCount+1, lastState.terminated, CrashLoopBackOff + Warning BackOff
        event for ``back_off`` s; open connections are reset; ``refuse``: ports refuse meanwhile)
    make_image_pull_backoff(target, image)  target "deploy/x" (a new ReplicaSet whose pod is
        stuck Pending in ImagePullBackOff) or a pod name; make_unschedulable(pod)
    fail_job(name); complete_job(name)
    backend(pod, port) -> BackendServer with .slow(s), .return_status(code|None),
        .reset_connections(), .connections, .requests, .port (the real 127.0.0.1 port)
    tunnel_faults.error(pod, message=None, on="active"|"next"|"each")
    tunnel_faults.eof(pod, on=...); tunnel_faults.close(pod, on=...)  (GOAWAY + TCP close,
        or a WebSocket close frame); tunnel_faults.goaway(pod, on=...) (GOAWAY; open streams
        finish, later SYN_STREAMs get RST_STREAM REFUSED_STREAM; kubectl exits 1 at once with
        ``lost connection to pod``); tunnel_faults.stall(pod, stalled=True, streams=False)
        (``streams``: new streams get no SYN_REPLY either: kubectl's "Timeout occurred" after
        30 s); tunnel_faults.clear(pod=None)
    Texts: sim_tunnel.MSG_RESET / MSG_SANDBOX_GONE / MSG_REFUSED, wrapped by kubelet_error().
    Tunnels also accept SETTINGS and WINDOW_UPDATE (ignored), echo PINGs, take data frames of
    any size (to 16 MiB - 1), and stop reading while a backend lags (sim_tunnel.QUEUE_HIGH
    bytes queued), so the client's TCP window closes as with a kubelet.
    sim_tunnel.SpdyClient: a raw SPDY/3.1 port-forward client for tests (what a native
    client sends through ``kubectl proxy``).
API server faults
    forbid(verb, resource, namespace=None, name=None)  RBAC denial: 403 with kube-apiserver's
        Status (``forbidden_status()``, user ``SIM_USER`` "sim-user"); resource "pods",
        "pods/portforward", "deploy", "*"; verb "*" or what the authorizer sees: get (one
        object), list, watch (``watch=1``), create (POST; port-forward on both transports),
        update, patch, delete, deletecollection.  None = any namespace (and the cluster scope)
        / any name (a ``metadata.name=`` field selector counts as a name).  allow_all()
    set_spdy(on)  off: ``Upgrade: SPDY/3.1`` port-forwards get 400 "SPDY is not supported by
        this server" (kubectl 1.37 prints ``error: error upgrading connection: unable to
        upgrade connection: SPDY is not supported by this server``); WebSocket still works
    expire_watches() -> int  every live watch gets ERROR ``too old resource version: OLD
        (NEW)`` (410, reason Expired) and ends; later watches from an older resourceVersion
        get that event at once (HTTP 200), as do watches older than the change log (5,000);
        a fresh list + watch works.  ``kubectl wait`` carries on; ``kubectl get -w`` prints
        the Status as a row and exits 0
    set_reachable(False)  the port is closed (kubectl: ``The connection to the server
        127.0.0.1:PORT was refused ...``) and every API connection drops: watches, tunnels
        (kubectl port-forward: ``lost connection to pod``); set_reachable(True) listens again
        on the same port.  Python only (the admin endpoint is down meanwhile)
Observability
    tunnels_opened(pod=None) -> int; active_streams(pod=None) -> int; tunnels(pod=None) -> [dict
        with transport, open, going_away, active_streams, streams_opened, bytes_up, bytes_down]
    watches(plural=None) -> [dict with plural, namespace (None: all), labelSelector,
        fieldSelector, resourceVersion ("" if none)] of the live watch streams
    request_count(method=None, path_prefix=None) -> int (over ``requests``; the prefix is
        matched against path and query)
    state() -> dict (as GET /_sim/state: pods, tunnels, watches, denials, spdy, websockets);
    requests: [(method, path)] (the last 5,000-10,000); user_agents: (str, ...);
    SIMCLUSTER_DEBUG=1 in the environment logs every API request to stderr
    wait_for(predicate, timeout=10) -> value  (condition variable, woken by every store and
        tunnel change; raises TimeoutError); await async_wait_for(predicate, timeout=10)
Admin endpoint (same port, for shells and the demo): ``POST /_sim/<action>?k=v`` (all take an
    optional ``namespace``) with actions delete-pod(name, delay), restart-container(pod,
    reason, exit_code, back_off, refuse=1), image-pull-backoff(target, image),
    unschedulable(pod), fail-job(name), scale(kind, name, replicas), tunnel-error(pod,
    message, on), tunnel-eof(pod, on), tunnel-close(pod), tunnel-goaway(pod, on), stall(pod,
    on=1|0, streams=1),
    clear-faults(pod), backend(pod, port, slow, status, reset=1), set-condition(kind, name,
    type, status, reason, message, after), set-phase(pod, phase, after), emit-event(kind,
    name, reason, message, type); API server faults forbid(verb, resource, namespace, name)
    (no namespace: any), allow-all, spdy(on=0|1), expire-watches; and ``GET /_sim/state``.
    Example::

        curl -XPOST "$ADMIN/delete-pod?name=web-2tj49vgw4n-9r2tm"
        curl -XPOST "$ADMIN/backend?pod=web-2tj49vgw4n-9r2tm&port=8080&status=503"
CLI: ``python3 tests/simcluster.py demo [--kubeconfig PATH] [--chaos SECONDS]`` (or ``python
    -m tests.simcluster demo``) starts the demo scenario (``web`` 2 replicas behind svc ``web``
    80/http -> ``http`` 8080, ``db`` Postgres 5432, ``cache`` Redis 6379), writes the
    kubeconfig, prints ``simcluster ready: KUBECONFIG=<path> admin=<url>``, and runs until
    SIGINT/SIGTERM; ``--chaos N`` deletes a web pod every N seconds.  Demo recipe::

        python3 tests/simcluster.py demo --kubeconfig /tmp/sim/kubeconfig --chaos 20 &
        export KUBECONFIG=/tmp/sim/kubeconfig KUBECTL_KUBERC=false
        kubectl vibe pf svc/web 8080:80 &
        python3 tests/traffic.py --url http://127.0.0.1:8080 --duration 60

What kubectl can do against it (verified with kubectl 1.37.1 and the image's 1.32.4, both
port-forward transports, by ``tests/test_simcluster.py``): discovery (legacy JSON), get (JSON,
YAML, server-side Tables, label/field selectors, ``-A``, ``-w``), describe, logs (a start-up
line plus the HTTP backends' access log; ``--previous`` after a restart, 400 before), wait
(condition, delete, jsonpath, create; streaming lists with the initial-events-end bookmark),
delete, scale, label/annotate, patch, set image, rollout restart/status, ``events``,
``api-resources``, ``run``, ``create/apply -f`` with ``--validate=false``, port-forward to
pod/svc/deploy/rs/sts/ds/job (both transports, fallback to SPDY), and kubectl's exact
reactions to 403 Forbidden, refused SPDY upgrades, 410 Expired watches, frequent bookmarks,
GOAWAY and an unreachable API server.  Also checked by hand:
the gcloud SDK's kubectl 1.27, 1.30 (SPDY), 1.31 and 1.33 (WebSocket) forward, wait, and exit 1
with ``error: lost connection to pod`` when the pod is deleted.

Known gaps: no /openapi (client-side validation needs ``--validate=false``); typed-client
creates such as ``kubectl create deployment`` send protobuf and get 415; no authentication and
RBAC only as ``forbid()`` denials (no ``auth can-i``); no exec/attach/cp; ``logs -f`` does not
follow; lists ignore resourceVersion; one node (``sim-node``); UDP ports have no backend.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import copy
import datetime
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import deque
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

try:  # imported as part of the ``tests`` package
    from . import sim_backends, sim_tunnel
except ImportError:  # imported with tests/ on sys.path (pytest rootdir-less layout, CLI)
    import sim_backends  # type: ignore[no-redef]
    import sim_tunnel  # type: ignore[no-redef]

Backend = sim_backends.Backend
BackendServer = sim_backends.BackendServer

###############################################################################
# Helpers #####################################################################
###############################################################################


class ContainerPort(NamedTuple):
    name: Optional[str]
    port: int
    protocol: str = "TCP"


class ServicePort(NamedTuple):
    """A Service port: ``ServicePort(80, "http", name="http")``; ``target_port`` is a number or
    a container port name, and defaults to ``port``."""

    port: int
    target_port: Union[int, str, None] = None
    name: Optional[str] = None
    protocol: str = "TCP"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_RNG = random.Random()


def _suffix(n: int = 5, rng: random.Random = _RNG) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


def _age(ts: Optional[str]) -> str:
    if not ts:
        return "<unknown>"
    then = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc
    )
    s = max(0, int((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds()))
    if s < 120:
        return "%ds" % s
    if s < 600:
        return "%dm%ds" % (s // 60, s % 60) if s % 60 else "%dm" % (s // 60)
    if s < 3 * 3600:
        return "%dm" % (s // 60)
    if s < 48 * 3600:
        return "%dh" % (s // 3600)
    return "%dd" % (s // 86400)


def _merge(dst: dict, patch: dict) -> dict:
    """JSON merge patch (RFC 7386), in place."""
    for k, v in patch.items():
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def _merge_key(items: list) -> Optional[str]:
    for key in ("name", "containerPort", "type", "port", "ip"):
        if items and all(isinstance(i, dict) and key in i for i in items):
            return key
    return None


def _strategic_merge(dst: dict, patch: dict) -> dict:
    """Enough of a strategic merge patch for kubectl: lists of named items merge by key."""
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            _strategic_merge(dst[k], v)
        elif isinstance(v, list) and isinstance(dst.get(k), list) and _merge_key(v):
            key = _merge_key(v)
            out = dst[k]
            for item in v:
                if item.get("$patch") == "delete":
                    out[:] = [o for o in out if o.get(key) != item.get(key)]
                    continue
                for o in out:
                    if isinstance(o, dict) and o.get(key) == item[key]:
                        _strategic_merge(o, item)
                        break
                else:
                    out.append(_strategic_merge({}, item))
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def _json_patch(doc: dict, ops: list) -> dict:
    """RFC 6902 add / replace / remove (what ``kubectl patch --type=json`` sends)."""
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if op["op"] == "remove":
                parent.pop(idx)
            elif op["op"] == "add":
                parent.insert(idx, copy.deepcopy(op["value"]))
            else:
                parent[idx] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            parent.pop(last, None)
        elif op["op"] in ("add", "replace"):
            parent[last] = copy.deepcopy(op["value"])
    return doc


def _dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


###############################################################################
# Kinds and selectors #########################################################
###############################################################################


class Kind(NamedTuple):
    kind: str
    plural: str
    group: str
    version: str
    namespaced: bool
    short: Tuple[str, ...]

    @property
    def api_version(self) -> str:
        return "%s/%s" % (self.group, self.version) if self.group else self.version


_K = [
    Kind("Namespace", "namespaces", "", "v1", False, ("ns",)),
    Kind("Node", "nodes", "", "v1", False, ("no",)),
    Kind("Pod", "pods", "", "v1", True, ("po",)),
    Kind("Service", "services", "", "v1", True, ("svc",)),
    Kind("Endpoints", "endpoints", "", "v1", True, ("ep",)),
    Kind("Event", "events", "", "v1", True, ("ev",)),
    Kind("ConfigMap", "configmaps", "", "v1", True, ("cm",)),
    Kind("ReplicationController", "replicationcontrollers", "", "v1", True, ("rc",)),
    Kind("Deployment", "deployments", "apps", "v1", True, ("deploy",)),
    Kind("ReplicaSet", "replicasets", "apps", "v1", True, ("rs",)),
    Kind("StatefulSet", "statefulsets", "apps", "v1", True, ("sts",)),
    Kind("DaemonSet", "daemonsets", "apps", "v1", True, ("ds",)),
    Kind("Job", "jobs", "batch", "v1", True, ()),
    Kind("EndpointSlice", "endpointslices", "discovery.k8s.io", "v1", True, ()),
]
KINDS: Dict[str, Kind] = {k.plural: k for k in _K}
_ALIASES: Dict[str, str] = {}
for _k in _K:
    for _a in (_k.plural, _k.kind.lower(), _k.kind, *_k.short):
        _ALIASES[_a] = _k.plural


def kind_of(name: str) -> Kind:
    try:
        return KINDS[_ALIASES.get(name, _ALIASES.get(name.lower(), name.lower()))]
    except KeyError:
        raise ValueError("unknown kind %r" % name) from None


def _split_top(s: str) -> List[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [p.strip() for p in out if p.strip()]


def label_matcher(selector: Optional[str]) -> Callable[[dict], bool]:
    """kubectl label selector syntax: ``a=b,c!=d,e in (f,g),h notin (i),j,!k``."""
    reqs = []
    for term in _split_top(selector or ""):
        m = re.match(r"^([\w./-]+)\s+(in|notin)\s+\((.*)\)$", term)
        if m:
            vals = {v.strip() for v in m.group(3).split(",")}
            reqs.append((m.group(1), m.group(2), vals))
        elif "!=" in term:
            k, v = term.split("!=", 1)
            reqs.append((k.strip(), "notin", {v.strip()}))
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            reqs.append((k.strip(), "in", {v.strip()}))
        elif term.startswith("!"):
            reqs.append((term[1:].strip(), "absent", set()))
        else:
            reqs.append((term, "exists", set()))

    def match(labels: dict) -> bool:
        for key, op, vals in reqs:
            has = key in labels
            if op == "in" and not (has and labels[key] in vals):
                return False
            if op == "notin" and has and labels[key] in vals:
                return False
            if op == "exists" and not has:
                return False
            if op == "absent" and has:
                return False
        return True

    return match


def field_matcher(selector: Optional[str]) -> Callable[[dict], bool]:
    reqs = []
    for term in _split_top(selector or ""):
        neg = "!=" in term
        k, v = term.split("!=" if neg else "=", 1)
        reqs.append((k.strip(), v.lstrip("=").strip(), neg))

    def match(obj: dict) -> bool:
        for key, val, neg in reqs:
            got = _dig(obj, key)
            got = "" if got is None else str(got)
            if (got == val) == neg:
                return False
        return True

    return match


def _selector_string(match_labels: dict) -> str:
    return ",".join("%s=%s" % kv for kv in sorted(match_labels.items()))


###############################################################################
# Tables ######################################################################
###############################################################################


def _col(name: str, type_: str = "string", priority: int = 0, fmt: str = "") -> dict:
    return {"name": name, "type": type_, "format": fmt, "description": name, "priority": priority}


def _pod_row(p: dict) -> list:
    st = p.get("status", {})
    cs = st.get("containerStatuses", [])
    ready = sum(1 for c in cs if c.get("ready"))
    total = len(p["spec"].get("containers", []))
    status = st.get("phase", "Unknown")
    for c in cs:
        w = c.get("state", {}).get("waiting")
        t = c.get("state", {}).get("terminated")
        if w and w.get("reason"):
            status = w["reason"]
        elif t and t.get("reason") and status not in ("Succeeded", "Failed"):
            status = t["reason"]
    if p["metadata"].get("deletionTimestamp"):
        status = "Terminating"
    for c in st.get("conditions", []):
        if c["type"] == "PodScheduled" and c["status"] == "False":
            status = "Pending"
    restarts = sum(c.get("restartCount", 0) for c in cs)
    rtext = str(restarts)
    last = [
        c["lastState"]["terminated"].get("finishedAt")
        for c in cs
        if c.get("lastState", {}).get("terminated")
    ]
    if restarts and last:
        rtext = "%d (%s ago)" % (restarts, _age(max(last)))
    return [
        p["metadata"]["name"],
        "%d/%d" % (ready, total),
        status,
        rtext,
        _age(p["metadata"].get("creationTimestamp")),
        st.get("podIP") or "<none>",
        p["spec"].get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _svc_ports(s: dict) -> str:
    return ",".join(
        "%d/%s" % (p["port"], p.get("protocol", "TCP")) for p in s["spec"].get("ports", [])
    )


_TABLES: Dict[str, Tuple[List[dict], Callable[[dict], list]]] = {
    "pods": (
        [
            _col("Name", fmt="name"),
            _col("Ready"),
            _col("Status"),
            _col("Restarts"),
            _col("Age"),
            _col("IP", priority=1),
            _col("Node", priority=1),
            _col("Nominated Node", priority=1),
            _col("Readiness Gates", priority=1),
        ],
        _pod_row,
    ),
    "deployments": (
        [
            _col("Name", fmt="name"),
            _col("Ready"),
            _col("Up-to-date", "integer"),
            _col("Available", "integer"),
            _col("Age"),
        ],
        lambda d: [
            d["metadata"]["name"],
            "%d/%d" % (d["status"].get("readyReplicas", 0), d["spec"].get("replicas", 0)),
            d["status"].get("updatedReplicas", 0),
            d["status"].get("availableReplicas", 0),
            _age(d["metadata"].get("creationTimestamp")),
        ],
    ),
    "services": (
        [
            _col("Name", fmt="name"),
            _col("Type"),
            _col("Cluster-IP"),
            _col("External-IP"),
            _col("Port(s)"),
            _col("Age"),
            _col("Selector", priority=1),
        ],
        lambda s: [
            s["metadata"]["name"],
            s["spec"].get("type", "ClusterIP"),
            s["spec"].get("clusterIP", "<none>"),
            "<none>",
            _svc_ports(s) or "<none>",
            _age(s["metadata"].get("creationTimestamp")),
            _selector_string(s["spec"].get("selector") or {}) or "<none>",
        ],
    ),
    "replicasets": (
        [
            _col("Name", fmt="name"),
            _col("Desired", "integer"),
            _col("Current", "integer"),
            _col("Ready", "integer"),
            _col("Age"),
        ],
        lambda r: [
            r["metadata"]["name"],
            r["spec"].get("replicas", 0),
            r["status"].get("replicas", 0),
            r["status"].get("readyReplicas", 0),
            _age(r["metadata"].get("creationTimestamp")),
        ],
    ),
    "statefulsets": (
        [_col("Name", fmt="name"), _col("Ready"), _col("Age")],
        lambda r: [
            r["metadata"]["name"],
            "%d/%d" % (r["status"].get("readyReplicas", 0), r["spec"].get("replicas", 0)),
            _age(r["metadata"].get("creationTimestamp")),
        ],
    ),
    "jobs": (
        [_col("Name", fmt="name"), _col("Status"), _col("Completions"), _col("Age")],
        lambda j: [
            j["metadata"]["name"],
            _job_status(j),
            "%d/%d" % (j["status"].get("succeeded", 0), j["spec"].get("completions", 1)),
            _age(j["metadata"].get("creationTimestamp")),
        ],
    ),
    "events": (
        [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")],
        lambda e: [
            _age(e.get("lastTimestamp")),
            e.get("type", "Normal"),
            e.get("reason", ""),
            "%s/%s" % (e["involvedObject"]["kind"].lower(), e["involvedObject"]["name"]),
            e.get("message", ""),
        ],
    ),
    "endpoints": (
        [_col("Name", fmt="name"), _col("Endpoints"), _col("Age")],
        lambda e: [
            e["metadata"]["name"],
            ",".join(
                "%s:%s" % (a["ip"], p["port"])
                for ss in e.get("subsets", [])
                for a in ss.get("addresses", [])
                for p in ss.get("ports", [])
            )
            or "<none>",
            _age(e["metadata"].get("creationTimestamp")),
        ],
    ),
    "endpointslices": (
        [
            _col("Name", fmt="name"),
            _col("AddressType"),
            _col("Ports"),
            _col("Endpoints"),
            _col("Age"),
        ],
        lambda e: [
            e["metadata"]["name"],
            e.get("addressType", "IPv4"),
            ",".join(str(p["port"]) for p in e.get("ports", [])) or "<unset>",
            ",".join(a for ep in e.get("endpoints", []) for a in ep["addresses"]) or "<unset>",
            _age(e["metadata"].get("creationTimestamp")),
        ],
    ),
    "namespaces": (
        [_col("Name", fmt="name"), _col("Status"), _col("Age")],
        lambda n: [
            n["metadata"]["name"],
            n.get("status", {}).get("phase", "Active"),
            _age(n["metadata"].get("creationTimestamp")),
        ],
    ),
}


def _job_status(j: dict) -> str:
    for c in j["status"].get("conditions", []):
        if c["status"] == "True" and c["type"] in ("Complete", "Failed"):
            return c["type"]
    return "Running"


def make_table(plural: str, objs: List[dict], rv: str, full: bool = False) -> dict:
    cols, row = _TABLES.get(
        plural,
        (
            [_col("Name", fmt="name"), _col("Age")],
            lambda o: [o["metadata"]["name"], _age(o["metadata"].get("creationTimestamp"))],
        ),
    )
    rows = []
    for o in objs:
        meta_obj = (
            o
            if full
            else {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            }
        )
        rows.append({"cells": row(o), "object": meta_obj})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": cols,
        "rows": rows,
    }


###############################################################################
# Store #######################################################################
###############################################################################


class Watcher:
    """One live watch stream.  Store changes that match are queued as (type, object); a
    ``None`` in the queue ends the stream (see ``end``)."""

    def __init__(
        self,
        plural: str,
        ns: Optional[str],
        labels: str,
        fields: str,
        rv: str = "",
        table: bool = False,
        full: bool = False,
    ):
        self.plural, self.ns = plural, ns
        self.labels, self.fields, self.rv = labels, fields, rv
        self.table, self.full = table, full  # server-side Table rows (kubectl get -w)
        self._labels, self._fields = label_matcher(labels), field_matcher(fields)
        self.queue: asyncio.Queue = asyncio.Queue()
        #: The newest resourceVersion the client has been sent: where it would resume from.
        self.last_rv = rv

    def end(self, final: Optional[Tuple[str, dict]] = None) -> None:
        """End the stream after the events already queued (and ``final``, e.g. an ERROR)."""
        if final is not None:
            self.queue.put_nowait(final)
        self.queue.put_nowait(None)

    def describe(self) -> dict:
        return {
            "plural": self.plural,
            "namespace": self.ns,
            "labelSelector": self.labels,
            "fieldSelector": self.fields,
            "resourceVersion": self.rv,
        }

    def matches(self, obj: Optional[dict]) -> bool:
        if obj is None:
            return False
        if self.ns is not None and obj["metadata"].get("namespace") != self.ns:
            return False
        return self._labels(obj["metadata"].get("labels") or {}) and self._fields(obj)

    def offer(self, etype: str, obj: dict, old: Optional[dict]) -> None:
        new_ok, old_ok = self.matches(obj), self.matches(old)
        if etype == "DELETED":
            if new_ok:
                self.queue.put_nowait(("DELETED", obj))
        elif new_ok:
            self.queue.put_nowait(("MODIFIED" if old_ok else "ADDED", obj))
        elif old_ok:
            self.queue.put_nowait(("DELETED", obj))


class Store:
    """Objects by (plural, namespace, name).  Mutated only on the loop thread, under ``lock``."""

    def __init__(self, lock: threading.Condition):
        self.lock = lock
        self.objects: Dict[Tuple[str, str, str], dict] = {}
        self.rv = 1000
        self.log: deque = deque(maxlen=5000)  # (rv, plural, type, obj, old)
        self.watchers: List[Watcher] = []

    def get(self, plural: str, ns: str, name: str) -> Optional[dict]:
        return self.objects.get((plural, ns if KINDS[plural].namespaced else "", name))

    def list(self, plural: str, ns: Optional[str] = None) -> List[dict]:
        out = [
            o
            for (p, n, _), o in self.objects.items()
            if p == plural and (ns is None or n == ns or not KINDS[plural].namespaced)
        ]
        return sorted(
            out, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    def _emit(self, plural: str, etype: str, obj: dict, old: Optional[dict]) -> None:
        self.log.append((self.rv, plural, etype, obj, old))
        for w in self.watchers:
            if w.plural == plural:
                w.offer(etype, obj, old)
        self.lock.notify_all()

    def put(self, obj: dict) -> dict:
        k = kind_of(obj["kind"])
        meta = obj["metadata"]
        key = (k.plural, meta.get("namespace", "") if k.namespaced else "", meta["name"])
        with self.lock:
            old = self.objects.get(key)
            self.rv += 1
            meta["resourceVersion"] = str(self.rv)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            obj.setdefault("apiVersion", k.api_version)
            self.objects[key] = obj
            self._emit(k.plural, "MODIFIED" if old else "ADDED", obj, old)
        return obj

    def update(self, plural: str, ns: str, name: str, fn: Callable[[dict], Any]) -> Optional[dict]:
        old = self.get(plural, ns, name)
        if old is None:
            return None
        new = copy.deepcopy(old)
        fn(new)
        if new == old:
            return old
        return self.put(new)

    def remove(self, plural: str, ns: str, name: str) -> Optional[dict]:
        key = (plural, ns if KINDS[plural].namespaced else "", name)
        with self.lock:
            old = self.objects.pop(key, None)
            if old is not None:
                self.rv += 1
                gone = copy.deepcopy(old)
                gone["metadata"]["resourceVersion"] = str(self.rv)
                self._emit(plural, "DELETED", gone, old)
        return old


###############################################################################
# Status objects and RBAC denials #############################################
###############################################################################

#: The user every request is authorized as (the kubeconfig has no credentials).
SIM_USER = "sim-user"
#: The 400 message for SPDY upgrades when ``spdy`` is off.
MSG_NO_SPDY = "SPDY is not supported by this server"


def status_object(code: int, reason: str, message: str, details: Optional[dict] = None) -> dict:
    """A failure ``Status`` with its fields in kube-apiserver's order."""
    st: Dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        st["details"] = details
    st["code"] = code
    return st


def expired_status(old: str, new: Union[int, str]) -> dict:
    """What a watch from a compacted resourceVersion gets (as an ERROR event)."""
    return status_object(410, "Expired", "too old resource version: %s (%s)" % (old, new))


class Denial(NamedTuple):
    """One ``forbid()`` rule; ``None`` (or "*" for verb/resource) matches anything."""

    verb: str
    resource: str  # "pods", "pods/portforward", "deployments", "*"
    namespace: Optional[str] = None
    name: Optional[str] = None

    def matches(self, verb: str, resource: str, ns: str, name: str) -> bool:
        return (
            self.verb in ("*", verb)
            and self.resource in ("*", resource)
            and self.namespace in (None, ns)
            and self.name in (None, name)
        )


def canonical_resource(resource: str) -> str:
    """kubectl spellings to RBAC's: "po/portforward" -> "pods/portforward", "deploy" ->
    "deployments"."""
    if resource == "*":
        return resource
    base, _, sub = resource.partition("/")
    plural = kind_of(base).plural
    return plural + "/" + sub if sub else plural


_METHOD_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


def request_verb(method: str, name: Optional[str], sub: Optional[str], q: dict) -> str:
    """The verb kube-apiserver's authorizer sees (``RequestInfoFactory``)."""
    if sub == "portforward":
        # The SPDY POST, and the WebSocket GET too: the API server authorizes that upgrade as
        # "create" (AuthorizePodWebsocketUpgradeCreatePermission) so both transports agree.
        return "create"
    verb = _METHOD_VERBS.get(method, method.lower())
    if name:
        return verb
    if verb == "get":
        return "watch" if q.get("watch") in ("true", "1") else "list"
    return "deletecollection" if verb == "delete" else verb


def selector_name(field_selector: Optional[str]) -> Optional[str]:
    """The object name a list/watch asks for with ``metadata.name=X``: the authorizer (and
    the Forbidden message) sees that name, as for a get."""
    for term in (field_selector or "").split(","):
        key, sep, value = term.partition("=")
        if sep and key.strip() == "metadata.name":
            return value.lstrip("=").strip()
    return None


def forbidden_status(
    verb: str, group: str, plural: str, sub: Optional[str], ns: str, name: str
) -> dict:
    """The 403 Status of an RBAC denial, word for word as kube-apiserver writes it
    (``responsewriters.Forbidden`` and ``errors.NewForbidden``)."""
    resource = plural + "/" + sub if sub else plural
    where = 'in the namespace "%s"' % ns if ns else "at the cluster scope"
    why = 'User "%s" cannot %s resource "%s" in API group "%s" %s' % (
        SIM_USER,
        verb,
        resource,
        group,
        where,
    )
    qualified = plural + "." + group if group else plural
    subject = '%s "%s"' % (qualified, name) if name else qualified
    details = {k: v for k, v in (("name", name), ("group", group), ("kind", plural)) if v}
    return status_object(403, "Forbidden", "%s is forbidden: %s" % (subject, why), details)


###############################################################################
# Tunnels #####################################################################
###############################################################################


class TunnelRecord:
    """Bookkeeping for one port-forward tunnel (the ``hooks`` of a PortForwardSession)."""

    def __init__(self, cluster: SimCluster, pod: dict, transport: str):
        self.cluster = cluster
        self.pod_name = pod["metadata"]["name"]
        self.namespace = pod["metadata"]["namespace"]
        self.uid = pod["metadata"]["uid"]
        self.sandbox = cluster._sandboxes.get(self.uid, "0" * 64)
        self.transport = transport
        self.session: Optional[sim_tunnel.PortForwardSession] = None
        self.streams_opened = 0
        self.bytes_up = self.bytes_down = 0
        self.stalled = asyncio.Event()
        self.stalled.set()  # set = flowing
        if self.pod_name in cluster._stalled:
            self.stalled.clear()
        self.stall_streams = self.pod_name in cluster._stall_streams

    def changed(self) -> None:
        with self.cluster._cond:
            self.cluster._cond.notify_all()

    def next_fault(self) -> Optional[Tuple[str, Optional[str]]]:
        q = self.cluster._pending_faults.get(self.pod_name)
        if not q:
            return None
        kind, message, each = q[0]
        if not each:
            q.popleft()
        return kind, message

    def snapshot(self) -> dict:
        s = self.session
        return {
            "pod": self.pod_name,
            "namespace": self.namespace,
            "transport": self.transport,
            "open": bool(s and not s.closed.is_set()),
            "going_away": bool(s and s.going_away),
            "active_streams": len(s.pairs) if s else 0,
            "streams_opened": self.streams_opened,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
        }


class TunnelFaults:
    """Faults on live and future port-forward tunnels of a pod (``sim.tunnel_faults``)."""

    def __init__(self, cluster: SimCluster):
        self._c = cluster

    def error(self, pod: str, message: Optional[str] = None, on: str = "active") -> None:
        """Error text on the error stream.  ``on``: "active" connections, the "next" one, or
        "each" future one.  Default text: containerd's ``connection reset by peer``."""
        self._c._run(self._c._tunnel_fault(pod, "error", message, on))

    def eof(self, pod: str, on: str = "active") -> None:
        """Clean EOF on the data stream (FIN data, FIN error, no error text)."""
        self._c._run(self._c._tunnel_fault(pod, "eof", None, on))

    def close(self, pod: str, on: str = "active") -> None:
        """Abrupt close: GOAWAY then TCP close (a WebSocket close frame on that transport)."""
        self._c._run(self._c._tunnel_fault(pod, "close", None, on))

    def goaway(self, pod: str, on: str = "active") -> None:
        """Graceful GOAWAY: streams already open carry on to their end; later SYN_STREAMs on
        that tunnel get RST_STREAM REFUSED_STREAM (3) and their data is dropped.  The
        connection stays up until the client closes it (kubectl does once its streams end)."""
        self._c._run(self._c._tunnel_fault(pod, "goaway", None, on))

    def stall(self, pod: str, stalled: bool = True, streams: bool = False) -> None:
        """Stop (or resume) relaying bytes on every tunnel to the pod, now and later.  With
        ``streams`` new streams get no SYN_REPLY either, so after its 30 s stream-creation
        timeout kubectl 1.37 logs ``"Error creating error stream" err="Timeout occurred"`` and
        keeps running (checked by hand on both transports)."""
        self._c._run(self._c._stall(pod, stalled, streams))

    def clear(self, pod: Optional[str] = None) -> None:
        self._c._run(self._c._clear_faults(pod))


###############################################################################
# The cluster #################################################################
###############################################################################

_PROTO_JSON = "application/json"
_API_ACTIONS = ("forbid", "allow-all", "spdy", "expire-watches")
#: ``SIMCLUSTER_DEBUG=1`` logs every API request to stderr.
_DEBUG = os.environ.get("SIMCLUSTER_DEBUG", "") not in ("", "0")
_EVENT_SEQ = itertools.count(int(time.time() * 1e9))


class SimCluster:
    def __init__(
        self,
        namespace: str = "default",
        replace_delay: float = 0.5,
        start_delay: float = 0.1,
        ready_delay: float = 0.1,
        kubeconfig_dir: Optional[str] = None,
        websockets: bool = True,
        spdy: bool = True,
        bookmark_interval: float = 5.0,
    ):
        self.namespace = namespace
        self.replace_delay, self.start_delay, self.ready_delay = (
            replace_delay,
            start_delay,
            ready_delay,
        )
        self._cond = threading.Condition(threading.RLock())
        self.store = Store(self._cond)
        self.tunnel_faults = TunnelFaults(self)
        self.requests: List[Tuple[str, str]] = []
        #: User-Agent headers seen, in order (a tuple, replaced whole: safe to read anywhere).
        self.user_agents: Tuple[str, ...] = ()
        self.websockets = websockets
        self.spdy = spdy
        #: Seconds between BOOKMARK events on watches that allow them (<= 0: none).
        self.bookmark_interval = bookmark_interval
        self._denials: List[Denial] = []
        self._expired_rv = 0  # watches from an older resourceVersion get 410 Expired
        self._reserved: Optional[socket.socket] = None  # holds the port while unreachable
        self.port = 0
        self._dir = kubeconfig_dir
        self._own_dir = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._backends: Dict[str, Dict[int, BackendServer]] = {}  # pod uid -> port -> server
        self._sandboxes: Dict[str, str] = {}
        self._timers: Dict[str, List[asyncio.TimerHandle]] = {}
        self._templates: Dict[Tuple[str, str, str], dict] = {}
        self._tunnels: List[TunnelRecord] = []
        self._opened: Dict[str, int] = {}
        self._pending_faults: Dict[str, deque] = {}
        self._stalled: set = set()
        self._stall_streams: set = set()
        self._conns: set = set()
        self._tasks: set = set()
        self._ip = itertools.count(10)
        self._svc_ip = itertools.count(10)
        self._rng = random.Random(0x5EED)
        self._closing = False
        self._reconcile_pending = False
        self._refusing: set = set()  # pod uids whose down containers refuse connections
        self._logs: Dict[str, List[List[str]]] = {}  # pod uid -> log lines per container run
        self._rollouts: Dict[Tuple[str, str], asyncio.Task] = {}
        self._timers_later: List[threading.Timer] = []

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> SimCluster:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="simcluster-")
            self._own_dir = True
        os.makedirs(self._dir, exist_ok=True)
        self._loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="simcluster", daemon=True
        )
        self._thread.start()
        ready.result(timeout=10)
        self._write_kubeconfig()
        return self

    def _thread_main(self, ready: concurrent.futures.Future) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._astart())
        except BaseException as e:  # pragma: no cover - start failures surface in start()
            ready.set_exception(e)
            return
        ready.set_result(None)
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def _astart(self) -> None:
        self._server = await asyncio.start_server(self._handle_conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        for ns in ("default", "kube-system", self.namespace):
            self._add_namespace(ns)
        self.store.put(
            {
                "kind": "Node",
                "metadata": {"name": "sim-node", "labels": {"kubernetes.io/hostname": "sim-node"}},
                "spec": {"podCIDR": "10.244.0.0/24"},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}],
                    "nodeInfo": {
                        "kubeletVersion": "v1.37.1",
                        "containerRuntimeVersion": "containerd://2.1.0",
                    },
                },
            }
        )

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        for t in self._timers_later:
            t.cancel()
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._astop(), self._loop).result(timeout=10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)
        for t in self._timers_later:
            if t is not threading.current_thread():
                t.join(timeout=10)
        self._timers_later.clear()
        self._thread = None
        with self._cond:
            self._cond.notify_all()
        if self._own_dir and self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def _astop(self) -> None:
        self._closing = True
        for handles in self._timers.values():
            for h in handles:
                h.cancel()
        self._timers.clear()
        if self._server is not None:
            self._server.close()
        if self._reserved is not None:
            self._reserved.close()
        self._drop_connections()
        for servers in self._backends.values():
            for srv in servers.values():
                await srv.stop()
        self._backends.clear()
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> SimCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    @property
    def admin_url(self) -> str:
        return self.url + "/_sim"

    @property
    def kubeconfig(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "kubeconfig")

    def _write_kubeconfig(self, path: Optional[str] = None) -> str:
        path = path or self.kubeconfig
        text = (
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n"
            "    server: %s\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n"
            "    user: sim\n    namespace: %s\ncurrent-context: sim\nusers:\n- name: sim\n"
            "  user: {}\npreferences: {}\n" % (self.url, self.namespace)
        )
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def env(self, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """Environment for kubectl subprocesses (a fresh discovery cache on every call)."""
        assert self._dir is not None
        env = dict(os.environ if base is None else base)
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
            env.pop(k, None)
        env.update(
            KUBECONFIG=self.kubeconfig,
            KUBECACHEDIR=tempfile.mkdtemp(prefix="cache-", dir=self._dir),
            KUBECTL_KUBERC="false",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            # kubectl vibe remembers forwards in the state directory: the cluster's own one,
            # never the user's (the same for every env() of this cluster, so @N works).
            XDG_STATE_HOME=os.path.join(self._dir, "state"),
        )
        return env

    # -- marshalling -------------------------------------------------------------
    def _run(self, coro, timeout: float = 30) -> Any:
        if self._loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("SimCluster is not running; call start() first")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("blocking SimCluster API called on its own loop")
        if self._closing:
            coro.close()
            raise RuntimeError("SimCluster is stopping")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _later(self, uid: str, delay: float, fn: Callable, *args) -> None:
        assert self._loop is not None

        def fire() -> None:
            if not self._closing:
                fn(*args)

        h = self._loop.call_later(max(0.0, delay), fire)
        self._timers.setdefault(uid, []).append(h)

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # -- reads (any thread) ---------------------------------------------------------
    def _ns(self, namespace: Optional[str]) -> str:
        return namespace or self.namespace

    def get(self, kind: str, name: str, namespace: Optional[str] = None) -> Optional[dict]:
        with self._cond:
            o = self.store.get(kind_of(kind).plural, self._ns(namespace), name)
            return copy.deepcopy(o) if o else None

    def list(
        self, kind: str, namespace: Optional[str] = None, labels: Optional[str] = None
    ) -> List[dict]:
        m = label_matcher(labels)
        with self._cond:
            return [
                copy.deepcopy(o)
                for o in self.store.list(kind_of(kind).plural, self._ns(namespace))
                if m(o["metadata"].get("labels") or {})
            ]

    def pods(
        self,
        prefix: Optional[str] = None,
        ready: Optional[bool] = None,
        namespace: Optional[str] = None,
    ) -> List[str]:
        """Pod names (optionally those starting with ``prefix`` / with Ready == ``ready``)."""
        with self._cond:
            out = []
            for p in self.store.list("pods", self._ns(namespace)):
                name = p["metadata"]["name"]
                if prefix and not name.startswith(prefix):
                    continue
                if ready is not None and _pod_ready(p) != ready:
                    continue
                out.append(name)
            return out

    def backend(self, pod: str, port: int, namespace: Optional[str] = None) -> BackendServer:
        with self._cond:
            p = self.store.get("pods", self._ns(namespace), pod)
            if p is None:
                raise KeyError("no pod %r" % pod)
            return self._backends[p["metadata"]["uid"]][port]

    def tunnels(self, pod: Optional[str] = None) -> List[dict]:
        with self._cond:
            return [t.snapshot() for t in self._tunnels if pod is None or t.pod_name == pod]

    def tunnels_opened(self, pod: Optional[str] = None) -> int:
        with self._cond:
            if pod is None:
                return sum(self._opened.values())
            return self._opened.get(pod, 0)

    def active_streams(self, pod: Optional[str] = None) -> int:
        return sum(t["active_streams"] for t in self.tunnels(pod) if t["open"])

    def watches(self, plural: Optional[str] = None) -> List[dict]:
        """Live watch streams (optionally of one kind): plural, namespace (None: all),
        labelSelector, fieldSelector and the resourceVersion each started from ("" if none)."""
        want = kind_of(plural).plural if plural else None
        with self._cond:
            return [w.describe() for w in self.store.watchers if want in (None, w.plural)]

    def request_count(self, method: Optional[str] = None, path_prefix: Optional[str] = None) -> int:
        """API requests seen (of ``method``, whose path and query start with ``path_prefix``),
        counted over ``requests`` (which keeps the last 5,000 to 10,000)."""
        return sum(
            1
            for m, target in list(self.requests)
            if method in (None, m) and (path_prefix is None or target.startswith(path_prefix))
        )

    def state(self) -> dict:
        """Pods (phase, readiness, IP, backend ports, requests) and tunnels, as ``/_sim/state``."""
        with self._cond:
            return self._state()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10) -> Any:
        """Block until ``predicate()`` is truthy (re-checked on every change); return its value.

        The predicate runs under the store lock: keep it quick and read-only (``pods()``,
        ``get()``, ``active_streams()``... are fine; mutating methods would deadlock)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("simcluster: condition not met within %ss" % timeout)
                self._cond.wait(min(left, 0.5))

    async def async_wait_for(self, predicate: Callable[[], Any], timeout: float = 10) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.wait_for, predicate, timeout)

    # -- object API (any thread) ----------------------------------------------------------
    def add_namespace(self, name: str) -> str:
        return self._run(self._async(self._add_namespace, name))

    async def _async(self, fn: Callable, *args, **kw) -> Any:
        return fn(*args, **kw)

    def add_pod(
        self,
        name: str,
        ports: Iterable = (),
        backends: Optional[Dict[int, Backend]] = None,
        labels: Optional[Dict[str, str]] = None,
        image: str = "nginx:1.27",
        namespace: Optional[str] = None,
        start_delay: float = 0,
        ready_delay: float = 0,
        unschedulable: bool = False,
        containers: Optional[List[dict]] = None,
    ) -> str:
        tpl = self._template(name, ports, backends, labels or {"run": name}, image, containers)
        tpl.update(start_delay=start_delay, ready_delay=ready_delay)
        self._prepare(backends)
        return self._run(
            self._create_pod(self._ns(namespace), name, tpl, None, unschedulable=unschedulable)
        )

    def add_deployment(
        self,
        name: str,
        replicas: int = 1,
        ports: Iterable = (),
        backends: Optional[Dict[int, Backend]] = None,
        labels: Optional[Dict[str, str]] = None,
        image: str = "nginx:1.27",
        start_delay: float = 0,
        ready_delay: float = 0,
        namespace: Optional[str] = None,
        containers: Optional[List[dict]] = None,
    ) -> str:
        return self._add_workload(
            "deployments",
            name,
            replicas,
            ports,
            backends,
            labels,
            image,
            start_delay,
            ready_delay,
            namespace,
            containers,
        )

    def add_replicaset(self, name: str, replicas: int = 1, **kw) -> str:
        return self._add_workload_kw("replicasets", name, replicas, kw)

    def add_statefulset(self, name: str, replicas: int = 1, **kw) -> str:
        return self._add_workload_kw("statefulsets", name, replicas, kw)

    def add_daemonset(self, name: str, **kw) -> str:
        return self._add_workload_kw("daemonsets", name, 1, kw)

    def add_job(self, name: str, completions: int = 1, duration: float = 1.0, **kw) -> str:
        kw["duration"] = duration
        return self._add_workload_kw("jobs", name, completions, kw)

    def _add_workload_kw(self, plural: str, name: str, replicas: int, kw: dict) -> str:
        duration = kw.pop("duration", None)
        return self._add_workload(
            plural,
            name,
            replicas,
            kw.get("ports", ()),
            kw.get("backends"),
            kw.get("labels"),
            kw.get("image", "nginx:1.27"),
            kw.get("start_delay", 0),
            kw.get("ready_delay", 0),
            kw.get("namespace"),
            kw.get("containers"),
            duration,
        )

    def _add_workload(
        self,
        plural,
        name,
        replicas,
        ports,
        backends,
        labels,
        image,
        start_delay,
        ready_delay,
        namespace,
        containers,
        duration=None,
    ) -> str:
        tpl = self._template(name, ports, backends, labels or {"app": name}, image, containers)
        tpl.update(start_delay=start_delay, ready_delay=ready_delay, duration=duration)
        self._prepare(backends)
        return self._run(self._create_workload(plural, self._ns(namespace), name, replicas, tpl))

    def add_service(
        self,
        name: str,
        selector: Optional[Dict[str, str]],
        ports: Iterable = (),
        headless: bool = False,
        namespace: Optional[str] = None,
        type: str = "ClusterIP",
    ) -> str:
        sports = []
        for p in ports:
            if isinstance(p, int):
                p = ServicePort(p)
            if isinstance(p, tuple):
                sp = {"port": p.port, "protocol": p.protocol}
                if p.name:
                    sp["name"] = p.name
                sp["targetPort"] = p.target_port if p.target_port is not None else p.port
            else:
                sp = dict(p)
            sports.append(sp)
        return self._run(
            self._async(
                self._add_service, self._ns(namespace), name, selector, sports, headless, type
            )
        )

    def create_later(self, delay: float, obj: Union[dict, Callable[[], Any]]) -> None:
        """After ``delay`` s create ``obj``: a manifest dict (Pod manifests get backends for
        their TCP ports), or a callable such as ``lambda: sim.add_deployment("x")`` (run on a
        short-lived thread that ``stop()`` cancels or joins)."""
        if callable(obj):
            t = threading.Timer(delay, self._safe_call, args=(obj,))
            t.daemon = True
            self._timers_later.append(t)
            t.start()
            return
        self._run(
            self._async(
                self._later,
                "timers",
                delay,
                lambda: self._spawn(self._create_manifest(copy.deepcopy(obj))),
            )
        )

    def _safe_call(self, fn: Callable[[], Any]) -> None:
        if self._thread is not None and not self._closing:
            try:
                fn()
            except RuntimeError:
                pass

    def delete(self, kind: str, name: str, namespace: Optional[str] = None) -> bool:
        return self._run(self._delete(kind_of(kind).plural, self._ns(namespace), name))

    def patch(
        self,
        kind: str,
        name: str,
        patch: Any,
        after: float = 0,
        namespace: Optional[str] = None,
        type: str = "merge",
    ) -> None:
        """Patch an object now or ``after`` seconds: ``type`` is "merge" (RFC 7386),
        "strategic" (lists of named items merge by key) or "json" (RFC 6902 ops).  A changed
        Deployment pod template starts a rollout."""
        plural, ns = kind_of(kind).plural, self._ns(namespace)
        self._run(self._async(self._patch, plural, ns, name, patch, after, type))

    def rollout(
        self, name: str, image: Optional[str] = None, namespace: Optional[str] = None
    ) -> None:
        """Roll a deployment (``kubectl rollout restart``, or a new image for every container):
        a new ReplicaSet's pods come up one at a time (Pending -> Running -> Ready) and an old
        pod is deleted after each becomes Ready."""
        ns = self._ns(namespace)
        d = self.get("deployments", name, ns)
        if d is None:
            raise KeyError(name)
        t = d["spec"]["template"]
        if image:
            containers = [{"name": c["name"], "image": image} for c in t["spec"]["containers"]]
            template: dict = {"spec": {"containers": containers}}
        else:
            template = {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": _now()}}}
        patch = {"spec": {"template": template}}
        self._run(self._async(self._patch, "deployments", ns, name, patch, 0, "strategic"))

    def patch_status(
        self, kind: str, name: str, status: dict, after: float = 0, namespace: Optional[str] = None
    ) -> None:
        self.patch(kind, name, {"status": status}, after, namespace)

    def set_phase(
        self, pod: str, phase: str, after: float = 0, namespace: Optional[str] = None
    ) -> None:
        self.patch("pods", pod, {"status": {"phase": phase}}, after, namespace)

    def set_condition(
        self,
        kind: str,
        name: str,
        type: str,
        status: str = "True",
        reason: str = "",
        message: str = "",
        after: float = 0,
        namespace: Optional[str] = None,
    ) -> None:
        self._run(
            self._async(
                self._set_condition_later,
                kind_of(kind).plural,
                self._ns(namespace),
                name,
                type,
                status,
                reason,
                message,
                after,
            )
        )

    def scale(self, kind: str, name: str, replicas: int, namespace: Optional[str] = None) -> None:
        self._run(
            self._async(self._scale, kind_of(kind).plural, self._ns(namespace), name, replicas)
        )

    def emit_event(
        self,
        kind: str,
        name: str,
        reason: str,
        message: str,
        type: str = "Normal",
        namespace: Optional[str] = None,
    ) -> None:
        self._run(
            self._async(
                self._event_for,
                kind_of(kind).plural,
                self._ns(namespace),
                name,
                reason,
                message,
                type,
            )
        )

    # -- fault API (any thread) ---------------------------------------------------------
    def delete_pod(
        self,
        name: str,
        replace_delay: Optional[float] = None,
        namespace: Optional[str] = None,
        grace: float = 0,
    ) -> bool:
        """Delete a pod; with ``grace`` it is Terminating (not Ready, tunnels still work) for
        that long first.  Its owner creates a replacement after ``replace_delay``."""
        return self._run(self._delete_pod(self._ns(namespace), name, replace_delay, grace))

    def restart_container(
        self,
        pod: str,
        reason: str = "OOMKilled",
        exit_code: int = 137,
        container: Optional[str] = None,
        back_off: float = 0.3,
        namespace: Optional[str] = None,
        refuse: bool = False,
    ) -> None:
        """Container restart: restartCount+1, lastState.terminated (reason, exit code), open
        connections reset, CrashLoopBackOff and a Warning BackOff event for ``back_off`` s.
        With ``refuse`` its ports refuse connections until it runs again (as when nothing
        listens); by default the backend keeps answering."""
        self._run(
            self._async(
                self._restart_container,
                self._ns(namespace),
                pod,
                reason,
                exit_code,
                container,
                back_off,
                refuse,
            )
        )

    def make_image_pull_backoff(
        self,
        target: str,
        image: str = "registry.invalid/app:missing",
        namespace: Optional[str] = None,
    ) -> Optional[str]:
        return self._run(self._image_pull_backoff(self._ns(namespace), target, image))

    def make_unschedulable(self, pod: str, namespace: Optional[str] = None) -> None:
        self._run(self._async(self._unschedulable, self._ns(namespace), pod))

    def fail_job(self, name: str, namespace: Optional[str] = None) -> None:
        self._run(self._async(self._finish_job, self._ns(namespace), name, False))

    def complete_job(self, name: str, namespace: Optional[str] = None) -> None:
        self._run(self._async(self._finish_job, self._ns(namespace), name, True))

    # -- API server faults (any thread) -----------------------------------------------------
    def forbid(
        self,
        verb: str,
        resource: str,
        namespace: Optional[str] = None,
        name: Optional[str] = None,
    ) -> None:
        """Deny ``verb`` on ``resource`` (e.g. "list" "pods", "create" "pods/portforward", "*"
        "*") with RBAC's 403, in ``namespace`` / for ``name`` or (None) everywhere."""
        rule = Denial(verb, canonical_resource(resource), namespace, name)
        self._run(self._async(self._denials.append, rule))

    def allow_all(self) -> None:
        """Drop every ``forbid()`` rule."""
        self._run(self._async(self._denials.clear))

    def set_spdy(self, on: bool) -> None:
        """Off: legacy SPDY port-forward upgrades get 400 (``MSG_NO_SPDY``); WebSocket works."""
        self._run(self._async(setattr, self, "spdy", bool(on)))

    def expire_watches(self) -> int:
        """410 Gone, as after an etcd compaction: every live watch gets an ERROR event
        (reason Expired) and ends; later watches from an older resourceVersion get the same
        at once.  Lists (and watches from their resourceVersion) work.  Returns how many
        live watches ended."""
        return self._run(self._async(self._expire_watches))

    def set_reachable(self, reachable: bool) -> None:
        """False: stop listening (connections are refused) and drop every open API
        connection, watches and port-forward tunnels included.  True: listen again on the
        same port (same url and kubeconfig).  The admin endpoint is unreachable meanwhile."""
        self._run(self._set_reachable(reachable))

    # ==================================================================================
    # Loop-side implementation
    # ==================================================================================
    def _prepare(self, backends: Optional[Dict[int, Backend]]) -> None:
        if backends and any(b.kind == "tls" for b in backends.values()):
            sim_backends.tls_files()  # generate the cert off the loop

    def _template(self, name, ports, backends, labels, image, containers) -> dict:
        if containers is None:
            cports = []
            for p in ports:
                if isinstance(p, int):
                    p = ContainerPort(None, p)
                cp = {"containerPort": p.port, "protocol": p.protocol}
                if p.name:
                    cp["name"] = p.name
                cports.append(cp)
            containers = [{"name": "app", "image": image, "ports": cports}]
        for c in containers:
            c.setdefault("imagePullPolicy", "IfNotPresent")
            c.setdefault("resources", {})
        backends = dict(backends or {})
        for c in containers:
            for cp in c.get("ports", []):
                if cp.get("protocol", "TCP") == "TCP":
                    backends.setdefault(cp["containerPort"], Backend.http())
        return {"labels": dict(labels), "containers": containers, "backends": backends}

    def _add_namespace(self, name: str) -> str:
        if self.store.get("namespaces", "", name) is None:
            self.store.put(
                {
                    "kind": "Namespace",
                    "metadata": {"name": name},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                }
            )
        return name

    def _next_ip(self) -> str:
        n = next(self._ip)
        return "10.244.%d.%d" % (n // 250, n % 250 + 1)

    async def _create_pod(
        self,
        ns: str,
        name: str,
        tpl: dict,
        owner: Optional[dict],
        unschedulable: bool = False,
        extra_labels: Optional[dict] = None,
    ) -> str:
        """Create a pod and start its backends; it then goes Pending -> Running -> Ready."""
        self._add_namespace(ns)
        uid = str(uuid.uuid4())
        labels = dict(tpl["labels"], **(extra_labels or {}))
        containers = copy.deepcopy(tpl["containers"])
        meta: Dict[str, Any] = {"name": name, "namespace": ns, "uid": uid, "labels": labels}
        if owner is not None:
            meta["ownerReferences"] = [_owner_ref(owner)]
            meta["generateName"] = name[: name.rfind("-") + 1]
        pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": meta,
            "spec": {
                "containers": containers,
                "restartPolicy": "Never" if tpl.get("duration") is not None else "Always",
                "nodeName": "sim-node",
                "schedulerName": "default-scheduler",
                "serviceAccountName": "default",
                "terminationGracePeriodSeconds": 30,
            },
            "status": {
                "phase": "Pending",
                "qosClass": "BestEffort",
                "hostIP": "172.18.0.2",
                "conditions": [_cond("PodScheduled", "True")],
                "containerStatuses": [
                    _cstatus(c, {"waiting": {"reason": "ContainerCreating"}}) for c in containers
                ],
            },
        }
        self._sandboxes[uid] = hashlib.sha256(uid.encode()).hexdigest()
        servers = {}
        for port, spec in tpl["backends"].items():
            srv = BackendServer(spec, name, port, asyncio.get_running_loop())
            await srv.start()
            servers[port] = srv
        self._backends[uid] = servers
        if unschedulable:
            pod["spec"].pop("nodeName")
            pod["status"] = _unsched_status()
            self.store.put(pod)
            self._event(pod, "FailedScheduling", _UNSCHED_MSG, "Warning", "default-scheduler")
            return name
        self.store.put(pod)
        self._event(
            pod,
            "Scheduled",
            "Successfully assigned %s/%s to sim-node" % (ns, name),
            source="default-scheduler",
        )
        if tpl.get("bad_image"):
            self._pull_fail(ns, name, containers[0]["image"])
            return name
        start = tpl.get("start_delay", 0) or 0
        if start:
            self._later(uid, start, self._pod_running, ns, name, uid, tpl)
        else:
            self._pod_running(ns, name, uid, tpl)
        return name

    def _alive(self, ns: str, name: str, uid: str) -> Optional[dict]:
        p = self.store.get("pods", ns, name)
        return p if p is not None and p["metadata"]["uid"] == uid else None

    def _pod_running(self, ns: str, name: str, uid: str, tpl: dict) -> None:
        p = self._alive(ns, name, uid)
        if p is None:
            return
        ip = p["status"].get("podIP") or self._next_ip()
        started = _now()

        def fn(o: dict) -> None:
            st = o["status"]
            st.update(phase="Running", podIP=ip, podIPs=[{"ip": ip}], startTime=started)
            _set_cond(st, "Initialized", "True")
            _set_cond(st, "PodReadyToStartContainers", "True")
            _set_cond(st, "ContainersReady", "False", "ContainersNotReady")
            _set_cond(st, "Ready", "False", "ContainersNotReady")
            for cs in st["containerStatuses"]:
                cs["state"] = {"running": {"startedAt": started}}
                cs["started"] = True
                cs["containerID"] = (
                    "containerd://"
                    + hashlib.sha256(
                        (uid + cs["name"] + str(cs["restartCount"])).encode()
                    ).hexdigest()
                )
                cs["imageID"] = "docker.io/library/" + cs["image"] + "@sha256:" + "ab" * 32

        self.store.update("pods", ns, name, fn)
        for c in p["spec"]["containers"]:
            self._event(p, "Pulled", 'Container image "%s" already present on machine' % c["image"])
            self._event(p, "Created", "Created container: %s" % c["name"])
            self._event(p, "Started", "Started container %s" % c["name"])
        ready = tpl.get("ready_delay", 0) or 0
        if ready:
            self._later(uid, ready, self._pod_ready, ns, name, uid, tpl)
        else:
            self._pod_ready(ns, name, uid, tpl)

    def _pod_ready(self, ns: str, name: str, uid: str, tpl: dict) -> None:
        if self._alive(ns, name, uid) is None:
            return

        def fn(o: dict) -> None:
            st = o["status"]
            if st.get("phase") != "Running":
                return
            _set_cond(st, "ContainersReady", "True")
            _set_cond(st, "Ready", "True")
            for cs in st["containerStatuses"]:
                cs["ready"] = True

        self.store.update("pods", ns, name, fn)
        duration = tpl.get("duration")
        if duration is not None:
            self._later(uid, duration, self._pod_succeeded, ns, name, uid)
        self._reconcile_soon()

    def _pod_succeeded(self, ns: str, name: str, uid: str, failed: bool = False) -> None:
        if self._alive(ns, name, uid) is None:
            return
        now = _now()

        def fn(o: dict) -> None:
            st = o["status"]
            st["phase"] = "Failed" if failed else "Succeeded"
            _set_cond(st, "Ready", "False", "PodCompleted")
            _set_cond(st, "ContainersReady", "False", "PodCompleted")
            for cs in st["containerStatuses"]:
                started = cs.get("state", {}).get("running", {}).get("startedAt", now)
                cs["state"] = {
                    "terminated": {
                        "exitCode": 1 if failed else 0,
                        "reason": "Error" if failed else "Completed",
                        "startedAt": started,
                        "finishedAt": now,
                    }
                }
                cs["ready"] = False
                cs["started"] = False

        self.store.update("pods", ns, name, fn)
        self._reconcile_soon()

    # -- workloads --------------------------------------------------------------------
    async def _create_workload(
        self, plural: str, ns: str, name: str, replicas: int, tpl: dict
    ) -> str:
        self._add_namespace(ns)
        k = KINDS[plural]
        tpl_spec = {
            "metadata": {"labels": dict(tpl["labels"])},
            "spec": {"containers": copy.deepcopy(tpl["containers"]), "restartPolicy": "Always"},
        }
        spec: Dict[str, Any] = {
            "selector": {"matchLabels": dict(tpl["labels"])},
            "template": tpl_spec,
        }
        if plural in ("deployments", "replicasets", "statefulsets"):
            spec["replicas"] = replicas
        if plural == "deployments":
            spec["strategy"] = {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            }
            spec["revisionHistoryLimit"] = 10
        if plural == "statefulsets":
            spec["serviceName"] = name
        if plural == "jobs":
            spec.update(completions=replicas, parallelism=replicas, backoffLimit=6)
            tpl_spec["spec"]["restartPolicy"] = "Never"
            tpl["labels"] = dict(
                tpl["labels"], **{"batch.kubernetes.io/job-name": name, "job-name": name}
            )
            tpl_spec["metadata"]["labels"] = dict(tpl["labels"])
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": "x"}}
        obj = {
            "kind": k.kind,
            "apiVersion": k.api_version,
            "metadata": {
                "name": name,
                "namespace": ns,
                "generation": 1,
                "labels": dict(tpl["labels"]),
            },
            "spec": spec,
            "status": {},
        }
        if plural == "jobs":
            uid = str(uuid.uuid4())
            obj["metadata"]["uid"] = uid
            spec["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"] = uid
            tpl["labels"]["batch.kubernetes.io/controller-uid"] = uid
            tpl_spec["metadata"]["labels"] = dict(tpl["labels"])
            obj["status"] = {"active": 0, "startTime": _now()}
        self.store.put(obj)
        self._templates[(plural, ns, name)] = tpl
        if plural == "deployments":
            await self._new_replicaset(obj, tpl, replicas)
        else:
            await self._fill(plural, ns, name)
        self._status_of(plural, ns, name)
        return name

    async def _new_replicaset(self, deploy: dict, tpl: dict, replicas: int) -> str:
        ns, dname = deploy["metadata"]["namespace"], deploy["metadata"]["name"]
        h = hashlib.sha256(
            json.dumps(deploy["spec"]["template"], sort_keys=True).encode()
        ).hexdigest()
        phash = "".join(
            "bcdfghjklmnpqrstvwxz2456789"[int(h[i : i + 2], 16) % 27] for i in range(0, 20, 2)
        )
        rs_tpl = dict(tpl, labels=dict(tpl["labels"], **{"pod-template-hash": phash}))
        rsname = "%s-%s" % (dname, phash)
        self._templates[("replicasets", ns, rsname)] = rs_tpl
        if self.store.get("replicasets", ns, rsname) is not None:  # rolled back to it
            return rsname
        template = copy.deepcopy(deploy["spec"]["template"])
        template["metadata"]["labels"] = dict(rs_tpl["labels"])
        revision = 1 + sum(
            1
            for r in self.store.list("replicasets", ns)
            if any(
                x["uid"] == deploy["metadata"]["uid"]
                for x in r["metadata"].get("ownerReferences", [])
            )
        )
        rs = {
            "kind": "ReplicaSet",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": rsname,
                "namespace": ns,
                "labels": dict(rs_tpl["labels"]),
                "ownerReferences": [_owner_ref(deploy)],
                "generation": 1,
                "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": dict(rs_tpl["labels"])},
                "template": template,
            },
            "status": {},
        }
        self.store.put(rs)
        self._templates[("replicasets", ns, rsname)] = rs_tpl
        self._event(
            deploy,
            "ScalingReplicaSet",
            "Scaled up replica set %s from 0 to %d" % (rsname, replicas),
            source="deployment-controller",
        )
        await self._fill("replicasets", ns, rsname)
        return rsname

    def _start_rollout(self, ns: str, name: str) -> None:
        prev = self._rollouts.pop((ns, name), None)
        if prev is not None:
            prev.cancel()
        self._rollouts[(ns, name)] = self._spawn(self._rollout(ns, name))

    async def _rollout(self, ns: str, name: str) -> None:
        """RollingUpdate with maxSurge 1 / maxUnavailable 0: one new pod, Ready, one old gone."""
        d = self.store.get("deployments", ns, name)
        tpl = self._templates.get(("deployments", ns, name))
        if d is None or tpl is None:
            return
        t = d["spec"]["template"]
        ntpl = dict(
            tpl,
            containers=copy.deepcopy(t["spec"]["containers"]),
            labels=dict(t["metadata"].get("labels") or tpl["labels"]),
            start_delay=max(tpl.get("start_delay") or 0, self.start_delay),
            ready_delay=max(tpl.get("ready_delay") or 0, self.ready_delay),
        )
        ntpl.pop("bad_image", None)
        self._templates[("deployments", ns, name)] = ntpl
        uid = d["metadata"]["uid"]
        rsname = await self._new_replicaset(d, dict(ntpl), 0)
        top = 1 + max(_revision(r) for r in self._owned_rs(ns, uid))
        self.store.update(
            "replicasets",
            ns,
            rsname,
            lambda o: (
                o["metadata"]
                .setdefault("annotations", {})
                .update({"deployment.kubernetes.io/revision": str(top)})
            ),
        )
        want = d["spec"].get("replicas", 1)

        def count(rs: str, ready: bool = False) -> int:
            o = self.store.get("replicasets", ns, rs)
            pods = self._owned_pods(o) if o else []
            return len([p for p in pods if _pod_ready(p)] if ready else pods)

        async def scale_rs(rs: str, n: int) -> None:
            before = (
                (self.store.get("replicasets", ns, rs) or {}).get("spec", {}).get("replicas", 0)
            )
            await self._scale_async("replicasets", ns, rs, n)
            self._event(
                d,
                "ScalingReplicaSet",
                "Scaled %s replica set %s from %d to %d"
                % ("up" if n > before else "down", rs, before, n),
                source="deployment-controller",
            )

        for i in range(1, want + 1):
            if count(rsname) < i:
                await scale_rs(rsname, i)
            while count(rsname, ready=True) < i and not self._closing:
                await asyncio.sleep(0.02)  # controller poll; tests await store changes instead
            for old in self._owned_rs(ns, uid):
                oname = old["metadata"]["name"]
                if oname != rsname and old["spec"].get("replicas", 0) > 0:
                    await scale_rs(oname, old["spec"]["replicas"] - 1)
                    break
        for old in self._owned_rs(ns, uid):
            if old["metadata"]["name"] != rsname and old["spec"].get("replicas", 0):
                await scale_rs(old["metadata"]["name"], 0)
        self._reconcile_soon()

    def _owned_rs(self, ns: str, uid: str) -> List[dict]:
        return [
            r
            for r in self.store.list("replicasets", ns)
            if any(x["uid"] == uid for x in r["metadata"].get("ownerReferences", []))
        ]

    def _owned_pods(self, owner: dict) -> List[dict]:
        uid = owner["metadata"]["uid"]
        return [
            p
            for p in self.store.list("pods", owner["metadata"]["namespace"])
            if any(r["uid"] == uid for r in p["metadata"].get("ownerReferences", []))
        ]

    async def _fill(self, plural: str, ns: str, name: str) -> None:
        """Create missing pods of a ReplicaSet / StatefulSet / DaemonSet / Job."""
        owner = self.store.get(plural, ns, name)
        tpl = self._templates.get((plural, ns, name))
        if owner is None or tpl is None or self._closing:
            return
        pods = self._owned_pods(owner)
        if plural == "jobs":
            if any(c["status"] == "True" for c in owner["status"].get("conditions", [])):
                return
            want = owner["spec"]["completions"] - owner["status"].get("succeeded", 0)
            pods = [p for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed")]
        elif plural == "daemonsets":
            want = 1
        else:
            want = owner["spec"].get("replicas", 1)
        pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        if plural == "statefulsets":
            have = {p["metadata"]["name"] for p in pods}
            for i in range(want):
                pname = "%s-%d" % (name, i)
                if pname not in have and self.store.get("pods", ns, pname) is None:
                    await self._create_pod(
                        ns,
                        pname,
                        tpl,
                        owner,
                        extra_labels={
                            "statefulset.kubernetes.io/pod-name": pname,
                            "apps.kubernetes.io/pod-index": str(i),
                        },
                    )
                    self._event(
                        owner,
                        "SuccessfulCreate",
                        "create Pod %s in StatefulSet %s successful" % (pname, name),
                        source="statefulset-controller",
                    )
            for p in pods:
                idx = int(p["metadata"]["name"].rsplit("-", 1)[1])
                if idx >= want:
                    await self._remove_pod(ns, p["metadata"]["name"])
            return
        for _ in range(want - len(pods)):
            pname = "%s-%s" % (name, _suffix(5, self._rng))
            await self._create_pod(ns, pname, tpl, owner)
            self._event(
                owner,
                "SuccessfulCreate",
                "Created pod: %s" % pname,
                source=plural[:-1] + "-controller",
            )
        for p in pods[want:] if want < len(pods) else []:
            await self._remove_pod(ns, p["metadata"]["name"])
            self._event(
                owner,
                "SuccessfulDelete",
                "Deleted pod: %s" % p["metadata"]["name"],
                source=plural[:-1] + "-controller",
            )

    def _reconcile_soon(self) -> None:
        """Recompute endpoints and workload status (coalesced to once per loop turn)."""
        if getattr(self, "_reconcile_pending", False) or self._loop is None:
            return
        self._reconcile_pending = True
        self._loop.call_soon(self._reconcile)

    def _reconcile(self) -> None:
        self._reconcile_pending = False
        with self._cond:
            for plural in ("replicasets", "deployments", "statefulsets", "daemonsets", "jobs"):
                for o in self.store.list(plural):
                    self._status_of(plural, o["metadata"]["namespace"], o["metadata"]["name"])
            for s in self.store.list("services"):
                self._endpoints_for(s)

    def _status_of(self, plural: str, ns: str, name: str) -> None:
        o = self.store.get(plural, ns, name)
        if o is None:
            return
        if plural == "deployments":
            rss = [
                r
                for r in self.store.list("replicasets", ns)
                if any(
                    x["uid"] == o["metadata"]["uid"]
                    for x in r["metadata"].get("ownerReferences", [])
                )
            ]
            pods = [p for r in rss for p in self._owned_pods(r)]
            newest = rss and max(rss, key=_revision)
            updated = [
                p
                for p in pods
                if newest
                and any(
                    x["uid"] == newest["metadata"]["uid"] for x in p["metadata"]["ownerReferences"]
                )
            ]
        else:
            pods = self._owned_pods(o)
            updated = pods
        ready = [p for p in pods if _pod_ready(p)]
        want = o["spec"].get("replicas", 1)

        def fn(d: dict) -> None:
            st = d.setdefault("status", {})
            st["observedGeneration"] = d["metadata"].get("generation", 1)
            if plural == "jobs":
                st["active"] = sum(
                    1 for p in pods if p["status"].get("phase") in ("Pending", "Running")
                )
                st["ready"] = len(ready)
                st["succeeded"] = sum(1 for p in pods if p["status"].get("phase") == "Succeeded")
                st["failed"] = sum(1 for p in pods if p["status"].get("phase") == "Failed")
                if st["succeeded"] >= d["spec"]["completions"] and not st.get("conditions"):
                    now = _now()
                    st["conditions"] = [
                        _cond(
                            "SuccessCriteriaMet",
                            "True",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                        ),
                        _cond(
                            "Complete",
                            "True",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                        ),
                    ]
                    st["completionTime"] = now
                for k in ("active", "ready", "succeeded", "failed"):
                    if not st[k]:
                        st.pop(k)
                return
            if plural == "daemonsets":
                st.update(
                    desiredNumberScheduled=1,
                    currentNumberScheduled=len(pods),
                    numberReady=len(ready),
                    numberAvailable=len(ready),
                    updatedNumberScheduled=len(pods),
                    numberMisscheduled=0,
                )
                return
            st["replicas"] = len(pods)
            st["readyReplicas"] = len(ready)
            st["availableReplicas"] = len(ready)
            if plural == "replicasets":
                st["fullyLabeledReplicas"] = len(pods)
            if plural == "statefulsets":
                st.update(currentReplicas=len(pods), updatedReplicas=len(pods))
            if plural == "deployments":
                st["updatedReplicas"] = len(updated)
                unavailable = max(0, want - len(ready))
                if unavailable:
                    st["unavailableReplicas"] = unavailable
                else:
                    st.pop("unavailableReplicas", None)
                max_unavail = want // 4
                avail = len(ready) >= want - max_unavail
                _set_cond(
                    st,
                    "Available",
                    "True" if avail else "False",
                    "MinimumReplicasAvailable" if avail else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if avail
                    else "Deployment does not have minimum availability.",
                )
                done = len(updated) == want and len([p for p in updated if _pod_ready(p)]) == want
                _set_cond(
                    st,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                    'ReplicaSet "%s" has %s progressing.'
                    % (
                        newest["metadata"]["name"] if newest else name,
                        "successfully" if done else "been",
                    ),
                )
            for k in ("readyReplicas", "availableReplicas"):
                if not st.get(k):
                    st.pop(k, None)

        self.store.update(plural, ns, name, fn)

    # -- services and endpoints -------------------------------------------------------
    def _add_service(
        self,
        ns: str,
        name: str,
        selector: Optional[dict],
        ports: List[dict],
        headless: bool,
        type_: str,
    ) -> str:
        self._add_namespace(ns)
        n = next(self._svc_ip)
        ip = "None" if headless else "10.96.%d.%d" % (n // 250, n % 250 + 1)
        spec: Dict[str, Any] = {
            "ports": ports,
            "type": type_,
            "clusterIP": ip,
            "clusterIPs": [ip],
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
        }
        if selector:
            spec["selector"] = dict(selector)
        svc = {
            "kind": "Service",
            "apiVersion": "v1",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": spec,
            "status": {"loadBalancer": {}},
        }
        self.store.put(svc)
        self._endpoints_for(svc)
        return name

    def _endpoints_for(self, svc: dict) -> None:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        sel = svc["spec"].get("selector")
        if not sel:
            return
        match = label_matcher(_selector_string(sel))
        pods = [
            p
            for p in self.store.list("pods", ns)
            if match(p["metadata"].get("labels") or {}) and p["status"].get("podIP")
        ]
        ready, not_ready, slice_eps, ports = [], [], [], []
        for sp in svc["spec"].get("ports", []):
            tp = sp.get("targetPort", sp["port"])
            if isinstance(tp, str):
                for p in pods:
                    for c in p["spec"]["containers"]:
                        for cp in c.get("ports", []):
                            if cp.get("name") == tp:
                                tp = cp["containerPort"]
            port = {
                "port": tp if isinstance(tp, int) else sp["port"],
                "protocol": sp.get("protocol", "TCP"),
            }
            if sp.get("name"):
                port["name"] = sp["name"]
            ports.append(port)
        for p in pods:
            addr = {
                "ip": p["status"]["podIP"],
                "nodeName": "sim-node",
                "targetRef": {
                    "kind": "Pod",
                    "name": p["metadata"]["name"],
                    "namespace": ns,
                    "uid": p["metadata"]["uid"],
                },
            }
            (ready if _pod_ready(p) else not_ready).append(addr)
            slice_eps.append(
                {
                    "addresses": [p["status"]["podIP"]],
                    "conditions": {
                        "ready": _pod_ready(p),
                        "serving": _pod_ready(p),
                        "terminating": False,
                    },
                    "nodeName": "sim-node",
                    "targetRef": addr["targetRef"],
                }
            )
        subset: Dict[str, Any] = {"ports": ports}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        ep = {
            "kind": "Endpoints",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": dict(svc["metadata"].get("labels") or {}),
            },
            "subsets": [subset] if pods else [],
        }
        old = self.store.get("endpoints", ns, name)
        if old is None or old.get("subsets") != ep["subsets"]:
            self.store.put(ep)
        sname = "%s-%s" % (name, hashlib.sha256(name.encode()).hexdigest()[:5])
        es = {
            "kind": "EndpointSlice",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {
                "name": sname,
                "namespace": ns,
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
                "ownerReferences": [_owner_ref(svc)],
            },
            "addressType": "IPv4",
            "endpoints": slice_eps,
            "ports": ports,
        }
        old = self.store.get("endpointslices", ns, sname)
        if old is None or old.get("endpoints") != slice_eps or old.get("ports") != ports:
            self.store.put(es)

    # -- deletion ----------------------------------------------------------------------
    async def _remove_pod(self, ns: str, name: str) -> Optional[dict]:
        p = self.store.get("pods", ns, name)
        if p is None:
            return None
        uid = p["metadata"]["uid"]
        for h in self._timers.pop(uid, []):
            h.cancel()
        for t in self._tunnels:
            if t.uid == uid and t.session is not None:
                for pair in list(t.session.pairs.values()):
                    pair.fail(t.session.reset_text(pair.port))
        self._event(p, "Killing", "Stopping container %s" % p["spec"]["containers"][0]["name"])
        self.store.remove("pods", ns, name)
        for srv in self._backends.pop(uid, {}).values():
            await srv.stop()
        self._logs.pop(uid, None)
        self._reconcile_soon()
        return p

    async def _delete_pod(
        self, ns: str, name: str, replace_delay: Optional[float], grace: float = 0
    ) -> bool:
        if grace > 0:
            p = self.store.get("pods", ns, name)
            if p is None:
                return False
            uid = p["metadata"]["uid"]

            def terminating(o: dict) -> None:
                o["metadata"]["deletionTimestamp"] = _now()
                o["metadata"]["deletionGracePeriodSeconds"] = int(grace)
                _set_cond(o["status"], "Ready", "False", "PodTerminating")
                for cs in o["status"].get("containerStatuses", []):
                    cs["ready"] = False

            self.store.update("pods", ns, name, terminating)
            self._later(uid, grace, lambda: self._spawn(self._remove_pod(ns, name)))
            self._reconcile_soon()
        else:
            p = await self._remove_pod(ns, name)
            if p is None:
                return False
        delay = self.replace_delay if replace_delay is None else replace_delay
        for ref in p["metadata"].get("ownerReferences", []):
            plural = kind_of(ref["kind"]).plural
            tpl = self._templates.get((plural, ns, ref["name"]))
            if tpl is not None:
                # Replacements go Pending -> Running -> Ready like real pods.
                tpl.setdefault("start_delay", 0)
                rtpl = dict(
                    tpl,
                    start_delay=max(tpl.get("start_delay") or 0, self.start_delay),
                    ready_delay=max(tpl.get("ready_delay") or 0, self.ready_delay),
                )
                self._templates[(plural, ns, ref["name"])] = rtpl
                self._later(
                    "controller",
                    delay,
                    lambda pl=plural, n=ref["name"]: self._spawn(self._fill(pl, ns, n)),
                )
        return True

    async def _delete(self, plural: str, ns: str, name: str) -> bool:
        if plural == "pods":
            return await self._delete_pod(ns, name, None)
        o = self.store.get(plural, ns, name)
        if o is None:
            return False
        self._templates.pop((plural, ns, name), None)
        rollout = self._rollouts.pop((ns, name), None) if plural == "deployments" else None
        if rollout is not None:
            rollout.cancel()
        if plural in ("deployments", "replicasets", "statefulsets", "daemonsets", "jobs"):
            uid = o["metadata"]["uid"]
            for rs in self._owned_rs(ns, uid):
                await self._delete("replicasets", ns, rs["metadata"]["name"])
            for pod in self._owned_pods(o):
                await self._remove_pod(ns, pod["metadata"]["name"])
        if plural == "services":
            self.store.remove("endpoints", ns, name)
            for es in self.store.list("endpointslices", ns):
                if es["metadata"]["labels"].get("kubernetes.io/service-name") == name:
                    self.store.remove("endpointslices", ns, es["metadata"]["name"])
        self.store.remove(plural, ns, name)
        self._reconcile_soon()
        return True

    # -- status changes --------------------------------------------------------------------
    def _patch(
        self, plural: str, ns: str, name: str, patch: Any, after: float = 0, kind: str = "merge"
    ) -> None:
        """Apply a merge (default), ``strategic`` or ``json`` patch; template changes roll."""
        if after:
            self._later("timers", after, self._patch, plural, ns, name, patch, 0, kind)
            return
        old = self.store.get(plural, ns, name)
        if old is None:
            return
        apply = {"json": _json_patch, "strategic": _strategic_merge}.get(kind, _merge)
        new = self.store.update(plural, ns, name, lambda o: apply(o, patch))
        if new is None:
            return
        if "spec" in old:
            if new["spec"].get("replicas") != old["spec"].get("replicas") and plural in (
                "deployments",
                "replicasets",
                "statefulsets",
            ):
                self._spawn(self._scale_async(plural, ns, name, new["spec"]["replicas"]))
            if plural == "deployments" and new["spec"].get("template") != old["spec"].get(
                "template"
            ):
                self.store.update(plural, ns, name, _bump_generation)
                self._start_rollout(ns, name)
        self._reconcile_soon()

    def _set_condition_later(self, plural, ns, name, ctype, status, reason, message, after) -> None:
        if after:
            self._later(
                "timers",
                after,
                self._set_condition_later,
                plural,
                ns,
                name,
                ctype,
                status,
                reason,
                message,
                0,
            )
            return
        self.store.update(
            plural,
            ns,
            name,
            lambda o: _set_cond(o.setdefault("status", {}), ctype, status, reason, message),
        )
        self._reconcile_soon()

    def _scale(self, plural: str, ns: str, name: str, replicas: int) -> None:
        self._spawn(self._scale_async(plural, ns, name, replicas))

    async def _scale_async(self, plural: str, ns: str, name: str, replicas: int) -> None:
        def bump(o: dict) -> None:
            o["spec"]["replicas"] = replicas
            o["metadata"]["generation"] = o["metadata"].get("generation", 1) + 1

        self.store.update(plural, ns, name, bump)
        if plural == "deployments":
            d = self.store.get(plural, ns, name)
            rss = self._owned_rs(ns, d["metadata"]["uid"]) if d else []
            if rss:  # scale the newest ReplicaSet; older ones stay at 0 after a rollout
                newest = max(rss, key=_revision)["metadata"]["name"]
                self.store.update("replicasets", ns, newest, bump)
                await self._fill("replicasets", ns, newest)
        else:
            await self._fill(plural, ns, name)
        self._reconcile_soon()

    def _restart_container(
        self, ns, pod, reason, exit_code, container, back_off, refuse=False
    ) -> None:
        p = self.store.get("pods", ns, pod)
        if p is None:
            raise KeyError("no pod %r" % pod)
        uid = p["metadata"]["uid"]
        if refuse:
            self._refusing.add(uid)
        runs = self._logs.setdefault(uid, [["starting container in pod %s" % pod]])
        for srv in self._backends.get(uid, {}).values():
            runs[-1].extend(srv.log)
            srv.log.clear()
        runs[-1].append(
            {"OOMKilled": "fatal error: runtime: out of memory"}.get(reason, "exiting: %s" % reason)
        )
        runs.append(["starting container in pod %s (restart %d)" % (pod, len(runs))])
        del runs[:-2]
        cname = container or p["spec"]["containers"][0]["name"]
        now = _now()

        def fn(o: dict) -> None:
            st = o["status"]
            for cs in st.get("containerStatuses", []):
                if cs["name"] != cname:
                    continue
                started = cs.get("state", {}).get("running", {}).get("startedAt", now)
                cs["lastState"] = {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": reason,
                        "startedAt": started,
                        "finishedAt": now,
                        "containerID": cs.get("containerID", ""),
                    }
                }
                cs["restartCount"] = cs.get("restartCount", 0) + 1
                cs["ready"] = False
                cs["started"] = False
                if back_off:
                    cs["state"] = {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": "back-off 10s restarting failed container=%s pod=%s_%s(%s)"
                            % (cname, pod, ns, uid),
                        }
                    }
                else:
                    cs["state"] = {"running": {"startedAt": now}}
            _set_cond(
                st,
                "ContainersReady",
                "False",
                "ContainersNotReady",
                "containers with unready status: [%s]" % cname,
            )
            _set_cond(
                st,
                "Ready",
                "False",
                "ContainersNotReady",
                "containers with unready status: [%s]" % cname,
            )

        self.store.update("pods", ns, pod, fn)
        for srv in self._backends.get(uid, {}).values():
            srv.reset_connections()
        if back_off:
            self._event(
                p,
                "BackOff",
                "Back-off restarting failed container %s in pod %s_%s(%s)" % (cname, pod, ns, uid),
                "Warning",
            )
        tpl = {"ready_delay": self.ready_delay}

        def running_again() -> None:
            self._refusing.discard(uid)
            if self._alive(ns, pod, uid) is None:
                return
            t = _now()

            def fn2(o: dict) -> None:
                for cs in o["status"]["containerStatuses"]:
                    if cs["name"] == cname:
                        cs["state"] = {"running": {"startedAt": t}}
                        cs["started"] = True

            self.store.update("pods", ns, pod, fn2)
            self._event(p, "Started", "Started container %s" % cname)
            self._later(uid, tpl["ready_delay"], self._pod_ready, ns, pod, uid, {})

        self._later(uid, back_off or 0, running_again)
        self._reconcile_soon()

    async def _image_pull_backoff(self, ns: str, target: str, image: str) -> Optional[str]:
        kind, _, name = target.rpartition("/")
        if not kind and self.store.get("pods", ns, name) is None:
            kind = "deployments"  # a bare deployment name
        if kind and kind_of(kind).plural == "deployments":
            d = self.store.get("deployments", ns, name)
            tpl = self._templates.get(("deployments", ns, name))
            if d is None or tpl is None:
                raise KeyError(target)
            containers = copy.deepcopy(tpl["containers"])
            for c in containers:
                c["image"] = image
            ntpl = dict(tpl, containers=containers, bad_image=True, start_delay=0, ready_delay=0)
            self._templates[("deployments", ns, name)] = ntpl

            def bump(o: dict) -> None:
                o["metadata"]["generation"] += 1
                o["spec"]["template"]["spec"]["containers"] = copy.deepcopy(containers)

            self.store.update("deployments", ns, name, bump)
            d = self.store.get("deployments", ns, name)
            assert d is not None
            rsname = await self._new_replicaset(d, dict(ntpl), 0)
            self.store.update(
                "replicasets",
                ns,
                rsname,
                lambda o: o["spec"].update(replicas=1),
            )
            rs = self.store.get("replicasets", ns, rsname)
            assert rs is not None
            pname = "%s-%s" % (rsname, _suffix(5, self._rng))
            await self._create_pod(ns, pname, self._templates[("replicasets", ns, rsname)], rs)
            self._reconcile_soon()
            return pname
        pod = name
        self.store.update(
            "pods", ns, pod, lambda o: [c.update(image=image) for c in o["spec"]["containers"]]
        )
        self._pull_fail(ns, pod, image)
        return pod

    def _pull_fail(self, ns: str, pod: str, image: str) -> None:
        p = self.store.get("pods", ns, pod)
        if p is None:
            raise KeyError(pod)
        for h in self._timers.pop(p["metadata"]["uid"], []):
            h.cancel()

        def fn(o: dict) -> None:
            st = o["status"]
            _set_cond(st, "ContainersReady", "False", "ContainersNotReady")
            _set_cond(st, "Ready", "False", "ContainersNotReady")
            for cs in st["containerStatuses"]:
                cs.update(image=image, ready=False, started=False)
                cs["state"] = {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": 'Back-off pulling image "%s"' % image,
                    }
                }

        self.store.update("pods", ns, pod, fn)
        self._event(p, "Pulling", 'Pulling image "%s"' % image)
        self._event(
            p,
            "Failed",
            'Failed to pull image "%s": rpc error: code = NotFound desc = failed to pull and '
            'unpack image "%s": not found' % (image, image),
            "Warning",
        )
        self._event(p, "Failed", "Error: ErrImagePull", "Warning")
        self._event(p, "BackOff", 'Back-off pulling image "%s"' % image, "Normal")
        self._event(p, "Failed", "Error: ImagePullBackOff", "Warning")
        self._reconcile_soon()

    def _unschedulable(self, ns: str, pod: str) -> None:
        p = self.store.get("pods", ns, pod)
        if p is None:
            raise KeyError(pod)
        for h in self._timers.pop(p["metadata"]["uid"], []):
            h.cancel()

        def fn(o: dict) -> None:
            o["spec"].pop("nodeName", None)
            o["status"] = _unsched_status()

        self.store.update("pods", ns, pod, fn)
        self._event(p, "FailedScheduling", _UNSCHED_MSG, "Warning", "default-scheduler")
        self._reconcile_soon()

    def _finish_job(self, ns: str, name: str, ok: bool) -> None:
        job = self.store.get("jobs", ns, name)
        if job is None:
            raise KeyError(name)
        for p in self._owned_pods(job):
            if p["status"].get("phase") not in ("Succeeded", "Failed"):
                self._pod_succeeded(ns, p["metadata"]["name"], p["metadata"]["uid"], failed=not ok)
        if not ok:

            def fn(o: dict) -> None:
                st = o["status"]
                st["conditions"] = [
                    _cond(
                        "FailureTarget",
                        "True",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    ),
                    _cond(
                        "Failed",
                        "True",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    ),
                ]
                st["failed"] = st.get("failed", 0) + 1
                st.pop("active", None)

            self.store.update("jobs", ns, name, fn)
            self._event(
                job,
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                "Warning",
                "job-controller",
            )
        self._reconcile_soon()

    # -- events ---------------------------------------------------------------------------
    def _event_for(
        self, plural: str, ns: str, name: str, reason: str, message: str, type_: str
    ) -> None:
        o = self.store.get(plural, ns, name)
        if o is None:
            k = KINDS[plural]
            o = {
                "kind": k.kind,
                "apiVersion": k.api_version,
                "metadata": {"name": name, "namespace": ns, "uid": ""},
            }
        self._event(o, reason, message, type_)

    def _event(
        self, obj: dict, reason: str, message: str, type_: str = "Normal", source: str = "kubelet"
    ) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        now = _now()
        for e in self.store.list("events", ns):
            io = e["involvedObject"]
            if (
                io.get("uid") == meta.get("uid")
                and io["name"] == meta["name"]
                and e["reason"] == reason
                and e["message"] == message
            ):
                self.store.update(
                    "events",
                    ns,
                    e["metadata"]["name"],
                    lambda o: o.update(count=o.get("count", 1) + 1, lastTimestamp=now),
                )
                return
        ev = {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {"name": "%s.%x" % (meta["name"], next(_EVENT_SEQ)), "namespace": ns},
            "involvedObject": {
                "kind": obj["kind"],
                "namespace": ns,
                "name": meta["name"],
                "uid": meta.get("uid", ""),
                "apiVersion": obj.get("apiVersion", "v1"),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": source, "host": "sim-node"}
            if source == "kubelet"
            else {"component": source},
            "reportingComponent": source,
            "reportingInstance": "sim-node" if source == "kubelet" else "",
        }
        self.store.put(ev)

    # -- API server faults ---------------------------------------------------------------------
    def _expire_watches(self) -> int:
        with self._cond:
            self.store.rv += 1  # the expiry point: newer than anything a live watch has seen
            self._expired_rv = self.store.rv
            live, self.store.watchers = self.store.watchers, []
            self._cond.notify_all()
        for w in live:
            w.end(("ERROR", expired_status(w.last_rv, self._expired_rv)))
        return len(live)

    def _expired_floor(self, q: dict) -> Optional[int]:
        """The expiry point, if a watch from the requested resourceVersion cannot be served:
        older than ``expire_watches()`` or than the oldest change still in the log."""
        rv = q.get("resourceVersion", "")
        if q.get("sendInitialEvents") == "true" or not rv.isdigit() or int(rv) == 0:
            return None  # "any" / "not older than": always servable
        floor, log = self._expired_rv, self.store.log
        if len(log) == log.maxlen:
            floor = max(floor, log[0][0] - 1)
        return floor if int(rv) < floor else None

    def _denied(
        self, method: str, group: str, plural: str, sub: Optional[str], ns, name, q: dict
    ) -> Optional[dict]:
        """The 403 Status if a ``forbid()`` rule covers this request."""
        if not self._denials:
            return None
        verb = request_verb(method, name, sub, q)
        if name is None and verb in ("list", "watch"):
            name = selector_name(q.get("fieldSelector"))
        if plural == "namespaces" and name:
            ns = name  # the authorizer sees a namespace's own name as its namespace
        resource = plural + "/" + sub if sub else plural
        for rule in self._denials:
            if rule.matches(verb, resource, ns or "", name or ""):
                return forbidden_status(verb, group, plural, sub, ns or "", name or "")
        return None

    async def _set_reachable(self, reachable: bool) -> None:
        if reachable == (self._reserved is None):
            return
        if reachable:
            sock, self._reserved = self._reserved, None
            self._server = await asyncio.start_server(self._handle_conn, sock=sock)
            return
        assert self._server is not None
        self._server.close()
        # A bound socket that does not listen: connects are refused (RST), and no other
        # process can take the port before we listen on it again.
        self._reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._reserved.bind(("127.0.0.1", self.port))
        self._drop_connections()

    def _drop_connections(self) -> None:
        """Every API connection ends now: watches, tunnels (no GOAWAY), idle keep-alives."""
        with self._cond:
            live, self.store.watchers = self.store.watchers, []
        for w in live:
            w.end()
        for t in self._tunnels:
            if t.session is not None:
                t.session.drop()
        for w in list(self._conns):
            w.transport.abort()

    # -- tunnel faults -----------------------------------------------------------------------
    async def _tunnel_fault(self, pod: str, kind: str, message: Optional[str], on: str) -> None:
        if on in ("next", "each"):
            self._pending_faults.setdefault(pod, deque()).append((kind, message, on == "each"))
            return
        for t in self._tunnels:
            s = t.session
            if t.pod_name != pod or s is None or s.closed.is_set():
                continue
            if kind in ("close", "goaway"):
                (s.abort if kind == "close" else s.go_away)()
                continue
            for pair in list(s.pairs.values()):
                if kind == "error":
                    pair.fail(message or s.reset_text(pair.port))
                else:
                    pair.finish()

    async def _stall(self, pod: str, stalled: bool, streams: bool = False) -> None:
        (self._stalled.add if stalled else self._stalled.discard)(pod)
        (self._stall_streams.add if stalled and streams else self._stall_streams.discard)(pod)
        for t in self._tunnels:
            if t.pod_name == pod:
                t.stall_streams = stalled and streams
                (t.stalled.clear if stalled else t.stalled.set)()
                if not stalled and t.session is not None:
                    t.session.release_replies()

    async def _clear_faults(self, pod: Optional[str]) -> None:
        names = [pod] if pod else set(self._pending_faults) | self._stalled | self._stall_streams
        for name in names:
            self._pending_faults.pop(name, None)
            await self._stall(name, False)

    ###############################################################################
    # HTTP API server
    ###############################################################################
    async def _handle_conn(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._conns.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while not self._closing:
                line = await reader.readline()
                if not line:
                    return
                parts = line.decode("latin-1").split()
                if len(parts) < 3:
                    return
                method, target = parts[0], parts[1]
                headers: Dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = b""
                if headers.get("content-length"):
                    body = await reader.readexactly(int(headers["content-length"]))
                self.requests.append((method, target))
                if _DEBUG:
                    print("simcluster: %s %s" % (method, target), file=sys.stderr, flush=True)
                agent = headers.get("user-agent", "")
                if agent not in self.user_agents:
                    self.user_agents = (*self.user_agents, agent)
                if len(self.requests) > 10000:
                    del self.requests[:5000]
                try:
                    keep = await self._dispatch(method, target, headers, body, reader, writer)
                except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                    raise
                except Exception as e:  # a simulator bug must not look like a network error
                    traceback.print_exc()
                    keep = self._status(writer, 500, "InternalError", "simcluster: %r" % e)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    def _reply(self, writer, status: int, obj: Any, ctype: str = _PROTO_JSON) -> bool:
        # Compact JSON and a final newline, as kube-apiserver's encoder writes it.
        body = (
            obj
            if isinstance(obj, bytes)
            else json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        )
        writer.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-cache, private\r\n\r\n"
            % (
                status,
                {
                    200: b"OK",
                    201: b"Created",
                    400: b"Bad Request",
                    403: b"Forbidden",
                    404: b"Not Found",
                    405: b"Method Not Allowed",
                    409: b"Conflict",
                    415: b"Unsupported Media Type",
                }.get(status, b"Status"),
                ctype.encode(),
                len(body),
            )
            + body
        )
        return True

    def _status(
        self, writer, code: int, reason: str, message: str, details: Optional[dict] = None
    ) -> bool:
        return self._reply(writer, code, status_object(code, reason, message, details))

    async def _dispatch(self, method, target, headers, body, reader, writer) -> bool:
        url = urlsplit(target)
        path = unquote(url.path).rstrip("/") or "/"
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        ctype = headers.get("content-type", "")
        if body and "json" not in ctype and "yaml" not in ctype:
            # Protobuf / CBOR bodies: 415 makes client-go retry the request as JSON.
            return self._status(
                writer,
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format",
            )
        if path.startswith("/_sim"):
            return await self._admin(method, path[len("/_sim/") :], q, writer)
        if path in ("/healthz", "/readyz", "/livez"):
            return self._reply(writer, 200, b"ok", "text/plain")
        if path == "/version":
            return self._reply(
                writer,
                200,
                {
                    "major": "1",
                    "minor": "37",
                    "gitVersion": "v1.37.1-sim",
                    "platform": "linux/amd64",
                    "goVersion": "go1.25.0",
                    "compiler": "gc",
                },
            )
        if path == "/api":
            return self._reply(
                writer,
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:%d" % self.port}
                    ],
                },
            )
        if path == "/apis":
            groups = sorted({k.group for k in _K if k.group})
            return self._reply(
                writer,
                200,
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": g,
                            "versions": [{"groupVersion": g + "/v1", "version": "v1"}],
                            "preferredVersion": {"groupVersion": g + "/v1", "version": "v1"},
                        }
                        for g in groups
                    ],
                },
            )
        segs = path.strip("/").split("/")
        if segs[0] == "api" and len(segs) >= 2:
            group, version, rest = "", segs[1], segs[2:]
        elif segs[0] == "apis" and len(segs) >= 3:
            group, version, rest = segs[1], segs[2], segs[3:]
        elif segs[0] == "apis" and len(segs) == 2:
            g = segs[1]
            if not any(k.group == g for k in _K):
                return self._status(
                    writer, 404, "NotFound", "the server could not find the requested resource"
                )
            return self._reply(
                writer,
                200,
                {
                    "kind": "APIGroup",
                    "apiVersion": "v1",
                    "name": g,
                    "versions": [{"groupVersion": g + "/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": g + "/v1", "version": "v1"},
                },
            )
        else:
            return self._status(
                writer, 404, "NotFound", "the server could not find the requested resource"
            )
        kinds = [k for k in _K if k.group == group and k.version == version]
        if not kinds:
            return self._status(
                writer, 404, "NotFound", "the server could not find the requested resource"
            )
        if not rest:
            return self._reply(writer, 200, _resource_list(group, version, kinds))
        ns: Optional[str] = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        plural = rest[0]
        k = KINDS.get(plural)
        if k is None or k.group != group:
            return self._status(
                writer, 404, "NotFound", "the server could not find the requested resource"
            )
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if not k.namespaced:
            ns = None
        accept = headers.get("accept", "")
        denied = self._denied(method, group, plural, sub, ns, name, q)
        if denied is not None:  # authorization comes before any lookup: 403, never 404
            return self._reply(writer, 403, denied)
        # Only the loop thread writes the store; it takes the store lock per mutation.
        if sub == "portforward" and plural == "pods" and ns and name:
            return await self._portforward(ns, name, headers, reader, writer)
        if sub == "scale" and plural in ("deployments", "replicasets", "statefulsets"):
            return await self._scale_subresource(writer, method, plural, ns or "", name, body)
        if sub == "log" and plural == "pods":
            return self._pod_log(writer, ns or self.namespace, name or "", q)
        if method == "GET" and name is None:
            if q.get("watch") in ("true", "1"):
                return await self._watch(writer, plural, ns, q, accept)
            return self._list(writer, plural, ns, q, accept)
        if method == "GET":
            o = self.store.get(plural, ns or "", name or "")
            if o is None:
                return self._status(
                    writer,
                    404,
                    "NotFound",
                    '%s "%s" not found' % (plural, name),
                    {"name": name, "kind": plural},
                )
            if "as=Table" in accept:
                return self._reply(
                    writer,
                    200,
                    make_table(
                        plural,
                        [o],
                        o["metadata"]["resourceVersion"],
                        q.get("includeObject") == "Object",
                    ),
                )
            return self._reply(writer, 200, o)
        if method == "DELETE" and name:
            o = self.store.get(plural, ns or "", name)
            if o is None:
                return self._status(
                    writer,
                    404,
                    "NotFound",
                    '%s "%s" not found' % (plural, name),
                    {"name": name, "kind": plural},
                )
            await self._delete(plural, ns or "", name)
            return self._reply(writer, 200, o)
        if method in ("PATCH", "PUT") and name:
            o = self.store.get(plural, ns or "", name)
            if o is None:
                return self._status(
                    writer,
                    404,
                    "NotFound",
                    '%s "%s" not found' % (plural, name),
                    {"name": name, "kind": plural},
                )
            patch = json.loads(body or b"{}")
            ctype = headers.get("content-type", "")
            pkind = "json" if "json-patch" in ctype else "merge"
            if "strategic-merge" in ctype:
                pkind = "strategic"
            if method == "PUT":  # a replace, done as a merge of what may change
                meta = patch.get("metadata") or {}
                patch = {k: patch[k] for k in ("spec", "status", "data") if k in patch}
                patch["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
                pkind = "merge"
            self._patch(plural, ns or "", name, patch, 0, pkind)
            return self._reply(writer, 200, self.store.get(plural, ns or "", name))
        if method == "POST" and name is None:
            obj = json.loads(body or b"{}")
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + _suffix()
            if k.namespaced:
                meta["namespace"] = ns or self.namespace
            if self.store.get(plural, meta.get("namespace", ""), meta.get("name", "")) is not None:
                return self._status(
                    writer,
                    409,
                    "AlreadyExists",
                    '%s "%s" already exists' % (plural, meta.get("name")),
                )
            obj["kind"] = k.kind
            return self._reply(writer, 201, await self._create_manifest(obj))
        return self._status(
            writer,
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    def _pod_log(self, writer, ns: str, name: str, q: dict) -> bool:
        """``kubectl logs``: start-up lines plus the HTTP backends' access log; ``previous``
        gives the instance before the last restart (400 if there was none, like the kubelet)."""
        p = self.store.get("pods", ns, name)
        if p is None:
            return self._status(writer, 404, "NotFound", 'pods "%s" not found' % name)
        uid = p["metadata"]["uid"]
        cname = q.get("container") or p["spec"]["containers"][0]["name"]
        logs = self._logs.setdefault(uid, [["starting container in pod %s" % name]])
        if q.get("previous") == "true":
            if len(logs) < 2:
                return self._status(
                    writer,
                    400,
                    "BadRequest",
                    'previous terminated container "%s" in pod "%s" not found' % (cname, name),
                )
            lines = list(logs[-2])
        else:
            lines = list(logs[-1])
            for srv in self._backends.get(uid, {}).values():
                lines += list(srv.log)
        if q.get("tailLines", "").isdigit():
            lines = lines[-int(q["tailLines"]) :] if int(q["tailLines"]) else []
        text = "".join(line + "\n" for line in lines)
        return self._reply(writer, 200, text.encode(), "text/plain")

    async def _scale_subresource(self, writer, method, plural, ns, name, body) -> bool:
        o = self.store.get(plural, ns, name)
        if o is None:
            return self._status(writer, 404, "NotFound", '%s "%s" not found' % (plural, name))
        if method in ("PATCH", "PUT"):
            want = (json.loads(body or b"{}").get("spec") or {}).get("replicas")
            if isinstance(want, int):
                await self._scale_async(plural, ns, name, want)
                o = self.store.get(plural, ns, name) or o
        sel = _selector_string(o["spec"].get("selector", {}).get("matchLabels", {}))
        meta = {k: o["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion")}
        meta["creationTimestamp"] = o["metadata"].get("creationTimestamp")
        return self._reply(
            writer,
            200,
            {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": meta,
                "spec": {"replicas": o["spec"].get("replicas", 0)},
                "status": {"replicas": o["status"].get("replicas", 0), "selector": sel},
            },
        )

    async def _create_manifest(self, obj: dict) -> Optional[dict]:
        """Create an object from a manifest (POST, ``create_later``); pods really start."""
        k = kind_of(obj["kind"])
        meta = obj.setdefault("metadata", {})
        if k.namespaced:
            meta.setdefault("namespace", self.namespace)
        ns = meta.get("namespace", "")
        if k.plural == "pods":
            spec = obj.get("spec", {})
            tpl = self._template(
                meta["name"], (), {}, meta.get("labels") or {}, "", spec.get("containers", [])
            )
            tpl.update(start_delay=self.start_delay, ready_delay=self.ready_delay)
            await self._create_pod(ns, meta["name"], tpl, None)
            return self.store.get("pods", ns, meta["name"])
        if k.plural in (
            "deployments",
            "replicasets",
            "statefulsets",
            "daemonsets",
            "jobs",
        ) and "template" in obj.get("spec", {}):
            t = obj["spec"]["template"]
            tpl = self._template(
                meta["name"],
                (),
                {},
                (t.get("metadata") or {}).get("labels") or {"app": meta["name"]},
                "",
                t.get("spec", {}).get("containers", []),
            )
            tpl.update(start_delay=self.start_delay, ready_delay=self.ready_delay)
            await self._create_workload(
                k.plural,
                ns,
                meta["name"],
                obj["spec"].get("replicas", obj["spec"].get("completions", 1)),
                tpl,
            )
            return self.store.get(k.plural, ns, meta["name"])
        obj.setdefault("status", {})
        if k.plural == "services":
            svc = obj.get("spec", {})
            self._add_service(
                ns,
                meta["name"],
                svc.get("selector"),
                svc.get("ports", []),
                svc.get("clusterIP") == "None",
                svc.get("type", "ClusterIP"),
            )
            return self.store.get("services", ns, meta["name"])
        if k.plural == "namespaces":
            self._add_namespace(meta["name"])
            return self.store.get("namespaces", "", meta["name"])
        return self.store.put(obj)

    def _list(self, writer, plural: str, ns: Optional[str], q: dict, accept: str) -> bool:
        lm, fm = label_matcher(q.get("labelSelector")), field_matcher(q.get("fieldSelector"))
        items = [
            o
            for o in self.store.list(plural, ns)
            if lm(o["metadata"].get("labels") or {}) and fm(o)
        ]
        rv = str(self.store.rv)
        if "as=Table" in accept:
            return self._reply(
                writer, 200, make_table(plural, items, rv, q.get("includeObject") == "Object")
            )
        k = KINDS[plural]
        return self._reply(
            writer,
            200,
            {
                "kind": k.kind + "List",
                "apiVersion": k.api_version,
                "metadata": {"resourceVersion": rv},
                "items": items,
            },
        )

    async def _watch(self, writer, plural: str, ns: Optional[str], q: dict, accept: str) -> bool:
        rv = q.get("resourceVersion", "")
        w = Watcher(
            plural,
            ns,
            q.get("labelSelector", ""),
            q.get("fieldSelector", ""),
            rv,
            "as=Table" in accept,
            q.get("includeObject") == "Object",
        )
        if not (rv.isdigit() and int(rv)):
            w.last_rv = str(self.store.rv)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n"
        )
        floor = self._expired_floor(q)
        if floor is not None:  # like kube-apiserver: 200, one ERROR event, end of stream
            self._send_event(writer, w, "ERROR", expired_status(rv, floor))
            writer.write(b"0\r\n\r\n")
            return True
        # No await from here to the registration: no change can slip between the two.
        initial = self._initial_events(w, q)
        with self._cond:
            self.store.watchers.append(w)
            self._cond.notify_all()
        try:
            for etype, obj in initial:
                self._send_event(writer, w, etype, obj)
            await writer.drain()
            await self._pump_watch(writer, w, q)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            with self._cond:
                if w in self.store.watchers:
                    self.store.watchers.remove(w)
                self._cond.notify_all()
        return True

    def _initial_events(self, w: Watcher, q: dict) -> List[Tuple[str, dict]]:
        """Current objects (no resourceVersion, or a streaming list, which then ends with the
        initial-events-end bookmark), else the logged changes since the resourceVersion are
        queued on ``w``."""
        rv = q.get("resourceVersion", "")
        initial: List[Tuple[str, dict]] = []
        if q.get("sendInitialEvents") == "true" or rv in ("", "0"):
            initial = [("ADDED", o) for o in self.store.list(w.plural, w.ns) if w.matches(o)]
        else:
            since = int(rv) if rv.isdigit() else 0
            for erv, p, etype, obj, old in list(self.store.log):
                if p == w.plural and erv > since:
                    w.offer(etype, obj, old)
        if q.get("sendInitialEvents") == "true":
            mark = self._bookmark(w.plural)
            mark["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
            initial.append(("BOOKMARK", mark))
        return initial

    def _bookmark(self, plural: str) -> dict:
        k = KINDS[plural]
        return {
            "kind": k.kind,
            "apiVersion": k.api_version,
            "metadata": {"resourceVersion": str(self.store.rv)},
        }

    async def _pump_watch(self, writer, w: Watcher, q: dict) -> None:
        """Live events until the stream's timeout, its end (expiry, unreachable) or the client
        leaving; with ``allowWatchBookmarks`` a BOOKMARK every ``bookmark_interval`` s."""
        now = time.monotonic()
        deadline = now + float(q.get("timeoutSeconds") or 1800)
        every = self.bookmark_interval if q.get("allowWatchBookmarks") == "true" else 0.0
        next_mark = now + every if every > 0 else float("inf")
        while not self._closing:
            now = time.monotonic()
            if now >= deadline:
                return
            if now >= next_mark and w.queue.empty():  # everything up to store.rv was sent
                self._send_event(writer, w, "BOOKMARK", self._bookmark(w.plural))
                next_mark = now + every
                await writer.drain()
            if not w.queue.empty():
                item = w.queue.get_nowait()  # (3.9's wait_for cancels even a ready get)
            else:
                try:
                    item = await asyncio.wait_for(
                        w.queue.get(), min(deadline, next_mark, now + 1.0) - now
                    )
                except asyncio.TimeoutError:
                    if writer.is_closing():
                        return
                    continue
            if item is None:
                return
            self._send_event(writer, w, *item)
            await writer.drain()

    def _send_event(self, writer, w: Watcher, etype: str, obj: dict) -> None:
        rv = obj.get("metadata", {}).get("resourceVersion")
        if rv:
            w.last_rv = rv
        if w.table and etype not in ("BOOKMARK", "ERROR"):
            obj = make_table(w.plural, [obj], rv, w.full)
        line = json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n"
        writer.write(b"%x\r\n%s\r\n" % (len(line), line))

    async def _portforward(
        self, ns: str, name: str, headers: Dict[str, str], reader, writer
    ) -> bool:
        p = self.store.get("pods", ns, name)
        if p is None:
            return self._status(
                writer,
                404,
                "NotFound",
                'pods "%s" not found' % name,
                {"name": name, "kind": "pods"},
            )
        upgrade = headers.get("upgrade", "").lower()
        if upgrade == "websocket" and not self.websockets:
            # An API server without the PortForwardWebsockets gate: kubectl falls back to SPDY.
            return self._status(writer, 400, "BadRequest", "websocket upgrade not supported")
        if upgrade == "websocket":
            protos = [s.strip() for s in headers.get("sec-websocket-protocol", "").split(",")]
            if sim_tunnel.WS_PROTOCOL not in protos:
                return self._status(writer, 400, "BadRequest", "unsupported websocket subprotocol")
            writer.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\n"
                    "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: %s\r\n\r\n"
                    % (
                        sim_tunnel.ws_accept(headers.get("sec-websocket-key", "")),
                        sim_tunnel.WS_PROTOCOL,
                    )
                ).encode()
            )
            transport: sim_tunnel.RawTransport = sim_tunnel.WebSocketTransport(reader, writer)
            kind = "websocket"
        elif upgrade.startswith("spdy/3.1"):
            if not self.spdy:
                return self._status(writer, 400, "BadRequest", MSG_NO_SPDY)
            if "portforward.k8s.io" not in headers.get("x-stream-protocol-version", ""):
                return self._status(
                    writer, 400, "BadRequest", "unable to upgrade: unsupported protocol"
                )
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
            )
            transport = sim_tunnel.RawTransport(reader, writer)
            kind = "spdy"
        else:
            return self._status(writer, 400, "BadRequest", "Upgrade request required")
        rec = TunnelRecord(self, p, kind)
        uid = rec.uid

        def resolve(port: int) -> Tuple[str, Optional[int]]:
            live = self._alive(ns, name, uid)
            if live is None:
                return "gone", None
            if uid in self._refusing and not _port_running(live, port):
                return "refused", None  # restart_container(refuse=True): nothing listens
            srv = self._backends.get(uid, {}).get(port)
            if srv is None or not srv.port:
                return "refused", None
            return "ok", srv.port

        rec.session = sim_tunnel.PortForwardSession(transport, resolve, rec)
        self._tunnels.append(rec)
        self._tunnels = [
            t for t in self._tunnels if t.session is None or not t.session.closed.is_set()
        ]
        with self._cond:
            self._opened[name] = self._opened.get(name, 0) + 1
            self._cond.notify_all()
        try:
            await rec.session.run()
        finally:
            with self._cond:
                self._cond.notify_all()
        return False

    # -- admin endpoint ------------------------------------------------------------------------
    def _state(self) -> dict:
        pods = []
        for p in self.store.list("pods", None):
            servers = self._backends.get(p["metadata"]["uid"], {})
            pods.append(
                {
                    "name": p["metadata"]["name"],
                    "namespace": p["metadata"]["namespace"],
                    "phase": p["status"].get("phase"),
                    "ready": _pod_ready(p),
                    "ip": p["status"].get("podIP"),
                    "backends": {str(k): v.port for k, v in servers.items()},
                    "requests": sum(v.requests for v in servers.values()),
                }
            )
        return {
            "pods": pods,
            "tunnels": [t.snapshot() for t in self._tunnels],
            "opened": dict(self._opened),
            "watches": [w.describe() for w in self.store.watchers],
            "denials": [d._asdict() for d in self._denials],
            "spdy": self.spdy,
            "websockets": self.websockets,
        }

    async def _admin(self, method: str, action: str, q: dict, writer) -> bool:
        ns = q.get("namespace") or self.namespace
        try:
            if action == "state":
                with self._cond:
                    return self._reply(writer, 200, self._state())
            if method != "POST":
                return self._reply(writer, 405, {"error": "use POST"})
            if action in _API_ACTIONS:
                return self._reply(writer, 200, {"ok": self._admin_api(action, q)})
            if action == "delete-pod":
                ok = await self._delete_pod(
                    ns, q["name"], float(q["delay"]) if "delay" in q else None
                )
            elif action == "restart-container":
                self._restart_container(
                    ns,
                    q["pod"],
                    q.get("reason", "OOMKilled"),
                    int(q.get("exit_code", 137)),
                    q.get("container"),
                    float(q.get("back_off", 0.3)),
                    q.get("refuse", "") not in ("", "0", "false"),
                )
                ok = True
            elif action == "image-pull-backoff":
                ok = bool(
                    await self._image_pull_backoff(
                        ns, q["target"], q.get("image", "registry.invalid/app:missing")
                    )
                )
            elif action == "unschedulable":
                self._unschedulable(ns, q["pod"])
                ok = True
            elif action == "fail-job":
                self._finish_job(ns, q["name"], False)
                ok = True
            elif action == "scale":
                await self._scale_async(
                    kind_of(q.get("kind", "deployments")).plural, ns, q["name"], int(q["replicas"])
                )
                ok = True
            elif action in ("tunnel-error", "tunnel-eof", "tunnel-close", "tunnel-goaway"):
                await self._tunnel_fault(
                    q["pod"], action[7:], q.get("message"), q.get("on", "active")
                )
                ok = True
            elif action == "stall":
                await self._stall(
                    q["pod"],
                    q.get("on", "1") not in ("0", "false"),
                    q.get("streams", "") not in ("", "0", "false"),
                )
                ok = True
            elif action == "backend":
                p = self.store.get("pods", ns, q["pod"])
                if p is None:
                    raise KeyError(q["pod"])
                srv = self._backends[p["metadata"]["uid"]][int(q["port"])]
                if "slow" in q:
                    srv.slow(float(q["slow"]))
                if "status" in q:
                    srv.return_status(int(q["status"]) if q["status"] not in ("", "none") else None)
                if q.get("reset"):
                    srv.reset_connections()
                ok = True
            elif action == "set-condition":
                self._set_condition_later(
                    kind_of(q["kind"]).plural,
                    ns,
                    q["name"],
                    q["type"],
                    q.get("status", "True"),
                    q.get("reason", ""),
                    q.get("message", ""),
                    float(q.get("after", 0)),
                )
                ok = True
            elif action == "set-phase":
                self._patch(
                    "pods",
                    ns,
                    q["pod"],
                    {"status": {"phase": q["phase"]}},
                    float(q.get("after", 0)),
                )
                ok = True
            elif action == "emit-event":
                self._event_for(
                    kind_of(q.get("kind", "pod")).plural,
                    ns,
                    q["name"],
                    q["reason"],
                    q.get("message", ""),
                    q.get("type", "Normal"),
                )
                ok = True
            elif action == "clear-faults":
                await self._clear_faults(q.get("pod"))
                ok = True
            else:
                return self._reply(writer, 404, {"error": "unknown action %r" % action})
        except (KeyError, ValueError) as e:
            return self._reply(writer, 400, {"error": "bad request: %s" % e})
        return self._reply(writer, 200, {"ok": ok})

    def _admin_api(self, action: str, q: dict) -> Any:
        """Admin actions on the API server itself (no default namespace: absent = any)."""
        if action == "forbid":
            rule = (q["verb"], canonical_resource(q["resource"]))
            self._denials.append(Denial(*rule, q.get("namespace") or None, q.get("name") or None))
            return True
        if action == "allow-all":
            self._denials.clear()
            return True
        if action == "spdy":
            self.spdy = q.get("on", "1") not in ("0", "false")
            return True
        return self._expire_watches()  # "expire-watches": how many live watches ended


###############################################################################
# Object helpers ##############################################################
###############################################################################

_UNSCHED_MSG = (
    "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
    "1 No preemption victims found for incoming pod."
)


def _cond(ctype: str, status: str, reason: str = "", message: str = "") -> dict:
    c = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": _now()}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def _set_cond(status: dict, ctype: str, value: str, reason: str = "", message: str = "") -> None:
    conds = status.setdefault("conditions", [])
    for c in conds:
        if c["type"] == ctype:
            if c["status"] != value:
                c["lastTransitionTime"] = _now()
            c["status"] = value
            c.pop("reason", None)
            c.pop("message", None)
            if reason:
                c["reason"] = reason
            if message:
                c["message"] = message
            return
    conds.append(_cond(ctype, value, reason, message))


def _cstatus(c: dict, state: dict) -> dict:
    return {
        "name": c["name"],
        "image": c["image"],
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": state,
        "lastState": {},
    }


def _unsched_status() -> dict:
    return {
        "phase": "Pending",
        "qosClass": "BestEffort",
        "conditions": [_cond("PodScheduled", "False", "Unschedulable", _UNSCHED_MSG)],
    }


def _revision(rs: dict) -> int:
    return int(rs["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", "1"))


def _bump_generation(o: dict) -> None:
    o["metadata"]["generation"] = o["metadata"].get("generation", 1) + 1


def _port_running(p: dict, port: int) -> bool:
    """Is the container that declares ``port`` (else the first one) running?"""
    containers = p["spec"].get("containers", [])
    owner = next(
        (c for c in containers for cp in c.get("ports", []) if cp.get("containerPort") == port),
        containers[0] if containers else None,
    )
    if owner is None:
        return True
    for cs in p.get("status", {}).get("containerStatuses", []):
        if cs["name"] == owner["name"]:
            return "running" in cs.get("state", {})
    return False


def _pod_ready(p: dict) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in p.get("status", {}).get("conditions", [])
    )


def _owner_ref(o: dict) -> dict:
    return {
        "apiVersion": o.get("apiVersion", "v1"),
        "kind": o["kind"],
        "name": o["metadata"]["name"],
        "uid": o["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _resource_list(group: str, version: str, kinds: List[Kind]) -> dict:
    res = []
    for k in kinds:
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        r = {
            "name": k.plural,
            "singularName": k.kind.lower(),
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": verbs,
        }
        if k.short:
            r["shortNames"] = list(k.short)
        if k.plural in (
            "pods",
            "deployments",
            "replicasets",
            "statefulsets",
            "daemonsets",
            "jobs",
            "services",
        ):
            r["categories"] = ["all"]
        res.append(r)
        res.append(
            {
                "name": k.plural + "/status",
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": ["get", "patch", "update"],
            }
        )
    for sub in ("portforward", "log", "exec", "attach") if not group else ():
        res.append(
            {
                "name": "pods/" + sub,
                "singularName": "",
                "namespaced": True,
                "kind": "PodPortForwardOptions" if sub == "portforward" else "Pod",
                "verbs": ["create", "get"],
            }
        )
    if group == "apps":
        for p in ("deployments", "replicasets", "statefulsets"):
            res.append(
                {
                    "name": p + "/scale",
                    "singularName": "",
                    "namespaced": True,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "%s/%s" % (group, version) if group else version,
        "resources": res,
    }


###############################################################################
# Demo and command line #######################################################
###############################################################################


def demo_scenario(sim: SimCluster) -> None:
    """``web`` (2 replicas; svc web 80/http -> http 8080), ``db`` (Postgres), ``cache`` (Redis)."""
    sim.add_deployment(
        "web",
        replicas=2,
        ports=[ContainerPort("http", 8080)],
        backends={8080: Backend.http()},
        image="ghcr.io/example/web:1.4.2",
        ready_delay=0.3,
    )
    sim.add_service("web", selector={"app": "web"}, ports=[ServicePort(80, "http", name="http")])
    sim.add_deployment(
        "db",
        replicas=1,
        ports=[ContainerPort("postgres", 5432)],
        backends={5432: Backend.postgres()},
        image="postgres:16",
    )
    sim.add_service(
        "db", selector={"app": "db"}, ports=[ServicePort(5432, "postgres", name="postgres")]
    )
    sim.add_deployment(
        "cache",
        replicas=1,
        ports=[ContainerPort("redis", 6379)],
        backends={6379: Backend.redis()},
        image="redis:7.2",
    )
    sim.add_service(
        "cache", selector={"app": "cache"}, ports=[ServicePort(6379, "redis", name="redis")]
    )


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="simcluster", description="Simulated Kubernetes API server for kubectl."
    )
    ap.add_argument("command", choices=["demo", "empty"], help="scenario to start")
    ap.add_argument("--kubeconfig", help="where to write the kubeconfig (default: a temp dir)")
    ap.add_argument(
        "--replace-delay", type=float, default=2.0, help="seconds before a deleted pod is replaced"
    )
    ap.add_argument(
        "--chaos",
        type=float,
        default=0,
        metavar="SECONDS",
        help="every SECONDS delete a web pod (replaced after --replace-delay), for live demos",
    )
    args = ap.parse_args(argv)
    sim = SimCluster(replace_delay=args.replace_delay, start_delay=0.5, ready_delay=1.0)
    sim.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if args.command == "demo":
            demo_scenario(sim)
        path = sim.kubeconfig
        if args.kubeconfig:
            path = sim._write_kubeconfig(os.path.abspath(args.kubeconfig))
        print("simcluster ready: KUBECONFIG=%s admin=%s" % (path, sim.admin_url), flush=True)
        rng = random.Random(7)
        next_chaos = time.monotonic() + args.chaos
        while not stop.wait(0.2):
            if args.chaos and time.monotonic() >= next_chaos:
                next_chaos = time.monotonic() + args.chaos
                victims = sim.pods("web-", ready=True)
                if victims:
                    victim = rng.choice(victims)
                    sim.delete_pod(victim)
                    print("chaos: deleted pod %s" % victim, flush=True)
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
