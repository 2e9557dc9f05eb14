"""Start-up and footprint of `kubectl vibe pf` against the simulated cluster, each beside plain
kubectl measured in the same run:

- ready: time from process start to the first `Forwarding from 127.0.0.1:PORT -> 8080` line of
  `svc/web PORT:80`, for plain `kubectl port-forward`, the module run as
  `python3 kubectl_vibe_pf.py pf` and the built executable installed like krew and dispatched by
  real kubectl (`kubectl vibe pf`); runs interleaved, medians;
- footprint: one `kubectl vibe pf svc/s1 :80 … svc/s20 :80` session against 20 plain
  `kubectl port-forward`s of the same Services started at once: processes (by name), time until
  all 20 forwards printed their line, total PSS and RSS of every process, CPU while idle.

Every forward is checked with a request answered by its own Service's pod, and every process
tree must be gone once its root has exited (a straggler fails the row and is killed).
"""

from __future__ import annotations

import enum
import http.client
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from cluster import FORWARDING, Cluster, describe_process, tree_names
from common import REPO_ROOT, free_port
from executable import install_like_krew
from report import Row

STARTUP_SERVICE = "web"
MANY_SERVICES = ["s%d" % i for i in range(1, 21)]  # bench/sim_runner.py's s1 … s20
SERVICE_PORT, POD_PORT = 80, 8080
PREFERRED_LOCAL_PORT = 8080  # the issue's `svc/NAME 8080:80`
READY_TIMEOUT_S = 30.0
CHECK_TIMEOUT_S = 10.0
#: After the check requests, before the idle window: tunnels opened by the checks settle.
IDLE_SETTLE_S = 1.0
MB = 1e6
WATCHDOG = "sh"  # the plugin's lifeline: kills every child if the plugin is SIGKILLed


class Subject(enum.Enum):
    """What is started; the row names of the start-up ("ready") section."""

    KUBECTL = "kubectl port-forward"
    MODULE = "python3 kubectl_vibe_pf.py pf"
    EXECUTABLE = "kubectl vibe pf (built executable)"


#: The row names of the 20-forward ("footprint") section.
PLUGIN_SESSION = "kubectl vibe pf × 20 Services"
KUBECTL_SESSIONS = "20 × kubectl port-forward"


@dataclass(frozen=True)
class Launcher:
    """How a subject is started: the command before its TYPE/NAME PORT arguments."""

    subject: Subject
    argv: List[str]
    env: Dict[str, str]
    label: str


# ---- launchers --------------------------------------------------------------------------------


def user_env(env: Dict[str, str]) -> Dict[str, str]:
    """A user's environment: bytecode caching on (CI sets PYTHONDONTWRITEBYTECODE=1, which would
    recompile the plugin's imports on every start)."""
    out = dict(env)
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


def base_python() -> str:
    """The benchmark's interpreter without its virtualenv: a plain python3 like a user's."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def tools_dir(root: str, kubectl: str) -> str:
    """A PATH entry holding only `kubectl` and `python3` (what the executable's
    `#!/usr/bin/env python3` finds). Without it the venv's python3 would run the executable
    (its site-packages visible), or this machine's python3 on PATH, a pyenv shim: a bash
    script that adds ~0.1 s to every Python start."""
    path = os.path.join(root, "tools")
    os.makedirs(path, exist_ok=True)
    os.symlink(kubectl, os.path.join(path, "kubectl"))
    os.symlink(base_python(), os.path.join(path, "python3"))
    return path


def executable_env(cluster: Cluster, bindir: str, tools: str) -> Dict[str, str]:
    """cluster.env with the krew-like bin directory and the tools instead of the checkout's
    wrapper and the venv's bin directory."""
    env = user_env(cluster.env)
    dropped = {cluster.bindir, os.path.dirname(cluster.kubectl)}
    rest = [d for d in env.get("PATH", "").split(os.pathsep) if d not in dropped]
    env["PATH"] = os.pathsep.join([bindir, tools, *rest])
    return env


