"""The command line: argv → flags or kubectl-style errors, help texts, dispatch, entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

import kubectl_vibe_pf as vibe
from tests import fake_kubectl

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "kubectl_vibe_pf.py"


def parse(argv: List[str], command: str = "wait") -> vibe.ParsedFlags:
    return vibe.FlagParser(vibe.COMMANDS_BY_NAME[command].flags, command).parse(argv)


def run_main(
    argv: List[str],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    argv0: str = "/home/me/.krew/bin/kubectl-vibe",
) -> tuple:
    monkeypatch.setattr(sys, "argv", [argv0, *argv])
    code = vibe.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def run_module(
    *args: str, env: Optional[dict] = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(MODULE), *args], capture_output=True, text=True, env=env, cwd=cwd
    )


# ---- kubectl's global flags: accepted anywhere after the command, forwarded unchanged ---------

GLOBAL_VALUE_FLAGS = [flag for flag in vibe.GLOBAL_FLAGS if flag.kind is not vibe.FlagKind.BOOL]
GLOBAL_BOOL_FLAGS = [flag for flag in vibe.GLOBAL_FLAGS if flag.kind is vibe.FlagKind.BOOL]
REQUIRED_GLOBALS = {
    "kubeconfig", "context", "cluster", "user", "namespace", "server", "token", "as", "as-group",
    "as-uid", "certificate-authority", "client-certificate", "client-key",
    "insecure-skip-tls-verify", "tls-server-name", "request-timeout", "cache-dir",
    "disable-compression", "v",
}  # fmt: skip


def test_every_kubectl_global_flag_is_known() -> None:
    assert REQUIRED_GLOBALS <= vibe.GLOBAL_FLAG_NAMES


@pytest.mark.parametrize("flag", GLOBAL_VALUE_FLAGS, ids=lambda flag: flag.long)
@pytest.mark.parametrize("form", ["--flag=value", "--flag value"])
def test_global_value_flag_is_forwarded_in_both_forms(flag: vibe.Flag, form: str) -> None:
    argv = ["--%s=val-1" % flag.long] if form == "--flag=value" else ["--" + flag.long, "val-1"]
    parsed = parse(["deploy/web", *argv, "--timeout=5s"])
    assert parsed.globals_argv == ["--%s=val-1" % flag.long]
    assert parsed.positionals == ["deploy/web"]
    assert parsed.get("timeout") == 5.0


@pytest.mark.parametrize("flag", GLOBAL_BOOL_FLAGS, ids=lambda flag: flag.long)
@pytest.mark.parametrize(
    ("spelled", "forwarded"), [("", "true"), ("=true", "true"), ("=false", "false"), ("=1", "true")]
)
def test_global_bool_flag_is_forwarded_with_its_value(
    flag: vibe.Flag, spelled: str, forwarded: str
) -> None:
    parsed = parse(["--" + flag.long + spelled, "pod/a"])
    assert parsed.globals_argv == ["--%s=%s" % (flag.long, forwarded)]
    assert parsed.positionals == ["pod/a"]


@pytest.mark.parametrize(
    ("argv", "namespace"),
    [
        (["-n", "x"], "x"),
        (["-nx"], "x"),
        (["-n=x"], "x"),
        (["--namespace", "x"], "x"),
        (["--namespace=x"], "x"),
        (["--namespace="], ""),
        (["-n", "a", "-n", "b"], "b"),  # the last one wins, as in pflag
    ],
)
def test_namespace_spellings(argv: List[str], namespace: str) -> None:
    parsed = parse(["pod/a", *argv])
    assert parsed.namespace == namespace
    assert parsed.globals_argv[-1] == "--namespace=" + namespace


@pytest.mark.parametrize(
    ("argv", "globals_argv"),
    [
        (["-v", "6"], ["--v=6"]),
        (["-v6"], ["--v=6"]),
        (["--v=6"], ["--v=6"]),
        (["-s", "https://k:6443"], ["--server=https://k:6443"]),
        (["--as-group", "a", "--as-group=b"], ["--as-group=a", "--as-group=b"]),
    ],
)
def test_short_and_repeated_globals(argv: List[str], globals_argv: List[str]) -> None:
    assert parse(argv).globals_argv == globals_argv


@pytest.mark.parametrize(
    ("argv", "values", "positionals"),
    [
        (["-A"], {"all-namespaces": True}, []),
        (["-A=false"], {"all-namespaces": False}, []),
        (["--all", "pods"], {"all": True}, ["pods"]),
        (["--all=false", "pods"], {"all": False}, ["pods"]),
        (["-Al", "app=web"], {"all-namespaces": True, "selector": "app=web"}, []),
        (["--for", "delete", "--for=create"], {"for": ["delete", "create"]}, []),
        (["-f", "a.yaml,b.yaml"], {"filename": ["a.yaml", "b.yaml"]}, []),
        (["--timeout", "1m30s"], {"timeout": 90.0}, []),
        (["--timeout=-1s"], {"timeout": -1.0}, []),
        (["pod/a", "--", "--timeout=3s", "-n"], {"timeout": 30.0}, ["pod/a", "--timeout=3s", "-n"]),
        (["-"], {}, ["-"]),
    ],
)
def test_command_flags(argv: List[str], values: dict, positionals: List[str]) -> None:
    parsed = parse(argv)
    for name, value in values.items():
        assert parsed.get(name) == value
    assert parsed.positionals == positionals


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nope"], "unknown flag: --nope"),
        (["--nope=1"], "unknown flag: --nope"),
        (["-x"], "unknown shorthand flag: 'x' in -x"),
        (["-Ax"], "unknown shorthand flag: 'x' in -Ax"),
        (["--timeout"], "flag needs an argument: --timeout"),
        (["-n"], "flag needs an argument: 'n' in -n"),
        (
            ["--timeout=soon"],
            'invalid argument "soon" for "--timeout" flag: time: invalid duration "soon"',
        ),
        (
            ["--all=maybe"],
            'invalid argument "maybe" for "--all" flag: strconv.ParseBool: parsing "maybe": '
            "invalid syntax",
        ),
    ],
)
def test_flag_errors_use_pflag_wording(argv: List[str], message: str) -> None:
    with pytest.raises(vibe.UsageError) as caught:
        parse(argv)
    assert caught.value.message == message
    assert caught.value.command == "wait"


# ---- Go durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("-0", 0.0),
        ("+0", 0.0),
        ("5s", 5.0),
        ("1m30s", 90.0),
        ("1h2m3.5s", 3723.5),
        ("-2h", -7200.0),
        ("+5m", 300.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("300ms", 0.3),
        ("2us", 2e-6),
        ("2µs", 2e-6),
        ("10ns", 1e-8),
        ("1h1h", 7200.0),
    ],
)
def test_go_duration_parses_like_time_parse_duration(text: str, seconds: float) -> None:
    assert vibe.parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", 'time: invalid duration ""'),
        ("-", 'time: invalid duration "-"'),
        (".", 'time: invalid duration "."'),
        ("s", 'time: invalid duration "s"'),
        ("x1s", 'time: invalid duration "x1s"'),
        ("1", 'time: missing unit in duration "1"'),
        ("30", 'time: missing unit in duration "30"'),
        ("1m5", 'time: missing unit in duration "1m5"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("1 s", 'time: unknown unit " s" in duration "1 s"'),
        ("5sec", 'time: unknown unit "sec" in duration "5sec"'),
    ],
)
def test_go_duration_errors_are_go_s(text: str, error: str) -> None:
    with pytest.raises(ValueError) as caught:
        vibe.parse_go_duration(text)
    assert str(caught.value) == error


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (30, "30s"),
        (60, "1m0s"),
        (90, "1m30s"),
        (7200, "2h0m0s"),
        (3723.5, "1h2m3.5s"),
        (1.5, "1.5s"),
        (61.25, "1m1.25s"),
        (0.3, "300ms"),
        (0.0015, "1.5ms"),
        (2e-6, "2µs"),
        (1e-8, "10ns"),
        (-90, "-1m30s"),
        (-0.5, "-500ms"),
    ],
)
def test_go_duration_formats_like_duration_string(seconds: float, text: str) -> None:
    assert vibe.format_go_duration(seconds) == text


# ---- program name and help ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv0", "prog"),
    [
        ("/home/me/.krew/bin/kubectl-vibe", "kubectl vibe"),
        ("kubectl-vibe", "kubectl vibe"),
        ("/tmp/kubectl-vibe.pyz", "kubectl vibe"),
        ("kubectl_vibe_pf.py", "python3 kubectl_vibe_pf.py"),
        ("/src/kubectl_vibe_pf.py", "python3 kubectl_vibe_pf.py"),
        ("-m", "python3 -m kubectl_vibe_pf"),
        ("", "python3 -m kubectl_vibe_pf"),
    ],
)
def test_program_name(argv0: str, prog: str) -> None:
    assert vibe.program_name(argv0) == prog


@pytest.mark.parametrize("command", vibe.COMMANDS, ids=lambda command: command.name)
@pytest.mark.parametrize("help_flag", ["-h", "--help"])
def test_help_of_each_command_names_the_plugin(
    command: vibe.Command, help_flag: str, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    code, out, err = run_main([command.name, help_flag], capsys, monkeypatch)
    assert (code, err) == (0, "")
    assert out.startswith(command.description.strip().splitlines()[0])
    assert "\nUsage:\n  kubectl vibe %s\n" % command.usage.splitlines()[0] in out
    examples = out.split("Examples:\n", 1)[1].split("\n\n" if not command.flags else "Options:")[0]
    assert "\n  kubectl vibe " in "\n" + examples
    assert "{prog}" not in out and "python3" not in out
    for flag in command.flags:
        assert "--%s=" % flag.long in out


def test_alias_help_is_the_command_help(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_main(["pf", "-h"], capsys, monkeypatch) == run_main(
        ["port-forward", "--help"], capsys, monkeypatch
    )


def test_help_command_shows_a_command_s_help(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_main(["help", "wait"], capsys, monkeypatch) == run_main(
        ["wait", "-h"], capsys, monkeypatch
    )


@pytest.mark.parametrize("argv", [[], ["-h"], ["--help"], ["help"]])
def test_root_help_lists_every_command(
    argv: List[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run_main(argv, capsys, monkeypatch)
    assert code == 0
    for command in vibe.COMMANDS:
        assert "\n  %s" % command.name in out
    assert 'Use "kubectl vibe <command> -h"' in out


def test_help_outside_plugin_mode_names_the_script(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out, _ = run_main(["wait", "-h"], capsys, monkeypatch, argv0="kubectl_vibe_pf.py")
    assert "Usage:\n  python3 kubectl_vibe_pf.py wait " in out


# ---- errors: one kubectl-style line, exit 1, never a traceback ----------------------------------


@pytest.mark.parametrize(
    ("argv", "stderr"),
    [
        (["frobnicate"], 'error: unknown command "frobnicate" for "kubectl vibe"\n'
                         "See 'kubectl vibe -h' for help and examples\n"),
        (["--nope"], "error: unknown flag: --nope\nSee 'kubectl vibe -h' for help and examples\n"),
        (["wait", "--nope"], "error: unknown flag: --nope\n"
                             "See 'kubectl vibe wait -h' for help and examples\n"),
        (["pf", "-Z"], "error: unknown shorthand flag: 'Z' in -Z\n"
                       "See 'kubectl vibe port-forward -h' for help and examples\n"),
        (["version", "-n"], "error: flag needs an argument: 'n' in -n\n"
                            "See 'kubectl vibe version -h' for help and examples\n"),
        (["wait", "--timeout=1"], 'error: invalid argument "1" for "--timeout" flag: '
                                  'time: missing unit in duration "1"\n'
                                  "See 'kubectl vibe wait -h' for help and examples\n"),
    ],
)  # fmt: skip
def test_usage_errors_are_kubectl_style(
    argv: List[str], stderr: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_main(argv, capsys, monkeypatch) == (1, "", stderr)


def test_version_flag_prints_one_line(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_main(["--version"], capsys, monkeypatch) == (
        0,
        "kubectl-vibe v%s\n" % vibe.__version__,
        "",
    )


CRASHING_VERSION = """
import sys
import kubectl_vibe_pf as vibe

