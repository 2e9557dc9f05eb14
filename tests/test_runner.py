"""KubectlRunner, the only place that starts processes, driven against a fake kubectl."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

import psutil
import pytest

import kubectl_vibe_pf as vibe
from tests import fake_kubectl

ROOT = Path(__file__).resolve().parent.parent
#: Upper bound for things that take milliseconds: a guard against hanging, not a measurement.
PATIENCE_S = 30.0


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    return fake_kubectl.install(tmp_path)


@pytest.fixture
async def runner(fake: Path, tmp_path: Path):
    env = dict(os.environ, FAKE_KUBECTL_LOG=str(tmp_path / "argv.jsonl"))
    runner = vibe.KubectlRunner(str(fake), ["--context=ctx", "-n=ns"], env=env)
    yield runner
    await runner.close(grace=0.5)


class Collector:
    """Records every line a child prints, and can wait for one."""

    def __init__(self) -> None:
        self.lines: List[Tuple[vibe.Stream, str]] = []
        self._seen = asyncio.Event()

    def __call__(self, stream: vibe.Stream, line: str) -> None:
        self.lines.append((stream, line))
        self._seen.set()

    async def wait_for(self, text: str) -> None:
        while not any(line == text for _, line in self.lines):
            self._seen.clear()
            await asyncio.wait_for(self._seen.wait(), PATIENCE_S)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ---- run-and-capture ----------------------------------------------------------------------------


async def test_run_captures_both_streams_and_appends_global_flags(
    runner: vibe.KubectlRunner, fake: Path, tmp_path: Path
) -> None:
    done = await runner.run(["version", "--client", "-o", "json"])
    assert done.returncode == 0
    assert '"gitVersion": "v1.99.0-fake"' in done.stdout
    assert done.argv == (str(fake), "version", "--client", "-o", "json", "--context=ctx", "-n=ns")
    assert fake_kubectl.recorded_argvs(tmp_path / "argv.jsonl") == [list(done.argv[1:])]


async def test_get_json_parses_kubectl_output(runner: vibe.KubectlRunner) -> None:
    assert await runner.get_json(["pods"]) == {"kind": "List", "items": []}


async def test_get_json_failure_is_kubectl_s_last_stderr_line_and_exit_code(
    runner: vibe.KubectlRunner,
) -> None:
    with pytest.raises(vibe.KubectlError) as caught:
        await runner.get_json(["pods", "missing"])
    assert caught.value.render() == 'Error from server (NotFound): pods "missing" not found'
    assert caught.value.exit_code == 1
    assert "retrying" in caught.value.stderr


async def test_failed_run_keeps_kubectl_s_exit_code(runner: vibe.KubectlRunner) -> None:
    done = await runner.run(["fail", "7"])
    with pytest.raises(vibe.KubectlError) as caught:
        done.check()
    assert (caught.value.exit_code, caught.value.render()) == (7, "error: the last line says why")


async def test_run_timeout_kills_kubectl_and_explains(runner: vibe.KubectlRunner) -> None:
    with pytest.raises(vibe.VibeError) as caught:
        await runner.run(["sleep"], timeout=0.5)
    assert caught.value.render().startswith("error: kubectl sleep did not answer within 500ms")


async def test_missing_binary_is_kubectl_not_found(tmp_path: Path) -> None:
    runner = vibe.KubectlRunner(str(tmp_path / "no-kubectl"))
    with pytest.raises(vibe.KubectlNotFound):
        await runner.run(["version"])
    await runner.close()


# ---- long-running children ----------------------------------------------------------------------


async def test_stream_delivers_lines_from_both_pipes_in_order(
    runner: vibe.KubectlRunner,
) -> None:
    lines = Collector()
    child = await runner.start(["lines", "6"], lines)
    assert await asyncio.wait_for(child.wait(), PATIENCE_S) == 0
    out = [text for stream, text in lines.lines if stream is vibe.Stream.STDOUT]
    err = [text for stream, text in lines.lines if stream is vibe.Stream.STDERR]
    assert out == ["line 0", "line 2", "line 4"]
    assert err == ["line 1", "line 3", "line 5"]


async def test_a_line_over_the_limit_is_cut_and_draining_goes_on(
    runner: vibe.KubectlRunner,
) -> None:
    lines = Collector()
    size = vibe.KUBECTL_LINE_LIMIT_BYTES + 512 * 1024
    child = await runner.start(["long-line", str(size)], lines)
    assert await asyncio.wait_for(child.wait(), PATIENCE_S) == 0
    out = [text for stream, text in lines.lines if stream is vibe.Stream.STDOUT]
    assert out == ["x" * vibe.KUBECTL_LINE_LIMIT_BYTES, "after"]
    assert (vibe.Stream.STDERR, "after") in lines.lines


async def test_lots_of_output_on_both_pipes_never_blocks_the_child(
    runner: vibe.KubectlRunner,
) -> None:
    counts = {vibe.Stream.STDOUT: 0, vibe.Stream.STDERR: 0}

    def count(stream: vibe.Stream, line: str) -> None:
        counts[stream] += 1

    child = await runner.start(["flood", "8"], count)
    assert await asyncio.wait_for(child.wait(), PATIENCE_S) == 0
    expected = 8 * 1024 * 1024 // 100
    assert counts == {vibe.Stream.STDOUT: expected, vibe.Stream.STDERR: expected}


async def test_raw_stdout_mode_delivers_every_byte(runner: vibe.KubectlRunner) -> None:
    chunks: List[bytes] = []
    child = await runner.start(["flood", "1"], lambda stream, line: None, chunks.append)
    assert await asyncio.wait_for(child.wait(), PATIENCE_S) == 0
    assert len(b"".join(chunks)) == 1024 * 1024 // 100 * 100


async def test_a_failing_handler_does_not_block_the_child_and_is_raised_by_wait(
    runner: vibe.KubectlRunner,
) -> None:
    def broken(stream: vibe.Stream, line: str) -> None:
        raise LookupError("handler bug")

    child = await runner.start(["flood", "2"], broken)
    with pytest.raises(LookupError):
        await asyncio.wait_for(child.wait(), PATIENCE_S)
    assert child.returncode == 0


async def test_stop_sends_sigterm_first(runner: vibe.KubectlRunner) -> None:
    lines = Collector()
    child = await runner.start(["sleep"], lines)
    await lines.wait_for("ready")
    assert await child.stop(grace=PATIENCE_S) == -signal.SIGTERM
    assert await child.stop() == -signal.SIGTERM  # stopping twice is harmless


async def test_stop_sends_sigkill_when_sigterm_is_ignored(runner: vibe.KubectlRunner) -> None:
    lines = Collector()
    child = await runner.start(["ignore-term"], lines)
    await lines.wait_for("ready")
    assert await child.stop(grace=0.3) == -signal.SIGKILL


async def test_close_stops_every_child(runner: vibe.KubectlRunner) -> None:
    lines = Collector()
    children = [await runner.start(["sleep"], lines), await runner.start(["ignore-term"], lines)]
    while len(lines.lines) < 2:
        await asyncio.sleep(0.01)
    assert len(runner.live) == 2
    await runner.close(grace=0.3)
    assert [child.returncode for child in children] == [-signal.SIGTERM, -signal.SIGKILL]
    assert runner.live == []
    assert psutil.Process().children(recursive=True) == []  # the lifeline watchdog too


async def test_children_started_at_once_share_one_lifeline_group(
    runner: vibe.KubectlRunner,
) -> None:
    lines = Collector()
    children = await asyncio.gather(*(runner.start(["sleep"], lines) for _ in range(4)))

    groups = {os.getpgid(child.pid) for child in children}
    watchdogs = [p for p in psutil.Process().children() if p.pid not in {c.pid for c in children}]
    assert len(groups) == 1 and len(watchdogs) == 1
    assert groups == {watchdogs[0].pid}
    await runner.close(grace=0.3)
    assert psutil.Process().children(recursive=True) == []


# ---- no orphan, even when we are SIGKILLed ------------------------------------------------------

ORPHANING_PARENT = """
import asyncio, sys
import kubectl_vibe_pf as vibe

async def main():
    runner = vibe.KubectlRunner(sys.argv[1])
    started = asyncio.Event()
    child = await runner.start(["sleep"], lambda stream, line: started.set())
    await started.wait()
    print(child.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize("lifelines", ["watchdog and PDEATHSIG", "watchdog only"])
def test_no_orphan_kubectl_after_the_parent_is_sigkilled(
    fake: Path, lifelines: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = ORPHANING_PARENT
    if lifelines == "watchdog only":  # macOS has no PR_SET_PDEATHSIG: the watchdog must suffice
        script = script.replace(
            "import kubectl_vibe_pf as vibe",
            "import kubectl_vibe_pf as vibe\n"
            "vibe._ChildLifeline._load_prctl = staticmethod(lambda: None)",
        )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(fake)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        kubectl_pid = int(parent.stdout.readline())
        assert not gone(kubectl_pid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5.0
        while not gone(kubectl_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(kubectl_pid), "kubectl %d outlived its SIGKILLed parent" % kubectl_pid
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
