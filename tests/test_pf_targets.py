"""§08 targets (pure) and §15 target resolution (a fake cluster access, then the real one).

Expected messages are kubectl's own; the orderings are podutils.ActivePods'.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import textwrap
from typing import Any, Dict, List, Optional

import pytest

from kubectl_vibe_pf import (
    ApiRequestError,
    ClusterAccess,
    KubectlError,
    KubectlRunner,
    PortMapping,
    ResourceKind,
    TargetResolver,
    VibeError,
    api_error,
    choose_pod,
    describe_pod_health,
    event_time,
    go_type_name,
    is_pod_ready,
    is_pod_usable,
    parse_port_spec,
    parse_resource_ref,
    pod_not_running_message,
    pod_phase,
    rank_pods,
    resolve_mappings,
    selector_for,
)

from .conftest import venv_kubectl
from .simcluster import Backend, ContainerPort, ServicePort, SimCluster

# -- builders ----------------------------------------------------------------------------------


def make_pod(
    name: str,
    phase: str = "Running",
    ready: Optional[bool] = True,
    node: str = "node-1",
    created: str = "2026-01-01T00:00:00Z",
    ready_since: str = "2026-01-01T00:01:00Z",
    restarts: int = 0,
    deleting: Optional[str] = None,
    ports: Optional[List[Dict[str, Any]]] = None,
    init_ports: Optional[List[Dict[str, Any]]] = None,
) -> Dict[str, Any]:
    conditions = []
    if ready is not None:
        conditions.append(
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "lastTransitionTime": ready_since,
            }
        )
    metadata: Dict[str, Any] = {"name": name, "creationTimestamp": created}
    if deleting:
        metadata["deletionTimestamp"] = deleting
    spec: Dict[str, Any] = {"containers": [{"name": "app", "ports": ports or []}]}
    if node:
        spec["nodeName"] = node
    if init_ports:
        spec["initContainers"] = [{"name": "init", "ports": init_ports}]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": spec,
        "status": {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": [{"name": "app", "restartCount": restarts}],
        },
    }


def make_service(
    name: str = "s",
    ports: Optional[List[Dict[str, Any]]] = None,
    selector: Optional[Dict[str, str]] = None,
    headless: bool = False,
) -> Dict[str, Any]:
    spec: Dict[str, Any] = {"ports": ports or [], "clusterIP": "None" if headless else "10.96.0.9"}
    if selector is not None:
        spec["selector"] = selector
    return {"kind": "Service", "apiVersion": "v1", "metadata": {"name": name}, "spec": spec}


HTTP_POD = make_pod(
    "p",
    ports=[
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        {"name": "both", "containerPort": 5353, "protocol": "UDP"},
        {"name": "both-tcp", "containerPort": 5353, "protocol": "TCP"},
    ],
    init_ports=[{"name": "setup", "containerPort": 7000, "protocol": "TCP"}],
)
SERVICE = make_service(
    "s",
    ports=[
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
        {"name": "web", "port": 81, "targetPort": "http", "protocol": "TCP"},
        {"name": "plain", "port": 82, "protocol": "TCP"},
        {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
    ],
    selector={"app": "web"},
)

# -- selectors ---------------------------------------------------------------------------------


def workload(kind: str, api_version: str, selector: Any) -> Dict[str, Any]:
    return {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"name": "w"},
        "spec": {"selector": selector},
    }


@pytest.mark.parametrize(
    "obj, expected",
    [
        (make_service(selector={"b": "2", "a": "1"}), "a=1,b=2"),
        (workload("ReplicationController", "v1", {"app": "old"}), "app=old"),
        (
            workload("Deployment", "apps/v1", {"matchLabels": {"app": "web", "tier": "fe"}}),
            "app=web,tier=fe",
        ),
        (workload("ReplicaSet", "apps/v1", {"matchLabels": {"app": "web"}}), "app=web"),
        (workload("StatefulSet", "apps/v1", {"matchLabels": {"app": "db"}}), "app=db"),
        (workload("DaemonSet", "apps/v1", {"matchLabels": {"app": "agent"}}), "app=agent"),
        (
            workload("Job", "batch/v1", {"matchLabels": {"batch.kubernetes.io/job-name": "m"}}),
            "batch.kubernetes.io/job-name=m",
        ),
        (
            workload(
                "Deployment",
                "apps/v1",
                {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [
                        {"key": "env", "operator": "In", "values": ["prod", "canary"]},
                        {"key": "zone", "operator": "NotIn", "values": ["b", "a"]},
                        {"key": "debug", "operator": "DoesNotExist"},
                        {"key": "tier", "operator": "Exists"},
                    ],
                },
            ),
            "app=web,!debug,env in (canary,prod),tier,zone notin (a,b)",
        ),
    ],
)
def test_selector_is_the_one_kubectl_lists_pods_with(obj, expected):
    assert selector_for(obj) == expected


def test_service_without_selector_cannot_be_attached_to():
    with pytest.raises(VibeError) as caught:
        selector_for(make_service("ext", selector=None))
    assert caught.value.render() == (
        "error: cannot attach to *v1.Service: invalid service 'ext': Service is defined without a "
        "selector"
    )


@pytest.mark.parametrize(
    "obj, type_name",
    [
        ({"kind": "ConfigMap", "apiVersion": "v1"}, "*v1.ConfigMap"),
        ({"kind": "CronJob", "apiVersion": "batch/v1"}, "*v1.CronJob"),
        ({"kind": "Ingress", "apiVersion": "networking.k8s.io/v1"}, "*v1.Ingress"),
        ({"kind": "Widget", "apiVersion": "example.com/v1alpha1"}, "*unstructured.Unstructured"),
    ],
)
def test_unsupported_kinds_get_kubectls_not_implemented_message(obj, type_name):
    assert go_type_name(obj) == type_name
    with pytest.raises(VibeError) as caught:
        selector_for(obj)
    assert caught.value.message == "cannot attach to %s: selector for %s not implemented" % (
        type_name,
        type_name,
    )


def test_invalid_selector_operator_is_reported_as_kubectl_does():
    obj = workload(
        "Deployment", "apps/v1", {"matchExpressions": [{"key": "a", "operator": "Near"}]}
    )
    with pytest.raises(VibeError) as caught:
        selector_for(obj)
    assert caught.value.message == (
        'cannot attach to *v1.Deployment: invalid label selector: "Near" is not a valid label '
        "selector operator"
    )


# -- pod choice --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "better, worse, rule",
    [
        (make_pod("a"), make_pod("b", node=""), "scheduled beats unscheduled"),
        (make_pod("a", phase="Running"), make_pod("b", phase="Unknown"), "Running beats Unknown"),
        (make_pod("a", phase="Unknown"), make_pod("b", phase="Pending"), "Unknown beats Pending"),
        (make_pod("a"), make_pod("b", ready=False), "Ready beats not Ready"),
        (
            make_pod("a"),
            make_pod("b", deleting="2026-01-01T00:05:00Z"),
            "not deleting beats deleting",
        ),
        (
            make_pod("a", deleting="2026-01-01T00:06:00Z"),
            make_pod("b", deleting="2026-01-01T00:05:00Z"),
            "deleted later beats deleted sooner",
        ),
        (
            make_pod("a", ready_since="2026-01-01T00:01:00Z"),
            make_pod("b", ready_since="2026-01-01T00:09:00Z"),
            "ready longer beats ready recently",
        ),
        (make_pod("a", restarts=0), make_pod("b", restarts=3), "fewer restarts beats more"),
        (
            make_pod("a", created="2026-01-01T00:00:00Z", ready=False),
            make_pod("b", created="2026-01-02T00:00:00Z", ready=False),
            "older beats newer",
        ),
        (
            make_pod("a", ready=False),
            make_pod("b", created="", ready=False),
            "a creation time beats none",
        ),
    ],
)
def test_choose_pod_follows_reverse_active_pods(better, worse, rule):
    assert choose_pod([worse, better])["metadata"]["name"] == "a", rule
    assert choose_pod([better, worse])["metadata"]["name"] == "a", rule


def test_rules_apply_in_kubectls_priority_order():
    # Ready but restarted beats not Ready and fresh: readiness is rule 3, restarts rule 7.
    pods = [make_pod("fresh", ready=False), make_pod("restarted", restarts=9)]
    assert [p["metadata"]["name"] for p in rank_pods(pods)] == ["restarted", "fresh"]


def test_choose_pod_skips_excluded_pods_and_returns_none_when_nothing_is_left():
    pods = [make_pod("a"), make_pod("b", restarts=1)]
    assert choose_pod(pods, exclude={"a"})["metadata"]["name"] == "b"
    assert choose_pod(pods, exclude={"a", "b"}) is None
    assert choose_pod([]) is None


def test_readiness_and_phase_helpers():
    assert is_pod_ready(make_pod("a"))
    assert not is_pod_ready(make_pod("a", ready=False))
    assert not is_pod_ready(make_pod("a", ready=None))
    assert pod_phase(make_pod("a", phase="Pending")) == "Pending"
    assert pod_not_running_message(make_pod("a", phase="Pending")) == (
        "unable to forward port because pod is not running. Current status=Pending"
    )


# -- ports: pods and workloads -----------------------------------------------------------------

POD_REF = parse_resource_ref("pod/p")


def pod_forwards(*texts: str, pod: Dict[str, Any] = HTTP_POD) -> List[tuple]:
    specs = [parse_port_spec(text) for text in texts]
    return [(f.local_port, f.remote_port) for f in resolve_mappings(POD_REF, pod, pod, specs)]


@pytest.mark.parametrize(
    "text, local, remote",
    [
        ("5000", 5000, 5000),
        ("8888:5000", 8888, 5000),
        (":5000", 0, 5000),
        ("http", 8080, 8080),
        ("9000:http", 9000, 8080),
        (":http", 0, 8080),
        ("http:http", 8080, 8080),
        ("setup", 7000, 7000),  # initContainers are searched too
        ("both", 5353, 5353),  # declared TCP and UDP: allowed
        ("12345", 12345, 12345),  # undeclared numeric ports are allowed
    ],
)
def test_pod_port_mapping(text, local, remote):
    assert pod_forwards(text) == [(local, remote)]


def test_forward_keeps_its_spec_and_has_no_service_port_on_a_pod():
    spec = parse_port_spec("9000:http")
    assert resolve_mappings(POD_REF, HTTP_POD, HTTP_POD, [spec]) == [
        PortMapping(9000, 8080, spec, None)
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("nope", "Pod 'p' does not have a named port 'nope'"),
        ("9000:nope", "Pod 'p' does not have a named port 'nope'"),
        ("53", "UDP protocol is not supported for 53"),
        ("dns", "UDP protocol is not supported for dns"),
        ("8080:", "remote port cannot be empty"),  # the pod has no unnamed port: see below
    ],
)
def test_pod_port_errors(text, message):
    pod = HTTP_POD
    if text == "8080:":
        pod = make_pod("p", ports=[{"containerPort": 9999, "protocol": "TCP"}])
    with pytest.raises(VibeError) as caught:
        pod_forwards(text, pod=pod)
    assert caught.value.message == message


def test_empty_remote_on_a_pod_with_only_named_ports_is_a_missing_named_port():
    # kubectl looks "" up as a port name first (checkUDPPortInPod): verified with kubectl 1.37.
    with pytest.raises(VibeError) as caught:
        pod_forwards("8080:")
    assert caught.value.message == "Pod 'p' does not have a named port ''"


def test_workload_ports_resolve_on_the_chosen_pod():
    ref = parse_resource_ref("deploy/web")
    deployment = workload("Deployment", "apps/v1", {"matchLabels": {"app": "web"}})
    forwards = resolve_mappings(ref, deployment, HTTP_POD, [parse_port_spec("http")])
    assert [(f.local_port, f.remote_port) for f in forwards] == [(8080, 8080)]


# -- ports: services ---------------------------------------------------------------------------

SVC_REF = parse_resource_ref("svc/s")


def svc_forwards(*texts: str, svc: Dict[str, Any] = SERVICE, pod=HTTP_POD) -> List[tuple]:
    specs = [parse_port_spec(text, ResourceKind.SERVICE) for text in texts]
    return [
        (f.local_port, f.remote_port, f.service_port)
        for f in resolve_mappings(SVC_REF, svc, pod, specs)
    ]


@pytest.mark.parametrize(
    "text, local, remote, service_port",
    [
        ("8000:80", 8000, 8080, 80),
        ("80", 80, 8080, 80),  # the local port is the Service port
        ("http", 80, 8080, 80),  # a name: the local port is the Service port *number*
        ("http:http", 80, 8080, 80),
        (":80", 0, 8080, 80),
        ("9000:http", 9000, 8080, 80),
        ("81", 81, 8080, 81),  # named targetPort, looked up on the pod
        ("web", 81, 8080, 81),
        ("82", 82, 82, 82),  # targetPort omitted: the Service port itself
    ],
)
def test_service_port_mapping(text, local, remote, service_port):
    assert svc_forwards(text) == [(local, remote, service_port)]


def test_headless_service_ignores_target_port():
    svc = make_service(
        "h",
        ports=[{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
        selector={"a": "b"},
        headless=True,
    )
    assert svc_forwards("80", svc=svc) == [(80, 80, 80)]


def test_named_target_port_is_looked_up_again_on_each_new_pod():
    other = make_pod("q", ports=[{"name": "http", "containerPort": 3000, "protocol": "TCP"}])
    assert svc_forwards("web") == [(81, 8080, 81)]
    assert svc_forwards("web", pod=other) == [(81, 3000, 81)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("8000:9999", "Service s does not have a service port 9999"),
        ("8000:nope", "Service 's' does not have a named port 'nope'"),
        ("0", "Service s does not have a service port 0"),
        ("70000", "Service s does not have a service port 70000"),
        ("8080:", "Service 's' does not have a named port ''"),
        ("53", "UDP protocol is not supported for 53"),
        ("dns", "UDP protocol is not supported for dns"),
    ],
)
def test_service_port_errors(text, message):
    with pytest.raises(VibeError) as caught:
        svc_forwards(text)
    assert caught.value.message == message


def test_named_target_port_missing_on_the_pod():
    pod = make_pod("p2", ports=[{"name": "grpc", "containerPort": 9000, "protocol": "TCP"}])
    with pytest.raises(VibeError) as caught:
        svc_forwards("web", pod=pod)
    assert caught.value.message == "Pod 'p2' does not have a named port 'http'"


def test_udp_check_covers_every_spec_before_any_mapping():
    # kubectl checks all specs for UDP first: a later UDP spec wins over an earlier bad port.
    with pytest.raises(VibeError, match="UDP protocol is not supported for dns"):
        svc_forwards("8000:9999", "dns")


# -- health lines ------------------------------------------------------------------------------


def test_describe_pod_health_explains_restarts_waits_and_readiness():
    pod = make_pod("p", ready=False, deleting="2026-01-01T00:05:00Z")
    pod["status"]["containerStatuses"] = [
        {
            "name": "app",
            "restartCount": 2,
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
        }
    ]
    pod["status"]["conditions"][0]["reason"] = "ContainersNotReady"
    assert describe_pod_health(pod) == [
        "pod p is being deleted (since 2026-01-01T00:05:00Z)",
        "container app restarted 2 times (last: OOMKilled, exit code 137)",
        "container app is waiting: CrashLoopBackOff: back-off 10s",
        "pod p is not Ready: ContainersNotReady",
    ]


def test_describe_pod_health_is_silent_for_a_healthy_pod():
    assert describe_pod_health(make_pod("p")) == []


def test_describe_pod_health_names_image_pull_problems_and_phase():
    pod = make_pod("p", phase="Pending", ready=None)
    pod["status"]["containerStatuses"] = [
        {"name": "app", "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}
    ]
    assert describe_pod_health(pod) == [
        "pod p is Pending",
        "container app is waiting: ImagePullBackOff",
    ]


def test_describe_pod_health_explains_eviction_and_scheduling():
    evicted = make_pod("p", phase="Failed", ready=None)
    evicted["status"].update(reason="Evicted", message="The node was low on resource: memory.")
    unschedulable = make_pod("q", phase="Pending", ready=None, node="")
    unschedulable["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available",
        }
    ]
    assert describe_pod_health(evicted) == [
        "pod p is Failed (Evicted: The node was low on resource: memory.)"
    ]
    assert describe_pod_health(unschedulable) == [
        "pod q is Pending",
        "pod q cannot be scheduled: 0/3 nodes are available",
    ]


def test_event_time_prefers_last_timestamp_then_event_time():
    assert event_time(
        {"lastTimestamp": "2026-01-01T00:00:10Z", "eventTime": "2026-01-01T00:00:20Z"}
    ) == (event_time({"eventTime": "2026-01-01T00:00:10.000000Z"}))
    assert event_time({}) == 0.0


# -- §15 with a fake cluster access (fast, unit level) ------------------------------------------

FAKE_KUBECTL = textwrap.dedent(
    '''\
    #!{python}
    """Serves canned answers by argv; each key's answers are used in turn, the last repeats."""
    import hashlib, json, os, sys
    data = json.load(open(os.environ["FAKE_KUBECTL_DATA"]))
    key = " ".join(sys.argv[1:])
    with open(os.environ["FAKE_KUBECTL_DATA"] + ".log", "a") as log:
        log.write(key + "\\n")
    answers = data.get(key)
    if answers is None:
        sys.stderr.write("error: fake kubectl has no answer for: %s\\n" % key)
        sys.exit(1)
    counter = os.environ["FAKE_KUBECTL_DATA"] + "." + hashlib.sha1(key.encode()).hexdigest()
    seen = int(open(counter).read()) if os.path.exists(counter) else 0
    open(counter, "w").write(str(seen + 1))
    answer = answers[min(seen, len(answers) - 1)]
    sys.stdout.write(answer.get("stdout", ""))
    sys.stderr.write(answer.get("stderr", ""))
    sys.exit(answer.get("rc", 0))
    '''
).replace("{python}", sys.executable)


class FakeKubectl:
    """A kubectl of canned answers: the resolver still runs kubectl for `config view` and for
    kinds only kubectl's RESTMapper knows."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "kubectl")
        self.data_path = os.path.join(directory, "answers.json")
        self.answers: Dict[str, List[Dict[str, Any]]] = {}
        with open(self.path, "w") as handle:
            handle.write(FAKE_KUBECTL)
        os.chmod(self.path, os.stat(self.path).st_mode | stat.S_IEXEC)

    def on(self, args: str, *answers: Any) -> None:
        """Answers for `kubectl <args>`: dicts are printed as JSON, strings are stderr + rc 1."""
        self.answers[args] = [
            {"stderr": a + "\n", "rc": 1} if isinstance(a, str) else {"stdout": json.dumps(a)}
            for a in answers
        ]
        with open(self.data_path, "w") as handle:
            json.dump(self.answers, handle)

    def on_text(self, args: str, stdout: str) -> None:
        self.answers[args] = [{"stdout": stdout}]
        with open(self.data_path, "w") as handle:
            json.dump(self.answers, handle)

    def calls(self) -> List[str]:
        if not os.path.exists(self.data_path + ".log"):
            return []
        with open(self.data_path + ".log") as handle:
            return handle.read().splitlines()

    def runner(self) -> KubectlRunner:
        return KubectlRunner(self.path, env=dict(os.environ, FAKE_KUBECTL_DATA=self.data_path))


class FakeWatch:
    """A pod watch whose states are scripted: each wait_change() moves to the next one."""

    def __init__(self, states: List[List[Dict[str, Any]]]) -> None:
        self.states = list(states)
        self.objects: Dict[str, Dict[str, Any]] = {}
        self.changes = 0
        self._advance()

    def _advance(self) -> None:
        if self.states:
            self.objects = {pod_phase_key(pod): pod for pod in self.states.pop(0)}
            self.changes += 1

    async def wait_synced(self, timeout: float) -> None:
        pass

    async def wait_change(self, timeout: float) -> None:
        if self.states:
            self._advance()
        else:
            await asyncio.sleep(min(timeout, 0.02))


def pod_phase_key(pod: Dict[str, Any]) -> str:
    return pod["metadata"]["name"]


class FakeAccess:
    """The ClusterAccess seam: canned GET answers (dicts, or ApiErrors) and scripted watches."""

    def __init__(self) -> None:
        self.answers: Dict[str, Any] = {}
        self.watches: Dict[str, FakeWatch] = {}
        self.calls: List[str] = []
        self.held = 0

    def on_get(self, path: str, answer: Any) -> None:
        self.answers[path] = answer

    def on_pods(self, selector: str, *states: List[Dict[str, Any]]) -> None:
        self.watches[selector] = FakeWatch(list(states))

    async def get_json(self, target: str, timeout: float = 30) -> Any:
        self.calls.append("GET " + target)
        answer = self.answers[target]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def acquire_watch(self, resource: str, namespace: str, labels: str = "", fields: str = ""):
        self.calls.append("WATCH %s %s" % (resource, labels or fields))
        self.held += 1
        return self.watches[labels or fields]

    def release_watch(self, watch: Any) -> None:
        self.held -= 1


@pytest.fixture
def fake(tmp_path):
    return FakeKubectl(str(tmp_path))


@pytest.fixture
def access() -> FakeAccess:
    return FakeAccess()


def not_found(kind: str, name: str) -> ApiRequestError:
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
              "message": '%s "%s" not found' % (kind, name), "code": 404}  # fmt: skip
    return ApiRequestError(api_error(404, "application/json", json.dumps(status).encode()))


WEB_POD = make_pod("web-1", ports=[{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
SVC_PATH = "/api/v1/namespaces/ns/services/s"


async def resolve(
    access: FakeAccess,
    text: str,
    *ports: str,
    timeout: float = 5,
    exclude=frozenset(),
    require_ready: bool = False,
    runner: Optional[KubectlRunner] = None,
):
    ref = parse_resource_ref(text)
    specs = [parse_port_spec(p, ref.kind) for p in ports]
    resolver = TargetResolver(access, runner, "ns")  # type: ignore[arg-type]
    return await resolver.resolve(ref, specs, timeout, exclude, require_ready)


async def test_service_resolves_to_the_best_pod_and_maps_ports(access):
    access.on_get(SVC_PATH, SERVICE)
    access.on_pods("app=web", [make_pod("old", ready=False), WEB_POD])
    resolution = await resolve(access, "svc/s", "http", "9000:web")
    assert resolution.pod_name == "web-1"
    assert [(f.local_port, f.remote_port) for f in resolution.mappings] == [
        (80, 8080),
        (9000, 8080),
    ]
    assert resolution.obj["kind"] == "Service"
    assert access.calls == ["GET " + SVC_PATH, "WATCH pods app=web"]
    assert access.held == 0  # the resolver lets go of the watch it took


async def test_pod_target_is_read_once_and_used_directly(access):
    access.on_get("/api/v1/namespaces/ns/pods/web-1", WEB_POD)
    access.on_pods("metadata.name=web-1", [WEB_POD])
    resolution = await resolve(access, "web-1", "http")
    assert (resolution.pod_name, resolution.mappings[0].remote_port) == ("web-1", 8080)
    assert access.calls == [
        "GET /api/v1/namespaces/ns/pods/web-1",
        "WATCH pods metadata.name=web-1",
    ]
    assert access.watches["metadata.name=web-1"].changes == 1  # never waited on


async def test_the_api_servers_error_is_kubectls_own_line(access):
    access.on_get("/api/v1/namespaces/ns/services/x", not_found("services", "x"))
    with pytest.raises(KubectlError) as caught:
        await resolve(access, "svc/x", "80")
    assert caught.value.render() == 'Error from server (NotFound): services "x" not found'
    assert caught.value.exit_code == 1


async def test_a_kind_only_the_server_knows_is_read_through_kubectl_and_refused(access, fake):
    fake.on(
        "get configmap/c -n ns -o json",
        {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"}},
    )
    runner = fake.runner()
    try:
        with pytest.raises(VibeError) as caught:
            await resolve(access, "configmap/c", "80", runner=runner)
    finally:
        await runner.close()
    assert (
        caught.value.message
        == "cannot attach to *v1.ConfigMap: selector for *v1.ConfigMap not implemented"
    )
    assert fake.calls() == ["get configmap/c -n ns -o json"]


async def test_waits_for_a_pod_to_appear(access):
    access.on_get(SVC_PATH, SERVICE)
    access.on_pods("app=web", [], [WEB_POD])
    resolution = await resolve(access, "svc/s", "80")
    assert resolution.pod_name == "web-1"
    assert access.watches["app=web"].changes == 2


async def test_no_pod_within_the_timeout_is_kubectls_timeout_message(access):
    access.on_get(SVC_PATH, SERVICE)
    access.on_pods("app=web", [])
    with pytest.raises(VibeError) as caught:
        await resolve(access, "svc/s", "80", timeout=0.3)
    assert caught.value.render() == "error: timed out waiting for the condition"


async def test_a_pod_still_pending_at_the_deadline_gets_the_phase_message(access):
    access.on_get(SVC_PATH, SERVICE)
    access.on_pods("app=web", [make_pod("web-2", phase="Pending", ready=False)])
    with pytest.raises(VibeError) as caught:
        await resolve(access, "svc/s", "80", timeout=0.3)
    assert (
        caught.value.message
        == "unable to forward port because pod is not running. Current status=Pending"
    )


async def test_a_failed_pod_is_refused_at_once(access):
    done = make_pod("done", phase="Succeeded", ready=False)
    access.on_get("/api/v1/namespaces/ns/pods/done", done)
    access.on_pods("metadata.name=done", [done])
    with pytest.raises(VibeError, match="Current status=Succeeded"):
        await resolve(access, "pod/done", "80", timeout=30)
    assert access.watches["metadata.name=done"].changes == 1


async def test_an_evicted_pod_is_passed_over_for_a_starting_one(access):
    # ActivePods ranks Failed like Pending, so kubectl may pick the evicted pod and fail.
    evicted = make_pod("web-old", phase="Failed", ready=None, created="2025-01-01T00:00:00Z")
    starting = make_pod(
        "web-new", phase="Pending", ready=None, ports=WEB_POD["spec"]["containers"][0]["ports"]
    )
    running = make_pod("web-new", ports=WEB_POD["spec"]["containers"][0]["ports"])
    access.on_get(SVC_PATH, SERVICE)
    access.on_pods("app=web", [evicted, starting], [evicted, running])
    resolution = await resolve(access, "svc/s", "80")
    assert resolution.pod_name == "web-new"


async def test_exclude_skips_the_pod_that_just_died(access):
    access.on_get(
        "/apis/apps/v1/namespaces/ns/deployments/web",
        workload("Deployment", "apps/v1", {"matchLabels": {"app": "web"}}),
    )
    second = make_pod("web-2", restarts=1, ports=WEB_POD["spec"]["containers"][0]["ports"])
    access.on_pods("app=web", [WEB_POD, second])
    resolution = await resolve(access, "deploy/web", "http", exclude=frozenset({"web-1"}))
    assert resolution.pod_name == "web-2"


async def test_require_ready_waits_for_the_pick_to_become_ready(access):
    access.on_get(SVC_PATH, SERVICE)
    starting = make_pod("web-2", ready=False, ports=WEB_POD["spec"]["containers"][0]["ports"])
    ready = make_pod("web-2", ports=WEB_POD["spec"]["containers"][0]["ports"])
    access.on_pods("app=web", [starting], [ready])
    resolution = await resolve(access, "svc/s", "80", require_ready=True)
    assert is_pod_ready(resolution.pod)
    assert access.watches["app=web"].changes == 2


@pytest.mark.parametrize(
    "pod, message",
    [
        (
            make_pod("web-2", ready=False),
            "timed out waiting for the condition: pod web-2 is Running but not Ready",
        ),
        (
            make_pod("web-2", deleting="2026-01-01T00:05:00Z"),
            "timed out waiting for the condition: pod web-2 is Running but not Ready",
        ),
    ],
)
async def test_require_ready_gives_up_at_the_deadline_naming_the_pod(access, pod, message):
    access.on_get(SVC_PATH, SERVICE)
    access.on_pods("app=web", [pod])
    with pytest.raises(VibeError) as caught:
        await resolve(access, "svc/s", "80", timeout=0.2, require_ready=True)
    assert caught.value.message == message


def test_a_running_pod_is_usable_for_kubectl_even_when_not_ready():
    assert is_pod_usable(make_pod("p", ready=False), require_ready=False)
    assert not is_pod_usable(make_pod("p", ready=False), require_ready=True)
    assert not is_pod_usable(make_pod("p", phase="Pending"), require_ready=False)


@pytest.mark.parametrize("printed, expected", [("team-a", "team-a"), ("", "default")])
async def test_namespace_default_reads_the_kubeconfig_or_falls_back_to_default(
    fake, printed, expected
):
    fake.on_text("config view --minify -o jsonpath={..namespace}", printed)
    runner = fake.runner()
    try:
        assert await TargetResolver(FakeAccess(), runner, "").namespace_default() == expected
    finally:
        await runner.close()


async def test_namespace_default_is_default_when_kubectl_config_fails(fake):
    fake.on("config view --minify -o jsonpath={..namespace}", "error: current-context is not set")
    runner = fake.runner()
    try:
        assert await TargetResolver(FakeAccess(), runner, "").namespace_default() == "default"
    finally:
        await runner.close()


async def test_pod_events_are_listed_oldest_first(access):
    events = {
        "items": [
            {"reason": "BackOff", "lastTimestamp": "2026-01-01T00:00:09Z"},
            {"reason": "Killing", "lastTimestamp": "2026-01-01T00:00:01Z"},
        ]
    }
    access.on_get(
        "/api/v1/namespaces/ns/events?fieldSelector=involvedObject.name%3Dp%2C"
        "involvedObject.kind%3DPod",
        events,
    )
    listed = await TargetResolver(access, None, "ns").pod_events("p")  # type: ignore[arg-type]
    assert [e["reason"] for e in listed] == ["Killing", "BackOff"]


# -- §15 with the real kubectl (one kubectl proxy) against the simulated cluster ------------

REAL_KUBECTL = venv_kubectl()


@pytest.fixture
async def sim_resolver(sim_cluster):
    if not REAL_KUBECTL:
        pytest.skip("no kubectl")
    runner = KubectlRunner(REAL_KUBECTL, env=sim_cluster.env())
    access = ClusterAccess(runner, lambda message: None)
    access.start()
    try:
        yield TargetResolver(access, runner, "default")
    finally:
        await access.close()
        await runner.close()


def add_web(sim) -> None:
    sim.add_deployment(
        "web", replicas=2, ports=[ContainerPort("http", 8080)], backends={8080: Backend.http()}
    )
    sim.add_service("web", selector={"app": "web"}, ports=[ServicePort(80, "http", name="http")])


async def resolve_real(resolver: TargetResolver, text: str, *ports: str, timeout: float = 10):
    ref = parse_resource_ref(text)
    return await resolver.resolve(ref, [parse_port_spec(p, ref.kind) for p in ports], timeout)


@pytest.mark.e2e
async def test_real_service_resolves_through_its_named_target_port(sim_cluster, sim_resolver):
    add_web(sim_cluster)
    sim_cluster.wait_for(lambda: len(sim_cluster.pods("web", ready=True)) == 2)
    resolution = await resolve_real(sim_resolver, "svc/web", "http", "9000:80")
    assert resolution.pod_name in sim_cluster.pods("web")
    assert [(f.local_port, f.remote_port, f.service_port) for f in resolution.mappings] == [
        (80, 8080, 80),
        (9000, 8080, 80),
    ]


@pytest.mark.e2e
async def test_real_deployment_and_pod_targets(sim_cluster, sim_resolver):
    add_web(sim_cluster)
    sim_cluster.wait_for(lambda: len(sim_cluster.pods("web", ready=True)) == 2)
    by_deploy = await resolve_real(sim_resolver, "deploy/web", ":http")
    assert by_deploy.mappings[0].local_port == 0 and by_deploy.mappings[0].remote_port == 8080
    by_pod = await resolve_real(sim_resolver, by_deploy.pod_name, "8080")
    assert by_pod.pod_name == by_deploy.pod_name
    others = set(sim_cluster.pods("web")) - {by_deploy.pod_name}
    ref = parse_resource_ref("deploy/web")
    failover = await sim_resolver.resolve(
        ref, [parse_port_spec("http")], 10, exclude={by_deploy.pod_name}
    )
    assert failover.pod_name in others


@pytest.mark.e2e
@pytest.mark.parametrize(
    "target, message",
    [
        ("svc/nope", 'Error from server (NotFound): services "nope" not found'),
        ("nope", 'Error from server (NotFound): pods "nope" not found'),
        ("foo/x", 'error: the server doesn\'t have a resource type "foo"'),
    ],
)
async def test_real_lookup_errors_are_kubectls_own(sim_cluster, sim_resolver, target, message):
    with pytest.raises(KubectlError) as caught:
        await resolve_real(sim_resolver, target, "80")
    assert caught.value.render() == message


@pytest.mark.e2e
async def test_real_named_port_errors(sim_cluster, sim_resolver):
    add_web(sim_cluster)
    sim_cluster.wait_for(lambda: len(sim_cluster.pods("web", ready=True)) == 2)
    with pytest.raises(VibeError) as caught:
        await resolve_real(sim_resolver, "svc/web", "8000:nope")
    assert caught.value.message == "Service 'web' does not have a named port 'nope'"
    with pytest.raises(VibeError) as caught:
        await resolve_real(sim_resolver, "deploy/web", "grpc")
    assert (
        caught.value.message.startswith("Pod 'web-") and "named port 'grpc'" in caught.value.message
    )


@pytest.mark.e2e
async def test_real_pod_that_starts_late_is_waited_for(sim_cluster, sim_resolver):
    sim_cluster.add_pod(
        "slow",
        ports=[ContainerPort("http", 8080)],
        backends={8080: Backend.http()},
        start_delay=1.0,
    )
    resolution = await resolve_real(sim_resolver, "pod/slow", "http")
    assert (resolution.pod_name, pod_phase(resolution.pod)) == ("slow", "Running")


@pytest.mark.e2e
async def test_real_pod_events(sim_cluster, sim_resolver):
    sim_cluster.add_pod("ev", ports=[ContainerPort("http", 8080)], backends={8080: Backend.http()})
    sim_cluster.emit_event(
        "pod", "ev", "BackOff", "Back-off restarting failed container", type="Warning"
    )
    events = await sim_resolver.pod_events("ev")
    assert "BackOff" in [e.get("reason") for e in events]


@pytest.mark.e2e
async def test_real_failover_picks_the_ready_replacement_of_a_deleted_pod(
    sim_cluster, sim_resolver
):
    sim_cluster.add_deployment(
        "api", ports=[ContainerPort("http", 8080)], backends={8080: Backend.http()}
    )
    sim_cluster.wait_for(lambda: sim_cluster.pods("api", ready=True))
    ref = parse_resource_ref("deploy/api")
    first = await sim_resolver.resolve(ref, [parse_port_spec("http")], 10)
    sim_cluster.delete_pod(first.pod_name, replace_delay=0.3)
    second = await sim_resolver.resolve(
        ref, [parse_port_spec("http")], 10, exclude={first.pod_name}, require_ready=True
    )
    assert second.pod_name != first.pod_name
    assert is_pod_ready(second.pod)
    assert second.mappings[0].remote_port == 8080


@pytest.mark.e2e
async def test_real_unsupported_kind_is_refused_with_kubectls_message(sim_cluster, sim_resolver):
    configmap = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "c", "namespace": "default"},
    }
    sim_cluster.create_later(0, configmap)
    sim_cluster.wait_for(lambda: sim_cluster.get("configmap", "c"))
    for target in ("configmap/c", "cm/c"):  # a short name only the server knows
        with pytest.raises(VibeError) as caught:
            await resolve_real(sim_resolver, target, "80")
        assert caught.value.render() == (
            "error: cannot attach to *v1.ConfigMap: selector for *v1.ConfigMap not implemented"
        )


@pytest.mark.e2e
async def test_real_statefulset_daemonset_and_job_targets(sim_cluster, sim_resolver):
    port = [ContainerPort("http", 8080)]
    backends = {8080: Backend.http()}
    sim_cluster.add_statefulset("db", ports=port, backends=backends)
    sim_cluster.add_daemonset("agent", ports=port, backends=backends)
    sim_cluster.add_job("batch", duration=60, ports=port, backends=backends)
    for target, prefix in (("sts/db", "db-"), ("ds/agent", "agent-"), ("job/batch", "batch-")):
        resolution = await resolve_real(sim_resolver, target, "9000:http")
        assert resolution.pod_name.startswith(prefix), target
        assert (resolution.mappings[0].local_port, resolution.mappings[0].remote_port) == (
            9000,
            8080,
        )


@pytest.mark.e2e
async def test_the_namespace_comes_from_the_kubeconfig_and_resolution_happens_there():
    if not REAL_KUBECTL:
        pytest.skip("no kubectl")
    with SimCluster(namespace="team") as sim:  # its kubeconfig context names namespace "team"
        add_web(sim)
        runner = KubectlRunner(REAL_KUBECTL, env=sim.env())
        access = ClusterAccess(runner, lambda message: None)
        access.start()
        try:
            namespace = await TargetResolver(access, runner, "").namespace_default()
            resolution = await resolve_real(
                TargetResolver(access, runner, namespace), "svc/web", "8000:http"
            )
        finally:
            await access.close()
            await runner.close()
    assert namespace == "team"
    assert resolution.obj["metadata"]["namespace"] == "team"
    assert [(f.local_port, f.remote_port) for f in resolution.mappings] == [(8000, 8080)]