def launchers(cluster: Cluster, root: str, exe: Optional[str]) -> List[Launcher]:
    """Plain kubectl, the module as a script, and the built executable (installed like krew
    under `root`) when there is one."""
    env = user_env(cluster.env)
    module = os.path.join(REPO_ROOT, "kubectl_vibe_pf.py")
    out = [
        Launcher(Subject.KUBECTL, [cluster.kubectl, "port-forward"], env, cluster.kubectl),
        Launcher(Subject.MODULE, [sys.executable, module, "pf"], env, sys.executable),
    ]
    if exe:
        bindir = install_like_krew(exe, root)
        exe_env = executable_env(cluster, bindir, tools_dir(root, cluster.kubectl))
        label = "%s installed krew-like (bin/kubectl-vibe → store/), python3 = %s" % (
            os.path.relpath(exe, REPO_ROOT),
            base_python(),
        )
        argv = [cluster.kubectl, "vibe", "pf"]
        out.append(Launcher(Subject.EXECUTABLE, argv, exe_env, label))
    return out


def session_launcher(cluster: Cluster, found: List[Launcher]) -> Launcher:
    """The 20-forward session runs what users run: the built executable through kubectl, else
    the checkout's module through kubectl's plugin dispatch (cluster.py's PATH wrapper)."""
    for launcher in found:
        if launcher.subject is Subject.EXECUTABLE:
            return launcher
    argv = [cluster.kubectl, "vibe", "pf"]
    return Launcher(Subject.MODULE, argv, user_env(cluster.env), "kubectl_vibe_pf.py via kubectl")


# ---- forwards and their checks ----------------------------------------------------------------


