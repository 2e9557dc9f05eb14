#!/usr/bin/env python3
"""The README demo: `kubectl vibe port-forward` of three Services on the simulated cluster.

Starts the simulated cluster's demo scenario (web, db, cache), a bounded traffic generator, and
`kubectl vibe pf svc/web <port>:80 svc/db <port>:5432 svc/cache <port>:6379` (one process, one
kubectl proxy, one live view) through the real kubectl found on PATH. While it runs, a web pod
is deleted (the forward moves to its replacement) and a container is OOM-killed (the view
correlates it with the pod's events). Ctrl-C ends it and prints the closing summary.

    python3 tools/demo.py [--duration SECONDS] [--no-faults]

Every process it starts is stopped when it ends. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(argv: List[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, **kwargs)


def stop(proc: Optional[subprocess.Popen]) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def start_cluster(workdir: str) -> tuple[subprocess.Popen, str, str]:
    kubeconfig = os.path.join(workdir, "kubeconfig")
    sim = start(
        [sys.executable, os.path.join(REPO, "tests", "simcluster.py"), "demo",
         "--kubeconfig", kubeconfig],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    line = sim.stdout.readline() if sim.stdout else ""
    if "admin=" not in line:
        stop(sim)
        raise SystemExit("error: the simulated cluster did not start: %s" % line.strip())
    admin = line.split("admin=", 1)[1].split()[0]
    return sim, kubeconfig, admin


def admin_call(admin: str, action: str, **params: str) -> dict:
    query = "&".join("%s=%s" % item for item in params.items())
    request = urllib.request.Request("%s/%s?%s" % (admin, action, query), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"{}")


def web_pods(admin: str) -> List[str]:
    with urllib.request.urlopen(admin + "/state", timeout=5) as response:
        state = json.loads(response.read())
    return sorted(pod["name"] for pod in state["pods"] if pod["name"].startswith("web-"))


def forwarded_pod(admin: str) -> Optional[str]:
    with urllib.request.urlopen(admin + "/state", timeout=5) as response:
        state = json.loads(response.read())
    open_tunnels = [t["pod"] for t in state.get("tunnels", []) if t.get("open")]
    return open_tunnels[-1] if open_tunnels else None


def inject_faults(admin: str, stop_event: threading.Event) -> None:
    """Scripted trouble: a pod deletion at 15 s, an OOM kill at 35 s."""
    if stop_event.wait(15):
        return
    pod = forwarded_pod(admin) or web_pods(admin)[0]
    admin_call(admin, "delete-pod", name=pod)
    if stop_event.wait(20):
        return
    pod = forwarded_pod(admin) or web_pods(admin)[0]
    admin_call(admin, "restart-container", pod=pod, reason="OOMKilled", exit_code="137")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=0, help="stop after N seconds (0: Ctrl-C)"
    )
    parser.add_argument("--no-faults", action="store_true", help="no pod deletion or OOM kill")
    args = parser.parse_args()
    kubectl = shutil.which("kubectl")
    if kubectl is None or shutil.which("kubectl-vibe") is None:
        print("error: kubectl and kubectl-vibe must be on PATH (run it through `make demo`)")
        return 1
    workdir = tempfile.mkdtemp(prefix="kubectl-vibe-demo-")
    sim = traffic = forward = None
    stop_event = threading.Event()
    try:
        sim, kubeconfig, admin = start_cluster(workdir)
        env = dict(os.environ, KUBECONFIG=kubeconfig, KUBECACHEDIR=os.path.join(workdir, "cache"))
        port, db_port, cache_port = free_port(), free_port(), free_port()
        print("simulated cluster up (kubeconfig %s); forwarding svc/web to 127.0.0.1:%d, svc/db "
              "to :%d, svc/cache to :%d" % (kubeconfig, port, db_port, cache_port))  # fmt: skip
        if not args.no_faults:
            print("in 15 s a web pod is deleted, in 35 s a container is OOM-killed: watch it heal")
        time.sleep(1)
        targets = ["svc/web", "%d:80" % port, "svc/db", "%d:5432" % db_port,
                   "svc/cache", "%d:6379" % cache_port]  # fmt: skip
        forward = start([kubectl, "vibe", "port-forward", *targets], env=env)
        traffic = start(
            [sys.executable, os.path.join(REPO, "tests", "traffic.py"), "--url",
             "http://127.0.0.1:%d" % port, "--duration", "600", "--rate", "8",
             "--concurrency", "3"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if not args.no_faults:
            threading.Thread(target=inject_faults, args=(admin, stop_event), daemon=True).start()
        return wait_for_forward(forward, args.duration)
    except KeyboardInterrupt:
        return 0
    finally:
        stop_event.set()
        stop(traffic)
        if forward is not None and forward.poll() is None:
            os.killpg(forward.pid, signal.SIGINT)
            try:
                forward.wait(10)
            except subprocess.TimeoutExpired:
                stop(forward)
        stop(sim)
        shutil.rmtree(workdir, ignore_errors=True)


def wait_for_forward(forward: subprocess.Popen, duration: float) -> int:
    """Until the user's Ctrl-C (which the forward gets too: it prints its summary) or duration."""
    try:
        return forward.wait(duration or None)
    except subprocess.TimeoutExpired:
        os.killpg(forward.pid, signal.SIGINT)
        return forward.wait(10)
    except KeyboardInterrupt:
        os.killpg(forward.pid, signal.SIGINT)
        return forward.wait(10)


if __name__ == "__main__":
    sys.exit(main())
