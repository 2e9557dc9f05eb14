"""§09 kubectl output: every line kubectl port-forward prints, in every kubectl format, as events.

The klog lines below are real: captured from kubectl 1.37 (structured) and 1.32 ("Unhandled
Error") against the simulated cluster, and from the ≤1.30 format in client-go's sources. The
last test re-captures them live from the real kubectl.
"""

from __future__ import annotations

import socket
import subprocess

import pytest

from kubectl_vibe_pf import (
    ErrorCause,
    FatalError,
    ForwardError,
    ForwardingFrom,
    HandlingConnection,
    ListenFailed,
    LostConnection,
    Unrecognized,
    classify_error,
    describe_cause,
    go_unquote,
    parse_klog_structured,
    parse_kubectl_line,
)

from .conftest import IMAGE_KUBECTL, venv_kubectl
from .simcluster import Backend, ContainerPort

SANDBOX = "b73415975bce95bf2050cfaff774c17bac1fe1c4e3bc01aaa1394c23dbf86c3a"

# -- stdout ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, event",
    [
        ("Forwarding from 127.0.0.1:8080 -> 80", ForwardingFrom("127.0.0.1", 8080, 80)),
        ("Forwarding from [::1]:8080 -> 80", ForwardingFrom("::1", 8080, 80)),
        ("Forwarding from 0.0.0.0:8888 -> 5000", ForwardingFrom("0.0.0.0", 8888, 5000)),
        ("Forwarding from [fe80::1]:40123 -> 8080", ForwardingFrom("fe80::1", 40123, 8080)),
        ("Handling connection for 8080", HandlingConnection(8080)),
        ("Handling connection for 8080\r\n", HandlingConnection(8080)),
    ],
)
def test_stdout_lines(line, event):
    assert parse_kubectl_line("stdout", line) == event


@pytest.mark.parametrize(
    "line",
    [
        "Forwarding from 127.0.0.1:8080 -> ",
        "Handling connection for",
        "Forwarding from x -> 80",
        "",
    ],
)
def test_near_misses_are_unrecognized_not_guessed(line):
    assert parse_kubectl_line("stdout", line) == Unrecognized(line)


# -- klog error lines in all three formats -------------------------------------------------------

