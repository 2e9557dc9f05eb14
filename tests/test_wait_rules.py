"""kubectl vibe wait rules: kstatus-like readiness, --for on our copy, fail-fast, explanations.

Pure: objects in, reports and lines out; time is an argument.
"""

from __future__ import annotations

import io
import json
from typing import Any, Dict, List

import pytest

import kubectl_vibe_pf as vibe

S = vibe.ResourceStatus
NOW = 1_800_000_000.0


def cond(type_: str, status: str = "True", reason: str = "", message: str = "", **kw: Any):
    return dict(type=type_, status=status, reason=reason, message=message, **kw)


def deployment(replicas=3, ready=3, updated=3, available=3, total=None, conditions=(), **meta):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "prod", "generation": 2, **meta},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas if total is None else total,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": list(conditions),
        },
    }


def pod(name="web-1", phase="Running", ready=True, waiting=None, labels=None, **status: Any):
    container_status: Dict[str, Any] = {
        "name": "app",
        "image": "registry.example/web:1",
        "ready": ready,
        "restartCount": status.pop("restarts", 0),
        "state": {"waiting": waiting} if waiting else {"running": {}},
    }
    if "last" in status:
        container_status["lastState"] = {"terminated": status.pop("last")}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "prod", "labels": labels or {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/web:1"}]},
        "status": {
            "phase": phase,
            "conditions": [cond("Ready", "True" if ready else "False"), *status.pop("conds", [])],
            "containerStatuses": [container_status],
            **status,
        },
    }


def job(conditions=(), succeeded=0, active=1):
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate", "namespace": "prod"},
        "spec": {"completions": 1, "selector": {"matchLabels": {"job-name": "migrate"}}},
        "status": {"conditions": list(conditions), "succeeded": succeeded, "active": active},
    }


def generic(kind="Widget", conditions=None, api="example.com/v1"):
    obj: Dict[str, Any] = {"apiVersion": api, "kind": kind, "metadata": {"name": "w"}}
    if conditions is not None:
        obj["status"] = {"conditions": conditions}
    return obj


PULL = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "registry.invalid/x"'}


@pytest.mark.parametrize(
    "obj, status, message",
    [
        (deployment(), S.CURRENT, "Deployment is ready: 3/3"),
        (
            deployment(ready=1, available=1, conditions=[
                cond("Available", "False", "MinimumReplicasUnavailable")]),
            S.IN_PROGRESS,
            "Ready 1/3, Available 1/3, Available=False MinimumReplicasUnavailable",
        ),
        (deployment(updated=1, total=4), S.IN_PROGRESS, "Updated 1/3, Pending termination 3"),
        (
            deployment(conditions=[cond("Progressing", "False", "ProgressDeadlineExceeded")]),
            S.FAILED,
            "Progress deadline exceeded",
        ),
        (
            deployment(generation=3),
            S.IN_PROGRESS,
            "Deployment generation is 3, but latest observed generation is 2",
        ),
        (deployment(deletionTimestamp="2026-01-01T00:00:00Z"), S.TERMINATING,
         "Resource is being deleted"),
        (pod(), S.CURRENT, "Pod is Ready"),
        (pod(phase="Pending", ready=False, waiting=PULL), S.IN_PROGRESS,
         "Pending: ImagePullBackOff app"),
        (pod(ready=False, waiting={"reason": "CrashLoopBackOff"}), S.FAILED,
         "Running: CrashLoopBackOff app"),
        (pod(phase="Succeeded", ready=False), S.CURRENT, "Pod has completed successfully"),
        (pod(phase="Failed", ready=False, reason="Evicted"), S.FAILED, "Pod has failed: Evicted"),
        (pod(ready=False), S.IN_PROGRESS, "Running, Ready=False"),
        (job(), S.IN_PROGRESS, "Job in progress. active: 1, succeeded: 0/1"),
        (job([cond("Complete")], succeeded=1, active=0), S.CURRENT,
         "Job Completed. succeeded: 1/1"),
        (job([cond("Failed", reason="BackoffLimitExceeded")]), S.FAILED,
         "Job Failed: BackoffLimitExceeded. failed: 0"),
        ({"kind": "PersistentVolumeClaim", "metadata": {}, "status": {"phase": "Pending"}},
         S.IN_PROGRESS, "PVC is not Bound. phase: Pending"),
        ({"kind": "PersistentVolumeClaim", "metadata": {}, "status": {"phase": "Bound"}},
         S.CURRENT, "PVC is Bound"),
        (generic("CustomResourceDefinition", [cond("Established")], "apiextensions.k8s.io/v1"),
         S.CURRENT, "CRD is established"),
        (generic("CustomResourceDefinition", [], "apiextensions.k8s.io/v1"),
         S.IN_PROGRESS, "CRD is not established"),
        (generic(conditions=[cond("Ready", "False", "Waiting", "issuing")]), S.IN_PROGRESS,
         "issuing"),
        (generic(conditions=[cond("Ready")]), S.CURRENT, "Resource is Ready"),
        (generic(), S.CURRENT, "Resource is current"),
        (generic(conditions=[cond("Stalled", message="bad spec")]), S.FAILED, "bad spec"),
        (generic(conditions=[cond("Reconciling")]), S.IN_PROGRESS, "Resource is reconciling"),
        (None, S.NOT_FOUND, "Resource not found"),
    ],
)  # fmt: skip
def test_status_follows_kstatus_rules_per_kind(obj, status, message):
    report = vibe.compute_status(obj, NOW)
    assert (report.status, report.message) == (status, message)


