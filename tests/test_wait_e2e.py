"""`kubectl vibe wait` end to end: real kubectl against the simulated cluster, state changing
while we wait. stdout and the exit code are kubectl's; progress and explanations go to stderr."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest

from .conftest import Kubectl, venv_kubectl
from .kubectl_proc import KubectlProcess, run_kubectl
from .simcluster import SimCluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(REPO, "kubectl_vibe_pf.py")

pytestmark = pytest.mark.e2e


class Vibe:
    """Runs `kubectl_vibe_pf.py wait` with the kubectl under test (KUBECTL_PATH, PATH)."""

    def __init__(self, sim: SimCluster, kubectl: str) -> None:
        self.kubectl = kubectl
        self.env = sim.env()
        self.env["KUBECTL_PATH"] = kubectl
        self.env["PATH"] = os.path.dirname(kubectl) + os.pathsep + self.env.get("PATH", "")
        self.procs: List[KubectlProcess] = []

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return run_kubectl(sys.executable, [MODULE, "wait", *args], self.env, timeout)

    def start(self, *args: str) -> KubectlProcess:
        proc = KubectlProcess(sys.executable, [MODULE, "wait", *args], self.env)
        self.procs.append(proc)
        return proc

    def kubectl_run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return run_kubectl(self.kubectl, list(args), self.env, timeout)

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def vibe(sim_cluster: SimCluster, kubectl: Kubectl) -> Iterator[Vibe]:
    """Both kubectl versions (1.37 and the image's 1.32): compatibility matters here."""
    runner = Vibe(sim_cluster, kubectl.path)
    yield runner
    runner.close()


@pytest.fixture
def vibe137(sim_cluster: SimCluster) -> Iterator[Vibe]:
    """Only the venv's kubectl: for our own features, which do not depend on its version."""
    path = venv_kubectl()
    if not path:
        pytest.skip("kubectl not installed")
    runner = Vibe(sim_cluster, path)
    yield runner
    runner.close()


def after_requests(
    sim: SimCluster, needle: str, count: int, action: Callable[[], Any], *more: Any
) -> None:
    """Run `action` once `count` new API requests containing `needle` (and each further
    (needle, count) pair) were made, e.g. once kubectl's watch and ours are both open: the
    state then changes *while* we wait, however slow the machine is."""
    start = len(sim.requests)
    wanted = [(needle, count), *more]

    def seen() -> bool:
        paths = [path for _, path in sim.requests[start:]]
        return all(sum(1 for path in paths if n in path) >= c for n, c in wanted)

    def later() -> None:
        try:
            sim.wait_for(seen, timeout=30)
        finally:
            action()

    threading.Thread(target=later, daemon=True).start()


def progress_lines(stderr: str) -> List[str]:
    return [line for line in stderr.splitlines() if line.startswith("[")]


# ---- kubectl's forms, with the state changing while we wait -----------------------------------


def test_condition_met_while_the_pod_starts(vibe: Vibe, sim_cluster: SimCluster):
    sim_cluster.add_pod("slow", start_delay=0.3, ready_delay=1.0)
    r = vibe.run("--for=condition=Ready", "pod/slow", "--timeout=20s", "--progress=plain")
    assert (r.returncode, r.stdout) == (0, "pod/slow condition met\n"), r.stderr
    lines = progress_lines(r.stderr)
    assert any(re.match(r"\[\d+s\] pod/slow: InProgress: ", line) for line in lines), lines
    assert re.match(r"\[\d+s\] pod/slow: Current \(met\): Pod is Ready$", lines[-1]), lines


def test_delete_jsonpath_and_create(vibe: Vibe, sim_cluster: SimCluster):
    sim_cluster.add_pod("doomed")
    sim_cluster.wait_for(lambda: sim_cluster.pods("doomed", ready=True))
    proc = vibe.start("--for=delete", "pod/doomed", "--timeout=20s", "--progress=plain")
    proc.wait_line(r"pod/doomed: Current: Pod is Ready", stream="stderr")  # we saw it alive

    def both_watching() -> bool:  # kubectl wait's watch and ours
        return sum("doomed" in w["fieldSelector"] for w in sim_cluster.watches("pods")) >= 2

    sim_cluster.wait_for(both_watching)
    sim_cluster.delete("pod", "doomed")  # then, while kubectl wait and we watch, it goes
    assert proc.wait() == 0, proc.err
    assert proc.stdout == ["pod/doomed condition met"], proc.err
    proc.wait_line(r"pod/doomed: NotFound \(met\)", stream="stderr")

    sim_cluster.add_pod("late-runner", start_delay=0.8)
    r = vibe.run("--for=jsonpath={.status.phase}=Running", "pod/late-runner", "--timeout=20s")
    assert (r.returncode, r.stdout) == (0, "pod/late-runner condition met\n"), r.stderr

    after_requests(sim_cluster, "/pods/born-later", 1, lambda: sim_cluster.add_pod("born-later"))
    r = vibe.run("--for=create", "pod/born-later", "--timeout=20s")
    assert (r.returncode, r.stdout) == (0, "pod/born-later condition met\n"), r.stderr


def test_several_resources_by_selector(vibe: Vibe, sim_cluster: SimCluster):
    for n, delay in enumerate((0.2, 0.8, 1.4)):
        sim_cluster.add_pod("sel-%d" % n, labels={"app": "sel"}, ready_delay=delay)
    sim_cluster.add_pod("other", labels={"app": "other"}, start_delay=60)
    r = vibe.run("pods", "-l", "app=sel", "--for=condition=Ready", "--timeout=20s",
                 "--progress=json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["pod/sel-%d condition met" % n for n in range(3)]
    records = [json.loads(line) for line in r.stderr.splitlines()]
    assert records[-1]["type"] == "result" and records[-1]["exit_code"] == 0
    statuses = [rec for rec in records if rec["type"] == "status"]
    assert {rec["resource"] for rec in statuses} == {"pod/sel-0", "pod/sel-1", "pod/sel-2"}
    assert {(rec["resource"], rec["status"]) for rec in statuses if rec["met"]} == {
        ("pod/sel-%d" % n, "Current") for n in range(3)
    }


def test_several_for_are_all_waited_on_any_kubectl(vibe: Vibe, sim_cluster: SimCluster):
    """kubectl ≤1.35 keeps only the last --for: we run one wait per --for, in 1.36's order."""
    sim_cluster.create_later(0.5, lambda: sim_cluster.add_pod("both", ready_delay=0.8))
    r = vibe.run("pod/both", "--for=condition=Ready", "--for=create", "--timeout=20s")
    assert (r.returncode, r.stdout) == (0, "pod/both condition met\n" * 2), r.stderr


def test_timeout_zero_checks_once_like_kubectl(vibe: Vibe, sim_cluster: SimCluster):
    sim_cluster.add_pod("ready-now")
    sim_cluster.add_pod("never", start_delay=60)
    sim_cluster.wait_for(lambda: "ready-now" in sim_cluster.pods(ready=True))
    r = vibe.run("--for=condition=Ready", "pod/ready-now", "--timeout=0")
    assert (r.returncode, r.stdout) == (0, "pod/ready-now condition met\n"), r.stderr
    r = vibe.run("--for=condition=Ready", "pod/never", "--timeout=0", "--progress=none")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("error: condition not met for pods/never\n"), r.stderr
    assert "pod/never in namespace default: InProgress" in r.stderr


def test_negative_timeout_waits_as_long_as_it_takes(vibe: Vibe, sim_cluster: SimCluster):
    sim_cluster.add_pod("eventually", ready_delay=1.0)
    r = vibe.run("--for=condition=Ready", "pod/eventually", "--timeout=-1s")
    assert (r.returncode, r.stdout) == (0, "pod/eventually condition met\n"), r.stderr


# ---- output identical to plain kubectl wait --------------------------------------------------


IDENTICAL_CASES = [
    ("pod/a", "--for=condition=Ready", "--timeout=10s"),
    ("pods", "--all", "--for=condition=Ready", "--timeout=10s"),
    ("pod/a", "pod/b", "--for=jsonpath={.status.phase}=Running", "-o", "name"),
    ("pod/a", "--for=condition=Ready", "-o", "jsonpath={.metadata.name}"),
    ("pod/a", "--for=condition=Bogus", "--timeout=1s"),
    ("pod/a", "pod/missing", "--for=condition=Ready", "--timeout=1s"),
    ("pods", "-l", "app=none", "--for=condition=Ready"),
    ("pod/a", "--for=ready"),
]


@pytest.mark.parametrize("args", IDENTICAL_CASES, ids=[" ".join(a) for a in IDENTICAL_CASES])
def test_output_is_kubectls_for_the_same_inputs(vibe: Vibe, sim_cluster: SimCluster, args):
    sim_cluster.add_pod("a")
    sim_cluster.add_pod("b")
    sim_cluster.wait_for(lambda: len(sim_cluster.pods(ready=True)) == 2)
    plain = vibe.kubectl_run("wait", *args)
    ours = vibe.run(*args, "--progress=none")
    assert (ours.returncode, ours.stdout) == (plain.returncode, plain.stdout), ours.stderr
    if plain.returncode == 0:
        assert ours.stderr == plain.stderr
    else:  # kubectl's error lines first, then (for a resource that exists) our explanation
        assert ours.stderr.startswith(plain.stderr), (plain.stderr, ours.stderr)


def test_flag_errors_are_kubectls_and_point_at_our_help(vibe: Vibe):
    """kubectl ≤1.32 capitalises cobra's "Error:"; the message itself is the same."""
    plain = vibe.kubectl_run("wait", "pod/a", "--for=condition=Ready", "--timeout=nope")
    ours = vibe.run("pod/a", "--for=condition=Ready", "--timeout=nope")
    assert (ours.returncode, ours.stdout) == (plain.returncode, plain.stdout) == (1, "")
    expected = 'error: invalid argument "nope" for "--timeout" flag: time: invalid duration "nope"'
    assert ours.stderr.splitlines()[0] == expected
    assert plain.stderr.splitlines()[0].lower() == expected.lower()
    assert ours.stderr.splitlines()[1].endswith(" wait -h' for help and examples")


# ---- beyond kubectl -------------------------------------------------------------------------


def stuck_rollout(sim: SimCluster) -> None:
    """Deployment web whose pods cannot start: its old pod never runs, the new one cannot pull."""
    sim.add_deployment("web", replicas=1, start_delay=120)
    sim.make_image_pull_backoff("deploy/web", "registry.invalid/web:nope")


def test_timeout_explains_the_stuck_pull_with_image_and_event(vibe137: Vibe, sim_cluster):
    stuck_rollout(sim_cluster)
    r = vibe137.run("deploy/web", "--for=condition=Available", "--timeout=3s", "--progress=none")
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0] == "error: timed out waiting for the condition on deployments/web", lines
    text = r.stderr
    assert "deployment.apps/web in namespace default: InProgress" in text
    assert "waiting for condition Available=true: Available=False" in text
    assert re.search(r"container app \(image registry\.invalid/web:nope\): ImagePullBackOff", text)
    assert re.search(r'event \d+s ago Warning Failed pod/web-\S+: Failed to pull image '
                     r'"registry\.invalid/web:nope"', text), text  # fmt: skip
    assert "next: kubectl describe deployment/web -n default" in text
    assert re.search(r"kubectl describe pod/web-\S+ -n default", text)


def test_fail_fast_stops_a_stuck_pull_early_with_exit_3(vibe137: Vibe, sim_cluster):
    stuck_rollout(sim_cluster)
    started = time.monotonic()
    r = vibe137.run("deploy/web", "--fail-fast", "--timeout=60s", "--progress=none")
    assert r.returncode == 3, r.stderr
    assert time.monotonic() - started < 30
    assert re.match(
        r"error: deployment\.apps/web failed: ImagePullBackOff on pod/web-\S+ \(--fail-fast\)\n",
        r.stderr,
    ), r.stderr
    assert "registry.invalid/web:nope" in r.stderr


def test_failed_job_fails_fast_while_kubectl_waits_for_complete(vibe137: Vibe, sim_cluster):
    sim_cluster.add_job("bad", duration=60)
    sim_cluster.create_later(0.5, lambda: sim_cluster.fail_job("bad"))
    r = vibe137.run("job/bad", "--for=condition=Complete", "--fail-fast", "--timeout=60s",
                    "--progress=none")  # fmt: skip
    assert (r.returncode, r.stdout) == (3, ""), r.stderr
    assert r.stderr.startswith(
        "error: job.batch/bad failed: Job Failed (BackoffLimitExceeded) (--fail-fast)\n"
    ), r.stderr
    assert "waiting for condition Complete=true: condition Complete is missing" in r.stderr
    assert "BackoffLimitExceeded pod/" in r.stderr or "BackoffLimitExceeded job/bad" in r.stderr


def test_without_for_the_kinds_own_readiness_decides(vibe137: Vibe, sim_cluster: SimCluster):
    sim_cluster.add_deployment("api", replicas=2, start_delay=0.3, ready_delay=0.8)
    sim_cluster.add_job("once", duration=1.0)
    r = vibe137.run("deploy/api", "job/once", "--timeout=20s", "--progress=plain")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "deployment.apps/api condition met\njob.batch/once condition met\n"
    assert re.search(r"deployment\.apps/api: InProgress: Ready 0/2", r.stderr), r.stderr


def test_readiness_timeout_is_worded_like_kubectl(vibe137: Vibe, sim_cluster: SimCluster):
    stuck_rollout(sim_cluster)
    r = vibe137.run("deploy/web", "--timeout=1s", "--progress=none")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("error: timed out waiting for the condition on deployments/web\n")
    assert "waiting for readiness: available and rolled out" in r.stderr


def test_wait_for_create_then_readiness(vibe137: Vibe, sim_cluster: SimCluster):
    plain = vibe137.kubectl_run("wait", "deploy/late", "--for=condition=Available")
    assert plain.returncode == 1 and "NotFound" in plain.stderr
    proc = vibe137.start("deploy/late", "--wait-for-create", "--timeout=20s", "--progress=plain")
    proc.wait_line(r"deploy/late: NotFound", stream="stderr")  # seen missing, then created
    sim_cluster.add_deployment("late", replicas=1)
    assert proc.wait() == 0, proc.err
    assert proc.stdout == ["deployment.apps/late condition met"]


def test_wait_for_create_works_on_kubectl_132_too(vibe: Vibe, sim_cluster: SimCluster):
    after_requests(sim_cluster, "/pods/later", 1,
                   lambda: sim_cluster.add_pod("later", ready_delay=0.3))  # fmt: skip
    r = vibe.run("pod/later", "--for=condition=Ready", "--wait-for-create", "--timeout=20s")
    assert (r.returncode, r.stdout) == (0, "pod/later condition met\n"), r.stderr


# ---- plain English ----------------------------------------------------------------------------


def test_plain_english_request_prints_the_kubectl_arguments_then_runs(vibe137: Vibe, sim_cluster):
    sim_cluster.add_pod("web-0", ready_delay=0.5)
    r = vibe137.run("for pod web-0 to be ready within 20 seconds", "--progress=none")
    assert (r.returncode, r.stdout) == (0, "pod/web-0 condition met\n"), r.stderr
    assert r.stderr.splitlines()[0] == (
        "→ kubectl wait pod/web-0 --for=condition=Ready --timeout=20s"
    )


def test_plain_english_dry_run_only_prints(vibe137: Vibe, sim_cluster: SimCluster):
    r = vibe137.run("for the web deployment in prod to be available, up to 5 minutes",
                    "--dry-run")  # fmt: skip
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == (
        "→ kubectl wait deployment/web -n prod --for=condition=Available --timeout=5m\n"
    )
    assert not any(path.startswith("/apis/apps") for _, path in sim_cluster.requests)


def test_plain_english_that_cannot_be_mapped_is_refused(vibe137: Vibe, sim_cluster):
    r = vibe137.run("for the web deployment to be healthy")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        "error: cannot turn this into kubectl wait arguments: understood kind=deployment "
        'name=web; did not understand "healthy"\n'
    )


