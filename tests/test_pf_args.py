"""§07 port-forward arguments: TYPE/NAME, [LOCAL:]REMOTE specs, --address, the options object.

Expected texts are kubectl 1.37's own (checked against the real binary and the simulated
cluster; the cheapest cases are re-checked live at the bottom of this file).
"""

from __future__ import annotations

import subprocess

import pytest

import kubectl_vibe_pf as k
from kubectl_vibe_pf import (
    FailureMode,
    FlagParser,
    ListenPlan,
    PortForwardOptions,
    PortSpec,
    ResourceKind,
    UsageError,
    VibeError,
    parse_addresses,
    parse_port_spec,
    parse_resource_ref,
)

from .conftest import venv_kubectl

# -- TYPE/NAME -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, name",
    [
        ("mypod", ResourceKind.POD, "mypod"),
        ("pod/mypod", ResourceKind.POD, "mypod"),
        ("pods/mypod", ResourceKind.POD, "mypod"),
        ("po/mypod", ResourceKind.POD, "mypod"),
        ("Pod/mypod", ResourceKind.POD, "mypod"),
        ("PODS/mypod", ResourceKind.POD, "mypod"),
        ("pod.v1./mypod", ResourceKind.POD, "mypod"),
        ("Deployment.apps/web", ResourceKind.DEPLOYMENT, "web"),
        ("deploy.apps/web", ResourceKind.DEPLOYMENT, "web"),
        ("svc/web", ResourceKind.SERVICE, "web"),
        ("service/web", ResourceKind.SERVICE, "web"),
        ("services/web", ResourceKind.SERVICE, "web"),
        ("deploy/web", ResourceKind.DEPLOYMENT, "web"),
        ("deployment/web", ResourceKind.DEPLOYMENT, "web"),
        ("deployments.apps/web", ResourceKind.DEPLOYMENT, "web"),
        ("deployment.v1.apps/web", ResourceKind.DEPLOYMENT, "web"),
        ("rs/web-1", ResourceKind.REPLICASET, "web-1"),
        ("replicasets.apps/web-1", ResourceKind.REPLICASET, "web-1"),
        ("rc/old", ResourceKind.REPLICATIONCONTROLLER, "old"),
        ("replicationcontroller/old", ResourceKind.REPLICATIONCONTROLLER, "old"),
        ("sts/db", ResourceKind.STATEFULSET, "db"),
        ("statefulsets.apps/db", ResourceKind.STATEFULSET, "db"),
        ("ds/agent", ResourceKind.DAEMONSET, "agent"),
        ("daemonset/agent", ResourceKind.DAEMONSET, "agent"),
        ("job/migrate", ResourceKind.JOB, "migrate"),
        ("jobs.batch/migrate", ResourceKind.JOB, "migrate"),
        ("jobs.v1.batch/migrate", ResourceKind.JOB, "migrate"),
    ],
)
def test_every_kubectl_spelling_of_a_supported_kind_is_recognised(text, kind, name):
    ref = parse_resource_ref(text)
    assert (ref.kind, ref.name, ref.text) == (kind, name, text)


@pytest.mark.parametrize(
    "text",
    [
        "configmap/x",
        "foo/x",
        "deployment.batch/x",
        "svc.apps/x",
        "Deploy/x",  # short names are case-sensitive: kubectl says there is no such type
        "SVC/x",
        "pods.v1/x",  # reads as group "v1"
        "svc.v1/x",
        "deployments.apps.v1/x",
    ],
)
def test_other_types_are_left_for_the_server_to_judge(text):
    ref = parse_resource_ref(text)
    assert ref.kind is ResourceKind.OTHER
    assert ref.get_arg == text  # kubectl get TYPE/NAME answers exactly as port-forward would


def test_get_argument_names_the_resource_with_its_group():
    assert parse_resource_ref("deploy/web").get_arg == "deployments.apps/web"
    assert parse_resource_ref("web").get_arg == "pods/web"
    assert parse_resource_ref("svc/web").get_arg == "services/web"


