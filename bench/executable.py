"""The built kubectl-vibe executable (shiv, `make build`) for the host, and a krew-like install
of it: the bench measures what users run, not only the module in this checkout."""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from typing import Optional

from common import REPO_ROOT

BENCH_BUILD_DIR = os.path.join(REPO_ROOT, "build", "out", "bench")
EXECUTABLE = "kubectl-vibe"


def built_executable() -> Optional[str]:
    """A kubectl-vibe executable from `make build` (dist/) or from an earlier bench build,
    if it is not older than the module."""
    module_mtime = os.path.getmtime(os.path.join(REPO_ROOT, "kubectl_vibe_pf.py"))
    for top in (os.path.join(REPO_ROOT, "dist"), os.path.join(BENCH_BUILD_DIR, "bin")):
        for root, _dirs, files in os.walk(top):
            candidate = os.path.join(root, EXECUTABLE)
            if (
                EXECUTABLE in files
                and os.path.basename(root) == host_platform_tag()  # not another OS/arch's
                and os.access(candidate, os.X_OK)
                and os.path.getmtime(candidate) >= module_mtime
            ):
                return candidate
    return None


def host_platform_tag() -> str:
    """The build's name for this machine, e.g. linux_amd64."""
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    system = "darwin" if sys.platform == "darwin" else "linux"
    return "%s_%s" % (system, arch.get(platform.machine().lower(), platform.machine().lower()))


def build_executable() -> Optional[str]:
    """Build the host executable (build/build.py; ~2 s once its wheels are cached)."""
    script = os.path.join(REPO_ROOT, "build", "build.py")
    if not os.path.exists(script):
        return None
    argv = [sys.executable, script, "--platform", "host", "--no-manifest", "--out", BENCH_BUILD_DIR]
    subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, check=False)
    return built_executable()


def current_executable(build: bool) -> Optional[str]:
    """The host executable, built on the fly (when allowed) if none is as new as the module."""
    return built_executable() or (build_executable() if build else None)


def shebang_python(path: str) -> str:
    with open(path, "rb") as f:
        first = f.readline().decode(errors="replace").strip()
    if first.startswith("#!"):
        words = first[2:].split()
        if words and words[0].endswith("/env") and len(words) > 1:
            return shutil.which(words[-1]) or sys.executable
        if words:
            return words[0]
    return sys.executable


def host_archive(executable: str) -> Optional[str]:
    """The release archive built beside `executable` (OUT/bin/<os_arch>/kubectl-vibe →
    OUT/kubectl-vibe_v*_<os_arch>.tar.gz), if it is not older than the executable."""
    out = os.path.dirname(os.path.dirname(os.path.dirname(executable)))
    pattern = os.path.join(out, "%s_v*_%s.tar.gz" % (EXECUTABLE, host_platform_tag()))
    fresh = [a for a in glob.glob(pattern) if os.path.getmtime(a) >= os.path.getmtime(executable)]
    return max(fresh, key=os.path.getmtime) if fresh else None


def install_like_krew(executable: str, root: str) -> str:
    """Install as `make demo` (and krew) does: the archive unpacked into ROOT/store, a
    ROOT/bin/kubectl-vibe symlink into it. Returns ROOT/bin, the directory to put on PATH.
    Without an archive the executable itself is linked (same bytes, no unpacking)."""
    store, bindir = os.path.join(root, "store"), os.path.join(root, "bin")
    os.makedirs(store, exist_ok=True)
    os.makedirs(bindir, exist_ok=True)
    archive = host_archive(executable)
    target = os.path.abspath(executable)
    if archive:
        with tarfile.open(archive) as tar:
            data = tar.extractfile(EXECUTABLE)  # the archive holds kubectl-vibe and LICENSE
            payload = data.read() if data else b""
        with open(os.path.join(store, EXECUTABLE), "wb") as dst:
            dst.write(payload)
        os.chmod(os.path.join(store, EXECUTABLE), 0o755)
        target = os.path.join("..", "store", EXECUTABLE)
    os.symlink(target, os.path.join(bindir, EXECUTABLE))
    return bindir