RESET_137 = (
    'E1125 14:09:35.385593   27155 portforward.go:549] "An error occurred forwarding" '
    'err="error forwarding port 8080 to pod %s, uid : failed to execute portforward in network '
    'namespace \\"/var/run/netns/cni-b7341597\\": read tcp4 127.0.0.1:48080->127.0.0.1:8080: '
    'read: connection reset by peer" localPort=18080 remotePort=8080' % SANDBOX
)
RESET_132 = (
    'E1125 14:09:38.915543   27186 portforward.go:424] "Unhandled Error" err="an error occurred '
    "forwarding 18080 -> 8080: error forwarding port 8080 to pod %s, uid : failed to execute "
    'portforward in network namespace \\"/var/run/netns/cni-3bcd9f6d\\": read tcp4 '
    '127.0.0.1:48080->127.0.0.1:8080: read: connection reset by peer"' % SANDBOX
)
RESET_130 = (
    "E0724 12:00:00.000000   12345 portforward.go:409] an error occurred forwarding 18080 -> "
    "8080: error forwarding port 8080 to pod %s, uid : failed to execute portforward in network "
    'namespace "/var/run/netns/cni-3bcd9f6d": read tcp4 127.0.0.1:48080->127.0.0.1:8080: read: '
    "connection reset by peer" % SANDBOX
)
GONE_137 = (
    'E1125 14:09:36.697543   27162 portforward.go:549] "An error occurred forwarding" '
    'err="error forwarding port 8080 to pod %s, uid : failed to find sandbox \\"%s\\" in store: '
    'not found" localPort=18080 remotePort=8080' % (SANDBOX, SANDBOX)
)
GONE_132 = (
    'E1125 14:09:40.228001   27193 portforward.go:424] "Unhandled Error" err="an error occurred '
    "forwarding 18080 -> 8080: error forwarding port 8080 to pod %s, uid : failed to find "
    'sandbox \\"%s\\" in store: not found"' % (SANDBOX, SANDBOX)
)
GONE_130 = (
    "E0724 12:00:00.000000   12345 portforward.go:409] an error occurred forwarding 18080 -> "
    '8080: error forwarding port 8080 to pod %s, uid : failed to find sandbox "%s" in store: '
    "not found" % (SANDBOX, SANDBOX)
)
REFUSED_137 = (
    'E1125 14:09:37.705441   27176 portforward.go:549] "An error occurred forwarding" '
    'err="error forwarding port 9999 to pod %s, uid : failed to connect to localhost:9999 inside '
    'namespace \\"%s\\", IPv4: dial tcp4 127.0.0.1:9999: connect: connection refused IPv6 dial '
    'tcp6 [::1]:9999: connect: connection refused " localPort=18081 remotePort=9999'
    % (SANDBOX, SANDBOX)
)
REFUSED_132 = (
    'E1125 14:09:41.244574   27258 portforward.go:424] "Unhandled Error" err="an error occurred '
    "forwarding 18081 -> 9999: error forwarding port 9999 to pod %s, uid : failed to connect to "
    'localhost:9999 inside namespace \\"%s\\", IPv4: dial tcp4 127.0.0.1:9999: connect: '
    'connection refused IPv6 dial tcp6 [::1]:9999: connect: connection refused "'
    % (SANDBOX, SANDBOX)
)
TIMEOUT_137 = (
    'E1125 14:10:00.000000   27155 portforward.go:470] "Error creating error stream" '
    'err="Timeout occurred" localPort=18080 remotePort=8080'
)
TIMEOUT_132 = (
    'E1125 14:10:00.000000   27186 portforward.go:413] "Unhandled Error" err="error creating '
    'error stream for port 18080 -> 8080: Timeout occurred"'
)
TIMEOUT_130 = (
    "E0724 12:00:00.000000   12345 portforward.go:391] error creating error stream for port "
    "18080 -> 8080: Timeout occurred"
)
PIPE_137 = (
    'E1125 14:10:00.000000   27155 portforward.go:520] "Error copying from local connection to '
    'remote stream" err="writeto tcp4 127.0.0.1:18080->127.0.0.1:51234: write: broken pipe" '
    "localPort=18080 remotePort=8080"
)
CONTAINERD_137 = (
    'E1125 14:10:00.000000   27155 portforward.go:549] "An error occurred forwarding" '
    'err="error forwarding port 5432 to pod %s, uid : network namespace for sandbox \\"%s\\" is '
    'closed" localPort=5432 remotePort=5432' % (SANDBOX, SANDBOX)
)
CRIO_132 = (
    'E1125 14:10:00.000000   27186 portforward.go:424] "Unhandled Error" err="an error occurred '
    "forwarding 5432 -> 5432: error forwarding port 5432 to pod %s, uid : sandbox %s is not "
    'running"' % (SANDBOX, SANDBOX)
)
DOCKERSHIM_120 = (
    "E0724 12:00:00.000000   12345 portforward.go:400] an error occurred forwarding 5432 -> 5432: "
    "error forwarding port 5432 to pod %s, uid : Error: No such container: %s" % (SANDBOX, SANDBOX)
)


@pytest.mark.parametrize(
    "line, cause, local, remote",
    [
        (RESET_137, ErrorCause.PEER_RESET, 18080, 8080),
        (RESET_132, ErrorCause.PEER_RESET, 18080, 8080),
        (RESET_130, ErrorCause.PEER_RESET, 18080, 8080),
        (GONE_137, ErrorCause.POD_GONE, 18080, 8080),
        (GONE_132, ErrorCause.POD_GONE, 18080, 8080),
        (GONE_130, ErrorCause.POD_GONE, 18080, 8080),
        (REFUSED_137, ErrorCause.NOT_LISTENING, 18081, 9999),
        (REFUSED_132, ErrorCause.NOT_LISTENING, 18081, 9999),
        (TIMEOUT_137, ErrorCause.STUCK_TUNNEL, 18080, 8080),
        (TIMEOUT_132, ErrorCause.STUCK_TUNNEL, 18080, 8080),
        (TIMEOUT_130, ErrorCause.STUCK_TUNNEL, 18080, 8080),
        (PIPE_137, ErrorCause.PEER_RESET, 18080, 8080),
        (CONTAINERD_137, ErrorCause.POD_GONE, 5432, 5432),
        (CRIO_132, ErrorCause.POD_GONE, 5432, 5432),
        (DOCKERSHIM_120, ErrorCause.POD_GONE, 5432, 5432),
    ],
)
def test_klog_forwarding_errors_in_every_format(line, cause, local, remote):
    event = parse_kubectl_line("stderr", line)
    assert isinstance(event, ForwardError)
    assert (event.cause, event.local_port, event.remote_port) == (cause, local, remote)


