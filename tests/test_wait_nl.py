"""Plain-English wait requests → exact kubectl wait arguments: the corpus (table-driven).

Each accepted phrasing maps to one exact argument list; each refused one names what was
understood and what is missing. Nothing here runs kubectl.
"""

from __future__ import annotations

import pytest

import kubectl_vibe_pf as vibe

#: (request, the exact kubectl wait arguments it must become)
ACCEPTED = [
    (
        "for the web deployment in prod to be available, up to 5 minutes",
        "deployment/web -n prod --for=condition=Available --timeout=5m",
    ),
    ("for the web deployment to be available", "deployment/web --for=condition=Available"),
    (
        "deployment web to be available within 90s",
        "deployment/web --for=condition=Available --timeout=90s",
    ),
    (
        "wait for deploy/web to be available in 2h30m",
        "deployment/web --for=condition=Available --timeout=2h30m",
    ),
    ("the web deployment in namespace prod to be rolled out", "deployment/web -n prod"),
    ("for the api deployment to finish rolling out", "deployment/api"),
    ("for deployments web and api to be ready", "deployment/web deployment/api"),
    (
        "for all deployments in prod to be available",
        "deployment --all -n prod --for=condition=Available",
    ),
    (
        "for deployments labelled app=web to be available",
        "deployment -l app=web --for=condition=Available",
    ),
    ("the db statefulset to be ready", "statefulset/db"),
    (
        "statefulset db in the data namespace to be rolled out within 10 minutes",
        "statefulset/db -n data --timeout=10m",
    ),
    ("for the logging daemonset to be rolled out", "daemonset/logging"),
    ("ds fluentd in kube-system to be ready", "daemonset/fluentd -n kube-system"),
    ("for the web replicaset to be ready", "replicaset/web"),
    ("for pod web-0 to be ready", "pod/web-0 --for=condition=Ready"),
    ("for the web-0 pod to be ready", "pod/web-0 --for=condition=Ready"),
    ("pod web-0 to be ready within 30 seconds", "pod/web-0 --for=condition=Ready --timeout=30s"),
    ("pods web-0 and web-1 to be ready", "pod/web-0 pod/web-1 --for=condition=Ready"),
    (
        "pods web-0, web-1 and web-2 to be ready",
        "pod/web-0 pod/web-1 pod/web-2 --for=condition=Ready",
    ),
    ("for all pods in prod to be ready", "pod --all -n prod --for=condition=Ready"),
    ("all pods to be ready", "pod --all --for=condition=Ready"),
    ("every pod in namespace staging to be ready", "pod --all -n staging --for=condition=Ready"),
    ("pods labelled app=web to be ready", "pod -l app=web --for=condition=Ready"),
    (
        "pods labeled app=web,tier=frontend to be ready",
        "pod -l app=web,tier=frontend --for=condition=Ready",
    ),
    (
        "pods with label app=web to be ready for up to an hour",
        "pod -l app=web --for=condition=Ready --timeout=1h",
    ),
    (
        "pods matching app=web and tier=frontend to be ready",
        "pod -l app=web,tier=frontend --for=condition=Ready",
    ),
    (
        "pods with labels app=web to be running",
        "pod -l app=web --for=jsonpath={.status.phase}=Running",
    ),
    ("pod web-0 to be running", "pod/web-0 --for=jsonpath={.status.phase}=Running"),
    ("pod web-0 to be up and running", "pod/web-0 --for=jsonpath={.status.phase}=Running"),
    ("pod web-0 to have an IP", "pod/web-0 --for=jsonpath={.status.podIP}"),
    ("for pod web-0 to get an IP address", "pod/web-0 --for=jsonpath={.status.podIP}"),
    ("pod migrate-x to be completed", "pod/migrate-x --for=jsonpath={.status.phase}=Succeeded"),
    ("pod migrate-x to succeed", "pod/migrate-x --for=jsonpath={.status.phase}=Succeeded"),
    ("pod web-0 to be scheduled", "pod/web-0 --for=condition=PodScheduled"),
    ("pod web-0 to be deleted", "pod/web-0 --for=delete"),
    ("for pod web-0 to be gone", "pod/web-0 --for=delete"),
    ("until pod web-0 is deleted", "pod/web-0 --for=delete"),
    ("pod web-0 to go away within 2 minutes", "pod/web-0 --for=delete --timeout=2m"),
    ("the web deployment to be removed", "deployment/web --for=delete"),
    ("pod born-later to be created", "pod/born-later --for=create"),
    ("until pod born-later exists", "pod/born-later --for=create"),
    ("for configmap settings to exist", "configmap/settings --for=create"),
    (
        "secret db-password to be created in namespace prod",
        "secret/db-password -n prod --for=create",
    ),
    ("for job migrate to complete", "job/migrate --for=condition=Complete"),
    ("for the migrate job to be complete", "job/migrate --for=condition=Complete"),
    ("job migrate to succeed within 10m", "job/migrate --for=condition=Complete --timeout=10m"),
    ("the migrate job to finish", "job/migrate --for=condition=Complete --fail-fast"),
    ("for job migrate to be done", "job/migrate --for=condition=Complete --fail-fast"),
    ("job migrate to complete or fail", "job/migrate --for=condition=Complete --fail-fast"),
    ("until the migrate job has failed", "job/migrate --for=condition=Failed"),
    ("for job/migrate to complete", "job/migrate --for=condition=Complete"),
    ("jobs labelled batch=nightly to complete", "job -l batch=nightly --for=condition=Complete"),
    ("for pvc data to be bound", "persistentvolumeclaim/data --for=jsonpath={.status.phase}=Bound"),
    (
        "for the data pvc to be bound",
        "persistentvolumeclaim/data --for=jsonpath={.status.phase}=Bound",
    ),
    (
        "persistentvolumeclaim data-db-0 to be bound within 2 minutes",
        "persistentvolumeclaim/data-db-0 --for=jsonpath={.status.phase}=Bound --timeout=2m",
    ),
    (
        "for the data volume claim to be bound",
        "persistentvolumeclaim/data --for=jsonpath={.status.phase}=Bound",
    ),
    ("for the web service to have an IP", "service/web --for=jsonpath={.spec.clusterIP}"),
    (
        "for the web service to have an external IP",
        "service/web --for=jsonpath={.status.loadBalancer.ingress[0].ip}",
    ),
    (
        "svc web to get a load balancer",
        "service/web --for=jsonpath={.status.loadBalancer.ingress[0].ip}",
    ),
    ("for the web service to be ready", "service/web"),
    (
        "for crd certificates.cert-manager.io to be established",
        "customresourcedefinition/certificates.cert-manager.io --for=condition=Established",
    ),
    (
        "for customresourcedefinition/widgets.example.com to be established",
        "customresourcedefinition/widgets.example.com --for=condition=Established",
    ),
    ("node worker-1 to be ready", "node/worker-1 --for=condition=Ready"),
    ("all nodes to be ready", "node --all --for=condition=Ready"),
    ("for certificate/web-tls to be ready", "certificate/web-tls --for=condition=Ready"),
    (
        "for the web-tls certificate to be ready within 5m",
        "certificate/web-tls --for=condition=Ready --timeout=5m",
    ),
    (
        "pod web-0 to be ready in context staging",
        "pod/web-0 --for=condition=Ready --context=staging",
    ),
    (
        "the web deployment to be available in the prod context",
        "deployment/web --for=condition=Available --context=prod",
    ),
    (
        "deploy web to be available using context prod-eu",
        "deployment/web --for=condition=Available --context=prod-eu",
    ),
    (
        "pods labelled app=web in all namespaces to be ready",
        "pod -l app=web -A --for=condition=Ready",
    ),
    ("all pods across all namespaces to be ready", "pod --all -A --for=condition=Ready"),
    ("pod web-0 to be ready, check once", "pod/web-0 --for=condition=Ready --timeout=0"),
    ("pod web-0 to be ready right now", "pod/web-0 --for=condition=Ready --timeout=0"),
    ("pod web-0 to be ready for half an hour", "pod/web-0 --for=condition=Ready --timeout=30m"),
    ("pod web-0 to be ready within one minute", "pod/web-0 --for=condition=Ready --timeout=1m"),
    ("pod web-0 to be ready within 1.5 hours", "pod/web-0 --for=condition=Ready --timeout=1.5h"),
    (
        "deployment web to be available within 2 days",
        "deployment/web --for=condition=Available --timeout=48h",
    ),
    (
        "the web deployment to have 3 ready replicas",
        "deployment/web --for=jsonpath={.status.readyReplicas}=3",
    ),
    (
        "deployment web to be scaled to 5 replicas",
        "deployment/web --for=jsonpath={.status.replicas}=5",
    ),
    ("pod web-0 to be in phase Succeeded", "pod/web-0 --for=jsonpath={.status.phase}=Succeeded"),
    ("pod web-0 to have condition Initialized", "pod/web-0 --for=condition=Initialized"),
    (
        "pod web-0 until condition ContainersReady is true",
        "pod/web-0 --for=condition=ContainersReady",
    ),
    ("pod web-0 to be not ready", "pod/web-0 --for=condition=Ready=false"),
    (
        "the web deployment to be created and available",
        "deployment/web --for=create --for=condition=Available",
    ),
    ("the web deployment to be created and rolled out", "deployment/web --wait-for-create"),
    ("pod web-0 to be created and ready", "pod/web-0 --for=create --for=condition=Ready"),
    ("the web deployment to be rolled out and fail fast", "deployment/web --fail-fast"),
    (
        "deployment web to be available even if it does not exist yet",
        "deployment/web --for=condition=Available --wait-for-create",
    ),
    (
        "pods on node worker-1 to be ready",
        "pod --field-selector=spec.nodeName=worker-1 --for=condition=Ready",
    ),
    ("kubectl wait for pod web-0 to be ready", "pod/web-0 --for=condition=Ready"),
    (
        "for the web deployment to be available and have 3 ready replicas",
        "deployment/web --for=condition=Available --for=jsonpath={.status.readyReplicas}=3",
    ),
]