@pytest.mark.parametrize(
    "text, message",
    [
        ("a/b/c", "arguments in resource/name form may not have more than one slash"),
        ("/x", "arguments in resource/name form must have a single resource and name"),
        ("pod/", "arguments in resource/name form must have a single resource and name"),
    ],
)
def test_malformed_type_name_gets_kubectls_builder_message(text, message):
    with pytest.raises(VibeError) as caught:
        parse_resource_ref(text)
    assert caught.value.render() == "error: " + message
    assert not isinstance(caught.value, UsageError)  # kubectl prints no "See ... -h" line


# -- [LOCAL:]REMOTE ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, local, remote",
    [
        ("5000", None, "5000"),
        ("8888:5000", 8888, "5000"),
        (":5000", 0, "5000"),
        ("0:5000", 0, "5000"),
        ("http", None, "http"),
        ("9000:http", 9000, "http"),
        (":http", 0, "http"),
        ("http:http", None, "http"),  # equal sides: kubectl reads it as a bare "http"
        ("5000:5000", None, "5000"),
        ("080", None, "080"),
    ],
)
def test_valid_port_specs(text, local, remote):
    assert parse_port_spec(text) == PortSpec(local, remote, text)


OUT_OF_RANGE_70000 = 'strconv.ParseUint: parsing "70000": value out of range'


@pytest.mark.parametrize(
    "text, message",
    [
        ("a:b:c", "invalid port format 'a:b:c'"),
        ("8080:80:90", "invalid port format '8080:80:90'"),
        (
            "abc:80",
            "error parsing local port 'abc': strconv.ParseUint: parsing \"abc\": invalid syntax",
        ),
        (
            "abc:http",
            "error parsing local port 'abc': strconv.ParseUint: parsing \"abc\": invalid syntax",
        ),
        ("8080:0", "remote port must be > 0"),
        ("0", "remote port must be > 0"),
        (
            "70000",
            "error parsing local port '70000': " + OUT_OF_RANGE_70000,
        ),
        (
            "70000:80",
            "error parsing local port '70000': " + OUT_OF_RANGE_70000,
        ),
        (
            "80:70000",
            "error parsing remote port '70000': " + OUT_OF_RANGE_70000,
        ),
        (
            "+80",
            "error parsing local port '+80': strconv.ParseUint: parsing \"+80\": invalid syntax",
        ),
        (
            "80:+80",
            "error parsing remote port '+80': strconv.ParseUint: parsing \"+80\": invalid syntax",
        ),
    ],
)
def test_invalid_pod_port_specs_fail_with_kubectls_text_and_no_help_pointer(text, message):
    with pytest.raises(VibeError) as caught:
        parse_port_spec(text, ResourceKind.POD)
    assert caught.value.render() == "error: " + message
    assert caught.value.exit_code == 1


@pytest.mark.parametrize("text", ["8080:", ":", "0", "70000", "80:70000"])
def test_service_remotes_are_not_judged_before_the_service_is_known(text):
    # kubectl looks a Service's remote up among its ports first ("does not have a service port
    # 70000", "does not have a named port ''"): §08 resolve_forwards gives those messages.
    spec = parse_port_spec(text, ResourceKind.SERVICE)
    assert spec.text == text


def test_empty_pod_remote_is_left_to_the_pod_lookup():
    # kubectl first looks "" up as a port name: the message depends on the pod (see §08 tests).
    assert parse_port_spec("8080:").remote == ""


def test_local_port_is_still_checked_for_services():
    with pytest.raises(VibeError, match="error parsing local port 'x'"):
        parse_port_spec("x:80", ResourceKind.SERVICE)


# -- --address -------------------------------------------------------------------------------