def spawn(cluster: Cluster, launcher: Launcher, args: List[str]) -> subprocess.Popen:
    return cluster.spawn(
        [*launcher.argv, *args],
        env=launcher.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


def await_forwarding(procs: Sequence[subprocess.Popen], want: int) -> List[List[int]]:
    """Read every process's stdout until each printed `want` distinct
    `Forwarding from 127.0.0.1:LOCAL -> REMOTE` lines; their local ports, per process."""
    texts = {p.stdout.fileno(): "" for p in procs}
    seen: Dict[int, List[int]] = {fd: [] for fd in texts}
    waiting = set(texts)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while waiting and time.monotonic() < deadline:
        ready, _, _ = select.select(list(waiting), [], [], 0.2)
        for fd in ready:
            data = os.read(fd, 65536).decode(errors="replace")
            if not data:
                waiting.discard(fd)  # exited: reported below
                continue
            texts[fd] += data
            seen[fd] = sorted({int(local) for local, _ in FORWARDING.findall(texts[fd])})
            if len(seen[fd]) >= want:
                waiting.discard(fd)
    short = [p for p in procs if len(seen[p.stdout.fileno()]) < want]
    if short:
        proc = short[0]
        err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
        raise RuntimeError(
            "%d of %d did not print %d Forwarding line(s) within %gs: %r %s"
            % (len(short), len(procs), want, READY_TIMEOUT_S, texts[proc.stdout.fileno()], err)
        )
    return [seen[p.stdout.fileno()] for p in procs]


def served_by(port: int) -> str:
    """GET /healthz through a forward on a new connection; the deployment of the pod that
    answered (pods are named DEPLOYMENT-RSHASH-SUFFIX), or why none did."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CHECK_TIMEOUT_S)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read()
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return "no answer on %d: %s" % (port, exc)
    if response.status != 200 or body != b"ok\n":
        return "answer on %d: %d %r" % (port, response.status, body[:60])
    return (response.getheader("X-Pod") or "?").rsplit("-", 2)[0]


def local_port(preferred: int) -> int:
    """The issue's local port when it is free here, else any free one (asked before every run:
    another program may take 8080 meanwhile; which port it is does not change the timing)."""
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


# ---- time to the first Forwarding line --------------------------------------------------------


@dataclass(frozen=True)
class Run:
    seconds: float
    port: int
    failure: Optional[str] = None


def first_forward(cluster: Cluster, launcher: Launcher) -> Run:
    """One start of `… svc/web PORT:80`: seconds until its Forwarding line for PORT, then one
    request answered by the web pod, then a clean stop of the whole process tree."""
    port = local_port(PREFERRED_LOCAL_PORT)
    t0 = time.perf_counter()
    proc = spawn(cluster, launcher, ["svc/" + STARTUP_SERVICE, "%d:%d" % (port, SERVICE_PORT)])
    try:
        locals_ = await_forwarding([proc], 1)[0]
        seconds = time.perf_counter() - t0
    except RuntimeError as exc:
        cluster.stop_tree(proc)
        return Run(time.perf_counter() - t0, port, str(exc)[:300])
    answered = served_by(port)
    left = cluster.stop_tree(proc)
    if locals_ != [port]:
        return Run(seconds, port, "forwarded from %s, asked for %d" % (locals_, port))
    if answered != STARTUP_SERVICE:
        return Run(seconds, port, "served by %r, not the %s pod" % (answered, STARTUP_SERVICE))
    if left:
        return Run(seconds, port, "left running after exit: " + ", ".join(left))
    return Run(seconds, port)


def ready_row(launcher: Launcher, runs: List[Run]) -> Row:
    times = [r.seconds for r in runs if r.failure is None]
    failures = [r.failure for r in runs if r.failure]
    ports = sorted({r.port for r in runs})
    values: Dict[str, Any] = {"label": launcher.label, "runs": len(runs), "local_ports": ports}
    if times:
        values.update(median_s=statistics.median(times), min_s=min(times), max_s=max(times))
    row = Row("ready", launcher.subject.value, values, verified=not failures)
    if failures:
        row.error = "%d of %d runs failed: %s" % (len(failures), len(runs), failures[0])
    return row


def measure_ready(cluster: Cluster, found: List[Launcher], runs: int) -> List[Row]:
    """Every launcher `runs` times, interleaved (run r of each before run r+1 of any), after one
    untimed warm-up each (shiv unpacks its site-packages on an executable's first start;
    kubectl and Python fill their caches)."""
    for launcher in found:
        first_forward(cluster, launcher)
    results: Dict[Subject, List[Run]] = {launcher.subject: [] for launcher in found}
    for _ in range(runs):
        for launcher in found:
            results[launcher.subject].append(first_forward(cluster, launcher))
    return [ready_row(launcher, results[launcher.subject]) for launcher in found]


# ---- 20 forwards in one session ---------------------------------------------------------------


class Tree:
    """Processes measured together: roots and their descendants, snapshotted on demand."""

    def __init__(self, pids: Sequence[int]) -> None:
        import psutil

        self.roots = [psutil.Process(pid) for pid in pids]

    def members(self) -> List[Any]:
        out = []
        for root in self.roots:
            out.append(root)
            out.extend(root.children(recursive=True))
        return out

    def memory_mb(self) -> Dict[str, List[float]]:
        """[PSS, RSS] in MB per process name (kubectl by its verb), summed over the members of
        that name. PSS shares the pages the processes share (one kubectl binary's text among
        20 kubectls), so its sum is their real cost."""
        by_name: Dict[str, List[float]] = {}
        for proc in self.members():
            info = proc.memory_full_info()
            pss_rss = by_name.setdefault(describe_process(proc), [0.0, 0.0])
            pss_rss[0] += info.pss / MB
            pss_rss[1] += info.rss / MB
        return by_name

    def cpu_s(self, members: Sequence[Any]) -> float:
        """utime + stime of these members (a member that exited counts 0: reported by
        idle_cpu as a changed tree)."""
        import psutil

        total = 0.0
        for proc in members:
            try:
                total += sum(proc.cpu_times()[:2])
            except psutil.Error:
                pass
        return total


def idle_cpu(tree: Tree, seconds: float) -> Tuple[float, List[str]]:
    """(% of one core the tree used over `seconds` without traffic, processes that appeared or
    went away meanwhile)."""
    before = tree.members()
    cpu0, t0 = tree.cpu_s(before), time.monotonic()
    time.sleep(seconds)
    after = tree.members()
    wall = time.monotonic() - t0
    cpu = tree.cpu_s(before) - cpu0 + tree.cpu_s([p for p in after if p not in before])
    changed = [describe_process(p) for p in set(before) ^ set(after)]
    return 100.0 * cpu / wall, changed


def check_services(ports: List[int], expected: List[str]) -> Optional[str]:
    """Each port must be answered by the pod of the Service at the same index."""
    answered = [served_by(port) for port in ports]
    wrong = [
        "%d → %s (want %s)" % (p, a, e) for p, a, e in zip(ports, answered, expected) if a != e
    ]
    return "; ".join(wrong[:3]) if wrong else None


def footprint_values(tree: Tree, ready_s: float, idle_s: float) -> Dict[str, Any]:
    time.sleep(IDLE_SETTLE_S)
    cpu_pct, changed = idle_cpu(tree, idle_s)
    memory = tree.memory_mb()
    values: Dict[str, Any] = {
        "ready_s": ready_s,
        "pss_mb": sum(pss for pss, _ in memory.values()),
        "rss_mb": sum(rss for _, rss in memory.values()),
        "memory_mb": memory,
        "idle_cpu_pct": cpu_pct,
        "idle_s": idle_s,
    }
    if changed:
        values["changed_while_idle"] = changed
    return values


def plugin_session(cluster: Cluster, launcher: Launcher, idle_s: float) -> Row:
    """One `kubectl vibe pf svc/s1 :80 … svc/s20 :80`."""
    args = [a for name in MANY_SERVICES for a in ("svc/" + name, ":%d" % SERVICE_PORT)]
    row = Row("footprint", PLUGIN_SESSION, {"label": launcher.label, "forwards": 0})
    t0 = time.perf_counter()
    proc = spawn(cluster, launcher, args)
    try:
        ports = await_forwarding([proc], len(MANY_SERVICES))[0]
        ready_s = time.perf_counter() - t0
        # the plugin chooses the local ports (8080, 8081, … in argument order): which Service
        # a port reaches is told by the pod that answers, so compare as sets
        answered = sorted(served_by(port) for port in ports)
        row.values.update(footprint_values(Tree([proc.pid]), ready_s, idle_s))
        names = tree_names(proc.pid)
    except Exception as exc:
        row.error = "%s: %s" % (type(exc).__name__, exc)
        return row
    finally:
        left = cluster.stop_tree(proc)
    kubectls = [n for n in names if n.startswith("kubectl ")]
    row.values.update(
        forwards=len(ports),
        processes=names,
        process_count=len(names),
        not_watchdog=sum(n != WATCHDOG for n in names),
        kubectl_count=len(kubectls),
    )
    row.verified = answered == sorted(MANY_SERVICES) and len(ports) == len(MANY_SERVICES)
    if not row.verified:
        row.values["answered"] = answered
    if left:
        row.error = "left running after exit: " + ", ".join(left)
    return row


def kubectl_sessions(cluster: Cluster, launcher: Launcher, idle_s: float) -> Row:
    """20 plain `kubectl port-forward svc/sN :80`, started at once."""
    row = Row("footprint", KUBECTL_SESSIONS, {"label": launcher.label, "forwards": 0})
    t0 = time.perf_counter()
    procs = [
        spawn(cluster, launcher, ["svc/" + name, ":%d" % SERVICE_PORT]) for name in MANY_SERVICES
    ]
    left: List[str] = []
    try:
        ports = [p[0] for p in await_forwarding(procs, 1)]
        ready_s = time.perf_counter() - t0
        tree = Tree([p.pid for p in procs])
        wrong = check_services(ports, MANY_SERVICES)
        row.values.update(footprint_values(tree, ready_s, idle_s))
        names = [describe_process(p) for p in tree.members()]
    except Exception as exc:
        row.error = "%s: %s" % (type(exc).__name__, exc)
        return row
    finally:
        for proc in procs:
            left += cluster.stop_tree(proc)
    row.values.update(
        forwards=len(ports),
        processes=names,
        process_count=len(names),
        not_watchdog=len(names),
        kubectl_count=len(names),
    )
    row.verified = wrong is None
    if wrong:
        row.values["answered"] = wrong
    if left:
        row.error = "left running after exit: " + ", ".join(left)
    return row


def measure_footprint(cluster: Cluster, found: List[Launcher], idle_s: float) -> List[Row]:
    kubectl = next(launcher for launcher in found if launcher.subject is Subject.KUBECTL)
    return [
        plugin_session(cluster, session_launcher(cluster, found), idle_s),
        kubectl_sessions(cluster, kubectl, idle_s),
    ]


# ---- both sections ----------------------------------------------------------------------------


NO_EXECUTABLE = "no built executable (build/build.py --platform host failed or is missing)"


def measure_startup_and_footprint(
    cluster: Cluster, exe: Optional[str], runs: int, idle_s: float, stable_s: float
) -> List[Row]:
    """The "ready" rows, the "footprint" rows, then discovery and stability
    (bench/stability.py); the executable is installed like krew into a temporary root for the
    duration."""
    import stability

    root = tempfile.mkdtemp(prefix="vibe-bench-krew-")
    try:
        found = launchers(cluster, root, exe)
        rows = measure_ready(cluster, found, runs)
        if not exe:
            rows.append(Row("ready", Subject.EXECUTABLE.value, skipped=NO_EXECUTABLE))
        rows.extend(measure_footprint(cluster, found, idle_s))
        plugin = session_launcher(cluster, found)
        every = stability.interval_for(stable_s)
        rows.extend(
            stability.measure_discovery_and_stability(cluster, found, plugin, stable_s, every)
        )
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)
