#!/usr/bin/env python3
"""Build the krew release: one shiv executable per platform, deterministic archives, checksums.

    python3 build/build.py                      # all four platforms → dist/, rewrites plugin.yaml
    python3 build/build.py --platform linux/amd64 --out /tmp/x --no-manifest

Reproducible: two builds of the same tree, from any directory, are byte-identical. Each platform
gets its own site-packages (psutil and PyYAML are compiled per OS/arch) resolved for the Python
3.9 ABI floor from build/requirements.lock, with everything that depends on the build machine
(paths, timestamps, pip's bookkeeping, file modes) stripped or fixed. Needs pip and shiv
(requirements-dev.txt); wheels are downloaded once into build/out/wheels and reused offline.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
MODULE = "kubectl_vibe_pf.py"
EXECUTABLE = "kubectl-vibe"
#: The oldest CPython the executable supports (stock macOS python3): dependencies are resolved
#: for it, and plugin.yaml's caveats say so.
PYTHON_FLOOR = "3.9"
#: (os, arch) → the wheel platform tag pip resolves for (the oldest OS the wheels accept:
#: PyYAML 6.0.3's Intel-mac wheels need macOS 10.13; psutil ships abi3 wheels for all four).
PLATFORMS: Dict[Tuple[str, str], str] = {
    ("linux", "amd64"): "manylinux2014_x86_64",
    ("linux", "arm64"): "manylinux2014_aarch64",
    ("darwin", "amd64"): "macosx_10_13_x86_64",
    ("darwin", "arm64"): "macosx_11_0_arm64",
}
#: Fixed timestamp for every zip and tar entry (1980-01-01, the zip epoch). Deliberately not the
#: commit time: plugin.yaml carries the archives' sha256 and is committed, and committing it must
#: not change the archives it describes.
SOURCE_DATE_EPOCH = 315532800
#: pip's per-install bookkeeping: records the build machine, not the software.
PIP_BOOKKEEPING = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")


def module_version(root: Path) -> str:
    """`__version__` from the module's source, without importing it (no dependency needed)."""
    match = re.search(r'^__version__ = "([^"]+)"$', (root / MODULE).read_text(), re.M)
    if not match:
        raise SystemExit("build: no __version__ in %s" % (root / MODULE))
    return match.group(1)


def archive_name(version: str, os_name: str, arch: str) -> str:
    return "%s_v%s_%s_%s.tar.gz" % (EXECUTABLE, version, os_name, arch)


def pip_args(platform_tag: str) -> List[str]:
    return [
        "--only-binary=:all:",
        "--platform",
        platform_tag,
        "--python-version",
        PYTHON_FLOOR,
        "--implementation",
        "cp",
        "--no-deps",  # the lock file is the full resolution
        "--require-hashes",
        "--disable-pip-version-check",
        "-q",
    ]


def install_dependencies(stage: Path, platform_tag: str, lock: Path, wheels: Path) -> None:
    """pip install into `stage` from the local wheel cache, downloading what is missing."""
    pip = [sys.executable, "-m", "pip"]
    offline = [
        *pip,
        "install",
        "--target",
        str(stage),
        "--no-index",
        "--find-links",
        str(wheels),
        "--no-compile",
        *pip_args(platform_tag),
        "-r",
        str(lock),
    ]
    if subprocess.run(offline, capture_output=True, env=_isolated_pip_env()).returncode == 0:
        return
    wheels.mkdir(parents=True, exist_ok=True)
    download = [*pip, "download", "--dest", str(wheels), *pip_args(platform_tag), "-r", str(lock)]
    subprocess.run(download, check=True)  # the user's pip settings: index, proxy, certificates
    shutil.rmtree(stage, ignore_errors=True)
    subprocess.run(offline, check=True, env=_isolated_pip_env())