def test_localhost_expands_to_both_loopbacks_and_is_fine_if_either_binds():
    plan = parse_addresses(["localhost"])
    assert plan.addresses == ("127.0.0.1", "::1")
    assert plan.require_all is False
    assert [(e.family, e.mode) for e in plan.entries] == [
        ("tcp4", FailureMode.ALL),
        ("tcp6", FailureMode.ALL),
    ]
    assert plan.port_ok({"127.0.0.1": False, "::1": True})
    assert plan.port_ok({"127.0.0.1": True, "::1": False})
    assert not plan.port_ok({"127.0.0.1": False, "::1": False})


def test_explicit_addresses_are_deduplicated_sorted_and_each_must_bind():
    plan = parse_addresses(["10.0.0.1", "0.0.0.0", "10.0.0.1", "::"])
    assert plan.addresses == ("0.0.0.0", "10.0.0.1", "::")
    assert plan.require_all is True
    assert [e.family for e in plan.entries] == ["tcp4", "tcp4", "tcp6"]
    assert not plan.port_ok({"0.0.0.0": True, "10.0.0.1": False, "::": True})
    assert plan.port_ok({"0.0.0.0": True, "10.0.0.1": True, "::": True})


def test_an_explicit_loopback_overrides_localhosts_lenient_mode():
    plan = parse_addresses(["localhost", "::1"])
    assert plan.addresses == ("127.0.0.1", "::1")
    modes = {e.address: e.mode for e in plan.entries}
    assert modes == {"127.0.0.1": FailureMode.ALL, "::1": FailureMode.ANY}
    assert not plan.port_ok({"127.0.0.1": True, "::1": False})


def test_ipv4_with_leading_zeros_and_mapped_ipv6_are_ipv4_like_go():
    plan = parse_addresses(["127.000.000.001", "::ffff:127.0.0.1"])
    assert [e.family for e in plan.entries] == ["tcp4", "tcp4"]


@pytest.mark.parametrize("value", ["foo", "::1%lo", "256.0.0.1", "1.2.3", "", "Localhost"])
def test_invalid_address_gets_client_gos_message(value):
    with pytest.raises(VibeError) as caught:
        parse_addresses([value])
    assert caught.value.render() == "error: %s is not a valid IP" % value


# -- the options object ----------------------------------------------------------------------


def options(*argv: str) -> PortForwardOptions:
    flags = FlagParser(k.PORT_FORWARD_FLAGS, "port-forward").parse(list(argv))
    return PortForwardOptions.from_flags(flags)


def test_options_from_a_full_command_line():
    opts = options(
        "svc/web", "8080:http", ":9090", "-n", "prod", "--address", "0.0.0.0", "-o", "json"
    )
    opts.validate()
    assert opts.ref.kind is ResourceKind.SERVICE
    assert [p.text for p in opts.ports] == ["8080:http", ":9090"]
    assert opts.namespace == "prod"
    assert opts.listen == ListenPlan(("0.0.0.0",), True, opts.listen.entries)
    assert opts.pod_running_timeout == 60.0
    assert (opts.output, opts.live) == ("json", None)


def test_defaults_listen_on_localhost_and_namespace_is_left_to_complete():
    opts = options("mypod", "5000", "--pod-running-timeout=5s", "--no-live")
    assert opts.listen.addresses == ("127.0.0.1", "::1")
    assert opts.namespace == ""
    assert opts.pod_running_timeout == 5.0
    assert opts.live is False


@pytest.mark.parametrize("argv", [(), ("pod/x",)])
def test_fewer_than_two_arguments_is_kubectls_usage_error(argv):
    with pytest.raises(UsageError) as caught:
        options(*argv)
    caught.value.prog = "kubectl vibe"
    assert caught.value.render() == (
        "error: TYPE/NAME and list of ports are required for port-forward\n"
        "See 'kubectl vibe port-forward -h' for help and examples"
    )