def test_the_three_formats_of_one_error_give_the_same_core_text():
    texts = [parse_kubectl_line("stderr", line).message for line in (GONE_137, GONE_132, GONE_130)]
    core = 'failed to find sandbox "%s" in store: not found' % SANDBOX
    assert all(text.endswith(core) for text in texts), texts
    # the structured form's err value is unescaped: no \" left
    assert '\\"' not in texts[0]


def test_structured_message_without_the_wrapper_keeps_its_own_words():
    event = parse_kubectl_line("stderr", PIPE_137)
    assert event.message == (
        "Error copying from local connection to remote stream: writeto tcp4 "
        "127.0.0.1:18080->127.0.0.1:51234: write: broken pipe"
    )


# -- endings and fatal lines ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "error: lost connection to pod",
        "E0724 12:00:00.000000   12345 portforward.go:234] lost connection to pod",
    ],
)
def test_lost_connection_in_both_eras(line):
    assert parse_kubectl_line("stderr", line) == LostConnection()


def test_listen_failure_for_one_port():
    line = (
        "Unable to listen on port 8080: Listeners failed to create with the following errors: "
        "[unable to create listener: Error listen tcp4 127.0.0.1:8080: bind: address already in "
        "use unable to create listener: Error listen tcp6 [::1]:8080: bind: address already in use]"
    )
    event = parse_kubectl_line("stderr", line)
    assert isinstance(event, ListenFailed)
    assert event.local_port == 8080
    assert event.message.startswith("Listeners failed to create")


def test_failed_to_forward_from_is_a_listen_failure():
    line = "Failed to forward from 127.0.0.1:8080 -> 80"
    assert parse_kubectl_line("stdout", line) == ListenFailed(8080, line)


@pytest.mark.parametrize(
    "line, cause",
    [
        ("error: unable to listen on any of the requested ports: [{8080 80}]", ErrorCause.OTHER),
        (
            'error: error upgrading connection: unable to upgrade connection: pods "x" is '
            'forbidden: User "dev" cannot create resource "pods/portforward" in API group "" in '
            'the namespace "prod"',
            ErrorCause.FORBIDDEN,
        ),
        (
            "error: error upgrading connection: error dialing backend: dial tcp 10.0.0.5:10250: "
            "connect: connection refused",
            ErrorCause.UNREACHABLE,
        ),
        ("error: timed out waiting for the condition", ErrorCause.OTHER),
        (
            "error: unable to forward port because pod is not running. Current status=Pending",
            ErrorCause.OTHER,
        ),
    ],
)
def test_other_error_lines_are_fatal(line, cause):
    event = parse_kubectl_line("stderr", line)
    assert event == FatalError(line[len("error: ") :], cause)


@pytest.mark.parametrize(
    "line, cause",
    [
        ('Error from server (NotFound): pods "x" not found', ErrorCause.POD_GONE),
        (
            "The connection to the server localhost:8080 was refused - did you specify the right "
            "host or port?",
            ErrorCause.UNREACHABLE,
        ),
        (
            "Unable to connect to the server: dial tcp: lookup api.example.com: no such host",
            ErrorCause.UNREACHABLE,
        ),
    ],
)
def test_kubectl_final_lines_without_error_prefix_are_fatal_too(line, cause):
    assert parse_kubectl_line("stderr", line) == FatalError(line, cause)


def test_discovery_failure_klog_line_names_an_unreachable_server():
    line = (
        "E1125 14:01:32.735435    6698 memcache.go:381] \"Couldn't get current server API group "
        'list" err="Get \\"http://localhost:8080/api?timeout=32s\\": dial tcp 127.0.0.1:8080: '
        'connect: connection refused"'
    )
    event = parse_kubectl_line("stderr", line)
    assert isinstance(event, ForwardError)
    assert event.cause is ErrorCause.UNREACHABLE
    assert event.local_port is None


def test_verbose_info_lines_are_not_errors():
    line = 'I1125 14:10:00.000000   27155 round_trippers.go:560] "Response" status="200 OK"'
    assert parse_kubectl_line("stderr", line) == Unrecognized(line)