def workload(kind: str, spec: Dict[str, Any], status: Dict[str, Any]) -> Dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "x"}, "spec": spec,
            "status": status}  # fmt: skip


@pytest.mark.parametrize(
    "obj, status",
    [
        (workload("StatefulSet", {"replicas": 2}, {"readyReplicas": 2, "currentReplicas": 2}),
         S.CURRENT),
        (workload("StatefulSet", {"replicas": 2}, {"readyReplicas": 1, "currentReplicas": 2}),
         S.IN_PROGRESS),
        (workload("StatefulSet", {"replicas": 1}, {"readyReplicas": 1, "currentReplicas": 1,
                                                   "currentRevision": "a", "updateRevision": "b"}),
         S.IN_PROGRESS),
        (workload("DaemonSet", {}, {"desiredNumberScheduled": 2, "numberReady": 2,
                                    "updatedNumberScheduled": 2, "numberAvailable": 2}),
         S.CURRENT),
        (workload("DaemonSet", {}, {"desiredNumberScheduled": 2, "numberReady": 1,
                                    "updatedNumberScheduled": 2, "numberAvailable": 1}),
         S.IN_PROGRESS),
        (workload("ReplicaSet", {"replicas": 1}, {"readyReplicas": 1, "availableReplicas": 1}),
         S.CURRENT),
    ],
)  # fmt: skip
def test_workloads_are_current_only_when_rolled_out(obj, status):
    assert vibe.compute_status(obj, NOW).status is status


def service(selector=True, type_="ClusterIP", ingress=False):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {"type": type_, **({"selector": {"app": "web"}} if selector else {})},
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]} if ingress else {}},
    }


def test_service_is_ready_when_a_selected_pod_is_ready():
    assert vibe.compute_status(service(), NOW, [pod()]).status is S.CURRENT
    waiting = vibe.compute_status(service(), NOW, [pod(ready=False)])
    assert waiting.status is S.IN_PROGRESS
    assert waiting.message == "Service has no ready endpoints (1 pods match app=web)"
    assert vibe.compute_status(service(selector=False), NOW).status is S.CURRENT
    assert vibe.compute_status(service(type_="LoadBalancer"), NOW, [pod()]).status is (
        S.IN_PROGRESS
    )
    lb = service(type_="LoadBalancer", ingress=True)
    assert vibe.compute_status(lb, NOW, [pod()]).status is S.CURRENT


@pytest.mark.parametrize(
    "obj, failure",
    [
        (pod(phase="Pending", ready=False, waiting=PULL), "ImagePullBackOff"),
        (pod(ready=False, waiting={"reason": "CrashLoopBackOff"}), "CrashLoopBackOff"),
        (pod(ready=False, waiting={"reason": "ContainerCreating"}), ""),
        (pod(restarts=3, last={"reason": "OOMKilled", "exitCode": 137}), "OOMKilled"),
        (pod(restarts=1, last={"reason": "OOMKilled", "exitCode": 137}), ""),
        (pod(phase="Pending", ready=False, conds=[
            cond("PodScheduled", "False", "Unschedulable", "0/3 nodes are available")]),
         "Unschedulable"),
        (job([cond("Failed", reason="BackoffLimitExceeded")]), "Job Failed (BackoffLimitExceeded)"),
        (deployment(conditions=[cond("Progressing", "False", "ProgressDeadlineExceeded")]),
         "ProgressDeadlineExceeded"),
        (deployment(), ""),
    ],
)  # fmt: skip
def test_failures_that_fail_fast_may_stop_on(obj, failure):
    assert vibe.compute_status(obj, NOW).failure == failure