def _isolated_pip_env() -> Dict[str, str]:
    """No pip.conf, no PIP_* settings: the install sees only our wheel cache, on every machine."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def normalize_stage(stage: Path, root: Path) -> None:
    """Make the site-packages depend only on its inputs: module in, machine-specific bits out."""
    shutil.copyfile(root / MODULE, stage / MODULE)
    shutil.rmtree(stage / "bin", ignore_errors=True)  # console scripts carry the build's python
    for cache in sorted(stage.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)
    for info in stage.glob("*.dist-info"):
        for name in PIP_BOOKKEEPING:
            (info / name).unlink(missing_ok=True)
    for path in [stage, *stage.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def build_executable(stage: Path, target: Path) -> None:
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH))
    # shiv copies the preamble with its mode, which the checkout's umask decided: fix it first.
    preamble = stage.parent / (stage.name + "-preamble") / "preamble.py"
    preamble.parent.mkdir(exist_ok=True)
    shutil.copyfile(Path(__file__).resolve().parent / "preamble.py", preamble)
    preamble.chmod(0o644)
    command = [
        sys.executable,
        "-m",
        "shiv",
        "--site-packages",
        str(stage),
        "--entry-point",
        "kubectl_vibe_pf:main",
        "--reproducible",
        # Byte-compile the site-packages once, at the first run's extraction: otherwise, where
        # PYTHONDONTWRITEBYTECODE is set (CI, some shells), every start recompiles the module.
        "--compile-pyc",
        "--preamble",
        str(preamble),
        "--python",
        "/usr/bin/env python3",
        "--output-file",
        str(target),
    ]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    target.chmod(0o755)


def _tar_member(name: str, data: bytes, mode: int) -> Tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = SOURCE_DATE_EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE  # krew refuses symlinks and hard links
    return info, io.BytesIO(data)


def write_archive(target: Path, executable: Path, license_file: Path) -> None:
    """A tar.gz that depends only on its two files' bytes (no names, owners or times)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(*_tar_member(EXECUTABLE, executable.read_bytes(), 0o755))
        tar.addfile(*_tar_member("LICENSE", license_file.read_bytes(), 0o644))
    with (
        target.open("wb") as out,
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz,
    ):
        gz.write(raw.getvalue())


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_platform(root: Path, out: Path, wheels: Path, os_name: str, arch: str) -> Path:
    version = module_version(root)
    stage = out / "stage" / ("%s_%s" % (os_name, arch))
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    install_dependencies(stage, PLATFORMS[os_name, arch], root / "build/requirements.lock", wheels)
    normalize_stage(stage, root)
    executable = out / "bin" / ("%s_%s" % (os_name, arch)) / EXECUTABLE
    executable.parent.mkdir(parents=True, exist_ok=True)
    build_executable(stage, executable)
    archive = out / archive_name(version, os_name, arch)
    write_archive(archive, executable, root / "LICENSE")
    return archive


def write_checksums(out: Path) -> Path:
    """SHA256SUMS for every archive in `out`, in `sha256sum -c` format."""
    archives = sorted(out.glob("%s_v*.tar.gz" % EXECUTABLE))
    sums = out / "SHA256SUMS"
    sums.write_text("".join("%s  %s\n" % (sha256_of(a), a.name) for a in archives))
    return sums


def rewrite_manifest(manifest: Path, version: str, archives: Dict[Tuple[str, str], Path]) -> None:
    """Point plugin.yaml at this version and these archives' sha256, keeping its layout."""
    text = manifest.read_text()
    text = re.sub(r"(?m)^(  version: )v\S+$", r"\g<1>v" + version, text)
    text = re.sub(r"/download/v[^/\s]+/", "/download/v%s/" % version, text)
    text = re.sub(r"%s_v[^_\s]+_" % EXECUTABLE, "%s_v%s_" % (EXECUTABLE, version), text)
    for archive in archives.values():
        pattern = r"(%s\s+sha256: )[0-9a-fA-F]*" % re.escape(archive.name)
        text, count = re.subn(pattern, r"\g<1>" + sha256_of(archive), text)
        if count != 1:
            raise SystemExit("build: %s has no uri/sha256 pair for %s" % (manifest, archive.name))
    manifest.write_text(text)


def _platform(spelled: str) -> Tuple[str, str]:
    if spelled != "host":
        os_name, arch = spelled.split("/")
        return os_name, arch
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    host = (platform.system().lower(), arch or machine)
    if host not in PLATFORMS:
        raise SystemExit("build: no kubectl-vibe build for this machine (%s/%s)" % host)
    return host


def check_shiv_modes() -> None:
    """shiv stores its bootstrap files with their installed modes, which the umask in force when
    the virtualenv was made decided; a group-writable install would change every archive."""
    try:
        import shiv.bootstrap
    except ImportError:
        raise SystemExit(
            "build: shiv is not installed for %s: use `make build` (it sets up .venv), or "
            "pip install -r requirements-dev.txt" % sys.executable
        ) from None

    for path in Path(shiv.bootstrap.__file__).parent.glob("*.py"):
        if path.stat().st_mode & 0o777 != 0o644:
            raise SystemExit(
                "build: %s has mode %o, not 644: recreate the virtualenv under `umask 022`"
                % (path, path.stat().st_mode & 0o777)
            )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--platform",
        action="append",
        choices=["%s/%s" % pair for pair in PLATFORMS] + ["host"],
        help="build only this os/arch, or this machine's (repeatable); default: all four",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output directory")
    parser.add_argument("--root", type=Path, default=ROOT, help="the source tree to build")
    parser.add_argument("--wheels", type=Path, default=None, help="wheel cache directory")
    parser.add_argument(
        "--no-manifest", action="store_true", help="do not rewrite plugin.yaml's sha256 values"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] = ()) -> int:
    args = parse_args(argv)
    os.umask(0o022)
    root = args.root.resolve()
    out = args.out.resolve()
    wheels = (args.wheels or root / "build/out/wheels").resolve()
    chosen = [_platform(p) for p in args.platform] if args.platform else list(PLATFORMS)
    check_shiv_modes()
    out.mkdir(parents=True, exist_ok=True)
    archives = {}
    for os_name, arch in chosen:
        archives[os_name, arch] = build_platform(root, out, wheels, os_name, arch)
        print("built %s" % archives[os_name, arch].relative_to(out.parent))
    shutil.rmtree(out / "stage")
    write_checksums(out)
    if not args.no_manifest and len(archives) == len(PLATFORMS):
        rewrite_manifest(root / "plugin.yaml", module_version(root), archives)
        print("updated %s" % (root / "plugin.yaml"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
