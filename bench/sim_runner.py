"""The simulated cluster (tests/simcluster.py) in its own process, shaped for the benchmark.

    python bench/sim_runner.py   → prints `ENV <json>`, `POD <name>`, then `PORT <api port>`

Deployment `bench` (1 replica) with container ports http 8080 (HTTP backend), echo 9000 and
sha256 9001. Commands on stdin, one per line:
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
from simcluster import ContainerPort, SimCluster  # noqa: E402

DEPLOYMENT = "bench"
PORTS = {"http": 8080, "echo": 9000, "sha256": 9001}
READY_TIMEOUT_S = 60.0


def build(sim: SimCluster) -> str:
    sim.add_deployment(
        DEPLOYMENT,
        replicas=1,
        ports=[ContainerPort(name, port) for name, port in PORTS.items()],
        backends={8080: Backend.http(), 9000: Backend.echo(), 9001: Backend.sha256()},
    )
    return sim.wait_for(lambda: (sim.pods(DEPLOYMENT, ready=True) or [None])[0], READY_TIMEOUT_S)


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
    announce_port(sim.port)
    for line in sys.stdin:
        if line.strip() == "delete":
            threading.Thread(target=replace_pod, args=(sim,), daemon=True).start()
    sim.stop()


if __name__ == "__main__":
    main()