#: (request, what it must say it understood, why it is refused)
REFUSED = [
    (
        "for the web deployment",
        "kind=deployment name=web",
        'missing: what to wait for (try "... to be available")',
    ),
    (
        "for web to be ready",
        "nothing",
        'did not understand "web" (name its kind: "the web deployment", "pod web")',
    ),
    (
        "for the deployment to be available",
        "kind=deployment for=available",
        'missing: which deployment (try "the web deployment" or "all deployments")',
    ),
    (
        "for the pods in prod",
        "kind=pod namespace=prod",
        'missing: what to wait for (try "... to be ready")',
    ),
    (
        "for pod web-0 to be available",
        "kind=pod name=web-0 for=available",
        'a pod cannot be "available" (try "ready", "running", "completed" or "deleted")',
    ),
    (
        "for the web deployment to be running",
        "kind=deployment name=web for=running",
        'a deployment cannot be "running" (try "available", "rolled out" or "ready")',
    ),
    (
        "for the web deployment to be healthy",
        "kind=deployment name=web",
        'did not understand "healthy"',
    ),
    ("for job migrate to be ready-ish", "kind=job name=migrate", 'did not understand "ready-ish"'),
    (
        "pod web-0 to be ready forever",
        "kind=pod name=web-0 for=ready",
        'kubectl wait cannot wait forever (try "up to a week": negative --timeout means 168h)',
    ),
    (
        "pod web-0 to be ready or deleted",
        "kind=pod name=web-0 for=ready",
        'kubectl wait cannot wait for one of several conditions (for a job, "finished" means '
        "complete, failing fast if it fails)",
    ),
    (
        "pod web-0 to be deleted and ready",
        "kind=pod name=web-0 for=deleted,ready",
        "deleted and something else at once",
    ),
    (
        "the web deployment and the db statefulset to be available",
        "kind=deployment,statefulset name=web,db for=available",
        'a statefulset cannot be "available" (try "ready", "deleted" or "created")',
    ),
    (
        "pods web-0 labelled app=web to be ready",
        "kind=pod name=web-0 selector=app=web for=ready",
        "name resources or select them by label, not both",
    ),
    (
        "deployment web in prod across all namespaces to be available",
        "kind=deployment name=web namespace=prod all namespaces for=available",
        "a namespace and all namespaces at once",
    ),
    (
        "the web service to be bound",
        "kind=service name=web for=bound",
        'a service cannot be "bound" (try "ready" or "has an IP")',
    ),
    (
        "please make the web deployment available",
        "nothing",
        'did not understand "make" (name its kind: "the make deployment", "pod make")',
    ),
    (
        "for the web deployment to be available by tomorrow",
        "kind=deployment name=web for=available",
        'did not understand "by"',
    ),
    (
        "for the pvc data to be rolled out",
        "kind=persistentvolumeclaim name=data for=rolled out",
        'a persistentvolumeclaim cannot be "rolled out" (try "bound")',
    ),
    (
        "for pod web-0 to be ready within 5 fortnights",
        "kind=pod name=web-0 for=ready",
        'did not understand "within"',
    ),
]


