"""The README's demo runs: simulated cluster, traffic, `kubectl vibe pf` through real kubectl."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import venv_kubectl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.e2e
def test_the_demo_forwards_real_traffic_and_ends_with_a_summary(tmp_path) -> None:
    shim = tmp_path / "kubectl-vibe"
    shim.write_text(
        '#!/bin/sh\nexec "%s" "%s" "$@"\n'
        % (sys.executable, os.path.join(REPO, "kubectl_vibe_pf.py"))
    )
    shim.chmod(0o755)
    kubectl_dir = os.path.dirname(venv_kubectl())
    env = dict(os.environ, PATH=os.pathsep.join([str(tmp_path), kubectl_dir, os.environ["PATH"]]))

    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "demo.py"), "--duration", "6", "--no-faults"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "Forwarding from 127.0.0.1:" in done.stdout and "-> 8080" in done.stdout
    assert "kubectl vibe port-forward: " in done.stderr
    assert "HTTP: " in done.stderr and " requests" in done.stderr