async def crash(flags, prog):
    raise RuntimeError("the frobnicator broke")

vibe.run_version = crash
sys.exit(vibe.main(["version"]))
"""


def test_internal_error_is_one_line_without_traceback() -> None:
    env = {k: v for k, v in os.environ.items() if k != vibe.ENV_DEBUG}
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_VERSION], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 1
    assert done.stderr == (
        "error: internal error: RuntimeError: the frobnicator broke\n"
        "Run again with KUBECTL_VIBE_DEBUG=1 for a traceback, and please report it\n"
    )


def test_debug_variable_shows_the_traceback() -> None:
    env = dict(os.environ, KUBECTL_VIBE_DEBUG="1")
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_VERSION], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().endswith("RuntimeError: the frobnicator broke")


KUBECTL_OWN_LINES = [
    'Error from server (NotFound): pods "x" not found',
    "error: unable to forward port",
    "E1125 14:02:03.123456  42 portforward.go:413] lost connection to pod",
]


@pytest.mark.parametrize(
    ("stderr", "rendered"),
    [(line, line) for line in KUBECTL_OWN_LINES]
    + [
        ("Expected a pod", "error: Expected a pod"),
        ("dial tcp: connection refused", "error: dial tcp: connection refused"),
    ],
)
def test_kubectl_error_keeps_kubectl_s_own_prefix(stderr: str, rendered: str) -> None:
    assert vibe.KubectlError.from_stderr("noise\n" + stderr + "\n", 1).render() == rendered


# ---- entry points and the kubectl binary --------------------------------------------------------


@pytest.fixture
def fake_env(tmp_path: Path) -> dict:
    """An environment whose kubectl (through KUBECTL_PATH) is the fake, logging its argv."""
    fake = fake_kubectl.install(tmp_path)
    return dict(os.environ, KUBECTL_PATH=str(fake), FAKE_KUBECTL_LOG=str(tmp_path / "argv.jsonl"))


def test_version_forwards_every_global_flag_to_kubectl(fake_env: dict, tmp_path: Path) -> None:
    globals_argv = [
        "-n", "foo", "--context=bar", "--kubeconfig", "/k/config", "--cluster=c", "--user", "u",
        "-s", "https://127.0.0.1:6443", "--token=t", "--as", "admin", "--as-group=g1",
        "--as-group", "g2", "--as-uid=42", "--certificate-authority", "/ca.crt",
        "--client-certificate=/c.crt", "--client-key", "/c.key", "--insecure-skip-tls-verify",
        "--tls-server-name=k8s", "--request-timeout", "5s", "--cache-dir=/tmp/cache",
        "--disable-compression=true", "-v", "4",
    ]  # fmt: skip
    done = run_module("version", *globals_argv, env=fake_env)
    assert done.returncode == 0, done.stderr
    assert "kubectl v1.99.0-fake (%s)" % fake_env["KUBECTL_PATH"] in done.stdout
    (argv,) = fake_kubectl.recorded_argvs(tmp_path / "argv.jsonl")
    assert argv == [
        "version", "--client", "-o", "json",
        "--namespace=foo", "--context=bar", "--kubeconfig=/k/config", "--cluster=c", "--user=u",
        "--server=https://127.0.0.1:6443", "--token=t", "--as=admin", "--as-group=g1",
        "--as-group=g2", "--as-uid=42", "--certificate-authority=/ca.crt",
        "--client-certificate=/c.crt", "--client-key=/c.key", "--insecure-skip-tls-verify=true",
        "--tls-server-name=k8s", "--request-timeout=5s", "--cache-dir=/tmp/cache",
        "--disable-compression=true", "--v=4",
    ]  # fmt: skip


def test_kubectl_path_wins_over_path(fake_env: dict, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    fake_kubectl.install(other)
    env = dict(fake_env, PATH=str(other) + os.pathsep + fake_env["PATH"])
    assert vibe.find_kubectl(env) == fake_env["KUBECTL_PATH"]
    del env["KUBECTL_PATH"]
    assert vibe.find_kubectl(env) == str(other / "kubectl")


def test_missing_kubectl_is_one_error_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECTL_PATH"}
    env["PATH"] = str(tmp_path)  # no kubectl anywhere
    done = subprocess.run(
        [sys.executable, str(MODULE), "version"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 1
    assert done.stderr == "error: kubectl not found: install it or set KUBECTL_PATH\n"


@pytest.mark.parametrize(
    ("launcher", "prog"),
    [
        ([str(MODULE)], "python3 kubectl_vibe_pf.py"),
        (["-m", "kubectl_vibe_pf"], "python3 -m kubectl_vibe_pf"),
    ],
)
def test_module_runs_as_script_and_as_module(launcher: List[str], prog: str) -> None:
    done = subprocess.run(
        [sys.executable, *launcher, "--nope"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 1
    assert done.stderr == "error: unknown flag: --nope\nSee '%s -h' for help and examples\n" % prog
    version = subprocess.run(
        [sys.executable, *launcher, "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert version.stdout == "kubectl-vibe v%s\n" % vibe.__version__


def _old_pythons() -> List[Path]:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    return sorted(root.glob("3.[78].*/bin/python3"))


@pytest.mark.parametrize("python", _old_pythons(), ids=lambda path: path.parent.parent.name)
def test_older_python_gets_one_line(python: Path) -> None:
    done = subprocess.run([str(python), str(MODULE), "--version"], capture_output=True, text=True)
    version = python.parent.parent.name
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "error: kubectl-vibe needs Python 3.9 or newer (found %s)\n" % version