@pytest.mark.parametrize("value", ["0", "-1s", "0s"])
def test_non_positive_pod_running_timeout_is_a_usage_error(value):
    with pytest.raises(UsageError) as caught:
        options("pod/x", "80", "--pod-running-timeout=" + value)
    caught.value.prog = "kubectl vibe"
    assert caught.value.render() == (
        "error: --pod-running-timeout must be higher than zero\n"
        "See 'kubectl vibe port-forward -h' for help and examples"
    )


def test_an_empty_address_flag_is_client_gos_no_address_error():
    with pytest.raises(VibeError) as caught:
        options("pod/x", "80", "--address=")
    assert caught.value.render() == "error: you must specify at least 1 address"


def test_localhost_and_an_explicit_loopback_combine_as_client_go_does():
    opts = options("pod/x", "80", "--address=localhost,127.0.0.1")
    assert opts.listen.addresses == ("127.0.0.1", "::1")
    assert [e.mode for e in opts.listen.entries] == [FailureMode.ANY, FailureMode.ALL]


def test_validate_rejects_an_unknown_output_format():
    opts = options("pod/x", "80", "-o", "yaml")
    with pytest.raises(VibeError, match='output format "yaml"'):
        opts.validate()


def test_validate_rejects_a_timeout_set_after_parsing():
    opts = options("pod/x", "80")
    opts.pod_running_timeout = 0
    with pytest.raises(UsageError, match="must be higher than zero"):
        opts.validate()


def test_bad_port_is_reported_before_anything_is_looked_up():
    with pytest.raises(VibeError, match="invalid port format"):
        options("deploy/web", "1:2:3")


# -- the same messages, from the real kubectl (it prints these without a server) --------------

REAL_KUBECTL = venv_kubectl()


@pytest.mark.skipif(not REAL_KUBECTL, reason="no kubectl")
@pytest.mark.parametrize(
    "argv",
    [
        ("pod/x",),
        ("pod/x", "80", "--pod-running-timeout=0"),
        ("pod/", "80"),
    ],
)
def test_messages_match_real_kubectl_for_errors_it_finds_offline(argv):
    real = subprocess.run(
        [REAL_KUBECTL, "port-forward", *argv, "--kubeconfig=/dev/null"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    with pytest.raises(VibeError) as caught:
        options(*argv)
    if isinstance(caught.value, UsageError):
        caught.value.prog = "kubectl"
    assert (caught.value.exit_code, caught.value.render() + "\n") == (real.returncode, real.stderr)


SPELLINGS = [
    "pod",
    "pods",
    "po",
    "Pod",
    "PODS",
    "Po",
    "pod.v1.",
    "pods.v1",
    "service",
    "svc",
    "SVC",
    "svc.v1",
    "deployment",
    "Deploy",
    "DEPLOYMENTS",
    "deploy.apps",
    "deployments.v1.apps",
    "deployments.apps.v1",
    "rs",
    "replicasets.apps",
    "rc",
    "replicationcontrollers.v1.",
    "sts",
    "statefulset.apps",
    "ds",
    "daemonsets.v1.apps",
    "job",
    "jobs.batch",
    "jobs.v1.batch",
]


@pytest.mark.e2e
@pytest.mark.skipif(not REAL_KUBECTL, reason="no kubectl")
def test_spellings_agree_with_the_real_kubectl(sim_cluster):
    """We name a kind exactly when kubectl resolves the spelling to that kind's resource."""
    disagreements = []
    env = sim_cluster.env()  # one discovery cache for all the calls
    for spelled in SPELLINGS:
        real = subprocess.run(
            [REAL_KUBECTL, "get", spelled + "/nothing-here"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        kind = parse_resource_ref(spelled + "/nothing-here").kind
        # NotFound names the resource kubectl resolved; an unknown type never gets that far.
        resolved = real.stderr.partition("(NotFound): ")[2].partition(" ")[0]
        ours = kind.resource.partition(".")[0] if kind is not ResourceKind.OTHER else ""
        if resolved != ours:
            disagreements.append((spelled, real.stderr.strip(), kind))
    assert disagreements == []
