"""Shell completion: the hidden `__complete` protocol, its import cost, `completion install`.

(Completion through real `kubectl __complete vibe ...` is in test_packaging.py, where the
built executable and the krew layout exist.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

import kubectl_vibe_pf as vibe
from tests import fake_kubectl

ROOT = Path(__file__).resolve().parent.parent


def values(words: List[str]) -> List[str]:
    return [candidate.split("\t")[0] for candidate in vibe.completion_candidates(words)]


@pytest.fixture
def no_kubectl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBECTL_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))


@pytest.fixture
def fake_kubectl_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("KUBECTL_PATH", str(fake_kubectl.install(tmp_path)))
    monkeypatch.setenv("FAKE_KUBECTL_LOG", str(tmp_path / "argv.jsonl"))
    return tmp_path / "argv.jsonl"


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([""], ["port-forward", "pf", "wait", "version", "completion"]),
        ([], ["port-forward", "pf", "wait", "version", "completion"]),
        (["p"], ["port-forward", "pf"]),
        (["w"], ["wait"]),
        (["__"], []),  # the hidden command stays hidden
        (["nope", ""], []),
        (["version", ""], []),
        (["wait", "--fo"], ["--for"]),
        (["pf", "--addr"], ["--address"]),
        (["wait", "--namesp"], ["--namespace"]),
        (["wait", "-n"], ["-n"]),
        (["wait", "--for="], []),  # values of flags are not completed
        (["wait", "-n", ""], []),  # the cursor is -n's value, not TYPE/NAME
        (["wait", "pod/a", ""], []),  # only the first positional is TYPE/NAME
    ],
)
def test_completion_candidates(words: List[str], expected: List[str], no_kubectl: None) -> None:
    assert values(words) == expected


def test_every_visible_flag_of_a_command_is_offered() -> None:
    offered = set(values(["wait", "--"]))
    expected = {
        "--" + flag.long for flag in (*vibe.WAIT_FLAGS, *vibe.GLOBAL_FLAGS) if not flag.hidden
    }
    assert offered == expected | {"--help"}


def test_candidates_carry_a_one_line_description() -> None:
    (candidate,) = vibe.completion_candidates(["pf", "--pod-running"])
    value, description = candidate.split("\t")
    assert value == "--pod-running-timeout"
    assert description and "\n" not in description
    assert len(description) <= vibe.COMPLETION_DESCRIPTION_CHARS


def test_protocol_output_ends_with_the_no_file_directive(capsys: pytest.CaptureFixture) -> None:
    assert vibe.main(["__complete", "ver"]) == 0
    assert capsys.readouterr().out == "version\tPrint the kubectl-vibe version\n:4\n"


@pytest.mark.parametrize("command", ["pf", "port-forward", "wait"])
def test_first_positional_completes_type_name_through_kubectl(
    command: str, fake_kubectl_log: Path
) -> None:
    assert values([command, "-n", "prod", ""]) == [
        "pod/web-7d4b9c-x2x",
        "service/web",
        "deployment/web",
    ]
    assert values([command, "--context=c", "dep"]) == ["deployment/web"]
    argvs = fake_kubectl.recorded_argvs(fake_kubectl_log)
    assert argvs == [
        ["get", "pods,services,deployments", "-o", "name", "--namespace=prod"],
        ["get", "pods,services,deployments", "-o", "name", "--context=c"],
    ]


def test_type_name_completion_prints_only_the_directive_when_kubectl_fails(
    fake_kubectl_log: Path, capsys: pytest.CaptureFixture
) -> None:
    assert vibe.main(["__complete", "wait", "-n", "missing", ""]) == 0
    assert capsys.readouterr() == (":4\n", "")


def test_type_name_completion_without_kubectl_prints_only_the_directive(
    no_kubectl: None, capsys: pytest.CaptureFixture
) -> None:
    assert vibe.main(["__complete", "pf", ""]) == 0
    assert capsys.readouterr() == (":4\n", "")


HEAVY_MODULES = ("asyncio", "rich", "psutil", "yaml")
IMPORTS_AFTER = """
import sys
import kubectl_vibe_pf as vibe
code = vibe.main(%r)
sys.stdout.flush()
print(json.dumps([name for name in %r if name in sys.modules]), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["__complete", ""],
        ["__complete", "wait", "--f"],
        ["__complete", "pf", "-"],
        ["--version"],
        ["--help"],
        ["wait", "--help"],
    ],
)
def test_fast_paths_import_no_heavy_module(argv: List[str]) -> None:
    script = "import json\n" + IMPORTS_AFTER % (argv, HEAVY_MODULES)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert json.loads(done.stderr) == []


# ---- completion install -------------------------------------------------------------------------


@pytest.fixture
def krew_layout(tmp_path: Path) -> Path:
    """$KREW_ROOT with bin/kubectl-vibe → store/vibe/v0.1.0/kubectl-vibe."""
    store = tmp_path / "store" / "vibe" / "v0.1.0"
    store.mkdir(parents=True)
    (store / "kubectl-vibe").write_text("")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kubectl-vibe").symlink_to(store / "kubectl-vibe")
    return tmp_path


def test_install_writes_the_shim_next_to_the_plugin_as_invoked(
    krew_layout: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", [str(krew_layout / "bin" / "kubectl-vibe")])
    monkeypatch.setenv("PATH", str(krew_layout / "bin"))
    assert vibe.main(["completion", "install"]) == 0
    shim = krew_layout / "bin" / "kubectl_complete-vibe"
    assert shim.read_text() == '#!/bin/sh\nexec kubectl vibe __complete "$@"\n'
    assert shim.stat().st_mode & 0o777 == 0o755
    out = capsys.readouterr().out
    assert out.startswith("Installed %s\n" % shim)
    assert "not on your PATH" not in out
    assert not (krew_layout / "store" / "vibe" / "v0.1.0" / "kubectl_complete-vibe").exists()


def test_install_into_a_given_directory_replaces_an_old_shim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["kubectl_vibe_pf.py"])
    monkeypatch.setenv("PATH", "/usr/bin")
    (tmp_path / "kubectl_complete-vibe").write_text("old")
    assert vibe.main(["completion", "install", str(tmp_path)]) == 0
    assert (tmp_path / "kubectl_complete-vibe").read_text() == vibe.COMPLETION_SHIM
    assert "note: %s is not on your PATH" % tmp_path in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kubectl_complete-vibe"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["completion"], 'completion needs an action: "completion install [DIR]"'),
        (["completion", "bash"], 'unknown completion action "bash"'),
        (["completion", "install", "a", "b"], "completion install takes at most one DIR, got b"),
        (
            ["completion", "install"],
            "completion install needs a DIR on your PATH when not run as a kubectl plugin",
        ),
    ],
)
def test_install_usage_errors(
    argv: List[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["kubectl_vibe_pf.py"])
    assert vibe.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: " + message)
    assert err.endswith("See 'python3 kubectl_vibe_pf.py completion -h' for help and examples\n")


def test_install_into_an_unwritable_directory_says_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def refuse(source: str, target: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(vibe.os, "replace", refuse)  # root may write anywhere: simulate it
    assert vibe.main(["completion", "install", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(
        "error: cannot write %s/kubectl_complete-vibe: Permission denied\nFix: " % tmp_path
    )
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_install_into_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert vibe.main(["completion", "install", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == "error: directory %s does not exist\n" % (tmp_path / "nope")