def test_fail_fast_waits_out_the_grace_of_failures_that_often_heal():
    judge = vibe.FailFastJudge({"ImagePullBackOff": 5.0})
    assert not judge.observe("deploy/web", "ImagePullBackOff", 100.0)
    assert not judge.observe("deploy/web", "ImagePullBackOff", 104.9)
    assert judge.observe("deploy/web", "ImagePullBackOff", 105.0)


def test_fail_fast_grace_restarts_when_the_failure_goes_away():
    judge = vibe.FailFastJudge({"ImagePullBackOff": 5.0})
    judge.observe("deploy/web", "ImagePullBackOff", 100.0)
    judge.observe("deploy/web", "", 103.0)
    assert not judge.observe("deploy/web", "ImagePullBackOff", 106.0)
    assert judge.observe("deploy/web", "ImagePullBackOff", 111.0)


def test_fail_fast_believes_crashloops_and_job_failures_at_once():
    judge = vibe.FailFastJudge()
    assert judge.observe("pod/x", "CrashLoopBackOff", 1.0)
    assert judge.observe("job/j", "Job Failed (BackoffLimitExceeded)", 1.0)
    assert not judge.observe("pod/y", "Unschedulable", 1.0)


W = vibe.parse_for


@pytest.mark.parametrize(
    "obj, text, met",
    [
        (deployment(conditions=[cond("Available")]), "condition=available", True),
        (deployment(conditions=[cond("Available")]), "condition=Available=TRUE", True),
        (deployment(conditions=[cond("Available")]), "condition=Available=false", False),
        (deployment(conditions=[cond("Available", observedGeneration=1)]),
         "condition=Available", False),
        (deployment(conditions=[cond("Available")]), "condition=Ready", False),
        (pod(), "jsonpath={.status.phase}=Running", True),
        (pod(), "jsonpath={.status.phase}=running", False),
        (pod(), "jsonpath={.status.podIP}", False),
        (pod(podIP="10.0.0.1"), "jsonpath={.status.podIP}", True),
        (pod(), '{.status.conditions[?(@.type=="Ready")].status}=True', True),
        (pod(), "jsonpath=.status.containerStatuses[0].ready=true", True),
        (pod(), "jsonpath={.status.containerStatuses}", False),
        (pod(), "delete", False),
        (None, "delete", True),
        (None, "create", False),
        (pod(), "create", True),
    ],
)  # fmt: skip
def test_for_is_judged_on_our_copy_as_kubectl_would(obj, text, met):
    wanted = W(text if "=" in text.split("{")[0] or text in ("delete", "create")
               else "jsonpath=" + text)  # fmt: skip
    report = vibe.compute_status(obj, NOW)
    assert vibe.for_satisfied(obj, wanted, report)[0] is met


def test_missing_condition_says_which_conditions_exist():
    obj = deployment(conditions=[cond("Available"), cond("Progressing")])
    met, why = vibe.for_satisfied(obj, W("condition=Ready"), vibe.compute_status(obj, NOW))
    assert not met
    assert why == "condition Ready is missing (it has: Available, Progressing)"


def test_false_condition_says_its_reason_and_message():
    available = cond(
        "Available", "False", "MinimumReplicasUnavailable",
        "Deployment does not have minimum availability.",
    )  # fmt: skip
    obj = deployment(conditions=[available])
    met, why = vibe.for_satisfied(obj, W("condition=Available"), vibe.compute_status(obj, NOW))
    assert not met
    assert why == (
        "Available=False MinimumReplicasUnavailable: Deployment does not have minimum availability."
    )


@pytest.mark.parametrize(
    "obj, kind, plural, obj_id",
    [
        (deployment(), "Deployment", "deployments", "deployment.apps/web"),
        (pod(), "Pod", "pods", "pod/web-1"),
        (generic("Ingress", api="networking.k8s.io/v1"), "Ingress", "ingresses",
         "ingress.networking.k8s.io/w"),
        (generic("NetworkPolicy", api="networking.k8s.io/v1"), "NetworkPolicy",
         "networkpolicies", "networkpolicy.networking.k8s.io/w"),
        (generic("Endpoints"), "Endpoints", "endpoints", "endpoints.example.com/w"),
    ],
)  # fmt: skip
def test_resources_are_named_as_kubectl_names_them(obj, kind, plural, obj_id):
    assert vibe.resource_plural(kind) == plural
    assert vibe.resource_id(obj) == obj_id