def test_the_corpus_is_large_enough_to_mean_something():
    assert len(ACCEPTED) + len(REFUSED) >= 80
    assert len({request for request, _ in ACCEPTED}) == len(ACCEPTED)


@pytest.mark.parametrize("request_text, expected", ACCEPTED, ids=[r for r, _ in ACCEPTED])
def test_request_becomes_exact_kubectl_arguments(request_text: str, expected: str):
    assert " ".join(vibe.translate_request(request_text)) == expected


@pytest.mark.parametrize(
    "request_text, understood, problem", REFUSED, ids=[r for r, _, _ in REFUSED]
)
def test_request_that_cannot_be_mapped_exactly_is_refused(
    request_text: str, understood: str, problem: str
):
    with pytest.raises(vibe.RequestRefused) as refused:
        vibe.translate_request(request_text)
    assert refused.value.render() == (
        "error: cannot turn this into kubectl wait arguments: understood %s; %s"
        % (understood, problem)
    )
    assert refused.value.exit_code == 1


@pytest.mark.parametrize("request_text, expected", ACCEPTED[:40], ids=[r for r, _ in ACCEPTED[:40]])
def test_translation_is_accepted_by_the_same_flag_parser(request_text: str, expected: str):
    flags = vibe.FlagParser(vibe.WAIT_FLAGS, "wait").parse(expected.split())
    options = vibe.WaitOptions._build(flags, request_text, expected.split())
    assert not vibe.is_plain_english(flags.positionals)
    for wanted in options.fors:
        assert wanted.kind is not vibe.ForKind.READINESS