# -- classification --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, cause",
    [
        ('failed to find sandbox "abc" in store: not found', ErrorCause.POD_GONE),
        ("Error: No such container: abc", ErrorCause.POD_GONE),
        ('network namespace for sandbox "abc" is closed', ErrorCause.POD_GONE),
        ("sandbox abc is not running", ErrorCause.POD_GONE),
        ('pods "web-1" not found', ErrorCause.POD_GONE),
        ('unable to upgrade connection: container not found ("app")', ErrorCause.POD_GONE),
        ("unable to upgrade connection: pod does not exist", ErrorCause.POD_GONE),
        ('failed to connect to localhost:80 inside namespace "abc"', ErrorCause.NOT_LISTENING),
        ("dial tcp4 127.0.0.1:80: connect: connection refused", ErrorCause.NOT_LISTENING),
        (
            "socat: E connect(5, AF=2 127.0.0.1:80, 16): Connection refused",
            ErrorCause.NOT_LISTENING,
        ),
        ("read: connection reset by peer", ErrorCause.PEER_RESET),
        ("write: broken pipe", ErrorCause.PEER_RESET),
        (
            "error creating error stream for port 80 -> 80: Timeout occurred",
            ErrorCause.STUCK_TUNNEL,
        ),
        ('pods "x" is forbidden: User "dev" cannot create resource', ErrorCause.FORBIDDEN),
        ("Forbidden (403)", ErrorCause.FORBIDDEN),
        (
            "Unable to connect to the server: net/http: TLS handshake timeout",
            ErrorCause.UNREACHABLE,
        ),
        ("dial tcp: lookup example.invalid: no such host", ErrorCause.UNREACHABLE),
        ("dial tcp 10.0.0.1:6443: i/o timeout", ErrorCause.UNREACHABLE),
        (
            'Get "https://10.0.0.1:6443/api/v1/namespaces/x/pods/y": dial tcp 10.0.0.1:6443: '
            "connect: connection refused",
            ErrorCause.UNREACHABLE,
        ),
        ("something nobody has seen before", ErrorCause.OTHER),
    ],
)
def test_classify_error(text, cause):
    assert classify_error(text) is cause


@pytest.mark.parametrize("cause", list(ErrorCause))
def test_every_cause_has_a_one_line_explanation_and_fix(cause):
    what, fix = describe_cause(cause)
    assert what and fix and "\n" not in what + fix


# -- klog structured helpers -------------------------------------------------------------------


def test_go_quoted_values_are_unescaped():
    assert go_unquote('say \\"hi\\"\\n\\ttab') == 'say "hi"\n\ttab'
    assert go_unquote("\\x41") == "A"


def test_structured_klog_fields():
    message, values = parse_klog_structured('"Msg here" err="a \\"b\\"" localPort=1 remotePort=2')
    assert message == "Msg here"
    assert values == {"err": 'a "b"', "localPort": "1", "remotePort": "2"}
    assert parse_klog_structured("plain text") == ("plain text", {})


# -- live: what the real kubectl prints when the pod goes away ---------------------------------


def _kubectls():
    """The venv's kubectl 1.37 (structured klog) and the image's 1.32 ("Unhandled Error")."""
    found = []
    for label, path in (("venv", venv_kubectl()), ("image", IMAGE_KUBECTL)):
        if (
            path
            and subprocess.run([path, "version", "--client"], capture_output=True).returncode == 0
        ):
            found.append(pytest.param(path, id=label))
    return found


def _poke(port: int) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            conn.recv(100)
    except OSError:
        pass


@pytest.mark.e2e
@pytest.mark.parametrize("kubectl", _kubectls())
def test_real_kubectl_lines_parse_to_the_expected_events(sim_cluster, kubectl):
    sim_cluster.add_pod("p", ports=[ContainerPort("http", 8080)], backends={8080: Backend.http()})
    sim_cluster.wait_for(lambda: sim_cluster.pods("p", ready=True))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    proc = subprocess.Popen(
        [kubectl, "port-forward", "pod/p", "%d:8080" % local, "--address=127.0.0.1"],
        env=sim_cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert parse_kubectl_line("stdout", first) == ForwardingFrom("127.0.0.1", local, 8080)
        sim_cluster.delete_pod("p")
        sim_cluster.wait_for(lambda: not sim_cluster.get("pod", "p"))
        _poke(local)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    events = [parse_kubectl_line("stdout", line) for line in out.splitlines()]
    events += [parse_kubectl_line("stderr", line) for line in err.splitlines()]
    assert HandlingConnection(local) in events
    errors = [e for e in events if isinstance(e, ForwardError)]
    assert errors and errors[0].cause is ErrorCause.POD_GONE, err
    assert (errors[0].local_port, errors[0].remote_port) == (local, 8080)
    assert events[-1] == LostConnection()
    assert proc.returncode == 1