def test_llm_command_answer_is_validated_and_used(vibe137: Vibe, sim_cluster, tmp_path):
    sim_cluster.add_pod("web-0")
    llm = tmp_path / "llm"
    answer = "kubectl wait pod/web-0 --for=condition=Ready --timeout=20s"
    llm.write_text('#!/bin/sh\necho "thinking about: $1" >&2\necho "%s"\n' % answer)
    llm.chmod(0o755)
    r = vibe137.run("pod web zero, ready please", "--llm", str(llm), "--progress=none")
    assert (r.returncode, r.stdout) == (0, "pod/web-0 condition met\n"), r.stderr
    assert "→ kubectl wait pod/web-0 --for=condition=Ready --timeout=20s" in r.stderr
    llm.write_text("#!/bin/sh\necho 'sure! the web pod should be ready soon'\n")
    r = vibe137.run("pod web zero, ready please", "--llm", str(llm))
    assert r.returncode == 1
    assert r.stderr.startswith("error: the --llm command's answer is not kubectl wait arguments")


# ---- progress: live view in a terminal ----------------------------------------------------------


def run_in_pty(vibe: Vibe, *args: str, timeout: float = 30) -> Dict[str, object]:
    """stderr on a pseudo-terminal (the live view), stdout on a pipe (kubectl's lines)."""
    master, slave = pty.openpty()
    env = dict(vibe.env, TERM="xterm-256color", COLUMNS="120", LINES="40")
    proc = subprocess.Popen([sys.executable, MODULE, "wait", *args], env=env,
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                screen.extend(chunk)
            elif proc.poll() is not None:
                break
        out = proc.stdout.read().decode() if proc.stdout else ""
        return {"rc": proc.wait(10), "stdout": out, "screen": screen.decode("utf-8", "replace")}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        if proc.stdout:
            proc.stdout.close()


def test_live_view_in_a_terminal(vibe137: Vibe, sim_cluster: SimCluster):
    pytest.importorskip("rich")  # without rich the view falls back to plain lines
    sim_cluster.add_deployment("web", replicas=2, start_delay=0.5, ready_delay=1.0)
    result = run_in_pty(vibe137, "deploy/web", "--for=condition=Available", "--timeout=20s")
    assert result["rc"] == 0
    assert result["stdout"] == "deployment.apps/web condition met\n"
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", str(result["screen"]))
    assert "RESOURCE" in screen and "STATUS" in screen
    assert "deployment.apps/web" in screen
    assert re.search(r"└ pod/web-\S+", screen), screen
    assert "waiting for condition Available=true" in screen
    assert "Current ✓" in screen


def test_interrupted_wait_is_never_a_success_and_leaves_no_kubectl(vibe137: Vibe, sim_cluster):
    psutil = pytest.importorskip("psutil")
    sim_cluster.add_pod("never", start_delay=120)
    proc = vibe137.start("pod/never", "--for=condition=Ready", "--timeout=60s", "--progress=plain")
    proc.wait_line(r"^\[\d+s\] pod/never: InProgress", stream="stderr")
    children = psutil.Process(proc.proc.pid).children(recursive=True)
    assert any("wait" in child.cmdline() for child in children)
    proc.proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 130
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


def test_readiness_prints_objects_with_kubectls_printer(vibe137: Vibe, sim_cluster: SimCluster):
    sim_cluster.add_deployment("api", replicas=1)
    sim_cluster.wait_for(lambda: sim_cluster.pods("api", ready=True))
    for output in (["-o", "name"], ["-o", "jsonpath={.metadata.name}"]):
        plain = vibe137.kubectl_run("wait", "deploy/api", "--for=condition=Available", *output)
        ours = vibe137.run("deploy/api", "--timeout=20s", "--progress=none", *output)
        assert (
            (ours.returncode, ours.stdout)
            == (plain.returncode, plain.stdout)
            == (
                0,
                plain.stdout,
            )
        )
    assert ours.stdout == "api"


def test_a_watch_that_ends_is_restarted_and_the_wait_goes_on(vibe137: Vibe, sim_cluster):
    psutil = pytest.importorskip("psutil")
    sim_cluster.add_pod("slowpoke", start_delay=60)
    proc = vibe137.start("pod/slowpoke", "--timeout=60s", "--progress=plain")
    proc.wait_line(r"^\[\d+s\] pod/slowpoke: InProgress", stream="stderr")

    def target_watches() -> List[Any]:
        found = []
        for child in psutil.Process(proc.proc.pid).children(recursive=True):
            try:
                if "--field-selector=metadata.name=slowpoke" in child.cmdline():
                    found.append(child)
            except psutil.Error:  # gone, or a zombie not reaped yet
                pass
        return found

    (first,) = target_watches()
    first.kill()
    sim_cluster.wait_for(lambda: [w for w in target_watches() if w.pid != first.pid], timeout=15)
    sim_cluster.set_phase("slowpoke", "Running")
    sim_cluster.set_condition("pod", "slowpoke", "Ready", "True")
    assert proc.wait(30) == 0, proc.err
    assert proc.out == "pod/slowpoke condition met"
