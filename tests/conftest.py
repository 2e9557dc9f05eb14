"""Shared fixtures.  Keep generic: the simulated cluster lives in ``simcluster.py``."""

from __future__ import annotations

import os
from typing import Callable, Dict, Iterator, List

import pytest

from .kubectl_proc import IMAGE_KUBECTL, PF_TRANSPORT_ENV, Kubectl, kubectl_version, venv_kubectl
from .simcluster import SimCluster


@pytest.fixture(
    scope="session",
    params=[pytest.param("venv", id="kubectl-1.37"), pytest.param("image", id="kubectl-1.32")],
)
def kubectl_bin(request) -> str:
    """Path of a real kubectl: the venv's 1.37 and the image's 1.32 (skipped if absent, off CI)."""
    path = venv_kubectl() if request.param == "venv" else IMAGE_KUBECTL
    if not path or not os.access(path, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("kubectl (%s) not found" % request.param)
        pytest.skip("kubectl (%s) not installed" % request.param)
    return path


@pytest.fixture(scope="session")
def kubectl_versions() -> Dict[str, str]:
    return {}


@pytest.fixture(params=sorted(PF_TRANSPORT_ENV, reverse=True))
def pf_transport(request) -> str:
    """``websocket`` or ``spdy``; pass ``env=PF_TRANSPORT_ENV[pf_transport]`` to kubectl."""
    return request.param


@pytest.fixture
def sim_cluster() -> Iterator[SimCluster]:
    """A fresh simulated cluster per test (starts in milliseconds, stops all its threads)."""
    with SimCluster() as sim:
        yield sim


@pytest.fixture
def make_sim_cluster() -> Iterator[Callable[..., SimCluster]]:
    """Factory for clusters with options, e.g. ``make_sim_cluster(websockets=False)``."""
    made: List[SimCluster] = []

    def make(**options) -> SimCluster:
        sim = SimCluster(**options).start()
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.stop()


@pytest.fixture(scope="session")
def sim_cluster_session() -> Iterator[SimCluster]:
    """One cluster for a whole session: tests must use their own namespaces / names."""
    with SimCluster() as sim:
        yield sim


@pytest.fixture
def kubectl(
    sim_cluster: SimCluster, kubectl_bin: str, kubectl_versions: Dict[str, str], record_property
) -> Iterator[Kubectl]:
    """The real kubectl bound to ``sim_cluster``; background processes end at teardown."""
    if kubectl_bin not in kubectl_versions:
        kubectl_versions[kubectl_bin] = kubectl_version(kubectl_bin)
    k = Kubectl(kubectl_bin, kubectl_versions[kubectl_bin], sim_cluster.env())
    record_property("kubectl_version", k.version)
    try:
        yield k
    finally:
        k.close()


def pytest_report_header(config) -> List[str]:
    lines = []
    for label, path in (("venv", venv_kubectl()), ("image", IMAGE_KUBECTL)):
        if path and os.access(path, os.X_OK):
            lines.append("kubectl (%s): %s %s" % (label, path, kubectl_version(path)))
    return lines


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "e2e: drives real kubectl against the simulated cluster")
    config.addinivalue_line("markers", "slow: long transfers or many connections")