@pytest.mark.parametrize(
    "spoken, go",
    [
        ("90s", "90s"),
        ("5 minutes", "5m"),
        ("an hour", "1h"),
        ("2h30m", "2h30m"),
        ("2 hours and 30 minutes", "2h30m"),
        ("1.5 hours", "1.5h"),
        ("half an hour", "30m"),
        ("ten seconds", "10s"),
        ("a week", "168h"),
        ("3 days", "72h"),
        ("500ms", "500ms"),
    ],
)
def test_spoken_durations_become_go_durations(spoken: str, go: str):
    assert vibe.nl_duration(spoken) == go
    assert vibe.parse_go_duration(go) > 0


def test_request_sets_globals_so_the_runner_scopes_every_kubectl_child():
    flags = vibe.FlagParser(vibe.WAIT_FLAGS, "wait").parse(
        ["for the web deployment in prod to be available, up to 5 minutes", "--dry-run"]
    )
    options = vibe.WaitOptions.from_flags(flags)
    assert options.request.startswith("for the web deployment")
    assert options.flags.positionals == ["deployment/web"]
    assert options.flags.globals_argv == ["--namespace=prod"]
    assert options.timeout_s == 300 and options.timeout_text == "5m"
    assert options.dry_run
    assert options.arrow_line("kubectl vibe") == (
        "→ kubectl wait deployment/web -n prod --for=condition=Available --timeout=5m"
    )


def test_readiness_request_is_shown_as_a_vibe_command():
    flags = vibe.FlagParser(vibe.WAIT_FLAGS, "wait").parse(["the db statefulset to be ready"])
    options = vibe.WaitOptions.from_flags(flags)
    assert options.fors == []
    assert options.arrow_line("kubectl vibe") == "→ kubectl vibe wait statefulset/db"


def test_jsonpath_arguments_are_shell_quoted_in_the_arrow_line():
    flags = vibe.FlagParser(vibe.WAIT_FLAGS, "wait").parse(["pod web-0 to have an IP"])
    options = vibe.WaitOptions.from_flags(flags)
    assert options.arrow_line("kubectl vibe") == (
        "→ kubectl wait pod/web-0 '--for=jsonpath={.status.podIP}'"
    )


@pytest.mark.parametrize(
    "positionals, plain",
    [
        (["deploy/web"], False),
        (["pods", "a", "b"], False),
        (["for the web deployment to be ready"], True),
        (["for", "pod", "web-0", "to", "be", "ready"], True),
        (["until", "pod/x", "is", "gone"], True),
        ([], False),
    ],
)
def test_plain_english_is_told_apart_from_resource_arguments(positionals, plain):
    assert vibe.is_plain_english(positionals) is plain


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("deployment/web -n prod --for=condition=Available\n", ["deployment/web", "-n", "prod",
                                                                "--for=condition=Available"]),
        ("kubectl wait pod/x --for=delete --timeout=1m", ["pod/x", "--for=delete",
                                                          "--timeout=1m"]),
        ("thinking...\n→ kubectl wait job/j '--for=jsonpath={.status.succeeded}=1'",
         ["job/j", "--for=jsonpath={.status.succeeded}=1"]),
    ],
)  # fmt: skip
def test_llm_answer_is_validated_by_the_same_parser(answer: str, expected):
    assert vibe.parse_llm_answer(answer) == expected


@pytest.mark.parametrize(
    "answer, message",
    [
        ("", "the --llm command printed nothing"),
        ("wait for the web deployment", "is not kubectl wait arguments"),
        ("deploy/web --for=ready", 'unrecognized condition: "ready"'),
        ("deploy/web --bogus", "unknown flag: --bogus"),
        ("deploy/web --llm=x --for=delete", "may not set --llm"),
        ("deploy/web '--for=delete", "not valid arguments"),
    ],
)
def test_llm_answer_that_is_not_exact_arguments_is_refused(answer: str, message: str):
    with pytest.raises(vibe.VibeError) as refused:
        vibe.parse_llm_answer(answer)
    assert message in refused.value.render()