def test_pods_belong_to_a_workload_by_its_selector_and_namespace():
    web = deployment()
    assert vibe.owns_pod(web, pod())
    assert not vibe.owns_pod(web, pod(labels={"app": "api"}))
    other_ns = pod()
    other_ns["metadata"]["namespace"] = "dev"
    assert not vibe.owns_pod(web, other_ns)
    expr = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}]}
    assert vibe.selector_matches(expr, {"tier": "fe"})
    assert not vibe.selector_matches(expr, {"tier": "be"})
    assert not vibe.selector_matches({}, {"app": "web"})


def event(reason: str, message: str, name: str, type_: str = "Warning", count: int = 1):
    return {
        "metadata": {"name": "%s.%s" % (name, reason), "namespace": "prod"},
        "involvedObject": {"kind": "Pod", "name": name, "namespace": "prod"},
        "reason": reason,
        "message": message,
        "type": type_,
        "count": count,
        "lastTimestamp": "2027-01-15T08:00:00Z",
    }


def test_explanation_of_a_stuck_rollout_names_the_image_the_event_and_next_commands():
    web = deployment(ready=2, available=2, conditions=[
        cond("Available", "False", "MinimumReplicasUnavailable")])  # fmt: skip
    stuck = pod("web-2", phase="Pending", ready=False, waiting=PULL)
    stuck["status"]["containerStatuses"][0]["image"] = "registry.invalid/x"
    report = vibe.compute_status(web, NOW)
    when = vibe.parse_kube_time("2027-01-15T08:00:12Z")
    lines = vibe.explain(
        vibe.Explanation("deployment.apps/web", "prod", report,
                         (("condition Available=true", "Available=False"),), 272.0, "Deployment"),
        [pod("web-0"), stuck],
        [event("Pulling", "Pulling image", "web-2", "Normal"),
         event("Failed", 'Failed to pull image "registry.invalid/x": not found', "web-2",
               count=4)],
        when,
    )  # fmt: skip
    assert lines == [
        "deployment.apps/web in namespace prod: InProgress for 4m32s: Ready 2/3, Available 2/3, "
        "Available=False MinimumReplicasUnavailable",
        "  waiting for condition Available=true: Available=False",
        "  pod/web-2: InProgress: Pending: ImagePullBackOff app",
        "    container app (image registry.invalid/x): ImagePullBackOff: Back-off pulling image "
        '"registry.invalid/x"',
        "  pod/web-0: Current: Pod is Ready",
        '  event 12s ago Warning Failed pod/web-2: Failed to pull image "registry.invalid/x": '
        "not found (x4)",
        "  next: kubectl describe deployment/web -n prod",
        "        kubectl describe pod/web-2 -n prod",
        "        kubectl events --for deployment/web -n prod",
    ]


def test_explanation_of_a_crashloop_points_at_the_previous_logs():
    crashing = pod("web-0", ready=False, waiting={"reason": "CrashLoopBackOff"})
    assert vibe.next_commands("deployment.apps/web", "", [crashing]) == [
        "kubectl describe deployment/web",
        "kubectl logs pod/web-0 -c app --previous",
        "kubectl events --for deployment/web",
    ]


def test_explanation_of_a_missing_resource_suggests_wait_for_create():
    lines = vibe.explain(
        vibe.Explanation("pod/late", "prod", vibe.NOT_FOUND_REPORT, (("creation", ""),), 5.0),
        [],
        [],
        NOW,
    )
    assert lines[-2:] == [
        "  next: kubectl get pod -n prod   (is the name or namespace right?)",
        "        add --wait-for-create to wait until it exists",
    ]


def test_explanation_of_a_stuck_deletion_names_the_finalizers():
    report = vibe.StatusReport(S.TERMINATING, "Resource is being deleted")
    lines = vibe.explain(
        vibe.Explanation("pod/x", "", report, (("deletion", "still exists"),), 5.0, "Pod",
                         ("example.com/protect",)),
        [],
        [],
        NOW,
    )  # fmt: skip
    assert "  deletion is held by finalizers: example.com/protect" in lines


