"""The simulated cluster (tests/simcluster.py) in its own process, shaped for the benchmark.

    python bench/sim_runner.py   → prints `ENV <json>`, `POD <name>`, `BACKENDS <json>`, then
                                   `PORT <api port>`

Deployment `bench` (1 replica) with container ports http 8080 (HTTP backend), echo 9000 and
sha256 9001; BACKENDS maps them to the loopback ports its backends listen on (the "direct to
the pod" baseline of the end-to-end rows). For the start-up and footprint rows: Service `web`
(80 → http 8080 of deployment `web`) and Services `s1` … `s20`, each with its own deployment
and pod, the same shape; for the discovery and stability rows (bench/stability.py) `s1` … `s20`
are labelled tier=many, and `s21` … `s30` join them under fleet=yes. Commands on stdin, one
per line:
    delete   delete the current pod; once its replacement is Ready print
             `READY <epoch seconds> <new pod> <deleted at epoch seconds>`
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(BENCH_DIR), "tests"))
sys.path.insert(0, BENCH_DIR)

from common import announce_port, raise_nofile  # noqa: E402
from sim_backends import Backend  # noqa: E402
from simcluster import ContainerPort, ServicePort, SimCluster  # noqa: E402

DEPLOYMENT = "bench"
PORTS = {"http": 8080, "echo": 9000, "sha256": 9001}
READY_TIMEOUT_S = 60.0
#: Services with one HTTP pod each: `web` for the time to the first Forwarding line, s1 … s20
#: for the 20-forward session (bench/footprint.py).
SERVICE_PORT, HTTP_PORT = 80, 8080
MANY_SERVICES = 20
FLEET_SERVICES = 30
SERVICES = ["web"] + ["s%d" % i for i in range(1, FLEET_SERVICES + 1)]


def service_labels(name: str) -> dict:
    """Labels of a Service: app=NAME, and for s1 … s30 fleet=yes (s1 … s20 also tier=many)."""
    labels = {"app": name}
    if name.startswith("s"):
        labels["fleet"] = "yes"
        if int(name[1:]) <= MANY_SERVICES:
            labels["tier"] = "many"
    return labels


def build(sim: SimCluster) -> str:
    sim.add_deployment(
        DEPLOYMENT,
        replicas=1,
        ports=[ContainerPort(name, port) for name, port in PORTS.items()],
        backends={8080: Backend.http(), 9000: Backend.echo(), 9001: Backend.sha256()},
    )
    for name in SERVICES:
        sim.add_deployment(
            name, ports=[ContainerPort("http", HTTP_PORT)], backends={HTTP_PORT: Backend.http()}
        )
        sim.add_service(name, {"app": name}, [ServicePort(SERVICE_PORT, "http", name="http")])
        sim.patch("svc", name, {"metadata": {"labels": service_labels(name)}})
    sim.wait_for(lambda: len(sim.pods(ready=True)) == len(SERVICES) + 1, READY_TIMEOUT_S)
    return sim.pods(DEPLOYMENT, ready=True)[0]


def backend_ports(sim: SimCluster, pod: str) -> dict:
    """Container port → the loopback port its backend listens on."""
    return {port: sim.backend(pod, port).port for port in PORTS.values()}


def replace_pod(sim: SimCluster) -> None:
    old = sim.pods(DEPLOYMENT, ready=True)[0]
    deleted = time.time()
    sim.delete_pod(old)

    def replacement() -> str:
        return next((p for p in sim.pods(DEPLOYMENT, ready=True) if p != old), "")

    new = sim.wait_for(replacement, READY_TIMEOUT_S)
    print("READY %.6f %s %.6f" % (time.time(), new, deleted), flush=True)


def main() -> None:
    raise_nofile()
    sim = SimCluster().start()
    signal.signal(signal.SIGTERM, lambda *_: (sim.stop(), os._exit(0)))
    pod = build(sim)
    print("ENV %s" % json.dumps(sim.env()), flush=True)
    print("POD %s" % pod, flush=True)
    print("BACKENDS %s" % json.dumps(backend_ports(sim, pod)), flush=True)
    announce_port(sim.port)
    for line in sys.stdin:
        if line.strip() == "delete":
            threading.Thread(target=replace_pod, args=(sim,), daemon=True).start()
    sim.stop()


if __name__ == "__main__":
    main()
