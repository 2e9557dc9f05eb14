"""Shared pieces of the benchmark: the byte pattern, the tiny HTTP framing, helper processes.

Every path (direct, socat, reference relays, the plugin) carries the same bytes: minimal
HTTP/1.1 requests, so the plugin's HTTP sniffer has real traffic to look at when it is on.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Iterator, List, Optional, Sequence, Tuple

#: The bulk pattern repeats every PATTERN_SIZE bytes; stream offset o carries PATTERN[o % size].
PATTERN_SIZE = 1 << 20
#: Bytes compared at the start and end of every received chunk (the "sampled" check).
SAMPLE_BYTES = 64
#: Socket buffer for the sink/source/client sockets: big, so the endpoints are never the limit.
ENDPOINT_SOCKBUF = 4 << 20
#: Chunk the endpoints move per call.
ENDPOINT_CHUNK = 1 << 20
#: Size of one ping-pong message.
PING_SIZE = 64
#: Longest request head the server accepts.
MAX_HEAD = 16 << 10
#: How long a helper process may take to print its port.
SPAWN_TIMEOUT_S = 20.0
#: socat's transfer buffer (-b): the default 8 KiB would make socat, not the path, the limit.
SOCAT_BUFFER = 262144

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)


def make_pattern(size: int = PATTERN_SIZE, seed: int = 7) -> bytes:
    """The deterministic pseudo-random block every process agrees on."""
    rng = random.Random(seed)
    return rng.getrandbits(size * 8).to_bytes(size, "little")


PATTERN = make_pattern()
PATTERN2 = PATTERN + PATTERN  # lets a sample that wraps the block be compared with one slice


def sample_ok(chunk: memoryview, offset: int) -> bool:
    """Compare the head and tail of a chunk that starts at stream `offset` with the pattern."""
    n = len(chunk)
    k = min(SAMPLE_BYTES, n)
    start = offset % PATTERN_SIZE
    if chunk[:k] != PATTERN2[start : start + k]:
        return False
    tail = (offset + n - k) % PATTERN_SIZE
    return chunk[n - k :] == PATTERN2[tail : tail + k]


def raise_nofile(want: int = 16384) -> None:
    """1,000 relayed connections need ~2,000 descriptors in the relay and the client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, want), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def tune_endpoint(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ENDPOINT_SOCKBUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, ENDPOINT_SOCKBUF)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect(port: int, host: str = "127.0.0.1", tune: bool = True) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=60)
    if tune:
        tune_endpoint(sock)
    return sock


def recv_head(sock: socket.socket) -> Tuple[bytes, bytes]:
    """Read up to the blank line; returns (head, bytes already read past it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("peer closed before the end of the HTTP head")
        buf += data
        if b"\r\n\r\n" not in buf and len(buf) > MAX_HEAD:
            raise ConnectionError("HTTP head too long: %r" % buf[:80])
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the benchmark dies (Linux), so a killed run
    (e.g. a test timeout) leaves no relay, server, cluster or kubectl behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


CPU_DMA_LATENCY = "/dev/cpu_dma_latency"


@contextlib.contextmanager
def cpu_awake(enabled: bool = True) -> Iterator[bool]:
    """Keep CPUs out of deep idle states while held (the PM QoS interface latency benchmarks
    use: write 0 to /dev/cpu_dma_latency, keep it open). On this VM (cpuidle driver haltpoll) a
    halted vCPU takes ~40 µs to wake, which makes a round's ping-pong p50 bimodal (20 or 60 µs
    for a direct socket). Yields whether the hold is in effect (needs root and the device)."""
    fd = -1
    if enabled:
        try:
            fd = os.open(CPU_DMA_LATENCY, os.O_WRONLY)
            os.write(fd, struct.pack("i", 0))
        except OSError:
            if fd >= 0:
                os.close(fd)
            fd = -1
    try:
        yield fd >= 0
    finally:
        if fd >= 0:
            os.close(fd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = SPAWN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Helper:
    """A child process (server, relay, plugin runner) that prints `PORT <n>` once it listens."""

    def __init__(
        self, argv: Sequence[str], name: str, env: Optional[dict] = None, stdin: bool = False
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO_ROOT,
            preexec_fn=die_with_parent,
        )
        self.lines: List[str] = []  # what it printed before `PORT`
        self._pending = b""
        self.port = self._read_port()

    def read_line(self, timeout: float) -> Optional[str]:
        """The next stdout line (raw reads: a buffered reader would hide lines from select)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            data = os.read(fd, 65536)
            if not data:
                return None
            self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode(errors="replace")

    def _read_port(self) -> int:
        deadline = time.monotonic() + SPAWN_TIMEOUT_S
        while True:
            line = self.read_line(deadline - time.monotonic())
            if line is None:
                break
            if line.startswith("PORT "):
                return int(line.split()[1])
            self.lines.append(line)
        err = self.stop()
        raise RuntimeError("%s did not start: %s" % (self.name, err.strip()[-800:]))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> str:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
        return err or ""


def python_helper(script: str, args: List[str], name: str, stdin: bool = False) -> Helper:
    return Helper([sys.executable, os.path.join(BENCH_DIR, script), *args], name, stdin=stdin)


def announce_port(port: int) -> None:
    sys.stdout.write("PORT %d\n" % port)
    sys.stdout.flush()


# ---- socat, the reference relay ---------------------------------------------------------------


def ensure_socat() -> Optional[str]:
    """Returns why socat is unavailable, installing it from Debian packages when root."""
    if shutil.which("socat"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "socat missing and not root: apt-get install socat"
    print("installing socat (apt-get) …", file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
    done = subprocess.run(
        ["apt-get", "install", "-y", "socat"], env=env, capture_output=True, check=False
    )
    if shutil.which("socat"):
        return None
    return "apt-get install socat failed: %s" % done.stderr.decode(errors="replace")[-200:]


def spawn_socat(upstream: int) -> Tuple[subprocess.Popen, int]:
    """socat listening on a free loopback port (a fork per connection) in front of `upstream`;
    returns (process, its port) once it accepts connections."""
    port = free_port()
    argv = [
        "socat",
        "-b",
        str(SOCAT_BUFFER),
        "TCP4-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork,backlog=4096" % port,
        "TCP4:127.0.0.1:%d" % upstream,
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent
    )
    try:
        wait_listening(port)
    except OSError:
        stop_process(proc)
        raise
    return proc, port


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 5 s; always reaped."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