# ---- the board and the progress lines (pure: watch documents in, lines out) -------------------


def board_with(target: Dict[str, Any], pods: List[Dict[str, Any]]) -> vibe.WaitBoard:
    board = vibe.WaitBoard([vibe.ALL_OF_WATCH])
    board.apply_target("ADDED", target, vibe.ALL_OF_WATCH, 0.0)
    for p in pods:
        board.apply_pod("ADDED", p, 0.0)
    return board


def test_board_rows_show_the_target_then_its_pods_with_the_latest_warning():
    pods = [
        pod("web-0"),
        pod("web-1", ready=False, phase="Pending", waiting=PULL),
        pod("api-0", labels={"app": "api"}),
    ]
    board = board_with(deployment(ready=2, available=2), pods)
    board.apply_event(event("Failed", "Error: ImagePullBackOff", "web-1"))
    rows = vibe.progress_rows(board, [], vibe.parse_kube_time("2027-01-15T08:00:03Z"))
    assert [(r.obj_id, r.status, r.depth, r.met) for r in rows] == [
        ("deployment.apps/web", "InProgress", 0, False),
        ("pod/web-0", "Current", 1, False),
        ("pod/web-1", "InProgress", 1, False),
    ]
    assert rows[0].warning == "event 3s ago Warning Failed pod/web-1: Error: ImagePullBackOff"


def test_board_follows_a_deletion_and_a_recreation():
    board = board_with(pod("x"), [])
    (target,) = board.ordered_targets()
    board.apply_target("DELETED", pod("x"), vibe.ALL_OF_WATCH, 1.0)
    assert target.obj is None and target.report.status is S.NOT_FOUND
    assert vibe.for_satisfied(target.obj, W("delete"), target.report)[0]
    board.apply_target("ADDED", pod("x"), vibe.ALL_OF_WATCH, 2.0)
    assert target.report.status is S.CURRENT and target.since == 2.0


def test_board_keeps_a_bounded_number_of_events_per_object():
    board = board_with(pod("x"), [])
    for n in range(vibe.WAIT_EVENTS_PER_OBJECT + 5):
        board.apply_event(event("R%d" % n, "m", "x"))
    events = board.events_of(board.ordered_targets()[0])
    assert len(events) == vibe.WAIT_EVENTS_PER_OBJECT
    assert events[-1]["reason"] == "R%d" % (vibe.WAIT_EVENTS_PER_OBJECT + 4)


def test_expected_resources_are_matched_to_objects_of_their_kind():
    board = vibe.WaitBoard([])
    board.expect("deploy", "web", "", 0.0)
    board.apply_target("ADDED", deployment(), vibe.ALL_OF_WATCH, 1.0)
    (target,) = board.ordered_targets()
    assert target.obj_id == "deployment.apps/web" and target.namespace == "prod"
    assert target.plural_name() == "deployments/web"
    missing = vibe.WaitBoard([])
    missing.expect("po", "late", "", 0.0)
    assert missing.ordered_targets()[0].plural_name() == "pods/late"


def test_plain_progress_prints_one_line_per_state_change():
    out = io.StringIO()
    progress = vibe.PlainProgress(out, 0.0)
    board = board_with(pod("x", ready=False), [])
    progress.update(vibe.progress_rows(board, [], 1.0), 1.0, "")
    progress.update(vibe.progress_rows(board, [], 2.0), 2.0, "")
    board.apply_target("MODIFIED", pod("x"), vibe.ALL_OF_WATCH, 3.0)
    progress.update(vibe.progress_rows(board, [], 3.0), 3.0, "")
    assert out.getvalue().splitlines() == [
        "[1s] pod/x: InProgress: Running, Ready=False",
        "[3s] pod/x: Current (met): Pod is Ready",
    ]


def test_json_progress_prints_one_object_per_state_change():
    out = io.StringIO()
    progress = vibe.JsonProgress(out, 0.0)
    board = board_with(deployment(ready=2, available=2), [pod("web-0")])
    wanted = [W("condition=Available")]
    progress.update(vibe.progress_rows(board, wanted, 1.5), 1.5, "")
    progress.update(vibe.progress_rows(board, wanted, 2.5), 2.5, "")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records == [
        {"type": "status", "elapsed": 1.5, "resource": "deployment.apps/web",
         "status": "InProgress", "message": "Ready 2/3, Available 2/3", "met": False},
        {"type": "status", "elapsed": 1.5, "resource": "pod/web-0", "status": "Current",
         "message": "Pod is Ready", "met": False, "parent": "deployment.apps/web"},
    ]  # fmt: skip


def test_unmet_lists_each_for_not_yet_true():
    board = board_with(deployment(conditions=[cond("Available")]), [])
    (target,) = board.ordered_targets()
    fors = [W("condition=Available"), W("jsonpath={.status.readyReplicas}=5"), W("delete")]
    assert vibe.target_unmet(target, fors) == [
        ("{.status.readyReplicas}=5", "{.status.readyReplicas} is '3', not '5'"),
        ("deletion", "still exists"),
    ]


def test_failure_of_a_pod_is_the_failure_of_its_workload():
    pods = [pod("web-0"), pod("web-1", phase="Pending", ready=False, waiting=PULL)]
    board = board_with(deployment(ready=2), pods)
    (target,) = board.ordered_targets()
    assert vibe.target_failure(board, target, NOW) == ("ImagePullBackOff", "pod/web-1")


def owned_by(replicaset: str, p: Dict[str, Any]) -> Dict[str, Any]:
    p["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": replicaset}]
    return p


def test_deployment_pods_are_shown_under_their_replicaset():
    pods = [
        owned_by("web-new", pod("web-new-a", phase="Pending", ready=False, waiting=PULL)),
        owned_by("web-old", pod("web-old-a")),
        owned_by("web-old", pod("web-old-b")),
    ]
    rows = vibe.child_rows(pods, NOW, by_replicaset=True)
    assert [(r.obj_id, r.status, r.message, r.depth) for r in rows] == [
        ("replicaset/web-new", "InProgress", "0/1 pods ready", 1),
        ("pod/web-new-a", "InProgress", "Pending: ImagePullBackOff app", 2),
        ("replicaset/web-old", "Current", "2/2 pods ready", 1),
        ("pod/web-old-a", "Current", "Pod is Ready", 2),
        ("pod/web-old-b", "Current", "Pod is Ready", 2),
    ]
    assert vibe.render_plain_row(rows[1], 75.0) == (
        "[1m15s]     pod/web-new-a: InProgress: Pending: ImagePullBackOff app"
    )


def test_child_rows_are_bounded():
    pods = [pod("p-%02d" % n) for n in range(vibe.LIVE_PODS_SHOWN + 3)]
    rows = vibe.child_rows(pods, NOW, by_replicaset=False)
    assert len(rows) == vibe.LIVE_PODS_SHOWN + 1
    assert rows[-1].message == "... 3 more pods"


def test_explanation_of_a_waited_pod_shows_its_own_containers():
    stuck = pod("web-2", phase="Pending", ready=False, waiting=PULL)
    report = vibe.compute_status(stuck, NOW)
    unmet = (("condition Ready=true", "Ready=False"),)
    item = vibe.Explanation("pod/web-2", "prod", report, unmet, 3.0, "Pod", (), stuck)
    assert vibe.explain(item, [], [], NOW) == [
        "pod/web-2 in namespace prod: InProgress for 3s: Pending: ImagePullBackOff app",
        "  waiting for condition Ready=true: Ready=False",
        "  container app (image registry.example/web:1): ImagePullBackOff: Back-off pulling "
        'image "registry.invalid/x"',
        "  next: kubectl describe pod/web-2 -n prod",
        "        kubectl events --for pod/web-2 -n prod",
    ]


def test_a_failed_pod_does_not_fail_its_job_which_retries_it():
    failed = pod("migrate-1", phase="Failed", ready=False, labels={"job-name": "migrate"})
    board = board_with(job(), [failed])
    (target,) = board.ordered_targets()
    assert vibe.compute_status(failed, NOW).failure == "Pod Failed"
    assert vibe.target_failure(board, target, NOW) == ("", "")


def test_event_ages_use_the_wall_clock_and_timers_the_monotonic_one():
    board = board_with(deployment(ready=2, available=2), [pod("web-1", ready=False)])
    board.apply_event(event("Failed", "Error: ImagePullBackOff", "web-1"))
    wall = vibe.parse_kube_time("2027-01-15T08:00:07Z")
    (row, *_) = vibe.progress_rows(board, [], 42.0, wall_now=wall)
    assert row.since_s == 42.0
    assert row.warning.startswith("event 7s ago Warning Failed pod/web-1")
