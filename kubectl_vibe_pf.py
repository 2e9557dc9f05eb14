#!/usr/bin/env python3
"""kubectl-vibe: `kubectl port-forward` and `kubectl wait`, observable, resilient, self-explaining.

One stdlib-first asyncio module. Runtime dependencies (rich, psutil, pyyaml) are imported
lazily, only by the code that needs them, so `--version`, `--help` and shell completion stay
as fast as a bare interpreter.

Map (sections in data-flow order: argv → options → targets → cluster → tunnel → proxy → display):

  §01 Header & compatibility    Python floor, version, cheap stdlib imports
  §02 Constants & limits        every tunable and buffer bound, with its reason
  §03 Errors                    VibeError tree; kubectl-style wording and exit codes
  §04 Utilities                 Go durations, human units, streaming JSON decoder
  §05 Flags                     pflag-compatible parser; kubectl global flags
  §06 Commands & help           the command table, usage texts, plugin-mode detection
  §07 port-forward arguments    TYPE/NAME PORTS... (several targets), addresses (pure)
  §08 Targets                   selectors, pod choice, service → container port (pure)
  §09 kubectl output            Forwarding/Handling lines, klog errors, classification (pure)
  §10 Cluster protocols         HTTP/1.1 to kubectl proxy, API errors in kubectl's words,
                                SPDY/3.1 frames and header blocks, list+watch cache (sans-IO)
  §11 Protocol sniffers         sans-IO, bytes in, events out: HTTP/1, HTTP/2+gRPC, TLS,
                                Postgres, Redis, MySQL; per-forward ProtocolStats
  §12 wait arguments            --for conditions, plain-English requests (pure)
  §13 wait rules                kstatus-like readiness, explanations (pure)
  §14 Kubectl runner            the only place that starts processes (I/O)
  §15 Cluster access            one `kubectl proxy --unix-socket` per context: lookups, shared
                                watches (reconnect, 410 Gone), TYPE/NAME → a pod
  §16 Tunnels                   native SPDY tunnels through the proxy; kubectl port-forward
                                children as the fallback engine, behind one seam
  §17 Proxy                     listeners the user owns, the lean relay (one shared buffer),
                                replay onto a new tunnel, inspection as an optional observer
  §18 port-forward session      Session of N Forwards (standby tunnels, pod watch, failure
                                accounting), event stream; live view, lines, summary as clients
  §19 wait session              kubectl wait + watch, live progress, explanations (I/O)
  §20 Completion, version, main()

Rules: §04-§13 never do I/O (no asyncio, sockets, processes or clocks: time is passed in).
Only §14 starts processes. The relay does no per-chunk allocation, logging or formatting;
inspection is one optional call per chunk, dropped once a sniffer has nothing left to learn.
"""

# ==== §01 Header & compatibility ===============================================================

from __future__ import annotations

import sys

if sys.version_info < (3, 9):  # noqa: UP036 - the one-line message *is* the point
    sys.stderr.write(
        "error: kubectl-vibe needs Python 3.9 or newer (found %s)\n" % sys.version.split()[0]
    )
    raise SystemExit(1)

import collections
import contextlib
import enum
import functools
import json
import os
import re
import shutil
import signal
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

__version__ = "0.1.0"


class _LazyModule:
    """A module imported on first attribute use, then bound in this module's globals.

    asyncio alone costs ~40 ms to import; `--version`, `--help` and every shell-completion TAB
    must not pay it.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        module = importlib.import_module(self._name)
        globals()[self._name] = module
        return getattr(module, attr)


asyncio: Any = _LazyModule("asyncio")


def frozen_record(cls: type) -> type:
    """@dataclass(frozen=True), minus its import cost: ~0.6 ms a class to exec-generate
    methods, which for ~50 event classes would double `--version`'s time.

    Same contract: fields are the annotated names (bases first), class attributes are defaults,
    and the class gets __init__ (positional or keyword), __repr__, __eq__, __hash__ and
    immutability, unless it defines them itself.
    """
    names: List[str] = []
    for klass in reversed(cls.__mro__[:-1]):
        for name, annotation in klass.__dict__.get("__annotations__", {}).items():  # noqa: RUF063 (3.9)
            if "ClassVar" not in str(annotation) and name not in names:
                names.append(name)
    cls._record_fields = tuple(names)  # type: ignore[attr-defined]
    cls._record_defaults = {n: getattr(cls, n) for n in names if hasattr(cls, n)}  # type: ignore[attr-defined]
    for method in (_record_init, _record_repr, _record_eq, _record_hash):
        name = method.__name__.replace("_record_", "__") + "__"
        if name not in cls.__dict__:
            setattr(cls, name, method)
    cls.__setattr__ = _record_setattr  # type: ignore[method-assign]
    cls.__delattr__ = _record_setattr  # type: ignore[method-assign]
    return cls


def _record_init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    names = cls._record_fields
    if len(args) > len(names):
        raise TypeError("%s() takes %d arguments, got %d" % (cls.__name__, len(names), len(args)))
    values = dict(zip(names, args))
    for name, value in kwargs.items():
        if name not in names or name in values:
            raise TypeError("%s() got an unexpected or repeated argument %r" % (cls.__name__, name))
        values[name] = value
    for name in names:
        if name in values:
            object.__setattr__(self, name, values[name])
        elif name in cls._record_defaults:
            object.__setattr__(self, name, cls._record_defaults[name])
        else:
            raise TypeError("%s() missing required argument: %r" % (cls.__name__, name))


def _record_repr(self: Any) -> str:
    fields = ", ".join("%s=%r" % (name, getattr(self, name)) for name in self._record_fields)
    return "%s(%s)" % (type(self).__qualname__, fields)


def _record_values(record: Any) -> Tuple[Any, ...]:
    return tuple(getattr(record, name) for name in record._record_fields)


def _record_eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _record_values(self) == _record_values(other)


def _record_hash(self: Any) -> int:
    return hash(_record_values(self))


def _record_setattr(self: Any, name: str, value: Any = None) -> None:
    raise AttributeError("cannot assign to field %r: %s is frozen" % (name, type(self).__name__))


class LazyPattern:
    """re.compile on first use. A module of ~100 patterns would otherwise spend most of its
    import time compiling them, and `--version`, `--help` and completion need none.

    The first lookup of a method binds the compiled pattern's own method on the instance, so
    later calls cost exactly what a compiled pattern's do.
    """

    def __init__(self, pattern: Any, flags: int = 0) -> None:
        self._args = (pattern, flags)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        attribute = getattr(re.compile(*self._args), name)
        setattr(self, name, attribute)
        return attribute


# ==== §02 Constants & limits ===================================================================

#: Environment variable kubectl (1.37+) sets to its own path when it dispatches a plugin.
ENV_KUBECTL_PATH = "KUBECTL_PATH"
#: Set to 1 to see Python tracebacks instead of one-line errors.
ENV_DEBUG = "KUBECTL_VIBE_DEBUG"
#: kubectl's exit code for every error path (cmdutil.DefaultErrorExitCode).
EXIT_ERROR = 1
#: Longest kubectl output line kept whole; longer ones are cut (a full pipe would block kubectl).
KUBECTL_LINE_LIMIT_BYTES = 1024 * 1024
#: How much of a kubectl pipe is read at once.
KUBECTL_READ_CHUNK_BYTES = 256 * 1024
#: How long a stopping kubectl gets after SIGTERM before SIGKILL.
KUBECTL_STOP_GRACE_S = 2.0
#: The relay's one shared read buffer. 1 MiB measured 25 % less CPU per GiB than asyncio's own
#: 256 KiB reads (bench/, 1 GiB each way) at no memory cost: there is one per process.
RELAY_BUFFER_BYTES = 1024 * 1024
#: File descriptors a session may use: each connection needs two. The soft limit is raised to
#: this (or the hard limit) at start; macOS's default of 256 would cap a session at ~120 clients.
FD_SOFT_LIMIT_WANTED = 65536
#: Client bytes held while a connection waits for a tunnel; above this, reading pauses.
LINK_PENDING_MAX_BYTES = 256 * 1024
#: Client bytes remembered until the pod's first byte, to replay them on a new tunnel if the
#: first one dies under the connection (a request usually fits; a bulk upload gives up replay).
LINK_REPLAY_MAX_BYTES = 64 * 1024
#: How many times one connection may be moved to a new tunnel before the pod answered.
LINK_MAX_REPLAYS = 3
#: How long an unanswered connection whose upstream closed waits to learn if its tunnel died.
REPLAY_VERDICT_WAIT_S = 1.5
#: Pause before retrying a tunnel port that refused (kubectl was exiting).
LINK_RETRY_PAUSE_S = 0.05
#: Unparsed kubectl stderr lines kept per tunnel, to explain an exit nobody announced.
TUNNEL_STDERR_TAIL_LINES = 20
#: Links remembered per tunnel after they ended, to recount them as reset if it then fails.
TUNNEL_RECENT_LINKS = 256
#: A link that ended this long before its tunnel failed is counted as cut by that failure.
TUNNEL_VERDICT_WINDOW_S = 1.0
#: How long a new kubectl port-forward may take to print its `Forwarding from` lines.
TUNNEL_START_TIMEOUT_S = 30.0
#: Reconnect backoff: first pause, doubling up to the cap (kubefwd starts at 1 s, caps at 5 min;
#: a forward the user is waiting on should retry sooner, and a cluster should not be hammered).
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 10.0
#: Pause before restarting a pod watch that ended (the API server closes watches regularly).
POD_WATCH_RESTART_S = 1.0
#: A tunnel loss this close before the pod watch reports the pod's deletion is blamed on it.
POD_DEATH_BLAME_WINDOW_S = 3.0
#: Pod health notes (restarts, waiting reasons) kept per target for the summary.
POD_NOTES_KEPT = 20
#: Seconds of traffic history behind each forward's sparkline.
ACTIVITY_WINDOW_S = 60
#: The live view redraws at most this often, and only when something changed.
LIVE_REFRESH_S = 0.25
#: Recent events shown under the live view.
LIVE_EVENTS_SHOWN = 5
#: In-flight connections get this long to finish after Ctrl-C/SIGTERM before they are cut.
SHUTDOWN_GRACE_S = 2.0
# -- port-forward target resolution (§15) --
#: Bound on each lookup made while resolving a target (kubectl's own default is 32 s).
RESOLVE_REQUEST_TIMEOUT_S = 30.0
# -- cluster access: one `kubectl proxy --unix-socket` per context (§10, §15, §16) --
#: How long `kubectl proxy` may take to say "Starting to serve on" (it only loads the
#: kubeconfig and listens: a second is slow; exec credential plugins run later, per request).
PROXY_START_TIMEOUT_S = 30.0
#: Longest pause between two tries of a target that could not start yet.
PENDING_RETRY_MAX_S = 30.0
#: Keep-alive connections to kubectl proxy kept for lookups (each lookup takes one at a time).
API_POOL_CONNECTIONS = 4
#: Longest HTTP response head accepted from kubectl proxy (h11's default limit).
HTTP_MAX_HEAD_BYTES = 64 * 1024
#: Longest chunk-size line in a chunked body (h11 caps it the same way).
HTTP_MAX_CHUNK_LINE_BYTES = 4 * 1024
#: Largest JSON body read from a lookup (a list of 5,000 pods is ~50 MiB).
API_MAX_BODY_BYTES = 256 * 1024 * 1024
#: A watch with no event (and no bookmark) for this long is assumed dead and reopened; the API
#: server ends watches after 5-10 minutes anyway, and sends bookmarks about once a minute.
WATCH_IDLE_TIMEOUT_S = 300.0
#: Longest SPDY control frame accepted (headers of a stream are a few dozen bytes).
SPDY_MAX_CONTROL_BYTES = 1024 * 1024
#: Each SPDY connection's read buffer. Data payloads are handed on as they arrive, so this only
#: bounds how much one read takes in; 256 KiB holds eight of the kubelet's 32 KiB frames.
SPDY_READ_BUFFER_BYTES = 256 * 1024
#: Largest data frame sent: one relay read (the relay buffer size) goes out as one frame.
SPDY_MAX_DATA_FRAME_BYTES = 1024 * 1024 - 1
#: Error-stream text kept per connection (the kubelet's messages are a few hundred bytes).
SPDY_ERROR_TEXT_BYTES = 4096
#: How long a new stream may wait for its SYN_REPLY before its tunnel counts as stuck
#: (client-go waits 30 s and then reports "Timeout occurred").
SPDY_REPLY_TIMEOUT_S = 10.0
#: How long a stream's end (the pod's FIN) waits for its error stream to end too: the kubelet
#: ends both at once; only a broken peer leaves the error stream open.
SPDY_ERROR_FIN_WAIT_S = 1.0
#: An idle tunnel is pinged this often; no answer within SPDY_PING_TIMEOUT_S means it is dead
#: (a half-open TCP connection after sleep or a VPN change would otherwise look alive).
SPDY_PING_INTERVAL_S = 30.0
SPDY_PING_TIMEOUT_S = 10.0
#: What a forwarded connection may queue toward a slow client before its whole SPDY connection
#: stops reading (spdystream has no per-stream flow control: that is kubectl's HOL blocking).
SPDY_CLIENT_BUFFER_BYTES = 4 * 1024 * 1024
# -- wait (§12, §13, §19) --
#: Exit code of `kubectl vibe wait --fail-fast` when a waited resource failed for good
#: (0 and 1 keep kubectl's meanings; 2 is left to usage errors, as kubectl-wait-job does).
EXIT_FAIL_FAST = 3
#: Seconds a failure must last before --fail-fast believes it (image pulls and scheduling
#: often recover: a registry blip, a node scaling up). kstatus waits 15s for Unschedulable.
FAIL_FAST_GRACE_S: Dict[str, float] = {
    "ImagePullBackOff": 5.0,
    "ErrImagePull": 5.0,
    "CreateContainerConfigError": 5.0,
    "CreateContainerError": 5.0,
    "Unschedulable": 15.0,
}
#: OOMKilled restarts that make a container's failure "repeated" for --fail-fast.
FAIL_FAST_OOM_RESTARTS = 3
#: Latest events kept per involved object, and how many objects' events are kept at all
#: (the events watch sees the whole namespace; the oldest objects are forgotten first).
WAIT_EVENTS_PER_OBJECT = 10
WAIT_EVENT_OBJECTS_KEPT = 2000
#: Largest single object a `kubectl get -w -o json` may print (a huge CR or a 5k-item list).
WATCH_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
#: Child pods shown under a resource in the live view / an explanation.
LIVE_PODS_SHOWN = 8
EXPLAIN_PODS_SHOWN = 5
#: Latest Warning events shown in an explanation (or, without any, the latest events).
EXPLAIN_EVENTS_SHOWN = 5
EXPLAIN_QUIET_EVENTS_SHOWN = 3
#: Shortest pause between two redraws of the wait view (≤ 4 per second).
LIVE_WAIT_REFRESH_S = 0.25
#: How long the watches may still deliver before an explanation is printed: the Warning
#: event that explains a failure usually arrives just after the status change itself.
EXPLAIN_SETTLE_S = 0.5
#: How long, after kubectl wait said "condition met", our own watches may take to show it
#: too (both watch the same object; ours is usually a few milliseconds behind) before the
#: objects are looked up once more.
WAIT_CATCH_UP_S = 0.5
#: Pause before a `kubectl get -w` that ended is started again (the wait goes on).
WAIT_WATCH_RESTART_S = 1.0
#: How long the --llm command may think.
LLM_TIMEOUT_S = 60.0

# -- §11 Protocol sniffers: every buffer a sniffer keeps is bounded here (added by perf) --
#: Bytes of each side inspected before protocol detection says UNKNOWN (a request line, a
#: ClientHello record header and a MySQL greeting all fit well inside this).
SNIFF_DETECT_MAX_BYTES = 4 * 1024
#: Longest HTTP/1 header block kept (h11's default; node 80 KiB, tomcat 8 KiB).
SNIFF_MAX_HEADER_BYTES = 16 * 1024
#: Longest chunk-size line (hex size + extensions) in a chunked body; h11 caps it the same way.
SNIFF_MAX_CHUNK_LINE_BYTES = 4 * 1024
#: Requests sent but not yet answered on one HTTP/1 connection (pipelining depth).
SNIFF_MAX_PENDING_REQUESTS = 128
#: Events kept per connection in `Sniffer.events` (the aggregate sees all of them).
SNIFF_MAX_EVENTS = 256
#: Longest TLS handshake message reassembled: a ClientHello with post-quantum key shares is
#: ~1.8 KiB, the RFC 8446 record limit is 16 KiB; certificates are never reassembled.
SNIFF_MAX_TLS_HANDSHAKE_BYTES = 32 * 1024
#: Largest TLS record length accepted (RFC 8446 §5.2: 2^14 + 256, RFC 5246: 2^14 + 2048).
SNIFF_MAX_TLS_RECORD_BYTES = 2**14 + 2048
#: Longest Postgres StartupMessage (the server's own MAX_STARTUP_PACKET_LENGTH).
SNIFF_MAX_PG_STARTUP_BYTES = 10000
#: Prefix of a Postgres/MySQL message kept for parsing (ErrorResponse, ParameterStatus, ERR);
#: the rest of a longer message is skipped by length, never buffered.
SNIFF_MAX_MESSAGE_BYTES = 16 * 1024
#: Longest RESP line (Redis's proto-inline-max-size is 64 KiB).
SNIFF_MAX_RESP_LINE_BYTES = 64 * 1024
#: Deepest RESP nesting followed (Redis replies nest a handful of levels; 7.x caps at 1024).
SNIFF_MAX_RESP_DEPTH = 32
#: Bytes of a command name / error prefix kept (the longest Redis command name is ~30).
SNIFF_MAX_NAME_BYTES = 64
#: HTTP/2 streams tracked at once per connection (servers default to 100-250 concurrent).
SNIFF_MAX_H2_STREAMS = 1024
#: HTTP/2 GOAWAY debug data kept.
SNIFF_MAX_H2_DEBUG_BYTES = 256
#: HTTP/2 header block (HEADERS + CONTINUATION) kept for HPACK decoding (h2's default
#: max_header_list_size is 64 KiB; we keep less and give up on HPACK beyond it).
SNIFF_MAX_H2_HEADER_BLOCK_BYTES = 16 * 1024
#: HPACK dynamic table size we follow (RFC 7541 default SETTINGS_HEADER_TABLE_SIZE).
SNIFF_HPACK_TABLE_BYTES = 4096
#: Latency samples kept per forward for p50/p99 (reservoir sampling over the whole session).
SNIFF_LATENCY_RESERVOIR = 2048
#: Distinct keys (paths, commands, error codes) counted before the rest go to "other".
SNIFF_TOP_KEYS = 64
#: Characters of a path/SNI/message kept in events and summaries.
SNIFF_MAX_TEXT_CHARS = 120
#: Request targets remembered with their folded route (normalize_path's memo; then cleared).
SNIFF_ROUTE_CACHE_ENTRIES = 1024
#: A 5xx burst: this many server errors within SNIFF_BURST_WINDOW_S.
SNIFF_BURST_COUNT = 5
SNIFF_BURST_WINDOW_S = 10.0
#: Largest HPACK dynamic table we follow when a peer raises it (h2's default max is 64 KiB).
SNIFF_HPACK_MAX_TABLE_BYTES = 64 * 1024

# Shell completion (§20).
#: cobra's ShellCompDirectiveNoFileComp: the last line of every completion answer, so the shell
#: never falls back to file names.
COMPLETION_NO_FILES = ":4"
#: The helper kubectl (1.26+) looks up on PATH to complete `kubectl vibe <TAB>`.
COMPLETION_SHIM_NAME = "kubectl_complete-vibe"
COMPLETION_SHIM = '#!/bin/sh\nexec kubectl vibe __complete "$@"\n'
#: Kinds offered as TYPE/NAME for pf/wait: one `kubectl get`, so one round trip per TAB.
COMPLETION_RESOURCE_KINDS = "pods,services,deployments"
#: A TAB must never hang the shell on an unreachable cluster.
COMPLETION_TIMEOUT_S = 3.0
#: Longest flag description shown next to a candidate (zsh/fish print them on one line).
COMPLETION_DESCRIPTION_CHARS = 60

# ==== §03 Errors ===============================================================================


class VibeError(Exception):
    """An error the user should see as one `error: ...` line, never as a traceback."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, fix: str = "", exit_code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self) -> str:
        text = "error: " + self.message
        return text + ("\n" + self.fix if self.fix else "")


class UsageError(VibeError):
    """A wrong argument or flag: kubectl adds a pointer to the command's help."""

    def __init__(self, message: str, command: str = "", *, prog: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.prog = prog

    def render(self) -> str:
        where = " ".join(part for part in (self.prog or program_name(), self.command) if part)
        return "error: %s\nSee '%s -h' for help and examples" % (self.message, where)


class KubectlNotFound(VibeError):
    def __init__(self) -> None:
        super().__init__("kubectl not found: install it or set KUBECTL_PATH")


#: A line that is already a complete kubectl error: "error: ...", "Error from server (...)",
#: or a klog line ("E1125 14:02:03.123456   42 portforward.go:...").
_KUBECTL_ERROR_LINE = LazyPattern(r"error: |Error[ :]|E\d{4} ")


class KubectlError(VibeError):
    """kubectl failed: its own last error line is the message, its exit code is ours."""

    def __init__(self, message: str, returncode: int = EXIT_ERROR, stderr: str = "") -> None:
        super().__init__(message, exit_code=returncode or EXIT_ERROR)
        self.stderr = stderr

    def render(self) -> str:
        # kubectl's own lines already carry their "error:" / "Error from server" / klog prefix.
        if _KUBECTL_ERROR_LINE.match(self.message):
            return self.message
        return "error: " + self.message

    @classmethod
    def from_stderr(cls, stderr: str, returncode: int) -> KubectlError:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        if not lines:
            return cls("kubectl exited with code %d and printed nothing" % returncode, returncode)
        return cls(lines[-1].strip(), returncode, stderr)


# ==== §04 Utilities ============================================================================


_GO_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
#: One step of Go's ParseDuration loop: a number ([0-9]*(.[0-9]*)?), then everything up to the
#: next digit or dot as its unit (Go reads the unit that greedily, hence "unknown unit").
_GO_DURATION_STEP = LazyPattern(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration ("1m30s", "-2h", "0", "1.5s"), with time.ParseDuration's errors."""
    invalid = ValueError('time: invalid duration "%s"' % text)
    body = text
    sign = 1.0
    if body[:1] in ("+", "-"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise invalid
    total = 0.0
    position = 0
    while position < len(body):
        step = _GO_DURATION_STEP.match(body, position)
        assert step is not None  # every part of the pattern may be empty
        whole, fraction, unit = step.groups()
        if not whole and not fraction:
            raise invalid  # no digits before the unit, or a stray character
        if not unit:
            raise ValueError('time: missing unit in duration "%s"' % text)
        if unit not in _GO_DURATION_UNITS:
            raise ValueError('time: unknown unit "%s" in duration "%s"' % (unit, text))
        number = float((whole or "0") + "." + (fraction or "0"))
        total += number * _GO_DURATION_UNITS[unit]
        position = step.end()
    return sign * total


_GO_SUBSECOND_UNITS = ((1_000_000, "ms"), (1_000, "µs"), (1, "ns"))


def format_go_duration(seconds: float) -> str:
    """Go's Duration.String(): "0s", "300ms", "1.5s", "1m0s", "2h0m0s" (nanosecond precision)."""
    nanos = round(abs(seconds) * 1e9)
    sign = "-" if seconds < 0 and nanos else ""
    if nanos == 0:
        return "0s"
    if nanos < 1_000_000_000:  # under a second Go switches to the largest unit that fits
        scale, unit = next((s, u) for s, u in _GO_SUBSECOND_UNITS if nanos >= s)
        return sign + _go_decimal(nanos, scale) + unit
    hours, rest = divmod(nanos, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _go_decimal(rest, 10**9) + "s"
    if hours:
        return "%s%dh%dm%s" % (sign, hours, minutes, text)
    if minutes:
        return "%s%dm%s" % (sign, minutes, text)
    return sign + text


def _go_decimal(value: int, scale: int) -> str:
    """value/scale with the fraction's trailing zeros dropped, computed exactly."""
    whole, fraction = divmod(value, scale)
    if not fraction:
        return str(whole)
    digits = len(str(scale)) - 1
    return "%d.%s" % (whole, str(fraction).rjust(digits, "0").rstrip("0"))


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB': binary units, at most one decimal, always short enough for a table."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return "%d B" % value
            return ("%.1f %s" if abs(value) < 100 else "%.0f %s") % (value, unit)
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """Elapsed time as a person reads it: '42s', '3m07s', '2h05m', '3d04h'."""
    whole = int(max(0.0, seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return "%dd%02dh" % (days, hours)
    if hours:
        return "%dh%02dm" % (hours, minutes)
    if minutes:
        return "%dm%02ds" % (minutes, secs)
    return "%ds" % secs


class JsonStreamDecoder:
    """Sans-IO decoder for concatenated JSON documents, as `kubectl get -w -o json` prints them.

    feed(bytes) returns the documents completed by those bytes; partial ones stay buffered.
    """

    def __init__(self, max_buffer_bytes: int = 64 * 1024 * 1024) -> None:
        self._buffer = ""
        self._pending = b""
        self._decoder = json.JSONDecoder()
        self._max = max_buffer_bytes

    def feed(self, data: bytes) -> List[Any]:
        raw = self._pending + data
        try:
            text = raw.decode("utf-8")
            self._pending = b""
        except UnicodeDecodeError as exc:  # a multi-byte character split across reads
            text = raw[: exc.start].decode("utf-8")
            self._pending = raw[exc.start :]
        self._buffer += text
        documents = []
        while True:
            stripped = self._buffer.lstrip()
            if not stripped:
                self._buffer = ""
                break
            try:
                document, end = self._decoder.raw_decode(stripped)
            except ValueError:  # incomplete: wait for more bytes, within the bound
                self._buffer = stripped
                if len(self._buffer) > self._max:
                    raise VibeError(
                        "kubectl printed a JSON document over %d bytes" % self._max
                    ) from None
                break
            documents.append(document)
            self._buffer = stripped[end:]
        return documents


# ==== §05 Flags ================================================================================


class FlagKind(enum.Enum):
    BOOL = "bool"
    STRING = "string"
    STRINGS = "strings"  # repeatable and comma-separated, like pflag StringSlice
    STRING_ARRAY = "stringArray"  # repeatable, kept whole, like pflag StringArray
    DURATION = "duration"
    INT = "int"


@frozen_record
class Flag:
    long: str
    kind: FlagKind
    help: str
    short: str = ""
    default: Any = None
    metavar: str = ""
    hidden: bool = False


#: kubectl's global flags (cli-runtime ConfigFlags + klog -v): accepted anywhere after the
#: subcommand and forwarded unchanged to every kubectl child.
GLOBAL_FLAGS: Tuple[Flag, ...] = (
    Flag("kubeconfig", FlagKind.STRING, "Path to the kubeconfig file to use for CLI requests."),
    Flag("context", FlagKind.STRING, "The name of the kubeconfig context to use"),
    Flag("cluster", FlagKind.STRING, "The name of the kubeconfig cluster to use"),
    Flag("user", FlagKind.STRING, "The name of the kubeconfig user to use"),
    Flag("namespace", FlagKind.STRING, "If present, the namespace scope for this CLI request", "n"),
    Flag("server", FlagKind.STRING, "The address and port of the Kubernetes API server", "s"),
    Flag("token", FlagKind.STRING, "Bearer token for authentication to the API server"),
    Flag("as", FlagKind.STRING, "Username to impersonate for the operation."),
    Flag("as-group", FlagKind.STRING_ARRAY, "Group to impersonate for the operation."),
    Flag("as-uid", FlagKind.STRING, "UID to impersonate for the operation."),
    Flag("as-user-extra", FlagKind.STRING_ARRAY, "User extras to impersonate for the operation."),
    Flag("certificate-authority", FlagKind.STRING, "Path to a cert file for the CA"),
    Flag("client-certificate", FlagKind.STRING, "Path to a client certificate file for TLS"),
    Flag("client-key", FlagKind.STRING, "Path to a client key file for TLS"),
    Flag("insecure-skip-tls-verify", FlagKind.BOOL, "Skip checking the server's certificate."),
    Flag("tls-server-name", FlagKind.STRING, "Server name to use for certificate validation."),
    Flag("request-timeout", FlagKind.STRING, "How long to wait for a single server request."),
    Flag("cache-dir", FlagKind.STRING, "Default cache directory"),
    Flag("disable-compression", FlagKind.BOOL, "Opt out of response compression for all requests"),
    Flag("username", FlagKind.STRING, "Username for basic authentication to the API server"),
    Flag("password", FlagKind.STRING, "Password for basic authentication to the API server"),
    Flag("v", FlagKind.STRING, "number for the log level verbosity", "v"),
)
GLOBAL_FLAG_NAMES = frozenset(flag.long for flag in GLOBAL_FLAGS)
HELP_FLAG = Flag("help", FlagKind.BOOL, "help for this command", "h")


@dataclass
class ParsedFlags:
    """What the flag parser found: values by long name, positionals, and the kubectl globals."""

    values: Dict[str, Any] = field(default_factory=dict)
    positionals: List[str] = field(default_factory=list)
    globals_argv: List[str] = field(default_factory=list)
    explicit: set = field(default_factory=set)
    #: (long name, raw value) in command-line order, to rebuild a child's argv faithfully.
    ordered: List[Tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    @property
    def namespace(self) -> str:
        return self.values.get("namespace") or ""


_BOOL_WORDS = {"1": True, "t": True, "true": True, "TRUE": True, "True": True, "T": True}
_BOOL_WORDS.update({"0": False, "f": False, "false": False, "FALSE": False, "False": False})
_BOOL_WORDS["F"] = False


class FlagParser:
    """pflag/cobra-compatible parsing: --a=b, --a b, -n x, -nx, -n=x, bools, `--`, interspersed.

    Error texts are cobra's, so users see what kubectl would say for the same mistake.
    """

    def __init__(self, flags: Sequence[Flag], command: str) -> None:
        self.command = command
        self.flags = tuple(flags) + GLOBAL_FLAGS + (HELP_FLAG,)
        self._by_long = {flag.long: flag for flag in self.flags}
        self._by_short = {flag.short: flag for flag in self.flags if flag.short}

    def parse(self, argv: Sequence[str]) -> ParsedFlags:
        parsed = ParsedFlags()
        for flag in self.flags:
            if flag.default is not None:
                default = flag.default
                parsed.values[flag.long] = list(default) if isinstance(default, list) else default
        args = list(argv)
        index = 0
        while index < len(args):
            arg = args[index]
            index += 1
            if arg == "--":
                parsed.positionals.extend(args[index:])
                break
            if arg.startswith("--") and len(arg) > 2:
                index = self._parse_long(arg, args, index, parsed)
            elif arg.startswith("-") and len(arg) > 1:
                index = self._parse_short(arg, args, index, parsed)
            else:
                parsed.positionals.append(arg)
        return parsed

    def _fail(self, message: str) -> UsageError:
        return UsageError(message, self.command)

    def _parse_long(self, arg: str, args: List[str], index: int, parsed: ParsedFlags) -> int:
        name, has_value, value = arg[2:].partition("=")
        flag = self._by_long.get(name)
        if flag is None:
            raise self._fail("unknown flag: --" + name)
        if not has_value:
            if flag.kind is FlagKind.BOOL:
                value = "true"
            elif index < len(args):
                value, index = args[index], index + 1
            else:
                raise self._fail("flag needs an argument: --" + name)
        self._store(flag, value, "--" + name, parsed)
        return index

    def _parse_short(self, arg: str, args: List[str], index: int, parsed: ParsedFlags) -> int:
        letters = arg[1:]
        position = 0
        while position < len(letters):
            letter = letters[position]
            flag = self._by_short.get(letter)
            if flag is None:
                raise self._fail("unknown shorthand flag: %r in -%s" % (letter, letters))
            rest = letters[position + 1 :]
            if flag.kind is FlagKind.BOOL:
                if rest.startswith("="):
                    self._store(flag, rest[1:], "-" + letter, parsed)
                    return index
                self._store(flag, "true", "-" + letter, parsed)
                position += 1
                continue
            if rest:
                value = rest[1:] if rest.startswith("=") else rest
            elif index < len(args):
                value, index = args[index], index + 1
            else:
                raise self._fail("flag needs an argument: %r in -%s" % (letter, letters))
            self._store(flag, value, "-" + letter, parsed)
            return index
        return index

    def _store(self, flag: Flag, raw: str, spelled: str, parsed: ParsedFlags) -> None:
        value = self._convert(flag, raw)
        if flag.kind in (FlagKind.STRINGS, FlagKind.STRING_ARRAY):
            if flag.long not in parsed.explicit:  # the first use replaces the default
                parsed.values[flag.long] = []
            parsed.values[flag.long].extend(value)
        else:
            parsed.values[flag.long] = value
        parsed.explicit.add(flag.long)
        parsed.ordered.append((flag.long, raw))
        if flag.long in GLOBAL_FLAG_NAMES:
            shown = str(value).lower() if flag.kind is FlagKind.BOOL else raw
            parsed.globals_argv.append("--%s=%s" % (flag.long, shown))

    def _convert(self, flag: Flag, raw: str) -> Any:
        where = "--" + flag.long if not flag.short else "-%s, --%s" % (flag.short, flag.long)
        if flag.kind is FlagKind.BOOL:
            if raw not in _BOOL_WORDS:
                raise self._fail(
                    'invalid argument "%s" for "%s" flag: strconv.ParseBool: parsing "%s": '
                    "invalid syntax" % (raw, where, raw)
                )
            return _BOOL_WORDS[raw]
        if flag.kind is FlagKind.DURATION:
            try:
                return parse_go_duration(raw)
            except ValueError as exc:
                raise self._fail(
                    'invalid argument "%s" for "%s" flag: %s' % (raw, where, exc)
                ) from None
        if flag.kind is FlagKind.INT:
            try:
                return int(raw, 10)
            except ValueError:
                raise self._fail(
                    'invalid argument "%s" for "%s" flag: strconv.ParseInt: parsing "%s": '
                    "invalid syntax" % (raw, where, raw)
                ) from None
        if flag.kind is FlagKind.STRINGS:
            return [part for part in raw.split(",")] if raw else []
        if flag.kind is FlagKind.STRING_ARRAY:
            return [raw]
        return raw


# ==== §06 Commands & help ======================================================================


def program_name(argv0: Optional[str] = None) -> str:
    """`kubectl vibe` when run as a kubectl plugin (argv[0] is kubectl-vibe...), else the script."""
    if argv0 is None:
        argv0 = sys.argv[0] if sys.argv else ""
        if _run_as_module():  # `python3 -m` puts the module's path, not "-m", in argv[0]
            argv0 = "-m"
    base = os.path.basename(argv0)
    if base.startswith("kubectl-"):
        return "kubectl vibe"
    if base in ("__main__.py", "-m", ""):
        return "python3 -m kubectl_vibe_pf"
    return "python3 " + base


def _run_as_module() -> bool:
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    return getattr(spec, "name", None) == "kubectl_vibe_pf"


@frozen_record
class Command:
    name: str
    aliases: Tuple[str, ...]
    summary: str
    usage: str
    description: str
    examples: str
    flags: Tuple[Flag, ...] = ()
    hidden: bool = False


def render_help(command: Command, prog: str) -> str:
    """kubectl's help layout: description, Examples, Options, Usage, pointer to global options."""
    lines = [command.description.strip(), ""]
    if command.examples.strip():
        lines.append("Examples:")
        lines.extend(
            "  " + line if line.strip() else ""
            for line in command.examples.strip("\n").splitlines()
        )
        lines.append("")
    visible = [flag for flag in command.flags if not flag.hidden]
    if visible:
        lines.append("Options:")
        for flag in visible:
            lines.extend(_render_flag_help(flag))
        lines.append("")
    lines.append("Usage:")
    lines.append("  %s %s" % (prog, command.usage))
    lines.append("")
    lines.append(
        'Use "kubectl options" for a list of global command-line options (applies to all commands).'
    )
    return "\n".join(lines).replace("{prog}", prog) + "\n"


def _render_flag_help(flag: Flag) -> List[str]:
    names = ("-%s, --%s" % (flag.short, flag.long)) if flag.short else "--" + flag.long
    default = flag.default
    if flag.kind is FlagKind.DURATION and default is not None:
        shown = format_go_duration(default)
    elif isinstance(default, list):
        shown = "[%s]" % ",".join(default)
    elif isinstance(default, bool):
        shown = str(default).lower()
    elif default is None:
        shown = "false" if flag.kind is FlagKind.BOOL else "''"
    else:
        shown = str(default) if flag.kind is not FlagKind.STRING else "'%s'" % default
    return ["    %s=%s:" % (names, shown), "\t" + flag.help, ""]


PORT_FORWARD_FLAGS: Tuple[Flag, ...] = (
    Flag(
        "address",
        FlagKind.STRINGS,
        "Addresses to listen on (comma separated). Only accepts IP addresses or localhost as a "
        "value. When localhost is supplied, kubectl vibe will try to bind on both 127.0.0.1 and "
        "::1 and will fail if neither of these addresses are available to bind.",
        default=["localhost"],
    ),
    Flag(
        "pod-running-timeout",
        FlagKind.DURATION,
        "The length of time (like 5s, 2m, or 3h, higher than zero) to wait until at least one "
        "pod is running. Also bounds how long a new connection waits while the tunnel is "
        "replaced.",
        default=60.0,
    ),
    Flag(
        "no-live", FlagKind.BOOL, "Print plain lines instead of the live view, even on a terminal."
    ),
    Flag(
        "inspect",
        FlagKind.BOOL,
        "Recognise protocols (HTTP, gRPC, TLS, Postgres, Redis, MySQL) in the relayed bytes and "
        "summarise them. --inspect=false relays bytes only.",
        default=True,
    ),
    Flag(
        "output",
        FlagKind.STRING,
        "Output format: '' (live view on a terminal, kubectl lines when piped) or 'json' (one "
        "JSON object per event).",
        "o",
        default="",
    ),
    Flag(
        "selector",
        FlagKind.STRING,
        "Forward what matches this label selector (kubectl's syntax: =, ==, !=, in, notin, "
        "exists): every TCP port of each matching Service, or of the matching workloads, then "
        "pods, when no Service matches. Annotations on them may say which ports (see README).",
        "l",
        default="",
    ),
    Flag(
        "all-namespaces",
        FlagKind.BOOL,
        "With -l or --annotated: look in every namespace.",
        "A",
    ),
    Flag(
        "annotated",
        FlagKind.BOOL,
        "Forward every Service whose annotations ask for it (kubectl-vibe.io/ports, "
        "kftray.app/enabled, kftray.app/configs, k9scli.io/auto-port-forwards).",
    ),
    Flag(
        "save",
        FlagKind.STRING,
        "Remember this set of forwards under NAME: `kubectl vibe pf @NAME` starts it again.",
        default="",
    ),
    Flag(
        "recent",
        FlagKind.BOOL,
        "List the remembered sets of forwards, most used and most recent first (-o json|yaml).",
    ),
    Flag(
        "forget",
        FlagKind.STRING,
        "Forget a remembered set: --forget @NAME or --forget @N (its number in --recent).",
        default="",
    ),
    Flag(
        "groups",
        FlagKind.BOOL,
        "List the groups of the project file (.kubectl-vibe.yaml here or in a parent "
        "directory, or --file); `kubectl vibe pf @GROUP` starts one.",
    ),
    Flag(
        "file",
        FlagKind.STRING,
        "The project file to use instead of the nearest .kubectl-vibe.yaml.",
        default="",
    ),
    Flag(
        "balance",
        FlagKind.BOOL,
        "For a Service or workload: a tunnel to every Ready pod, each new connection to the "
        "pod with the fewest open ones; pods join and leave as their readiness changes.",
    ),
    Flag(
        "auto-ports",
        FlagKind.BOOL,
        "Choose free local ports: a port left out (:80) becomes the remote port, or +8000 below "
        "1024 (80 -> 8080), or the next free one above; a local port already in use is "
        "replaced by the next free one (the holder is named). On by default for :PORT with "
        "several targets.",
    ),
    Flag(
        "engine",
        FlagKind.STRING,
        "How tunnels are made: 'native' (the plugin speaks the port-forward protocol itself "
        "through one kubectl proxy per context; kubectl port-forward is used automatically if "
        "the API server refuses it) or 'kubectl' (a kubectl port-forward child per tunnel).",
        default="native",
    ),
)

WAIT_FLAGS: Tuple[Flag, ...] = (
    Flag(
        "all",
        FlagKind.BOOL,
        "Select all resources in the namespace of the specified resource types",
    ),
    Flag(
        "all-namespaces",
        FlagKind.BOOL,
        "If present, list the requested object(s) across all namespaces. Namespace in current "
        "context is ignored even if specified with --namespace.",
        "A",
    ),
    Flag(
        "allow-missing-template-keys",
        FlagKind.BOOL,
        "If true, ignore any errors in templates when a field or map key is missing in the "
        "template. Only applies to golang and jsonpath output formats.",
        default=True,
    ),
    Flag(
        "field-selector",
        FlagKind.STRING,
        "Selector (field query) to filter on, supports '=', '==', and '!='.",
        default="",
    ),
    Flag("filename", FlagKind.STRINGS, "identifying the resource.", "f", default=[]),
    Flag(
        "for",
        FlagKind.STRING_ARRAY,
        "The condition to wait on: [create|delete|condition=condition-name[=condition-value]|"
        "jsonpath='{JSONPath expression}'=[JSONPath value]]. The default condition-value is "
        "true. Without --for, kubectl vibe waits for the kind's own readiness.",
        default=[],
    ),
    Flag(
        "local", FlagKind.BOOL, "If true, annotation will NOT contact api-server but run locally."
    ),
    Flag(
        "output",
        FlagKind.STRING,
        "Output format. One of: (json, yaml, name, go-template, go-template-file, template, "
        "templatefile, jsonpath, jsonpath-as-json, jsonpath-file): kubectl's printing of "
        "the waited objects, on stdout. Progress has its own --progress.",
        "o",
        default="",
    ),
    Flag(
        "recursive",
        FlagKind.BOOL,
        "Process the directory used in -f, --filename recursively.",
        "R",
        default=True,
    ),
    Flag(
        "selector",
        FlagKind.STRING,
        "Selector (label query) to filter on, supports '=', '==', and '!='.",
        "l",
        default="",
    ),
    Flag(
        "show-managed-fields",
        FlagKind.BOOL,
        "If true, keep the managedFields when printing objects in JSON or YAML format.",
    ),
    Flag(
        "template",
        FlagKind.STRING,
        "Template string or path to template file to use when -o=go-template, -o=go-template-file.",
        default="",
    ),
    Flag(
        "timeout",
        FlagKind.DURATION,
        "The length of time to wait before giving up. Zero means check once and don't wait, "
        "negative means wait for a week.",
        default=30.0,
    ),
    Flag(
        "fail-fast",
        FlagKind.BOOL,
        "Stop as soon as a waited resource reaches a terminal failure (exit 3).",
    ),
    Flag(
        "wait-for-create",
        FlagKind.BOOL,
        "Wait for resources that do not exist yet to be created first (like --for=create, on "
        "any kubectl version), within the same --timeout.",
    ),
    Flag(
        "dry-run",
        FlagKind.BOOL,
        "Print the kubectl wait arguments a plain-English request becomes, and stop.",
    ),
    Flag(
        "llm",
        FlagKind.STRING,
        "Command that turns a plain-English request into kubectl wait arguments.",
        default="",
    ),
    Flag(
        "progress",
        FlagKind.STRING,
        "Where progress goes (always stderr; stdout stays exactly kubectl's): auto (a live view "
        "on a terminal, else plain lines), live, plain (one line per state change), json (one "
        "JSON object per state change) or none.",
        default="auto",
    ),
)

COMMANDS: Tuple[Command, ...] = (
    Command(
        name="port-forward",
        aliases=("pf",),
        summary="Forward local ports to a pod, with live traffic and self-healing tunnels",
        usage=(
            "port-forward TYPE/NAME [options] [LOCAL_PORT:]REMOTE_PORT "
            "[...[LOCAL_PORT_N:]REMOTE_PORT_N]"
        ),
        description="""
Forward one or more local ports to a pod, like kubectl port-forward, but observable and resilient.

 Use resource type/name such as deployment/mydeployment to select a pod. Resource type defaults
 to 'pod' if omitted. kubectl vibe owns the local ports for the whole session and runs the real
 kubectl port-forward behind them: when the pod dies or kubectl exits, a new pod is chosen and the
 tunnel is rebuilt while your local ports stay open. Connections made meanwhile wait (up to
 --pod-running-timeout) instead of being refused.
""",
        examples="""
# Listen on ports 5000 and 6000 locally, forwarding to 5000 and 6000 in a pod of the deployment
{prog} port-forward deployment/mydeployment 5000 6000

# Listen on port 8443 locally, forwarding to the targetPort of the service's port named "https"
{prog} pf service/myservice 8443:https

# Listen on a random port locally, forwarding to 5000 in the pod; print JSON events
{prog} pf pod/mypod :5000 -o json

# Listen on port 8888 on all addresses, in namespace prod
{prog} pf --address 0.0.0.0 -n prod pod/mypod 8888:5000
""",
        flags=PORT_FORWARD_FLAGS,
    ),
    Command(
        name="wait",
        aliases=(),
        summary="Wait for resources, with live per-resource progress and explanations",
        usage=(
            "wait ([-f FILENAME] | resource.group/resource.name | resource.group "
            "[(-l label | --all)]) [--for=create|--for=delete|--for condition=available|"
            "--for=jsonpath='{}'[=value]] [options]\n"
            '  {prog} wait "PLAIN-ENGLISH REQUEST" [--dry-run] [options]'
        ),
        description="""
Wait for a specific condition on one or many resources, exactly as kubectl wait decides it, while
showing each resource's live state, and explaining what is missing when it fails.

 The real kubectl wait decides every --for: its stdout is ours byte for byte, its errors and exit
 code too. Progress goes to stderr: a live view on a terminal, one line per state change when
 piped (--progress=plain), JSON objects with --progress=json, nothing with --progress=none. On a
 timeout or failure, each unsatisfied resource is explained after kubectl's own error: its
 state, what is missing and why, its pods, the latest Warning events and the next command.

 Without --for, waits for the kind's own readiness: Deployment available and rolled out,
 StatefulSet/DaemonSet rolled out, Job complete, Pod Ready, PVC Bound, Service with a ready
 endpoint, CRD Established, anything else its Ready condition (or current).

 A quoted plain-English request is turned into exact kubectl wait arguments, offline, and
 printed before anything runs ("→ kubectl wait ..."); what cannot be mapped exactly is refused.
 --llm CMD asks your own command instead (run by /bin/sh with the request as "$1"); its answer
 must be kubectl wait arguments and is checked by the same parser.

 Exit codes: 0 condition met; 1 any error or timeout (as kubectl); 3 --fail-fast saw a terminal
 failure (CrashLoopBackOff, ImagePullBackOff/ErrImagePull for 5s, Unschedulable for 15s, Job
 Failed, ProgressDeadlineExceeded, OOMKilled 3 times, Stalled); 130/143 interrupted (Ctrl-C,
 SIGTERM).
""",
        examples="""
# Wait for the pod "busybox1" to contain the status condition of type "Ready"
{prog} wait --for=condition=Ready pod/busybox1

# Wait for the web deployment's own readiness, stopping early (exit 3) if its pods cannot start
{prog} wait deploy/web --fail-fast --timeout=5m

# Wait for a job that does not exist yet, then for it to complete, with JSON progress on stderr
{prog} wait job/migrate --wait-for-create --for=condition=Complete --progress=json

# Say it in English; --dry-run only prints the kubectl arguments
{prog} wait "for the web deployment in prod to be available, up to 5 minutes" --dry-run
""",
        flags=WAIT_FLAGS,
    ),
    Command(
        name="version",
        aliases=(),
        summary="Print the kubectl-vibe version",
        usage="version",
        description="Print the kubectl-vibe version, its Python and the kubectl it uses.",
        examples="{prog} version",
    ),
    Command(
        name="completion",
        aliases=(),
        summary="Set up shell completion for kubectl vibe",
        usage="completion install [DIR]",
        description="""
Install the kubectl_complete-vibe helper that kubectl (1.26+) runs to complete
`kubectl vibe <TAB>`. It is written next to the plugin (krew's bin directory), or into DIR.
""",
        examples="{prog} completion install",
    ),
)

COMMANDS_BY_NAME: Dict[str, Command] = {}
for _command in COMMANDS:
    COMMANDS_BY_NAME[_command.name] = _command
    for _alias in _command.aliases:
        COMMANDS_BY_NAME[_alias] = _command
del _command, _alias


def render_root_help(prog: str) -> str:
    lines = [
        "kubectl vibe: port-forward and wait, observable, resilient and self-explaining.",
        "",
        "Commands:",
    ]
    for command in COMMANDS:
        name = command.name + (" (%s)" % ", ".join(command.aliases) if command.aliases else "")
        lines.append("  %-22s %s" % (name, command.summary))
    lines += ["", "Usage:", "  %s <command> [options]" % prog, ""]
    lines.append('Use "%s <command> -h" for more information about a command.' % prog)
    return "\n".join(lines) + "\n"


# ==== §07 port-forward arguments ===============================================================

_GO_BUILTIN_GROUPS = frozenset(
    (
        "",
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "storage.k8s.io",
        "scheduling.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "node.k8s.io",
        "certificates.k8s.io",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "resource.k8s.io",
        "extensions",
    )
)


class ResourceKind(enum.Enum):
    """The kinds kubectl port-forward can reach a pod through (polymorphichelpers)."""

    POD = ("pods", "*v1.Pod", ("pod", "pods", "po"))
    SERVICE = ("services", "*v1.Service", ("service", "services", "svc"))
    DEPLOYMENT = ("deployments.apps", "*v1.Deployment", ("deployment", "deployments", "deploy"))
    REPLICASET = ("replicasets.apps", "*v1.ReplicaSet", ("replicaset", "replicasets", "rs"))
    REPLICATIONCONTROLLER = (
        "replicationcontrollers",
        "*v1.ReplicationController",
        ("replicationcontroller", "replicationcontrollers", "rc"),
    )
    STATEFULSET = ("statefulsets.apps", "*v1.StatefulSet", ("statefulset", "statefulsets", "sts"))
    DAEMONSET = ("daemonsets.apps", "*v1.DaemonSet", ("daemonset", "daemonsets", "ds"))
    JOB = ("jobs.batch", "*v1.Job", ("job", "jobs"))
    #: Any other TYPE: only the server knows whether it exists; §15a asks it, and then refuses it
    #: with kubectl's "selector ... not implemented" if it does.
    OTHER = ("", "", ())

    def __init__(self, resource: str, go_type: str, spellings: Tuple[str, ...]) -> None:
        self.resource = resource
        self.go_type = go_type
        self.spellings = spellings

    @property
    def api_kind(self) -> str:
        """The `kind` field of objects of this resource ("Service")."""
        return self.go_type.rpartition(".")[2]

    @property
    def group(self) -> str:
        return self.resource.partition(".")[2]

    def accepts(self, spelled: str) -> bool:
        """kubectl's RESTMapper, as checked with kubectl 1.37: `NAME`, `NAME.GROUP` or
        `NAME.VERSION.GROUP` (core: `pod.v1.`); full names in any case, short names as is."""
        name, dot, group = spelled.partition(".")
        full, short = self.spellings[:2], self.spellings[2:]
        if name.lower() not in full and name not in short:
            return False
        if not dot:
            return True
        group = group.lower()
        if not self.group:  # "pods.v1" reads as group "v1": only "pods.v1." names the core group
            return group == "v1."
        return group in (self.group, "v1." + self.group)


_KIND_BY_API_KIND = {kind.api_kind: kind for kind in ResourceKind if kind.go_type}


def resource_kind_for(type_text: str) -> ResourceKind:
    for kind in ResourceKind:
        if kind is not ResourceKind.OTHER and kind.accepts(type_text):
            return kind
    return ResourceKind.OTHER


def go_type_name(obj: Dict[str, Any]) -> str:
    """The Go type kubectl names in messages: `*v1.ConfigMap`, `*unstructured.Unstructured`."""
    group, _, version = str(obj.get("apiVersion") or "v1").rpartition("/")
    if group not in _GO_BUILTIN_GROUPS:  # CRDs decode to unstructured objects in kubectl
        return "*unstructured.Unstructured"
    return "*%s.%s" % (version, obj.get("kind") or "Unknown")


@frozen_record
class ResourceRef:
    """`TYPE/NAME` or a bare `NAME` (a pod), as the user wrote it."""

    kind: ResourceKind
    name: str
    text: str
    #: The TYPE as written (for OTHER, the server decides what it means).
    type_text: str = "pod"

    @property
    def get_arg(self) -> str:
        """The argument for `kubectl get`: `services/web`, or the user's own TYPE for OTHER."""
        resource = self.kind.resource if self.kind is not ResourceKind.OTHER else self.type_text
        return "%s/%s" % (resource, self.name)


def parse_resource_ref(text: str) -> ResourceRef:
    """kubectl's builder.ResourceNames("pods", arg): NAME or TYPE/NAME, with its messages."""
    if "/" not in text:
        return ResourceRef(ResourceKind.POD, text, text, "pod")
    parts = text.split("/")
    if len(parts) > 2:
        raise VibeError("arguments in resource/name form may not have more than one slash")
    type_text, name = parts
    if not type_text or not name:
        raise VibeError("arguments in resource/name form must have a single resource and name")
    return ResourceRef(resource_kind_for(type_text), name, text, type_text)


def go_atoi(text: str) -> Optional[int]:
    """Go's strconv.Atoi: optional sign, ASCII digits only, int64 range; None if it fails."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    value = int(text, 10)
    return value if -(2**63) <= value < 2**63 else None


def go_parse_uint16(text: str) -> Tuple[Optional[int], str]:
    """strconv.ParseUint(text, 10, 16): (value, "") or (None, Go's error text)."""
    if not re.fullmatch(r"[0-9]+", text):
        return None, 'strconv.ParseUint: parsing "%s": invalid syntax' % text
    value = int(text, 10)
    if value > 65535:
        return None, 'strconv.ParseUint: parsing "%s": value out of range' % text
    return value, ""


def parse_local_port(text: str) -> int:
    value, problem = go_parse_uint16(text)
    if value is None:
        raise VibeError("error parsing local port '%s': %s" % (text, problem))
    return value


def parse_container_port(text: str) -> int:
    """A remote port once it is a number (client-go parsePorts)."""
    value, problem = go_parse_uint16(text)
    if value is None:
        raise VibeError("error parsing remote port '%s': %s" % (text, problem))
    if value == 0:
        raise VibeError("remote port must be > 0")
    return value


@frozen_record
class PortSpec:
    """`[LOCAL:]REMOTE`. local None: the port the remote resolves to (the Service port for a
    Service, the container port otherwise); 0: a random free port. remote: a number or a name,
    as written (a Service port for svc/, a container port otherwise)."""

    local: Optional[int]
    remote: str
    text: str
    #: The local port is the plugin's choice (§07 plan_local_ports): if it is taken when the
    #: forward binds, the next free one is used instead of failing.
    auto: bool = False

    @property
    def declared_local(self) -> Optional[int]:
        """The local port known before any lookup: the one written, else a numeric remote's
        number (kubectl's `5432`); None for a random (`:80`) or a named (`http`) one."""
        if self.local is not None:
            return self.local or None
        return self.remote_number

    @property
    def remote_number(self) -> Optional[int]:
        """The remote as a number, if kubectl would read it as one (strconv.Atoi)."""
        return go_atoi(self.remote)


def parse_port_spec(text: str, kind: ResourceKind = ResourceKind.POD) -> PortSpec:
    """kubectl splitPort + client-go parsePorts, checking early what needs no lookup.

    Where kubectl reads a port with no colon, or with equal sides (`http:http`), the local port
    becomes what the remote resolves to: local None. For a Service the remote is checked against
    the Service (§08 resolve_mappings), so only the local side is checked here.
    """
    parts = text.split(":")
    if len(parts) > 2:
        # kubectl's splitPort silently reads "a:b:c" as "a"; client-go's message is clearer.
        raise VibeError("invalid port format '%s'" % text)
    local_text, remote = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    if local_text == remote:
        local: Optional[int] = None
    else:
        local = parse_local_port(local_text or "0")  # ":5000" means a random local port
    if kind is not ResourceKind.SERVICE:
        _check_pod_remote(remote, local)
    return PortSpec(local, remote, text)


def _check_pod_remote(remote: str, local: Optional[int]) -> None:
    """The pod-path checks kubectl makes whatever the pod holds (convertPodNamedPortToNumber).

    An empty or named remote is left to §08: kubectl first looks "" up as a port *name*, so
    its message depends on whether the pod has an unnamed port.
    """
    if go_atoi(remote) is None:
        return
    if local is None:
        parse_local_port(remote)  # the remote is also the local port, and client-go reads it first
    parse_container_port(remote)


class FailureMode(enum.Enum):
    """client-go listen failure modes: ALL (localhost: fails only if every address fails) and
    ANY (an explicit IP: any failing address fails the port)."""

    ALL = "all"
    ANY = "any"


@frozen_record
class ListenAddress:
    address: str
    family: str  # "tcp4" or "tcp6", as net.Listen
    mode: FailureMode


@frozen_record
class ListenPlan:
    """Where each local port listens. require_all: some address is an explicit IP, so every
    explicit IP must bind (client-go "any" mode); localhost alone is fine if either binds."""

    addresses: Tuple[str, ...]
    require_all: bool
    entries: Tuple[ListenAddress, ...] = ()

    def port_ok(self, bound: Dict[str, bool]) -> bool:
        """client-go listenOnPort: did this port bind well enough, given address → success?"""
        failed_any = any(
            not bound.get(e.address, False) for e in self.entries if e.mode is FailureMode.ANY
        )
        alls = [bound.get(e.address, False) for e in self.entries if e.mode is FailureMode.ALL]
        if alls and not any(alls):
            return False
        return not failed_any


def parse_ip_sloppy(text: str) -> Optional[str]:
    """netutils.ParseIPSloppy: "tcp4", "tcp6" or None. IPv4 octets may have leading zeros."""
    import ipaddress

    if re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", text):
        octets = [int(part, 10) for part in text.split(".")]
        return "tcp4" if all(octet <= 255 for octet in octets) else None
    if "%" in text or ":" not in text:  # Go's ParseIP takes no zones, no hostnames
        return None
    try:
        parsed = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return "tcp4" if parsed.ipv4_mapped is not None else "tcp6"


def parse_addresses(values: Sequence[str]) -> ListenPlan:
    """client-go parseAddresses: localhost → 127.0.0.1 + ::1 (mode all), IPs (mode any),
    deduplicated by text (a later explicit IP wins over localhost's), sorted by text."""
    if not values:
        raise VibeError("you must specify at least 1 address")
    parsed: Dict[str, ListenAddress] = {}
    for value in values:
        if value == "localhost":
            for address, family in (("127.0.0.1", "tcp4"), ("::1", "tcp6")):
                parsed.setdefault(address, ListenAddress(address, family, FailureMode.ALL))
            continue
        family = parse_ip_sloppy(value)
        if family is None:
            raise VibeError("%s is not a valid IP" % value)
        parsed[value] = ListenAddress(value, family, FailureMode.ANY)
    entries = tuple(sorted(parsed.values(), key=lambda entry: entry.address))
    return ListenPlan(
        tuple(entry.address for entry in entries),
        any(entry.mode is FailureMode.ANY for entry in entries),
        entries,
    )


OUTPUT_FORMATS = ("", "json")


@frozen_record
class TargetArgs:
    """One TYPE/NAME of the command line and the ports written after it."""

    ref: ResourceRef
    ports: Tuple[PortSpec, ...]
    namespace: str = ""  # "" means the command's namespace (-n, or the kubeconfig's)
    context: str = ""  # "" means the command's context (--context, or the kubeconfig's)


def split_namespace(text: str) -> Tuple[str, str]:
    """`NAMESPACE/TYPE/NAME` → (namespace, "TYPE/NAME"); kubectl's forms → ("", text)."""
    parts = text.split("/")
    if len(parts) <= 2:
        return "", text
    if len(parts) > 3:
        raise VibeError(
            "arguments in namespace/resource/name form may not have more than two slashes"
        )
    if not all(parts):
        raise VibeError(
            "arguments in namespace/resource/name form must have a namespace, a resource and a name"
        )
    return parts[0], parts[1] + "/" + parts[2]


def split_targets(args: Sequence[str]) -> List[Tuple[str, List[str]]]:
    """`svc/web 8080:80 svc/db 5432`: each TYPE/NAME takes the ports that follow it. The first
    argument is always a target (a bare NAME is a pod, as in kubectl); later ones are targets
    when they hold a "/", since a port never does."""
    groups: List[Tuple[str, List[str]]] = []
    for index, arg in enumerate(args):
        if index == 0 or "/" in arg:
            groups.append((arg, []))
        else:
            groups[-1][1].append(arg)
    return groups


def parse_targets(args: Sequence[str]) -> List[TargetArgs]:
    """Every target with its ports, checked in kubectl's order; a target written without any
    port is an error naming it (kubectl's own message when it is the only target)."""
    targets = []
    for text, ports in split_targets(args):
        namespace, type_name = split_namespace(text)
        ref = parse_resource_ref(type_name)
        if namespace:  # the label keeps what the user wrote
            ref = ResourceRef(ref.kind, ref.name, text, ref.type_text)
        if not ports:
            raise UsageError(
                "%s: at least 1 PORT is required for port-forward" % text, "port-forward"
            )
        specs = tuple(parse_port_spec(port, ref.kind) for port in ports)
        targets.append(TargetArgs(ref, specs, namespace))
    return targets


def check_local_ports_unique(targets: Sequence[TargetArgs]) -> None:
    """Two targets asking for the same local port: refused before anything starts."""
    seen: Dict[int, str] = {}
    for target in targets:
        for spec in target.ports:
            port = spec.declared_local
            if port is None:
                continue
            where = "%s %s" % (target.ref.text, spec.text)
            if port in seen:
                raise VibeError(
                    "local port %d is asked for twice: %s and %s" % (port, seen[port], where),
                    fix="Fix: give one of them another local port, or leave it out "
                    "(:%s) to get a free one" % spec.remote,
                )
            seen[port] = where


#: Binds tried for an automatic local port that keeps being taken (a race with others).
AUTO_PORT_ATTEMPTS = 20
#: Automatic local ports: the remote port itself when it is not privileged, else shifted up
#: by this much (80 → 8080, 443 → 8443), then the next free one above.
AUTO_PORT_SHIFT = 8000
PRIVILEGED_PORTS_BELOW = 1024


def auto_port_base(remote: int) -> int:
    return remote if remote >= PRIVILEGED_PORTS_BELOW else remote + AUTO_PORT_SHIFT


def next_free_port(start: int, taken: Any, is_free: Callable[[int], bool]) -> Optional[int]:
    """The first port from `start` up that nobody holds (deterministic for the same state)."""
    for port in range(max(start, PRIVILEGED_PORTS_BELOW), 65536):
        if port not in taken and is_free(port):
            return port
    return None


@frozen_record
class PortChoice:
    """A local port the plugin chose, and why (shown before anything starts)."""

    target: str
    spec: str
    port: int
    reason: str


@frozen_record
class PortPolicy:
    """Which local ports the plugin may choose: `:80`-style ones (`choose`: --auto-ports or
    several targets; else kubectl's random port), and busy ones (`replace_busy`: --auto-ports).
    `is_free` and `holder` look at this machine's sockets (§17)."""

    choose: bool
    replace_busy: bool
    is_free: Callable[[int], bool]
    holder: Callable[[int], str]


def plan_local_ports(
    targets: Sequence[TargetArgs], policy: PortPolicy
) -> Tuple[List[TargetArgs], List[PortChoice]]:
    """Local ports the user left to us, chosen in argument order (the same inputs give the same
    ports): `:80` gets auto_port_base's port or the next free one above; a held port is
    replaced by the next free one. Named remotes are chosen once resolved (Forward.listen)."""
    taken = {spec.declared_local for target in targets for spec in target.ports}
    choices: List[PortChoice] = []
    planned = []
    for target in targets:
        specs = []
        for spec in target.ports:
            choice = _choose_local_port(spec, policy, taken)
            if choice is not None:
                taken.add(choice.port)
                choices.append(PortChoice(target.ref.text, spec.text, choice.port, choice.reason))
                spec = PortSpec(choice.port, spec.remote, spec.text, True)
            elif spec.local == 0 and policy.choose:
                spec = PortSpec(0, spec.remote, spec.text, True)  # named: chosen at bind time
            specs.append(spec)
        planned.append(TargetArgs(target.ref, tuple(specs), target.namespace, target.context))
    return planned, choices


def _choose_local_port(spec: PortSpec, policy: PortPolicy, taken: Any) -> Optional[PortChoice]:
    remote = spec.remote_number
    if spec.local == 0 and policy.choose and remote is not None:
        port = next_free_port(auto_port_base(remote), taken, policy.is_free)
        return PortChoice("", spec.text, port, "chosen") if port else None
    wanted = spec.declared_local
    if not (policy.replace_busy or spec.auto) or wanted is None or policy.is_free(wanted):
        return None
    port = next_free_port(wanted + 1, taken, policy.is_free)
    if port is None:
        return None
    reason = "port %d is held by %s" % (wanted, policy.holder(wanted))
    return PortChoice("", spec.text, port, reason)


ENGINES = ("native", "kubectl")


@dataclass
class PortForwardOptions:
    """kubectl port-forward's options: from_flags → validate → run (§18), which resolves."""

    targets: List[TargetArgs]
    listen: ListenPlan
    pod_running_timeout: float = 60.0
    namespace: str = ""
    output: str = ""
    live: Optional[bool] = None
    inspect: bool = True
    engine: str = "native"
    auto_ports: bool = False
    selector: str = ""
    all_namespaces: bool = False
    annotated: bool = False
    balance: bool = False
    save: str = ""
    #: Discoveries of recalled sets and groups (the command's own -l/--annotated is one more).
    recalled_discoveries: List[DiscoverySpec] = field(default_factory=list)
    #: What @references recalled, and what the command line itself asks for: each is
    #: remembered once it runs.
    recalled_sets: List[ForwardSet] = field(default_factory=list)
    own_set: ForwardSet = field(default_factory=lambda: ForwardSet())

    @property
    def discovers(self) -> bool:
        return bool(self.selector or self.annotated or self.recalled_discoveries)

    @property
    def discoveries(self) -> List[DiscoverySpec]:
        own = []
        if self.selector or self.annotated:
            own.append(DiscoverySpec(self.selector, self.annotated, self.all_namespaces))
        return own + list(self.recalled_discoveries)

    @property
    def choose_ports(self) -> bool:
        """Whether the plugin picks local ports (`:80` → 8080...) rather than kubectl's random
        one: with --auto-ports, discovery and several targets (a single one keeps kubectl's)."""
        return self.auto_ports or self.discovers or len(self.targets) > 1

    @property
    def ref(self) -> ResourceRef:
        return self.targets[0].ref

    @property
    def ports(self) -> List[PortSpec]:
        return list(self.targets[0].ports)

    @classmethod
    def from_flags(
        cls, flags: ParsedFlags, sets: Sequence[ForwardSet] = (), remembered: Sequence[str] = ()
    ) -> PortForwardOptions:
        """Positionals and flags, checked in kubectl's order (Complete, then client-go); `sets`
        are what @references recalled (those in `remembered` came from the store)."""
        args = flags.positionals
        discovers = bool(flags.get("selector") or flags.get("annotated") or sets)
        if len(args) < 2 and not (discovers and not args):
            raise UsageError(
                "TYPE/NAME and list of ports are required for port-forward", "port-forward"
            )
        timeout = float(flags.get("pod-running-timeout", 60.0))
        _check_pod_running_timeout(timeout)
        recalled = [t for s in sets for t in s.target_args(auto=s.key in remembered)]
        return cls(
            targets=(parse_targets(args) if args else []) + recalled,
            listen=parse_addresses(list(flags.get("address", ["localhost"]))),
            pod_running_timeout=timeout,
            namespace=flags.namespace,
            output=flags.get("output") or "",
            live=False if flags.get("no-live") else None,
            inspect=bool(flags.get("inspect", True)),
            engine=flags.get("engine") or "native",
            auto_ports=bool(flags.get("auto-ports")),
            selector=flags.get("selector") or "",
            all_namespaces=bool(flags.get("all-namespaces")),
            annotated=bool(flags.get("annotated")),
            balance=bool(flags.get("balance")),
            save=flags.get("save") or "",
            recalled_discoveries=[d for s in sets for d in s.discoveries],
            recalled_sets=list(sets),
            own_set=ForwardSet(
                tuple((text, tuple(ports)) for text, ports in split_targets(args)),
                _own_discoveries(flags),
                str(flags.get("context") or ""),
                flags.namespace,
                remembered_flags(flags),
            ),
        )

    def validate(self) -> None:
        _check_pod_running_timeout(self.pod_running_timeout)
        if not self.discovers and not self.targets:
            raise VibeError("at least 1 PORT is required for port-forward")
        if not all(target.ports for target in self.targets):
            raise VibeError("at least 1 PORT is required for port-forward")
        if self.all_namespaces and not (self.selector or self.annotated):
            raise UsageError("-A/--all-namespaces needs -l/--selector or --annotated",
                             "port-forward")  # fmt: skip
        check_local_ports_unique(self.targets)
        if self.output not in OUTPUT_FORMATS:
            raise VibeError(
                'unable to match a printer suitable for the output format "%s", allowed formats '
                "are: json" % self.output
            )
        if self.engine not in ENGINES:
            raise UsageError('invalid argument "%s" for "--engine" flag: must be one of: %s'
                             % (self.engine, ", ".join(ENGINES)), "port-forward")  # fmt: skip

    def forward_options(self) -> ForwardOptions:
        return ForwardOptions(
            self.listen, self.pod_running_timeout, self.inspect, Engine(self.engine), self.balance
        )


def _own_discoveries(flags: ParsedFlags) -> Tuple[DiscoverySpec, ...]:
    selector, annotated = flags.get("selector") or "", bool(flags.get("annotated"))
    if not (selector or annotated):
        return ()
    return (DiscoverySpec(selector, annotated, bool(flags.get("all-namespaces"))),)


def _check_pod_running_timeout(timeout: float) -> None:
    if timeout <= 0:
        raise UsageError("--pod-running-timeout must be higher than zero", "port-forward")


# ---- remembered forwards (@N, @NAME) and the project file's groups (pure) ----


@frozen_record
class DiscoverySpec:
    """-l SELECTOR or --annotated, in a namespace (or all) and a context."""

    selector: str = ""
    annotated: bool = False
    all_namespaces: bool = False
    namespace: str = ""
    context: str = ""


#: Flags a remembered set keeps (an explicit flag on the command line wins over them).
REMEMBERED_FLAGS = ("address", "balance", "auto-ports", "engine", "inspect")


@frozen_record
class ForwardSet:
    """What one command forwards, as the store and the project file keep it: targets as typed
    (TYPE/NAME and its ports), discoveries, the context and namespace, and flags."""

    targets: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    discoveries: Tuple[DiscoverySpec, ...] = ()
    context: str = ""
    namespace: str = ""
    flags: Tuple[Tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """The identity of a set: the same forwards in the same place are one entry."""
        import hashlib

        text = json.dumps(
            [
                self.targets,
                [list(_record_values(d)) for d in self.discoveries],
                self.context,
                self.namespace,
                sorted(self.flags),
            ],
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        parts = [" ".join((text, *ports)) for text, ports in self.targets]
        for spec in self.discoveries:
            parts.append("--annotated" if spec.annotated else "-l " + spec.selector)
        return ", ".join(parts)

    def target_args(self, auto: bool = False) -> List[TargetArgs]:
        """The targets, parsed as the command line would be, in this set's context. With
        `auto`, written local ports may move to free ones (a remembered set, started again)."""
        parsed = []
        for text, ports in self.targets:
            for target in parse_targets([text, *ports]):
                if auto:
                    specs = tuple(PortSpec(p.local, p.remote, p.text, True) for p in target.ports)
                    target = TargetArgs(target.ref, specs, target.namespace)
                parsed.append(_placed(target, self.namespace, self.context))
        return parsed


def _placed(target: TargetArgs, namespace: str, context: str) -> TargetArgs:
    return TargetArgs(target.ref, target.ports, target.namespace or namespace, context)


@frozen_record
class StoredSet:
    """One remembered set: the set, its optional name, and how it was used."""

    forward_set: ForwardSet
    name: str = ""
    uses: int = 0
    first_use: float = 0.0
    last_use: float = 0.0
    resolved: Tuple[str, ...] = ()  # "127.0.0.1:8080 → svc/web :8080", as it last ran


#: Frecency: uses weighed by how recent the last one was (Firefox's buckets, in hours).
FRECENCY_BUCKETS = ((4, 100), (24, 80), (96, 60), (336, 40), (744, 20))
FRECENCY_OLD_WEIGHT = 10


def frecency(entry: StoredSet, now: float) -> float:
    hours = max(0.0, now - entry.last_use) / 3600
    weight = next((w for limit, w in FRECENCY_BUCKETS if hours <= limit), FRECENCY_OLD_WEIGHT)
    return entry.uses * weight


def rank_stored(entries: Sequence[StoredSet], now: float) -> List[StoredSet]:
    """--recent's order: frecency, then the latest use first."""
    return sorted(entries, key=lambda entry: (-frecency(entry, now), -entry.last_use))


def human_ago(seconds: float) -> str:
    """'just now', '5m ago', '2h ago', '3d ago'."""
    if seconds < 60:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return "%d%s ago" % (seconds // size, unit)
    raise AssertionError("unreachable")


def recent_lines(ranked: Sequence[StoredSet], now: float, groups: Sequence[str] = ()) -> List[str]:
    """One line per remembered set: number, name, where, what, when."""
    lines = []
    for index, entry in enumerate(ranked, 1):
        where = "/".join(
            part
            for part in (
                entry.forward_set.context or "(current context)",
                entry.forward_set.namespace,
            )
            if part
        )
        name = "@" + entry.name if entry.name else "-"
        shadowed = " (the project file's @%s wins)" % entry.name if entry.name in groups else ""
        lines.append(
            "%3d  %-12s %-28s %s  %s, %d use%s%s"
            % (
                index,
                name,
                where,
                entry.forward_set.describe(),
                human_ago(now - entry.last_use),
                entry.uses,
                "" if entry.uses == 1 else "s",
                shadowed,
            )
        )
    return lines


def pick_stored(reference: str, ranked: Sequence[StoredSet]) -> Optional[StoredSet]:
    """@3 (a number of --recent's list) or @name."""
    label = reference[1:]
    if label.isdigit():
        index = int(label)
        return ranked[index - 1] if 0 < index <= len(ranked) else None
    return next((entry for entry in ranked if entry.name == label), None)


# -- the project file: .kubectl-vibe.yaml --

PROJECT_FILE_NAME = ".kubectl-vibe.yaml"
_PROJECT_KEYS = ("groups",)
_GROUP_KEYS = ("context", "namespace", "forwards")
_FORWARD_KEYS = ("target", "selector", "annotated", "all-namespaces", "namespace")


class ProjectError(VibeError):
    """A mistake in the project file: `FILE:LINE: problem`."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        super().__init__("%s:%d: %s" % (path, line, problem))

    def render(self) -> str:
        return "error: " + self.message


def parse_project(text: str, path: str) -> Dict[str, ForwardSet]:
    """The project file's groups, validated against the README's schema; the first mistake
    is a ProjectError naming its line. Safe YAML only (no tags, no objects)."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ProjectError(
            path, line, "not valid YAML: %s" % getattr(exc, "problem", exc)
        ) from None
    if root is None:
        return {}
    _check_tags(root, path)
    groups_node = _mapping_entry(_mapping(root, path, "the file"), path, _PROJECT_KEYS, "groups")
    if groups_node is None:
        raise ProjectError(path, root.start_mark.line + 1, "no `groups:` mapping")
    groups = {}
    for key_node, value in _mapping(groups_node, path, "groups").value:
        name = _scalar(key_node, path, "a group name")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ProjectError(
                path,
                key_node.start_mark.line + 1,
                "group name %r: use letters, digits, '.', '_' and '-'" % name,
            )
        groups[name] = _group(value, path, name, key_node.start_mark.line + 1)
    return groups


_PLAIN_YAML_TAGS = frozenset(
    "tag:yaml.org,2002:" + name for name in ("map", "seq", "str", "int", "float", "bool", "null")
)


def _check_tags(node: Any, path: str) -> None:
    """Plain YAML only: a tag (`!!python/object`, `!Ref`) is refused, never interpreted."""
    if str(node.tag) not in _PLAIN_YAML_TAGS:
        raise ProjectError(path, node.start_mark.line + 1, "not valid YAML: tag %s is not "
                           "allowed here" % node.tag)  # fmt: skip
    children = node.value if isinstance(node.value, list) else []
    for child in children:
        for item in child if isinstance(child, tuple) else (child,):
            _check_tags(item, path)


def _group(node: Any, path: str, name: str, line: int) -> ForwardSet:
    mapping = _mapping(node, path, "group %s" % name)
    context = _optional_scalar(_mapping_entry(mapping, path, _GROUP_KEYS, "context"), path)
    namespace = _optional_scalar(_mapping_entry(mapping, path, _GROUP_KEYS, "namespace"), path)
    forwards = _mapping_entry(mapping, path, _GROUP_KEYS, "forwards")
    if forwards is None or not getattr(forwards, "value", None):
        raise ProjectError(path, line, "group %s has no forwards" % name)
    if not isinstance(forwards.value, list):
        raise ProjectError(path, forwards.start_mark.line + 1, "forwards: expected a list")
    targets, discoveries = [], []
    for item in forwards.value:
        target, discovery = _forward_item(item, path, namespace, context)
        if target is not None:
            targets.append(target)
        if discovery is not None:
            discoveries.append(discovery)
    return ForwardSet(tuple(targets), tuple(discoveries), context, namespace)


def _forward_item(
    node: Any, path: str, namespace: str, context: str
) -> Tuple[Optional[Tuple[str, Tuple[str, ...]]], Optional[DiscoverySpec]]:
    """`svc/web 8080:80`, or a mapping: {target: ...}, {selector: ...}, {annotated: true}."""
    import yaml

    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        return _target_words(node.value, path, line), None
    mapping = _mapping(node, path, "a forward")
    target = _optional_scalar(_mapping_entry(mapping, path, _FORWARD_KEYS, "target"), path)
    if target:
        return _target_words(target, path, line), None
    selector = _optional_scalar(_mapping_entry(mapping, path, _FORWARD_KEYS, "selector"), path)
    annotated = _optional_scalar(_mapping_entry(mapping, path, _FORWARD_KEYS, "annotated"), path)
    every = _optional_scalar(_mapping_entry(mapping, path, _FORWARD_KEYS, "all-namespaces"), path)
    own = _optional_scalar(_mapping_entry(mapping, path, _FORWARD_KEYS, "namespace"), path)
    if not selector and annotated.lower() != "true":
        raise ProjectError(path, line, "a forward needs `target`, `selector` or `annotated: true`")
    spec = DiscoverySpec(
        selector, annotated.lower() == "true", every.lower() == "true", own or namespace, context
    )
    return None, spec


def _target_words(text: str, path: str, line: int) -> Tuple[str, Tuple[str, ...]]:
    words = text.split()
    if len(words) < 2:
        raise ProjectError(path, line, "%r: a target needs TYPE/NAME and at least one port" % text)
    try:
        parse_targets(words)
    except VibeError as exc:
        raise ProjectError(path, line, "%r: %s" % (text, exc.message)) from None
    if len(parse_targets(words)) > 1:
        raise ProjectError(path, line, "%r: one target per entry" % text)
    return words[0], tuple(words[1:])


def _mapping(node: Any, path: str, what: str) -> Any:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise ProjectError(path, node.start_mark.line + 1, "%s: expected a mapping" % what)
    return node


def _mapping_entry(node: Any, path: str, allowed: Sequence[str], key: str) -> Any:
    """The value node of `key` in a mapping; any key not `allowed` is an error that suggests
    the nearest valid one."""
    import difflib

    found = None
    for key_node, value in node.value:
        name = _scalar(key_node, path, "a key")
        if name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = " (did you mean %r?)" % close[0] if close else ""
            raise ProjectError(
                path,
                key_node.start_mark.line + 1,
                "unknown key %r%s; valid: %s" % (name, hint, ", ".join(allowed)),
            )
        if name == key:
            found = value
    return found


def _scalar(node: Any, path: str, what: str) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        raise ProjectError(path, node.start_mark.line + 1, "%s: expected a single value" % what)
    return str(node.value)


def _optional_scalar(node: Any, path: str) -> str:
    return "" if node is None else _scalar(node, path, "a value")


# ==== §08 Targets ==============================================================================

_SELECTOR_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "", "DoesNotExist": "!"}


def label_selector_string(selector: Optional[Dict[str, Any]]) -> str:
    """metav1.LabelSelectorAsSelector(...).String(): requirements sorted by key, values sorted."""
    if not selector:
        return ""
    requirements: List[Tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        requirements.append((key, "%s=%s" % (key, value)))
    for expression in selector.get("matchExpressions") or []:
        requirements.append((expression.get("key", ""), _expression_string(expression)))
    return ",".join(text for _, text in sorted(requirements, key=lambda item: item[0]))


def _expression_string(expression: Dict[str, Any]) -> str:
    key = expression.get("key", "")
    operator = expression.get("operator", "")
    if operator not in _SELECTOR_OPERATORS:
        raise VibeError(
            'invalid label selector: "%s" is not a valid label selector operator' % operator
        )
    values = sorted(expression.get("values") or [])
    if operator in ("In", "NotIn"):
        if not values:
            raise VibeError(
                "invalid label selector: values: Invalid value: []string(nil): for 'in', 'notin' "
                "operators, values set can't be empty"
            )
        return "%s %s (%s)" % (key, _SELECTOR_OPERATORS[operator], ",".join(values))
    return _SELECTOR_OPERATORS[operator] + key


def set_selector_string(labels: Dict[str, str]) -> str:
    """labels.SelectorFromSet(...).String(): `a=1,b=2`, sorted by key."""
    return ",".join("%s=%s" % (key, labels[key]) for key in sorted(labels))


def selector_for(obj: Dict[str, Any]) -> str:
    """The label selector kubectl lists pods with (polymorphichelpers.SelectorsForObject)."""
    kind = _KIND_BY_API_KIND.get(obj.get("kind", ""), ResourceKind.OTHER)
    spec = obj.get("spec") or {}
    type_name = go_type_name(obj)
    if type_name == "*unstructured.Unstructured":
        kind = ResourceKind.OTHER
    if kind is ResourceKind.SERVICE:
        if not spec.get("selector"):
            raise VibeError(
                "cannot attach to %s: invalid service '%s': Service is defined without a selector"
                % (type_name, (obj.get("metadata") or {}).get("name", ""))
            )
        return set_selector_string(spec["selector"])
    if kind is ResourceKind.REPLICATIONCONTROLLER:
        return set_selector_string(spec.get("selector") or {})
    if kind in (ResourceKind.POD, ResourceKind.OTHER):
        raise VibeError(
            "cannot attach to %s: selector for %s not implemented" % (type_name, type_name)
        )
    try:
        return label_selector_string(spec.get("selector"))
    except VibeError as exc:
        raise VibeError("cannot attach to %s: %s" % (type_name, exc.message)) from None


def pod_phase(pod: Dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def pod_name(pod: Dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name") or "")


def _ready_condition(pod: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition
    return None


def is_pod_ready(pod: Dict[str, Any]) -> bool:
    condition = _ready_condition(pod)
    return condition is not None and condition.get("status") == "True"


def parse_kube_time(text: Optional[str]) -> Optional[float]:
    """RFC 3339 (metav1.Time / MicroTime) → epoch seconds; None for the zero time."""
    if not text:
        return None
    import datetime

    value = text.replace("Z", "+00:00")
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", value)
    fraction = 0.0
    if match:  # Python 3.9's fromisoformat takes only 3 or 6 fraction digits
        value = match.group(1) + match.group(3)
        fraction = float(match.group(2) or 0)
    try:
        return datetime.datetime.fromisoformat(value).timestamp() + fraction
    except ValueError:
        return None


def _ready_time(pod: Dict[str, Any]) -> Optional[float]:
    condition = _ready_condition(pod)
    if condition is None or condition.get("status") != "True":
        return None
    return parse_kube_time(condition.get("lastTransitionTime"))


def _after_or_zero(first: Optional[float], second: Optional[float]) -> bool:
    """podutils.afterOrZero: is `first` after `second`, a zero (None) time being the latest."""
    if first is None or second is None:
        return first is None
    return first > second


def _max_restarts(pod: Dict[str, Any]) -> Tuple[int, int]:
    """(regular, sidecar) highest restart counts, as podutils.maxContainerRestarts."""
    status = pod.get("status") or {}
    regular = max(
        [int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or []] or [0]
    )
    sidecars = {
        c.get("name")
        for c in (pod.get("spec") or {}).get("initContainers") or []
        if c.get("restartPolicy") == "Always"
    }
    sidecar = max(
        [
            int(c.get("restartCount") or 0)
            for c in status.get("initContainerStatuses") or []
            if c.get("name") in sidecars
        ]
        or [0]
    )
    return regular, sidecar


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def active_pods_less(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    """podutils.ActivePods.Less: is `a` a worse pick than `b`? (kubectl takes the greatest)."""
    node_a = (a.get("spec") or {}).get("nodeName") or ""
    node_b = (b.get("spec") or {}).get("nodeName") or ""
    if node_a != node_b and (not node_a or not node_b):
        return not node_a
    rank_a, rank_b = _PHASE_RANK.get(pod_phase(a), 0), _PHASE_RANK.get(pod_phase(b), 0)
    if rank_a != rank_b:
        return rank_a < rank_b
    if is_pod_ready(a) != is_pod_ready(b):
        return not is_pod_ready(a)
    deleting_a = parse_kube_time((a.get("metadata") or {}).get("deletionTimestamp"))
    deleting_b = parse_kube_time((b.get("metadata") or {}).get("deletionTimestamp"))
    if (deleting_a is None) != (deleting_b is None):
        return deleting_a is not None
    if deleting_a is not None and deleting_b is not None and deleting_a != deleting_b:
        return deleting_a < deleting_b
    if is_pod_ready(a) and is_pod_ready(b) and _ready_time(a) != _ready_time(b):
        return _after_or_zero(_ready_time(a), _ready_time(b))
    restarts_a, restarts_b = _max_restarts(a), _max_restarts(b)
    if restarts_a != restarts_b:
        return restarts_a > restarts_b  # (regular, then sidecar) restarts, as Go compares them
    created_a = parse_kube_time((a.get("metadata") or {}).get("creationTimestamp"))
    created_b = parse_kube_time((b.get("metadata") or {}).get("creationTimestamp"))
    if created_a != created_b:
        return _after_or_zero(created_a, created_b)
    return False


def _active_pods_cmp(a: Dict[str, Any], b: Dict[str, Any]) -> int:
    if active_pods_less(a, b):
        return -1
    return 1 if active_pods_less(b, a) else 0


def rank_pods(pods: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Best pick first: sort.Reverse(podutils.ActivePods), stable for ties (Go's is not)."""
    import functools

    return sorted(pods, key=functools.cmp_to_key(_active_pods_cmp), reverse=True)


def choose_pod(
    pods: Sequence[Dict[str, Any]], exclude: Any = frozenset()
) -> Optional[Dict[str, Any]]:
    """kubectl's pick among the selector's pods, skipping the names in `exclude`."""
    for pod in rank_pods(pods):
        if pod_name(pod) not in exclude:
            return pod
    return None


def pod_not_running_message(pod: Dict[str, Any]) -> str:
    return "unable to forward port because pod is not running. Current status=%s" % pod_phase(pod)


@frozen_record
class PortMapping:
    """One resolved port: local port (0 = random) → container port on the chosen pod."""

    local_port: int
    remote_port: int
    spec: PortSpec
    service_port: Optional[int] = None


def _container_ports(pod: Dict[str, Any], with_init: bool = True) -> List[Dict[str, Any]]:
    spec = pod.get("spec") or {}
    groups = ("containers", "initContainers") if with_init else ("containers",)
    return [
        port for group in groups for c in spec.get(group) or [] for port in c.get("ports") or []
    ]


def container_port_by_name(pod: Dict[str, Any], name: str) -> int:
    """util.LookupContainerPortNumberByName: containers first, then initContainers."""
    for port in _container_ports(pod):
        if (port.get("name") or "") == name:
            return int(port.get("containerPort") or 0)
    raise VibeError("Pod '%s' does not have a named port '%s'" % (pod_name(pod), name))


def service_port_by_name(svc: Dict[str, Any], name: str) -> int:
    for port in (svc.get("spec") or {}).get("ports") or []:
        if (port.get("name") or "") == name:
            return int(port.get("port") or 0)
    raise VibeError(
        "Service '%s' does not have a named port '%s'"
        % ((svc.get("metadata") or {}).get("name", ""), name)
    )


def container_port_for_service_port(svc: Dict[str, Any], pod: Dict[str, Any], port: int) -> int:
    """util.LookupContainerPortNumberByServicePort: targetPort number, name, omitted, headless."""
    spec = svc.get("spec") or {}
    for entry in spec.get("ports") or []:
        if int(entry.get("port") or 0) != port:
            continue
        if spec.get("clusterIP") == "None":
            return port
        target = entry.get("targetPort")
        if target is None or isinstance(target, int):
            return int(target or 0) or port  # an omitted targetPort reads as 0: the port itself
        return container_port_by_name(pod, str(target))
    raise VibeError(
        "Service %s does not have a service port %d"
        % ((svc.get("metadata") or {}).get("name", ""), port)
    )


def _udp_only(ports: Sequence[Dict[str, Any]], number_key: str) -> set:
    udp = {int(p.get(number_key) or 0) for p in ports if p.get("protocol") == "UDP"}
    tcp = {int(p.get(number_key) or 0) for p in ports if p.get("protocol") == "TCP"}
    return udp - tcp


def _check_udp(specs: Sequence[PortSpec], udp_only: set, lookup: Callable[[str], int]) -> None:
    """kubectl checkUDPPorts: the remote (number, or its name's number) must not be UDP-only."""
    for spec in specs:
        number = spec.remote_number
        if number is None:
            number = lookup(spec.remote)
        if number in udp_only:
            raise VibeError("UDP protocol is not supported for %s" % spec.remote)


def resolve_mappings(
    ref: ResourceRef, obj: Dict[str, Any], pod: Dict[str, Any], specs: Sequence[PortSpec]
) -> List[PortMapping]:
    """kubectl's port translation, re-applied to each new pod (named targetPorts may differ)."""
    if obj.get("kind") == "Service":
        svc_ports = (obj.get("spec") or {}).get("ports") or []
        _check_udp(
            specs, _udp_only(svc_ports, "port"), lambda name: service_port_by_name(obj, name)
        )
        return [_service_mapping(obj, pod, spec) for spec in specs]
    udp_only = _udp_only(_container_ports(pod, with_init=False), "containerPort")
    _check_udp(specs, udp_only, lambda name: container_port_by_name(pod, name))
    return [_pod_mapping(pod, spec) for spec in specs]


def _service_mapping(svc: Dict[str, Any], pod: Dict[str, Any], spec: PortSpec) -> PortMapping:
    """translateServicePortToTargetPort: a named remote becomes its Service port number first."""
    service_port = spec.remote_number
    if service_port is None:
        service_port = service_port_by_name(svc, spec.remote)
    container_port = container_port_for_service_port(svc, pod, service_port)
    # No local port given: kubectl keeps the Service port (a number even for `http`).
    local = parse_local_port(str(service_port)) if spec.local is None else spec.local
    return PortMapping(local, parse_container_port(str(container_port)), spec, service_port)


def _pod_mapping(pod: Dict[str, Any], spec: PortSpec) -> PortMapping:
    """convertPodNamedPortToNumber, then client-go parsePorts on the result."""
    if spec.remote == "":
        raise VibeError("remote port cannot be empty")
    remote_text = spec.remote
    if spec.remote_number is None:
        remote_text = str(container_port_by_name(pod, spec.remote))
    local = parse_local_port(remote_text) if spec.local is None else spec.local
    return PortMapping(local, parse_container_port(remote_text), spec, None)


def _container_health_lines(status: Dict[str, Any], init: bool) -> List[str]:
    lines = []
    name = ("init container %s" if init else "container %s") % status.get("name", "?")
    restarts = int(status.get("restartCount") or 0)
    terminated = (status.get("lastState") or {}).get("terminated") or {}
    if restarts:
        line = "%s restarted %d time%s" % (name, restarts, "" if restarts == 1 else "s")
        if terminated:
            line += " (last: %s, exit code %s)" % (
                terminated.get("reason") or "Terminated",
                terminated.get("exitCode", "?"),
            )
        lines.append(line)
    waiting = (status.get("state") or {}).get("waiting") or {}
    if waiting.get("reason") and waiting.get("reason") != "PodInitializing":
        detail = waiting.get("message") or ""
        lines.append(
            "%s is waiting: %s%s" % (name, waiting["reason"], ": " + detail if detail else "")
        )
    now_terminated = (status.get("state") or {}).get("terminated") or {}
    if now_terminated and not init:
        lines.append(
            "%s terminated: %s, exit code %s"
            % (
                name,
                now_terminated.get("reason") or "Terminated",
                now_terminated.get("exitCode", "?"),
            )
        )
    return lines


def _condition(pod: Dict[str, Any], kind: str) -> Dict[str, Any]:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return {}


def _pod_state_lines(pod: Dict[str, Any]) -> List[str]:
    """Deleting, phase (with Evicted and such), unschedulable: the pod-level facts."""
    status = pod.get("status") or {}
    name = pod_name(pod)
    lines = []
    deleting = (pod.get("metadata") or {}).get("deletionTimestamp")
    if deleting:
        lines.append("pod %s is being deleted (since %s)" % (name, deleting))
    phase = pod_phase(pod)
    if phase and phase != "Running":
        why = ": ".join(part for part in (status.get("reason"), status.get("message")) if part)
        lines.append("pod %s is %s%s" % (name, phase, " (%s)" % why if why else ""))
    scheduled = _condition(pod, "PodScheduled")
    if scheduled.get("status") == "False":
        why = scheduled.get("message") or scheduled.get("reason") or ""
        lines.append("pod %s cannot be scheduled%s" % (name, ": " + why if why else ""))
    return lines


def describe_pod_health(pod: Dict[str, Any]) -> List[str]:
    """Plain lines that may explain a dead tunnel: restarts (OOMKilled...), waits, not Ready.

    Each line is stable while the fact holds (no ages), so callers can diff two snapshots.
    """
    status = pod.get("status") or {}
    lines = _pod_state_lines(pod)
    for container in status.get("initContainerStatuses") or []:
        lines.extend(_container_health_lines(container, init=True))
    for container in status.get("containerStatuses") or []:
        lines.extend(_container_health_lines(container, init=False))
    if pod_phase(pod) == "Running" and not is_pod_ready(pod):
        condition = _ready_condition(pod) or {}
        why = condition.get("message") or condition.get("reason") or ""
        lines.append("pod %s is not Ready%s" % (pod_name(pod), ": " + why if why else ""))
    return lines


def event_time(event: Dict[str, Any]) -> float:
    """When an event last happened (lastTimestamp, eventTime, or creation), epoch seconds."""
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        value = parse_kube_time(event.get(key))
        if value is not None:
            return value
    return parse_kube_time((event.get("metadata") or {}).get("creationTimestamp")) or 0.0


#: Phases a pod never leaves: waiting for it is pointless.
POD_TERMINAL_PHASES = frozenset(("Succeeded", "Failed"))

# ---- discovery: what a Service, workload or pod asks to have forwarded (annotations) ----------

#: The plugin's own annotation: "8080:http,5432" (local port per port name or number; a port
#: without a local one gets an automatic local port).
ANNOTATION_PORTS = "kubectl-vibe.io/ports"
#: k9s's: "container::[local:]port,..." (its plain form "[local:]port" too), on pods.
ANNOTATION_K9S = "k9scli.io/auto-port-forwards"
#: kftray's: enabled "true" forwards every port; configs "alias-localport-targetport,...".
ANNOTATION_KFTRAY_ENABLED = "kftray.app/enabled"
ANNOTATION_KFTRAY_CONFIGS = "kftray.app/configs"
_K9S_ENTRY = LazyPattern(r"\A(?:([\w.-]+)::)?(?:(\d+):)?([\w-]+)\Z")
_KFTRAY_ENTRY = LazyPattern(r"\A(.+)-(\d+)-([\w-]+)\Z")
_PORT_NAME = LazyPattern(r"\A(?:\d{1,5}|[a-z0-9]([-a-z0-9]*[a-z0-9])?)\Z")


@frozen_record
class AnnotatedPorts:
    """What an object's annotations ask for: port specs (local 0 = choose one), whether every
    port is wanted (kftray.app/enabled alone), and the entries that could not be read."""

    specs: Tuple[PortSpec, ...] = ()
    all_ports: bool = False
    bad: Tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        return bool(self.specs or self.all_ports or self.bad)


def annotated_ports(obj: Dict[str, Any]) -> AnnotatedPorts:
    """The annotations of an object (or of a workload's pod template), read in priority order:
    the plugin's own, kftray's, k9s's. The first one present decides."""
    annotations = _annotations_of(obj)
    if ANNOTATION_PORTS in annotations:
        return _parse_entries(annotations[ANNOTATION_PORTS], ANNOTATION_PORTS, _vibe_entry)
    if ANNOTATION_KFTRAY_CONFIGS in annotations:
        return _parse_entries(annotations[ANNOTATION_KFTRAY_CONFIGS], ANNOTATION_KFTRAY_CONFIGS,
                              _kftray_entry)  # fmt: skip
    if str(annotations.get(ANNOTATION_KFTRAY_ENABLED, "")).lower() == "true":
        return AnnotatedPorts(all_ports=True)
    if ANNOTATION_K9S in annotations:
        return _parse_entries(annotations[ANNOTATION_K9S], ANNOTATION_K9S, _k9s_entry)
    return AnnotatedPorts()


def _annotations_of(obj: Dict[str, Any]) -> Dict[str, str]:
    own = (obj.get("metadata") or {}).get("annotations") or {}
    template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return {**(template.get("annotations") or {}), **own}


def _parse_entries(
    value: str, key: str, parse: Callable[[str], Optional[PortSpec]]
) -> AnnotatedPorts:
    specs, bad = [], []
    for entry in (part.strip() for part in str(value).split(",")):
        if not entry:
            continue
        spec = parse(entry)
        if spec is None:
            bad.append("%s: %r" % (key, entry))
        else:
            specs.append(spec)
    return AnnotatedPorts(tuple(specs), False, tuple(bad))


def _port_spec(local: Optional[str], remote: str, text: str) -> Optional[PortSpec]:
    if not _PORT_NAME.match(remote) or (remote.isdigit() and not 0 < int(remote) < 65536):
        return None
    if local is not None and not (local.isdigit() and 0 < int(local) < 65536):
        return None
    return PortSpec(int(local) if local else 0, remote, text, local is None)


def _vibe_entry(entry: str) -> Optional[PortSpec]:
    local, colon, remote = entry.rpartition(":")
    return _port_spec(local if colon else None, remote, entry)


def _kftray_entry(entry: str) -> Optional[PortSpec]:
    match = _KFTRAY_ENTRY.match(entry)
    return _port_spec(match.group(2), match.group(3), entry) if match else None


def _k9s_entry(entry: str) -> Optional[PortSpec]:
    match = _K9S_ENTRY.match(entry)
    return _port_spec(match.group(2), match.group(3), entry) if match else None


def service_tcp_ports(svc: Dict[str, Any]) -> List[PortSpec]:
    """Every TCP port of a Service, each with a local port to be chosen."""
    specs = []
    for entry in (svc.get("spec") or {}).get("ports") or []:
        if (entry.get("protocol") or "TCP") == "TCP" and entry.get("port"):
            specs.append(PortSpec(0, str(entry["port"]), ":%s" % entry["port"], True))
    return specs


def template_tcp_ports(obj: Dict[str, Any]) -> List[PortSpec]:
    """Every TCP container port of a pod, or of a workload's pod template."""
    spec = obj.get("spec") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or spec
    numbers = []
    for container in pod_spec.get("containers") or []:
        for entry in container.get("ports") or []:
            number = entry.get("containerPort")
            if (entry.get("protocol") or "TCP") == "TCP" and number and number not in numbers:
                numbers.append(number)
    return [PortSpec(0, str(number), ":%d" % number, True) for number in numbers]


def ports_to_forward(obj: Dict[str, Any]) -> Tuple[List[PortSpec], Tuple[str, ...]]:
    """(specs, unreadable annotation entries) for one discovered object: its annotations' ports
    when it has any, else every TCP port."""
    annotated = annotated_ports(obj)
    if annotated.specs:
        return list(annotated.specs), annotated.bad
    if obj.get("kind") == "Service":
        return service_tcp_ports(obj), annotated.bad
    return template_tcp_ports(obj), annotated.bad


#: Kinds discovery falls back to when no Service matches, in order.
DISCOVERY_WORKLOADS = (ResourceKind.DEPLOYMENT, ResourceKind.STATEFULSET, ResourceKind.DAEMONSET)


def discovered_target(obj: Dict[str, Any], kind: ResourceKind, default_ns: str) -> TargetArgs:
    """A discovered object as a command-line target: `svc/web`, or `prod/svc/web` when it is
    not in the default namespace."""
    metadata = obj.get("metadata") or {}
    name, namespace = metadata.get("name", ""), metadata.get("namespace", "")
    short = kind.spellings[2] if len(kind.spellings) > 2 else kind.spellings[0]
    text = "%s/%s" % (short, name)
    if namespace and namespace != default_ns:
        text = "%s/%s" % (namespace, text)
    specs, _ = ports_to_forward(obj)
    return TargetArgs(ResourceRef(kind, name, text, short), tuple(specs), namespace)


def close_labels(selector: str, objects: Sequence[Dict[str, Any]]) -> List[str]:
    """Labels in scope that look like the selector's (a typo, another value): `app=web-api`."""
    import difflib

    present = sorted(
        {"%s=%s" % item for obj in objects for item in
         ((obj.get("metadata") or {}).get("labels") or {}).items()}
    )  # fmt: skip
    wanted = [part.strip() for part in re.split(r",(?![^()]*\))", selector) if part.strip()]
    close: List[str] = []
    for requirement in wanted:
        for label in difflib.get_close_matches(requirement, present, n=3, cutoff=0.8):
            if label not in close:
                close.append(label)
    return close


# ==== §09 kubectl output =======================================================================


class ErrorCause(enum.Enum):
    """Why a kubectl port-forward error happened, as far as its text tells."""

    POD_GONE = "pod-gone"
    NOT_LISTENING = "not-listening"
    PEER_RESET = "peer-reset"
    STUCK_TUNNEL = "stuck-tunnel"
    FORBIDDEN = "forbidden"
    UNREACHABLE = "unreachable"
    POD_NOT_READY = "pod-not-ready"  # never from kubectl's text: the pod watch saw it
    CONNECTION_LOST = "connection-lost"  # a native tunnel's connection ended (GOAWAY, EOF)
    UPGRADE_REFUSED = "upgrade-refused"  # the API server will not upgrade to SPDY
    OTHER = "other"


#: (cause, pattern) checked in order: the first match wins. The API-server patterns come before
#: NOT_LISTENING because "connection refused" means the apiserver when it names a dial to it.
_CAUSE_PATTERNS: Tuple[Tuple[ErrorCause, str], ...] = (
    (ErrorCause.FORBIDDEN, r"is forbidden|\bForbidden\b|\b403\b"),
    (
        ErrorCause.POD_GONE,
        r"failed to find sandbox|No such container|network namespace for sandbox .* is closed"
        r"|sandbox .* is not running|pods? \"[^\"]*\" not found|container not running"
        r"|cannot find sandbox|pod not found|pod .* is terminated|container .* is not running"
        r"|unable to find sandbox|could not find sandbox|container not found|pod does not exist",
    ),
    (ErrorCause.STUCK_TUNNEL, r"Timeout occurred"),
    (
        ErrorCause.UNREACHABLE,
        r"Unable to connect to the server|no such host|dial tcp [^ ]+: i/o timeout"
        r"|The connection to the server .* was refused|error dialing backend"
        r"|(?:Get|Post|Put|Patch) \"[^\"]+\": dial tcp [^ ]+: connect: connection refused"
        r"|tls: |x509: |net/http: TLS handshake timeout|no route to host|network is unreachable",
    ),
    (
        ErrorCause.NOT_LISTENING,
        r"failed to connect to localhost:\d+ inside namespace|(?i:connection refused)",
    ),
    (ErrorCause.PEER_RESET, r"connection reset by peer|broken pipe|Connection reset"),
)


def classify_error(text: str) -> ErrorCause:
    """Map a kubectl error text (any format) to the cause a person would act on."""
    for cause, pattern in _CAUSE_PATTERNS:
        if re.search(pattern, text):
            return cause
    return ErrorCause.OTHER


_CAUSE_TEXT: Dict[ErrorCause, Tuple[str, str]] = {
    ErrorCause.POD_GONE: (
        "the pod (or its sandbox) is gone: it was deleted, evicted or replaced",
        "a new pod is picked when the target is a Service or workload; for a bare pod, "
        "forward to its deployment or service instead",
    ),
    ErrorCause.NOT_LISTENING: (
        "nothing listens on that port inside the pod (connection refused)",
        "check the container port and that the app is up (kubectl logs); the app may still be "
        "starting",
    ),
    ErrorCause.PEER_RESET: (
        "the app in the pod reset the connection (its side closed abruptly)",
        "usually the app's doing (TLS mismatch, crash, idle timeout); check kubectl logs",
    ),
    ErrorCause.STUCK_TUNNEL: (
        "the tunnel stopped answering (stream creation timed out)",
        "the tunnel is rebuilt; if it repeats, check API server and kubelet load",
    ),
    ErrorCause.FORBIDDEN: (
        "RBAC forbids port-forwarding here",
        "you need get and create on pods/portforward (kubectl auth can-i create pods/portforward)",
    ),
    ErrorCause.UNREACHABLE: (
        "the API server is unreachable",
        "check the network/VPN and the kubeconfig context (kubectl cluster-info)",
    ),
    ErrorCause.POD_NOT_READY: (
        "the pod stopped being Ready (its container is restarting or failing its probe)",
        "a Ready pod of the same target is used meanwhile; check kubectl describe pod",
    ),
    ErrorCause.CONNECTION_LOST: (
        "the tunnel's connection closed (kubectl proxy or the API server dropped it)",
        "a new tunnel is opened at once; if it repeats, check kubectl proxy's events above and "
        "the API server's health (kubectl get --raw /readyz)",
    ),
    ErrorCause.UPGRADE_REFUSED: (
        "the API server refused the SPDY upgrade for port-forward",
        "kubectl port-forward is used instead (--engine kubectl does so from the start)",
    ),
    ErrorCause.OTHER: ("kubectl reported an unexpected error", "see the message above"),
}


def describe_cause(cause: ErrorCause) -> Tuple[str, str]:
    """(what happened, what to do), one line each, for the live view and the summary."""
    return _CAUSE_TEXT[cause]


@frozen_record
class ForwardingFrom:
    address: str
    local_port: int
    remote_port: int


@frozen_record
class HandlingConnection:
    local_port: int


@frozen_record
class ForwardError:
    cause: ErrorCause
    message: str
    local_port: Optional[int] = None
    remote_port: Optional[int] = None


@frozen_record
class LostConnection:
    pass


@frozen_record
class ListenFailed:
    local_port: int
    message: str


@frozen_record
class FatalError:
    message: str
    cause: ErrorCause = ErrorCause.OTHER


@frozen_record
class Unrecognized:
    text: str


KubectlEvent = Any  # one of the frozen dataclasses above

_FORWARDING_FROM = LazyPattern(r"^Forwarding from (\[[^\]]+\]|[^\s:]+):(\d+) -> (\d+)$")
_HANDLING = LazyPattern(r"^Handling connection for (\d+)$")
_LISTEN_FAILED = LazyPattern(r"^Unable to listen on port (\d+): (.*)$")
#: Rare (client-go getListener): the listener's own address could not be read back.
_FAILED_TO_FORWARD = LazyPattern(r"^Failed to forward from \S+:(\d+) -> \d+$")
#: klog header: severity, MMDD, time, thread id, file:line]
_KLOG = LazyPattern(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ([^ \]]+)\] (.*)$")
#: "an error occurred forwarding 8080 -> 80: ..." (≤1.36 message body)
_FORWARDING_PORTS = LazyPattern(r"(?:forwarding|port) (\d+) -> (\d+)")
_GO_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_STRUCTURED = LazyPattern(r"^" + _GO_QUOTED + r"(.*)$")
_KV = LazyPattern(r"(\w+)=(" + _GO_QUOTED + r"|\S+)")


_GO_ESCAPE = LazyPattern(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.S)
_GO_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _go_escape(match: Any) -> str:
    code = match.group(1)
    if code[0] in "xuU" and len(code) > 1:
        return chr(int(code[1:], 16))
    if len(code) == 3 and code.isdigit():
        return chr(int(code, 8))
    return _GO_SIMPLE_ESCAPES.get(code, code)


def go_unquote(body: str) -> str:
    """Undo Go's strconv.Quote inside the quotes (klog's structured values use it).

    \\xHH escapes are bytes in Go; they are joined back into UTF-8 text where they form it.
    """
    text = _GO_ESCAPE.sub(_go_escape, body)
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def parse_klog_structured(text: str) -> Tuple[str, Dict[str, str]]:
    """`"msg" k=v k2="quoted"` → (msg, {k: v}). Plain (unstructured) text → (text, {})."""
    match = _STRUCTURED.match(text)
    if not match:
        return text, {}
    values: Dict[str, str] = {}
    for kv in _KV.finditer(match.group(2)):
        raw = kv.group(2)
        values[kv.group(1)] = go_unquote(kv.group(3)) if raw.startswith('"') else raw
    return go_unquote(match.group(1)), values


def _int_or_none(text: Optional[str]) -> Optional[int]:
    return int(text) if text and text.isdigit() else None


#: Structured klog messages whose `err` value already says everything (1.31+ and 1.37+).
_KLOG_WRAPPERS = ("Unhandled Error", "An error occurred forwarding")


def _klog_error_text(message: str, err: str) -> str:
    """One readable text from a klog message and its err value, in any kubectl format."""
    if not err:
        return message
    if message in _KLOG_WRAPPERS:
        return err
    return "%s: %s" % (message, err)


def _parse_klog(text: str) -> KubectlEvent:
    """A klog line: ≤1.30 plain text, 1.31-1.36 "Unhandled Error" err=..., 1.37+ structured."""
    match = _KLOG.match(text)
    assert match is not None
    message, values = parse_klog_structured(match.group(3))
    if message == "lost connection to pod":  # kubectl 1.23-1.26 logged it, then exited 0
        return LostConnection()
    err = values.get("err", "")
    if match.group(1) in "IW" and not err:  # -v chatter, not a failure
        return Unrecognized(text)
    full = _klog_error_text(message, err)
    local, remote = _int_or_none(values.get("localPort")), _int_or_none(values.get("remotePort"))
    ports = _FORWARDING_PORTS.search(full)
    if ports and local is None:  # older formats carry the ports inside the text only
        local, remote = int(ports.group(1)), int(ports.group(2))
    return ForwardError(classify_error(full), full, local, remote)


def parse_kubectl_line(stream_name: str, text: str) -> KubectlEvent:
    """One line kubectl port-forward printed (stdout or stderr) → an event.

    The formats never overlap between kubectl's two streams, so stream_name ("stdout" or
    "stderr") does not change the answer; it is taken so callers need not pre-sort lines.
    """
    line = text.rstrip("\r\n")
    match = _FORWARDING_FROM.match(line)
    if match:
        address = match.group(1)
        if address.startswith("["):
            address = address[1:-1]
        return ForwardingFrom(address, int(match.group(2)), int(match.group(3)))
    match = _HANDLING.match(line)
    if match:
        return HandlingConnection(int(match.group(1)))
    match = _LISTEN_FAILED.match(line)
    if match:
        return ListenFailed(int(match.group(1)), match.group(2))
    match = _FAILED_TO_FORWARD.match(line)
    if match:
        return ListenFailed(int(match.group(1)), line)
    if line == "error: lost connection to pod":
        return LostConnection()
    if line.startswith("error: "):
        message = line[len("error: ") :]
        return FatalError(message, classify_error(message))
    if _KLOG.match(line):
        return _parse_klog(line)
    if line.startswith(("Error from server", "The connection to the server", "Unable to connect")):
        return FatalError(line, classify_error(line))
    return Unrecognized(line)


# ==== §10 Cluster protocols ====================================================================
#
# What the plugin speaks to its one `kubectl proxy` per context, with no I/O here: HTTP/1.1
# requests and responses (sans-IO, like h11), the API server's errors in kubectl's words, and
# SPDY/3.1 as client-go's port-forwarder uses it (frames, compressed header blocks, the error
# stream's texts). §15 and §16 drive these over a Unix socket.

# ---- HTTP/1.1 (sans-IO): requests out, a response's head and body in ----


def http_request(method: str, target: str, headers: Sequence[Tuple[str, str]] = ()) -> bytes:
    """An HTTP/1.1 request head for kubectl proxy: `Host: localhost` passes its default
    --accept-hosts filter; the body is always empty (every call here is a GET or an upgrade)."""
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: localhost", USER_AGENT_HEADER]
    lines.extend("%s: %s" % pair for pair in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


#: The newest kubectl minor version whose wording the messages here were checked against.
KUBECTL_NEWEST_MINOR = 37
#: Sent with every request, so API server audit logs can tell the plugin's calls apart.
USER_AGENT_HEADER = "User-Agent: kubectl-vibe/%s" % __version__


@frozen_record
class HttpHead:
    """A response's status line and headers (names lowercased, in order)."""

    status: int
    reason: str
    headers: Tuple[Tuple[str, str], ...]

    def get(self, name: str, default: str = "") -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return default


class HttpEnd:
    """The response body is complete (a class used as a value, like h11's sentinels)."""


class HttpBodyMode(enum.Enum):
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"  # neither: the body ends when the server closes
    NONE = "none"  # 1xx, 204, 304: no body at all


class HttpResponseParser:
    """Sans-IO HTTP/1.1 response reader: feed(bytes) → [HttpHead, body bytes..., HttpEnd].

    feed(b"") means the connection closed. A 101 response ends at its head: the bytes after it
    belong to the upgraded protocol and are kept in `leftover`. Memory is bounded: a head over
    HTTP_MAX_HEAD_BYTES or a chunk-size line over 4 KiB is a protocol error.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.head: Optional[HttpHead] = None
        self.mode = HttpBodyMode.NONE
        self._left = 0  # body bytes left (LENGTH), or of the current chunk (CHUNKED)
        self._chunk_state = "size"  # size | data | crlf | trailer
        self.done = False
        self.leftover = b""

    def feed(self, data: bytes) -> List[Any]:
        if self.done:
            self.leftover += data
            return []
        events: List[Any] = []
        if not data:
            return self._at_close(events)
        self._buffer += data
        if self.head is None and not self._read_head(events):
            return events
        self._read_body(events)
        return events

    def _at_close(self, events: List[Any]) -> List[Any]:
        if self.head is not None and self.mode is HttpBodyMode.UNTIL_CLOSE:
            self.done = True
            events.append(HttpEnd)
            return events
        raise HttpProtocolError("the connection closed before the response was complete")

    def _read_head(self, events: List[Any]) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > HTTP_MAX_HEAD_BYTES:
                raise HttpProtocolError("response head over %d bytes" % HTTP_MAX_HEAD_BYTES)
            return False
        head = parse_http_head(bytes(self._buffer[:end]))
        del self._buffer[: end + 4]
        self.head = head
        self.mode, self._left = _body_mode(head)
        events.append(head)
        if head.status == 101:
            self.done = True
            self.leftover = bytes(self._buffer)
            self._buffer = bytearray()
        return True

    def _read_body(self, events: List[Any]) -> None:
        if self.done:
            return
        if self.mode is HttpBodyMode.NONE:
            self._finish(events)
        elif self.mode is HttpBodyMode.UNTIL_CLOSE:
            self._take(events, len(self._buffer))
        elif self.mode is HttpBodyMode.LENGTH:
            self._take(events, min(self._left, len(self._buffer)))
            if self._left == 0:
                self._finish(events)
        else:
            self._read_chunks(events)

    def _take(self, events: List[Any], count: int) -> None:
        if count:
            events.append(bytes(self._buffer[:count]))
            del self._buffer[:count]
            self._left -= count

    def _finish(self, events: List[Any]) -> None:
        self.done = True
        self.leftover = bytes(self._buffer)
        self._buffer = bytearray()
        events.append(HttpEnd)

    def _read_chunks(self, events: List[Any]) -> None:
        while not self.done:
            if self._chunk_state == "data":
                self._take(events, min(self._left, len(self._buffer)))
                if self._left:
                    return
                self._chunk_state = "crlf"
            line = self._line()
            if line is None:
                return
            self._chunk_line(line, events)

    def _chunk_line(self, line: bytes, events: List[Any]) -> None:
        if self._chunk_state == "crlf":
            if line:
                raise HttpProtocolError("chunk data not followed by CRLF")
            self._chunk_state = "size"
        elif self._chunk_state == "size":
            size_text = line.split(b";", 1)[0].strip()
            try:
                self._left = int(size_text, 16)
            except ValueError:
                raise HttpProtocolError("bad chunk size %r" % size_text[:20]) from None
            self._chunk_state = "data" if self._left else "trailer"
        elif not line:  # the empty line after the last chunk's trailers
            self._finish(events)

    def _line(self) -> Optional[bytes]:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > HTTP_MAX_CHUNK_LINE_BYTES:
                raise HttpProtocolError("chunk-size line over %d bytes" % HTTP_MAX_CHUNK_LINE_BYTES)
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line


class HttpProtocolError(Exception):
    """The peer (kubectl proxy) broke HTTP/1.1: the connection cannot be trusted any more."""


def parse_http_head(raw: bytes) -> HttpHead:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpProtocolError("bad status line %r" % lines[0][:80])
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise HttpProtocolError("bad header line %r" % line[:80])
        headers.append((name.strip().lower(), value.strip()))
    return HttpHead(int(parts[1]), parts[2] if len(parts) > 2 else "", tuple(headers))


def _body_mode(head: HttpHead) -> Tuple[HttpBodyMode, int]:
    if head.status < 200 or head.status in (204, 304):
        return HttpBodyMode.NONE, 0
    if "chunked" in head.get("transfer-encoding").lower():
        return HttpBodyMode.CHUNKED, 0
    length = head.get("content-length")
    if length.isdigit():
        return (HttpBodyMode.LENGTH, int(length)) if int(length) else (HttpBodyMode.NONE, 0)
    return HttpBodyMode.UNTIL_CLOSE, 0


def http_keeps_alive(head: HttpHead) -> bool:
    """May the connection carry another request after this response (HTTP/1.1 default)?"""
    return "close" not in head.get("connection").lower() and head.status != 101


# ---- the API server's answers in kubectl's words ----

#: client-go's messages for an error response whose body is not a Status
#: (apimachinery errors.NewGenericServerResponse), by HTTP status.
_GENERIC_API_ERRORS: Dict[int, Tuple[str, str]] = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    401: ("Unauthorized", "the server has asked for the client to provide credentials"),
    403: ("Forbidden", "the server does not allow access to the requested resource"),
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    409: ("Conflict", "the server reported a conflict"),
    410: ("Expired", "the server has asked for the client to relist"),
    422: ("Invalid", "the server rejected our request due to an error in our request"),
    429: (
        "TooManyRequests",
        "the server has received too many requests and has asked us to try again later",
    ),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: (
        "Timeout",
        "the server was unable to return a response in the time allotted, but may "
        "still be processing the request",
    ),
}
_DIAL_REFUSED = LazyPattern(r"dial tcp ([^ ]+): connect: connection refused")


@frozen_record
class ApiError:
    """A failed API request, as kubectl would report it."""

    code: int
    reason: str  # the Status reason ("NotFound", "Forbidden"), "" if the server gave none
    message: str  # the Status message (what `err.Error()` is in client-go)
    #: kubectl proxy could not reach the API server (its own text/plain 500), not an API answer.
    unreachable: bool = False

    @property
    def kubectl_text(self) -> str:
        """kubectl's StandardErrorMessage: the exact line `kubectl get` would print."""
        if self.unreachable:
            refused = _DIAL_REFUSED.search(self.message)
            if refused:
                return (
                    "The connection to the server %s was refused - did you specify the "
                    "right host or port?" % refused.group(1)
                )
            return "Unable to connect to the server: %s" % self.message
        if self.reason == "Unauthorized":
            return "error: You must be logged in to the server (%s)" % self.message
        if self.reason:
            return "Error from server (%s): %s" % (self.reason, self.message)
        return "Error from server: %s" % self.message


def api_error(status: int, content_type: str, body: bytes) -> ApiError:
    """An error response (from the API server through kubectl proxy, or from kubectl proxy)."""
    document = _json_or_none(body)
    if isinstance(document, dict) and document.get("kind") == "Status":
        return ApiError(
            int(document.get("code") or status),
            str(document.get("reason") or ""),
            str(document.get("message") or ""),
        )
    text = body.decode("utf-8", "replace").strip()
    if status == 500 and content_type.startswith("text/plain"):
        return ApiError(status, "", text, unreachable=True)  # kubectl proxy's own error
    reason, message = _GENERIC_API_ERRORS.get(
        status,
        (
            "InternalError",
            'an error on the server ("%s") has prevented the request from succeeding' % text[:200],
        ),
    )
    return ApiError(status, reason, message)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def upgrade_error_text(error: ApiError, kubectl_minor: int = KUBECTL_NEWEST_MINOR) -> str:
    """A refused upgrade as `kubectl port-forward` prints it. client-go's SPDY dialer quotes a
    body after "unable to upgrade connection: "; up to kubectl 1.33 (checked: 1.27-1.33) a
    Status body gave its bare message instead; 1.37 prefixes it too (1.34-1.36 unchecked)."""
    if error.unreachable:
        return "error upgrading connection: %s" % error.message
    if error.reason and error.message and kubectl_minor < 37:
        return "error upgrading connection: %s" % error.message
    return "error upgrading connection: unable to upgrade connection: %s" % error.message


def api_path(namespace: str, resource: str, name: str = "", subresource: str = "") -> str:
    """`/api/v1/namespaces/NS/pods/NAME` for `pods`, `/apis/apps/v1/...` for `deployments.apps`."""
    plural, _, group = resource.partition(".")
    from urllib.parse import quote

    base = "/apis/%s/v1" % group if group else "/api/v1"
    parts = [base]
    if namespace:
        parts.append("namespaces/" + quote(namespace, safe=""))
    parts.append(plural)
    if name:
        parts.append(quote(name, safe=""))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


def api_query(**params: Any) -> str:
    """`?a=1&b=2` with kubectl's encoding; parameters that are None or "" are left out."""
    from urllib.parse import urlencode

    kept = [(key, value) for key, value in params.items() if value not in (None, "")]
    return "?" + urlencode(kept) if kept else ""


# ---- SPDY/3.1 (sans-IO), as client-go's portforward and moby/spdystream use it ----
#
# Control frame: 0x8003, type (16), flags (8), length (24), payload. Data frame: stream id (31),
# flags (8), length (24), payload. Header blocks are zlib-compressed with the SPDY/3 preset
# dictionary, one zlib stream per direction for the whole connection, each block ending with a
# sync flush. spdystream never sends or honours WINDOW_UPDATE: flow control is the TCP
# connection's own, so a slow reader stalls its whole connection (HOL), exactly as in kubectl.

SPDY_SYN_STREAM, SPDY_SYN_REPLY, SPDY_RST_STREAM, SPDY_SETTINGS = 1, 2, 3, 4
SPDY_PING, SPDY_GOAWAY, SPDY_HEADERS, SPDY_WINDOW_UPDATE = 6, 7, 8, 9
SPDY_FLAG_FIN = 0x01
#: RST_STREAM status codes (SPDY/3 §2.4.2) we send or read.
SPDY_PROTOCOL_ERROR, SPDY_REFUSED_STREAM, SPDY_CANCEL = 1, 3, 5
#: The largest stream id; a connection that reaches it takes no new streams.
SPDY_MAX_STREAM_ID = 0x7FFFFFFF

_SPDY_DICT_WORDS = (
    "options|head|post|put|delete|trace|accept|accept-charset|accept-encoding|accept-language|"
    "accept-ranges|age|allow|authorization|cache-control|connection|content-base|"
    "content-encoding|content-language|content-length|content-location|content-md5|"
    "content-range|content-type|date|etag|expect|expires|from|host|if-match|if-modified-since|"
    "if-none-match|if-range|if-unmodified-since|last-modified|location|max-forwards|pragma|"
    "proxy-authenticate|proxy-authorization|range|referer|retry-after|server|te|trailer|"
    "transfer-encoding|upgrade|user-agent|vary|via|warning|www-authenticate|method|get|status|"
    "200 OK|version|HTTP/1.1|url|public|set-cookie|keep-alive|origin"
)
_SPDY_DICT_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504"
    "505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 "
    "Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 "
    "Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, "
    "Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
#: Length and adler32 of the SPDY/3 zlib dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1).
SPDY_DICTIONARY_CHECK = (1423, 3821447106)


@functools.cache
def spdy_dictionary() -> bytes:
    words = [word.encode("ascii") for word in _SPDY_DICT_WORDS.split("|")]
    data = b"".join(struct.pack(">I", len(word)) + word for word in words)
    return data + _SPDY_DICT_TAIL.encode("ascii")


_SPDY_CONTROL_HEAD = struct.Struct(">HHI")
#: Data frame header, and the 32-bit words most control payloads are made of.
SPDY_DATA_HEAD = struct.Struct(">II")
_U32 = struct.Struct(">I")


@frozen_record
class SpdyControl:
    """A control frame read from the peer. `stream` is 0 for connection-level frames; `value`
    is the status (RST_STREAM, GOAWAY), the ping id (PING) or the delta (WINDOW_UPDATE);
    `headers` the decoded header block (SYN_STREAM, SYN_REPLY, HEADERS)."""

    kind: int
    flags: int = 0
    stream: int = 0
    value: int = 0
    headers: Tuple[Tuple[str, str], ...] = ()

    @property
    def fin(self) -> bool:
        return bool(self.flags & SPDY_FLAG_FIN)


class SpdyProtocolError(Exception):
    """The peer broke SPDY framing or header compression: the connection is unusable."""


class SpdyWriter:
    """Sans-IO frame encoder for the client side of one SPDY connection.

    Holds the connection's header compressor: frames must be sent in the order they are made.
    """

    def __init__(self) -> None:
        import zlib

        self._zlib = zlib
        self._deflate = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zdict=spdy_dictionary())

    def header_block(self, headers: Sequence[Tuple[str, str]]) -> bytes:
        raw = [_U32.pack(len(headers))]
        for name, value in headers:
            key, text = name.lower().encode("utf-8"), value.encode("utf-8")
            raw.append(_U32.pack(len(key)) + key + _U32.pack(len(text)) + text)
        block = self._deflate.compress(b"".join(raw))
        return block + self._deflate.flush(self._zlib.Z_SYNC_FLUSH)

    @staticmethod
    def control(kind: int, flags: int, payload: bytes) -> bytes:
        return _SPDY_CONTROL_HEAD.pack(0x8003, kind, (flags << 24) | len(payload)) + payload

    def syn_stream(self, stream: int, headers: Sequence[Tuple[str, str]], fin: bool) -> bytes:
        # associated stream 0, priority 0, slot 0: what spdystream sends for every stream
        payload = struct.pack(">IIBB", stream, 0, 0, 0) + self.header_block(headers)
        return self.control(SPDY_SYN_STREAM, SPDY_FLAG_FIN if fin else 0, payload)

    def rst_stream(self, stream: int, status: int) -> bytes:
        return self.control(SPDY_RST_STREAM, 0, SPDY_DATA_HEAD.pack(stream, status))

    def ping(self, ping_id: int) -> bytes:
        return self.control(SPDY_PING, 0, _U32.pack(ping_id))

    def goaway(self, last_good: int, status: int = 0) -> bytes:
        return self.control(SPDY_GOAWAY, 0, SPDY_DATA_HEAD.pack(last_good, status))

    @staticmethod
    def data_head(stream: int, length: int, fin: bool = False) -> bytes:
        return SPDY_DATA_HEAD.pack(stream, (SPDY_FLAG_FIN << 24 if fin else 0) | length)


def portforward_stream_headers(
    kind: str, port: int, request_id: int
) -> Tuple[Tuple[str, str], ...]:
    """client-go's headers for one forwarded connection's error or data stream."""
    return (("streamtype", kind), ("port", str(port)), ("requestid", str(request_id)))


#: Called for every piece of a data frame: (stream id, payload view, fin of its frame).
SpdyDataHandler = Callable[[int, memoryview, bool], None]


class SpdyParser:
    """Sans-IO SPDY/3.1 reader that a BufferedProtocol drives: get_buffer() → buffer_updated(n).

    Data payloads are handed to `on_data` as views into the parser's own buffer, as they
    arrive (a frame need not be complete), so bulk data is never copied or accumulated here; a
    consumer that keeps a view (a transport's partial write) calls handed_over() and the parser
    moves to a fresh buffer. Control frames are decoded (rare, small) and given to `on_control`.
    """

    def __init__(
        self,
        on_data: SpdyDataHandler,
        on_control: Callable[[SpdyControl], None],
        size: int = SPDY_READ_BUFFER_BYTES,
    ) -> None:
        import zlib

        self._zlib = zlib
        self._inflate = zlib.decompressobj(zdict=spdy_dictionary())
        self._on_data = on_data
        self._on_control = on_control
        self._size = size
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        self._start = 0  # first byte not parsed yet
        self._end = 0  # end of the bytes read so far
        self._data_stream = 0  # inside a data frame: its stream, bytes left and FIN flag
        self._data_left = 0
        self._data_fin = False

    def get_buffer(self) -> memoryview:
        return self._view[self._end :]

    def handed_over(self) -> None:
        """The last data view was kept by a consumer: continue in a fresh buffer."""
        rest = self._view[self._start : self._end]
        fresh = bytearray(max(self._size, len(rest) * 2))
        fresh[: len(rest)] = rest
        self._buffer, self._view = fresh, memoryview(fresh)
        self._start, self._end = 0, len(rest)

    def feed(self, data: bytes) -> None:
        """Bytes in, for tests and callers without a BufferedProtocol."""
        offset = 0
        while offset < len(data):
            room = self.get_buffer()
            count = min(len(room), len(data) - offset)
            room[:count] = data[offset : offset + count]
            offset += count
            self.buffer_updated(count)

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        while self._start < self._end:
            if self._data_left or self._data_stream:
                self._deliver_data()
            elif not self._next_frame():
                break
        self._compact()

    def _deliver_data(self) -> None:
        count = min(self._data_left, self._end - self._start)
        start = self._start
        self._start += count  # before the callback: handed_over() keeps what follows
        self._data_left -= count
        stream, done = self._data_stream, not self._data_left
        fin = self._data_fin and done
        if done:
            self._data_stream = 0
        if count or fin:
            self._on_data(stream, self._view[start : start + count], fin)

    def _next_frame(self) -> bool:
        """Start the frame at _start; False if its header (or a control frame) is incomplete."""
        available = self._end - self._start
        if available < 8:
            return False
        first, second = SPDY_DATA_HEAD.unpack_from(self._buffer, self._start)
        length = second & 0xFFFFFF
        if not first & 0x80000000:  # a data frame: stream its payload
            self._start += 8
            self._data_stream = first & SPDY_MAX_STREAM_ID
            self._data_left = length
            self._data_fin = bool((second >> 24) & SPDY_FLAG_FIN)
            if not length:
                self._deliver_data()
            return True
        if length > SPDY_MAX_CONTROL_BYTES:
            raise SpdyProtocolError("control frame of %d bytes" % length)
        if available < 8 + length:
            return False
        payload = bytes(self._view[self._start + 8 : self._start + 8 + length])
        self._start += 8 + length
        if (first >> 16) & 0x7FFF != 3:
            raise SpdyProtocolError("SPDY version %d" % ((first >> 16) & 0x7FFF))
        self._on_control(self._control(first & 0xFFFF, second >> 24, payload))
        return True

    def _control(self, kind: int, flags: int, payload: bytes) -> SpdyControl:
        try:
            if kind in (SPDY_SYN_STREAM, SPDY_SYN_REPLY, SPDY_HEADERS):
                stream = _U32.unpack_from(payload)[0] & SPDY_MAX_STREAM_ID
                block = payload[10:] if kind == SPDY_SYN_STREAM else payload[4:]
                return SpdyControl(kind, flags, stream, 0, self._headers(block))
            if kind in (SPDY_RST_STREAM, SPDY_GOAWAY, SPDY_WINDOW_UPDATE):
                first, value = SPDY_DATA_HEAD.unpack_from(payload)
                stream = first & SPDY_MAX_STREAM_ID
                return SpdyControl(
                    kind,
                    flags,
                    stream,
                    value & SPDY_MAX_STREAM_ID if kind == SPDY_WINDOW_UPDATE else value,
                )
            if kind == SPDY_PING:
                return SpdyControl(kind, flags, 0, _U32.unpack_from(payload)[0])
        except struct.error:
            raise SpdyProtocolError("short payload in control frame type %d" % kind) from None
        return SpdyControl(kind, flags)  # SETTINGS and unknown types: nothing to act on

    def _headers(self, block: bytes) -> Tuple[Tuple[str, str], ...]:
        try:
            raw = self._inflate.decompress(block, SPDY_MAX_CONTROL_BYTES)
        except self._zlib.error as exc:
            raise SpdyProtocolError("header block: %s" % exc) from None
        return parse_spdy_header_block(raw)

    def _compact(self) -> None:
        """Keep room to read: move a partial header or control frame to the front."""
        if self._start == self._end:
            self._start = self._end = 0
            return
        rest = self._end - self._start
        if self._start and (self._end == len(self._buffer) or rest <= 64):
            self._buffer[:rest] = self._view[self._start : self._end]
            self._start, self._end = 0, rest
        if self._end == len(self._buffer):  # a control frame bigger than the buffer: grow
            bigger = bytearray(2 * len(self._buffer))
            bigger[: self._end] = self._view[: self._end]
            self._buffer, self._view = bigger, memoryview(bigger)


def parse_spdy_header_block(raw: bytes) -> Tuple[Tuple[str, str], ...]:
    """An inflated header block: a count, then length-prefixed names and values (values may
    hold several, NUL-separated: the first is kept, as http.Header.Get does)."""
    try:
        (count,) = _U32.unpack_from(raw, 0)
        position, headers = 4, []
        for _ in range(count):
            (size,) = _U32.unpack_from(raw, position)
            name = raw[position + 4 : position + 4 + size].decode("utf-8", "replace").lower()
            position += 4 + size
            (size,) = _U32.unpack_from(raw, position)
            value = raw[position + 4 : position + 4 + size].decode("utf-8", "replace")
            position += 4 + size
            headers.append((name, value.split("\x00", 1)[0]))
    except struct.error:
        raise SpdyProtocolError("truncated header block") from None
    return tuple(headers)


def spdy_rst_text(status: int) -> str:
    """Why the peer reset a stream, in words (SPDY/3 §2.4.2)."""
    names = {
        1: "protocol error",
        2: "invalid stream",
        3: "refused stream",
        4: "unsupported version",
        5: "cancelled",
        6: "internal error",
        7: "flow control error",
        8: "stream in use",
        9: "stream already closed",
        11: "frame too large",
    }
    return "the API server reset the stream (%s)" % names.get(status, "status %d" % status)


# ---- list+watch bookkeeping (pure: events in, changes out) ----


def object_key(obj: Dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return "%s/%s" % (metadata.get("namespace") or "", metadata.get("name") or "")


class ObjectCache:
    """What a list+watch has seen: objects by namespace/name, and the resourceVersion to
    watch from. Each method returns the changes as (event type, object) pairs."""

    def __init__(self) -> None:
        self.objects: Dict[str, Dict[str, Any]] = {}
        self.version = ""

    def replace(
        self, items: Sequence[Dict[str, Any]], version: Optional[str]
    ) -> List[Tuple[str, Dict[str, Any]]]:
        """A (re)list: what changed since the last state, as the watch would have said it."""
        fresh = {object_key(item): item for item in items}
        changes: List[Tuple[str, Dict[str, Any]]] = []
        for key, obj in fresh.items():
            old = self.objects.get(key)
            if old is None:
                changes.append(("ADDED", obj))
            elif _resource_version(old) != _resource_version(obj):
                changes.append(("MODIFIED", obj))
        changes.extend(("DELETED", old) for key, old in self.objects.items() if key not in fresh)
        self.objects = fresh
        self.version = version or ""
        return changes

    def apply(self, kind: str, obj: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
        """One watch event; BOOKMARK only moves the resourceVersion on."""
        version = _resource_version(obj)
        if version:
            self.version = version
        if kind == "BOOKMARK":
            return []
        key = object_key(obj)
        if kind == "DELETED":
            self.objects.pop(key, None)
        elif kind in ("ADDED", "MODIFIED"):
            self.objects[key] = obj
        else:
            return []
        return [(kind, obj)]


def _resource_version(obj: Dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


# ==== §11 Protocol sniffers ====================================================================

# Rules for §11: sans-IO (h11). The proxy feeds each connection's bytes as it relays them:
# `sniffer.feed(direction, data, now)`; `data` may be a memoryview valid only during the call,
# `b""` means EOF of that direction, `now` is the caller's clock. No asyncio, sockets or clocks.
# Sniffers keep only what they must (header blocks, frame headers, short names), skip bodies
# by length, never raise into the proxy (garbage or a limit → ProtocolGaveUp, then a no-op),
# and report through frozen events that also update the per-forward ProtocolStats.


class Direction(enum.Enum):
    CLIENT_TO_SERVER = "client→server"
    SERVER_TO_CLIENT = "server→client"


_C2S = Direction.CLIENT_TO_SERVER
_S2C = Direction.SERVER_TO_CLIENT


class ProtocolKind(enum.Enum):
    HTTP1 = "HTTP/1"
    HTTP2 = "HTTP/2"  # gRPC is HTTP/2 with content-type application/grpc
    TLS = "TLS"
    POSTGRES = "Postgres"
    REDIS = "Redis"
    MYSQL = "MySQL"
    UNKNOWN = "unknown"


# ---- events: facts a sniffer saw (h11 _events.py) ----


class SniffEvent:
    """Base of every sniffer event; subclasses are frozen dataclasses named as facts."""

    __slots__ = ()


@frozen_record
class ProtocolGaveUp(SniffEvent):
    kind: ProtocolKind
    reason: str


@frozen_record
class HttpExchange(SniffEvent):
    method: str
    path: str
    status: int
    latency_s: Optional[float]  # request's first byte → final response's first byte
    request_bytes: int
    response_bytes: int
    complete: bool = True  # False: the connection closed in the middle of the response body


@frozen_record
class HttpUpgraded(SniffEvent):
    protocol: str  # "websocket", "h2c", "tunnel" (CONNECT)…
    path: str


@frozen_record
class HttpRequestUnanswered(SniffEvent):
    method: str
    path: str


@frozen_record
class TlsClientHello(SniffEvent):
    version: str  # highest offered: "TLS 1.3"
    sni: str
    alpn: Tuple[str, ...]


@frozen_record
class TlsServerHello(SniffEvent):
    version: str  # chosen
    alpn: str  # chosen; "" in TLS 1.3, where it travels encrypted
    cipher: str


@frozen_record
class TlsAlert(SniffEvent):
    level: str  # "warning" / "fatal"
    description: str  # "handshake_failure"
    direction: Direction


@frozen_record
class PostgresEncryptionAnswered(SniffEvent):
    request: str  # "SSL" or "GSSENC"
    accepted: bool


@frozen_record
class PostgresStartup(SniffEvent):
    user: str
    database: str
    application_name: str
    ssl_requested: bool


@frozen_record
class PostgresServerVersion(SniffEvent):
    version: str


@frozen_record
class PostgresError(SniffEvent):
    severity: str
    code: str  # SQLSTATE
    message: str


@frozen_record
class PostgresQueryDone(SniffEvent):
    latency_s: Optional[float]  # 'Q' or Sync → ReadyForQuery


@frozen_record
class RedisCommand(SniffEvent):
    name: str


@frozen_record
class RedisError(SniffEvent):
    prefix: str  # "ERR", "WRONGTYPE", "NOAUTH"…
    message: str


@frozen_record
class RedisReply(SniffEvent):
    latency_s: Optional[float]


@frozen_record
class MysqlGreeting(SniffEvent):
    server_version: str


@frozen_record
class MysqlLogin(SniffEvent):
    user: str
    database: str
    ssl_requested: bool


@frozen_record
class MysqlCommand(SniffEvent):
    name: str


@frozen_record
class MysqlError(SniffEvent):
    code: int
    sqlstate: str
    message: str


@frozen_record
class Http2Stream(SniffEvent):
    stream_id: int
    method: str  # "" when HPACK could not be followed
    path: str
    status: int  # 0 when unknown
    grpc: bool
    latency_s: Optional[float]  # client HEADERS → first server HEADERS
    request_bytes: int  # DATA payload bytes
    response_bytes: int
    reset: str  # RST_STREAM error name, "" when the stream ended normally


@frozen_record
class Http2Reset(SniffEvent):
    stream_id: int
    error: str
    direction: Direction


@frozen_record
class Http2GoAway(SniffEvent):
    last_stream_id: int
    error: str
    debug: str
    direction: Direction


@frozen_record
class GrpcStatus(SniffEvent):
    path: str
    code: int
    message: str


# ---- the bounded receive buffer shared by every sniffer (h11 ReceiveBuffer) ----


class _GiveUp(Exception):
    """Raised inside a sniffer to stop parsing; Sniffer.feed() turns it into ProtocolGaveUp."""


_LINE_END = LazyPattern(rb"\n")
_HEAD_END = LazyPattern(rb"\n\r?\n")


class _Reassembler:
    """The incomplete unit (header block, line, frame) carried from one chunk to the next.

    Complete units are sliced straight out of the caller's chunk; only a unit split across
    chunks is copied, and the search restarts where it stopped, so byte-at-a-time is linear.
    """

    __slots__ = ("_search_from", "buf")

    def __init__(self) -> None:
        self.buf = bytearray()
        self._search_from = 0

    def take_until(
        self, data: Any, start: int, pattern: Any, limit: int, what: str
    ) -> Tuple[Optional[bytes], int]:
        """(unit ending with pattern's match, offset after it) or (None, len(data))."""
        buf = self.buf
        if not buf:
            match = pattern.search(data, start, min(len(data), start + limit))
            if match:
                return bytes(data[start : match.end()]), match.end()
            if len(data) - start >= limit:
                raise _GiveUp("%s over %d bytes" % (what, limit))
            buf += data[start:]
            self._search_from = 0
            return None, len(data)
        before = len(buf)
        buf += data[start : start + limit - before]
        match = pattern.search(buf, self._search_from)
        if match:
            unit = bytes(buf[: match.end()])
            consumed = match.end() - before
            buf.clear()
            return unit, start + consumed
        if len(buf) >= limit:
            raise _GiveUp("%s over %d bytes" % (what, limit))
        self._search_from = max(0, len(buf) - 2)  # a 3-byte terminator may straddle chunks
        return None, len(data)

    def take_exact(self, data: Any, start: int, size: int) -> Tuple[Optional[bytes], int]:
        """(the next `size` bytes, offset after them) or (None, len(data)); size is bounded."""
        buf = self.buf
        if not buf and len(data) - start >= size:
            return bytes(data[start : start + size]), start + size
        piece = data[start : start + size - len(buf)]
        buf += piece
        if len(buf) == size:
            unit = bytes(buf)
            buf.clear()
            return unit, start + len(piece)
        return None, len(data)


class _Cursor:
    """Bounds-checked reader over one complete message (TLS hello, Postgres/MySQL packet)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise _GiveUp("truncated message")
        piece = self.data[self.pos : self.pos + size]
        self.pos += size
        return piece

    def uint(self, size: int, byteorder: str = "big") -> int:
        return int.from_bytes(self.take(size), byteorder)  # type: ignore[arg-type]

    def vector(self, length_size: int) -> bytes:
        return self.take(self.uint(length_size))

    def cstring(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise _GiveUp("unterminated string")
        piece = self.data[self.pos : end]
        self.pos = end + 1
        return piece


def _text(raw: bytes, limit: int = SNIFF_MAX_TEXT_CHARS) -> str:
    """Peer-supplied bytes as a short printable string (never trusted, never long)."""
    text = raw[: limit * 4].decode("utf-8", "replace")
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- the sniffer base class ----


class Sniffer:
    """One connection's recogniser. Subclasses implement _receive/_receive_eof.

    feed() never raises: a limit, garbage or a bug stops parsing with a ProtocolGaveUp event and
    the sniffer becomes a no-op (`active` is False, the proxy may stop calling it).
    """

    kind = ProtocolKind.UNKNOWN
    #: Between messages of a stateless protocol, with nothing in flight: the connection could
    #: continue on another upstream unnoticed. Only HTTP/1 keep-alive ever says so.
    at_rest = False

    def __init__(self, stats: Optional[ProtocolStats] = None) -> None:
        self.stats = stats if stats is not None else ProtocolStats()
        self.events: Any = collections.deque(maxlen=SNIFF_MAX_EVENTS)
        self.active = True
        self.gave_up_reason = ""
        self._closed: Dict[Direction, bool] = {_C2S: False, _S2C: False}
        self.stats.count_connection(self.kind)

    def __repr__(self) -> str:
        state = "active" if self.active else (self.gave_up_reason or "done")
        return "<%s %s, %d events>" % (type(self).__name__, state, len(self.events))

    def feed(self, direction: Direction, data: Any, now: float) -> None:
        if not self.active:
            return
        try:
            if len(data):
                self._receive(direction, data, now)
            elif not self._closed[direction]:
                self._closed[direction] = True
                self._receive_eof(direction, now)
                if self._closed[_C2S] and self._closed[_S2C]:
                    self.active = False
        except _GiveUp as exc:
            self._give_up(str(exc), now)
        except Exception as exc:  # a sniffer bug must never reach the relay
            self._give_up("sniffer bug: %s: %s" % (type(exc).__name__, exc), now)

    def close(self, now: float) -> None:
        """Both directions ended (the proxy closed the connection)."""
        self.feed(_C2S, b"", now)
        self.feed(_S2C, b"", now)

    def _receive(self, direction: Direction, data: Any, now: float) -> None:
        raise NotImplementedError

    def _receive_eof(self, direction: Direction, now: float) -> None:
        """Nothing to do by default: most protocols learn nothing from a close."""

    def _emit(self, event: SniffEvent, now: float) -> None:
        self.events.append(event)
        self.stats.record(event, now)

    def _finish(self) -> None:
        """Nothing more to learn on this connection: become a no-op (near-zero cost)."""
        self.active = False

    def _give_up(self, reason: str, now: float) -> None:
        self.active = False
        self.gave_up_reason = reason
        self._emit(ProtocolGaveUp(self.kind, reason), now)


class NullSniffer(Sniffer):
    """For UNKNOWN traffic: counts the connection, looks at nothing."""

    def __init__(self, stats: Optional[ProtocolStats] = None) -> None:
        super().__init__(stats)
        self.active = False

    def _receive(self, direction: Direction, data: Any, now: float) -> None:
        """Never called: the sniffer is inactive from the start."""


# ---- per-forward aggregates: incremental counters, bounded reservoirs, human lines ----


class _TopCounter:
    """Counts per key for at most `cap` distinct keys; later new keys count under "other"."""

    __slots__ = ("cap", "counts", "total")

    OTHER = "other"

    def __init__(self, cap: int = SNIFF_TOP_KEYS) -> None:
        self.cap = cap
        self.counts: Dict[Any, int] = {}
        self.total = 0

    def add(self, key: Any, count: int = 1) -> None:
        counts = self.counts
        if key not in counts and len(counts) >= self.cap:
            key = self.OTHER
        counts[key] = counts.get(key, 0) + count
        self.total += count

    def most_common(self, limit: int) -> List[Tuple[Any, int]]:
        """The biggest named keys ("other" is left out: it names nothing)."""
        named = [item for item in self.counts.items() if item[0] != self.OTHER]
        return sorted(named, key=lambda item: (-item[1], str(item[0])))[:limit]

    def __len__(self) -> int:
        return len(self.counts)


class LatencyReservoir:
    """A uniform sample of every latency seen (Vitter's algorithm R), bounded in size.

    Deterministic (seeded) so tests and summaries are reproducible.
    """

    def __init__(self, size: int = SNIFF_LATENCY_RESERVOIR, seed: int = 0) -> None:
        import random

        self.size = size
        self.count = 0
        self.samples: List[float] = []
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.count += 1
        if len(self.samples) < self.size:
            self.samples.append(value)
            return
        slot = self._rng.randrange(self.count)
        if slot < self.size:
            self.samples[slot] = value

    def percentile(self, fraction: float) -> Optional[float]:
        """Nearest-rank percentile (0.5 → p50) or None before the first sample."""
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        index = int(fraction * len(ordered) - 1e-9)  # ceil(p·n) - 1, the nearest rank
        return ordered[max(0, min(len(ordered) - 1, index))]


def _format_latency(seconds: float) -> str:
    if seconds < 0.001:
        return "<1 ms"
    if seconds < 1:
        return "%d ms" % round(seconds * 1000)
    return "%.1f s" % seconds


def _latency_text(reservoir: LatencyReservoir) -> str:
    p50 = reservoir.percentile(0.50)
    p99 = reservoir.percentile(0.99)
    if p50 is None or p99 is None:
        return ""
    return "p50 %s, p99 %s" % (_format_latency(p50), _format_latency(p99))


def _count(count: int, singular: str, plural: str = "") -> str:
    """ "1 request", "1,204 requests"."""
    return "%s %s" % (format(count, ","), singular if count == 1 else plural or singular + "s")


def _times(count: int, text: str) -> str:
    return text if count == 1 else "%d × %s" % (count, text)


class HttpStats:
    """HTTP/1 exchanges of one forward."""

    def __init__(self) -> None:
        self.exchanges = 0
        self.incomplete = 0
        self.unanswered = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.statuses = _TopCounter()
        self.routes = _TopCounter()  # "GET /api/users/:id"
        self.server_errors = _TopCounter()  # (status, path)
        self.upgrades = _TopCounter()
        self.latency = LatencyReservoir()
        self.bursts = 0
        self.worst_burst = 0  # most 5xx seen within SNIFF_BURST_WINDOW_S
        self._recent_5xx: Any = collections.deque(maxlen=SNIFF_BURST_COUNT)
        self._in_burst = False

    def record(self, event: SniffEvent, now: float) -> None:
        if isinstance(event, HttpExchange):
            self._record_exchange(event, now)
        elif isinstance(event, HttpUpgraded):
            self.upgrades.add(event.protocol)
        elif isinstance(event, HttpRequestUnanswered):
            self.unanswered += 1

    def _record_exchange(self, event: HttpExchange, now: float) -> None:
        self.exchanges += 1
        self.incomplete += not event.complete
        self.request_bytes += event.request_bytes
        self.response_bytes += event.response_bytes
        self.statuses.add(event.status)
        self.routes.add("%s %s" % (event.method, event.path))
        if event.latency_s is not None:
            self.latency.add(event.latency_s)
        if event.status >= 500:
            self.server_errors.add((event.status, event.path))
            self._note_server_error(now)

    def _note_server_error(self, now: float) -> None:
        recent = self._recent_5xx
        recent.append(now)
        in_burst = len(recent) == recent.maxlen and now - recent[0] <= SNIFF_BURST_WINDOW_S
        if in_burst and not self._in_burst:
            self.bursts += 1
        if in_burst:
            self.worst_burst = max(self.worst_burst, len(recent))
        self._in_burst = in_burst

    def summary_line(self) -> Optional[str]:
        if not (self.exchanges or self.unanswered or len(self.upgrades)):
            return None
        parts = [_count(self.exchanges, "request")]
        statuses = self.statuses.most_common(len(self.statuses))
        parts += ["%d × %d" % (n, s) for s, n in statuses if s >= 400][:3]
        latency = _latency_text(self.latency)
        if latency:
            parts.append(latency)
        for protocol, count in self.upgrades.most_common(2):
            parts.append("%s upgrade%s" % (_times(count, protocol), "s" if count > 1 else ""))
        line = "HTTP: " + ", ".join(parts)
        top = self.routes.most_common(1)
        if top:
            line += "; top: %s" % top[0][0]
        return line

    def problems(self) -> List[str]:
        found = []
        for (status, path), count in self.server_errors.most_common(5):
            found.append("%d × HTTP %d from %s" % (count, status, path))
        if self.bursts:
            found.append(
                "HTTP 5xx burst: %d server errors within %s (%d burst%s)"
                % (
                    self.worst_burst,
                    format_go_duration(SNIFF_BURST_WINDOW_S),
                    self.bursts,
                    "s" if self.bursts > 1 else "",
                )
            )
        if self.unanswered:
            found.append("%d HTTP request(s) never answered (connection closed)" % self.unanswered)
        if self.incomplete:
            found.append("%d HTTP response(s) cut off by a closed connection" % self.incomplete)
        return found


class Http2Stats:
    """HTTP/2 (and gRPC) streams of one forward."""

    def __init__(self) -> None:
        self.streams = 0
        self.grpc_streams = 0
        self.statuses = _TopCounter()
        self.routes = _TopCounter()
        self.resets = _TopCounter()  # (direction label, error)
        self.goaways = _TopCounter()  # (error, debug)
        self.grpc_errors = _TopCounter()  # (code, path, message)
        self.server_errors = _TopCounter()  # (status, path)
        self.latency = LatencyReservoir()

    def record(self, event: SniffEvent, now: float) -> None:
        if isinstance(event, Http2Stream):
            self.streams += 1
            self.grpc_streams += event.grpc
            if event.status:
                self.statuses.add(event.status)
            if event.status >= 500:
                self.server_errors.add((event.status, event.path))
            if event.path:
                self.routes.add(("%s %s" % (event.method, event.path)).strip())
            if event.latency_s is not None:
                self.latency.add(event.latency_s)
        elif isinstance(event, Http2Reset):
            self.resets.add(event.error)
        elif isinstance(event, Http2GoAway):
            self.goaways.add((event.error, event.debug))
        elif isinstance(event, GrpcStatus) and event.code != 0:
            self.grpc_errors.add((event.code, event.path, event.message))

    def summary_line(self) -> Optional[str]:
        if not (self.streams or len(self.resets) or len(self.goaways)):
            return None
        label = "gRPC" if self.grpc_streams and self.grpc_streams == self.streams else "HTTP/2"
        parts = [_count(self.streams, "stream")]
        if self.grpc_streams and label != "gRPC":
            parts[0] += " (%d gRPC)" % self.grpc_streams
        parts += ["%d × %s" % (n, s) for s, n in self.statuses.most_common(8) if s >= 400][:3]
        if self.grpc_errors.total:
            parts.append(
                "%d gRPC error%s"
                % (self.grpc_errors.total, "s" if self.grpc_errors.total > 1 else "")
            )
        latency = _latency_text(self.latency)
        if latency:
            parts.append(latency)
        parts += [_times(n, "RST_STREAM " + error) for error, n in self.resets.most_common(2)]
        parts += ["GOAWAY " + error for (error, _), _n in self.goaways.most_common(1)]
        line = "%s: %s" % (label, ", ".join(parts))
        top = self.routes.most_common(1)
        if top:
            line += "; top: %s" % top[0][0]
        return line

    def problems(self) -> List[str]:
        found = []
        for (code, path, message), count in self.grpc_errors.most_common(5):
            name = GRPC_STATUS_NAMES.get(code, str(code))
            detail = ": " + message if message else ""
            found.append("%s from %s%s" % (_times(count, "gRPC " + name), path or "?", detail))
        for (status, path), count in self.server_errors.most_common(3):
            found.append("%d × HTTP/2 %d from %s" % (count, status, path))
        for error, count in self.resets.most_common(3):
            if error not in ("NO_ERROR", "CANCEL"):
                found.append(_times(count, "HTTP/2 RST_STREAM " + error))
        for (error, debug), count in self.goaways.most_common(3):
            if error != "NO_ERROR":
                text = "HTTP/2 GOAWAY %s%s" % (error, " (%s)" % debug if debug else "")
                found.append(_times(count, text))
        return found


class TlsStats:
    """TLS handshakes of one forward (what the ClientHello/ServerHello said in the clear)."""

    def __init__(self) -> None:
        self.client_hellos = 0
        self.server_hellos = 0
        self.offered_versions = _TopCounter()
        self.chosen_versions = _TopCounter()
        self.snis = _TopCounter()
        self.offered_alpn = _TopCounter()
        self.chosen_alpn = _TopCounter()
        self.alerts = _TopCounter()  # (sender, level, description)

    def record(self, event: SniffEvent, now: float) -> None:
        if isinstance(event, TlsClientHello):
            self.client_hellos += 1
            self.offered_versions.add(event.version)
            self.snis.add(event.sni)
            self.offered_alpn.add(",".join(event.alpn))
        elif isinstance(event, TlsServerHello):
            self.server_hellos += 1
            self.chosen_versions.add(event.version)
            self.chosen_alpn.add(event.alpn)
        elif isinstance(event, TlsAlert):
            sender = "server" if event.direction is _S2C else "client"
            self.alerts.add((sender, event.level, event.description))

    def summary_line(self) -> Optional[str]:
        if not (self.client_hellos or self.server_hellos):
            return None
        versions = self.chosen_versions if self.server_hellos else self.offered_versions
        line = versions.most_common(1)[0][0]
        sni = self.snis.most_common(1)
        if sni and sni[0][0]:
            line += " SNI=" + sni[0][0]
        chosen = [name for name, _ in self.chosen_alpn.most_common(2) if name]
        offered = [name for name, _ in self.offered_alpn.most_common(1) if name]
        if chosen:  # TLS 1.2 says it in the ServerHello; 1.3 encrypts it (EncryptedExtensions)
            line += " ALPN=" + chosen[0]
        elif offered:
            line += " ALPN offered=" + offered[0]
        if self.client_hellos > 1:
            line += " (%s handshakes)" % format(self.client_hellos, ",")
        if len(self.snis) > 1:
            line += ", %d server names" % len(self.snis)
        return line

    def problems(self) -> List[str]:
        found = []
        for (sender, level, description), count in self.alerts.most_common(5):
            if description != "close_notify":
                text = "TLS alert from %s: %s%s" % (
                    sender,
                    description,
                    "" if level == "fatal" else " (%s)" % level,
                )
                found.append(_times(count, text))
        fatal = sum(n for key, n in self.alerts.most_common(len(self.alerts)) if key[1] == "fatal")
        if self.client_hellos > self.server_hellos + fatal:  # not explained by an alert
            missing = self.client_hellos - self.server_hellos
            found.append("%d TLS ClientHello(s) got no ServerHello" % missing)
        return found


class PostgresStats:
    def __init__(self) -> None:
        self.startups = 0
        self.users = _TopCounter()
        self.databases = _TopCounter()
        self.encryption = _TopCounter()  # "SSL accepted", "SSL refused", …
        self.server_version = ""
        self.queries = 0
        self.latency = LatencyReservoir()
        self.errors = _TopCounter()  # (code, message)

    def record(self, event: SniffEvent, now: float) -> None:
        if isinstance(event, PostgresStartup):
            self.startups += 1
            self.users.add(event.user)
            self.databases.add(event.database)
        elif isinstance(event, PostgresEncryptionAnswered):
            outcome = "accepted" if event.accepted else "refused"
            self.encryption.add("%s %s" % (event.request, outcome))
        elif isinstance(event, PostgresServerVersion):
            self.server_version = event.version
        elif isinstance(event, PostgresQueryDone):
            self.queries += 1
            if event.latency_s is not None:
                self.latency.add(event.latency_s)
        elif isinstance(event, PostgresError):
            self.errors.add((event.code, event.message))

    def summary_line(self) -> Optional[str]:
        if not (self.startups or self.encryption.total or self.queries or self.errors.total):
            return None
        parts = []
        if self.startups:
            parts.append(
                "user=%s db=%s"
                % (self.users.most_common(1)[0][0], self.databases.most_common(1)[0][0])
            )
        elif self.encryption.counts.get("SSL accepted"):
            parts.append("TLS via SSLRequest (user and database encrypted)")
        if self.queries:
            parts.append(_count(self.queries, "query", "queries"))
        latency = _latency_text(self.latency)
        if latency:
            parts.append(latency)
        parts.extend(_coded_errors_part(self.errors))
        name = "Postgres %s" % self.server_version if self.server_version else "Postgres"
        return "%s: %s" % (name, ", ".join(parts))

    def problems(self) -> List[str]:
        return _coded_problems(self.errors, "Postgres")


def _coded_errors_part(errors: _TopCounter) -> List[str]:
    """'3 errors: 28P01 password authentication failed' (the commonest code), or nothing."""
    if not errors.total:
        return []
    (code, message), _ = errors.most_common(1)[0]
    plural = "s" if errors.total > 1 else ""
    return ["%d error%s: %s %s" % (errors.total, plural, code, message)]


def _coded_problems(errors: _TopCounter, protocol: str) -> List[str]:
    return [
        _times(count, "%s %s %s" % (protocol, code, message))
        for (code, message), count in errors.most_common(5)
    ]


class RedisStats:
    def __init__(self) -> None:
        self.commands = _TopCounter()
        self.errors = _TopCounter()  # prefix
        self.first_error: Dict[str, str] = {}
        self.latency = LatencyReservoir()

    def record(self, event: SniffEvent, now: float) -> None:
        if isinstance(event, RedisCommand):
            self.commands.add(event.name)
        elif isinstance(event, RedisReply):
            if event.latency_s is not None:
                self.latency.add(event.latency_s)
        elif isinstance(event, RedisError):
            self.errors.add(event.prefix)
            if len(self.first_error) < SNIFF_TOP_KEYS:
                self.first_error.setdefault(event.prefix, event.message)

    def summary_line(self) -> Optional[str]:
        if not (self.commands.total or self.errors.total):
            return None
        parts = [_count(self.commands.total, "command")]
        if self.errors.total:
            prefixes = ", ".join(p for p, _ in self.errors.most_common(3))
            plural = "s" if self.errors.total > 1 else ""
            parts.append("%d error%s (%s)" % (self.errors.total, plural, prefixes))
        latency = _latency_text(self.latency)
        if latency:
            parts.append(latency)
        line = "Redis: " + ", ".join(parts)
        top = self.commands.most_common(3)
        if top:
            line += "; top: " + ", ".join(name for name, _ in top)
        return line

    def problems(self) -> List[str]:
        found = []
        for prefix, count in self.errors.most_common(5):
            message = self.first_error.get(prefix, "")
            found.append(_times(count, "Redis %s" % (message or prefix)))
        return found


class MysqlStats:
    def __init__(self) -> None:
        self.server_version = ""
        self.logins = 0
        self.users = _TopCounter()
        self.databases = _TopCounter()
        self.ssl_logins = 0
        self.commands = _TopCounter()
        self.errors = _TopCounter()  # (code, message)

    def record(self, event: SniffEvent, now: float) -> None:
        if isinstance(event, MysqlGreeting):
            self.server_version = event.server_version
        elif isinstance(event, MysqlLogin):
            self.logins += 1
            self.ssl_logins += event.ssl_requested
            if not event.ssl_requested:
                self.users.add(event.user)
                self.databases.add(event.database)
        elif isinstance(event, MysqlCommand):
            self.commands.add(event.name)
        elif isinstance(event, MysqlError):
            self.errors.add((event.code, event.message))

    def summary_line(self) -> Optional[str]:
        if not (self.server_version or self.logins or self.commands.total or self.errors.total):
            return None
        parts = []
        if len(self.users):
            user, _ = self.users.most_common(1)[0]
            database, _ = self.databases.most_common(1)[0]
            parts.append("user=%s%s" % (user, " db=%s" % database if database else ""))
        if self.ssl_logins:
            parts.append("%d TLS login%s" % (self.ssl_logins, "s" if self.ssl_logins > 1 else ""))
        queries = self.commands.counts.get("Query", 0) + self.commands.counts.get("StmtExecute", 0)
        parts.append(_count(queries, "query", "queries"))
        parts.extend(_coded_errors_part(self.errors))
        name = "MySQL %s" % self.server_version if self.server_version else "MySQL"
        return "%s: %s" % (name, ", ".join(parts))

    def problems(self) -> List[str]:
        return _coded_problems(self.errors, "MySQL")


class ProtocolStats:
    """Everything the sniffers of one forward learned; updated per event, read by the view.

    No merge step: every sniffer of the forward writes into the same object.
    """

    def __init__(self) -> None:
        self.http = HttpStats()
        self.http2 = Http2Stats()
        self.tls = TlsStats()
        self.postgres = PostgresStats()
        self.redis = RedisStats()
        self.mysql = MysqlStats()
        self.connections = _TopCounter()  # ProtocolKind → connections sniffed
        self.gave_up = _TopCounter()  # (kind, reason)
        self._routes = {
            HttpExchange: self.http,
            HttpUpgraded: self.http,
            HttpRequestUnanswered: self.http,
            Http2Stream: self.http2,
            Http2Reset: self.http2,
            Http2GoAway: self.http2,
            GrpcStatus: self.http2,
            TlsClientHello: self.tls,
            TlsServerHello: self.tls,
            TlsAlert: self.tls,
            PostgresEncryptionAnswered: self.postgres,
            PostgresStartup: self.postgres,
            PostgresServerVersion: self.postgres,
            PostgresError: self.postgres,
            PostgresQueryDone: self.postgres,
            RedisCommand: self.redis,
            RedisError: self.redis,
            RedisReply: self.redis,
            MysqlGreeting: self.mysql,
            MysqlLogin: self.mysql,
            MysqlCommand: self.mysql,
            MysqlError: self.mysql,
        }

    def count_connection(self, kind: ProtocolKind) -> None:
        self.connections.add(kind)

    def record(self, event: SniffEvent, now: float) -> None:
        if isinstance(event, ProtocolGaveUp):
            self.gave_up.add((event.kind, event.reason))
            return
        self._routes[type(event)].record(event, now)

    def _parts(self) -> List[Any]:
        return [self.http, self.http2, self.tls, self.postgres, self.redis, self.mysql]

    def summary_lines(self) -> List[str]:
        """Short human lines for the live view and the closing summary."""
        lines = [line for line in (part.summary_line() for part in self._parts()) if line]
        if self.gave_up.total:
            (kind, reason), _ = self.gave_up.most_common(1)[0]
            lines.append(
                "not understood: %d connection(s) (%s: %s)"
                % (self.gave_up.total, kind.value, reason)
            )
        return lines

    def problems(self) -> List[str]:
        """Things worth a warning: 5xx, TLS alerts, auth failures, gRPC errors, resets."""
        found: List[str] = []
        for part in self._parts():
            found.extend(part.problems())
        return found


# ---- detection (mitmproxy's next_layer: cheap predicates over the first bytes) ----

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_PG_SSL_REQUEST = 80877103
_PG_GSSENC_REQUEST = 80877104
_PG_CANCEL_REQUEST = 80877102
_HTTP1_REQUEST_START = LazyPattern(
    rb"[A-Z][A-Z-]{1,19} (/|\*|[a-zA-Z][a-zA-Z0-9+.-]*://|[^ /]+:\d)"
)
_HTTP1_REQUEST_LINE = LazyPattern(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ \S+ HTTP/\d\.\d\r?\n")
_RESP_ARRAY_START = LazyPattern(rb"\*[0-9]{1,9}\r\n[$*]")
_REDIS_INLINE = LazyPattern(rb"(?i)(PING|AUTH|HELLO|INFO|SELECT|ECHO|QUIT|COMMAND)( |\r?\n)")
#: Ports that only break ties: a short first line on 6379 is an inline Redis command, a
#: short first server packet on 3306 may still grow into a MySQL greeting.
_PORT_HINTS = {6379: ProtocolKind.REDIS, 6380: ProtocolKind.REDIS, 3306: ProtocolKind.MYSQL}


def starts_like_tls_record(data: bytes) -> bool:
    """A TLS handshake record header (mitmproxy's check): type 22, version 3.0-3.3."""
    return len(data) > 2 and data[0] == 0x16 and data[1] == 0x03 and data[2] <= 0x03


def starts_like_http2_preface(data: bytes) -> bool:
    return data.startswith(HTTP2_PREFACE)


def starts_like_http1_request(data: bytes) -> bool:
    """An HTTP/1 request line: a method token, a space, then a target that looks like one."""
    return bool(_HTTP1_REQUEST_START.match(data) or _HTTP1_REQUEST_LINE.match(data))


def starts_like_postgres(data: bytes) -> bool:
    """A StartupMessage (protocol 3.x), SSLRequest, GSSENCRequest or CancelRequest."""
    if len(data) < 8:
        return False
    length, code = struct.unpack_from(">II", data)
    if code in (_PG_SSL_REQUEST, _PG_GSSENC_REQUEST):
        return length == 8
    if code == _PG_CANCEL_REQUEST:
        return length == 16
    return code >> 16 == 3 and 8 < length <= SNIFF_MAX_PG_STARTUP_BYTES


def starts_like_resp(data: bytes) -> bool:
    """A RESP array of bulk strings (how every Redis client sends commands)."""
    return bool(_RESP_ARRAY_START.match(data))


def starts_like_redis_inline(data: bytes) -> bool:
    """An inline command a person types (redis-cli over telnet, health checks)."""
    return bool(_REDIS_INLINE.match(data))


def starts_like_mysql_greeting(data: bytes) -> bool:
    """The server speaks first: packet length, sequence 0, protocol 10, a version digit."""
    if len(data) < 6:
        return False
    length = int.from_bytes(data[0:3], "little")
    return 8 < length < 1024 and data[3] == 0 and data[4] == 10 and 0x30 <= data[5] <= 0x39


def _could_still_become(data: bytes, magic: bytes) -> bool:
    return len(data) < len(magic) and magic.startswith(data)


def _detect_client_first(data: bytes) -> Optional[ProtocolKind]:
    """Protocols where the client speaks first; None if `data` could still be one of them."""
    if starts_like_tls_record(data):
        return ProtocolKind.TLS
    if starts_like_http2_preface(data):
        return ProtocolKind.HTTP2
    if starts_like_postgres(data):
        return ProtocolKind.POSTGRES
    if starts_like_resp(data):
        return ProtocolKind.REDIS
    if starts_like_http1_request(data):
        return ProtocolKind.HTTP1
    if starts_like_redis_inline(data):
        return ProtocolKind.REDIS
    return None


def _client_needs_more(data: bytes) -> bool:
    """Could more bytes still turn this prefix into something we recognise?"""
    if len(data) < 8 or _could_still_become(data, HTTP2_PREFACE):
        return True
    first_line_done = b"\n" in data
    return not first_line_done and (data[:1].isalpha() or data[:1] == b"*")


def detect_protocol(
    client_prefix: bytes, server_prefix: bytes, remote_port: int
) -> Optional[ProtocolKind]:
    """Which sniffer fits this connection; None while more bytes are needed.

    Bounded: once a side has sent SNIFF_DETECT_MAX_BYTES, or both sides spoke without a match,
    the answer is UNKNOWN. The port only breaks ties (an inline Redis command vs. nothing).
    """
    # 1) the client spoke first: most protocols ("PRI * HTTP" is not HTTP/1 yet: h2's preface)
    if _could_still_become(client_prefix, HTTP2_PREFACE) and client_prefix:
        return None
    if client_prefix:
        kind = _detect_client_first(client_prefix)
        if kind is not None:
            return kind
    # 2) the server spoke first: MySQL's greeting
    if server_prefix and not client_prefix:
        if starts_like_mysql_greeting(server_prefix):
            return ProtocolKind.MYSQL
        if len(server_prefix) < 6 and _PORT_HINTS.get(remote_port) is ProtocolKind.MYSQL:
            return None
        return ProtocolKind.UNKNOWN
    if server_prefix and starts_like_mysql_greeting(server_prefix):
        return ProtocolKind.MYSQL
    # 3) unrecognised so far: wait for more, within bounds
    too_long = max(len(client_prefix), len(server_prefix)) >= SNIFF_DETECT_MAX_BYTES
    if too_long or (client_prefix and server_prefix):
        return ProtocolKind.UNKNOWN
    if not client_prefix or _client_needs_more(client_prefix):
        return None
    # 4) the port breaks the tie for a complete but unrecognised first line
    hinted = _PORT_HINTS.get(remote_port)
    if hinted is ProtocolKind.REDIS and client_prefix[:1].isalpha():
        return hinted
    return ProtocolKind.UNKNOWN


# ---- HTTP/1.x ----


class _H1State(enum.Enum):
    HEAD = "head"
    BODY = "body"  # Content-Length: `remaining` bytes left
    CHUNK_SIZE = "chunk size line"
    CHUNK_DATA = "chunk data"
    CHUNK_END = "chunk CRLF"
    TRAILERS = "trailers"
    UNTIL_EOF = "body until EOF"
    PAUSED = "waiting for the upgrade answer"
    DONE = "done"


class _H1Side:
    """One direction's reader state."""

    __slots__ = ("message_bytes", "paused", "reasm", "remaining", "started", "state")

    def __init__(self) -> None:
        self.state = _H1State.HEAD
        self.remaining = 0
        self.message_bytes = 0
        self.started: Optional[float] = None
        self.reasm = _Reassembler()
        self.paused = bytearray()


class _H1Request:
    __slots__ = ("method", "path", "request_bytes", "started", "upgrade")

    def __init__(self, method: str, path: str, started: float, upgrade: str) -> None:
        self.method = method
        self.path = path
        self.started = started
        self.upgrade = upgrade
        self.request_bytes = 0


_REQUEST_LINE = LazyPattern(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/(\d)\.(\d)")
_STATUS_LINE = LazyPattern(r"HTTP/(\d)\.(\d) (\d{3})(?: .*)?")
_ID_SEGMENT = LazyPattern(
    r"(?<=/)(?:\d+|[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}|[0-9a-fA-F]{16,}|[A-Za-z0-9_-]{22,})(?=/|$)"
)


def normalize_path(target: str) -> str:
    """A route-like path for counting: no query, ids folded ("/users/42" → "/users/:id")."""
    route = _ROUTES_SEEN.get(target)
    if route is None:
        route = _fold_path(target)
        if len(target) <= SNIFF_MAX_TEXT_CHARS:  # memoised: the same paths come again and again
            if len(_ROUTES_SEEN) >= SNIFF_ROUTE_CACHE_ENTRIES:
                _ROUTES_SEEN.clear()
            _ROUTES_SEEN[target] = route
    return route


_ROUTES_SEEN: Dict[str, str] = {}


def _fold_path(target: str) -> str:
    path = target.split("?", 1)[0].split("#", 1)[0]
    if "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    path = _ID_SEGMENT.sub(":id", path)
    return _text(path.encode("latin-1", "replace")) or "/"


#: The only headers read: those that frame the message or end HTTP/1 on the connection.
_FRAMING_HEADER = LazyPattern(
    rb"\n(content-length|transfer-encoding|upgrade|connection)[ \t]*:[ \t]*([^\r\n]*)",
    re.IGNORECASE,
)


def _parse_head(head: bytes) -> Tuple[str, Dict[str, str]]:
    """Start line and the framing headers, lower-cased, repeats joined by "," (as h11).

    One regex scan instead of decoding every header line: for small requests that scan is
    most of what the sniffer costs.
    """
    end = head.find(b"\n")
    headers: Dict[str, str] = {}
    for match in _FRAMING_HEADER.finditer(head, end):
        key = match.group(1).lower().decode("ascii")
        value = match.group(2).strip().decode("latin-1")
        headers[key] = headers[key] + "," + value if key in headers else value
    return head[:end].rstrip(b"\r").decode("latin-1"), headers


def _content_length(headers: Dict[str, str]) -> Optional[int]:
    raw = headers.get("content-length")
    if raw is None:
        return None
    values = {value.strip() for value in raw.split(",")}
    if len(values) != 1 or not re.fullmatch(r"[0-9]{1,18}", next(iter(values))):  # ASCII only
        raise _GiveUp("invalid Content-Length %r" % _text(raw.encode("latin-1"), 40))
    return int(values.pop())


def _is_chunked(headers: Dict[str, str]) -> bool:
    codings = headers.get("transfer-encoding", "")
    return codings.rsplit(",", 1)[-1].strip().lower() == "chunked"


class Http1Sniffer(Sniffer):
    """HTTP/1.0 and 1.1: requests and responses paired in order (pipelining), bodies skipped
    by Content-Length or chunk framing, 1xx interim answers, 101/CONNECT end the parsing.

    A body costs one subtraction per chunk; only header blocks are copied.
    """

    kind = ProtocolKind.HTTP1

    def __init__(self, stats: Optional[ProtocolStats] = None) -> None:
        super().__init__(stats)
        self._client = _H1Side()
        self._server = _H1Side()
        self._pending: Any = collections.deque()
        self._status = 0  # the response being read
        self._closing = False  # a side announced `Connection: close` (or spoke HTTP/1.0)
        self._readers: Dict[_H1State, Callable[[_H1Side, Any, int, float], int]] = {
            _H1State.HEAD: self._read_head,
            _H1State.BODY: self._read_body,
            _H1State.CHUNK_SIZE: self._read_chunk_size,
            _H1State.CHUNK_DATA: self._read_chunk_data,
            _H1State.CHUNK_END: self._read_chunk_end,
            _H1State.TRAILERS: self._read_trailer_line,
            _H1State.UNTIL_EOF: self._read_until_eof,
            _H1State.PAUSED: self._read_while_paused,
        }

    @property
    def at_rest(self) -> bool:  # type: ignore[override]
        """Keep-alive, between exchanges: no request in flight, no partial message, no close
        announced. An HTTP/1 connection in this state may move to another pod unnoticed."""
        client, server = self._client, self._server
        return (
            self.active
            and not self._pending
            and not self._closing
            and client.state is _H1State.HEAD
            and server.state is _H1State.HEAD
            and not client.reasm.buf
            and not server.reasm.buf
        )

    def _receive(self, direction: Direction, data: Any, now: float) -> None:
        side = self._client if direction is _C2S else self._server
        size = len(data)
        if side.state is _H1State.BODY and size < side.remaining:  # hot path
            side.remaining -= size
            side.message_bytes += size
            return
        position = 0
        while position < size and self.active and side.state is not _H1State.DONE:
            position = self._readers[side.state](side, data, position, now)

    # -- readers: (side, data, position, now) -> new position --

    def _read_head(self, side: _H1Side, data: Any, position: int, now: float) -> int:
        if not side.reasm.buf:
            while position < len(data) and data[position] in (13, 10):  # RFC 9112 §2.2
                position += 1
            if position == len(data):
                return position
            if data[position] < 0x21:  # h11: "obviously invalid", e.g. TLS where HTTP was due
                raise _GiveUp("not HTTP/1 (byte 0x%02x starts a message)" % data[position])
            if side.started is None:
                side.started = now
        head, end = side.reasm.take_until(
            data, position, _HEAD_END, SNIFF_MAX_HEADER_BYTES, "HTTP header block"
        )
        side.message_bytes += end - position
        if head is not None:
            if side is self._client:
                self._on_request_head(head, now)
            else:
                self._on_response_head(head, now)
        return end

    def _read_body(self, side: _H1Side, data: Any, position: int, now: float) -> int:
        taken = min(side.remaining, len(data) - position)
        side.remaining -= taken
        side.message_bytes += taken
        if side.remaining == 0:
            self._end_message(side, now)
        return position + taken

    def _read_chunk_size(self, side: _H1Side, data: Any, position: int, now: float) -> int:
        line, end = side.reasm.take_until(
            data, position, _LINE_END, SNIFF_MAX_CHUNK_LINE_BYTES, "chunk size line"
        )
        side.message_bytes += end - position
        if line is not None:
            digits = line.split(b";", 1)[0].strip()
            if not digits or len(digits) > 16 or digits.strip(b"0123456789abcdefABCDEF"):
                raise _GiveUp("invalid chunk size line")
            side.remaining = int(digits, 16)
            side.state = _H1State.CHUNK_DATA if side.remaining else _H1State.TRAILERS
        return end

    def _read_chunk_data(self, side: _H1Side, data: Any, position: int, now: float) -> int:
        taken = min(side.remaining, len(data) - position)
        side.remaining -= taken
        side.message_bytes += taken
        if side.remaining == 0:
            side.state = _H1State.CHUNK_END
        return position + taken

    def _read_chunk_end(self, side: _H1Side, data: Any, position: int, now: float) -> int:
        line, end = side.reasm.take_until(data, position, _LINE_END, 2, "chunk terminator")
        side.message_bytes += end - position
        if line is not None:
            if line.strip():
                raise _GiveUp("chunk data longer than its size")
            side.state = _H1State.CHUNK_SIZE
        return end

    def _read_trailer_line(self, side: _H1Side, data: Any, position: int, now: float) -> int:
        line, end = side.reasm.take_until(
            data, position, _LINE_END, SNIFF_MAX_HEADER_BYTES, "chunked trailer line"
        )
        side.message_bytes += end - position
        if line is not None:
            side.remaining += len(line)
            if side.remaining > SNIFF_MAX_HEADER_BYTES:
                raise _GiveUp("chunked trailers over %d bytes" % SNIFF_MAX_HEADER_BYTES)
            if not line.strip():
                self._end_message(side, now)
        return end

    def _read_until_eof(self, side: _H1Side, data: Any, position: int, now: float) -> int:
        side.message_bytes += len(data) - position
        return len(data)

    def _read_while_paused(self, side: _H1Side, data: Any, position: int, now: float) -> int:
        """Client bytes after an Upgrade/CONNECT request wait for the server's answer."""
        if len(side.paused) + len(data) - position > SNIFF_MAX_HEADER_BYTES:
            raise _GiveUp(
                "client sent over %d bytes before the upgrade answer" % SNIFF_MAX_HEADER_BYTES
            )
        side.paused += data[position:]
        return len(data)

    # -- message boundaries --

    def _on_request_head(self, head: bytes, now: float) -> None:
        start_line, headers = _parse_head(head)
        match = _REQUEST_LINE.fullmatch(start_line)
        if not match:
            raise _GiveUp("not an HTTP/1 request line")
        if len(self._pending) >= SNIFF_MAX_PENDING_REQUESTS:
            raise _GiveUp("over %d pipelined requests" % SNIFF_MAX_PENDING_REQUESTS)
        method = match.group(1)
        self._note_close(headers, match.group(3, 4))
        upgrade = "tunnel" if method == "CONNECT" else headers.get("upgrade", "")
        started = self._client.started if self._client.started is not None else now
        self._pending.append(_H1Request(method, normalize_path(match.group(2)), started, upgrade))
        length = _content_length(headers)
        if _is_chunked(headers):
            self._client.state = _H1State.CHUNK_SIZE
        elif length:
            self._client.state = _H1State.BODY
            self._client.remaining = length
        else:
            self._end_message(self._client, now)

    def _on_response_head(self, head: bytes, now: float) -> None:
        start_line, headers = _parse_head(head)
        match = _STATUS_LINE.fullmatch(start_line)
        if not match:
            raise _GiveUp("not an HTTP/1 status line")
        if not self._pending:
            raise _GiveUp("HTTP response without a request")
        status = int(match.group(3))
        self._note_close(headers, match.group(1, 2))
        request = self._pending[0]
        side = self._server
        if 100 <= status < 200 and status != 101:  # interim: the final answer is still due
            side.started = None
            return
        if status == 101 or (request.method == "CONNECT" and 200 <= status < 300):
            self._emit_exchange(request, status, now, complete=True)
            protocol = headers.get("upgrade", "") or request.upgrade or "unknown"
            self._emit(HttpUpgraded(_text(protocol.encode("latin-1"), 40), request.path), now)
            self._finish()  # what follows is another protocol
            return
        length = _content_length(headers)
        side.remaining = 0
        if request.method == "HEAD" or status in (204, 304):
            self._end_message(side, now, status)
        elif _is_chunked(headers):
            side.state = _H1State.CHUNK_SIZE
        elif length is not None:
            side.state = _H1State.BODY
            side.remaining = length
            if not length:
                self._end_message(side, now, status)
        else:
            side.state = _H1State.UNTIL_EOF
        self._status = status

    def _note_close(self, headers: Dict[str, str], version: Tuple[str, str]) -> None:
        connection = headers.get("connection", "").lower()
        if "close" in connection or (version == ("1", "0") and "keep-alive" not in connection):
            self._closing = True

    def _end_message(self, side: _H1Side, now: float, status: int = 0) -> None:
        if side is self._client:
            self._pending[-1].request_bytes = side.message_bytes
            paused = bool(self._pending[-1].upgrade)
            self._reset(side, _H1State.PAUSED if paused else _H1State.HEAD)
            return
        request = self._pending.popleft()
        self._emit_exchange(request, status or self._status, now, complete=True)
        self._reset(side, _H1State.HEAD)
        if request.upgrade and self._client.state is _H1State.PAUSED:
            self._resume_client(now)

    def _resume_client(self, now: float) -> None:
        """The upgrade was refused: what the client sent meanwhile is HTTP after all."""
        held = bytes(self._client.paused)
        self._client.paused.clear()
        self._client.state = _H1State.HEAD
        if held:
            self._receive(_C2S, held, now)

    def _reset(self, side: _H1Side, state: _H1State) -> None:
        side.state = state
        side.remaining = 0
        side.message_bytes = 0
        side.started = None

    def _emit_exchange(self, request: _H1Request, status: int, now: float, complete: bool) -> None:
        first_byte = self._server.started
        latency = None if first_byte is None else max(0.0, first_byte - request.started)
        exchange = HttpExchange(
            request.method,
            request.path,
            status,
            latency,
            request.request_bytes,
            self._server.message_bytes,
            complete,
        )
        self._emit(exchange, now)

    def _receive_eof(self, direction: Direction, now: float) -> None:
        if direction is _C2S:
            return
        side = self._server
        if side.state is _H1State.UNTIL_EOF:
            self._end_message(side, now)
        elif side.state is not _H1State.HEAD and self._pending:  # cut off mid-body
            self._emit_exchange(self._pending.popleft(), self._status, now, complete=False)
        for request in self._pending:
            self._emit(HttpRequestUnanswered(request.method, request.path), now)
        self._pending.clear()
        self._finish()


# ---- TLS ----

TLS_VERSION_NAMES = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}
#: RFC 8446 §6 / IANA TLS Alert registry.
TLS_ALERT_NAMES = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}
_TLS_CHANGE_CIPHER_SPEC, _TLS_ALERT, _TLS_HANDSHAKE, _TLS_APPLICATION_DATA = 20, 21, 22, 23
_TLS_EXT_SNI, _TLS_EXT_ALPN, _TLS_EXT_SUPPORTED_VERSIONS = 0, 16, 43
#: ServerHello.random of a HelloRetryRequest (RFC 8446 §4.1.3).
_TLS_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def _tls_version_name(code: int) -> str:
    return TLS_VERSION_NAMES.get(code, "0x%04x" % code)


def _is_grease(code: int) -> bool:
    return code & 0x0F0F == 0x0A0A


def _tls_extensions(cursor: _Cursor) -> Dict[int, bytes]:
    found: Dict[int, bytes] = {}
    if not cursor.remaining():
        return found
    block = _Cursor(cursor.vector(2))
    while block.remaining():
        ext_type = block.uint(2)
        found[ext_type] = block.vector(2)
    return found


def _alpn_names(raw: bytes) -> Tuple[str, ...]:
    cursor = _Cursor(_Cursor(raw).vector(2))
    names = []
    while cursor.remaining():
        names.append(_text(cursor.vector(1), 40))
    return tuple(names)


def _sni_name(raw: bytes) -> str:
    cursor = _Cursor(_Cursor(raw).vector(2))
    while cursor.remaining():
        name_type = cursor.uint(1)
        name = cursor.vector(2)
        if name_type == 0:
            return _text(name)
    return ""


def parse_client_hello(body: bytes) -> TlsClientHello:
    """A ClientHello handshake body (after the 4-byte handshake header)."""
    cursor = _Cursor(body)
    version = cursor.uint(2)
    cursor.take(32)  # random
    cursor.vector(1)  # legacy_session_id
    cursor.vector(2)  # cipher_suites
    cursor.vector(1)  # legacy_compression_methods
    extensions = _tls_extensions(cursor)
    if _TLS_EXT_SUPPORTED_VERSIONS in extensions:
        offered = _Cursor(_Cursor(extensions[_TLS_EXT_SUPPORTED_VERSIONS]).vector(1))
        versions = [offered.uint(2) for _ in range(offered.remaining() // 2)]
        real = [code for code in versions if not _is_grease(code)]
        version = max(real) if real else version
    sni = _sni_name(extensions[_TLS_EXT_SNI]) if _TLS_EXT_SNI in extensions else ""
    alpn = _alpn_names(extensions[_TLS_EXT_ALPN]) if _TLS_EXT_ALPN in extensions else ()
    return TlsClientHello(_tls_version_name(version), sni, alpn)


def parse_server_hello(body: bytes) -> Tuple[TlsServerHello, bool]:
    """A ServerHello body → (event, is a HelloRetryRequest)."""
    cursor = _Cursor(body)
    version = cursor.uint(2)
    random_bytes = cursor.take(32)
    cursor.vector(1)
    cipher = cursor.uint(2)
    cursor.uint(1)
    extensions = _tls_extensions(cursor)
    if _TLS_EXT_SUPPORTED_VERSIONS in extensions:
        version = _Cursor(extensions[_TLS_EXT_SUPPORTED_VERSIONS]).uint(2)
    alpn = _alpn_names(extensions[_TLS_EXT_ALPN]) if _TLS_EXT_ALPN in extensions else ()
    event = TlsServerHello(_tls_version_name(version), alpn[0] if alpn else "", "0x%04x" % cipher)
    return event, random_bytes == _TLS_HRR_RANDOM


class _TlsSide:
    __slots__ = ("encrypted", "handshake", "hello_seen", "reasm", "record_type", "remaining")

    def __init__(self) -> None:
        self.reasm = _Reassembler()
        self.record_type = 0
        self.remaining = 0  # body bytes of the current record (0: a header is next)
        self.handshake = bytearray()
        self.hello_seen = False
        self.encrypted = False  # sent ChangeCipherSpec or application data


class TlsSniffer(Sniffer):
    """ClientHello (versions, SNI, ALPN), ServerHello (chosen version, ALPN, cipher) and alerts
    sent in the clear. Once both sides are encrypted nothing more can be learned: the sniffer
    stops, so a long TLS stream costs nothing after the handshake.

    Alerts are reported only from 2-byte alert records: an encrypted alert always carries an
    authentication tag, so it is never mistaken for one (and never guessed at).
    """

    kind = ProtocolKind.TLS

    def __init__(self, stats: Optional[ProtocolStats] = None) -> None:
        super().__init__(stats)
        self._sides = {_C2S: _TlsSide(), _S2C: _TlsSide()}

    def _receive(self, direction: Direction, data: Any, now: float) -> None:
        side = self._sides[direction]
        position = 0
        while position < len(data) and self.active:
            if side.remaining and not self._keeps(side):
                taken = min(side.remaining, len(data) - position)
                side.remaining -= taken
                position += taken
            elif side.remaining:
                body, position = side.reasm.take_exact(data, position, side.remaining)
                if body is not None:
                    side.remaining = 0
                    self._on_record(direction, side, body, now)
            else:
                header, position = side.reasm.take_exact(data, position, 5)
                if header is not None:
                    self._on_record_header(direction, side, header, now)

    def _keeps(self, side: _TlsSide) -> bool:
        if side.record_type == _TLS_HANDSHAKE:
            return not side.hello_seen and not side.encrypted
        return side.record_type == _TLS_ALERT and side.remaining == 2

    def _on_record_header(
        self, direction: Direction, side: _TlsSide, header: bytes, now: float
    ) -> None:
        record_type, major, _minor, length = struct.unpack(">BBBH", header)
        if major != 3 or not 20 <= record_type <= 24 or length > SNIFF_MAX_TLS_RECORD_BYTES:
            raise _GiveUp("not a TLS record")
        side.record_type = record_type
        side.remaining = length
        if record_type in (_TLS_CHANGE_CIPHER_SPEC, _TLS_APPLICATION_DATA):
            side.encrypted = True
            self._maybe_finish()
        if length == 0 and record_type == _TLS_HANDSHAKE:
            raise _GiveUp("empty TLS handshake record")

    def _on_record(self, direction: Direction, side: _TlsSide, body: bytes, now: float) -> None:
        if side.record_type == _TLS_ALERT:
            level = {1: "warning", 2: "fatal"}.get(body[0], str(body[0]))
            description = TLS_ALERT_NAMES.get(body[1], "alert %d" % body[1])
            self._emit(TlsAlert(level, description, direction), now)
            return
        side.handshake += body
        if len(side.handshake) > SNIFF_MAX_TLS_HANDSHAKE_BYTES:
            raise _GiveUp("TLS handshake message over %d bytes" % SNIFF_MAX_TLS_HANDSHAKE_BYTES)
        while len(side.handshake) >= 4 and not side.hello_seen:
            msg_type = side.handshake[0]
            length = int.from_bytes(side.handshake[1:4], "big")
            if len(side.handshake) < 4 + length:
                return
            message = bytes(side.handshake[4 : 4 + length])
            del side.handshake[: 4 + length]
            self._on_handshake_message(direction, side, msg_type, message, now)
        if side.hello_seen:
            side.handshake = bytearray()

    def _on_handshake_message(
        self, direction: Direction, side: _TlsSide, msg_type: int, message: bytes, now: float
    ) -> None:
        if direction is _C2S and msg_type == 1:
            side.hello_seen = True
            self._emit(parse_client_hello(message), now)
        elif direction is _S2C and msg_type == 2:
            event, retry = parse_server_hello(message)
            if retry:
                self._sides[_C2S].hello_seen = False  # a second ClientHello follows
                return
            side.hello_seen = True
            self._emit(event, now)
        else:
            raise _GiveUp("unexpected TLS handshake message %d" % msg_type)

    def _maybe_finish(self) -> None:
        if self._sides[_C2S].encrypted and self._sides[_S2C].encrypted:
            self._finish()


# ---- PostgreSQL ----


class _PgState(enum.Enum):
    STARTUP = "startup"  # untyped messages: length + body
    ANSWER = "answer"  # one byte: the server's answer to SSLRequest / GSSENCRequest
    HEADER = "header"  # typed messages: type byte + length
    KEEP = "keep"  # a message body we parse (prefix only, bounded)
    SKIP = "skip"  # a message body (or the rest of it) skipped by length
    TLS = "tls"  # encrypted after SSLRequest 'S': handed to a TlsSniffer


class _PgSide:
    __slots__ = ("kept", "msg_type", "reasm", "remaining", "state")

    def __init__(self, state: _PgState) -> None:
        self.state = state
        self.reasm = _Reassembler()
        self.msg_type = 0
        self.remaining = 0
        self.kept = 0


_PG_HEADER = struct.Struct(">BI")
_PG_KEEP = {_C2S: frozenset(), _S2C: frozenset(b"ES")}  # ErrorResponse, ParameterStatus
_PG_QUERY, _PG_EXECUTE, _PG_SYNC, _PG_READY = ord("Q"), ord("E"), ord("S"), ord("Z")


class PostgresSniffer(Sniffer):
    """Startup (SSLRequest/GSSENCRequest and the answer, user/database/application_name),
    ErrorResponse (severity, SQLSTATE, message), ParameterStatus server_version, and queries:
    each simple 'Q' or extended-protocol Sync is timed until its ReadyForQuery.

    After 'S' to an SSLRequest both directions go to a TlsSniffer (SNI/ALPN/alerts); every
    other message costs one header unpack, bodies are skipped by length.
    """

    kind = ProtocolKind.POSTGRES

    def __init__(self, stats: Optional[ProtocolStats] = None) -> None:
        super().__init__(stats)
        self._sides = {_C2S: _PgSide(_PgState.STARTUP), _S2C: _PgSide(_PgState.HEADER)}
        self._request = ""  # "SSL" / "GSSENC" while its answer is due
        self._ssl_requested = False
        self._in_flight: Any = collections.deque(maxlen=SNIFF_MAX_PENDING_REQUESTS)
        self._tls: Optional[TlsSniffer] = None

    def _receive(self, direction: Direction, data: Any, now: float) -> None:
        side = self._sides[direction]
        position = 0
        while position < len(data) and self.active:
            if side.state is _PgState.TLS:
                self._feed_tls(direction, data[position:], now)
                return
            if side.state is _PgState.HEADER:
                position = self._skip_whole_messages(direction, side, data, position, now)
            elif side.state is _PgState.SKIP:
                taken = min(side.remaining, len(data) - position)
                side.remaining -= taken
                position += taken
                if not side.remaining:
                    side.state = _PgState.HEADER
            else:
                position = self._read_unit(direction, side, data, position, now)

    def _skip_whole_messages(
        self, direction: Direction, side: _PgSide, data: Any, position: int, now: float
    ) -> int:
        """The fast path: messages whose body we don't need, straight out of the chunk."""
        keep = _PG_KEEP[direction]
        size = len(data)
        while not side.reasm.buf and position + 5 <= size:
            msg_type, length = _PG_HEADER.unpack_from(data, position)
            if msg_type in keep:
                break
            if length < 4:
                raise _GiveUp("invalid Postgres message length")
            self._on_message_type(direction, msg_type, now)
            position += 1 + length
            if position > size:
                side.remaining = position - size
                side.state = _PgState.SKIP
                return size
        if position < size:
            return self._read_unit(direction, side, data, position, now)
        return position

    def _read_unit(
        self, direction: Direction, side: _PgSide, data: Any, position: int, now: float
    ) -> int:
        if side.state is _PgState.ANSWER:
            answer, position = side.reasm.take_exact(data, position, 1)
            self._on_answer(answer or b"?", now)
        elif side.state is _PgState.HEADER:
            header, position = side.reasm.take_exact(data, position, 5)
            if header is not None:
                self._on_header(direction, side, header, now)
        elif side.state is _PgState.KEEP:
            body, position = side.reasm.take_exact(data, position, side.kept)
            if body is not None:
                side.state = _PgState.SKIP if side.remaining else _PgState.HEADER
                self._on_body(direction, side.msg_type, body, now)
        else:  # STARTUP: length first, then the whole (bounded) message
            position = self._read_startup(side, data, position, now)
        return position

    def _on_header(self, direction: Direction, side: _PgSide, header: bytes, now: float) -> None:
        msg_type, length = _PG_HEADER.unpack(header)
        if length < 4:
            raise _GiveUp("invalid Postgres message length")
        self._on_message_type(direction, msg_type, now)
        body = length - 4
        if msg_type in _PG_KEEP[direction] and body:
            side.msg_type = msg_type
            side.kept = min(body, SNIFF_MAX_MESSAGE_BYTES)
            side.remaining = body - side.kept
            side.state = _PgState.KEEP
        elif body:
            side.remaining = body
            side.state = _PgState.SKIP

    def _read_startup(self, side: _PgSide, data: Any, position: int, now: float) -> int:
        if not side.kept:
            header, position = side.reasm.take_exact(data, position, 4)
            if header is None:
                return position
            length = int.from_bytes(header, "big")
            if not 8 <= length <= SNIFF_MAX_PG_STARTUP_BYTES:
                raise _GiveUp("invalid Postgres startup length %d" % length)
            side.kept = length - 4
        body, position = side.reasm.take_exact(data, position, side.kept)
        if body is not None:
            side.kept = 0
            self._on_startup(body, now)
        return position

    def _on_startup(self, body: bytes, now: float) -> None:
        code = int.from_bytes(body[:4], "big")
        if code in (_PG_SSL_REQUEST, _PG_GSSENC_REQUEST):
            self._request = "SSL" if code == _PG_SSL_REQUEST else "GSSENC"
            self._ssl_requested = self._ssl_requested or code == _PG_SSL_REQUEST
            self._sides[_S2C].state = _PgState.ANSWER
            return
        if code == _PG_CANCEL_REQUEST:
            self._finish()
            return
        if code >> 16 != 3:
            raise _GiveUp("unsupported Postgres protocol %d.%d" % (code >> 16, code & 0xFFFF))
        fields = body[4:].split(b"\0")
        params = dict(zip(fields[0::2], fields[1::2]))
        user = _text(params.get(b"user", b""))
        startup = PostgresStartup(
            user,
            _text(params.get(b"database", b"")) or user,
            _text(params.get(b"application_name", b"")),
            self._ssl_requested,
        )
        self._emit(startup, now)
        self._sides[_C2S].state = _PgState.HEADER

    def _on_answer(self, answer: bytes, now: float) -> None:
        accepted = answer in (b"S", b"G")
        self._emit(PostgresEncryptionAnswered(self._request, accepted), now)
        if answer == b"S":
            self._tls = TlsSniffer(self.stats)
            self._sides[_C2S].state = self._sides[_S2C].state = _PgState.TLS
        elif answer == b"G":
            self._finish()  # GSSAPI encryption: nothing readable follows
        elif answer == b"N":
            self._sides[_S2C].state = _PgState.HEADER
        else:
            raise _GiveUp("unexpected answer %r to %sRequest" % (answer, self._request))

    def _feed_tls(self, direction: Direction, data: Any, now: float) -> None:
        assert self._tls is not None
        self._tls.feed(direction, data, now)
        if not self._tls.active:
            self._finish()

    def _on_message_type(self, direction: Direction, msg_type: int, now: float) -> None:
        if direction is _C2S:
            if msg_type in (_PG_QUERY, _PG_SYNC):
                self._in_flight.append(now)
        elif msg_type == _PG_READY and self._in_flight:
            self._emit(PostgresQueryDone(now - self._in_flight.popleft()), now)

    def _on_body(self, direction: Direction, msg_type: int, body: bytes, now: float) -> None:
        if msg_type == ord("E"):
            fields = {item[:1]: item[1:] for item in body.split(b"\0") if item}
            severity = fields.get(b"V") or fields.get(b"S") or b"ERROR"
            error = PostgresError(
                _text(severity), _text(fields.get(b"C", b"")), _text(fields.get(b"M", b""))
            )
            self._emit(error, now)
        elif msg_type == ord("S"):
            name, _, rest = body.partition(b"\0")
            if name == b"server_version":
                self._emit(PostgresServerVersion(_text(rest.rstrip(b"\0"), 40)), now)

    def _receive_eof(self, direction: Direction, now: float) -> None:
        if self._tls is not None:
            self._tls.feed(direction, b"", now)


# ---- Redis (RESP2/RESP3) ----

_RESP_AGGREGATES = {ord("*"): 1, ord("~"): 1, ord(">"): 1, ord("%"): 2, ord("|"): 2}
_RESP_BLOBS = frozenset(b"$!=")
_RESP_SIMPLE = frozenset(b"+:,#(_")
_RESP_ATTRIBUTE, _RESP_PUSH, _RESP_ERROR, _RESP_BLOB_ERROR = ord("|"), ord(">"), ord("-"), ord("!")
#: Commands after which replies no longer answer commands one for one (pub/sub, MONITOR).
_REDIS_UNPAIRED = frozenset({"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR"})
#: A bulk string length beyond Redis's own proto-max-bulk-len ceiling (512 MiB default).
_RESP_MAX_BULK = 2**32
_RESP_COMMAND_HEAD = LazyPattern(rb"\*([1-9][0-9]{0,8})\r\n\$([0-9]{1,9})\r\n")
_RESP_BULK_HEAD = LazyPattern(rb"\$([0-9]{1,9})\r\n")
_RESP_FAST_SIMPLE = frozenset(b"+:")


class _RespSide:
    """One direction's RESP framing: a stack of open aggregates, the bulk being skipped."""

    __slots__ = (
        "blob_error",
        "index",
        "keep",
        "name",
        "push",
        "reasm",
        "skip",
        "skip_after",
        "stack",
    )

    def __init__(self) -> None:
        self.reasm = _Reassembler()
        self.stack: List[List[int]] = []  # [elements left, type byte]
        self.index = 0  # element index inside the top-level aggregate
        self.skip = 0  # blob bytes (+ CRLF) still to skip
        self.keep = 0  # blob bytes to keep (a command name, a blob error)
        self.skip_after = 0
        self.name = b""
        self.push = False
        self.blob_error = False  # the kept blob is an error text ('!'), not a command name


class RedisSniffer(Sniffer):
    """Commands (arrays of bulk strings, or inline) → uppercased names; replies framed fully
    (RESP3 maps, sets, pushes, attributes) so '-ERR'/'-WRONGTYPE' are found at any depth and
    each reply is timed against its command. Values are skipped by length, never copied.
    """

    kind = ProtocolKind.REDIS

    def __init__(self, stats: Optional[ProtocolStats] = None) -> None:
        super().__init__(stats)
        self._sides = {_C2S: _RespSide(), _S2C: _RespSide()}
        self._in_flight: Any = collections.deque(maxlen=SNIFF_MAX_PENDING_REQUESTS)
        self._paired = True

    def _receive(self, direction: Direction, data: Any, now: float) -> None:
        side = self._sides[direction]
        position = 0
        size = len(data)
        fast = self._fast_command if direction is _C2S else self._fast_reply
        while position < size and self.active:
            if not (side.stack or side.skip or side.keep or side.reasm.buf):
                advanced = fast(side, data, position, now)
                if advanced != position:
                    position = advanced
                    continue
            if side.skip:
                taken = min(side.skip, size - position)
                side.skip -= taken
                position += taken
                if not side.skip:
                    self._value_done(direction, side, now)
            elif side.keep:
                blob, position = side.reasm.take_exact(data, position, side.keep)
                if blob is not None:
                    side.keep = 0
                    side.name = blob
                    side.skip = side.skip_after
            else:
                line, position = side.reasm.take_until(
                    data, position, _LINE_END, SNIFF_MAX_RESP_LINE_BYTES, "RESP line"
                )
                if line is not None:
                    self._on_line(direction, side, line.rstrip(b"\r\n"), now)

    # -- fast paths: a whole command / a simple reply inside the chunk, in a few C calls --

    def _fast_command(self, side: _RespSide, data: Any, position: int, now: float) -> int:
        """An array of bulk strings: name copied, arguments skipped by their lengths."""
        head = _RESP_COMMAND_HEAD.match(data, position)
        if head is None:
            return position
        count, length = int(head.group(1)), int(head.group(2))
        name_end = head.end() + length
        if length > SNIFF_MAX_NAME_BYTES or name_end + 2 > len(data):
            return position  # the general path keeps a bounded name across chunks
        side.name = bytes(data[head.end() : name_end])
        position = name_end + 2
        for index in range(1, count):
            argument = _RESP_BULK_HEAD.match(data, position)
            if argument is None:  # not a bulk string, or split: the general path goes on
                side.stack.append([count - index, ord("*")])
                side.index = index
                return position
            position = argument.end() + int(argument.group(1)) + 2
            if position > len(data):
                side.stack.append([count - index, ord("*")])
                side.index = index
                side.skip = position - len(data)
                return len(data)
        self._value_done(_C2S, side, now)
        return position

    def _fast_reply(self, side: _RespSide, data: Any, position: int, now: float) -> int:
        """A top-level '+OK', ':1' or '$n' bulk reply wholly inside the chunk."""
        if data[position] in _RESP_FAST_SIMPLE:
            end = _LINE_END.search(data, position, min(len(data), position + 256))
            if end is None:
                return position
            position = end.end()
        else:
            bulk = _RESP_BULK_HEAD.match(data, position)
            if bulk is None or bulk.end() + int(bulk.group(1)) + 2 > len(data):
                return position
            position = bulk.end() + int(bulk.group(1)) + 2
        self._value_done(_S2C, side, now)
        return position

    def _on_line(self, direction: Direction, side: _RespSide, line: bytes, now: float) -> None:
        if direction is _C2S and not side.stack:
            if not line:
                return  # redis ignores empty inline lines
            if line[0] != ord("*"):  # an inline command: "PING", "GET key"
                side.name = line.split(None, 1)[0][:SNIFF_MAX_NAME_BYTES]
                self._value_done(direction, side, now)
                return
        if not line:
            raise _GiveUp("empty RESP line")
        kind = line[0]
        if kind in _RESP_AGGREGATES:
            self._open_aggregate(direction, side, kind, _resp_number(line), now)
        elif kind in _RESP_BLOBS:
            self._open_blob(direction, side, kind, _resp_number(line), now)
        elif kind == _RESP_ERROR:
            self._on_error(line[1:], now)
            self._value_done(direction, side, now)
        elif kind in _RESP_SIMPLE and direction is _S2C:
            self._value_done(direction, side, now)
        else:
            raise _GiveUp("not RESP (line starts with %r)" % line[:1])

    def _open_aggregate(
        self, direction: Direction, side: _RespSide, kind: int, count: int, now: float
    ) -> None:
        if not side.stack:
            side.index = 0
            side.name = b""
            side.push = kind == _RESP_PUSH
        elements = count * _RESP_AGGREGATES[kind]
        if elements <= 0:  # empty or null aggregate: a complete value
            self._value_done(direction, side, now)
            return
        if len(side.stack) >= SNIFF_MAX_RESP_DEPTH:
            raise _GiveUp("RESP nested deeper than %d" % SNIFF_MAX_RESP_DEPTH)
        side.stack.append([elements, kind])

    def _open_blob(
        self, direction: Direction, side: _RespSide, kind: int, length: int, now: float
    ) -> None:
        if length < 0:  # null bulk string
            self._value_done(direction, side, now)
            return
        if length > _RESP_MAX_BULK:
            raise _GiveUp("RESP bulk string of %d bytes" % length)
        is_command_name = direction is _C2S and len(side.stack) == 1 and side.index == 0
        if is_command_name or kind == _RESP_BLOB_ERROR:
            side.keep = min(length, SNIFF_MAX_NAME_BYTES)
            side.skip_after = length - side.keep + 2
            side.blob_error = kind == _RESP_BLOB_ERROR
            if not side.keep:
                side.skip = side.skip_after
        else:
            side.skip = length + 2

    def _value_done(self, direction: Direction, side: _RespSide, now: float) -> None:
        if side.blob_error:
            side.blob_error = False
            self._on_error(side.name, now)
        stack = side.stack
        while stack:
            entry = stack[-1]
            entry[0] -= 1
            if entry[0] > 0:
                if len(stack) == 1:
                    side.index += 1
                return
            stack.pop()
            if entry[1] == _RESP_ATTRIBUTE:
                return  # an attribute decorates the next value; it is not one itself
        if direction is _C2S:
            self._on_command(side.name.upper(), now)  # bytes.upper(): ASCII letters only
        elif side.push:
            side.push = False
        else:
            self._on_reply(now)

    def _on_command(self, raw_name: bytes, now: float) -> None:
        name = _text(raw_name, SNIFF_MAX_NAME_BYTES)
        if not name:
            raise _GiveUp("RESP command without a name")
        self._emit(RedisCommand(name), now)
        if name in _REDIS_UNPAIRED:
            self._paired = False
        if self._paired:
            self._in_flight.append(now)

    def _on_reply(self, now: float) -> None:
        if self._paired and self._in_flight:
            self._emit(RedisReply(now - self._in_flight.popleft()), now)

    def _on_error(self, text: bytes, now: float) -> None:
        prefix = text.split(None, 1)[0] if text.strip() else b"ERR"
        self._emit(RedisError(_text(prefix, 32), _text(text)), now)


def _resp_number(line: bytes) -> int:
    try:
        return int(line[1:])
    except ValueError:
        raise _GiveUp("invalid RESP length %r" % line[:20]) from None


# ---- MySQL ----


class _MyPhase(enum.Enum):
    GREETING = "greeting"  # the server speaks first
    LOGIN = "login"  # the client's HandshakeResponse (or SSLRequest)
    AUTH = "auth"  # auth switch / more data until OK or ERR
    COMMAND = "command"
    TLS = "tls"


class _MySide:
    __slots__ = ("first", "kept", "length", "reasm", "remaining", "seq")

    def __init__(self) -> None:
        self.reasm = _Reassembler()
        self.length = 0  # of the packet whose first payload byte is next
        self.remaining = 0  # payload bytes left to skip
        self.kept = 0  # payload bytes to keep (0: a header is next)
        self.seq = 0
        self.first = -1


_MYSQL_COMMANDS = {
    0x01: "Quit",
    0x02: "InitDB",
    0x03: "Query",
    0x04: "FieldList",
    0x0E: "Ping",
    0x11: "ChangeUser",
    0x16: "StmtPrepare",
    0x17: "StmtExecute",
    0x19: "StmtClose",
    0x1F: "ResetConnection",
}
_MYSQL_CONNECT_WITH_DB = 0x08
_MYSQL_COMPRESS = 0x20
_MYSQL_PROTOCOL_41 = 0x200
_MYSQL_SSL = 0x800
_MYSQL_SECURE_CONNECTION = 0x8000
_MYSQL_PLUGIN_AUTH_LENENC = 0x200000
_MYSQL_ERR, _MYSQL_OK = 0xFF, 0x00


def _mysql_lenenc(cursor: _Cursor) -> int:
    first = cursor.uint(1)
    if first < 0xFB:
        return first
    sizes = {0xFC: 2, 0xFD: 3, 0xFE: 8}
    if first not in sizes:
        raise _GiveUp("invalid MySQL length-encoded integer")
    return cursor.uint(sizes[first], "little")


class MysqlSniffer(Sniffer):
    """Server greeting (version), the client's login (user, database; SSLRequest → TLS),
    ERR packets (code, SQLSTATE, message) and commands by name. Every packet costs one header
    unpack and one peek at its first byte; only login, greeting and ERR payloads are copied.
    """

    kind = ProtocolKind.MYSQL

    def __init__(self, stats: Optional[ProtocolStats] = None) -> None:
        super().__init__(stats)
        self._sides = {_C2S: _MySide(), _S2C: _MySide()}
        self._phase = _MyPhase.GREETING
        self._compressed = False
        self._tls: Optional[TlsSniffer] = None

    def _receive(self, direction: Direction, data: Any, now: float) -> None:
        side = self._sides[direction]
        position = 0
        size = len(data)
        while position < size and self.active:
            if self._phase is _MyPhase.TLS:
                self._feed_tls(direction, data[position:], now)
                return
            if side.kept:  # the payload prefix we parse comes before the rest we skip
                payload, position = side.reasm.take_exact(data, position, side.kept)
                if payload is not None:
                    side.kept = 0
                    self._on_payload(direction, side, payload, now)
            elif side.remaining:
                taken = min(side.remaining, size - position)
                side.remaining -= taken
                position += taken
            elif side.length:
                first, position = side.reasm.take_exact(data, position, 1)
                if first is not None:
                    self._on_packet_start(direction, side, first[0], now)
            else:  # a header; a zero-length packet (ending a 16 MiB series) has no payload
                header, position = side.reasm.take_exact(data, position, 4)
                if header is not None:
                    side.length = int.from_bytes(header[0:3], "little")
                    side.seq = header[3]

    def _on_packet_start(self, direction: Direction, side: _MySide, first: int, now: float) -> None:
        """The first payload byte says what a packet is (OK, ERR, a command…)."""
        length, side.length = side.length, 0
        side.first = first
        wanted = self._wanted(direction, side.seq, side.first, now)
        side.kept = min(length - 1, SNIFF_MAX_MESSAGE_BYTES) if wanted else 0
        side.remaining = length - 1 - side.kept
        if wanted and not side.kept:
            self._on_payload(direction, side, b"", now)

    def _wanted(self, direction: Direction, seq: int, first: int, now: float) -> bool:
        """Does this packet's payload matter? Counts commands on the way."""
        phase = self._phase
        if direction is _S2C:
            if phase is _MyPhase.AUTH and first == _MYSQL_OK:
                self._phase = _MyPhase.COMMAND
                if self._compressed:
                    self._finish()  # compressed packets from here on
                return False
            return phase is _MyPhase.GREETING or first == _MYSQL_ERR
        if phase is _MyPhase.LOGIN:
            return True
        if phase is _MyPhase.COMMAND and seq == 0:
            name = _MYSQL_COMMANDS.get(first, "0x%02x" % first)
            self._emit(MysqlCommand(name), now)
        if phase is _MyPhase.GREETING:
            raise _GiveUp("MySQL client spoke before the server greeting")
        return False

    def _on_payload(self, direction: Direction, side: _MySide, rest: bytes, now: float) -> None:
        payload = bytes([side.first]) + rest
        if direction is _S2C and side.first == _MYSQL_ERR:
            self._on_error(payload, now)
        elif direction is _S2C:
            self._on_greeting(payload, now)
        else:
            self._on_login(payload, now)

    def _on_greeting(self, payload: bytes, now: float) -> None:
        if payload[0] != 10:
            raise _GiveUp("unsupported MySQL protocol %d" % payload[0])
        version = _Cursor(payload, 1).cstring()
        self._emit(MysqlGreeting(_text(version, 60)), now)
        self._phase = _MyPhase.LOGIN

    def _on_login(self, payload: bytes, now: float) -> None:
        cursor = _Cursor(payload)
        caps = cursor.uint(4, "little")
        if not caps & _MYSQL_PROTOCOL_41:
            raise _GiveUp("pre-4.1 MySQL client protocol")
        cursor.take(28)  # max packet size, charset, filler
        if not cursor.remaining() and caps & _MYSQL_SSL:
            self._emit(MysqlLogin("", "", True), now)
            self._phase = _MyPhase.TLS
            self._tls = TlsSniffer(self.stats)
            return
        user = cursor.cstring()
        if caps & _MYSQL_PLUGIN_AUTH_LENENC:
            cursor.take(_mysql_lenenc(cursor))
        elif caps & _MYSQL_SECURE_CONNECTION:
            cursor.vector(1)
        else:
            cursor.cstring()
        database = cursor.cstring() if caps & _MYSQL_CONNECT_WITH_DB and cursor.remaining() else b""
        self._emit(MysqlLogin(_text(user), _text(database), False), now)
        self._compressed = bool(caps & _MYSQL_COMPRESS)
        self._phase = _MyPhase.AUTH

    def _on_error(self, payload: bytes, now: float) -> None:
        cursor = _Cursor(payload, 1)
        code = cursor.uint(2, "little")
        sqlstate = b""
        if cursor.remaining() and payload[cursor.pos] == ord("#"):
            cursor.take(1)
            sqlstate = cursor.take(5)
        message = payload[cursor.pos :]
        self._emit(MysqlError(code, _text(sqlstate, 5), _text(message)), now)
        if self._phase in (_MyPhase.GREETING, _MyPhase.AUTH):
            self._finish()  # the server closes after refusing a connection or a login

    def _feed_tls(self, direction: Direction, data: Any, now: float) -> None:
        assert self._tls is not None
        self._tls.feed(direction, data, now)
        if not self._tls.active:
            self._finish()

    def _receive_eof(self, direction: Direction, now: float) -> None:
        if self._tls is not None:
            self._tls.feed(direction, b"", now)


# ---- HPACK (RFC 7541): just enough to read :method/:path/:status/content-type/grpc-* ----

#: RFC 7541 Appendix A: the static table ("name=value"; index 1 first).
_HPACK_STATIC_TEXT = (
    ":authority|:method=GET|:method=POST|:path=/|:path=/index.html|:scheme=http|:scheme=https|"
    ":status=200|:status=204|:status=206|:status=304|:status=400|:status=404|:status=500|"
    "accept-charset|accept-encoding=gzip, deflate|accept-language|accept-ranges|accept|"
    "access-control-allow-origin|age|allow|authorization|cache-control|content-disposition|"
    "content-encoding|content-language|content-length|content-location|content-range|"
    "content-type|cookie|date|etag|expect|expires|from|host|if-match|if-modified-since|"
    "if-none-match|if-range|if-unmodified-since|last-modified|link|location|max-forwards|"
    "proxy-authenticate|proxy-authorization|range|referer|refresh|retry-after|server|"
    "set-cookie|strict-transport-security|transfer-encoding|user-agent|vary|via|"
    "www-authenticate"
)
_HPACK_STATIC = tuple(
    (name.encode(), value.encode())
    for name, _, value in (entry.partition("=") for entry in _HPACK_STATIC_TEXT.split("|"))
)
#: RFC 7541 Appendix B: Huffman code length of symbols 0-256 (256 is EOS). The code is
#: canonical (codes are consecutive in (length, symbol) order), so lengths define it fully.
_HPACK_HUFFMAN_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30,
    28, 28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5,
    7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22,
    22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23,
    22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22,
    21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26,
    26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20,
    24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27,
    27, 28, 27, 27, 27, 27, 27, 26, 30,
)  # fmt: skip


def _huffman_decoding_table() -> Tuple[List[int], List[int], List[int], List[int]]:
    """Canonical-code tables per length: first code, count, offset into symbols, symbols."""
    symbols = sorted(range(257), key=lambda s: (_HPACK_HUFFMAN_LENGTHS[s], s))
    first = [0] * 31
    count = [0] * 31
    offset = [0] * 31
    code = 0
    previous = 0
    for index, symbol in enumerate(symbols):
        length = _HPACK_HUFFMAN_LENGTHS[symbol]
        code <<= length - previous
        if count[length] == 0:
            first[length] = code
            offset[length] = index
        count[length] += 1
        code += 1
        previous = length
    return first, count, offset, symbols


_HUFFMAN_TABLE: Optional[Tuple[List[int], List[int], List[int], List[int]]] = None


def huffman_decode(data: bytes) -> bytes:
    """RFC 7541 §5.2 Huffman-decoded string; padding must be ≤ 7 one-bits."""
    global _HUFFMAN_TABLE
    if _HUFFMAN_TABLE is None:
        _HUFFMAN_TABLE = _huffman_decoding_table()
    first, count, offset, symbols = _HUFFMAN_TABLE
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = (code << 1) | ((byte >> shift) & 1)
            length += 1
            index = code - first[length]
            if 0 <= index < count[length]:
                symbol = symbols[offset[length] + index]
                if symbol == 256:
                    raise _GiveUp("HPACK Huffman EOS in a string")
                out.append(symbol)
                code = length = 0
            elif length >= 30:
                raise _GiveUp("invalid HPACK Huffman code")
    if length > 7 or code != (1 << length) - 1:
        raise _GiveUp("invalid HPACK Huffman padding")
    return bytes(out)


class HpackDecoder:
    """One direction's HPACK state: static + dynamic table (bounded) + Huffman strings."""

    def __init__(self, max_table_bytes: int = SNIFF_HPACK_TABLE_BYTES) -> None:
        self._entries: Any = collections.deque()  # newest first
        self._size = 0
        self._max = max_table_bytes

    def decode(self, block: bytes) -> List[Tuple[bytes, bytes]]:
        cursor = _Cursor(block)
        headers = []
        while cursor.remaining():
            byte = block[cursor.pos]
            if byte & 0x80:  # indexed field
                headers.append(self._lookup(self._integer(cursor, 7)))
            elif byte & 0x40:  # literal, added to the table
                field = self._literal(cursor, 6)
                self._add(field)
                headers.append(field)
            elif byte & 0x20:  # dynamic table size update
                size = self._integer(cursor, 5)
                if size > SNIFF_HPACK_MAX_TABLE_BYTES:
                    raise _GiveUp("HPACK table size %d over our bound" % size)
                self._max = size
                self._evict()
            else:  # literal without indexing / never indexed
                headers.append(self._literal(cursor, 4))
        return headers

    def _integer(self, cursor: _Cursor, prefix_bits: int) -> int:
        mask = (1 << prefix_bits) - 1
        value = cursor.uint(1) & mask
        if value < mask:
            return value
        shift = 0
        while True:
            byte = cursor.uint(1)
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
            if shift > 28:
                raise _GiveUp("HPACK integer too large")

    def _string(self, cursor: _Cursor) -> bytes:
        huffman = cursor.data[cursor.pos] & 0x80 if cursor.remaining() else 0
        raw = cursor.take(self._integer(cursor, 7))
        return huffman_decode(raw) if huffman else raw

    def _literal(self, cursor: _Cursor, prefix_bits: int) -> Tuple[bytes, bytes]:
        index = self._integer(cursor, prefix_bits)
        name = self._lookup(index)[0] if index else self._string(cursor)
        return name, self._string(cursor)

    def _lookup(self, index: int) -> Tuple[bytes, bytes]:
        if 1 <= index <= len(_HPACK_STATIC):
            return _HPACK_STATIC[index - 1]
        dynamic = index - len(_HPACK_STATIC) - 1
        if 0 <= dynamic < len(self._entries):
            return self._entries[dynamic]
        raise _GiveUp("HPACK index %d out of range" % index)

    def _add(self, field: Tuple[bytes, bytes]) -> None:
        self._entries.appendleft(field)
        self._size += len(field[0]) + len(field[1]) + 32
        self._evict()

    def _evict(self) -> None:
        while self._size > self._max and self._entries:
            name, value = self._entries.pop()
            self._size -= len(name) + len(value) + 32


# ---- HTTP/2 and gRPC ----

H2_ERROR_NAMES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}
GRPC_STATUS_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
_H2_DATA, _H2_HEADERS, _H2_RST_STREAM, _H2_PUSH_PROMISE, _H2_GOAWAY, _H2_CONTINUATION = (
    0,
    1,
    3,
    5,
    7,
    9,
)
_H2_END_STREAM, _H2_END_HEADERS, _H2_PADDED, _H2_PRIORITY = 0x1, 0x4, 0x8, 0x20
_H2_FRAME_HEADER = struct.Struct(">HBBBI")  # length as 16 + 8 bits, type, flags, stream id
_H2_KEPT_TYPES = frozenset(
    {_H2_HEADERS, _H2_RST_STREAM, _H2_PUSH_PROMISE, _H2_GOAWAY, _H2_CONTINUATION}
)


def _h2_error_name(code: int) -> str:
    return H2_ERROR_NAMES.get(code, "0x%x" % code)


class _H2Stream:
    __slots__ = (
        "first_response",
        "grpc",
        "grpc_message",
        "grpc_status",
        "method",
        "path",
        "request_bytes",
        "response_bytes",
        "started",
        "status",
    )

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_response: Optional[float] = None
        self.request_bytes = 0
        self.response_bytes = 0
        self.method = ""
        self.path = ""
        self.status = 0
        self.grpc = False
        self.grpc_status: Optional[int] = None
        self.grpc_message = ""


class _H2Side:
    __slots__ = (
        "block",
        "block_flags",
        "block_stream",
        "flags",
        "frame_type",
        "hpack",
        "hpack_ok",
        "kept",
        "preface_due",
        "reasm",
        "remaining",
        "stream_id",
    )

    def __init__(self, preface_due: bool) -> None:
        self.reasm = _Reassembler()
        self.preface_due = preface_due
        self.frame_type = 0
        self.flags = 0
        self.stream_id = 0
        self.kept = 0
        self.remaining = 0
        self.hpack = HpackDecoder()
        self.hpack_ok = True
        self.block = bytearray()  # a header block spread over HEADERS + CONTINUATION
        self.block_flags = 0
        self.block_stream = 0


class Http2Sniffer(Sniffer):
    """HTTP/2 frames: streams opened/ended, DATA bytes, RST_STREAM and GOAWAY error codes;
    HPACK-decoded :method/:path/:status and gRPC's content-type and grpc-status trailers.

    DATA costs one 9-byte header unpack per frame; only header blocks are copied (bounded),
    and if one is over the bound HPACK is abandoned for that direction, framing goes on.
    """

    kind = ProtocolKind.HTTP2

    def __init__(self, stats: Optional[ProtocolStats] = None) -> None:
        super().__init__(stats)
        self._sides = {_C2S: _H2Side(True), _S2C: _H2Side(False)}
        self._streams: Dict[int, _H2Stream] = {}

    def _receive(self, direction: Direction, data: Any, now: float) -> None:
        side = self._sides[direction]
        position = 0
        size = len(data)
        while position < size and self.active:
            if side.kept:  # the payload prefix we parse comes before the rest we skip
                payload, position = side.reasm.take_exact(data, position, side.kept)
                if payload is not None:
                    side.kept = 0
                    self._on_frame(direction, side, payload, now)
            elif side.remaining:
                taken = min(side.remaining, size - position)
                side.remaining -= taken
                position += taken
            elif side.preface_due:
                preface, position = side.reasm.take_exact(data, position, len(HTTP2_PREFACE))
                if preface is not None:
                    if preface != HTTP2_PREFACE:
                        raise _GiveUp("no HTTP/2 client preface")
                    side.preface_due = False
            else:
                header, position = side.reasm.take_exact(data, position, 9)
                if header is not None:
                    self._on_frame_header(direction, side, header, now)

    def _on_frame_header(
        self, direction: Direction, side: _H2Side, header: bytes, now: float
    ) -> None:
        high, low, frame_type, flags, stream_id = _H2_FRAME_HEADER.unpack(header)
        length = high << 8 | low
        side.frame_type, side.flags, side.stream_id = frame_type, flags, stream_id & 0x7FFFFFFF
        if frame_type == _H2_DATA:
            stream = self._streams.get(side.stream_id)
            if stream is not None:
                if direction is _C2S:
                    stream.request_bytes += length
                else:
                    stream.response_bytes += length
            side.remaining = length
            if flags & _H2_END_STREAM:
                self._maybe_end_stream(direction, side.stream_id, now)
            return
        if frame_type == _H2_HEADERS:  # its first byte: a stream opens, or its answer starts
            self._on_stream_headers_start(direction, side.stream_id, now)
        if frame_type in _H2_KEPT_TYPES:
            limit = SNIFF_MAX_H2_HEADER_BLOCK_BYTES
            if frame_type == _H2_GOAWAY:
                limit = 8 + SNIFF_MAX_H2_DEBUG_BYTES
            side.kept = min(length, limit)
            side.remaining = length - side.kept
            if frame_type not in (_H2_GOAWAY, _H2_RST_STREAM) and side.remaining:
                side.hpack_ok = False  # a header block we cannot keep: HPACK state is lost
            if not side.kept:
                self._on_frame(direction, side, b"", now)
            return
        side.remaining = length  # SETTINGS, PING, WINDOW_UPDATE, PRIORITY: skipped

    def _on_frame(self, direction: Direction, side: _H2Side, payload: bytes, now: float) -> None:
        frame_type = side.frame_type
        if frame_type == _H2_RST_STREAM:
            code = int.from_bytes(payload[:4], "big") if len(payload) >= 4 else -1
            error = _h2_error_name(code)
            self._emit(Http2Reset(side.stream_id, error, direction), now)
            self._end_stream(side.stream_id, now, error)
        elif frame_type == _H2_GOAWAY:
            cursor = _Cursor(payload)
            last_stream = cursor.uint(4) & 0x7FFFFFFF
            error = _h2_error_name(cursor.uint(4))
            debug = _text(payload[8:], 80)
            self._emit(Http2GoAway(last_stream, error, debug, direction), now)
        elif frame_type in (_H2_HEADERS, _H2_PUSH_PROMISE):
            self._on_headers_frame(direction, side, payload, now)
        elif frame_type == _H2_CONTINUATION:
            self._on_continuation(direction, side, payload, now)

    def _on_headers_frame(
        self, direction: Direction, side: _H2Side, payload: bytes, now: float
    ) -> None:
        flags = side.flags
        cursor = _Cursor(payload)
        pad = cursor.uint(1) if flags & _H2_PADDED else 0
        if side.frame_type == _H2_PUSH_PROMISE:
            cursor.take(4)  # promised stream id: pushed streams are not followed
        elif flags & _H2_PRIORITY:
            cursor.take(5)
        fragment = payload[cursor.pos : len(payload) - pad] if pad else payload[cursor.pos :]
        side.block = bytearray(fragment)
        side.block_flags = flags if side.frame_type == _H2_HEADERS else flags & ~_H2_END_STREAM
        side.block_stream = side.stream_id if side.frame_type == _H2_HEADERS else 0
        if flags & _H2_END_HEADERS:
            self._on_header_block(direction, side, now)

    def _on_continuation(
        self, direction: Direction, side: _H2Side, payload: bytes, now: float
    ) -> None:
        side.block += payload
        if len(side.block) > SNIFF_MAX_H2_HEADER_BLOCK_BYTES:
            side.hpack_ok = False
            side.block = bytearray()
        if side.flags & _H2_END_HEADERS:
            self._on_header_block(direction, side, now)

    def _on_stream_headers_start(self, direction: Direction, stream_id: int, now: float) -> None:
        stream = self._streams.get(stream_id)
        if direction is _C2S and stream is None and stream_id % 2 == 1:
            if len(self._streams) < SNIFF_MAX_H2_STREAMS:
                self._streams[stream_id] = _H2Stream(now)
        elif direction is _S2C and stream is not None and stream.first_response is None:
            stream.first_response = now

    def _on_header_block(self, direction: Direction, side: _H2Side, now: float) -> None:
        block, side.block = bytes(side.block), bytearray()
        stream = self._streams.get(side.block_stream)
        if side.hpack_ok:
            try:
                headers = side.hpack.decode(block)
            except _GiveUp:
                side.hpack_ok = False  # framing goes on without names
                headers = []
            if stream is not None:
                self._apply_headers(direction, stream, headers)
        if side.block_flags & _H2_END_STREAM:
            self._maybe_end_stream(direction, side.block_stream, now)

    def _apply_headers(
        self, direction: Direction, stream: _H2Stream, headers: List[Tuple[bytes, bytes]]
    ) -> None:
        for name, value in headers:
            if name == b":method":
                stream.method = _text(value, 16)
            elif name == b":path":
                stream.path = normalize_path(value.decode("latin-1"))
            elif name == b":status" and value.isdigit():
                stream.status = int(value)
            elif name == b"content-type" and value.startswith(b"application/grpc"):
                stream.grpc = True
            elif name == b"grpc-status" and value.isdigit() and direction is _S2C:
                stream.grpc_status = int(value)
            elif name == b"grpc-message" and direction is _S2C:
                stream.grpc_message = _text(_percent_decode(value))

    def _maybe_end_stream(self, direction: Direction, stream_id: int, now: float) -> None:
        """END_STREAM from the server completes the exchange (the client's only half-closes)."""
        if direction is _S2C:
            self._end_stream(stream_id, now, "")

    def _end_stream(self, stream_id: int, now: float, reset: str) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        latency = None if stream.first_response is None else stream.first_response - stream.started
        event = Http2Stream(
            stream_id,
            stream.method,
            stream.path,
            stream.status,
            stream.grpc,
            latency,
            stream.request_bytes,
            stream.response_bytes,
            reset,
        )
        self._emit(event, now)
        if stream.grpc and stream.grpc_status is not None:
            self._emit(GrpcStatus(stream.path, stream.grpc_status, stream.grpc_message), now)

    def _receive_eof(self, direction: Direction, now: float) -> None:
        if direction is _S2C:
            for stream_id in list(self._streams):
                self._end_stream(stream_id, now, "connection closed")


def _percent_decode(value: bytes) -> bytes:
    """grpc-message is percent-encoded (gRPC over HTTP/2 spec)."""
    import urllib.parse

    return urllib.parse.unquote_to_bytes(value)


# ---- registry (bottle's server_names: beside the classes it names) ----

SNIFFERS: Dict[ProtocolKind, type] = {
    ProtocolKind.HTTP1: Http1Sniffer,
    ProtocolKind.HTTP2: Http2Sniffer,
    ProtocolKind.TLS: TlsSniffer,
    ProtocolKind.POSTGRES: PostgresSniffer,
    ProtocolKind.REDIS: RedisSniffer,
    ProtocolKind.MYSQL: MysqlSniffer,
    ProtocolKind.UNKNOWN: NullSniffer,
}


def sniffer_for(kind: ProtocolKind, stats: ProtocolStats) -> Sniffer:
    """A fresh sniffer for one connection of `kind`, reporting into the forward's stats."""
    return SNIFFERS.get(kind, NullSniffer)(stats)


# ==== §12 wait arguments =======================================================================

#: Our own wait flags: never passed to the kubectl wait child.
VIBE_WAIT_FLAGS = frozenset(("fail-fast", "wait-for-create", "dry-run", "llm", "progress"))
#: Flags the child gets from us, not copied from the user's argv (we may rewrite them).
_WAIT_REBUILT_FLAGS = frozenset(("for", "timeout", "help"))


class ForKind(enum.Enum):
    """What a --for asks for (kubectl's conditionFuncFor), plus our own default readiness."""

    CONDITION = "condition"
    JSONPATH = "jsonpath"
    DELETE = "delete"
    CREATE = "create"
    READINESS = "readiness"  # no --for at all: the kind's own readiness (§13)


@frozen_record
class WaitFor:
    """One --for value as kubectl reads it."""

    kind: ForKind
    #: Condition type, or the JSONPath expression (with its braces).
    name: str = ""
    #: Expected value: a condition's status ("true" by default) or JSONPath's exact value; for
    #: JSONPath, None means "any value".
    value: Optional[str] = None
    raw: str = ""

    def describe(self) -> str:
        if self.kind is ForKind.CONDITION:
            return "condition %s=%s" % (self.name, self.value)
        if self.kind is ForKind.JSONPATH:
            return "%s%s" % (self.name, "" if self.value is None else "=" + self.value)
        return {
            ForKind.DELETE: "deletion",
            ForKind.CREATE: "creation",
            ForKind.READINESS: "readiness",
        }[self.kind]


READINESS = WaitFor(ForKind.READINESS)


def _split_jsonpath_value(text: str) -> Tuple[str, Optional[str]]:
    """`{expr}=value` → (expr, value): the `=` outside braces that is not part of `==`."""
    depth = 0
    for index, char in enumerate(text):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "=" and depth == 0:
            before = text[index - 1 : index]
            after = text[index + 1 : index + 2]
            if before not in ("=", "!", "<", ">") and after != "=":
                return text[:index], text[index + 1 :]
    return text, None


def parse_for(text: str) -> WaitFor:
    """kubectl's --for grammar; the same `unrecognized condition` error for anything else."""
    if text.lower() == "delete":
        return WaitFor(ForKind.DELETE, raw=text)
    if text.lower() == "create":
        return WaitFor(ForKind.CREATE, raw=text)
    if text.startswith("condition="):
        name, has_value, value = text[len("condition=") :].partition("=")
        return WaitFor(ForKind.CONDITION, name, value if has_value else "true", text)
    if text.startswith("jsonpath="):
        expression, value = _split_jsonpath_value(text[len("jsonpath=") :].strip())
        expression = expression.strip().strip("'\"")
        if not expression:
            raise VibeError("jsonpath expression cannot be empty")
        return WaitFor(ForKind.JSONPATH, expression, value.strip() if value else value, text)
    raise VibeError('unrecognized condition: "%s"' % text)


class ProgressMode(enum.Enum):
    """Where progress goes. stdout is always exactly kubectl's; progress goes to stderr."""

    AUTO = "auto"  # live view if stderr is a terminal, else plain lines
    LIVE = "live"
    PLAIN = "plain"
    JSON = "json"
    NONE = "none"


def parse_progress(text: str) -> ProgressMode:
    for mode in ProgressMode:
        if mode.value == text:
            return mode
    raise UsageError(
        'invalid argument "%s" for "--progress" flag: must be one of auto, live, plain, json, none'
        % text,
        "wait",
    )


def is_plain_english(positionals: Sequence[str]) -> bool:
    """Resource names never contain spaces; a request does ("for the web deployment ...")."""
    if any(re.search(r"\s", arg) for arg in positionals):
        return True
    return bool(positionals) and positionals[0].lower() in ("for", "until", "till")


def kubectl_wait_argv(
    flags: ParsedFlags, fors: Sequence[str], timeout_text: Optional[str]
) -> List[str]:
    """argv of the kubectl wait child: the user's own args in order, minus our flags and the
    globals (the runner appends those), with the given --for values and timeout."""
    argv = ["wait", *flags.positionals]
    for name, raw in flags.ordered:
        if name in GLOBAL_FLAG_NAMES or name in VIBE_WAIT_FLAGS or name in _WAIT_REBUILT_FLAGS:
            continue
        argv.append("--%s=%s" % (name, raw))
    argv.extend("--for=" + text for text in fors)
    if timeout_text is not None:
        argv.append("--timeout=" + timeout_text)
    return argv


def effective_timeout(seconds: float) -> float:
    """kubectl's rule: negative means a week; zero means "check once"."""
    return 168 * 3600.0 if seconds < 0 else seconds


def ordered_fors(fors: Sequence[WaitFor]) -> List[WaitFor]:
    """kubectl 1.36+: `create` is always waited for first, the rest in the user's order."""
    return [f for f in fors if f.kind is ForKind.CREATE] + [
        f for f in fors if f.kind is not ForKind.CREATE
    ]


def parse_kubectl_minor(version_json: str) -> Optional[int]:
    """Minor version from `kubectl version --client -o json` ("32+" → 32); None if unreadable."""
    try:
        minor = json.loads(version_json)["clientVersion"]["minor"]
    except (ValueError, KeyError, TypeError):
        return None
    match = re.match(r"\d+", str(minor))
    return int(match.group(0)) if match else None


#: First kubectl minor version whose --for may be repeated (ANDed).
KUBECTL_MULTI_FOR_MINOR = 36


@dataclass
class WaitOptions:
    """kubectl vibe wait: from_flags (pure, plain English translated) → complete (--llm, kubectl
    version) → validate (pure) → run (§19, the only I/O)."""

    flags: ParsedFlags
    fors: List[WaitFor]
    timeout_s: float = 30.0
    #: The --timeout text as the user wrote it (None: kubectl's default).
    timeout_text: Optional[str] = None
    fail_fast: bool = False
    wait_for_create: bool = False
    dry_run: bool = False
    llm: str = ""
    progress: ProgressMode = ProgressMode.AUTO
    #: The plain-English request, if one was given.
    request: str = ""
    #: What the request became (kubectl wait arguments), for the `→ kubectl wait ...` line.
    translated: List[str] = field(default_factory=list)
    #: kubectl's client minor version, when it matters (several --for).
    kubectl_minor: Optional[int] = None

    @classmethod
    def from_flags(cls, flags: ParsedFlags) -> WaitOptions:
        request = ""
        translated: List[str] = []
        if is_plain_english(flags.positionals):
            request = " ".join(flags.positionals)
            if not flags.get("llm"):
                translated = translate_request(request)
                flags = merge_translation(flags, translated)
        return cls._build(flags, request, translated)

    @classmethod
    def _build(cls, flags: ParsedFlags, request: str, translated: List[str]) -> WaitOptions:
        fors = [parse_for(text) for text in flags.get("for") or []]
        timeout_text = None
        for name, raw in flags.ordered:
            if name == "timeout":
                timeout_text = raw
        return cls(
            flags=flags,
            fors=fors,
            timeout_s=float(flags.get("timeout", 30.0)),
            timeout_text=timeout_text,
            fail_fast=bool(flags.get("fail-fast")),
            wait_for_create=bool(flags.get("wait-for-create")),
            dry_run=bool(flags.get("dry-run")),
            llm=flags.get("llm") or "",
            progress=parse_progress(flags.get("progress") or "auto"),
            request=request,
            translated=translated,
        )

    @property
    def decided_by_kubectl(self) -> bool:
        return bool(self.fors)

    @property
    def needs_kubectl_version(self) -> bool:
        return len(self.fors) > 1

    @property
    def sequential_fors(self) -> bool:
        """Several --for on a kubectl that keeps only the last one: run one wait per --for."""
        return len(self.fors) > 1 and (self.kubectl_minor or 0) < KUBECTL_MULTI_FOR_MINOR

    async def complete(self, runner: KubectlRunner) -> None:
        """--llm: ask the user's command; several --for: which kubectl decides how they run."""
        if self.request and self.llm and not self.translated:
            answer = await ask_llm(self.llm, self.request)
            translated = parse_llm_answer(answer)
            flags = merge_translation(self.flags, translated)
            rebuilt = WaitOptions._build(flags, self.request, translated)
            self.__dict__.update(rebuilt.__dict__)
            runner.global_args = list(self.flags.globals_argv)
        if self.needs_kubectl_version and self.kubectl_minor is None:
            done = await runner.run(["version", "--client", "-o", "json"], timeout=30)
            self.kubectl_minor = parse_kubectl_minor(done.stdout)

    def validate(self) -> None:
        flags = self.flags
        if self.request and not flags.positionals and not flags.get("filename"):
            raise VibeError("the request did not name any resource")
        if not flags.positionals and not flags.get("filename") and not self.request:
            raise UsageError(
                "you must specify a resource (e.g. deploy/web), a selector, -f or a request",
                "wait",
            )

    def arrow_line(self, prog: str) -> str:
        """`→ kubectl wait deployment/web -n prod --for=condition=Available --timeout=5m`: what
        a request became or, for typed arguments, what kubectl wait will be run with."""
        args = self.translated or self.typed_args()
        vibe_only = not self.fors or any(
            arg.split("=", 1)[0] in ("--fail-fast", "--wait-for-create") for arg in args
        )
        command = "%s wait" % prog if vibe_only else "kubectl wait"
        return "→ %s %s" % (command, " ".join(_shell_quote(arg) for arg in args))

    def typed_args(self) -> List[str]:
        """The kubectl wait child's arguments, its globals, and our own flags if any."""
        argv = self.child_argv([f.raw for f in self.fors], self.timeout_text)[1:]
        argv += self.flags.globals_argv
        argv += ["--fail-fast"] if self.fail_fast else []
        return argv + (["--wait-for-create"] if self.wait_for_create else [])

    def child_argv(self, fors: Sequence[str], timeout_text: Optional[str]) -> List[str]:
        return kubectl_wait_argv(self.flags, fors, timeout_text)


def _shell_quote(arg: str) -> str:
    if re.fullmatch(r"[\w@%+=:,./-]+", arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def merge_translation(flags: ParsedFlags, translated: Sequence[str]) -> ParsedFlags:
    """The translated args plus the user's own flags (e.g. --dry-run, --context), re-parsed
    by the same parser so a translation obeys exactly the rules typed args do."""
    own = ["--%s=%s" % (name, raw) for name, raw in flags.ordered]
    return FlagParser(WAIT_FLAGS, "wait").parse([*translated, *own])


_RESOURCE_ARG = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9.]*(/[a-z0-9][-a-z0-9.:]*)?$")


def _looks_like_resource_args(positionals: Sequence[str]) -> bool:
    """TYPE[.GROUP] NAME... or TYPE/NAME...: a known or qualified kind, never prose."""
    if not positionals:
        return True
    if not all(_RESOURCE_ARG.match(arg) for arg in positionals):
        return False
    first = positionals[0]
    if "/" in first:
        return all("/" in arg for arg in positionals)
    return first.lower() in _NL_KIND_BY_WORD or "." in first


def parse_llm_answer(answer: str) -> List[str]:
    """The --llm command's answer: kubectl wait arguments on one line (an optional leading
    `kubectl wait` is dropped). Validated by the same parser; plain English is refused."""
    import shlex

    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if not lines:
        raise VibeError("the --llm command printed nothing")
    try:
        args = shlex.split(lines[-1])
    except ValueError as exc:
        raise VibeError("the --llm command's answer is not valid arguments: %s" % exc) from None
    while args and args[0] in ("→", "kubectl", "vibe", "wait"):
        args = args[1:]
    parsed = FlagParser(WAIT_FLAGS, "wait").parse(args)
    resources = parsed.positionals or parsed.get("filename")
    if not resources or not _looks_like_resource_args(parsed.positionals):
        raise VibeError("the --llm command's answer is not kubectl wait arguments: %s" % lines[-1])
    for name in ("llm", "dry-run"):
        if name in parsed.explicit:
            raise VibeError("the --llm command's answer may not set --%s" % name)
    for text in parsed.get("for") or []:
        parse_for(text)
    return args


# ---- plain-English requests → kubectl wait arguments (an ordered rule table over the text) ----


class Phrase(enum.Enum):
    """What a request asks to wait for, before the kind decides the exact --for."""

    READY = "ready"
    NOT_READY = "not ready"
    AVAILABLE = "available"
    COMPLETE = "complete"
    FINISHED = "finished"
    FAILED = "failed"
    DELETED = "deleted"
    CREATED = "created"
    RUNNING = "running"
    ROLLED_OUT = "rolled out"
    HAS_IP = "has an IP"
    HAS_EXTERNAL_IP = "has an external IP"
    BOUND = "bound"
    ESTABLISHED = "established"
    SCHEDULED = "scheduled"


#: Canonical resource name → the words that mean it (singular, plural, short names).
_NL_KINDS: Dict[str, Tuple[str, ...]] = {
    "pod": ("pod", "pods", "po"),
    "deployment": ("deployment", "deployments", "deploy", "deploys"),
    "statefulset": ("statefulset", "statefulsets", "sts", "stateful set", "stateful sets"),
    "daemonset": ("daemonset", "daemonsets", "ds", "daemon set", "daemon sets"),
    "replicaset": ("replicaset", "replicasets", "rs", "replica set", "replica sets"),
    "job": ("job", "jobs"),
    "service": ("service", "services", "svc"),
    "persistentvolumeclaim": (
        "persistentvolumeclaim",
        "persistentvolumeclaims",
        "pvc",
        "pvcs",
        "volume claim",
        "volume claims",
    ),
    "persistentvolume": ("persistentvolume", "persistentvolumes", "pv", "pvs"),
    "node": ("node", "nodes"),
    "namespace": ("namespace", "namespaces"),
    "customresourcedefinition": (
        "customresourcedefinition",
        "customresourcedefinitions",
        "crd",
        "crds",
    ),
    "ingress": ("ingress", "ingresses", "ing"),
    "apiservice": ("apiservice", "apiservices"),
    "configmap": ("configmap", "configmaps", "cm", "config map", "config maps"),
    "secret": ("secret", "secrets"),
    "certificate": ("certificate", "certificates", "cert", "certs"),
}
#: Built-in kinds: a phrase must be in the table for them; other kinds (custom resources)
#: are "ready" when their Ready condition is True.
_NL_BUILTIN_KINDS = frozenset(_NL_KINDS) - {"certificate"}
_NL_KIND_BY_WORD = {word: kind for kind, words in _NL_KINDS.items() for word in words}
#: Kind words that end in "s" but name one object.
_NL_SINGULAR_S = frozenset(("ds", "rs", "sts", "ingress"))

#: Kinds whose plain "ready" means our kstatus readiness (kubectl has no single condition).
_NL_READINESS_KINDS = frozenset(
    (
        "deployment",
        "statefulset",
        "daemonset",
        "replicaset",
        "job",
        "service",
        "persistentvolumeclaim",
        "customresourcedefinition",
    )
)
_NL_ROLLOUT_KINDS = frozenset(("deployment", "statefulset", "daemonset"))
_NL_REPLICA_KINDS = frozenset(("deployment", "statefulset", "replicaset"))

_KIND_WORDS_RE = "|".join(
    re.escape(word).replace("\\ ", " ").replace(" ", r"\s+")
    for word in sorted(_NL_KIND_BY_WORD, key=len, reverse=True)
)
_NL_NAME = r"[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?"
#: Words that are grammar, never a resource name.
_NL_RESERVED = (
    r"(?:in|on|to|be|is|are|and|or|for|until|till|with|within|labell?ed|matching|named|called|"
    r"the|a|an|up|of|from|using|that|all|every|each|where|selector|namespace|context|cluster|"
    r"ready|available|gone|deleted|created|running|not|has|have|gets?|at|fail|fast|then|"
    r"across|it|they|them|its|their|once|now|has|been|become|becomes|until|max|maximum|no)"
)
_NL_ONE_NAME = r"(?!(?:%s|%s)(?![-a-z0-9.]))%s" % (_NL_RESERVED, _KIND_WORDS_RE, _NL_NAME)
_NL_NAMES = r"(%s(?:\s*,\s*%s|\s+and\s+%s)*)" % (_NL_ONE_NAME, _NL_ONE_NAME, _NL_ONE_NAME)
_NL_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30,
    "forty-five": 45, "sixty": 60, "ninety": 90,
}  # fmt: skip
_NL_UNITS = {
    "ms": "ms", "millisecond": "ms", "milliseconds": "ms",
    "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "m": "m", "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "d": "d", "day": "d", "days": "d", "week": "w", "weeks": "w",
}  # fmt: skip
_NL_NUMBER_WORD = r"(?:%s)" % "|".join(sorted(_NL_NUMBER_WORDS, key=len, reverse=True))
_NL_UNIT = r"(?:%s)" % "|".join(sorted(_NL_UNITS, key=len, reverse=True))
#: "5m", "5 minutes", "an hour" (a spelled number needs a space: "and" is not "an d").
_NL_DURATION_PART = r"(?:(\d+(?:\.\d+)?)\s*|(%s)\s+)(%s)(?![a-z])" % (_NL_NUMBER_WORD, _NL_UNIT)
_NL_DURATION = r"(?:half\s+an?\s+hour|%s(?:\s*(?:and\s+|,\s*)?%s)*)" % (
    re.sub(r"\((?!\?)", "(?:", _NL_DURATION_PART),
    re.sub(r"\((?!\?)", "(?:", _NL_DURATION_PART),
)
_NL_SELECTOR_TERM = r"[A-Za-z0-9][\w./-]*\s*(?:==|!=|=)\s*[\w.-]*"
_NL_SELECTOR = r"%s(?:\s*,\s*%s|\s+and\s+%s)*" % ((_NL_SELECTOR_TERM,) * 3)


def nl_duration(text: str) -> str:
    """ "5 minutes" → 5m, "an hour" → 1h, "2h30m" → 2h30m, "1.5 hours" → 1.5h (Go syntax)."""
    spoken = text.strip().lower()
    if re.fullmatch(r"half\s+an?\s+hour", spoken):
        return "30m"
    parts = []
    for digits, word, unit in re.findall(_NL_DURATION_PART, spoken):
        value = float(digits) if digits else float(_NL_NUMBER_WORDS[word])
        unit = _NL_UNITS[unit]
        if unit in ("d", "w"):  # Go durations stop at hours
            value, unit = value * (24 if unit == "d" else 168), "h"
        parts.append(("%g" % value) + unit)
    go_text = "".join(parts)
    parse_go_duration(go_text)  # a malformed mix ("5m2h") is refused by Go's own rules
    return go_text


@dataclass
class RequestParse:
    """What the rule table has understood so far."""

    kinds: List[str] = field(default_factory=list)
    names: List[Tuple[str, str]] = field(default_factory=list)  # (kind or "", name)
    plural: bool = False
    everything: bool = False
    selector: List[str] = field(default_factory=list)
    field_selector: str = ""
    namespace: str = ""
    all_namespaces: bool = False
    context: str = ""
    timeout: Optional[str] = None
    phrases: List[Phrase] = field(default_factory=list)
    conditions: List[str] = field(default_factory=list)  # explicit "condition X[=v]"
    jsonpaths: List[str] = field(default_factory=list)
    fail_fast: bool = False
    wait_for_create: bool = False

    def understood(self) -> str:
        parts = []
        if self.kinds:
            parts.append("kind=" + ",".join(dict.fromkeys(self.kinds)))
        if self.names:
            parts.append("name=" + ",".join(name for _, name in self.names))
        if self.selector:
            parts.append("selector=" + ",".join(self.selector))
        if self.namespace:
            parts.append("namespace=" + self.namespace)
        if self.all_namespaces:
            parts.append("all namespaces")
        if self.context:
            parts.append("context=" + self.context)
        wanted = [p.value for p in self.phrases] + self.conditions + self.jsonpaths
        if wanted:
            parts.append("for=" + ",".join(wanted))
        if self.timeout is not None:
            parts.append("timeout=" + self.timeout)
        return " ".join(parts) or "nothing"


class RequestRefused(VibeError):
    """A request that cannot be mapped exactly: say what was understood, suggest a phrasing."""

    def __init__(self, parse: RequestParse, problem: str) -> None:
        super().__init__(
            "cannot turn this into kubectl wait arguments: understood %s; %s"
            % (parse.understood(), problem)
        )


def _rule(pattern: str) -> Any:
    return LazyPattern(r"(?:%s)(?=$|[\s,.;!?])[\s,.;!?]*" % pattern, re.IGNORECASE)


def _nl_add_names(parse: RequestParse, kind: str, text: str) -> None:
    for name in re.split(r"\s*(?:,|\band\b)\s*", text.strip()):
        if name:
            parse.names.append((kind, name.lower()))


def _nl_kind(word: str) -> str:
    return _NL_KIND_BY_WORD[re.sub(r"\s+", " ", word.lower())]


def _nl_on_kind_names(parse: RequestParse, m: Any) -> None:
    kind = _nl_kind(m.group(1))
    parse.kinds.append(kind)
    _nl_add_names(parse, kind, m.group(2))


def _nl_on_names_kind(parse: RequestParse, m: Any) -> None:
    kind = _nl_kind(m.group(2))
    parse.kinds.append(kind)
    _nl_add_names(parse, kind, m.group(1))


def _nl_on_kind(parse: RequestParse, m: Any) -> None:
    word = re.sub(r"\s+", " ", m.group(2).lower())
    parse.kinds.append(_nl_kind(word))
    if m.group(1):
        parse.everything = True
    elif word.endswith("s") and word not in _NL_SINGULAR_S:
        parse.plural = True


def _nl_on_type_name(parse: RequestParse, m: Any) -> None:
    word = m.group(1).lower()
    kind = _NL_KIND_BY_WORD.get(word, word)
    parse.kinds.append(kind)
    parse.names.append((kind, m.group(2).lower()))


def _nl_on_selector(parse: RequestParse, m: Any) -> None:
    for term in re.split(r"\s*(?:,|\band\b)\s*", m.group(1).strip()):
        parse.selector.append(re.sub(r"\s+", "", term))


def _nl_on_condition(parse: RequestParse, m: Any) -> None:
    value = (m.group(2) or "true").lower()
    parse.conditions.append("condition=%s%s" % (m.group(1), "" if value == "true" else "=" + value))


def _nl_set(attribute: str, value: Any) -> Callable[[RequestParse, Any], None]:
    return lambda parse, m: setattr(parse, attribute, value)


def _nl_group(attribute: str, transform: Callable[[str], Any] = str) -> Callable[..., None]:
    return lambda parse, m: setattr(parse, attribute, transform(m.group(1)))


def _nl_phrase(phrase: Phrase) -> Callable[[RequestParse, Any], None]:
    return lambda parse, m: parse.phrases.append(phrase)


def _nl_jsonpath(template: str) -> Callable[[RequestParse, Any], None]:
    return lambda parse, m: parse.jsonpaths.append(template % m.groups())


def _nl_refuse(problem: str) -> Callable[[RequestParse, Any], None]:
    def refuse(parse: RequestParse, m: Any) -> None:
        raise RequestRefused(parse, problem)

    return refuse


_D = _NL_DURATION
_K = _KIND_WORDS_RE
_NAMES = _NL_NAMES

#: The grammar: at each position the first rule that matches consumes its words. Order matters:
#: durations before "in NAME", namespaces before kinds, phrases before names.
NL_RULES: Tuple[Tuple[Any, Callable[[RequestParse, Any], None]], ...] = (
    (_rule(r"(?:forever|indefinitely|with\s+no\s+timeout|without\s+(?:a\s+)?timeout)"),
     _nl_refuse('kubectl wait cannot wait forever (try "up to a week": negative --timeout '
                "means 168h)")),
    (_rule(r"(?:check\s+once|right\s+now|now|without\s+waiting|immediately)"),
     _nl_set("timeout", "0")),
    (_rule(r"(?:(?:for\s+)?up\s+to|within|(?:for\s+)?at\s+most|no\s+(?:more|longer)\s+than|"
           r"max(?:imum)?|(?:with\s+(?:a\s+)?)?timeout(?:\s+of|\s+after)?|give\s+up\s+after|"
           r"in|for|under|before|after)?\s*(%s)" % _D), _nl_group("timeout", nl_duration)),
    (_rule(r"(?:across|in|on)\s+(?:all|every)\s+namespaces?|everywhere|cluster[-\s]wide"),
     _nl_set("all_namespaces", True)),
    (_rule(r"(?:in|on|using|with|from)?\s*(?:the\s+)?(?:kube)?(?:context|cluster)\s+(%s)"
           % _NL_NAME), _nl_group("context")),
    (_rule(r"(?:in|on|using|from)\s+(?:the\s+)?(%s)\s+(?:kube)?(?:context|cluster)" % _NL_NAME),
     _nl_group("context")),
    (_rule(r"--context[=\s]+(%s)" % _NL_NAME), _nl_group("context")),
    (_rule(r"(?:in|from|within)?\s*(?:the\s+)?(?:namespace|ns)\s+(%s)" % _NL_NAME),
     _nl_group("namespace")),
    (_rule(r"(?:in|from|within)\s+(?:the\s+)?(%s)\s+(?:namespace|ns)" % _NL_NAME),
     _nl_group("namespace")),
    (_rule(r"-n[=\s]+(%s)" % _NL_NAME), _nl_group("namespace")),
    (_rule(r"(?:that\s+are\s+|which\s+are\s+)?(?:labell?ed|with\s+(?:the\s+)?labels?|matching|"
           r"where|selected\s+by|with\s+selector|selector|-l)\s*(%s)" % _NL_SELECTOR),
     _nl_on_selector),
    (_rule(r"(?:running\s+)?on\s+(?:the\s+)?node\s+(%s)" % _NL_NAME),
     _nl_group("field_selector", lambda node: "spec.nodeName=" + node)),
    (_rule(r"(?:and\s+)?(?:fail\s+fast|stop\s+(?:early|at\s+once)\s+(?:on|if)\s+(?:it\s+)?"
           r"fail(?:s|ure)?)"), _nl_set("fail_fast", True)),
    (_rule(r"(?:even\s+if\s+(?:it|they)\s+(?:does|do)(?:\s+not|n't)\s+exist\s+yet)"),
     _nl_set("wait_for_create", True)),
    (_rule(r"([a-z][a-z0-9.-]*)/(%s)" % _NL_NAME), _nl_on_type_name),
    (_rule(r"(?:(?:have|has|with)\s+)?(?:the\s+)?condition\s+([A-Za-z][\w.-]*)(?:\s+(?:is|to\s+be|=|==)\s+"
           r"(true|false|unknown))?"), _nl_on_condition),
    (_rule(r"(?:to\s+)?(?:have|has|with|reach|reaches)?\s*(\d+)\s+ready\s+replicas?"),
     _nl_jsonpath("jsonpath={.status.readyReplicas}=%s")),
    (_rule(r"(?:scaled\s+to|to\s+have|have|has)\s+(\d+)\s+replicas?"),
     _nl_jsonpath("jsonpath={.status.replicas}=%s")),
    (_rule(r"(?:in\s+)?phase\s+([A-Z][a-z]+)"),
     _nl_jsonpath("jsonpath={.status.phase}=%s")),
    (_rule(r"(?:(?:has|have|gets?|got|with|is\s+assigned)\s+)?an?\s+external\s+ip(?:\s+address)?|"
           r"(?:has|have|gets?)\s+(?:a\s+)?load\s*balancer(?:\s+(?:ip|address))?"),
     _nl_phrase(Phrase.HAS_EXTERNAL_IP)),
    (_rule(r"(?:(?:has|have|gets?|got|with|is\s+assigned)\s+)(?:an?\s+)?(?:pod\s+|cluster\s+)?"
           r"ip(?:\s+address)?|(?:has|have|gets?)\s+an?\s+address|(?:is\s+)?assigned\s+an?\s+ip"),
     _nl_phrase(Phrase.HAS_IP)),
    (_rule(r"not\s+ready|unready"), _nl_phrase(Phrase.NOT_READY)),
    (_rule(r"(?:ready|healthy\s+and\s+ready|up\s+and\s+ready)"), _nl_phrase(Phrase.READY)),
    (_rule(r"available"), _nl_phrase(Phrase.AVAILABLE)),
    (_rule(r"(?:rolled\s+out|(?:done|finished|finish)\s+rolling\s+out|rollout\s+(?:to\s+)?"
           r"(?:complete|finish|be\s+done|done)|roll\s+out)"), _nl_phrase(Phrase.ROLLED_OUT)),
    (_rule(r"(?:finished|finish|done|over|(?:complete|completed|succeeded|succeed)\s+or\s+fail(?:ed)?)"),
     _nl_phrase(Phrase.FINISHED)),
    (_rule(r"(?:complete|completed|succeeded|succeed|successful|successfully\s+completed)"),
     _nl_phrase(Phrase.COMPLETE)),
    (_rule(r"(?:failed|fail|fails)"), _nl_phrase(Phrase.FAILED)),
    (_rule(r"(?:deleted|gone|removed|disappears?|disappeared|go\s+away|goes\s+away|"
           r"terminated|no\s+longer\s+exists?|no\s+longer\s+there)"), _nl_phrase(Phrase.DELETED)),
    (_rule(r"(?:created|exists?|appears?|appeared|present|show\s+up|shows\s+up)"),
     _nl_phrase(Phrase.CREATED)),
    (_rule(r"(?:running|up\s+and\s+running|started)"), _nl_phrase(Phrase.RUNNING)),
    (_rule(r"bound"), _nl_phrase(Phrase.BOUND)),
    (_rule(r"established"), _nl_phrase(Phrase.ESTABLISHED)),
    (_rule(r"scheduled"), _nl_phrase(Phrase.SCHEDULED)),
    (_rule(r"(?:(?:of\s+)?the\s+)?(%s)\s+(?:named|called)\s+%s" % (_K, _NAMES)),
     _nl_on_kind_names),
    (_rule(r"(?:the\s+)?(%s)\s+%s(?!\s+(?:%s)\b)" % (_K, _NAMES, _K)), _nl_on_kind_names),
    (_rule(r"%s\s+(%s)" % (_NAMES, _K)), _nl_on_names_kind),
    (_rule(r"(all|every|each)?\s*(?:(?:of\s+)?the\s+|my\s+)?(%s)" % _K), _nl_on_kind),
    (_rule(r"(?:in|from)\s+(?!(?:%s|%s)(?![-a-z0-9]))(%s)" % (_NL_RESERVED, _K, _NL_NAME)),
     _nl_group("namespace")),
    (_rule(r"or|either"), _nl_refuse('kubectl wait cannot wait for one of several conditions '
                                     '(for a job, "finished" means complete, failing fast if it '
                                     'fails)')),
    (_rule(r"(?:for|until|till|the|to|be|is|are|get|gets|become|becomes|been|has\s+been|"
           r"have\s+been|please|wait|and|then|both|it|they|them|its|their|of|a|an|my|that|"
           r"all|once|has|have|had)"), lambda parse, m: None),
)  # fmt: skip


def parse_request(text: str) -> RequestParse:
    """Run the rule table over the request; an unknown word is refused, never skipped."""
    parse = RequestParse()
    body = text.strip().strip("\"'").strip()
    body = re.sub(r"^(?:kubectl\s+)?(?:vibe\s+)?wait\s+", "", body, flags=re.IGNORECASE)
    position = 0
    while position < len(body):
        for pattern, handle in NL_RULES:
            match = pattern.match(body, position)
            if match and match.end() > position:
                handle(parse, match)
                position = match.end()
                break
        else:
            word = body[position:].split()[0].strip(",.;!?")
            hint = (
                ""
                if parse.kinds
                else ' (name its kind: "the %s deployment", "pod %s")'
                % (
                    word,
                    word,
                )
            )
            raise RequestRefused(parse, 'did not understand "%s"%s' % (word, hint))
    return parse


#: (phrase, kind) → the exact --for values (kinds not listed: see _for_phrase).
_PHRASE_FORS: Dict[Tuple[Phrase, str], List[str]] = {
    (Phrase.READY, "pod"): ["condition=Ready"],
    (Phrase.READY, "node"): ["condition=Ready"],
    (Phrase.NOT_READY, "pod"): ["condition=Ready=false"],
    (Phrase.NOT_READY, "node"): ["condition=Ready=false"],
    (Phrase.AVAILABLE, "deployment"): ["condition=Available"],
    (Phrase.AVAILABLE, "apiservice"): ["condition=Available"],
    (Phrase.COMPLETE, "job"): ["condition=Complete"],
    (Phrase.COMPLETE, "pod"): ["jsonpath={.status.phase}=Succeeded"],
    (Phrase.FINISHED, "job"): ["condition=Complete"],
    (Phrase.FINISHED, "pod"): ["jsonpath={.status.phase}=Succeeded"],
    (Phrase.FAILED, "job"): ["condition=Failed"],
    (Phrase.FAILED, "pod"): ["jsonpath={.status.phase}=Failed"],
    (Phrase.RUNNING, "pod"): ["jsonpath={.status.phase}=Running"],
    (Phrase.HAS_IP, "pod"): ["jsonpath={.status.podIP}"],
    (Phrase.HAS_IP, "service"): ["jsonpath={.spec.clusterIP}"],
    (Phrase.HAS_EXTERNAL_IP, "service"): ["jsonpath={.status.loadBalancer.ingress[0].ip}"],
    (Phrase.BOUND, "persistentvolumeclaim"): ["jsonpath={.status.phase}=Bound"],
    (Phrase.BOUND, "persistentvolume"): ["jsonpath={.status.phase}=Bound"],
    (Phrase.ESTABLISHED, "customresourcedefinition"): ["condition=Established"],
    (Phrase.SCHEDULED, "pod"): ["condition=PodScheduled"],
}


def _for_phrase(phrase: Phrase, kind: str, parse: RequestParse) -> List[str]:
    """The exact --for values a phrase means for a kind ([] = the kind's own readiness)."""
    if phrase is Phrase.DELETED:
        return ["delete"]
    if phrase is Phrase.CREATED:
        return ["create"]
    if (phrase, kind) in _PHRASE_FORS:
        return list(_PHRASE_FORS[(phrase, kind)])
    if phrase is Phrase.READY and kind in _NL_READINESS_KINDS:
        return []
    if phrase is Phrase.READY and kind not in _NL_BUILTIN_KINDS:  # custom resources: Ready
        return ["condition=Ready"]
    if phrase is Phrase.ROLLED_OUT and kind in _NL_ROLLOUT_KINDS:
        return []
    raise RequestRefused(
        parse, 'a %s cannot be "%s" (try %s)' % (kind, phrase.value, _suggest_phrase(kind))
    )


def _suggest_phrase(kind: str) -> str:
    return {
        "pod": '"ready", "running", "completed" or "deleted"',
        "deployment": '"available", "rolled out" or "ready"',
        "job": '"complete", "failed" or "finished"',
        "service": '"ready" or "has an IP"',
        "persistentvolumeclaim": '"bound"',
        "customresourcedefinition": '"established"',
        "node": '"ready"',
    }.get(kind, '"ready", "deleted" or "created"')


def _request_fors(parse: RequestParse) -> Tuple[List[str], bool]:
    """(--for values, readiness wanted) for every kind named; kinds must agree."""
    wanted: Optional[Tuple[Tuple[str, ...], bool]] = None
    for kind in dict.fromkeys(parse.kinds):
        fors: List[str] = []
        readiness = False
        for phrase in parse.phrases:
            values = _for_phrase(phrase, kind, parse)
            readiness = readiness or not values
            fors.extend(v for v in values if v not in fors)
        fors.extend(parse.conditions + parse.jsonpaths)
        if wanted is not None and wanted != (tuple(fors), readiness):
            raise RequestRefused(
                parse, "these kinds need different conditions: ask for each kind separately"
            )
        wanted = (tuple(fors), readiness)
    assert wanted is not None
    return list(wanted[0]), wanted[1]


def _request_targets(parse: RequestParse) -> List[str]:
    if parse.names and (parse.selector or parse.everything):
        raise RequestRefused(parse, "name resources or select them by label, not both")
    if parse.names:
        return ["%s/%s" % (kind or "pod", name) for kind, name in parse.names]
    kinds = list(dict.fromkeys(parse.kinds))
    if len(kinds) > 1:
        raise RequestRefused(parse, 'select one kind at a time with labels or "all"')
    if not (parse.selector or parse.everything or parse.plural or parse.field_selector):
        raise RequestRefused(
            parse, 'missing: which %s (try "the web %s" or "all %ss")' % ((kinds[0],) * 3)
        )
    return [kinds[0]]


def translate_request(text: str) -> List[str]:
    """A plain-English request → exact kubectl wait arguments, or RequestRefused."""
    parse = parse_request(text)
    if not parse.kinds:
        raise RequestRefused(
            parse, 'missing: which resource (try "the web deployment" or "pods labelled app=web")'
        )
    if not (parse.phrases or parse.conditions or parse.jsonpaths):
        raise RequestRefused(
            parse,
            'missing: what to wait for (try "... to be %s")'
            % _suggest_phrase(parse.kinds[0]).split('"')[1],
        )
    if parse.namespace and parse.all_namespaces:
        raise RequestRefused(parse, "a namespace and all namespaces at once")
    args = _request_targets(parse)
    fors, readiness = _request_fors(parse)
    if "delete" in fors and len(fors) > 1:
        raise RequestRefused(parse, "deleted and something else at once")
    if readiness and "create" in fors:  # "created and rolled out": our create, our readiness
        fors.remove("create")
        parse.wait_for_create = True
    if readiness and fors:
        raise RequestRefused(
            parse, "the kind's own readiness cannot be combined with other conditions"
        )
    if parse.selector:
        args.append("-l")
        args.append(",".join(parse.selector))
    if parse.field_selector:
        args.append("--field-selector=" + parse.field_selector)
    if (parse.plural or parse.everything) and not (parse.selector or parse.field_selector):
        args.append("--all")
    if parse.namespace:
        args += ["-n", parse.namespace]
    if parse.all_namespaces:
        args.append("-A")
    args += ["--for=" + value for value in fors]
    if parse.timeout is not None:
        args.append("--timeout=" + parse.timeout)
    if parse.context:
        args.append("--context=" + parse.context)
    if parse.fail_fast or any(p is Phrase.FINISHED for p in parse.phrases):
        args.append("--fail-fast")
    if parse.wait_for_create:
        args.append("--wait-for-create")
    return args


# ==== §13 wait rules ===========================================================================


class ResourceStatus(enum.Enum):
    """kstatus's statuses: what a waited resource is doing right now."""

    IN_PROGRESS = "InProgress"
    CURRENT = "Current"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    NOT_FOUND = "NotFound"
    UNKNOWN = "Unknown"


@frozen_record
class StatusReport:
    """One resource's computed state: status, a human message, and why it is not done."""

    status: ResourceStatus
    message: str
    #: Reasons that explain the state ("Available=False MinimumReplicasUnavailable", ...).
    reasons: Tuple[str, ...] = ()
    #: A failure reason that --fail-fast may treat as terminal ("CrashLoopBackOff", ...).
    failure: str = ""


NOT_FOUND_REPORT = StatusReport(ResourceStatus.NOT_FOUND, "Resource not found")


def _meta(obj: Dict[str, Any]) -> Dict[str, Any]:
    return obj.get("metadata") or {}


def _status(obj: Dict[str, Any]) -> Dict[str, Any]:
    return obj.get("status") or {}


def find_condition(obj: Dict[str, Any], name: str) -> Optional[Dict[str, Any]]:
    """The status condition whose type equals `name`, case-insensitively (kubectl's EqualFold)."""
    for condition in _status(obj).get("conditions") or []:
        if str(condition.get("type", "")).lower() == name.lower():
            return condition
    return None


def _condition_is(obj: Dict[str, Any], name: str, value: str = "True") -> bool:
    condition = find_condition(obj, name)
    return condition is not None and str(condition.get("status", "")).lower() == value.lower()


def _condition_text(condition: Optional[Dict[str, Any]], name: str) -> str:
    """`Available=False MinimumReplicasUnavailable` (or `Available missing`)."""
    if condition is None:
        return "%s missing" % name
    text = "%s=%s" % (condition.get("type", name), condition.get("status", "Unknown"))
    return text + (" " + condition["reason"] if condition.get("reason") else "")


def resource_group(obj: Dict[str, Any]) -> str:
    api_version = str(obj.get("apiVersion") or "v1")
    return api_version.rpartition("/")[0]


def resource_id(obj: Dict[str, Any]) -> str:
    """kubectl's name printer: `deployment.apps/web`, `pod/web-0`."""
    group = resource_group(obj)
    kind = str(obj.get("kind") or "").lower()
    return "%s%s/%s" % (kind, "." + group if group else "", _meta(obj).get("name", ""))


_IRREGULAR_PLURALS = {"endpoints": "endpoints", "ingress": "ingresses"}


def resource_plural(kind: str) -> str:
    """The resource name kubectl's errors use ("deployments" for Deployment)."""
    word = kind.lower()
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _generation_lag(obj: Dict[str, Any]) -> Optional[StatusReport]:
    generation = _meta(obj).get("generation")
    observed = _status(obj).get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return StatusReport(
            ResourceStatus.IN_PROGRESS,
            "%s generation is %s, but latest observed generation is %s"
            % (obj.get("kind", "Resource"), generation, observed),
        )
    return None


def _replica_report(kind: str, parts: List[Tuple[str, int, int]], extra: Sequence[str]) -> Any:
    """Workloads: InProgress with the first counts that fall short, or Current."""
    short = ["%s %d/%d" % (label, have, want) for label, have, want in parts if have < want]
    if not short and not extra:
        want = parts[0][2] if parts else 0
        return StatusReport(ResourceStatus.CURRENT, "%s is ready: %d/%d" % (kind, want, want))
    return StatusReport(ResourceStatus.IN_PROGRESS, ", ".join(short + list(extra)), tuple(extra))


def _deployment_status(obj: Dict[str, Any]) -> StatusReport:
    spec, status = obj.get("spec") or {}, _status(obj)
    progressing = find_condition(obj, "Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return StatusReport(
            ResourceStatus.FAILED,
            "Progress deadline exceeded",
            (_condition_text(progressing, "Progressing"),),
            "ProgressDeadlineExceeded",
        )
    want = int(spec.get("replicas", 1))
    extra = []
    available = find_condition(obj, "Available")
    if available is not None and available.get("status") != "True":
        extra.append(_condition_text(available, "Available"))
    pending = int(status.get("replicas") or 0) - int(status.get("updatedReplicas") or 0)
    if pending > 0:
        extra.append("Pending termination %d" % pending)
    return _replica_report(
        "Deployment",
        [
            ("Ready", int(status.get("readyReplicas") or 0), want),
            ("Updated", int(status.get("updatedReplicas") or 0), want),
            ("Available", int(status.get("availableReplicas") or 0), want),
        ],
        extra,
    )


def _statefulset_status(obj: Dict[str, Any]) -> StatusReport:
    spec, status = obj.get("spec") or {}, _status(obj)
    want = int(spec.get("replicas", 1))
    extra = []
    if status.get("updateRevision") and status.get("currentRevision") != status.get(
        "updateRevision"
    ):
        extra.append("Revision %s rolling out" % status.get("updateRevision"))
    return _replica_report(
        "StatefulSet",
        [
            ("Ready", int(status.get("readyReplicas") or 0), want),
            ("Current", int(status.get("currentReplicas") or status.get("replicas") or 0), want),
        ],
        extra,
    )


def _daemonset_status(obj: Dict[str, Any]) -> StatusReport:
    status = _status(obj)
    want = int(status.get("desiredNumberScheduled") or 0)
    return _replica_report(
        "DaemonSet",
        [
            ("Ready", int(status.get("numberReady") or 0), want),
            ("Updated", int(status.get("updatedNumberScheduled") or 0), want),
            ("Available", int(status.get("numberAvailable") or 0), want),
        ],
        (),
    )


def _replicaset_status(obj: Dict[str, Any]) -> StatusReport:
    spec, status = obj.get("spec") or {}, _status(obj)
    want = int(spec.get("replicas", 1))
    return _replica_report(
        "ReplicaSet",
        [
            ("Ready", int(status.get("readyReplicas") or 0), want),
            ("Available", int(status.get("availableReplicas") or 0), want),
        ],
        (),
    )


def _job_status(obj: Dict[str, Any]) -> StatusReport:
    spec, status = obj.get("spec") or {}, _status(obj)
    completions = int(spec.get("completions") or 1)
    succeeded = int(status.get("succeeded") or 0)
    if _condition_is(obj, "Complete"):
        return StatusReport(
            ResourceStatus.CURRENT, "Job Completed. succeeded: %d/%d" % (succeeded, completions)
        )
    if _condition_is(obj, "Failed"):
        failed = find_condition(obj, "Failed") or {}
        why = failed.get("reason") or "Failed"
        return StatusReport(
            ResourceStatus.FAILED,
            "Job Failed: %s. failed: %s" % (why, status.get("failed", 0)),
            (_condition_text(failed, "Failed"),),
            "Job Failed (%s)" % why,
        )
    return StatusReport(
        ResourceStatus.IN_PROGRESS,
        "Job in progress. active: %s, succeeded: %d/%d"
        % (status.get("active", 0), succeeded, completions),
        ("Complete missing",),
    )


def container_problems(pod: Dict[str, Any]) -> List[Tuple[str, str, str]]:
    """(container, reason, message) for containers that are waiting or were OOMKilled."""
    problems = []
    status = _status(pod)
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason") or ""
        if reason and reason not in ("ContainerCreating", "PodInitializing"):
            problems.append((cs.get("name", "?"), reason, waiting.get("message") or ""))
        last = (cs.get("lastState") or {}).get("terminated") or {}
        if last.get("reason") == "OOMKilled" and int(cs.get("restartCount") or 0) > 0:
            problems.append(
                (cs.get("name", "?"), "OOMKilled", "restarted %s times" % cs.get("restartCount"))
            )
    return problems


#: Container waiting reasons that --fail-fast may treat as terminal (after FAIL_FAST_GRACE_S).
_POD_FAILURE_REASONS = frozenset(
    (
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    )
)


def _pod_failure(pod: Dict[str, Any]) -> str:
    """The pod's failure that may be terminal (the judge adds grace periods)."""
    for _container, reason, message in container_problems(pod):
        if reason in _POD_FAILURE_REASONS:
            return reason
        restarts = re.search(r"\d+", message)
        if reason == "OOMKilled" and restarts and int(restarts.group(0)) >= FAIL_FAST_OOM_RESTARTS:
            return "OOMKilled"
    scheduled = find_condition(pod, "PodScheduled")
    if scheduled is not None and scheduled.get("reason") == "Unschedulable":
        return "Unschedulable"
    return ""


#: The failure of a pod whose phase is Failed (terminal for the pod, not for its owner).
POD_FAILED = "Pod Failed"


def _pod_status(pod: Dict[str, Any]) -> StatusReport:
    phase = _status(pod).get("phase") or "Pending"
    if phase == "Succeeded":
        return StatusReport(ResourceStatus.CURRENT, "Pod has completed successfully")
    if phase == "Failed":
        reason = _status(pod).get("reason") or "Failed"
        return StatusReport(
            ResourceStatus.FAILED, "Pod has failed: %s" % reason, (reason,), POD_FAILED
        )
    problems = ["%s %s" % (reason, name) for name, reason, _ in container_problems(pod)]
    failure = _pod_failure(pod)
    if failure == "Unschedulable":
        problems.append("PodScheduled=False Unschedulable")
    if phase == "Running" and _condition_is(pod, "Ready"):
        # Ready now, but a container that keeps being OOMKilled still fails fast.
        return StatusReport(ResourceStatus.CURRENT, "Pod is Ready", tuple(problems), failure)
    ready = find_condition(pod, "Ready")
    message = "%s, %s" % (phase, _condition_text(ready, "Ready"))
    if problems:
        message = "%s: %s" % (phase, ", ".join(problems))
    status = ResourceStatus.FAILED if failure == "CrashLoopBackOff" else ResourceStatus.IN_PROGRESS
    return StatusReport(status, message, tuple(problems), failure)


def _pvc_status(obj: Dict[str, Any]) -> StatusReport:
    phase = _status(obj).get("phase") or "Pending"
    if phase == "Bound":
        return StatusReport(ResourceStatus.CURRENT, "PVC is Bound")
    return StatusReport(
        ResourceStatus.IN_PROGRESS, "PVC is not Bound. phase: %s" % phase, ("phase " + phase,)
    )


def _crd_status(obj: Dict[str, Any]) -> StatusReport:
    if _condition_is(obj, "NamesAccepted", "False"):
        condition = find_condition(obj, "NamesAccepted")
        return StatusReport(
            ResourceStatus.FAILED,
            "CRD names not accepted",
            (_condition_text(condition, "NamesAccepted"),),
            "NamesAccepted=False",
        )
    if _condition_is(obj, "Established"):
        return StatusReport(ResourceStatus.CURRENT, "CRD is established")
    return StatusReport(
        ResourceStatus.IN_PROGRESS,
        "CRD is not established",
        (_condition_text(find_condition(obj, "Established"), "Established"),),
    )


def _service_status(obj: Dict[str, Any], pods: Sequence[Dict[str, Any]]) -> StatusReport:
    spec = obj.get("spec") or {}
    if spec.get("type") == "LoadBalancer" and not (
        (_status(obj).get("loadBalancer") or {}).get("ingress")
    ):
        return StatusReport(
            ResourceStatus.IN_PROGRESS, "LoadBalancer has no ingress yet", ("no ingress",)
        )
    if not spec.get("selector") or spec.get("type") == "ExternalName":
        return StatusReport(ResourceStatus.CURRENT, "Service is ready")
    ready = [p for p in pods if _status(p).get("phase") == "Running" and is_pod_ready(p)]
    if ready:
        return StatusReport(
            ResourceStatus.CURRENT,
            "Service has %d ready endpoint%s" % (len(ready), "" if len(ready) == 1 else "s"),
        )
    return StatusReport(
        ResourceStatus.IN_PROGRESS,
        "Service has no ready endpoints (%d pods match %s)"
        % (len(pods), set_selector_string(spec["selector"])),
        ("no ready endpoints",),
    )


def _generic_status(obj: Dict[str, Any]) -> StatusReport:
    """kstatus for everything else: Stalled, Reconciling, then a Ready condition."""
    if _condition_is(obj, "Stalled"):
        condition = find_condition(obj, "Stalled")
        return StatusReport(
            ResourceStatus.FAILED,
            (condition or {}).get("message") or "Resource is stalled",
            (_condition_text(condition, "Stalled"),),
            "Stalled",
        )
    if _condition_is(obj, "Reconciling"):
        condition = find_condition(obj, "Reconciling")
        return StatusReport(
            ResourceStatus.IN_PROGRESS,
            (condition or {}).get("message") or "Resource is reconciling",
            (_condition_text(condition, "Reconciling"),),
        )
    ready = find_condition(obj, "Ready")
    if ready is not None and ready.get("status") != "True":
        return StatusReport(
            ResourceStatus.IN_PROGRESS,
            ready.get("message") or _condition_text(ready, "Ready"),
            (_condition_text(ready, "Ready"),),
        )
    if ready is not None:
        return StatusReport(ResourceStatus.CURRENT, "Resource is Ready")
    return StatusReport(ResourceStatus.CURRENT, "Resource is current")


_STATUS_RULES: Dict[str, Callable[[Dict[str, Any]], StatusReport]] = {
    "Deployment": _deployment_status,
    "StatefulSet": _statefulset_status,
    "DaemonSet": _daemonset_status,
    "ReplicaSet": _replicaset_status,
    "Job": _job_status,
    "Pod": _pod_status,
    "PersistentVolumeClaim": _pvc_status,
    "CustomResourceDefinition": _crd_status,
}


def compute_status(
    obj: Optional[Dict[str, Any]], now: float, pods: Sequence[Dict[str, Any]] = ()
) -> StatusReport:
    """kstatus's Compute(): Terminating, generation lag, then the kind's own rules.

    `pods` are the resource's pods (a Service's endpoints come from them)."""
    del now  # the rules are time-free; grace periods live in FailFastJudge
    if obj is None:
        return NOT_FOUND_REPORT
    if _meta(obj).get("deletionTimestamp"):
        return StatusReport(ResourceStatus.TERMINATING, "Resource is being deleted")
    lag = _generation_lag(obj)
    if lag is not None:
        return lag
    kind = str(obj.get("kind") or "")
    if kind == "Service":
        return _service_status(obj, pods)
    rule = _STATUS_RULES.get(kind, _generic_status)
    return rule(obj)


# ---- selectors: which pods belong to a waited resource ----------------------------------------


def _expression_matches(expression: Dict[str, Any], labels: Dict[str, str]) -> bool:
    key, operator = expression.get("key", ""), expression.get("operator", "")
    values = expression.get("values") or []
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False


def selector_matches(selector: Optional[Dict[str, Any]], labels: Dict[str, str]) -> bool:
    """metav1.LabelSelector semantics; an empty selector matches nothing here (not owned)."""
    if not selector:
        return False
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    return all(_expression_matches(e, labels) for e in expressions)


def owns_pod(obj: Dict[str, Any], pod: Dict[str, Any]) -> bool:
    """Whether `pod` is one of the waited resource's pods (by its selector, same namespace)."""
    if _meta(obj).get("namespace", "") != _meta(pod).get("namespace", ""):
        return False
    kind = obj.get("kind")
    labels = _meta(pod).get("labels") or {}
    spec = obj.get("spec") or {}
    if kind == "Service":
        selector = spec.get("selector") or {}
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return selector_matches(spec.get("selector"), labels)
    return False


def has_pods(obj: Dict[str, Any]) -> bool:
    return obj.get("kind") in (
        "Service",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
    )


# ---- kubectl's --for, evaluated on our copy of the object (for the live view) -----------------


def _jsonpath_steps(expression: str) -> Optional[List[Any]]:
    """`{.status.conditions[?(@.type=="Ready")].status}` → steps; None if beyond our subset."""
    body = expression.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    body = body.strip()
    if body.startswith("."):
        body = body[1:]
    steps: List[Any] = []
    token = re.compile(
        r"([A-Za-z_][\w-]*)|\[(\d+)\]|\[\?\(@\.([\w.-]+)\s*==?\s*[\"']([^\"']*)[\"']\)\]|(\.)"
    )
    position = 0
    while position < len(body):
        match = token.match(body, position)
        if not match:
            return None
        if match.group(1):
            steps.append(match.group(1))
        elif match.group(2):
            steps.append(int(match.group(2)))
        elif match.group(3):
            steps.append((match.group(3), match.group(4)))
        position = match.end()
    return steps


def jsonpath_value(obj: Any, expression: str) -> Tuple[bool, Any]:
    """(found, value) for our JSONPath subset; (False, None) when missing or unsupported."""
    steps = _jsonpath_steps(expression)
    if steps is None:
        return False, None
    value = obj
    for step in steps:
        if isinstance(step, str):
            if not isinstance(value, dict) or step not in value:
                return False, None
            value = value[step]
        elif isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                return False, None
            value = value[step]
        else:
            key, wanted = step
            items = value if isinstance(value, list) else []
            matches = [i for i in items if isinstance(i, dict) and str(i.get(key)) == wanted]
            if len(matches) != 1:
                return False, None
            value = matches[0]
    return True, value


def _go_value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def for_satisfied(
    obj: Optional[Dict[str, Any]], wanted: WaitFor, report: StatusReport
) -> Tuple[bool, str]:
    """(met, why not) for one --for, as kubectl would judge our copy of the object."""
    if wanted.kind is ForKind.DELETE:
        return obj is None, "still exists"
    if wanted.kind is ForKind.CREATE:
        return obj is not None, "does not exist yet"
    if obj is None:
        return False, "not found"
    if wanted.kind is ForKind.READINESS:
        return report.status is ResourceStatus.CURRENT, report.message
    if wanted.kind is ForKind.CONDITION:
        return _condition_met(obj, wanted)
    found, value = jsonpath_value(obj, wanted.name)
    if not found:
        return False, "%s is not set" % wanted.name
    if isinstance(value, (dict, list)):
        return False, "%s is an object or list" % wanted.name
    if wanted.value is None:
        return True, ""
    text = _go_value_text(value).strip()
    return text == wanted.value, "%s is %r, not %r" % (wanted.name, text, wanted.value)


def _condition_met(obj: Dict[str, Any], wanted: WaitFor) -> Tuple[bool, str]:
    condition = find_condition(obj, wanted.name)
    if condition is None:
        known = [str(c.get("type")) for c in _status(obj).get("conditions") or []]
        hint = " (it has: %s)" % ", ".join(known) if known else " (it has no conditions)"
        return False, "condition %s is missing%s" % (wanted.name, hint)
    generation = _meta(obj).get("generation")
    observed = condition.get("observedGeneration", _status(obj).get("observedGeneration"))
    if generation is not None and observed is not None and observed < generation:
        return False, "condition %s is from an older generation" % wanted.name
    met = str(condition.get("status", "")).lower() == str(wanted.value).lower()
    why = _condition_text(condition, wanted.name)
    if condition.get("message"):
        why += ": " + condition["message"]
    return met, why


# ---- --fail-fast: terminal failures, with a grace for those that often heal -------------------


class FailFastJudge:
    """Remembers since when each (resource, failure) has been seen; pure (time passed in)."""

    def __init__(self, grace: Optional[Dict[str, float]] = None) -> None:
        self.grace = dict(FAIL_FAST_GRACE_S if grace is None else grace)
        self._since: Dict[Tuple[str, str], float] = {}

    def observe(self, key: str, failure: str, now: float) -> bool:
        """Record the current failure of `key` ("" = none); True once it counts as terminal."""
        for seen in [k for k in self._since if k[0] == key and k[1] != failure]:
            del self._since[seen]
        if not failure:
            return False
        since = self._since.setdefault((key, failure), now)
        return now - since >= self.grace.get(failure, 0.0)


# ---- explanations ------------------------------------------------------------------------------


def kubectl_resource_arg(obj_id: str) -> str:
    """`deployment.apps/web` → `deployment/web` (what people type)."""
    kind, _, name = obj_id.partition("/")
    return "%s/%s" % (kind.split(".")[0], name)


def _ns_flag(namespace: str) -> str:
    return " -n %s" % namespace if namespace else ""


def pod_detail_lines(pod: Dict[str, Any]) -> List[str]:
    """One line per container problem, naming the image (the usual culprit)."""
    images = {}
    for c in ((pod.get("spec") or {}).get("initContainers") or []) + (
        (pod.get("spec") or {}).get("containers") or []
    ):
        images[c.get("name")] = c.get("image", "")
    for cs in (_status(pod).get("initContainerStatuses") or []) + (
        _status(pod).get("containerStatuses") or []
    ):
        images[cs.get("name")] = cs.get("image") or images.get(cs.get("name"), "")
    lines = []
    for name, reason, message in container_problems(pod):
        line = "container %s (image %s): %s" % (name, images.get(name, "?"), reason)
        lines.append(line + (": " + message if message else ""))
    scheduled = find_condition(pod, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False":
        lines.append("not scheduled: %s" % (scheduled.get("message") or scheduled.get("reason")))
    return lines


def next_commands(obj_id: str, namespace: str, pods: Sequence[Dict[str, Any]]) -> List[str]:
    """What to run next: describe the resource, the first failing pod's logs or describe."""
    ns = _ns_flag(namespace)
    commands = ["kubectl describe %s%s" % (kubectl_resource_arg(obj_id), ns)]
    for pod in pods:
        problems = container_problems(pod)
        if not problems:
            continue
        container, reason, _ = problems[0]
        name = pod_name(pod)
        if reason in ("CrashLoopBackOff", "OOMKilled", "Error"):
            commands.append("kubectl logs pod/%s -c %s --previous%s" % (name, container, ns))
        else:
            commands.append("kubectl describe pod/%s%s" % (name, ns))
        break
    commands.append("kubectl events --for %s%s" % (kubectl_resource_arg(obj_id), ns))
    return list(dict.fromkeys(commands))


#: What "ready" means per kind when no --for is given (help text and explanations).
READINESS_RULES: Dict[str, str] = {
    "Deployment": "available and rolled out (all replicas updated, ready and available)",
    "StatefulSet": "rolled out (all replicas ready and on the current revision)",
    "DaemonSet": "rolled out (scheduled, updated and available on every node)",
    "ReplicaSet": "all replicas ready and available",
    "Job": "complete",
    "Pod": "Ready (or completed successfully)",
    "PersistentVolumeClaim": "Bound",
    "Service": "at least one ready endpoint (a LoadBalancer also needs its ingress)",
    "CustomResourceDefinition": "Established",
}


def readiness_rule(kind: str) -> str:
    return READINESS_RULES.get(kind, "Ready condition True, or current (kstatus)")


@frozen_record
class Explanation:
    """What explain() needs about one unsatisfied resource."""

    obj_id: str
    namespace: str
    report: StatusReport
    #: (what was asked, why it is not met), one per unmet --for.
    unmet: Tuple[Tuple[str, str], ...]
    since_s: float = 0.0
    kind: str = ""
    finalizers: Tuple[str, ...] = ()
    #: The waited object itself when it is a pod: its containers are the story.
    pod: Optional[Dict[str, Any]] = None


def _explain_wanted(item: Explanation) -> List[str]:
    lines = []
    for wanted, why in item.unmet:
        if wanted == READINESS.describe():
            lines.append("  waiting for readiness: %s" % readiness_rule(item.kind))
        else:
            lines.append("  waiting for %s: %s" % (wanted, why or "not met"))
    if item.report.status is ResourceStatus.TERMINATING and item.finalizers:
        lines.append("  deletion is held by finalizers: %s" % ", ".join(item.finalizers))
    return lines


def _explain_pods(pods: Sequence[Dict[str, Any]], now: float) -> List[str]:
    """Pods that are not done come first: they are the story."""
    reports = [(compute_status(pod, now), pod) for pod in pods]
    reports.sort(key=lambda pair: pair[0].status is ResourceStatus.CURRENT)
    lines = []
    for report, pod in reports[:EXPLAIN_PODS_SHOWN]:
        lines.append("  pod/%s: %s: %s" % (pod_name(pod), report.status.value, report.message))
        lines.extend("    " + line for line in pod_detail_lines(pod))
    if len(reports) > EXPLAIN_PODS_SHOWN:
        lines.append("  ... and %d more pods" % (len(reports) - EXPLAIN_PODS_SHOWN))
    return lines


def _explain_events(events: Sequence[Dict[str, Any]], now: float) -> List[str]:
    """The latest Warning events; without any, the last few events of any type."""
    warnings = [e for e in events if e.get("type") == "Warning"]
    chosen = warnings[-EXPLAIN_EVENTS_SHOWN:] or list(events)[-EXPLAIN_QUIET_EVENTS_SHOWN:]
    return ["  " + event_line(event, now) for event in chosen]


def explain(
    item: Explanation, pods: Sequence[Dict[str, Any]], events: Sequence[Dict[str, Any]], now: float
) -> List[str]:
    """The per-resource story printed on timeout or failure; never just "timed out"."""
    where = " in namespace %s" % item.namespace if item.namespace else ""
    status = item.report.status.value
    lines = [
        "%s%s: %s for %s: %s"
        % (item.obj_id, where, status, human_duration(item.since_s), item.report.message)
    ]
    lines += _explain_wanted(item)
    if item.pod is not None:
        lines += ["  " + line for line in pod_detail_lines(item.pod)]
    lines += _explain_pods(pods, now)
    lines += _explain_events(events, now)
    if item.report.status is ResourceStatus.NOT_FOUND:
        commands = next_commands_not_found(item.obj_id, item.namespace)
    else:
        own = [item.pod] if item.pod is not None else []
        commands = next_commands(item.obj_id, item.namespace, list(pods) or own)
    lines.append("  next: " + commands[0])
    lines.extend("        " + command for command in commands[1:])
    return lines


def next_commands_not_found(obj_id: str, namespace: str) -> List[str]:
    kind = obj_id.partition("/")[0]
    return [
        "kubectl get %s%s   (is the name or namespace right?)" % (kind, _ns_flag(namespace)),
        "add --wait-for-create to wait until it exists",
    ]


def event_line(event: Dict[str, Any], now: float) -> str:
    """`event 12s ago Warning Failed pod/web-x: Failed to pull image "..." (x3)`."""
    involved = event.get("involvedObject") or {}
    count = int(event.get("count") or 1)
    return "event %s ago %s %s %s/%s: %s%s" % (
        human_duration(now - event_time(event)),
        event.get("type", "Normal"),
        event.get("reason", ""),
        str(involved.get("kind", "")).lower(),
        involved.get("name", ""),
        str(event.get("message", "")).strip(),
        " (x%d)" % count if count > 1 else "",
    )


# ==== §14 Kubectl runner =======================================================================


class Stream(enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


#: Receives each complete line a kubectl child prints, without its newline.
LineHandler = Callable[[Stream, str], None]


@frozen_record
class Completed:
    """A finished run-and-capture kubectl call."""

    argv: Tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> Completed:
        if self.returncode != 0:
            raise KubectlError.from_stderr(self.stderr, self.returncode)
        return self


def find_kubectl(environ: Optional[Dict[str, str]] = None) -> str:
    """KUBECTL_PATH (kubectl sets it for its plugins) if it is executable, else PATH's kubectl."""
    env = os.environ if environ is None else environ
    candidate = env.get(ENV_KUBECTL_PATH, "")
    if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("kubectl", path=env.get("PATH"))
    if not found:
        raise KubectlNotFound()
    return found


class _ChildLifeline:
    """Binds every kubectl child to this process's life, even if we are SIGKILLed.

    All children join one process group led by a tiny `sh` watchdog whose stdin is a pipe from
    us: when we die, the pipe closes, `read` returns and the watchdog kills the whole group. On
    Linux each child also gets PR_SET_PDEATHSIG, which fires even if the watchdog is gone.
    """

    _WATCHDOG = "read _unused; kill -KILL 0"

    def __init__(self) -> None:
        self.pgid: Optional[int] = None
        self._watchdog: Optional[asyncio.subprocess.Process] = None
        self._lock: Any = None  # asyncio.Lock, made inside the running loop
        self._prctl = self._load_prctl()

    @staticmethod
    def _load_prctl() -> Optional[Callable[..., int]]:
        if not sys.platform.startswith("linux"):
            return None
        try:
            import ctypes

            return ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return None

    async def ensure(self) -> None:
        """Start the watchdog once, even when several children are started at the same time."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._watchdog is None or self._watchdog.returncode is not None:
                await self._start_watchdog()

    async def _start_watchdog(self) -> None:
        # Its own process group, but in our session: a group of another session cannot be joined.
        self._watchdog = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            self._WATCHDOG,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=self._lead_group,
        )
        self.pgid = self._watchdog.pid

    def _lead_group(self) -> None:
        os.setpgid(0, 0)
        self._bind_to_parent()

    def preexec(self) -> None:
        """Runs in the forked child before exec: join the group, die with the parent."""
        if self.pgid is not None:
            try:
                os.setpgid(0, self.pgid)
            except OSError:
                os.setpgid(0, 0)
        else:
            os.setpgid(0, 0)
        self._bind_to_parent()

    def _bind_to_parent(self) -> None:
        if self._prctl is not None:
            self._prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG

    async def close(self) -> None:
        """Kill the group and reap the watchdog, so no child is left behind or unreaped."""
        watchdog = self._watchdog
        self.kill_group_now()
        if watchdog is not None:
            await watchdog.wait()
            if watchdog.stdin is not None:
                watchdog.stdin.close()  # our end of its lifeline pipe: the transport can close
        self._watchdog = None

    def kill_group_now(self) -> None:
        """Synchronous last resort: kill every child (and the watchdog) at once."""
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.pgid = None


class _LineSplitter:
    """Sans-IO: bytes in, complete lines out; a line over `limit` bytes is cut, not buffered.

    asyncio's readline() discards an over-limit line's buffered part and later returns its tail
    as if it were a line; kubectl's output must never be misread that way.
    """

    def __init__(self, limit: int = KUBECTL_LINE_LIMIT_BYTES) -> None:
        self._limit = limit
        self._partial = bytearray()
        self._discarding = False  # inside a line already cut: drop until its newline

    def feed(self, data: bytes) -> List[bytes]:
        """Lines completed by `data`; `feed(b"")` means EOF and flushes the last partial line."""
        if not data:
            tail, self._partial = bytes(self._partial), bytearray()
            return [tail] if tail and not self._discarding else []
        lines = []
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                self._keep(data[start:], lines)
                return lines
            if not self._discarding:
                self._keep(data[start:newline], lines)
                if not self._discarding:  # _keep may have just cut (and delivered) it
                    lines.append(bytes(self._partial))
            self._partial = bytearray()
            self._discarding = False
            start = newline + 1

    def _keep(self, piece: bytes, lines: List[bytes]) -> None:
        if self._discarding:
            return
        room = self._limit - len(self._partial)
        self._partial += piece[:room]
        if len(piece) > room:  # the line is too long: deliver its first `limit` bytes now
            lines.append(bytes(self._partial))
            self._partial = bytearray()
            self._discarding = True


class KubectlProcess:
    """A long-running kubectl child whose stdout and stderr are drained continuously.

    stdout is delivered as lines (on_line) or, for `get -w -o json`, as raw chunks (on_data).
    """

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        argv: Sequence[str],
        on_line: LineHandler,
        on_data: Optional[Callable[[bytes], None]] = None,
    ) -> None:
        self.proc = proc
        self.argv = tuple(argv)
        self._on_line = on_line
        self._on_data = on_data
        self._handler_error: Optional[Exception] = None
        self._drains = [
            asyncio.ensure_future(self._drain_out()),
            asyncio.ensure_future(self._drain_lines(proc.stderr, Stream.STDERR)),
        ]

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else "exited %s" % self.returncode
        return "<KubectlProcess pid=%s %s %s>" % (self.pid, state, " ".join(self.argv[1:3]))

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.returncode

    async def _drain_out(self) -> None:
        if self._on_data is None:
            await self._drain_lines(self.proc.stdout, Stream.STDOUT)
            return
        reader = self.proc.stdout
        assert reader is not None
        while True:
            chunk = await reader.read(KUBECTL_READ_CHUNK_BYTES)
            if not chunk:
                return
            self._deliver(self._on_data, chunk)

    async def _drain_lines(self, reader: Optional[asyncio.StreamReader], stream: Stream) -> None:
        assert reader is not None
        splitter = _LineSplitter()
        while True:
            chunk = await reader.read(KUBECTL_READ_CHUNK_BYTES)
            for raw in splitter.feed(chunk):
                text = raw.decode("utf-8", "replace").rstrip("\r")
                self._deliver(self._on_line, stream, text)
            if not chunk:
                return

    def _deliver(self, handler: Callable[..., None], *args: Any) -> None:
        """Call a handler; if it fails, keep draining (a full pipe would freeze kubectl) and
        raise the first failure from wait()."""
        if self._handler_error is not None:
            return
        try:
            handler(*args)
        except Exception as exc:
            self._handler_error = exc

    async def wait(self) -> int:
        """Exit code, once the child has exited *and* everything it printed was delivered."""
        code = await self.proc.wait()
        await asyncio.gather(*self._drains, return_exceptions=True)
        if self._handler_error is not None:
            error, self._handler_error = self._handler_error, None
            raise error
        return code

    async def stop(self, grace: float = KUBECTL_STOP_GRACE_S) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds. Safe to call more than once."""
        if self.proc.returncode is None:
            try:
                self.proc.terminate()
                await asyncio.wait_for(self.proc.wait(), grace)
            except asyncio.TimeoutError:
                self.proc.kill()
            except ProcessLookupError:
                pass
        return await self.wait()


class KubectlRunner:
    """The only place in kubectl-vibe that starts processes.

    Every child gets the user's global flags appended (kubectl accepts them after the verb), is
    drained continuously, belongs to the lifeline's process group and is stopped by close().
    """

    def __init__(
        self,
        binary: str,
        global_args: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
    ) -> None:
        self.binary = binary
        self.global_args = list(global_args)
        self.env = env
        self._lifeline = _ChildLifeline()
        self._live: List[KubectlProcess] = []
        self._client_minor: Optional[int] = None

    def argv(self, args: Sequence[str]) -> List[str]:
        return [self.binary, *args, *self.global_args]

    async def _spawn(self, args: Sequence[str], stdin: int) -> asyncio.subprocess.Process:
        await self._lifeline.ensure()
        try:
            return await asyncio.create_subprocess_exec(
                *self.argv(args),
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                limit=KUBECTL_LINE_LIMIT_BYTES,
                preexec_fn=self._lifeline.preexec,
            )
        except FileNotFoundError:
            raise KubectlNotFound() from None
        except PermissionError:
            raise VibeError(
                "cannot run kubectl at %s: permission denied" % self.binary,
                fix="Fix: make it executable, or point KUBECTL_PATH at a working kubectl",
            ) from None

    async def run(self, args: Sequence[str], timeout: Optional[float] = None) -> Completed:
        """Run to completion and capture both streams (for `get -o json` and friends)."""
        proc = await self._spawn(args, asyncio.subprocess.DEVNULL)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise VibeError(
                "kubectl %s did not answer within %s"
                % (" ".join(args[:2]), format_go_duration(timeout or 0)),
                fix="Fix: check that the cluster is reachable (kubectl cluster-info)",
            ) from None
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            raise
        return Completed(
            tuple(self.argv(args)),
            proc.returncode if proc.returncode is not None else EXIT_ERROR,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )

    async def get_json(self, args: Sequence[str], timeout: Optional[float] = None) -> Any:
        """`kubectl get ... -o json`, parsed; kubectl's own error line if it fails."""
        done = (await self.run(["get", *args, "-o", "json"], timeout)).check()
        try:
            return json.loads(done.stdout)
        except ValueError:
            raise VibeError(
                "kubectl get %s printed something that is not JSON" % " ".join(args)
            ) from None

    async def client_minor(self) -> int:
        """kubectl's minor version (for messages whose wording changed between versions);
        asked once, and only on the error paths that need it."""
        if self._client_minor is None:
            self._client_minor = KUBECTL_NEWEST_MINOR
            try:
                done = await self.run(["version", "--client", "-o", "json"], timeout=10.0)
                minor = json.loads(done.stdout)["clientVersion"]["minor"]
                self._client_minor = int(re.sub(r"\D.*", "", str(minor)) or KUBECTL_NEWEST_MINOR)
            except (VibeError, ValueError, KeyError, TypeError):
                pass
        return self._client_minor

    async def start(
        self,
        args: Sequence[str],
        on_line: LineHandler,
        on_data: Optional[Callable[[bytes], None]] = None,
    ) -> KubectlProcess:
        """Start a long-running child (`port-forward`, `get -w`, `wait`)."""
        proc = await self._spawn(args, asyncio.subprocess.DEVNULL)
        child = KubectlProcess(proc, self.argv(args), on_line, on_data)
        self._live[:] = [p for p in self._live if p.returncode is None]
        self._live.append(child)
        return child

    @property
    def live(self) -> List[KubectlProcess]:
        return [p for p in self._live if p.returncode is None]

    def with_context(self, context: str) -> KubectlRunner:
        """A runner for another kube context: the user's global flags with --context replaced.
        Its children share this runner's lifeline and list: this runner's close() stops them."""
        derived = KubectlRunner(self.binary, self.global_args, self.env)
        derived.global_args = [arg for arg in self.global_args if not arg.startswith("--context=")]
        derived.global_args.append("--context=" + context)
        derived._lifeline = self._lifeline
        derived._live = self._live
        return derived

    async def close(self, grace: float = KUBECTL_STOP_GRACE_S) -> None:
        """Stop every child this runner started, then the lifeline."""
        await asyncio.gather(*(child.stop(grace) for child in self._live), return_exceptions=True)
        self._live.clear()
        await self._lifeline.close()

    def kill_all_now(self) -> None:
        self._lifeline.kill_group_now()


def _ignore_line(stream: Stream, text: str) -> None:
    pass


# ==== §15 Cluster access =======================================================================
#
# One `kubectl proxy --unix-socket` per kube context is the plugin's only way to the cluster.
# kubectl keeps doing all authentication (exec plugins, OIDC, client certificates, token
# refresh); the plugin never reads a credential. Lookups are pooled keep-alive HTTP requests
# over the socket; watches are shared (one per resource, namespace and selector, whoever needs
# it) and survive reconnects and 410 Gone; §16's tunnels upgrade their own connections through
# the same socket. The socket lives in a fresh directory of mode 0700: only this user reaches it.


class ProxyState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"  # the first start failed: nothing will work (bad context, kubeconfig...)
    STOPPED = "stopped"


#: Receives (message, data) for things the user should hear about the cluster access itself.
AccessNotice = Callable[[str], None]


def private_socket_directory() -> str:
    """A fresh 0700 directory whose `proxy.sock` path fits sun_path (104 bytes on macOS)."""
    import tempfile

    candidates = [os.environ.get("XDG_RUNTIME_DIR", ""), tempfile.gettempdir(), "/tmp"]
    for base in candidates:
        if base and os.path.isdir(base) and len(base) < 60:
            sweep_stale_socket_directories(base)
            try:
                return tempfile.mkdtemp(prefix=PROXY_DIR_PREFIX, dir=base)
            except OSError:
                continue
    return tempfile.mkdtemp(prefix=PROXY_DIR_PREFIX)


PROXY_DIR_PREFIX = "kubectl-vibe-"
#: A proxy directory younger than this is never swept: its session may be starting.
STALE_PROXY_DIR_AGE_S = 60.0


def sweep_stale_socket_directories(base: str) -> None:
    """Remove what a SIGKILLed session left: our own proxy directories whose socket nobody
    serves any more (a live kubectl proxy accepts the connection; a dead one refuses it)."""
    import socket

    try:
        names = [name for name in os.listdir(base) if name.startswith(PROXY_DIR_PREFIX)]
    except OSError:
        return
    for name in names[:STALE_PROXY_DIRS_CHECKED]:
        path = os.path.join(base, name)
        try:
            info = os.stat(path)
            if info.st_uid != os.getuid() or time.time() - info.st_mtime < STALE_PROXY_DIR_AGE_S:
                continue
            if set(os.listdir(path)) - {"proxy.sock"}:
                continue  # not one of ours
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.2)
                probe.connect(os.path.join(path, "proxy.sock"))
        except (ConnectionRefusedError, FileNotFoundError):
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


#: At most this many leftovers are looked at per start (a start must stay quick).
STALE_PROXY_DIRS_CHECKED = 64


class KubectlProxy:
    """`kubectl proxy --unix-socket PATH` for one context: started once, restarted with backoff
    whenever it dies, and bound to the plugin's life like every child (§14's lifeline)."""

    def __init__(self, runner: KubectlRunner, notice: AccessNotice) -> None:
        import collections

        self.runner = runner
        self._notice = notice
        self.directory = ""
        self.path = ""
        self.state = ProxyState.STARTING
        self.restarts = 0
        self.error: Optional[VibeError] = None
        self._ready = asyncio.Event()
        self._settled = asyncio.Event()  # ready, or failed for good
        self._child: Optional[KubectlProcess] = None
        self._task: Any = None
        self._serving: Any = None  # asyncio.Event of the current child
        self._stderr: Any = collections.deque(maxlen=TUNNEL_STDERR_TAIL_LINES)

    def start(self) -> None:
        self.directory = private_socket_directory()
        self.path = os.path.join(self.directory, "proxy.sock")
        self._task = asyncio.ensure_future(self._run())

    def argv(self) -> List[str]:
        # --keepalive: TCP keep-alive on its connections to the API server (it is off by
        # default), so a tunnel's upstream dies visibly after sleep instead of hanging.
        return ["proxy", "--unix-socket", self.path, "--keepalive=30s"]

    async def wait_ready(self, timeout: float) -> str:
        """The socket path once kubectl proxy serves; its own error if it cannot start."""
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._settled.wait(), timeout)
            except asyncio.TimeoutError:
                raise VibeError(
                    "kubectl proxy is not serving after %s" % format_go_duration(timeout),
                    fix="Fix: check that kubectl works here (kubectl version)",
                ) from None
        if self.error is not None:
            raise self.error
        if not self._ready.is_set():  # settled by a restart in between: wait once more
            return await self.wait_ready(timeout)
        return self.path

    async def _run(self) -> None:
        attempt = 0
        while self.state is not ProxyState.STOPPED:
            served = await self._serve_once()
            if self.state is ProxyState.STOPPED:
                return
            if not served and self.restarts == 0 and attempt == 0:
                self._give_up()
                return
            attempt = 0 if served else attempt + 1
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * (2 ** max(0, attempt - 1)))
            self.state = ProxyState.RESTARTING
            self._notice(
                "kubectl proxy exited%s: restarting in %s"
                % (self._last_words(), format_go_duration(delay))
            )
            await asyncio.sleep(delay)
            self.restarts += 1

    async def _serve_once(self) -> bool:
        """Run one kubectl proxy until it exits; True if it was serving meanwhile."""
        self._serving = asyncio.Event()
        self._stderr.clear()
        self._remove_stale_socket()
        try:
            self._child = await self.runner.start(self.argv(), self._on_line)
        except VibeError as exc:
            self.error = exc
            return False
        exited = asyncio.ensure_future(self._child.wait())
        serving = asyncio.ensure_future(self._serving.wait())
        await asyncio.wait(
            [exited, serving], timeout=PROXY_START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        serving.cancel()
        if self._serving.is_set():
            self._became_ready()
            await asyncio.shield(exited)
            self._ready.clear()
            self._settled.clear()
            return True
        await self._child.stop()
        exited.cancel()
        return False

    def _became_ready(self) -> None:
        restarted = self.restarts > 0
        self.state = ProxyState.READY
        self._ready.set()
        self._settled.set()
        if restarted:
            self._notice("kubectl proxy is serving again (restart %d)" % self.restarts)

    def _give_up(self) -> None:
        """The very first start failed: kubectl's own error (bad context, kubeconfig) is fatal."""
        self.state = ProxyState.FAILED
        if self.error is None:
            code = self._child.returncode if self._child is not None else None
            self.error = KubectlError.from_stderr("\n".join(self._stderr), code or EXIT_ERROR)
        self._settled.set()

    def _on_line(self, stream: Stream, text: str) -> None:
        if stream is Stream.STDOUT and text.startswith("Starting to serve on"):
            self._serving.set()
        elif stream is Stream.STDERR and text.strip():
            self._stderr.append(text.strip())

    def _last_words(self) -> str:
        code = self._child.returncode if self._child is not None else None
        said = (": " + self._stderr[-1]) if self._stderr else ""
        return " (exit code %s%s)" % (code, said)

    def _remove_stale_socket(self) -> None:
        """A SIGKILLed kubectl proxy leaves its socket file; a new one could not bind it."""
        try:
            os.unlink(self.path)
        except OSError:
            pass

    async def stop(self) -> None:
        self.state = ProxyState.STOPPED
        self._settled.set()
        if self._child is not None:
            await self._child.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        shutil.rmtree(self.directory, ignore_errors=True)


class ApiRequestError(KubectlError):
    """A lookup the API server (or kubectl proxy) refused, worded as kubectl would."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.kubectl_text)
        self.api = error


class _ApiConnection:
    """One keep-alive HTTP/1.1 connection to kubectl proxy (asyncio streams)."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, target: str, limit: int) -> Tuple[HttpHead, bytes, bool]:
        """GET target → (head, body, reusable)."""
        self.writer.write(http_request("GET", target, (("Accept", "application/json"),)))
        parser = HttpResponseParser()
        head: Optional[HttpHead] = None
        body = bytearray()
        while not parser.done:
            data = await self.reader.read(API_READ_CHUNK_BYTES)
            for event in parser.feed(data):
                if isinstance(event, HttpHead):
                    head = event
                elif isinstance(event, bytes):
                    body += event
                    if len(body) > limit:
                        raise HttpProtocolError("a response over %d bytes" % limit)
        assert head is not None
        return head, bytes(body), http_keeps_alive(head) and not parser.leftover

    def close(self) -> None:
        self.writer.close()


#: How much of an API response is read at once.
API_READ_CHUNK_BYTES = 256 * 1024


class ApiClient:
    """HTTP/1.1 to the API server through kubectl proxy's socket: pooled keep-alive
    connections for lookups, a connection of its own for each watch."""

    def __init__(self, proxy: KubectlProxy) -> None:
        self.proxy = proxy
        self._idle: List[_ApiConnection] = []
        self.requests = 0

    async def _open(self, timeout: float) -> Tuple[Any, Any]:
        path = await self.proxy.wait_ready(timeout)
        try:
            return await asyncio.wait_for(
                asyncio.open_unix_connection(path, limit=HTTP_MAX_HEAD_BYTES), timeout
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise ConnectionError("cannot reach kubectl proxy at %s: %s" % (path, exc)) from None

    async def get_json(self, target: str, timeout: float = RESOLVE_REQUEST_TIMEOUT_S) -> Any:
        """GET → the JSON document; ApiRequestError with kubectl's line if the answer is an
        error. A pooled connection kubectl proxy closed meanwhile is retried once, fresh."""
        try:
            head, body = await asyncio.wait_for(self._get(target, timeout), timeout)
        except asyncio.TimeoutError:
            raise VibeError(
                "the API server did not answer GET %s within %s"
                % (target.split("?")[0], format_go_duration(timeout)),
                fix="Fix: check that the cluster is reachable (kubectl cluster-info)",
            ) from None
        if head.status >= 400:
            raise ApiRequestError(api_error(head.status, head.get("content-type"), body))
        document = _json_or_none(body)
        if document is None:
            raise VibeError("GET %s answered something that is not JSON" % target.split("?")[0])
        return document

    async def _get(self, target: str, timeout: float) -> Tuple[HttpHead, bytes]:
        self.requests += 1
        while self._idle:
            connection = self._idle.pop()
            try:
                return await self._use(connection, target)
            except (ConnectionError, OSError, HttpProtocolError, asyncio.IncompleteReadError):
                connection.close()  # closed by kubectl proxy while idle: try the next one
        reader, writer = await self._open(timeout)
        try:
            return await self._use(_ApiConnection(reader, writer), target)
        except (OSError, HttpProtocolError, asyncio.IncompleteReadError) as exc:
            raise ConnectionError("kubectl proxy dropped the request: %s" % exc) from None

    async def _use(self, connection: _ApiConnection, target: str) -> Tuple[HttpHead, bytes]:
        try:
            head, body, reusable = await connection.exchange(target, API_MAX_BODY_BYTES)
        except BaseException:
            connection.close()
            raise
        if reusable and len(self._idle) < API_POOL_CONNECTIONS:
            self._idle.append(connection)
        else:
            connection.close()
        return head, body

    async def open_stream(self, target: str, timeout: float) -> ApiStream:
        """A streaming GET (a watch): its head is read here; an error answer raises."""
        reader, writer = await self._open(timeout)
        writer.write(http_request("GET", target, (("Accept", "application/json"),)))
        stream = ApiStream(reader, writer)
        try:
            head = await asyncio.wait_for(stream.read_head(), timeout)
        except BaseException:
            stream.close()
            raise
        if head.status >= 400:
            body = await stream.read_all(API_MAX_ERROR_BYTES)
            stream.close()
            raise ApiRequestError(api_error(head.status, head.get("content-type"), body))
        return stream

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle = []


#: Longest error body read from a failed watch request.
API_MAX_ERROR_BYTES = 64 * 1024


class ApiStream:
    """The body of a streaming response, chunk by chunk (chunked encoding undone)."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader = reader
        self.writer = writer
        self._parser = HttpResponseParser()
        self._pending: List[Any] = []

    async def _next_event(self, timeout: Optional[float]) -> Any:
        while not self._pending:
            data = await asyncio.wait_for(self.reader.read(API_READ_CHUNK_BYTES), timeout)
            self._pending.extend(self._parser.feed(data))
        return self._pending.pop(0)

    async def read_head(self) -> HttpHead:
        event = await self._next_event(None)
        if not isinstance(event, HttpHead):
            raise HttpProtocolError("a body before the head")
        return event

    async def read(self, timeout: Optional[float] = None) -> bytes:
        """The next body bytes; b"" at the end of the response."""
        event = await self._next_event(timeout)
        return b"" if event is HttpEnd else event

    async def read_all(self, limit: int) -> bytes:
        body = b""
        while len(body) < limit:
            chunk = await self.read(RESOLVE_REQUEST_TIMEOUT_S)
            if not chunk:
                break
            body += chunk
        return body[:limit]

    def close(self) -> None:
        self.writer.close()


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class SharedWatch:
    """One list+watch of a resource in a namespace with one selector, for every subscriber.

    Lists (paged), then watches from the list's resourceVersion with bookmarks; a watch that
    ends is reopened from the last version seen, a 410 Gone relists (subscribers see the
    difference as ordinary events), and failures back off. `objects` is the current state.
    """

    def __init__(self, api: ApiClient, resource: str, namespace: str, labels: str, fields: str):
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.cache = ObjectCache()
        self.synced = asyncio.Event()
        self.error: Optional[VibeError] = None
        self.relists = 0
        self.reopened = 0
        self.refs = 0
        self._subscribers: List[Callable[[str, Dict[str, Any]], None]] = []
        self._changed = asyncio.Event()
        self._task: Any = None

    def __repr__(self) -> str:
        return "<SharedWatch %s ns=%s %s %s>" % (
            self.resource,
            self.namespace,
            self.labels,
            self.fields,
        )

    @property
    def objects(self) -> Dict[str, Dict[str, Any]]:
        return self.cache.objects

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def subscribe(self, subscriber: Callable[[str, Dict[str, Any]], None]) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Callable[[str, Dict[str, Any]], None]) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    async def wait_synced(self, timeout: float) -> None:
        """Until the first list arrived; its error (RBAC, NotFound) if listing fails."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.synced.is_set():
            if self.error is not None:
                raise self.error
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise VibeError("timed out waiting for the condition")
            await self.wait_change(remaining)

    async def wait_change(self, timeout: float) -> None:
        """Until the next change (or error), at most `timeout` seconds."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _publish(self, changes: List[Tuple[str, Dict[str, Any]]]) -> None:
        for kind, obj in changes:
            for subscriber in list(self._subscribers):
                subscriber(kind, obj)
        self._changed.set()

    async def _run(self) -> None:
        attempt = 0
        while True:
            opened = _monotonic()
            try:
                if not self.cache.version:
                    await self._list()
                await self._watch()
                # A watch the server ends at once (a proxy in between, a timeout of 0) must
                # not turn into a tight loop of requests.
                attempt = 0 if _monotonic() - opened >= POD_WATCH_RESTART_S else attempt + 1
            except WatchExpired:
                self.relists += 1
                self.cache.version = ""
            except VibeError as exc:  # RBAC, NotFound: keep trying, someone may fix it
                self.error = exc
                self._changed.set()
                attempt += 1
            except (
                ConnectionError,
                OSError,
                HttpProtocolError,
                asyncio.IncompleteReadError,
                asyncio.TimeoutError,
            ):
                attempt += 1
            if attempt:
                await asyncio.sleep(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempt - 1)))

    def _path(self, **query: Any) -> str:
        path = api_path(self.namespace, self.resource)
        return path + api_query(labelSelector=self.labels, fieldSelector=self.fields, **query)

    async def _list(self) -> None:
        items: List[Dict[str, Any]] = []
        token = None
        while True:
            page = await self.api.get_json(self._path(limit=500, **{"continue": token}))
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        changes = self.cache.replace(items, (page.get("metadata") or {}).get("resourceVersion"))
        self.error = None
        self.synced.set()
        self._publish(changes)

    async def _watch(self) -> None:
        target = self._path(
            watch="true",
            resourceVersion=self.cache.version,
            allowWatchBookmarks="true",
            timeoutSeconds=WATCH_SERVER_TIMEOUT_S,
        )
        stream = await self.api.open_stream(target, RESOLVE_REQUEST_TIMEOUT_S)
        decoder = JsonStreamDecoder(WATCH_MAX_DOCUMENT_BYTES)
        try:
            while True:
                chunk = await stream.read(WATCH_IDLE_TIMEOUT_S)
                if not chunk:
                    self.reopened += 1
                    return
                for document in decoder.feed(chunk):
                    self._publish(watch_event_changes(self.cache, document))
        finally:
            stream.close()


#: The timeoutSeconds asked of the API server for each watch (it picks 5-10 min on its own).
WATCH_SERVER_TIMEOUT_S = 600


def watch_event_changes(cache: ObjectCache, document: Any) -> List[Tuple[str, Dict[str, Any]]]:
    """One watch event applied to the cache; raises WatchExpired or ApiRequestError on ERROR."""
    if not isinstance(document, dict):
        return []
    kind, obj = document.get("type"), document.get("object")
    if kind == "ERROR":
        status = obj if isinstance(obj, dict) else {}
        if int(status.get("code") or 0) == 410:
            raise WatchExpired(status.get("message", ""))
        raise ApiRequestError(
            api_error(int(status.get("code") or 500), "", json.dumps(status).encode())
        )
    if not isinstance(obj, dict):
        return []
    return cache.apply(str(kind), obj)


class ClusterAccess:
    """Everything one kube context needs: its kubectl proxy, lookups, shared watches."""

    def __init__(self, runner: KubectlRunner, notice: AccessNotice) -> None:
        self.runner = runner
        self.notice = notice
        self.proxy = KubectlProxy(runner, notice)
        self.api = ApiClient(self.proxy)
        self._watches: Dict[Tuple[str, str, str, str], SharedWatch] = {}
        #: Why the API server refused a native tunnel, once it did: then every forward of
        #: this context uses the kubectl engine.
        self.native_refused = ""

    def start(self) -> None:
        self.proxy.start()

    async def get_json(self, target: str, timeout: float = RESOLVE_REQUEST_TIMEOUT_S) -> Any:
        return await self.api.get_json(target, timeout)

    def acquire_watch(
        self, resource: str, namespace: str, labels: str = "", fields: str = ""
    ) -> SharedWatch:
        """The shared watch for these parameters (started on first use); release() it."""
        key = (resource, namespace, labels, fields)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = SharedWatch(self.api, resource, namespace, labels, fields)
            watch.start()
        watch.refs += 1
        return watch

    def release_watch(self, watch: SharedWatch) -> None:
        watch.refs -= 1
        if watch.refs <= 0:
            self._watches.pop((watch.resource, watch.namespace, watch.labels, watch.fields), None)
            asyncio.ensure_future(watch.stop())

    @property
    def watches(self) -> List[SharedWatch]:
        return list(self._watches.values())

    async def close(self) -> None:
        for watch in list(self._watches.values()):
            await watch.stop()
        self._watches = {}
        self.api.close()
        await self.proxy.stop()


# ---- TYPE/NAME → a Running pod and its container ports, with kubectl's lookups and messages ----


@frozen_record
class Resolution:
    """TYPE/NAME resolved: the chosen Running pod and the port mappings onto it."""

    ref: ResourceRef
    pod_name: str
    pod: Dict[str, Any]
    mappings: Tuple[PortMapping, ...]
    obj: Dict[str, Any]


def pod_watch_selectors(ref: ResourceRef, obj: Dict[str, Any]) -> Tuple[str, str]:
    """(label selector, field selector) of the pods behind a target: kubectl's selector for a
    workload or Service (its errors for kinds it cannot attach to), the name for a pod."""
    if obj.get("kind") == "Pod":
        return "", "metadata.name=" + pod_name(obj)
    return selector_for(obj), ""


class TargetResolver:
    """TYPE/NAME → a Running pod and its container ports, with kubectl's lookups and messages.

    Pods come from the context's shared pod watch (§15), so waiting for one costs no polling
    and a failover picks from what the watch already knows. Unlike kubectl, a Pending or
    Unknown pod is waited for (up to the timeout): during a failover the next pod is usually
    still starting. Failed and Succeeded pods fail at once, with kubectl's message.
    """

    def __init__(self, access: ClusterAccess, runner: KubectlRunner, namespace: str) -> None:
        self.access = access
        self.runner = runner
        self.namespace = namespace

    async def namespace_default(self) -> str:
        """The namespace of the kubeconfig's current context, else "default" (as kubectl)."""
        done = await self.runner.run(
            ["config", "view", "--minify", "-o", "jsonpath={..namespace}"],
            timeout=RESOLVE_REQUEST_TIMEOUT_S,
        )
        words = done.stdout.split() if done.returncode == 0 else []
        return words[0] if words else "default"

    async def get_object(self, ref: ResourceRef) -> Dict[str, Any]:
        """The object TYPE/NAME names. Known kinds are one GET; any other TYPE goes through
        `kubectl get`, whose RESTMapper knows CRDs and short names and words the errors."""
        if ref.kind is ResourceKind.OTHER:
            args = [ref.get_arg, "-n", self.namespace]
            return await self.runner.get_json(args, RESOLVE_REQUEST_TIMEOUT_S)
        return await self.access.get_json(api_path(self.namespace, ref.kind.resource, ref.name))

    def watch_for(self, ref: ResourceRef, obj: Dict[str, Any]) -> SharedWatch:
        labels, fields = pod_watch_selectors(ref, obj)
        return self.access.acquire_watch("pods", self.namespace, labels, fields)

    async def resolve(
        self,
        ref: ResourceRef,
        specs: Sequence[PortSpec],
        timeout: float,
        exclude: Any = frozenset(),
        require_ready: bool = False,
        obj: Optional[Dict[str, Any]] = None,
    ) -> Resolution:
        """kubectl Complete + Run's pod checks: object, pod choice, phase, port mapping.

        require_ready (for failover): also wait until the pick is Ready and not being deleted,
        so traffic is not moved to a pod that cannot serve it yet.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if obj is None:
            obj = await self.get_object(ref)
        is_pod = obj.get("kind") == "Pod"
        watch = self.watch_for(ref, obj)
        try:
            # A pod target was just read: the first look reuses it, as kubectl does.
            pod = obj if is_pod and pod_name(obj) not in exclude else None
            if pod is None:
                await watch.wait_synced(max(0.0, deadline - loop.time()))
                pod = self._candidate(watch, exclude)
            while True:
                if pod is not None and pod_phase(pod) in POD_TERMINAL_PHASES:
                    raise VibeError(pod_not_running_message(pod))
                if pod is not None and is_pod_usable(pod, require_ready):
                    mappings = resolve_mappings(ref, obj, pod, specs)
                    return Resolution(ref, pod_name(pod), pod, tuple(mappings), obj)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _no_usable_pod(pod)
                await watch.wait_change(remaining)
                pod = self._candidate(watch, exclude)
        finally:
            self.access.release_watch(watch)

    @staticmethod
    def _candidate(watch: SharedWatch, exclude: Any) -> Optional[Dict[str, Any]]:
        """The pod kubectl would pick now among the watched ones. An evicted or finished pod
        ranks like a Pending one in ActivePods; kubectl would pick it and fail. While a live
        pod exists, it is the better answer."""
        pods = list(watch.objects.values())
        live = [pod for pod in pods if pod_phase(pod) not in POD_TERMINAL_PHASES]
        return choose_pod(live or pods, exclude)

    async def pod_events(self, pod_name: str) -> List[Dict[str, Any]]:
        """Recent events of a pod, oldest first, to explain why a tunnel died."""
        selector = "involvedObject.name=%s,involvedObject.kind=Pod" % pod_name
        path = api_path(self.namespace, "events") + api_query(fieldSelector=selector)
        listed = await self.access.get_json(path)
        events = list(listed.get("items") or [])
        events.sort(key=event_time)
        return events


def is_pod_usable(pod: Dict[str, Any], require_ready: bool) -> bool:
    """Running (kubectl's only check), and with require_ready also Ready and not deleting."""
    if pod_phase(pod) != "Running":
        return False
    if not require_ready:
        return True
    return is_pod_ready(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")


def kubeconfig_current_context(kubeconfig: str = "") -> str:
    """What `kubectl config current-context` prints: the first kubeconfig file (--kubeconfig,
    else $KUBECONFIG's list, else ~/.kube/config) that sets current-context. Only that field
    is looked at; credentials stay kubectl's business."""
    import yaml

    paths = [kubeconfig] if kubeconfig else [
        path for path in os.environ.get("KUBECONFIG", "").split(os.pathsep) if path
    ] or [os.path.join(os.path.expanduser("~"), ".kube", "config")]  # fmt: skip
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                document = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(document, dict) and document.get("current-context"):
            return str(document["current-context"])
    return ""


# ---- discovery: -l SELECTOR and --annotated, over the same cluster access ----------------------


@frozen_record
class Discovered:
    """What discovery found: targets (local ports still to choose) and what it warns about."""

    targets: Tuple[TargetArgs, ...]
    warnings: Tuple[str, ...] = ()


class Discovery:
    """Finds what to forward: Services matching a selector (else workloads, else pods), or every
    Service whose annotations ask for it; in one namespace or, with -A, in all."""

    def __init__(self, access: ClusterAccess, namespace: str, all_namespaces: bool) -> None:
        self.access = access
        self.namespace = namespace
        self.scope = "" if all_namespaces else namespace

    async def _list(self, kind: ResourceKind, selector: str = "") -> List[Dict[str, Any]]:
        path = api_path(self.scope, kind.resource) + api_query(labelSelector=selector)
        items = list((await self.access.get_json(path)).get("items") or [])
        for item in items:  # lists leave kind out of their items
            item.setdefault("kind", kind.api_kind)
        return items

    async def by_selector(self, selector: str) -> Discovered:
        services = await self._list(ResourceKind.SERVICE, selector)
        if services:
            return self._targets(services, ResourceKind.SERVICE)
        for kind in DISCOVERY_WORKLOADS:
            workloads = await self._list(kind, selector)
            if workloads:
                return self._targets(workloads, kind)
        pods = [pod for pod in await self._list(ResourceKind.POD, selector)
                if pod_phase(pod) not in POD_TERMINAL_PHASES]  # fmt: skip
        if pods:
            return self._targets(pods, ResourceKind.POD)
        raise await self._nothing_matches(selector)

    async def annotated(self) -> Discovered:
        services = [svc for svc in await self._list(ResourceKind.SERVICE)
                    if annotated_ports(svc).present]  # fmt: skip
        if not services:
            where = "in any namespace" if not self.scope else "in namespace %s" % self.scope
            raise VibeError(
                "no Service %s has kubectl-vibe.io/ports, kftray.app/enabled, "
                "kftray.app/configs or k9scli.io/auto-port-forwards" % where,
                fix="Fix: annotate one: kubectl annotate svc/web kubectl-vibe.io/ports=8080:80",
            )
        return self._targets(services, ResourceKind.SERVICE)

    def _targets(self, objects: Sequence[Dict[str, Any]], kind: ResourceKind) -> Discovered:
        targets, warnings = [], []
        for obj in sorted(objects, key=object_key):
            target = discovered_target(obj, kind, self.namespace)
            _, bad = ports_to_forward(obj)
            if bad:
                warnings.append("%s: ignored %s" % (target.ref.text, ", ".join(bad)))
            if not target.ports:
                warnings.append("%s has no TCP port to forward: skipped" % target.ref.text)
                continue
            targets.append(target)
        return Discovered(tuple(targets), tuple(warnings))

    async def _nothing_matches(self, selector: str) -> VibeError:
        """An empty match names what exists nearby: close labels here, or other namespaces."""
        where = "in any namespace" if not self.scope else "in namespace %s" % self.scope
        hints = []
        try:
            nearby = await self._list(ResourceKind.SERVICE) + await self._list(ResourceKind.POD)
            close = close_labels(selector, nearby)
            if close:
                hints.append("labels close to it here: %s" % ", ".join(close))
            if self.scope:
                elsewhere = await self._namespaces_matching(selector)
                if elsewhere:
                    hints.append("it matches in namespace %s (add -n NAMESPACE, or -A)"
                                 % ", ".join(elsewhere))  # fmt: skip
        except (VibeError, ConnectionError, OSError):
            pass  # the hints are a courtesy; the error stands without them
        fix = (
            "Fix: " + "; ".join(hints)
            if hints
            else "Fix: kubectl get svc,deploy,pods --show-labels"
        )
        return VibeError(
            "no Service, Deployment, StatefulSet, DaemonSet or pod %s matches -l %s"
            % (where, selector), fix=fix,
        )  # fmt: skip

    async def _namespaces_matching(self, selector: str) -> List[str]:
        found = set()
        for kind in (ResourceKind.SERVICE, ResourceKind.POD):
            path = api_path("", kind.resource) + api_query(labelSelector=selector)
            for item in (await self.access.get_json(path)).get("items") or []:
                found.add((item.get("metadata") or {}).get("namespace", ""))
        return sorted(found - {"", self.scope})


def _no_usable_pod(pod: Optional[Dict[str, Any]]) -> VibeError:
    """The error at the deadline: kubectl's own words for its two cases, ours for not Ready."""
    if pod is None:
        return VibeError("timed out waiting for the condition")
    if pod_phase(pod) != "Running":
        return VibeError(pod_not_running_message(pod))
    return VibeError(
        "timed out waiting for the condition: pod %s is Running but not Ready" % pod_name(pod)
    )


# ==== §16 Tunnels ==============================================================================
#
# A Tunnel carries a forward's connections to one pod. Two engines sit behind one seam:
#   SpdyTunnel     native: one SPDY/3.1 connection per pod, upgraded through kubectl proxy's
#                  socket, every port and every connection multiplexed on it (an error and a data
#                  stream per connection, as client-go's portforwarder does);
#   KubectlTunnel  a `kubectl port-forward pod/P :R...` child on loopback ports: the fallback when
#                  the API server refuses the upgrade, and `--engine kubectl`.
# (The WebSocket tunnel of KEP-4006 would be a third engine behind the same seam.)
# The relay (§17) asks a tunnel to connect() a link and gets an asyncio-style transport back;
# the Forward (§18) decides which tunnels exist. A tunnel only reports: its state, and when it
# fails, the cause.


class LinkOutcome(enum.Enum):
    CLOSED = "closed"  # both sides finished normally
    RESET = "reset"  # established, then cut (tunnel lost, peer reset)
    FAILED = "failed"  # never reached the pod (no tunnel in time, refused, nothing listening)


class Engine(enum.Enum):
    NATIVE = "native"
    KUBECTL = "kubectl"


@frozen_record
class Lease:
    """Where one link's upstream goes: a tunnel and the pod port (the tunnel is opaque here)."""

    tunnel: Any
    remote_port: int


@frozen_record
class Verdict:
    """What a failed tunnel (or stream) means for a link that had no answer yet."""

    reason: str
    retry: bool  # replay on the next tunnel (pod gone, tunnel lost) or not (nothing listening)
    outcome: LinkOutcome


class NoUpstream(Exception):
    """No tunnel became ready in time; the message says why (shown and counted)."""


class StreamFailure(ConnectionError):
    """A forwarded connection's stream failed; `cause` classifies the error stream's text."""

    def __init__(self, cause: ErrorCause, text: str) -> None:
        super().__init__(text)
        self.cause = cause
        self.text = text


class UpstreamSource:
    """What the proxy needs from the tunnels. StaticUpstream (benchmarks) and Forward (§18)."""

    async def acquire(self, key: int, timeout: float) -> Lease:
        """A lease for port number `key`, waiting up to `timeout` for a ready tunnel."""
        raise NotImplementedError

    def link_closed(self, lease: Lease, link: Link) -> None:
        """A link that used `lease` ended cleanly; if its tunnel fails a moment later, the
        link is recounted as cut by that failure."""

    def link_failed(self, link: Link, outcome: LinkOutcome, cause: str) -> None:
        """A link was reset or failed (counted with `cause`): shown, and maybe re-blamed."""

    def link_ended(self, link: Link) -> None:
        """A link that had a lease ended, whatever its outcome."""

    async def verdict(
        self, lease: Lease, wait: float, exc: Optional[BaseException] = None
    ) -> Optional[Verdict]:
        """What the end of an unanswered link means: None if its tunnel is healthy (the pod
        itself closed), else whether to replay it. Waits up to `wait` for a tunnel failure."""
        return None


class TunnelState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FAILING = "failing"  # failed or draining: no new links; the cause is known
    EXITED = "exited"


class Tunnel:
    """The seam: state, readiness, the cause of its end, and connect() for the relay."""

    engine: ClassVar[Engine] = Engine.KUBECTL

    def __init__(self, pod_name: str, namespace: str, remote_ports: Sequence[int]) -> None:
        import collections

        self.pod_name = pod_name
        self.namespace = namespace
        self.remote_ports = tuple(sorted(set(remote_ports)))
        self.state = TunnelState.STARTING
        self.cause: Optional[ErrorCause] = None
        self.error = ""
        self.retired = False  # stopped on purpose (dead pod, shutdown): its end is no loss
        #: Takes no new links, but the open ones go on (a GOAWAY, a pod no longer Ready).
        self.draining = False
        self.ready = asyncio.Event()
        self.ended = asyncio.Event()
        self.recent_ends: Any = collections.deque(maxlen=TUNNEL_RECENT_LINKS)
        self._on_change: Callable[[Tunnel], None] = _ignore_tunnel_change

    def __repr__(self) -> str:
        return "<%s %s %s>" % (type(self).__name__, self.pod_name, self.state.value)

    @property
    def usable(self) -> bool:
        return self.state in (TunnelState.STARTING, TunnelState.READY)

    async def start(self, on_change: Callable[[Tunnel], None]) -> None:
        raise NotImplementedError

    async def connect(self, protocol_factory: Callable[[], Any], remote_port: int) -> Any:
        """A transport to `remote_port` in the pod, speaking to protocol_factory()'s protocol."""
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def _became_ready(self) -> None:
        if self.state is TunnelState.STARTING:
            self.state = TunnelState.READY
            self.ready.set()
            self._on_change(self)

    def fail(self, cause: ErrorCause, error: str) -> None:
        """The tunnel cannot take new links any more; the first known cause is kept."""
        if self.cause is None or self.cause is ErrorCause.OTHER:
            self.cause, self.error = cause, error
        if self.state in (TunnelState.STARTING, TunnelState.READY):
            self.state = TunnelState.FAILING
            self.ended.set()
            self._on_change(self)

    # -- links that ended just before the tunnel failed were cut by it -------------------------

    def note_link_closed(self, link: Link, now: float) -> None:
        if self.state is not TunnelState.EXITED:
            self.recent_ends.append((now, link))

    def links_cut_by_failure(self, now: float) -> List[Link]:
        return [link for ended, link in self.recent_ends if now - ended <= TUNNEL_VERDICT_WINDOW_S]


def _ignore_tunnel_change(tunnel: Tunnel) -> None:
    pass


# ---- the kubectl engine: a `kubectl port-forward` child on loopback ports ----------------------


class KubectlTunnel(Tunnel):
    """One `kubectl port-forward pod/P :R1 :R2 --address 127.0.0.1` child: kubectl picks free
    loopback ports and says which in its `Forwarding from` lines (client-go closes a whole
    tunnel on the first error of any one connection, kubectl#1169: the Forward keeps a standby).
    """

    engine = Engine.KUBECTL

    def __init__(
        self, runner: KubectlRunner, pod_name: str, namespace: str, remote_ports: Sequence[int]
    ) -> None:
        import collections

        super().__init__(pod_name, namespace, remote_ports)
        self.runner = runner
        self.local_ports: Dict[int, int] = {}
        self.exit_code: Optional[int] = None
        self.stderr_tail: Any = collections.deque(maxlen=TUNNEL_STDERR_TAIL_LINES)
        self.process: Optional[KubectlProcess] = None

    def argv(self) -> List[str]:
        ports = [":%d" % port for port in self.remote_ports]
        return [
            "port-forward",
            "pod/" + self.pod_name,
            "-n",
            self.namespace,
            "--address",
            "127.0.0.1",
            *ports,
        ]

    async def start(self, on_change: Callable[[Tunnel], None]) -> None:
        self._on_change = on_change
        self.process = await self.runner.start(self.argv(), self._on_line)
        asyncio.ensure_future(self._watch_exit())

    async def connect(self, protocol_factory: Callable[[], Any], remote_port: int) -> Any:
        local = self.local_ports.get(remote_port)
        if not local:
            raise ConnectionRefusedError("kubectl port-forward has no port for %d" % remote_port)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(protocol_factory, "127.0.0.1", local)
        return transport

    async def stop(self) -> None:
        self.retired = True
        if self.process is not None:
            await self.process.stop()

    async def _watch_exit(self) -> None:
        assert self.process is not None
        self.exit_code = await self.process.wait()
        if self.cause is None:
            self._fail_from_tail()
        self.state = TunnelState.EXITED
        self.ended.set()
        self._on_change(self)

    def _fail_from_tail(self) -> None:
        """kubectl exited without a line we understood: keep its last words as the reason."""
        lines = [line for line in self.stderr_tail if line.strip()]
        self.error = (
            lines[-1] if lines else "kubectl port-forward exited with code %s" % (self.exit_code,)
        )
        self.cause = classify_error(self.error)

    # -- what kubectl says -------------------------------------------------------------------

    def _on_line(self, stream: Stream, text: str) -> None:
        event = parse_kubectl_line(stream.value, text)
        handler = _TUNNEL_HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)
        elif stream is Stream.STDERR and text.strip():
            self.stderr_tail.append(text)

    def _forwarding(self, event: ForwardingFrom) -> None:
        self.local_ports[event.remote_port] = event.local_port
        if all(port in self.local_ports for port in self.remote_ports):
            self._became_ready()

    def _failed(self, event: Any) -> None:
        cause = getattr(event, "cause", None) or classify_error(getattr(event, "message", ""))
        self.fail(cause, getattr(event, "message", "") or "lost connection to pod")

    def _lost(self, event: Any) -> None:
        self.fail(ErrorCause.OTHER, "lost connection to pod")


_TUNNEL_HANDLERS: Dict[type, Callable[[KubectlTunnel, Any], None]] = {
    ForwardingFrom: KubectlTunnel._forwarding,
    ForwardError: KubectlTunnel._failed,
    FatalError: KubectlTunnel._failed,
    ListenFailed: KubectlTunnel._failed,
    LostConnection: KubectlTunnel._lost,
}


# ---- the native engine: SPDY/3.1 through kubectl proxy ----------------------------------------

#: The upgrade client-go's SPDY dialer sends for port-forward (kubectl proxy passes it through).
SPDY_UPGRADE_HEADERS = (
    ("Connection", "Upgrade"),
    ("Upgrade", "SPDY/3.1"),
    ("X-Stream-Protocol-Version", "portforward.k8s.io"),
    ("Content-Length", "0"),
)


class UpgradeRefused(Exception):
    """The API server answered the upgrade with an HTTP error (its ApiError)."""


class SpdyTunnel(Tunnel):
    """One SPDY connection to one pod: every port, every forwarded connection, both ways.

    Per connection, an error stream (half-closed at once: we never write on it) and a data
    stream, sent back to back without waiting for their replies (one round trip less than
    client-go; the kubelet handles a stream's frames in order, so early data is safe). The
    error stream's text classifies that one connection's failure; only what dooms the whole
    pod (sandbox gone) or the connection (GOAWAY, EOF, no ping answer) fails the tunnel.
    """

    engine = Engine.NATIVE

    def __init__(
        self, access: ClusterAccess, pod_name: str, namespace: str, remote_ports: Sequence[int]
    ) -> None:
        super().__init__(pod_name, namespace, remote_ports)
        self.access = access
        self.transport: Any = None
        self.writer = SpdyWriter()
        self.parser: Optional[SpdyParser] = None
        self.refusal: Optional[ApiError] = None
        self.data_streams: Dict[int, TunnelStream] = {}
        self.error_streams: Dict[int, TunnelStream] = {}
        self.next_id = 1
        self.next_request = 0
        self.opened = 0
        self.rtt: Optional[float] = None
        self._paused: set = set()  # streams whose client reads too slowly: we stop reading
        self._ping_sent: Dict[int, float] = {}
        self._next_ping = 1
        self._keepalive: Any = None
        self._draining = False

    @property
    def active_streams(self) -> int:
        return len(self.data_streams)

    def note_link_closed(self, link: Link, now: float) -> None:
        """A native stream's clean end is known to be clean (see TunnelStream): nothing to
        recount later."""

    async def start(self, on_change: Callable[[Tunnel], None]) -> None:
        self._on_change = on_change
        loop = asyncio.get_running_loop()
        try:
            path = await self.access.proxy.wait_ready(TUNNEL_START_TIMEOUT_S)
            self.transport, _ = await loop.create_unix_connection(
                lambda: SpdyConnectionProtocols.bound()(self), path
            )
        except VibeError as exc:
            self.fail(classify_error(exc.message), exc.message)
            return
        except OSError as exc:
            self.fail(ErrorCause.CONNECTION_LOST, "cannot reach kubectl proxy: %s" % exc)
            return
        target = api_path(self.namespace, "pods", self.pod_name, "portforward")
        self.transport.write(http_request("POST", target, SPDY_UPGRADE_HEADERS))

    # -- the upgrade ---------------------------------------------------------------------------

    def upgraded(self, head: HttpHead, leftover: bytes) -> None:
        upgrade = head.get("upgrade").lower()
        if "spdy/3.1" not in upgrade:
            self.refused(
                ApiError(
                    head.status,
                    "",
                    "unable to upgrade connection: the answer upgraded to %r" % upgrade,
                )
            )
            return
        self.parser = SpdyParser(self._on_data, self._on_control)
        if leftover:
            self.parser.feed(leftover)
        self._keepalive = asyncio.ensure_future(self._keep_alive())
        self._became_ready()

    def refused(self, error: ApiError) -> None:
        """A non-101 answer: forbidden, pod not found, or an API server that will not upgrade."""
        self.refusal = error
        if error.code == 403:
            cause = ErrorCause.FORBIDDEN
        elif error.code == 404:
            cause = ErrorCause.POD_GONE
        elif error.unreachable:
            cause = ErrorCause.UNREACHABLE
        else:
            cause = ErrorCause.UPGRADE_REFUSED
        self.fail(cause, upgrade_error_text(error))
        self._close_transport()

    # -- streams ---------------------------------------------------------------------------------

    async def connect(self, protocol_factory: Callable[[], Any], remote_port: int) -> Any:
        if self.state is not TunnelState.READY or self.transport is None:
            raise ConnectionRefusedError("tunnel to pod %s is not ready" % self.pod_name)
        if self.next_id > SPDY_MAX_STREAM_ID - 4:
            self.fail(ErrorCause.CONNECTION_LOST, "the tunnel used up its stream ids")
            raise ConnectionRefusedError("tunnel full")
        error_id, data_id = self.next_id, self.next_id + 2
        self.next_id += 4
        request = self.next_request
        self.next_request += 1
        protocol = protocol_factory()
        stream = TunnelStream(self, data_id, error_id, protocol)
        self.data_streams[data_id] = stream
        self.error_streams[error_id] = stream
        self.opened += 1
        writer = self.writer
        headers = portforward_stream_headers
        self.transport.write(
            writer.syn_stream(error_id, headers("error", remote_port, request), fin=True)
            + writer.syn_stream(data_id, headers("data", remote_port, request), fin=False)
        )
        stream.reply_timer = asyncio.get_running_loop().call_later(
            SPDY_REPLY_TIMEOUT_S, stream.reply_timed_out
        )
        protocol.connection_made(stream)
        return stream

    def send_data(self, stream_id: int, view: Any) -> None:
        """One data frame (the relay's reads are at most 1 MiB: always one frame)."""
        self.transport.writelines((SPDY_DATA_HEAD.pack(stream_id, len(view)), view))

    def send_fin(self, stream_id: int) -> None:
        if self.transport is not None:
            self.transport.write(SPDY_DATA_HEAD.pack(stream_id, SPDY_FLAG_FIN << 24))

    def send_reset(self, stream_id: int) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.writer.rst_stream(stream_id, SPDY_CANCEL))

    def forget(self, stream: TunnelStream) -> None:
        self.data_streams.pop(stream.data_id, None)
        self.error_streams.pop(stream.error_id, None)
        if stream in self._paused:
            self.resume_stream(stream)
        if self._draining and not self.data_streams:
            self._close_transport()

    def pause_stream(self, stream: TunnelStream) -> None:
        """A client cannot keep up: stop reading the whole connection (spdystream's HOL)."""
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused.add(stream)

    def resume_stream(self, stream: TunnelStream) -> None:
        self._paused.discard(stream)
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- what the pod's side sends ---------------------------------------------------------------

    def _on_data(self, stream_id: int, view: memoryview, fin: bool) -> None:
        stream = self.data_streams.get(stream_id)
        if stream is not None:
            if len(view):
                stream.protocol.data_view(view, self.parser)
            if fin:
                stream.remote_finished()
            return
        stream = self.error_streams.get(stream_id)
        if stream is not None:
            stream.error_data(view, fin)

    def _on_control(self, frame: SpdyControl) -> None:
        handler = _SPDY_CONTROL_HANDLERS.get(frame.kind)
        if handler is not None:
            handler(self, frame)

    def _syn_reply(self, frame: SpdyControl) -> None:
        stream = self.data_streams.get(frame.stream)
        if stream is not None:
            stream.replied()

    def _rst_stream(self, frame: SpdyControl) -> None:
        stream = self.data_streams.get(frame.stream) or self.error_streams.get(frame.stream)
        if stream is None:
            return
        refused = frame.value == SPDY_REFUSED_STREAM  # after a GOAWAY: try another tunnel
        cause = ErrorCause.CONNECTION_LOST if refused else ErrorCause.OTHER
        stream.failed(StreamFailure(cause, spdy_rst_text(frame.value)), reset=False)

    def _ping(self, frame: SpdyControl) -> None:
        if frame.value % 2 == 0:  # the server's ping: echo it
            if self.transport is not None:
                self.transport.write(self.writer.ping(frame.value))
            return
        sent = self._ping_sent.pop(frame.value, None)
        if sent is not None:
            self.rtt = _monotonic() - sent

    def _goaway(self, frame: SpdyControl) -> None:
        """The API server is going away: open streams finish, new ones go elsewhere."""
        self.draining = True  # before fail(): the Forward must not cut the open links
        self.fail(ErrorCause.CONNECTION_LOST, "the API server closed the tunnel (GOAWAY)")
        self.drain()

    def _syn_stream(self, frame: SpdyControl) -> None:
        if self.transport is not None:  # servers never open streams in port-forward
            self.transport.write(self.writer.rst_stream(frame.stream, SPDY_REFUSED_STREAM))

    # -- the connection's life -------------------------------------------------------------------

    async def _keep_alive(self) -> None:
        """Ping when idle; no answer in time means the connection is dead (sleep, VPN)."""
        while self.transport is not None and not self.transport.is_closing():
            await asyncio.sleep(SPDY_PING_INTERVAL_S)
            ping_id = self._next_ping
            self._next_ping += 2
            self._ping_sent = {ping_id: _monotonic()}
            self.transport.write(self.writer.ping(ping_id))
            await asyncio.sleep(SPDY_PING_TIMEOUT_S)
            if ping_id in self._ping_sent:
                self.fail(
                    ErrorCause.STUCK_TUNNEL,
                    "no answer to a ping within %s" % format_go_duration(SPDY_PING_TIMEOUT_S),
                )
                self._close_transport()
                return

    def protocol_failed(self, error: str) -> None:
        self.fail(ErrorCause.CONNECTION_LOST, "the tunnel's SPDY stream broke: " + error)
        self._close_transport()

    def connection_closed(self, exc: Optional[BaseException]) -> None:
        """The Unix socket connection ended: every stream on it ends with the tunnel's cause."""
        self.transport = None
        if self.cause is None:
            why = _describe_socket_error(exc) if exc is not None else "closed"
            self.fail(
                ErrorCause.CONNECTION_LOST,
                "the tunnel's connection to kubectl proxy %s"
                % ("ended" if why == "closed" else "failed: " + why),
            )
        failure = StreamFailure(self.cause or ErrorCause.CONNECTION_LOST, self.error)
        for stream in list(self.data_streams.values()):
            stream.failed(failure, reset=False)
        self.data_streams.clear()
        self.error_streams.clear()
        if self._keepalive is not None:
            self._keepalive.cancel()
        self.state = TunnelState.EXITED
        self.ended.set()
        self._on_change(self)

    def drain(self) -> None:
        """No new links; close once the open ones are done."""
        self._draining = True
        self.draining = True
        if not self.data_streams:
            self._close_transport()

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def stop(self) -> None:
        """Stop on purpose: open connections are cut (the Forward decides when to call this)."""
        self.retired = True
        if self.transport is not None:
            if self.state is TunnelState.READY and not self.transport.is_closing():
                self.transport.write(self.writer.goaway(0))
            self.transport.abort()
        elif self.state is not TunnelState.EXITED:
            self.state = TunnelState.EXITED
            self.ended.set()


_SPDY_CONTROL_HANDLERS: Dict[int, Callable[[SpdyTunnel, SpdyControl], None]] = {
    SPDY_SYN_REPLY: SpdyTunnel._syn_reply,
    SPDY_RST_STREAM: SpdyTunnel._rst_stream,
    SPDY_PING: SpdyTunnel._ping,
    SPDY_GOAWAY: SpdyTunnel._goaway,
    SPDY_SYN_STREAM: SpdyTunnel._syn_stream,
}


class TunnelStream:
    """One forwarded connection inside a SpdyTunnel, presented to the relay as a transport.

    The relay's upstream half (§17) gets connection_made(self), data_view() for the pod's bytes,
    eof_received() and connection_lost(exc), exactly the calls an asyncio transport would make.
    The pod's FIN is passed on once the error stream has ended too (the kubelet ends both at
    once): an empty error stream makes it a clean EOF, a text a failure with its cause. So a
    native stream's end is never ambiguous, unlike a kubectl child's.
    """

    __slots__ = (
        "closed",
        "data_id",
        "eof_timer",
        "error_id",
        "error_text",
        "fin_sent",
        "protocol",
        "remote_error_fin",
        "remote_fin",
        "reply_timer",
        "tunnel",
    )

    def __init__(self, tunnel: SpdyTunnel, data_id: int, error_id: int, protocol: Any) -> None:
        self.tunnel = tunnel
        self.data_id = data_id
        self.error_id = error_id
        self.protocol = protocol
        self.error_text = bytearray()
        self.fin_sent = False
        self.remote_fin = False
        self.remote_error_fin = False
        self.closed = False
        self.reply_timer: Any = None
        self.eof_timer: Any = None

    def __repr__(self) -> str:
        return "<TunnelStream %d/%d %s>" % (self.error_id, self.data_id, self.tunnel.pod_name)

    # -- asyncio transport interface, as the relay uses it ----------------------------------------

    def write(self, data: Any) -> None:
        if not self.closed and not self.fin_sent:
            self.tunnel.send_data(self.data_id, data)

    def write_eof(self) -> None:
        if not self.closed and not self.fin_sent:
            self.fin_sent = True
            self.tunnel.send_fin(self.data_id)

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        transport = self.tunnel.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        if not self.closed:
            self.tunnel.pause_stream(self)

    def resume_reading(self) -> None:
        self.tunnel.resume_stream(self)

    def close(self) -> None:
        """Our side is done: FIN if not sent; a pod side still open is reset (nobody reads)."""
        if self.closed:
            return
        self.write_eof()
        if not self.remote_fin:
            self.tunnel.send_reset(self.data_id)
        self._end(None)

    def abort(self) -> None:
        if self.closed:
            return
        self.tunnel.send_reset(self.data_id)
        self._end(None)

    # -- what the tunnel tells this stream --------------------------------------------------------

    def replied(self) -> None:
        if self.reply_timer is not None:
            self.reply_timer.cancel()
            self.reply_timer = None

    def reply_timed_out(self) -> None:
        """No SYN_REPLY in time: the tunnel is stuck (client-go: "Timeout occurred")."""
        self.reply_timer = None
        if not self.closed:
            error = "creating a stream timed out: Timeout occurred"
            self.tunnel.fail(ErrorCause.STUCK_TUNNEL, error)
            self.failed(StreamFailure(ErrorCause.STUCK_TUNNEL, error), reset=True)
            self.tunnel.drain()

    def remote_finished(self) -> None:
        self.remote_fin = True
        if self.remote_error_fin:
            self._eof()
        elif not self.closed:  # a peer that never ends the error stream must not hang us
            loop = asyncio.get_running_loop()
            self.eof_timer = loop.call_later(SPDY_ERROR_FIN_WAIT_S, self._eof)

    def _eof(self) -> None:
        if self.eof_timer is not None:
            self.eof_timer.cancel()
            self.eof_timer = None
        if not self.closed:
            self.protocol.eof_received()
        self._maybe_done()

    def error_data(self, view: memoryview, fin: bool) -> None:
        room = SPDY_ERROR_TEXT_BYTES - len(self.error_text)
        if room > 0:
            self.error_text += view[:room]
        if not fin:
            return
        self.remote_error_fin = True
        if self.error_text:
            text = self.error_text.decode("utf-8", "replace").strip()
            cause = classify_error(text)
            if cause is ErrorCause.POD_GONE:
                self.tunnel.fail(cause, text)  # the sandbox is gone: no stream will work
            self.failed(StreamFailure(cause, text), reset=not self.remote_fin)
        elif self.remote_fin:
            self._eof()

    def failed(self, failure: StreamFailure, reset: bool) -> None:
        if self.closed:
            return
        if reset:
            self.tunnel.send_reset(self.data_id)
        self._end(failure)

    def _maybe_done(self) -> None:
        """Both directions finished: forget the ids (the relay closes us when it is done)."""
        if self.remote_fin and self.remote_error_fin and self.fin_sent:
            self.tunnel.forget(self)

    def _end(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        self.replied()
        if self.eof_timer is not None:
            self.eof_timer.cancel()
            self.eof_timer = None
        self.tunnel.forget(self)
        asyncio.get_running_loop().call_soon(self.protocol.connection_lost, exc)


class _SpdyConnectionProtocol:
    """The Unix socket connection of a SpdyTunnel: the upgrade's HTTP answer, then SPDY frames
    straight into the tunnel's parser (bound to asyncio.BufferedProtocol by
    SpdyConnectionProtocols)."""

    __slots__ = ("_body", "_head_view", "_http", "tunnel")

    def __init__(self, tunnel: SpdyTunnel) -> None:
        self.tunnel = tunnel
        self._http: Optional[HttpResponseParser] = HttpResponseParser()
        self._head_view = memoryview(bytearray(16 * 1024))
        self._body = b""

    def connection_made(self, transport: Any) -> None:
        pass

    def get_buffer(self, sizehint: int) -> memoryview:
        parser = self.tunnel.parser
        return parser.get_buffer() if parser is not None else self._head_view

    def buffer_updated(self, nbytes: int) -> None:
        parser = self.tunnel.parser
        try:
            if parser is not None:
                parser.buffer_updated(nbytes)
            else:
                self._http_answer(bytes(self._head_view[:nbytes]))
        except (SpdyProtocolError, HttpProtocolError) as exc:
            self.tunnel.protocol_failed(str(exc))

    def _http_answer(self, data: bytes) -> None:
        """Until the upgrade: a 101 switches to SPDY; an error answer is read to its end."""
        http = self._http
        assert http is not None
        events = http.feed(data)
        head = http.head
        if head is None:
            return
        if head.status == 101:
            self._http = None
            self.tunnel.upgraded(head, http.leftover)
            return
        self._body += b"".join(event for event in events if isinstance(event, bytes))
        if http.done and len(self._body) <= API_MAX_ERROR_BYTES:
            self.tunnel.refused(api_error(head.status, head.get("content-type"), self._body))

    def eof_received(self) -> bool:
        if self._http is not None and self._http.head is not None:
            try:
                self._http_answer(b"")  # an error answer delimited by the close
            except HttpProtocolError:
                pass
        return False

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.tunnel.connection_closed(exc)

    def pause_writing(self) -> None:
        """kubectl proxy reads slower than clients send: stop reading every client."""
        for stream in list(self.tunnel.data_streams.values()):
            stream.protocol.pause_client()

    def resume_writing(self) -> None:
        for stream in list(self.tunnel.data_streams.values()):
            stream.protocol.resume_client()


class SpdyConnectionProtocols:
    """Binds _SpdyConnectionProtocol to asyncio.BufferedProtocol at first use (asyncio is
    imported lazily, and transports only take the zero-copy path for real subclasses)."""

    _bound: ClassVar[Optional[type]] = None

    @classmethod
    def bound(cls) -> type:
        if cls._bound is None:
            cls._bound = type(
                "SpdyConnectionProtocol", (_SpdyConnectionProtocol, asyncio.BufferedProtocol), {}
            )
        return cls._bound


# ==== §17 Proxy ================================================================================
#
# The user's ports belong to this process for the whole session. Each accepted connection is a
# Link: a client half and an upstream half (asyncio BufferedProtocols) relaying through ONE
# process-wide buffer. asyncio is single-threaded and each chunk is written before the next read,
# so no per-chunk allocation is needed; only when a write is partial does the transport keep a
# view of the buffer (Python 3.12+ queues the memoryview itself), and the buffer is then handed
# over to the transport and replaced. Inspection (sniffers) is an optional observer per link.


class LinkState(enum.Enum):
    WAITING = "waiting"  # accepted; no tunnel is ready yet
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


class ForwardStats:
    """Hot counters of one forward (one local port): plain attributes, bumped on the data path."""

    __slots__ = (
        "active",
        "bytes_down",
        "bytes_up",
        "causes",
        "closed",
        "failed",
        "opened",
        "replayed",
        "reset",
        "waited",
    )

    def __init__(self) -> None:
        self.bytes_up = 0  # client → pod
        self.bytes_down = 0  # pod → client
        self.opened = 0
        self.active = 0
        self.closed = 0
        self.failed = 0
        self.reset = 0
        self.waited = 0  # connections that had to wait for a tunnel
        self.replayed = 0  # connections moved to a new tunnel before the pod answered
        self.causes: Dict[str, int] = {}  # "reset: pod gone" -> count

    def count(self, outcome: LinkOutcome, cause: str = "") -> None:
        if outcome is LinkOutcome.CLOSED:
            self.closed += 1
            return
        if outcome is LinkOutcome.RESET:
            self.reset += 1
        else:
            self.failed += 1
        key = "%s: %s" % (outcome.value, cause or "unknown")
        self.causes[key] = self.causes.get(key, 0) + 1

    def reclassify_as_reset(self, cause: str) -> None:
        """A link that looked closed turns out to have died with its tunnel."""
        self.closed -= 1
        self.count(LinkOutcome.RESET, cause)

    def snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(self.bytes_up, self.bytes_down, self.opened, self.active,
                             self.closed, self.failed, self.reset, self.waited, self.replayed,
                             tuple(sorted(self.causes.items())))  # fmt: skip


class StaticTunnel(Tunnel):
    """A tunnel to a fixed TCP address: the data path alone, for benchmarks and tests."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__("static", "", (port,))
        self.host = host
        self.port = port
        self.state = TunnelState.READY

    async def connect(self, protocol_factory: Callable[[], Any], remote_port: int) -> Any:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(protocol_factory, self.host, self.port)
        return transport


class StaticUpstream(UpstreamSource):
    """A fixed upstream address, for benchmarks and tests of the data path without kubectl."""

    def __init__(self, host: str, port: int) -> None:
        self.lease = Lease(StaticTunnel(host, port), port)

    async def acquire(self, key: int, timeout: float) -> Lease:
        return self.lease


class RelayBuffer:
    """The one read buffer shared by every link (see the section comment)."""

    __slots__ = ("buffer", "view")

    def __init__(self, size: int) -> None:
        self.buffer = bytearray(size)
        self.view = memoryview(self.buffer)

    def handed_over(self) -> None:
        """A transport kept a view of the buffer: leave it there and start a fresh one."""
        self.buffer = bytearray(len(self.buffer))
        self.view = memoryview(self.buffer)


class Link:
    """One user connection and its way to the pod. Owns both halves and counts the outcome."""

    __slots__ = (
        "__weakref__",
        "client",
        "client_eof",
        "down_bytes",
        "forward",
        "lease",
        "observer",
        "pending",
        "replay",
        "replays",
        "state",
        "up_bytes",
        "upstream",
        "upstream_eof",
    )

    def __init__(self, forward: ForwardProxy) -> None:
        self.forward = forward
        self.state = LinkState.WAITING
        self.client: Any = None  # asyncio transport
        self.upstream: Any = None
        self.lease: Optional[Lease] = None
        self.pending = bytearray()  # client bytes that arrived before the upstream was open
        self.replay: Optional[bytearray] = bytearray()  # kept until the pod's first byte
        self.replays = 0  # times this link was moved to a new tunnel
        self.down_bytes = 0
        self.up_bytes = 0
        self.client_eof = False
        self.upstream_eof = False
        self.observer: Any = None

    def __repr__(self) -> str:
        return "<Link %s down=%d lease=%s>" % (self.state.value, self.down_bytes, self.lease)

    # -- setting up: wait for a tunnel, connect, flush what the client already sent --------------

    async def connect(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        forward = self.forward
        while self.state is not LinkState.CLOSED:
            try:
                lease = await forward.source.acquire(forward.key, deadline - loop.time())
            except NoUpstream as exc:
                self.fail(str(exc))
                return
            self.state = LinkState.CONNECTING
            try:
                transport = await lease.tunnel.connect(
                    RelayProtocols.upstream_half(self), lease.remote_port
                )
            except OSError:
                # The tunnel died between acquire and connect: take the next one, within time.
                if loop.time() >= deadline:
                    self.fail("tunnel refused the connection")
                    return
                await asyncio.sleep(LINK_RETRY_PAUSE_S)
                continue
            if self.state is LinkState.CLOSED:  # the client left while we were connecting
                transport.close()
                return
            self.opened(transport, lease)
            return

    def opened(self, transport: Any, lease: Lease) -> None:
        self.upstream = transport
        self.lease = lease
        self.state = LinkState.OPEN
        _set_nodelay(transport)
        if lease.tunnel.engine is Engine.NATIVE:  # see SPDY_CLIENT_BUFFER_BYTES
            self.client.set_write_buffer_limits(high=SPDY_CLIENT_BUFFER_BYTES)
        if self.pending:
            transport.write(bytes(self.pending))
            self.forward.stats.bytes_up += len(self.pending)
            self.up_bytes += len(self.pending)
        self.replay = self.pending if len(self.pending) <= LINK_REPLAY_MAX_BYTES else None
        self.pending = bytearray()
        if self.client_eof and transport.can_write_eof():
            transport.write_eof()
        self.client.resume_reading()

    # -- the hot path: one call per chunk in each direction -------------------------------------

    def from_client(self, nbytes: int) -> None:
        forward = self.forward
        view = forward.relay.view[:nbytes]
        if self.state is LinkState.OPEN:
            forward.stats.bytes_up += nbytes
            self.up_bytes += nbytes
            if self.replay is not None:
                self.replay += view
                if len(self.replay) > LINK_REPLAY_MAX_BYTES:
                    self.replay = None
            forward.send(self.upstream, view)
        else:
            self.pending += view
            if len(self.pending) > LINK_PENDING_MAX_BYTES:
                self.client.pause_reading()
        # Inspect after forwarding, so sniffing never delays the bytes. `view` stays valid: a
        # transport that kept it got the buffer (RelayBuffer.handed_over).
        if self.observer is not None and not self.observer.feed(DIRECTION_UP, view):
            self.observer = None  # nothing more to learn: inspection costs nothing from here

    def from_upstream(self, nbytes: int) -> None:
        relay = self.forward.relay
        self.from_tunnel(relay.view[:nbytes], relay)

    def from_tunnel(self, view: memoryview, owner: Any) -> None:
        """The pod's bytes, in `owner`'s buffer (the relay's, or a SPDY connection's)."""
        forward = self.forward
        nbytes = len(view)
        forward.stats.bytes_down += nbytes
        if not self.down_bytes:
            self.replay = None  # the pod answered: no more replays of what was sent
            self.replays = 0
        self.down_bytes += nbytes
        forward.send(self.client, view, owner)
        if self.observer is not None and not self.observer.feed(DIRECTION_DOWN, view):
            self.observer = None

    # -- half-close and endings ------------------------------------------------------------------

    def client_finished(self) -> None:
        self.client_eof = True
        if self.observer is not None:
            self.observer.feed(DIRECTION_UP, b"")
        if self.state is LinkState.OPEN and self.upstream.can_write_eof():
            self.upstream.write_eof()
        self._close_if_both_finished()

    def may_continue_elsewhere(self) -> bool:
        """Unanswered (replay the request) or an HTTP keep-alive at rest (move it): either way
        the client need not notice that its tunnel died."""
        if self.down_bytes == 0 and self.replay is not None:
            return True
        return self.observer is not None and self.observer.at_rest

    def upstream_finished(self) -> None:
        self.upstream_eof = True
        if self.may_continue_elsewhere():
            # Maybe the tunnel died under us: close our side so upstream_lost runs and decides,
            # after a verdict, between replaying the request elsewhere and a plain close.
            self.upstream.close()
            return
        if self.observer is not None:
            self.observer.feed(DIRECTION_DOWN, b"")
        if self.client.can_write_eof():
            self.client.write_eof()
        self._close_if_both_finished()

    def _close_if_both_finished(self) -> None:
        if self.client_eof and self.upstream_eof:
            self.client.close()
            if self.upstream is not None:
                self.upstream.close()

    def client_lost(self, exc: Optional[BaseException]) -> None:
        if self.state is LinkState.CLOSED:
            return
        if self.upstream is not None:
            if exc is not None:
                self.upstream.abort()
            else:
                self.upstream.close()
        self.finish(LinkOutcome.CLOSED)

    def upstream_lost(self, exc: Optional[BaseException]) -> None:
        if self.state is LinkState.CLOSED or self.upstream is None:
            return
        self.upstream = None
        if self.may_continue_elsewhere():
            self.state = LinkState.WAITING  # client bytes from now on wait in `pending`
            self.forward.spawn(self.retry_elsewhere(exc))
            return
        if exc is not None:
            self.client.abort()
            port = self.lease.remote_port if self.lease is not None else 0
            self.finish(LinkOutcome.RESET, _describe_socket_error(exc, port))
        else:
            self.client.close()
            self.finish(LinkOutcome.CLOSED)

    async def retry_elsewhere(self, exc: Optional[BaseException]) -> None:
        """The upstream ended before the pod said a word, or while an HTTP keep-alive was at
        rest. If its tunnel failed, go on through the next tunnel (replaying the unanswered
        bytes); if the tunnel is fine, the pod closed the connection for real."""
        lease = self.lease
        assert lease is not None
        verdict = await self.forward.source.verdict(lease, REPLAY_VERDICT_WAIT_S, exc)
        if self.state is LinkState.CLOSED:
            return
        if verdict is None:  # the tunnel is healthy: the pod itself closed the connection
            if exc is not None:
                self.client.abort()
                self.finish(LinkOutcome.RESET, _describe_socket_error(exc, lease.remote_port))
            else:
                self.client.close()
                self.finish(LinkOutcome.CLOSED)
            return
        self.replays += 1
        if not verdict.retry or self.replays > LINK_MAX_REPLAYS:
            outcome = LinkOutcome.RESET if self.down_bytes else verdict.outcome
            if outcome is LinkOutcome.RESET:
                self.client.abort()  # the client must see a reset, not a clean end of data
            else:
                self.client.close()
            self.finish(outcome, verdict.reason)
            return
        self.forward.stats.replayed += 1
        # What the dead tunnel never answered, then what the client sent since.
        self.pending = (self.replay or bytearray()) + self.pending
        self.replay = bytearray()
        self.down_bytes = 0
        self.upstream_eof = False
        self.state = LinkState.WAITING
        await self.connect(self.forward.wait_timeout)

    def fail(self, reason: str) -> None:
        """The link never reached the pod: close the client (it sees EOF), count why."""
        if self.client is not None:
            self.client.close()
        self.finish(LinkOutcome.FAILED, reason)

    def finish(self, outcome: LinkOutcome, cause: str = "") -> None:
        if self.state is LinkState.CLOSED:
            return
        self.state = LinkState.CLOSED
        self.forward.link_finished(self, outcome, cause)


def _describe_socket_error(exc: BaseException, port: int = 0) -> str:
    if isinstance(exc, StreamFailure):
        return cause_summary(exc.cause, (port,) if port else ())
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _set_nodelay(transport: Any) -> None:
    import socket

    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class _ClientHalf:
    """The user's side of a link; bound to asyncio.BufferedProtocol by RelayProtocols."""

    __slots__ = ("link",)

    def __init__(self, link: Link) -> None:
        self.link = link

    def connection_made(self, transport: Any) -> None:
        self.link.client = transport
        _set_nodelay(transport)
        self.link.forward.accepted(self.link)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.link.forward.relay.view

    def buffer_updated(self, nbytes: int) -> None:
        self.link.from_client(nbytes)

    def eof_received(self) -> bool:
        self.link.client_finished()
        return True  # keep our write side open: half-close

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.link.client_lost(exc)

    def pause_writing(self) -> None:  # the client reads slower than the pod sends
        if self.link.upstream is not None:
            self.link.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.link.upstream is not None:
            self.link.upstream.resume_reading()


class _UpstreamHalf:
    """The tunnel's side of a link; bound to asyncio.BufferedProtocol by RelayProtocols."""

    __slots__ = ("link",)

    def __init__(self, link: Link) -> None:
        self.link = link

    def connection_made(self, transport: Any) -> None:
        pass  # Link.opened() takes the transport once create_connection returns

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.link.forward.relay.view

    def buffer_updated(self, nbytes: int) -> None:
        self.link.from_upstream(nbytes)

    def eof_received(self) -> bool:
        self.link.upstream_finished()
        return True

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.link.upstream_lost(exc)

    def pause_writing(self) -> None:  # the pod reads slower than the client sends
        self.link.client.pause_reading()

    def resume_writing(self) -> None:
        self.link.client.resume_reading()

    # -- a SpdyTunnel's stream calls these instead of get_buffer/buffer_updated and the
    # -- transport flow-control callbacks (its bytes are already in its parser's buffer)

    def data_view(self, view: memoryview, owner: Any) -> None:
        self.link.from_tunnel(view, owner)

    def pause_client(self) -> None:
        if self.link.client is not None:
            self.link.client.pause_reading()

    def resume_client(self) -> None:
        if self.link.client is not None:
            self.link.client.resume_reading()


class RelayProtocols:
    """Binds the two halves to asyncio.BufferedProtocol once asyncio is imported.

    The transport only takes the zero-copy read path for real BufferedProtocol subclasses, and
    asyncio is imported lazily (see _LazyModule), so the binding happens at first use.
    """

    _classes: ClassVar[Dict[str, type]] = {}

    @classmethod
    def _bound(cls, half: type) -> type:
        bound = cls._classes.get(half.__name__)
        if bound is None:
            bound = type(
                half.__name__.lstrip("_"), (half, asyncio.BufferedProtocol), {"__slots__": ()}
            )
            cls._classes[half.__name__] = bound
        return bound

    @classmethod
    def client_half(cls, link: Link) -> Any:
        return cls._bound(_ClientHalf)(link)

    @classmethod
    def upstream_half(cls, link: Link) -> Callable[[], Any]:
        bound = cls._bound(_UpstreamHalf)
        return lambda: bound(link)


class ForwardProxy:
    """One user-facing local port (on one or more addresses) and every link accepted on it."""

    def __init__(
        self,
        source: UpstreamSource,
        key: int,
        relay: RelayBuffer,
        *,
        wait_timeout: float,
        inspector_factory: Optional[Callable[[int], Any]] = None,
        on_accept: Optional[Callable[[ForwardProxy], None]] = None,
    ) -> None:
        self.source = source
        self.key = key  # which forward of the target this is (its remote port may change)
        self.relay = relay
        self.wait_timeout = wait_timeout
        self.stats = ForwardStats()
        self.port = 0
        self.addresses: List[str] = []
        self.links: set[Link] = set()
        self._servers: List[Any] = []
        self._tasks: set[Any] = set()
        self._inspector_factory = inspector_factory
        self._on_accept = on_accept

    def __repr__(self) -> str:
        return "<ForwardProxy :%d #%d links=%d>" % (self.port, self.key, len(self.links))

    # -- listening, with kubectl's all/any semantics ---------------------------------------------

    async def listen(
        self, addresses: Sequence[str], port: int, port_ok: Callable[[Dict[str, bool]], bool]
    ) -> List[str]:
        """Bind `port` (0 = random, then reused) on each address; kubectl-style errors if
        port_ok (client-go's all/any rules over address → bound) says the port failed."""
        loop = asyncio.get_running_loop()
        errors = []
        bound: Dict[str, bool] = {}
        for address in addresses:
            try:
                server = await loop.create_server(
                    self._new_client_half, host=address, port=self.port or port, backlog=1024
                )
            except OSError as exc:
                errors.append(_listen_error_text(address, self.port or port, exc))
                bound[address] = False
                continue
            bound[address] = True
            self._servers.append(server)
            self.addresses.append(address)
            if not self.port:
                self.port = server.sockets[0].getsockname()[1]
        if not port_ok(bound):
            await self.close(0)
            return errors
        return []

    def _new_client_half(self) -> Any:
        return RelayProtocols.client_half(Link(self))

    # -- links -----------------------------------------------------------------------------------

    def accepted(self, link: Link) -> None:
        self.links.add(link)
        self.stats.opened += 1
        self.stats.active += 1
        if self._inspector_factory is not None:
            link.observer = self._inspector_factory(self.key)
        if self._on_accept is not None:
            self._on_accept(self)
        self.spawn(link.connect(self.wait_timeout))

    def link_finished(self, link: Link, outcome: LinkOutcome, cause: str) -> None:
        self.links.discard(link)
        self.stats.active -= 1
        self.stats.count(outcome, cause)
        if outcome is LinkOutcome.CLOSED and link.lease is not None:
            self.source.link_closed(link.lease, link)
        elif outcome is not LinkOutcome.CLOSED:
            self.source.link_failed(link, outcome, cause)
        if link.lease is not None:
            self.source.link_ended(link)
        if link.observer is not None:
            link.observer.close(outcome, cause)

    def send(self, transport: Any, view: memoryview, owner: Any = None) -> None:
        """Write a chunk of a buffer (the shared relay buffer unless `owner` says otherwise);
        hand that buffer over if the transport kept a view of it (a partial write)."""
        if not _TRANSPORT_KEEPS_VIEWS:  # 3.9-3.11 copy whatever they cannot send at once
            transport.write(view)
            return
        if transport.get_write_buffer_size():
            transport.write(bytes(view))  # queued behind earlier data: it must be a copy
            return
        transport.write(view)
        if transport.get_write_buffer_size():
            (owner or self.relay).handed_over()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, grace: float) -> None:
        """Stop accepting, let links finish for `grace` seconds, then cut the rest."""
        for server in self._servers:
            server.close()
        self._servers = []
        if grace > 0 and self.links:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            while self.links and loop.time() < deadline:
                await asyncio.sleep(0.05)
        for link in list(self.links):
            if link.client is not None:
                link.client.abort()
            if link.upstream is not None:
                link.upstream.abort()
            link.finish(LinkOutcome.CLOSED)  # idle keep-alives at Ctrl-C are not a problem
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


#: Python 3.12+ transports queue a view of a partially-written buffer instead of copying it.
_TRANSPORT_KEEPS_VIEWS = sys.version_info >= (3, 12)


def every_address_bound(bound: Dict[str, bool]) -> bool:
    return all(bound.values())


def _listen_error_text(address: str, port: int, exc: OSError) -> str:
    """Go's wording: `unable to create listener: Error listen tcp4 127.0.0.1:8080: bind: ...`."""
    family = "tcp6" if ":" in address else "tcp4"
    host = "[%s]" % address if ":" in address else address
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return "unable to create listener: Error listen %s %s:%d: bind: %s" % (
        family,
        host,
        port,
        reason,
    )


def local_port_free(port: int, addresses: Sequence[str]) -> bool:
    """Could `port` be bound on these addresses now? (A test bind, as asyncio binds: with
    SO_REUSEADDR. An address this machine lacks, such as ::1 without IPv6, does not count.)"""
    import errno
    import socket

    bound_any = False
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((address, port))
                bound_any = True
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
    return bound_any


def port_holder(port: int) -> str:
    """Who listens on a local port: "pid 4242 (python3 -m http.server 8080)", or "another
    user's process" when the system will not say."""
    import psutil

    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return "another process (its owner cannot be read)"
    for connection in connections:
        if connection.laddr and connection.laddr.port == port and connection.status == "LISTEN":
            return _process_text(connection.pid)
    return "another process"


def _process_text(pid: Optional[int]) -> str:
    import psutil

    if not pid:
        return "another user's process"
    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return "pid %d" % pid
    return "pid %d (%s)" % (pid, command[:60] + ("…" if len(command) > 60 else ""))


class StaticForward:
    """A forward to a fixed address: the data path alone, for benchmarks and tests."""

    def __init__(self, proxy: ForwardProxy, inspection: Optional[ForwardInspection]) -> None:
        self.proxy = proxy
        self.inspection = inspection

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def stats(self) -> ForwardStats:
        return self.proxy.stats

    async def close(self, grace: float = 0.0) -> None:
        await self.proxy.close(grace)


async def open_static_forward(
    upstream: Tuple[str, int],
    *,
    address: str = "127.0.0.1",
    port: int = 0,
    inspect: bool = False,
) -> StaticForward:
    """Listen on address:port and relay every connection to `upstream` (no kubectl involved)."""
    inspection = ForwardInspection(upstream[1]) if inspect else None
    proxy = ForwardProxy(
        StaticUpstream(*upstream),
        0,
        RelayBuffer(RELAY_BUFFER_BYTES),
        wait_timeout=5.0,
        inspector_factory=inspection.new_link if inspection is not None else None,
    )
    errors = await proxy.listen([address], port, every_address_bound)
    if errors:
        raise VibeError(errors[0])
    return StaticForward(proxy, inspection)


# ---- Inspection: the sniffers (§11) as an optional observer of each link -----------------------

DIRECTION_UP = Direction.CLIENT_TO_SERVER
DIRECTION_DOWN = Direction.SERVER_TO_CLIENT


class ForwardInspection:
    """Protocol recognition for one forward: one ProtocolStats shared by all its links."""

    def __init__(self, remote_port: int = 0) -> None:
        self.stats = ProtocolStats()
        self.remote_port = remote_port  # a tie-breaker hint for detection only

    def new_link(self, key: int) -> LinkInspector:
        return LinkInspector(self.stats, self.remote_port)

    def summary_lines(self) -> List[str]:
        return self.stats.summary_lines()

    def problems(self) -> List[str]:
        return self.stats.problems()


class LinkInspector:
    """Detects a link's protocol from its first bytes, then feeds the matching sniffer.

    feed() returns False once there is nothing more to learn, so the link drops it and the
    relay pays nothing more for inspection. Until detection, the first bytes of each side are
    kept (bounded); the sniffer then gets them side by side, the first speaker first.
    """

    __slots__ = ("_first", "_prefixes", "remote_port", "sniffer", "stats")

    def __init__(self, stats: ProtocolStats, remote_port: int) -> None:
        self.stats = stats
        self.remote_port = remote_port
        self.sniffer: Optional[Sniffer] = None
        self._prefixes = {DIRECTION_UP: bytearray(), DIRECTION_DOWN: bytearray()}
        self._first: Optional[Direction] = None

    def feed(self, direction: Direction, data: Any) -> bool:
        now = time.monotonic()
        if self.sniffer is not None:
            self.sniffer.feed(direction, data, now)
            return self.sniffer.active
        if self._first is None:
            self._first = direction
        prefix = self._prefixes[direction]
        room = SNIFF_DETECT_MAX_BYTES - len(prefix)
        prefix += data[:room]
        up, down = self._prefixes[DIRECTION_UP], self._prefixes[DIRECTION_DOWN]
        kind = detect_protocol(bytes(up), bytes(down), self.remote_port)
        if kind is None and 0 < len(data) <= room:
            return True  # undecided: wait for more bytes
        leftover = bytes(data[room:]) if len(data) > room else b""
        sniffer = self._start(kind or ProtocolKind.UNKNOWN, now)
        if leftover:
            sniffer.feed(direction, leftover, now)
        if not len(data):
            sniffer.feed(direction, b"", now)
        return sniffer.active

    def _start(self, kind: ProtocolKind, now: float) -> Sniffer:
        sniffer = self.sniffer = sniffer_for(kind, self.stats)
        first = self._first or DIRECTION_UP
        second = DIRECTION_DOWN if first is DIRECTION_UP else DIRECTION_UP
        for side in (first, second):
            if self._prefixes[side]:
                sniffer.feed(side, bytes(self._prefixes[side]), now)
        self._prefixes = {}
        return sniffer

    @property
    def at_rest(self) -> bool:
        return self.sniffer is not None and self.sniffer.at_rest

    def close(self, outcome: LinkOutcome, cause: str) -> None:
        if self.sniffer is not None:
            self.sniffer.close(time.monotonic())


# ==== §18 port-forward session =================================================================
#
# A Session holds N Forwards over the cluster access of their context (§15) and publishes one
# event stream. A Forward keeps one target forwarding: its listeners (a ForwardProxy per port,
# §17), an active and a standby tunnel (§16), its pods watched, failures counted and explained.
# Displays (live view, kubectl-compatible lines, JSON lines, the closing summary) are clients of
# the event stream and of read-only snapshots, never owners of the session: a control socket can
# attach the same views later. One failing forward never disturbs another.


class ForwardState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"


class EventKind(enum.Enum):
    FORWARDING = "forwarding"  # a local port is listening and its first tunnel is ready
    CONNECTION = "connection"  # a client connected (kubectl's "Handling connection for N")
    CONNECTION_FAILED = "connection_failed"  # a client connection was reset or never got through
    TUNNEL_LOST = "tunnel_lost"
    RECONNECTING = "reconnecting"
    RECONNECTED = "reconnected"
    POD = "pod"  # the pod behind the forward changed: replaced, restarted, not ready
    LISTEN_FAILED = "listen_failed"
    CLUSTER = "cluster"  # the cluster access itself: kubectl proxy restarts, engine fallback
    PORTS = "ports"  # local ports chosen for you, or held by another process
    FOUND = "found"  # discovery (-l, --annotated): a target and its ports, or a warning
    ERROR = "error"
    STOPPED = "stopped"


@frozen_record
class SessionEvent:
    """Something the user should hear about, from any forward; clients decide how to show it."""

    time: float  # wall clock, for display
    kind: EventKind
    target: str  # "svc/web"
    message: str
    data: Tuple[Tuple[str, Any], ...] = ()

    def as_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"event": self.kind.value, "target": self.target}
        out.update(self.data)
        out["message"] = self.message
        return out


#: Receives every SessionEvent.
EventSink = Callable[[SessionEvent], None]


class EventStream:
    """The session's events, fanned out to every subscriber. A subscriber that raises is
    counted and skipped: a display bug must not stop the forwards or the other clients."""

    def __init__(self) -> None:
        self._subscribers: List[EventSink] = []
        self.failures: Dict[str, int] = {}

    def subscribe(self, sink: EventSink) -> Callable[[], None]:
        self._subscribers.append(sink)
        return functools.partial(self._unsubscribe, sink)

    def _unsubscribe(self, sink: EventSink) -> None:
        if sink in self._subscribers:
            self._subscribers.remove(sink)

    def publish(self, event: SessionEvent) -> None:
        for sink in list(self._subscribers):
            try:
                sink(event)
            except Exception as exc:
                what = "%s: %s" % (type(exc).__name__, exc)
                self.failures[what] = self.failures.get(what, 0) + 1


# ---- snapshots: what any client may read, frozen ----


@frozen_record
class StatsSnapshot:
    bytes_up: int = 0
    bytes_down: int = 0
    opened: int = 0
    active: int = 0
    closed: int = 0
    failed: int = 0
    reset: int = 0
    waited: int = 0
    replayed: int = 0
    causes: Tuple[Tuple[str, int], ...] = ()


@frozen_record
class PortSnapshot:
    """One local port of a forward."""

    key: int
    addresses: Tuple[str, ...]
    port: int
    remote_port: int
    stats: StatsSnapshot
    up_rate: int = 0
    down_rate: int = 0
    activity: Tuple[int, ...] = ()
    protocol_lines: Tuple[str, ...] = ()
    protocol_problems: Tuple[str, ...] = ()

    @property
    def local_text(self) -> str:
        if not self.addresses:
            return "–"
        host = self.addresses[0]
        return "%s:%d" % ("[%s]" % host if ":" in host else host, self.port)

    @property
    def rate(self) -> int:
        return self.activity[-1] if self.activity else 0

    def forwarding_lines(self) -> List[str]:
        """kubectl's exact lines, one per bound address."""
        lines = []
        for address in self.addresses:
            host = "[%s]" % address if ":" in address else address
            lines.append("Forwarding from %s:%d -> %d" % (host, self.port, self.remote_port))
        return lines


#: The row of a forward without ports yet (a target still trying to start).
NO_PORT = PortSnapshot(key=-1, addresses=(), port=0, remote_port=0, stats=StatsSnapshot())


@frozen_record
class ForwardSnapshot:
    """One forward: its target, state, pods, tunnels' history and ports."""

    ident: int
    label: str
    namespace: str
    state: ForwardState
    attempt: int
    reason: str
    pod: str
    engine: str
    ports: Tuple[PortSnapshot, ...]
    dead_pods: Tuple[str, ...] = ()
    troubled_pods: Tuple[str, ...] = ()
    pod_notes: Tuple[str, ...] = ()
    reconnects: Tuple[Tuple[str, int], ...] = ()
    uptime_percent: float = 0.0
    error: str = ""
    pods: Tuple[Any, ...] = ()  # PodShare per pod of a --balance forward


# ---- one target kept forwarding ----


@dataclass
class ForwardOptions:
    """How a forward runs: shared by every forward of a command."""

    listen: ListenPlan
    pod_running_timeout: float = 60.0
    inspect: bool = True
    engine: Engine = Engine.NATIVE
    balance: bool = False


class Forward(UpstreamSource):
    """Keeps one target forwarding: tunnels up, pods watched, failures counted and explained.

    An active tunnel serves new links; a standby (a second, idle tunnel to the same pod: for
    the native engine just one more SPDY connection) takes over at once if the active one
    dies, so a lost connection never refuses a client; only the links it carried end, counted
    with their cause. Pods come from the context's shared pod watch.
    """

    def __init__(
        self,
        ident: int,
        ref: ResourceRef,
        specs: Sequence[PortSpec],
        resolver: TargetResolver,
        options: ForwardOptions,
        emit: EventSink,
    ) -> None:
        import collections

        self.ident = ident
        self.ref = ref
        self.specs = list(specs)
        self.resolver = resolver
        self.access = resolver.access
        self.options = options
        self._emit = emit
        self.resolution: Optional[Resolution] = None
        self.watch: Optional[SharedWatch] = None
        self.state = ForwardState.STARTING
        self.attempt = 0
        self.reason = ""
        self.active: Optional[Tunnel] = None
        self.standby: Optional[Tunnel] = None
        self.proxies: List[ForwardProxy] = []
        self.inspections: List[Optional[ForwardInspection]] = []
        self.histories: List[ActivityHistory] = []
        self.reconnects: Dict[str, int] = {}
        self.pod_notes: List[str] = []  # restarts, waiting reasons: for the summary
        self.troubled_pods: Dict[str, None] = {}  # the pods those notes are about, in order
        self.fatal: Optional[VibeError] = None
        self.pods_seen: Dict[str, dict] = {}
        self.dead_pods: set = set()
        self.uptime = UptimeClock()
        self._needs_resolve = False
        self._ever_ready = False
        self._wake = asyncio.Event()
        self._active_ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._tasks: List[Any] = []
        self._recent_resets: Any = collections.deque(maxlen=TUNNEL_RECENT_LINKS)
        self._last_loss: Optional[Tuple[float, str, str]] = None
        self._standby_attempts = 0
        self._standby_not_before = 0.0

    def __repr__(self) -> str:
        return "<Forward #%d %s %s pod=%s>" % (
            self.ident,
            self.label,
            self.state.value,
            self.pod_name,
        )

    @property
    def label(self) -> str:
        return self.ref.text

    @property
    def namespace(self) -> str:
        return self.resolver.namespace

    @property
    def pod_name(self) -> str:
        return self.resolution.pod_name if self.resolution is not None else ""

    @property
    def engine(self) -> Engine:
        if self.options.engine is Engine.NATIVE and self.access.native_refused:
            return Engine.KUBECTL
        return self.options.engine

    def emit(self, kind: EventKind, message: str, **data: Any) -> None:
        self._emit(SessionEvent(_wall_clock(), kind, self.label, message, tuple(data.items())))

    def remote_port(self, key: int) -> int:
        assert self.resolution is not None
        return self.resolution.mappings[key].remote_port

    # -- opening: resolve the target, hold its pod watch, bind its ports -------------------------

    async def resolve(self) -> Resolution:
        """kubectl's lookups and checks (its errors, word for word), with the pod watch held
        from here on so resolving and supervising share one watch."""
        obj = await self.resolver.get_object(self.ref)
        self.watch = self.resolver.watch_for(self.ref, obj)
        self.watch.subscribe(self._pod_changed)
        self.resolution = await self.resolver.resolve(
            self.ref, self.specs, self.options.pod_running_timeout, obj=obj
        )
        return self.resolution

    async def listen(
        self, relay: RelayBuffer, on_accept: Callable[[ForwardProxy], None]
    ) -> List[PortMapping]:
        """Bind every port, with kubectl's message for each one that fails; return those."""
        assert self.resolution is not None
        failed = []
        for key, mapping in enumerate(self.resolution.mappings):
            inspect = self.options.inspect
            inspection = ForwardInspection(mapping.remote_port) if inspect else None
            proxy = ForwardProxy(
                self,
                key,
                relay,
                wait_timeout=self.options.pod_running_timeout,
                inspector_factory=inspection.new_link if inspection else None,
                on_accept=on_accept,
            )
            errors = await self._bind(proxy, mapping)
            if errors:
                failed.append(mapping)
                self.emit(
                    EventKind.LISTEN_FAILED,
                    "Unable to listen on port %d: Listeners failed to create with the "
                    "following errors: [%s]" % (mapping.local_port, " ".join(errors)),
                )
                self._explain_busy_port(mapping.local_port)
                continue
            self.proxies.append(proxy)
            self.inspections.append(inspection)
            self.histories.append(ActivityHistory())
        return failed

    async def _bind(self, proxy: ForwardProxy, mapping: PortMapping) -> List[str]:
        """Bind the mapping's port; a port the plugin chose (spec.auto) that is taken by now, or
        still to be chosen (a named remote), moves on to the next free one."""
        listen = self.options.listen
        if not mapping.spec.auto:
            return await proxy.listen(listen.addresses, mapping.local_port, listen.port_ok)
        start = mapping.local_port or auto_port_base(mapping.service_port or mapping.remote_port)
        errors: List[str] = []
        for _ in range(AUTO_PORT_ATTEMPTS):
            port = next_free_port(
                start, (), functools.partial(local_port_free, addresses=listen.addresses)
            )
            if port is None:
                break
            errors = await proxy.listen(listen.addresses, port, listen.port_ok)
            if not errors:
                if port != mapping.local_port:
                    self.emit(
                        EventKind.PORTS,
                        "%s: local port %d (chosen)" % (mapping.spec.text, port),
                        port=port,
                        remote_port=mapping.remote_port,
                    )
                return []
            start = port + 1
        return errors

    def _explain_busy_port(self, port: int) -> None:
        """kubectl says the port is in use; we say by whom, and what to use instead."""
        if not port or local_port_free(port, self.options.listen.addresses):
            return
        free = next_free_port(
            port + 1,
            (),
            functools.partial(local_port_free, addresses=self.options.listen.addresses),
        )
        instead = " (%d is free; --auto-ports takes it)" % free if free else ""
        self.emit(
            EventKind.PORTS,
            "port %d is held by %s%s" % (port, port_holder(port), instead),
            port=port,
            free=free,
        )

    # -- the proxy's side: leases and verdicts -----------------------------------------------------

    async def acquire(self, key: int, timeout: float) -> Lease:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            tunnel = self.active
            if tunnel is not None and tunnel.state is TunnelState.READY:
                return Lease(tunnel, self.remote_port(key))
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopped.is_set():
                raise NoUpstream(self._why_no_tunnel(timeout))
            if tunnel is None or not tunnel.usable:
                self._active_ready.clear()
            try:
                await asyncio.wait_for(self._active_ready.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    @property
    def is_ready(self) -> bool:
        return self._active_ready.is_set()

    async def wait_ready(self) -> None:
        await self._active_ready.wait()

    def _why_no_tunnel(self, timeout: float) -> str:
        why = self.reason or "the tunnel was not ready"
        return "no tunnel within %s: %s" % (format_go_duration(round(timeout, 1)), why)

    def link_closed(self, lease: Lease, link: Link) -> None:
        lease.tunnel.note_link_closed(link, asyncio.get_running_loop().time())

    async def verdict(
        self, lease: Lease, wait: float, exc: Optional[BaseException] = None
    ) -> Optional[Verdict]:
        tunnel = lease.tunnel
        cause = exc.cause if isinstance(exc, StreamFailure) else None
        if cause is not None and cause not in (ErrorCause.PEER_RESET, ErrorCause.OTHER):
            return self._verdict_for(cause, (lease.remote_port,))
        if exc is None and tunnel.engine is Engine.NATIVE:
            return None  # a native stream's clean end is the pod's own close
        try:
            await asyncio.wait_for(tunnel.ended.wait(), wait)
        except asyncio.TimeoutError:
            return None  # the tunnel is fine: the pod itself closed (or reset) the connection
        return self._verdict_for(tunnel.cause or ErrorCause.OTHER, (lease.remote_port,))

    @staticmethod
    def _verdict_for(cause: ErrorCause, ports: Sequence[int]) -> Verdict:
        reason = cause_summary(cause, ports)
        if cause in (ErrorCause.NOT_LISTENING, ErrorCause.FORBIDDEN):
            return Verdict(reason, retry=False, outcome=LinkOutcome.FAILED)
        return Verdict(reason, retry=True, outcome=LinkOutcome.RESET)

    def link_failed(self, link: Link, outcome: LinkOutcome, cause: str) -> None:
        """Every failed connection is one event; resets are remembered for a moment, as a pod
        deletion reported just after re-blames them."""
        lease = link.lease
        pod = lease.tunnel.pod_name if lease is not None else self.pod_name
        if outcome is LinkOutcome.RESET:
            self._recent_resets.append((_monotonic(), pod, link.forward, cause))
        self.emit(
            EventKind.CONNECTION_FAILED,
            "%s: %s" % (outcome.value, cause),
            port=link.forward.port,
            outcome=outcome.value,
            cause=cause,
            pod=pod,
        )

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until stop(): keep an active and a standby tunnel, rebuilding them as they die."""
        while not self._stopped.is_set():
            try:
                await self._step()
            except VibeError as exc:
                if self._is_fatal(exc):
                    self.fatal = exc
                    self.state = ForwardState.FAILED
                    self.reason = exc.message
                    return
                await self._retry_later(exc.message)
                continue
            await self._sleep(self._until_standby_retry())

    def _is_fatal(self, exc: VibeError) -> bool:
        """Only what can never work ends a forward: RBAC refusing the very first tunnel."""
        return not self._ever_ready and classify_error(exc.message) is ErrorCause.FORBIDDEN

    async def _step(self) -> None:
        if self._needs_resolve:
            await self._re_resolve()
        active_lost = self.active is None or not self.active.usable
        if active_lost and not self._promote_standby():
            self.active = await self._start_tunnel(wait_ready=True)
            self._became_ready()
        standby_missing = self.standby is None or not self.standby.usable
        if standby_missing and self._until_standby_retry() is None:
            self.standby = await self._start_tunnel(wait_ready=False)
            if not self.standby.usable:  # it failed at once (kubectl proxy restarting...)
                self._standby_failed(self.standby)

    def _until_standby_retry(self) -> Optional[float]:
        """Seconds until a failed standby may be tried again (None: now, or not needed)."""
        wait = self._standby_not_before - _monotonic()
        return wait if wait > 0 else None

    def _standby_failed(self, tunnel: Tunnel) -> None:
        """A standby that fails is retried with backoff, never in a tight loop: the active
        tunnel still serves, so there is no hurry, and the API server must not be hammered."""
        self._note_refusal(tunnel)
        self._standby_attempts += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self._standby_attempts - 1))
        self._standby_not_before = _monotonic() + delay

    def _promote_standby(self) -> bool:
        standby = self.standby
        if standby is None or standby.state is not TunnelState.READY:
            return False
        self.active, self.standby = standby, None
        self.emit(EventKind.RECONNECTED, "switched to the standby tunnel to pod %s" % self.pod_name)
        self._became_ready()
        return True

    def _new_tunnel(self) -> Tunnel:
        assert self.resolution is not None
        ports = [mapping.remote_port for mapping in self.resolution.mappings]
        if self.engine is Engine.NATIVE:
            return SpdyTunnel(self.access, self.pod_name, self.namespace, ports)
        return KubectlTunnel(self.access.runner, self.pod_name, self.namespace, ports)

    async def _start_tunnel(self, wait_ready: bool) -> Tunnel:
        tunnel = self._new_tunnel()
        await tunnel.start(self._tunnel_changed)
        if not wait_ready:
            return tunnel
        ready = asyncio.ensure_future(tunnel.ready.wait())
        ended = asyncio.ensure_future(tunnel.ended.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        await asyncio.wait(
            [ready, ended, stopped],
            timeout=TUNNEL_START_TIMEOUT_S,
            return_when=asyncio.FIRST_COMPLETED,
        )
        for waiter in (ready, ended, stopped):
            waiter.cancel()
        if tunnel.state is TunnelState.READY:
            return tunnel
        await tunnel.stop()
        if tunnel.cause is ErrorCause.UPGRADE_REFUSED:
            self._note_refusal(tunnel)
            return await self._start_tunnel(wait_ready=True)
        if tunnel.cause is ErrorCause.POD_GONE:
            self._mark_pod_gone(self.pod_name)
        if isinstance(tunnel, SpdyTunnel) and tunnel.refusal is not None:
            minor = await self.access.runner.client_minor()
            tunnel.error = upgrade_error_text(tunnel.refusal, minor)
        raise VibeError(
            tunnel.error
            or "the tunnel was not ready within %s" % format_go_duration(TUNNEL_START_TIMEOUT_S),
            fix=_fix_for(tunnel.cause, self.namespace),
        )

    def _note_refusal(self, tunnel: Tunnel) -> None:
        """The API server will not upgrade to SPDY here: say so once, and from now on every
        forward of this context uses kubectl's tunnels."""
        if tunnel.cause is ErrorCause.UPGRADE_REFUSED and not self.access.native_refused:
            self.access.native_refused = tunnel.error
            self.access.notice(
                "the API server refused the native tunnel (%s): using kubectl "
                "port-forward instead" % tunnel.error
            )

    def _became_ready(self) -> None:
        was_reconnecting = self.state is ForwardState.RECONNECTING
        self.state = ForwardState.READY
        self.reason = ""
        self.attempt = 0
        self._ever_ready = True
        self.uptime.up(_monotonic())
        self._active_ready.set()
        if was_reconnecting:
            self.emit(EventKind.RECONNECTED, "tunnel ready again, to pod %s" % self.pod_name)

    async def _retry_later(self, reason: str) -> None:
        self.attempt += 1
        self.state = ForwardState.RECONNECTING
        self.reason = reason
        self.uptime.down(_monotonic())
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * (2 ** (self.attempt - 1)))
        self.emit(
            EventKind.RECONNECTING,
            "attempt %d in %s: %s" % (self.attempt, format_go_duration(delay), reason),
            attempt=self.attempt,
            reason=reason,
        )
        self._wake.clear()  # only what happens from now on cuts the pause short
        await self._sleep(delay)

    async def _sleep(self, delay: Optional[float]) -> None:
        """Until something changes (a tunnel, a pod, stop()) or `delay` seconds pass. Always
        yields to the loop once: an Event already set would not, and a loop that never yields
        starves everything else (child reaping included)."""
        await asyncio.sleep(0)
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()

    # -- tunnels and pods changing under us --------------------------------------------------------

    def _tunnel_changed(self, tunnel: Tunnel) -> None:
        if self._stopped.is_set():
            return  # our own shutdown stops the tunnels: not a loss
        if tunnel is not self.active and tunnel is not self.standby:
            return  # a tunnel being started: _start_tunnel itself waits for its outcome
        if tunnel.retired:
            if tunnel is self.active:
                self.active = None
                self._active_ready.clear()
            self._wake.set()
            return
        if tunnel.state is TunnelState.READY:
            if tunnel is self.active:
                self._active_ready.set()
            if tunnel is self.standby:
                self._standby_attempts = 0
            self._wake.set()
            return
        if tunnel.usable:
            return
        if tunnel is self.standby:
            self._standby_failed(tunnel)
        if tunnel.cause is ErrorCause.POD_GONE:
            self._mark_pod_gone(tunnel.pod_name)
        if tunnel is self.active:
            self._active_lost(tunnel)
        self._wake.set()

    def _active_lost(self, tunnel: Tunnel) -> None:
        self._active_ready.clear()
        self.active = None
        cause = tunnel.cause or ErrorCause.OTHER
        summary = cause_summary(cause, tunnel.remote_ports)
        self.reconnects[summary] = self.reconnects.get(summary, 0) + 1
        self._last_loss = (_monotonic(), tunnel.pod_name, summary)
        self._cut_links_of(tunnel, summary, cause)
        detail = (": " + tunnel.error) if tunnel.error else ""
        self.emit(EventKind.TUNNEL_LOST, "%s%s" % (summary, detail), cause=cause.name.lower())
        self._tasks.append(asyncio.ensure_future(self._correlate_with_events(tunnel.pod_name)))
        standby_ready = self.standby is not None and self.standby.state is TunnelState.READY
        if not standby_ready or self._needs_resolve:
            self.state = ForwardState.RECONNECTING
            self.reason = summary
            self.uptime.down(_monotonic())

    def _cut_links_of(self, tunnel: Tunnel, reason: str, cause: ErrorCause) -> None:
        """Links the pod already answered die with their tunnel (reset, with the reason),
        except HTTP keep-alives at rest, which move to the next tunnel."""
        if tunnel.draining:
            return  # its open links finish on it; any that fail are counted as they end
        now = asyncio.get_running_loop().time()
        for link in tunnel.links_cut_by_failure(now):
            link.forward.stats.reclassify_as_reset(reason)
        tunnel.recent_ends.clear()
        for proxy in self.proxies:
            for link in list(proxy.links):
                if link.lease is None or link.lease.tunnel is not tunnel:
                    continue
                if link.down_bytes and not link.may_continue_elsewhere():
                    link.client.abort()
                    if link.upstream is not None:
                        link.upstream.abort()
                    link.finish(LinkOutcome.RESET, reason)
                elif link.down_bytes and link.upstream is not None:
                    # At rest: move it now, not when the tunnel lets go. A native stream is told
                    # why (its end alone would read as the pod's own clean close).
                    _cut_upstream(link.upstream, StreamFailure(cause, reason))

    def _retire(self, tunnel: Tunnel, cause: Optional[ErrorCause] = None) -> None:
        """Stop using a tunnel on purpose: no new links go to it, and its end is not a loss.

        With POD_GONE (and for kubectl's tunnels, any cause), the links the pod had answered
        are cut and counted, the rest replay on the next tunnel, and an active tunnel counts as
        a reconnect, exactly as if the tunnel had reported the death first. A native tunnel to
        a pod that is merely not Ready any more drains instead: its open links finish."""
        tunnel.retired = True
        drain = tunnel.engine is Engine.NATIVE and cause is not ErrorCause.POD_GONE
        if cause is not None and tunnel.cause is None:
            tunnel.cause = cause
            summary = cause_summary(cause, tunnel.remote_ports)
            if not drain:
                self._cut_links_of(tunnel, summary, cause)
            if tunnel is self.active:
                self.reconnects[summary] = self.reconnects.get(summary, 0) + 1
        if tunnel is self.active:
            self.active = None
            self._active_ready.clear()
        if tunnel is self.standby:
            self.standby = None
        tunnel.ended.set()
        if drain and isinstance(tunnel, SpdyTunnel):
            tunnel.drain()
        else:
            self._tasks.append(asyncio.ensure_future(tunnel.stop()))

    def _blame_recent_losses_on_pod_death(self, pod_name: str) -> None:
        """A deleted pod's runtime resets its live streams a moment before the watch says it is
        gone: those resets (and a tunnel lost then) were the pod's death, not the app."""
        gone = cause_summary(ErrorCause.POD_GONE, ())
        now = _monotonic()
        for when, pod, proxy, cause in self._recent_resets:
            if pod == pod_name and now - when <= POD_DEATH_BLAME_WINDOW_S and cause != gone:
                _move_count(proxy.stats.causes, "reset: " + cause, "reset: " + gone, 1)
        self._recent_resets.clear()
        loss = self._last_loss
        recent = loss is not None and now - loss[0] <= POD_DEATH_BLAME_WINDOW_S
        if recent and loss[1] == pod_name and loss[2] != gone:
            _move_count(self.reconnects, loss[2], gone, 1)
        self._last_loss = None

    async def _correlate_with_events(self, pod_name: str) -> None:
        """A tunnel died: the pod's latest Warning event often says why (OOMKilled, BackOff)."""
        try:
            events = await self.resolver.pod_events(pod_name)
        except (VibeError, ConnectionError, OSError):
            return
        warnings = [event for event in events if event.get("type") == "Warning"]
        if not warnings:
            return
        latest = warnings[-1]
        reason, message = latest.get("reason", "?"), latest.get("message", "").strip()
        self._note(pod_name, "event %s: %s" % (reason, message))

    def _note(self, pod_name: str, line: str) -> None:
        """Remember (for the summary) and show something the pod went through, once."""
        note = "pod %s: %s" % (pod_name, line)
        if note in self.pod_notes:
            return
        self.pod_notes.append(note)
        del self.pod_notes[:-POD_NOTES_KEPT]
        self.troubled_pods[pod_name] = None
        self.emit(EventKind.POD, note, pod=pod_name)

    def _mark_pod_gone(self, pod_name: str) -> None:
        if pod_name != self.pod_name or pod_name in self.dead_pods:
            return
        self._blame_recent_losses_on_pod_death(pod_name)
        self.dead_pods.add(pod_name)
        self._needs_resolve = True
        for tunnel in (self.active, self.standby):
            if tunnel is not None and tunnel.pod_name == pod_name and tunnel.usable:
                self._retire(tunnel, ErrorCause.POD_GONE)
        self._wake.set()

    async def _re_resolve(self) -> None:
        assert self.resolution is not None
        previous = self.pod_name
        self.state = ForwardState.RECONNECTING
        self.uptime.down(_monotonic())
        self.reason = "pod %s is gone or not Ready: waiting for a Ready pod" % previous
        resolution = await self.resolver.resolve(
            self.ref,
            self.specs,
            self.options.pod_running_timeout,
            exclude=frozenset(self.dead_pods),
            require_ready=self.ref.kind is not ResourceKind.POD,
            obj=self.resolution.obj,
        )
        self.resolution = resolution
        self._needs_resolve = False
        for tunnel in (self.active, self.standby):
            if tunnel is not None and tunnel.pod_name != resolution.pod_name:
                self._retire(tunnel)
        if resolution.pod_name == previous:
            self.emit(EventKind.POD, "pod %s is Ready again" % previous, pod=previous)
            return
        message = "now forwarding to pod %s (was %s)" % (resolution.pod_name, previous)
        self.emit(EventKind.POD, message, pod=resolution.pod_name, previous=previous)

    def _pod_changed(self, kind: str, pod: dict) -> None:
        """A change the shared pod watch saw: deaths, replacements, restarts."""
        name = pod.get("metadata", {}).get("name", "")
        before = self.pods_seen.get(name)
        if kind == "DELETED":
            self.pods_seen.pop(name, None)
        else:
            self.pods_seen[name] = pod
        if name == self.pod_name and self.resolution is not None:
            self._note_pod_health(before, pod, deleted=kind == "DELETED")
            if kind == "DELETED" or pod.get("metadata", {}).get("deletionTimestamp"):
                self.emit(EventKind.POD, "pod %s is terminating" % name, pod=name)
                self._mark_pod_gone(name)
            elif self._should_leave_unready(before, pod):
                self._leave_unready_pod(name)
        if self.state is not ForwardState.READY:
            self._wake.set()

    def _should_leave_unready(self, before: Optional[dict], pod: dict) -> bool:
        """A Service or workload forward moves off a pod that just stopped being Ready (another
        Ready pod is preferred by the resolver); a bare pod target has nowhere else to go."""
        if self.ref.kind is ResourceKind.POD or is_pod_ready(pod):
            return False
        return before is None or is_pod_ready(before)

    def _leave_unready_pod(self, pod_name: str) -> None:
        self.emit(EventKind.POD, "pod %s is not Ready: looking for a Ready pod" % pod_name)
        self._needs_resolve = True
        for tunnel in (self.active, self.standby):
            if tunnel is not None and tunnel.usable:
                self._retire(tunnel, ErrorCause.POD_NOT_READY)
        self._wake.set()

    def _note_pod_health(self, before: Optional[dict], pod: dict, deleted: bool) -> None:
        """New trouble on the forwarded pod (first sight included: past restarts matter too)."""
        if deleted:
            return
        old = describe_pod_health(before) if before is not None else []
        for line in describe_pod_health(pod):
            if line not in old:
                self._note(pod["metadata"]["name"], line)

    # -- what clients may read ---------------------------------------------------------------------

    def sample(self) -> None:
        """Once a second (the session's tick): counters into rates and activity history."""
        for proxy, history in zip(self.proxies, self.histories):
            history.sample(proxy.stats)

    def snapshot(self, now: float, detail: bool = True) -> ForwardSnapshot:
        """A frozen copy for displays; detail=False skips the protocol summaries (costly)."""
        ports = tuple(
            _port_snapshot(proxy, history, inspection, self.remote_port(proxy.key), detail)
            for proxy, history, inspection in zip(self.proxies, self.histories, self.inspections)
        )
        started = self.uptime.started
        return ForwardSnapshot(
            ident=self.ident,
            label=self.label,
            namespace=self.namespace,
            state=self.state,
            attempt=self.attempt,
            reason=self.reason,
            pod=self.pod_name,
            engine=self.active.engine.value if self.active is not None else self.engine.value,
            ports=ports,
            dead_pods=tuple(sorted(self.dead_pods)),
            troubled_pods=tuple(self.troubled_pods),
            pod_notes=tuple(self.pod_notes),
            reconnects=tuple(self.reconnects.items()),
            uptime_percent=self.uptime.percent(now, started) if started is not None else 0.0,
            error=self.fatal.message if self.fatal is not None else "",
        )

    # -- stopping ----------------------------------------------------------------------------------

    async def close(self, grace: float) -> None:
        """Stop accepting, let links finish for `grace` seconds, then stop the tunnels."""
        await asyncio.gather(*(proxy.close(grace) for proxy in self.proxies))
        await self.stop()

    async def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self.state is not ForwardState.FAILED:
            self.state = ForwardState.STOPPED
        self.uptime.down(_monotonic())
        for task in self._tasks:
            task.cancel()
        if self.watch is not None:
            self.watch.unsubscribe(self._pod_changed)
            self.access.release_watch(self.watch)
            self.watch = None
        tunnels = [tunnel for tunnel in (self.active, self.standby) if tunnel is not None]
        await asyncio.gather(*(tunnel.stop() for tunnel in tunnels), return_exceptions=True)


# ---- --balance: one tunnel per Ready pod, new connections to the least busy ----


@frozen_record
class PodShare:
    """One pod of a balanced forward: its tunnel's state and what it carried."""

    pod: str
    ready: bool
    active: int
    opened: int
    bytes_up: int
    bytes_down: int


class PodTally:
    """What one pod of a balanced forward carried (live links are added when read)."""

    __slots__ = ("bytes_down", "bytes_up", "opened")

    def __init__(self) -> None:
        self.opened = 0
        self.bytes_up = 0
        self.bytes_down = 0


class BalancedForward(Forward):
    """`--balance`: a tunnel to every Ready pod of the Service or workload; each new connection
    goes to the pod with the fewest open ones (ties: the fewest so far). Pods join when they
    become Ready and leave when they stop being Ready (their open connections finish)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool: Dict[str, Tunnel] = {}
        self.pod_mappings: Dict[str, Tuple[PortMapping, ...]] = {}
        self.tallies: Dict[str, PodTally] = {}
        self._retry_at: Dict[str, float] = {}
        self._failures: Dict[str, int] = {}
        self._last_error: Optional[Tunnel] = None

    # -- the proxy's side ------------------------------------------------------------------------

    async def acquire(self, key: int, timeout: float) -> Lease:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            tunnel = self._least_busy()
            if tunnel is not None:
                self._tally(tunnel.pod_name).opened += 1
                return Lease(tunnel, self.pod_mappings[tunnel.pod_name][key].remote_port)
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopped.is_set():
                raise NoUpstream(self._why_no_tunnel(timeout))
            self._active_ready.clear()
            try:
                await asyncio.wait_for(self._active_ready.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    def _least_busy(self) -> Optional[Tunnel]:
        ready = [t for t in self.pool.values() if t.state is TunnelState.READY and not t.draining]
        if not ready:
            return None
        active = self._active_links()
        return min(ready, key=lambda t: (active.get(t.pod_name, 0),
                                         self._tally(t.pod_name).opened, t.pod_name))  # fmt: skip

    def _active_links(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for proxy in self.proxies:
            for link in proxy.links:
                if link.lease is not None:
                    pod = link.lease.tunnel.pod_name
                    counts[pod] = counts.get(pod, 0) + 1
        return counts

    def _tally(self, pod: str) -> PodTally:
        tally = self.tallies.get(pod)
        if tally is None:
            tally = self.tallies[pod] = PodTally()
        return tally

    def link_ended(self, link: Link) -> None:
        assert link.lease is not None
        tally = self._tally(link.lease.tunnel.pod_name)
        tally.bytes_up += link.up_bytes
        tally.bytes_down += link.down_bytes

    # -- keeping the pool in step with the Ready pods -------------------------------------------

    async def _step(self) -> None:
        assert self.watch is not None and self.resolution is not None
        ready = {pod_name(pod): pod for pod in rank_pods(list(self.watch.objects.values()))
                 if is_pod_usable(pod, require_ready=True)}  # fmt: skip
        for name in list(self.pool):
            if name not in ready:
                self._leave(name)
        for name, pod in ready.items():
            if name not in self.pool and _monotonic() >= self._retry_at.get(name, 0.0):
                await self._join(name, pod)
        self._settle_state()

    async def _join(self, name: str, pod: Dict[str, Any]) -> None:
        assert self.resolution is not None
        try:
            mappings = resolve_mappings(self.ref, self.resolution.obj, pod, self.specs)
        except VibeError as exc:  # a pod without the named port: not one to balance onto
            self._note(name, "left out of the balance: %s" % exc.message)
            self._retry_at[name] = float("inf")
            return
        self.pod_mappings[name] = tuple(mappings)
        ports = [mapping.remote_port for mapping in mappings]
        if self.engine is Engine.NATIVE:
            tunnel: Tunnel = SpdyTunnel(self.access, name, self.namespace, ports)
        else:
            tunnel = KubectlTunnel(self.access.runner, name, self.namespace, ports)
        self.pool[name] = tunnel
        await tunnel.start(self._pool_tunnel_changed)
        self.emit(EventKind.POD, "pod %s joins the balance" % name, pod=name)

    def _leave(self, name: str) -> None:
        tunnel = self.pool.pop(name)
        tunnel.retired = True
        if isinstance(tunnel, SpdyTunnel):
            tunnel.drain()  # its open connections finish on it
        else:
            self._tasks.append(asyncio.ensure_future(tunnel.stop()))
        self.emit(EventKind.POD, "pod %s leaves the balance" % name, pod=name)

    def _settle_state(self) -> None:
        if self._least_busy() is not None:
            if self.state is not ForwardState.READY:
                self._became_ready()
            return
        self._active_ready.clear()
        if self._ever_ready and self.state is ForwardState.READY:
            self.state = ForwardState.RECONNECTING
            self.uptime.down(_monotonic())
        self.reason = "no Ready pod in the balance yet"
        failed = self._last_error
        if not self._ever_ready and failed is not None and failed.cause is ErrorCause.FORBIDDEN:
            raise VibeError(failed.error, fix=_fix_for(failed.cause, self.namespace))

    def _pool_tunnel_changed(self, tunnel: Tunnel) -> None:
        if self._stopped.is_set() or tunnel.retired:
            return
        if not tunnel.usable and self.pool.get(tunnel.pod_name) is tunnel:
            del self.pool[tunnel.pod_name]
            failures = self._failures[tunnel.pod_name] = self._failures.get(tunnel.pod_name, 0) + 1
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1))
            self._retry_at[tunnel.pod_name] = _monotonic() + delay
            self._last_error = tunnel
            summary = cause_summary(tunnel.cause or ErrorCause.OTHER, tunnel.remote_ports)
            self.reconnects[summary] = self.reconnects.get(summary, 0) + 1
            self.emit(EventKind.TUNNEL_LOST, "pod %s: %s" % (tunnel.pod_name, summary),
                      pod=tunnel.pod_name)  # fmt: skip
        elif tunnel.state is TunnelState.READY:
            self._failures.pop(tunnel.pod_name, None)
        self._wake.set()

    def _pod_changed(self, kind: str, pod: dict) -> None:
        name = (pod.get("metadata") or {}).get("name", "")
        before = self.pods_seen.get(name)
        if kind == "DELETED":
            self.pods_seen.pop(name, None)
        else:
            self.pods_seen[name] = pod
            if name in self.pool:
                self._note_pod_health(before, pod, deleted=False)
        self._wake.set()

    async def _sleep(self, delay: Optional[float]) -> None:
        waits = [at - _monotonic() for at in self._retry_at.values() if at != float("inf")]
        pending = [wait for wait in waits if wait > 0]
        await super()._sleep(min(pending) if pending else delay)

    # -- what clients may read, and stopping -------------------------------------------------------

    def snapshot(self, now: float, detail: bool = True) -> ForwardSnapshot:
        base = super().snapshot(now, detail)
        active = self._active_links()
        live_up, live_down = self._live_bytes()
        shares = []
        for name in sorted(set(self.tallies) | set(self.pool)):
            tally = self._tally(name)
            tunnel = self.pool.get(name)
            shares.append(PodShare(name, tunnel is not None and tunnel.state is TunnelState.READY,
                                   active.get(name, 0), tally.opened,
                                   tally.bytes_up + live_up.get(name, 0),
                                   tally.bytes_down + live_down.get(name, 0)))  # fmt: skip
        pods = ", ".join(share.pod for share in shares if share.ready)
        return _replace_record(base, pod=pods or base.pod, pods=tuple(shares))

    def _live_bytes(self) -> Tuple[Dict[str, int], Dict[str, int]]:
        up: Dict[str, int] = {}
        down: Dict[str, int] = {}
        for proxy in self.proxies:
            for link in proxy.links:
                if link.lease is not None:
                    pod = link.lease.tunnel.pod_name
                    up[pod] = up.get(pod, 0) + link.up_bytes
                    down[pod] = down.get(pod, 0) + link.down_bytes
        return up, down

    async def stop(self) -> None:
        tunnels = list(self.pool.values())
        self.pool = {}
        await super().stop()
        await asyncio.gather(*(tunnel.stop() for tunnel in tunnels), return_exceptions=True)


def _replace_record(record: Any, **changes: Any) -> Any:
    values = {name: getattr(record, name) for name in record._record_fields}
    values.update(changes)
    return type(record)(**values)


def _port_snapshot(
    proxy: ForwardProxy,
    history: ActivityHistory,
    inspection: Optional[ForwardInspection],
    remote_port: int,
    detail: bool,
) -> PortSnapshot:
    with_protocols = detail and inspection is not None
    return PortSnapshot(
        key=proxy.key,
        addresses=tuple(proxy.addresses),
        port=proxy.port,
        remote_port=remote_port,
        stats=proxy.stats.snapshot(),
        up_rate=history.up_rate,
        down_rate=history.down_rate,
        activity=tuple(history.samples),
        protocol_lines=tuple(inspection.summary_lines()) if with_protocols else (),
        protocol_problems=tuple(inspection.problems()) if with_protocols else (),
    )


def _cut_upstream(upstream: Any, failure: StreamFailure) -> None:
    if isinstance(upstream, TunnelStream):
        upstream.failed(failure, reset=True)
    else:
        upstream.abort()  # a kubectl tunnel's TCP connection: the verdict waits for its end


def _fix_for(cause: Optional[ErrorCause], namespace: str) -> str:
    """The hint under a fatal error: what to run to see why."""
    if cause is ErrorCause.FORBIDDEN:
        return "Fix: check your rights: kubectl auth can-i create pods/portforward -n %s" % (
            namespace
        )
    return ""


def _move_count(counts: Dict[str, int], old: str, new: str, limit: Optional[int] = None) -> None:
    moved = counts.get(old, 0) if limit is None else min(limit, counts.get(old, 0))
    if moved:
        counts[old] -= moved
        if not counts[old]:
            del counts[old]
        counts[new] = counts.get(new, 0) + moved


class UptimeClock:
    """Seconds with a ready tunnel, out of seconds since the forward started."""

    def __init__(self) -> None:
        self.started: Optional[float] = None
        self.ready_total = 0.0
        self._up_since: Optional[float] = None

    def up(self, now: float) -> None:
        if self.started is None:
            self.started = now
        if self._up_since is None:
            self._up_since = now

    def down(self, now: float) -> None:
        if self._up_since is not None:
            self.ready_total += now - self._up_since
            self._up_since = None

    def percent(self, now: float, since: float) -> float:
        total = now - since
        ready = self.ready_total + (now - self._up_since if self._up_since is not None else 0.0)
        return 100.0 * ready / total if total > 0 else 0.0


def cause_summary(cause: ErrorCause, remote_ports: Sequence[int]) -> str:
    """A short reason for tables and counters: 'pod gone', 'nothing listening on :8080'."""
    if cause is ErrorCause.NOT_LISTENING:
        return "nothing listening on pod port %s" % ",".join(str(p) for p in remote_ports)
    return describe_cause(cause)[0]


def _wall_clock() -> float:
    return time.time()


def _monotonic() -> float:
    return time.monotonic()


class ActivityHistory:
    """Bytes per second over the last minute, sampled from a port's counters once a second."""

    __slots__ = ("_last_down", "_last_up", "down_rate", "samples", "up_rate")

    def __init__(self, seconds: int = ACTIVITY_WINDOW_S) -> None:
        import collections

        self.samples: Any = collections.deque([0] * seconds, maxlen=seconds)
        self.up_rate = 0
        self.down_rate = 0
        self._last_up = 0
        self._last_down = 0

    def sample(self, stats: ForwardStats) -> None:
        self.up_rate = stats.bytes_up - self._last_up
        self.down_rate = stats.bytes_down - self._last_down
        self._last_up, self._last_down = stats.bytes_up, stats.bytes_down
        self.samples.append(max(0, self.up_rate + self.down_rate))

    @property
    def rate(self) -> int:
        return self.samples[-1]


# ---- the session: N forwards, their cluster access, one event stream ----


class PendingTarget:
    """A target that could not start yet (not found, no pod): retried, shown with why."""

    def __init__(self, ident: int, target: TargetArgs, reason: str) -> None:
        self.ident = ident
        self.target = target
        self.reason = reason
        self.attempt = 0

    def snapshot(self, namespace: str) -> ForwardSnapshot:
        return ForwardSnapshot(ident=self.ident, label=self.target.ref.text,
                               namespace=self.target.namespace or namespace,
                               state=ForwardState.RECONNECTING, attempt=self.attempt,
                               reason="not started: " + self.reason, pod="", engine="",
                               ports=())  # fmt: skip


class Session:
    """Holds the forwards of one command (or, later, of a background session): the cluster
    access they share, the relay buffer, the event stream, and the once-a-second sampling."""

    def __init__(self, runner: KubectlRunner, options: ForwardOptions, namespace: str) -> None:
        self.runner = runner
        self.options = options
        self.namespace = namespace
        self.events = EventStream()
        self.accesses: Dict[str, ClusterAccess] = {"": ClusterAccess(runner, self._access_notice)}
        self._namespaces: Dict[str, str] = {}  # context → its default namespace
        #: The name of the command's own context, once something needed it (recall, groups).
        self.context_name = ""
        self.forwards: Dict[int, Forward] = {}
        self.pending: Dict[int, PendingTarget] = {}  # could not start yet: retried
        self.relay = RelayBuffer(RELAY_BUFFER_BYTES)
        self.started = _monotonic()
        self.internal_errors: Dict[str, int] = {}
        self._next_ident = 1
        self._tasks: Dict[int, Any] = {}
        self._ticker: Any = None
        self._any_change = asyncio.Event()

    def _access_notice(self, message: str, context: str = "") -> None:
        label = "kubectl proxy" + (" (%s)" % context if context else "")
        self.events.publish(SessionEvent(_wall_clock(), EventKind.CLUSTER, label, message))

    @property
    def access(self) -> ClusterAccess:
        """The cluster access of the command's own context."""
        return self.accesses[""]

    def same_context(self, context: str) -> str:
        """ "" for the command's own context, however it is named."""
        return "" if context == self.context_name else context

    def access_for(self, context: str) -> ClusterAccess:
        """One cluster access (one kubectl proxy) per context in use, started on first use."""
        context = self.same_context(context)
        access = self.accesses.get(context)
        if access is None:
            notice = functools.partial(self._access_notice, context=context)
            access = self.accesses[context] = ClusterAccess(self.runner.with_context(context),
                                                            notice)  # fmt: skip
            access.start()
        return access

    def start(self) -> None:
        """Start kubectl proxy now (it loads the kubeconfig while targets are parsed and the
        namespace is read) and the once-a-second sampling."""
        self.access.start()
        self._ticker = asyncio.ensure_future(self._tick())

    def resolver(self, namespace: str, context: str = "") -> TargetResolver:
        context = self.same_context(context)
        access = self.access_for(context)
        default = self._namespaces.get(context, self.namespace)
        return TargetResolver(access, access.runner, namespace or default)

    async def default_namespace(self, context: str) -> str:
        """The namespace a context's targets use when they name none (its kubeconfig's)."""
        context = self.same_context(context)
        if not context:
            return self.namespace
        if context not in self._namespaces:
            resolver = TargetResolver(self.access_for(context), self.access_for(context).runner, "")
            self._namespaces[context] = await resolver.namespace_default()
        return self._namespaces[context]

    async def add_forward(
        self, ref: ResourceRef, specs: Sequence[PortSpec], namespace: str = "", context: str = ""
    ) -> Forward:
        """Resolve, bind and start supervising one target; kubectl's error if it cannot start
        (nothing of it is left behind then). A target of another context is labelled with it."""
        context = self.same_context(context)
        if context:
            ref = ResourceRef(ref.kind, ref.name, "%s:%s" % (context, ref.text), ref.type_text)
        kind = (
            BalancedForward
            if self.options.balance and ref.kind is not ResourceKind.POD
            else Forward
        )
        forward = kind(
            self._next_ident,
            ref,
            specs,
            self.resolver(namespace, context),
            self.options,
            self.events.publish,
        )
        self._next_ident += 1
        try:
            await forward.resolve()
            failed = await forward.listen(self.relay, self._accepted)
        except BaseException:
            await forward.stop()
            raise
        if not forward.proxies:
            await forward.stop()
            pairs = " ".join("{%d %d}" % (m.local_port, m.remote_port) for m in failed)
            raise VibeError("unable to listen on any of the requested ports: [%s]" % pairs)
        self.forwards[forward.ident] = forward
        self._tasks[forward.ident] = asyncio.ensure_future(self._supervise(forward))
        return forward

    async def _supervise(self, forward: Forward) -> None:
        announce = asyncio.ensure_future(self._announce_when_ready(forward))
        try:
            await forward.run()
        finally:
            announce.cancel()
            self._any_change.set()
        if forward.fatal is not None and not self.all_failed:
            # Others go on: this one's end is an event. (If none is left, the command ends
            # with this error as its one line, exactly as kubectl would.)
            forward.emit(EventKind.ERROR, forward.fatal.message)

    async def _announce_when_ready(self, forward: Forward) -> None:
        """kubectl's `Forwarding from` lines once the forward's first tunnel is ready: scripts
        wait for them before they connect."""
        await forward.wait_ready()
        for port in forward.snapshot(_monotonic(), detail=False).ports:
            for line in port.forwarding_lines():
                forward.emit(
                    EventKind.FORWARDING, line, port=port.port, remote_port=port.remote_port
                )

    def _accepted(self, proxy: ForwardProxy) -> None:
        source = proxy.source
        if isinstance(source, Forward):
            source.emit(EventKind.CONNECTION, "connection", port=proxy.port)

    def retry_later(self, target: TargetArgs, error: BaseException) -> None:
        """A target that could not start yet is tried again with backoff, shown meanwhile as
        a row with its reason; the others are not disturbed."""
        ident = self._next_ident
        self._next_ident += 1
        self.pending[ident] = PendingTarget(ident, target, _error_text(error))
        self._tasks[ident] = asyncio.ensure_future(self._retry(ident))

    async def _retry(self, ident: int) -> None:
        pending = self.pending[ident]
        target = pending.target
        while True:
            pending.attempt += 1
            delay = min(PENDING_RETRY_MAX_S, BACKOFF_FIRST_S * 4 * 2 ** (pending.attempt - 1))
            await asyncio.sleep(delay)
            try:
                await self.add_forward(target.ref, target.ports, target.namespace, target.context)
            except VibeError as exc:
                pending.reason = exc.message
                continue
            except (ConnectionError, OSError) as exc:
                pending.reason = str(exc)
                continue
            del self.pending[ident]
            message = "started, after %d attempts" % (pending.attempt + 1)
            self.events.publish(
                SessionEvent(_wall_clock(), EventKind.RECONNECTED, target.ref.text, message)
            )
            return

    async def remove_forward(self, ident: int, grace: float = 0.0) -> None:
        forward = self.forwards.pop(ident)
        await forward.close(grace)
        task = self._tasks.pop(ident, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        forward.emit(EventKind.STOPPED, "forward removed")

    @property
    def all_failed(self) -> bool:
        """Every forward ended for good (nothing left to serve)."""
        return bool(self.forwards) and all(
            forward.state is ForwardState.FAILED for forward in self.forwards.values()
        )

    async def wait_all_failed(self) -> None:
        while not self.all_failed:
            self._any_change.clear()
            await self._any_change.wait()

    def snapshot(self, detail: bool = True) -> List[ForwardSnapshot]:
        now = _monotonic()
        snapshots = [forward.snapshot(now, detail) for forward in self.forwards.values()]
        snapshots.extend(pending.snapshot(self.namespace) for pending in self.pending.values())
        return snapshots

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for forward in self.forwards.values():
                forward.sample()

    async def close(self, grace: float) -> None:
        """Every forward closes (links get `grace` seconds), then the cluster access."""
        await asyncio.gather(*(forward.close(grace) for forward in self.forwards.values()))
        tasks = [*self._tasks.values(), self._ticker]
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(task for task in tasks if task is not None), return_exceptions=True)
        for access in self.accesses.values():
            await access.close()


# ---- remembered forwards: the store in the state directory, and the project file (I/O) ----


def state_directory() -> str:
    """$XDG_STATE_HOME/kubectl-vibe, else ~/.local/state/kubectl-vibe."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "kubectl-vibe")


class StoreRefused(Exception):
    """The store cannot be used now (a newer format, an unreadable file): its line says why."""


class ForwardStore:
    """The remembered forward sets: forwards.json (0600) in a 0700 state directory, changed
    under an fcntl lock and replaced atomically (temporary file, fsync, rename), so any number
    of sessions starting and stopping at once never lose or corrupt an entry. A corrupt file is
    kept aside, never overwritten silently; the command runs on without it."""

    VERSION = 1
    FILE = "forwards.json"

    def __init__(self, directory: Optional[str] = None) -> None:
        self.directory = directory or state_directory()
        self.path = os.path.join(self.directory, self.FILE)
        self.warnings: List[str] = []

    def load(self) -> List[StoredSet]:
        """Every entry; an unusable store is a warning and an empty list."""
        try:
            with self._locked():
                return self._read()
        except (StoreRefused, OSError) as exc:
            self.warnings.append(
                str(exc)
                if isinstance(exc, StoreRefused)
                else "cannot read %s: %s" % (self.path, exc.strerror or exc)
            )
            return []

    def change(self, edit: Callable[[List[StoredSet]], List[StoredSet]]) -> bool:
        """Read, edit, write, all under the lock; False (with a warning) if it cannot be done."""
        try:
            with self._locked():
                self._write(edit(self._read()))
            return True
        except (StoreRefused, OSError) as exc:
            why = str(exc) if isinstance(exc, StoreRefused) else exc.strerror or str(exc)
            self.warnings.append("cannot remember forwards in %s: %s" % (self.directory, why))
            return False

    def record(
        self, forward_set: ForwardSet, name: str, resolved: Sequence[str], now: float
    ) -> bool:
        return self.change(
            functools.partial(
                _recorded, forward_set=forward_set, name=name, resolved=tuple(resolved), now=now
            )
        )

    def forget(self, key: str) -> bool:
        return self.change(lambda entries: [e for e in entries if e.forward_set.key != key])

    @contextlib.contextmanager
    def _locked(self) -> Any:
        import fcntl

        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(
            os.path.join(self.directory, self.FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> List[StoredSet]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return []
        try:
            document = json.loads(text)
            version = int(document.get("version", 0))
        except (ValueError, AttributeError, TypeError):
            self._keep_aside("not valid JSON")
            return []
        if version > self.VERSION:
            raise StoreRefused(
                "%s was written by a newer kubectl-vibe (store version %d; this "
                "one reads %d): left as it is" % (self.path, version, self.VERSION)
            )
        try:
            return [_stored_from_json(item) for item in document.get("entries") or []]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._keep_aside("an entry is malformed (%s)" % exc)
            return []

    def _keep_aside(self, why: str) -> None:
        aside = "%s.corrupt-%s" % (self.path, time.strftime("%Y%m%d-%H%M%S"))
        os.replace(self.path, aside)
        self.warnings.append("%s is unreadable (%s): kept aside as %s" % (self.path, why, aside))

    def _write(self, entries: List[StoredSet]) -> None:
        import tempfile

        document = {"version": self.VERSION, "entries": [_stored_to_json(e) for e in entries]}
        fd, temporary = tempfile.mkstemp(prefix=".forwards-", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive a crash
        finally:
            os.close(directory)


#: Entries kept; beyond this the least frecent ones go.
STORE_MAX_ENTRIES = 200


def _recorded(
    entries: List[StoredSet],
    forward_set: ForwardSet,
    name: str,
    resolved: Tuple[str, ...],
    now: float,
) -> List[StoredSet]:
    """One more use of `forward_set` (a new entry or the same one again); a name given now
    moves to it from any other entry."""
    key = forward_set.key
    old = next((entry for entry in entries if entry.forward_set.key == key), None)
    kept_name = name or (old.name if old is not None else "")
    updated = StoredSet(
        forward_set,
        kept_name,
        (old.uses if old else 0) + 1,
        old.first_use if old else now,
        now,
        resolved,
    )
    others = [_unnamed(e, name) for e in entries if e.forward_set.key != key]
    ranked = rank_stored([updated, *others], now)
    return ranked[:STORE_MAX_ENTRIES]


def _unnamed(entry: StoredSet, name: str) -> StoredSet:
    if not name or entry.name != name:
        return entry
    return _replace_record(entry, name="")


def _stored_to_json(entry: StoredSet) -> Dict[str, Any]:
    forward_set = entry.forward_set
    return {
        "name": entry.name,
        "context": forward_set.context,
        "namespace": forward_set.namespace,
        "targets": [[text, list(ports)] for text, ports in forward_set.targets],
        "discoveries": [
            dict(zip(d._record_fields, _record_values(d))) for d in forward_set.discoveries
        ],
        "flags": dict(forward_set.flags),
        "uses": entry.uses,
        "first_use": entry.first_use,
        "last_use": entry.last_use,
        "resolved": list(entry.resolved),
    }


def _stored_from_json(item: Dict[str, Any]) -> StoredSet:
    forward_set = ForwardSet(
        tuple((str(text), tuple(str(p) for p in ports)) for text, ports in item["targets"]),
        tuple(DiscoverySpec(**spec) for spec in item.get("discoveries") or []),
        str(item.get("context") or ""),
        str(item.get("namespace") or ""),
        tuple(sorted((item.get("flags") or {}).items())),
    )
    return StoredSet(
        forward_set,
        str(item.get("name") or ""),
        int(item["uses"]),
        float(item["first_use"]),
        float(item["last_use"]),
        tuple(str(line) for line in item.get("resolved") or []),
    )


def find_project_file(start: str) -> Optional[str]:
    """.kubectl-vibe.yaml in `start` or its nearest parent that has one."""
    directory = os.path.abspath(start)
    while True:
        candidate = os.path.join(directory, PROJECT_FILE_NAME)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def load_project(path: str) -> Dict[str, ForwardSet]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise VibeError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    return parse_project(text, path)


@frozen_record
class Recalled:
    """A command line with its @references replaced: the remaining flags and the sets."""

    flags: ParsedFlags
    sets: Tuple[ForwardSet, ...]
    #: Keys of the sets that come from the store: their local ports move if taken today.
    remembered: Tuple[str, ...] = ()


class ForwardLibrary:
    """What `@NAME` and `@N` can mean: the project file's groups (they win over remembered
    names), then the remembered sets of the store, ranked as --recent lists them."""

    def __init__(self, flags: ParsedFlags) -> None:
        self.store = ForwardStore()
        self.project_path = flags.get("file") or find_project_file(os.getcwd())
        self._groups: Optional[Dict[str, ForwardSet]] = None
        self._ranked: Optional[List[StoredSet]] = None

    @property
    def groups(self) -> Dict[str, ForwardSet]:
        if self._groups is None:
            self._groups = load_project(self.project_path) if self.project_path else {}
        return self._groups

    @property
    def ranked(self) -> List[StoredSet]:
        if self._ranked is None:
            self._ranked = rank_stored(self.store.load(), _wall_clock())
        return self._ranked

    def recall(self, flags: ParsedFlags) -> Recalled:
        """Replace each @reference by its set; a remembered set's flags apply unless the
        command line gives them. An unknown reference is an error naming what exists."""
        sets, words, remembered = [], [], []
        for word in flags.positionals:
            if word.startswith("@"):
                forward_set, stored = self.lookup(word)
                sets.append(forward_set)
                if stored:
                    remembered.append(forward_set.key)
            else:
                words.append(word)
        if not sets:
            return Recalled(flags, ())
        values = dict(flags.values)
        for name, value in sets[0].flags:
            if name not in flags.explicit:
                values[name] = value
        recalled = ParsedFlags(
            values, words, list(flags.globals_argv), set(flags.explicit), list(flags.ordered)
        )
        return Recalled(recalled, tuple(sets), tuple(remembered))

    def lookup(self, reference: str) -> Tuple[ForwardSet, bool]:
        """The set a reference names, and whether it comes from the store."""
        label = reference[1:]
        if label in self.groups:
            return self.groups[label], False
        entry = pick_stored(reference, self.ranked)
        if entry is not None:
            return entry.forward_set, True
        known = ["@" + name for name in self.groups] + ["@" + e.name for e in self.ranked if e.name]
        raise VibeError(
            "%s is neither a group of the project file nor a remembered set" % reference,
            fix="Fix: kubectl vibe pf --recent lists them%s"
            % (" (named: %s)" % ", ".join(known) if known else ""),
        )


def remembered_flags(flags: ParsedFlags) -> Tuple[Tuple[str, Any], ...]:
    """The flags a set is remembered with: the ones given explicitly."""
    return tuple((name, flags.values[name]) for name in REMEMBERED_FLAGS if name in flags.explicit)


async def run_library_command(flags: ParsedFlags, prog: str) -> Optional[int]:
    """--recent, --groups and --forget: the library's own commands (None: not one of them)."""
    if not (flags.get("recent") or flags.get("groups") or flags.get("forget")):
        return None
    library = ForwardLibrary(flags)
    if flags.get("groups"):
        return _print_groups(library)
    if flags.get("forget"):
        return _forget(library, flags.get("forget"))
    return _print_recent(library, flags.get("output") or "")


def _print_recent(library: ForwardLibrary, output: str) -> int:
    ranked = library.ranked
    for warning in library.store.warnings:
        sys.stderr.write("warning: %s\n" % warning)
    if output in ("json", "yaml"):
        records = [
            dict(_stored_to_json(entry), number=index, score=frecency(entry, _wall_clock()))
            for index, entry in enumerate(ranked, 1)
        ]
        if output == "json":
            _write_lines(sys.stdout, [json.dumps(records, indent=2, sort_keys=True)])
        else:
            import yaml

            sys.stdout.write(yaml.safe_dump(records, sort_keys=True))
        return 0
    if output:
        raise VibeError(
            'unable to match a printer suitable for the output format "%s", allowed '
            "formats are: json,yaml" % output
        )
    if not ranked:
        sys.stdout.write("no remembered forwards yet (every set that becomes ready is kept)\n")
        return 0
    _write_lines(sys.stdout, recent_lines(ranked, _wall_clock(), list(library.groups)))
    return 0


def _print_groups(library: ForwardLibrary) -> int:
    if not library.project_path:
        raise VibeError(
            "no %s here or in a parent directory" % PROJECT_FILE_NAME,
            fix="Fix: write one (see README: project file), or give --file PATH",
        )
    lines = ["%s:" % library.project_path]
    for name, group in library.groups.items():
        where = "/".join(
            part for part in (group.context or "(current context)", group.namespace) if part
        )
        lines.append("  @%-12s %-28s %s" % (name, where, group.describe()))
    _write_lines(sys.stdout, lines)
    return 0


def _forget(library: ForwardLibrary, reference: str) -> int:
    if not reference.startswith("@"):
        raise UsageError("--forget takes @NAME or @N (see --recent)", "port-forward")
    entry = pick_stored(reference, library.ranked)
    if entry is None:
        raise VibeError(
            "%s is not a remembered set" % reference, fix="Fix: kubectl vibe pf --recent lists them"
        )
    library.store.forget(entry.forward_set.key)
    for warning in library.store.warnings:
        sys.stderr.write("warning: %s\n" % warning)
    _write_lines(sys.stdout, ["forgot %s: %s" % (reference, entry.forward_set.describe())])
    return 0


# ---- displays: clients of the event stream and of snapshots ----


class OutputMode(enum.Enum):
    LIVE = "live"  # a terminal: the live view
    PLAIN = "plain"  # piped or --no-live: kubectl's own lines, plus marked event lines
    JSON = "json"  # -o json: one JSON object per event


def choose_output_mode(output: str, live: Optional[bool], stdout_is_tty: bool) -> OutputMode:
    if output == "json":
        return OutputMode.JSON
    if live is False or not stdout_is_tty:
        return OutputMode.PLAIN
    return OutputMode.LIVE


_SPARK_LEVELS = " ▁▂▃▄▅▆▇█"


def sparkline(samples: Sequence[int], width: int) -> str:
    """Fold samples into `width` buckets and draw each as one of 9 block heights."""
    values = list(samples)
    if width <= 0 or not values:
        return ""
    per = max(1, -(-len(values) // width))
    buckets = [sum(values[i : i + per]) for i in range(0, len(values), per)][-width:]
    peak = max(buckets)
    if peak == 0:
        return _SPARK_LEVELS[0] * len(buckets)
    top = len(_SPARK_LEVELS) - 1
    return "".join(_SPARK_LEVELS[-(-value * top // peak)] for value in buckets)


def human_rate(bytes_per_s: float) -> str:
    return human_bytes(bytes_per_s) + "/s"


class PlainSink:
    """kubectl-compatible stdout lines; vibe's own events marked `[vibe]` on stderr."""

    def __init__(self, out: Any, err: Any) -> None:
        self.out = out
        self.err = err

    def __call__(self, event: SessionEvent) -> None:
        if event.kind is EventKind.FORWARDING:
            self._line(self.out, event.message)
        elif event.kind is EventKind.CONNECTION:
            self._line(self.out, "Handling connection for %s" % dict(event.data).get("port"))
        elif event.kind is EventKind.LISTEN_FAILED:
            self._line(self.err, event.message)
        else:
            text = "[vibe] %s %s: %s" % (event.target, event.kind.value, event.message)
            self._line(self.err, text)

    @staticmethod
    def _line(stream: Any, text: str) -> None:
        stream.write(text + "\n")
        stream.flush()


class JsonSink:
    """One JSON object per event, on stdout, flushed at once (for scripts and log shippers)."""

    def __init__(self, out: Any) -> None:
        self.out = out

    def __call__(self, event: SessionEvent) -> None:
        record = {"time": _iso_time(event.time), **event.as_dict()}
        self.out.write(json.dumps(record, default=str) + "\n")
        self.out.flush()


def _iso_time(wall: float) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(wall, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_STATE_STYLE = {
    ForwardState.STARTING: ("yellow", "starting"),
    ForwardState.READY: ("green", "ready"),
    ForwardState.RECONNECTING: ("yellow", "reconnecting"),
    ForwardState.FAILED: ("red", "failed"),
    ForwardState.STOPPED: ("dim", "stopped"),
}


class LiveScreen:
    """Rewrites only the terminal lines that changed since the last frame.

    rich's own Live redraws every line on every refresh; an idle forward changes one number a
    second, so diffing keeps an idle view to a few dozen bytes a second.
    """

    def __init__(self, out: Any) -> None:
        self.out = out
        self.lines: List[str] = []
        self.bytes_written = 0

    def show(self, lines: List[str]) -> None:
        if len(lines) != len(self.lines):
            parts = ["\x1b[%dF" % len(self.lines)] if self.lines else ["\x1b[?25l"]
            parts.append("\x1b[J" + "\n".join(lines) + "\n")
        else:
            parts = []
            height = len(lines)
            for index, (old, new) in enumerate(zip(self.lines, lines)):
                if old != new:
                    up = height - index
                    parts.append("\x1b[%dF%s\x1b[K\x1b[%dE" % (up, new, up))
        self.lines = lines
        self._write("".join(parts))

    def clear(self) -> None:
        if self.lines:
            self._write("\x1b[%dF\x1b[J" % len(self.lines))
        self._write("\x1b[?25h")
        self.lines = []

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self.bytes_written += len(text)


class LiveView:
    """The terminal view: one row per forwarded port, reconnect reasons and recent events below.

    A client: it keeps the last events it was sent and renders the snapshots it is given.
    """

    def __init__(self, out: Any, started: float) -> None:
        import collections

        self.screen = LiveScreen(out)
        self.events: Any = collections.deque(maxlen=LIVE_EVENTS_SHOWN)
        self.started = started
        self.frame = 0
        self._state_since: Dict[Tuple[int, int], Tuple[ForwardState, float]] = {}

    def __call__(self, event: SessionEvent) -> None:
        if event.kind not in (EventKind.CONNECTION, EventKind.FORWARDING):
            self.events.append(event)

    def signature(self, forwards: Sequence[ForwardSnapshot], now: float) -> Tuple[Any, ...]:
        """Everything the view shows, cheaply: equal signatures render equal screens."""
        moving = False
        rows = []
        for forward in forwards:
            for port in forward.ports:
                moving = moving or port.rate > 0 or forward.state is not ForwardState.READY
                rows.append(
                    (
                        forward.state,
                        forward.attempt,
                        forward.reason,
                        forward.pod,
                        port.stats.bytes_up,
                        port.stats.bytes_down,
                        port.stats.active,
                        port.stats.opened,
                        port.stats.failed + port.stats.reset,
                        port.rate,
                    )
                )
        newest = self.events[-1] if self.events else None
        return (int(now - self.started), self.frame if moving else 0, tuple(rows), newest)

    def render_lines(
        self, forwards: Sequence[ForwardSnapshot], now: float, width: int
    ) -> List[str]:
        """The whole view as terminal lines (ANSI styled unless NO_COLOR is set)."""
        import io

        from rich.console import Console

        buffer = io.StringIO()
        plain = bool(os.environ.get("NO_COLOR"))  # no-color.org: no ANSI styling at all
        console = Console(
            file=buffer,
            width=width,
            force_terminal=True,
            color_system=None if plain else "auto",
            highlight=False,
            emoji=False,
        )
        console.print(self._table(forwards, now, width))
        for line in self._footer_lines(forwards):
            console.print(line, overflow="ellipsis", no_wrap=True)
        return buffer.getvalue().rstrip("\n").split("\n")

    def _table(self, forwards: Sequence[ForwardSnapshot], now: float, width: int) -> Any:
        from rich.table import Table
        from rich.text import Text

        title = "kubectl vibe port-forward · %s · Ctrl-C to stop" % human_duration(
            now - self.started
        )
        table = Table(title=title, title_justify="left", box=None, pad_edge=False)
        shown = _columns_for_width(width)
        rows = [
            self._row(forward, port, now)
            for forward in forwards
            for port in (forward.ports or (NO_PORT,))
        ]
        natural = {
            name: max([len(name)] + [Text.from_markup(row[name]).cell_len for row in rows])
            for name in shown
        }
        # The target column takes what the others leave (with …), so status never shrinks.
        others = sum(natural[name] for name in shown if name != "local → target")
        target_width = max(LIVE_TARGET_MIN_WIDTH, width - others - 2 * (len(shown) - 1))
        for name in shown:
            is_target = name == "local → target"
            table.add_column(
                name,
                no_wrap=True,
                overflow="ellipsis",
                max_width=target_width if is_target else None,
            )
        for row in rows:
            table.add_row(*(row[name] for name in shown))
        return table

    def _row(self, forward: ForwardSnapshot, port: PortSnapshot, now: float) -> Dict[str, str]:
        stats = port.stats
        color, label = _STATE_STYLE[forward.state]
        moving = port.rate > 0 or forward.state is not ForwardState.READY
        mark = _SPINNER[self.frame % len(_SPINNER)] if moving else "●"
        if forward.state is ForwardState.RECONNECTING:
            label = "reconnecting #%d" % max(1, forward.attempt)
        key = (forward.ident, port.key)
        state, since = self._state_since.get(key, (None, now))
        if state is not forward.state:
            self._state_since[key] = (forward.state, now)
            since = now
        if port is NO_PORT:  # a target that could not start yet
            target = forward.label
        else:
            target = "%s (%s) :%d" % (forward.label, forward.pod, port.remote_port)
        failed = stats.failed + stats.reset
        conns = "%d/%d" % (stats.active, stats.opened) + (" [red]✗%d[/]" % failed if failed else "")
        up, down = human_bytes(stats.bytes_up), human_bytes(stats.bytes_down)
        return {
            "status": "[%s]%s %s[/]" % (color, mark, label),
            "for": human_duration(now - since),
            "local → target": "%s → %s" % (port.local_text, target),
            "↑ up": "%s %s" % (up, _dim_rate(port.up_rate)),
            "↓ down": "%s %s" % (down, _dim_rate(port.down_rate)),
            "↑↓": "%s↑ %s↓" % (up, down),
            "conns": conns,
            "activity 60s": "[cyan]%s[/]" % sparkline(port.activity, 20),
        }

    def _footer_lines(self, forwards: Sequence[ForwardSnapshot]) -> List[str]:
        lines = []
        for forward in forwards:
            if forward.state is ForwardState.RECONNECTING and forward.reason:
                lines.append("[yellow]  ↻ %s: %s[/]" % (forward.label, _escape(forward.reason)))
            lines.extend("[cyan]  ⇉ %s[/]" % _escape(text) for text in pod_share_lines(forward))
            for port in forward.ports:
                lines.extend("[dim]  %s[/]" % _escape(line) for line in port.protocol_lines)
        for event in self.events:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
            lines.append("[dim]%s[/] %s %s" % (stamp, event.target, _escape(event.message)))
        return lines


#: Live view layouts, widest first: a narrow terminal gets the first one that fits beside a
#: readable target column (status and the target never go; the target shrinks with …).
_LIVE_LAYOUTS = (
    ("status", "for", "local → target", "↑ up", "↓ down", "conns", "activity 60s"),
    ("status", "for", "local → target", "↑ up", "↓ down", "conns"),
    ("status", "local → target", "↑ up", "↓ down", "conns"),
    ("status", "local → target", "↑↓", "conns"),
)
_LIVE_COLUMN_WIDTHS = {
    "status": 18,
    "for": 7,
    "↑ up": 20,
    "↓ down": 20,
    "↑↓": 20,
    "conns": 12,
    "activity 60s": 22,
}
_LIVE_TARGET_MIN = 40
#: The narrowest the target column gets before the other columns give way too.
LIVE_TARGET_MIN_WIDTH = 24


def _columns_for_width(width: int) -> Tuple[str, ...]:
    for layout in _LIVE_LAYOUTS:
        fixed = sum(_LIVE_COLUMN_WIDTHS.get(column, 0) for column in layout)
        if fixed + _LIVE_TARGET_MIN <= width:
            return layout
    return _LIVE_LAYOUTS[-1]


def _dim_rate(rate: float) -> str:
    return "[dim]%s[/]" % human_rate(rate) if rate else ""


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


# ---- the closing summary (pure over snapshots) ----


def build_summary(forwards: Sequence[ForwardSnapshot], duration: float) -> List[str]:
    """The closing "vibe" summary: usage, performance, problems and next steps, as plain lines."""
    lines = ["kubectl vibe port-forward: %s" % human_duration(duration)]
    problems: List[str] = []
    steps: List[str] = []
    for forward in forwards:
        lines.extend(_summary_of_forward(forward, duration))
        problems.extend(_problems_of_forward(forward))
        steps.extend(_next_steps_for(forward))
    if problems:
        lines.append("problems:")
        lines.extend("  - " + problem for problem in problems)
    if steps:
        lines.append("next steps:")
        lines.extend("  - " + step for step in dict.fromkeys(steps))
    return lines


def _summary_of_forward(forward: ForwardSnapshot, duration: float) -> List[str]:
    pods = ", ".join(sorted({forward.pod, *forward.dead_pods} - {""}))
    reconnects = dict(forward.reconnects)
    lines = []
    for port in forward.ports:
        stats = port.stats
        average = (stats.bytes_up + stats.bytes_down) / duration if duration > 0 else 0.0
        moved = (", %d moved to a new tunnel" % stats.replayed) if stats.replayed else ""
        lines.append(
            "  %s → %s :%d (pod %s)" % (port.local_text, forward.label, port.remote_port, pods)
        )
        lines.append(
            "    ↑ %s  ↓ %s  avg %s · %d connections: %d closed, %d failed, %d reset%s"
            % (
                human_bytes(stats.bytes_up),
                human_bytes(stats.bytes_down),
                human_rate(average),
                stats.opened,
                stats.closed,
                stats.failed,
                stats.reset,
                moved,
            )
        )
        lines.append(
            "    uptime %.1f%% · reconnects %d%s"
            % (forward.uptime_percent, sum(reconnects.values()), _counts_text(reconnects))
        )
        lines.extend("    " + line for line in port.protocol_lines)
    lines.extend("    balanced: " + text for text in pod_share_lines(forward))
    if forward.error:
        lines.append("  %s: failed: %s" % (forward.label, forward.error))
    elif not forward.ports:
        lines.append("  %s: %s" % (forward.label, forward.reason))
    return lines


def pod_share_lines(forward: ForwardSnapshot) -> List[str]:
    """A balanced forward's pods: `web-1: 3 open, 120 connections, ↑ 1.2 KiB ↓ 30 MiB`."""
    lines = []
    for share in forward.pods:
        state = "" if share.ready else " (left)"
        lines.append("%s%s: %d open, %d connections, ↑ %s ↓ %s" % (
            share.pod, state, share.active, share.opened, human_bytes(share.bytes_up),
            human_bytes(share.bytes_down)))  # fmt: skip
    return lines


def _counts_text(counts: Dict[str, int]) -> str:
    if not counts:
        return ""
    ordered = sorted(counts.items(), key=lambda item: -item[1])
    return " (%s)" % ", ".join("%s ×%d" % (name, count) for name, count in ordered)


def _problems_of_forward(forward: ForwardSnapshot) -> List[str]:
    problems = []
    for port in forward.ports:
        problems.extend("%d connections %s" % (n, cause) for cause, n in sorted(port.stats.causes))
    problems.extend(forward.pod_notes)
    for port in forward.ports:
        problems.extend(port.protocol_problems)
    return problems


def _next_steps_for(forward: ForwardSnapshot) -> List[str]:
    namespace = forward.namespace
    steps = []
    for pod in list(forward.troubled_pods)[-2:]:
        steps.append("kubectl describe pod %s -n %s" % (pod, namespace))
        steps.append("kubectl logs %s -n %s --previous" % (pod, namespace))
    if forward.reconnects and not forward.troubled_pods:
        steps.append("kubectl describe pod %s -n %s" % (forward.pod, namespace))
    for port in forward.ports:
        if any("nothing listening" in cause for cause, _ in port.stats.causes):
            steps.append(
                "check that the container listens on port %d (kubectl exec %s -n %s -- "
                "ss -ltn)" % (port.remote_port, forward.pod, namespace)
            )
    return steps


def summary_data(forwards: Sequence[ForwardSnapshot]) -> Dict[str, Any]:
    """The summary's figures for `-o json`."""
    ports = []
    for forward in forwards:
        for port in forward.ports:
            stats = port.stats
            ports.append(
                {
                    "target": forward.label,
                    "local": port.local_text,
                    "remote_port": port.remote_port,
                    "pod": forward.pod,
                    "engine": forward.engine,
                    "bytes_up": stats.bytes_up,
                    "bytes_down": stats.bytes_down,
                    "connections": stats.opened,
                    "closed": stats.closed,
                    "failed": stats.failed,
                    "reset": stats.reset,
                    "replayed": stats.replayed,
                    "causes": dict(stats.causes),
                    "protocols": list(port.protocol_lines),
                }
            )
    reconnects = {forward.label: dict(forward.reconnects) for forward in forwards}
    return {"forwards": ports, "reconnects": reconnects}


# ---- the command: options → session → a display → the summary ----


class PortForwardCommand:
    """`kubectl vibe port-forward`: binds the user's ports, supervises the tunnels, shows what
    happens through one display client, ends cleanly on a signal, prints the summary."""

    def __init__(self, options: PortForwardOptions, runner: KubectlRunner) -> None:
        self.options = options
        self.runner = runner
        self.mode = choose_output_mode(options.output, options.live, _stdout_is_tty())
        self.session = Session(runner, options.forward_options(), options.namespace)
        self.live: Optional[LiveView] = None
        self.session.events.subscribe(self._make_sink())
        self._stop = asyncio.Event()
        self._signals = 0
        self._last_signature: Any = None
        self._tasks: List[Any] = []

    def _make_sink(self) -> EventSink:
        if self.mode is OutputMode.JSON:
            return JsonSink(sys.stdout)
        if self.mode is OutputMode.PLAIN:
            return PlainSink(sys.stdout, sys.stderr)
        self.live = LiveView(sys.stdout, _monotonic())
        return self.live

    async def run(self) -> int:
        self._install_signal_handlers()
        asyncio.get_running_loop().set_exception_handler(self._on_loop_error)
        self.session.start()
        try:
            await self._start_forwards()
        except BaseException:
            await self.session.close(0.0)
            raise
        display = asyncio.ensure_future(self._redraw_loop())
        self._tasks.append(asyncio.ensure_future(self._remember_when_ready()))
        stopped = asyncio.ensure_future(self._stop.wait())
        failed = asyncio.ensure_future(self.session.wait_all_failed())
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        grace = 0.0 if self._signals > 1 else SHUTDOWN_GRACE_S
        for task in (display, stopped, failed, *self._tasks):
            task.cancel()
        await asyncio.gather(display, stopped, failed, *self._tasks, return_exceptions=True)
        await self.session.close(grace)
        fatal = [f.fatal for f in self.session.forwards.values() if f.fatal is not None]
        if self.session.all_failed and fatal:
            raise fatal[0]
        self._print_summary()
        return 0

    async def _start_forwards(self) -> None:
        """Resolve and bind every target at once. One target: kubectl's error as it is. Several:
        each failure is one event line, and only all of them failing is an error."""
        options = self.options
        if not options.namespace:
            options.namespace = await self.session.resolver("").namespace_default()
            self.session.namespace = options.namespace
        named = {t.context for t in options.targets} | {d.context for d in options.discoveries}
        if named - {""}:  # a recalled set or a group names its context: is it ours?
            self.session.context_name = str(
                options.own_set.context or await self._current_context()
            )
        discovered = await self._discover()
        targets = self._plan_ports(options.targets + discovered, quiet=discovered)
        self._say_found(targets[len(options.targets) :])
        for context in {target.context for target in targets} - {""}:
            await self.session.default_namespace(context)
        starts = [
            self.session.add_forward(target.ref, target.ports, target.namespace, target.context)
            for target in targets
        ]
        results = await asyncio.gather(*starts, return_exceptions=True)
        errors = [(t, r) for t, r in zip(targets, results) if isinstance(r, BaseException)]
        for _, error in errors:
            if not isinstance(error, Exception):
                raise error  # CancelledError, KeyboardInterrupt
        if len(targets) == 1 and errors and not options.discovers:
            raise errors[0][1]
        if errors and len(errors) == len(targets):
            raise VibeError(
                "no forward could start: %s"
                % "; ".join(
                    "%s: %s" % (target.ref.text, _error_text(error)) for target, error in errors
                )
            )
        for target, error in errors:
            self.session.events.publish(
                SessionEvent(_wall_clock(), EventKind.ERROR, target.ref.text, _error_text(error))
            )
            if is_worth_retrying(error):
                self.session.retry_later(target, error)

    async def _discover(self) -> List[TargetArgs]:
        """-l and --annotated: what is found is said, one line per target, before it starts."""
        targets: List[TargetArgs] = []
        for spec in self.options.discoveries:
            default = await self._namespace_of(spec.context)
            finder = Discovery(self.session.access_for(spec.context), spec.namespace or default,
                               spec.all_namespaces)  # fmt: skip
            found = await (finder.annotated() if spec.annotated else
                           finder.by_selector(spec.selector))  # fmt: skip
            for warning in found.warnings:
                self.session.events.publish(SessionEvent(_wall_clock(), EventKind.FOUND,
                                            "discovery", "warning: " + warning))  # fmt: skip
            targets.extend(_placed(target, "", spec.context) for target in found.targets)
        return targets

    async def _namespace_of(self, context: str) -> str:
        return (
            self.options.namespace if not context else await self.session.default_namespace(context)
        )

    def _say_found(self, targets: Sequence[TargetArgs]) -> None:
        """One line per discovered target and port, with its local port, before it starts."""
        for target in targets:
            for spec in target.ports:
                local = "local %d" % spec.local if spec.local else "local port chosen at start"
                self.session.events.publish(SessionEvent(
                    _wall_clock(), EventKind.FOUND, target.ref.text,
                    "port %s → %s" % (spec.remote, local), (("port", spec.local),
                                                            ("remote", spec.remote))))  # fmt: skip

    async def _remember_when_ready(self) -> None:
        """Once a forward is up, this set is remembered (recalled ones count one more use);
        the store's file I/O runs off the event loop."""
        waits = [asyncio.ensure_future(f.wait_ready()) for f in self.session.forwards.values()]
        if not waits:
            return
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        options = self.options
        own = options.own_set
        if own.targets or own.discoveries:
            if not own.context:
                own = _replace_record(own, context=await self._current_context())
            own = _replace_record(own, namespace=options.namespace)
        sets = [own] if own.targets or own.discoveries else []
        sets += options.recalled_sets
        resolved = [line for line in self._resolved_lines()]
        loop = asyncio.get_running_loop()
        store = ForwardStore()
        for index, forward_set in enumerate(sets):
            name = options.save if index == 0 else ""
            await loop.run_in_executor(
                None, store.record, forward_set, name, resolved, _wall_clock()
            )
        for warning in dict.fromkeys(store.warnings):
            self.session.events.publish(SessionEvent(_wall_clock(), EventKind.CLUSTER,
                                                     "remembered forwards", warning))  # fmt: skip

    async def _current_context(self) -> str:
        """The context in use: --context, else the kubeconfig's current-context (read here:
        one more kubectl process just for a name would cost more than the file)."""
        explicit = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in self.runner.global_args
                    if a.startswith("--") and "=" in a}  # fmt: skip
        if explicit.get("--context"):
            return explicit["--context"]
        return kubeconfig_current_context(explicit.get("--kubeconfig", ""))

    def _resolved_lines(self) -> List[str]:
        return [
            "%s → %s :%d" % (port.local_text, forward.label, port.remote_port)
            for forward in self.session.snapshot(detail=False)
            for port in forward.ports
        ]

    def _plan_ports(
        self, targets: Sequence[TargetArgs], quiet: Sequence[TargetArgs] = ()
    ) -> List[TargetArgs]:
        """Local ports left to us are chosen now, in argument order, and said (but for the
        `quiet` targets: discovery says theirs with what it found)."""
        options = self.options
        addresses = options.listen.addresses
        policy = PortPolicy(
            options.choose_ports,
            options.auto_ports,
            functools.partial(local_port_free, addresses=addresses),
            port_holder,
        )
        planned, choices = plan_local_ports(targets, policy)
        silent = {target.ref.text for target in quiet}
        for choice in choices:
            if choice.target in silent and choice.reason == "chosen":
                continue
            why = "" if choice.reason == "chosen" else ": " + choice.reason
            message = "%s: local port %d%s" % (choice.spec, choice.port, why)
            self.session.events.publish(
                SessionEvent(
                    _wall_clock(), EventKind.PORTS, choice.target, message, (("port", choice.port),)
                )
            )
        return planned

    def _on_loop_error(self, loop: Any, context: Dict[str, Any]) -> None:
        """A bug in a callback must not print a traceback over the view: one counted line
        (with KUBECTL_VIBE_DEBUG=1, asyncio's full report too)."""
        exc = context.get("exception")
        what = "%s: %s" % (type(exc).__name__, exc) if exc else context.get("message", "?")
        errors = self.session.internal_errors
        errors[what] = errors.get(what, 0) + 1
        if errors[what] == 1:
            self.session.events.publish(
                SessionEvent(
                    _wall_clock(),
                    EventKind.ERROR,
                    "kubectl vibe",
                    "internal error (please report it): " + what,
                )
            )
        if os.environ.get(ENV_DEBUG):
            loop.default_exception_handler(context)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(signum, self._on_signal)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    def _on_signal(self) -> None:
        self._signals += 1  # a second Ctrl-C skips the grace period
        self._stop.set()

    async def _redraw_loop(self) -> None:
        """In a terminal, redraw when something visible changed (idle: once a second)."""
        if self.live is None:
            return
        while True:
            await asyncio.sleep(LIVE_REFRESH_S)
            self._redraw_if_changed(_monotonic())

    def _redraw_if_changed(self, now: float) -> None:
        assert self.live is not None
        self.live.frame += 1
        width = shutil.get_terminal_size((120, 24)).columns
        light = self.session.snapshot(detail=False)
        signature = (width, self.live.signature(light, now))
        if signature != self._last_signature:
            self._last_signature = signature
            self.live.screen.show(self.live.render_lines(self.session.snapshot(), now, width))

    def _print_summary(self) -> None:
        forwards = self.session.snapshot()
        lines = build_summary(forwards, _monotonic() - self.session.started)
        for what, count in self.session.internal_errors.items():
            lines.append("internal error ×%d (please report it): %s" % (count, what))
        if self.mode is OutputMode.JSON:
            label = ",".join(forward.label for forward in forwards)
            data = tuple(summary_data(forwards).items())
            self.session.events.publish(
                SessionEvent(_wall_clock(), EventKind.STOPPED, label, "\n".join(lines), data)
            )
            return
        if self.live is not None:
            self.live.screen.clear()
            _write_lines(sys.stdout, lines)
            return
        _write_lines(sys.stderr, lines)


def is_worth_retrying(error: BaseException) -> bool:
    """A target that could not start, but may later: not found yet, no pod yet, cluster
    unreachable. A wrong port, a kind without pods or RBAC will not change by waiting."""
    if isinstance(error, ApiRequestError):
        return error.api.code == 404 or error.api.unreachable or error.api.code >= 500
    if isinstance(error, (ConnectionError, OSError)):
        return True
    text = _error_text(error)
    return "timed out waiting for the condition" in text or "pod is not running" in text


def _error_text(error: BaseException) -> str:
    return error.message if isinstance(error, VibeError) else str(error) or type(error).__name__


def _raise_fd_limit(wanted: int) -> None:
    """Lift the soft open-files limit toward `wanted` (never above the hard limit)."""
    try:
        import resource
    except ImportError:  # not a Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def _stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _write_lines(stream: Any, lines: List[str]) -> None:
    stream.write("\n".join(lines) + "\n")
    stream.flush()


async def run_port_forward(flags: ParsedFlags, prog: str) -> int:
    """`kubectl vibe port-forward`: Complete → Validate → Run, like kubectl's own command."""
    done = await run_library_command(flags, prog)
    if done is not None:
        return done
    recalled = Recalled(flags, ())
    if any(word.startswith("@") for word in flags.positionals):
        recalled = ForwardLibrary(flags).recall(flags)
    options = PortForwardOptions.from_flags(recalled.flags, recalled.sets, recalled.remembered)
    options.validate()
    _raise_fd_limit(FD_SOFT_LIMIT_WANTED)
    runner = KubectlRunner(find_kubectl(), flags.globals_argv)
    try:
        return await PortForwardCommand(options, runner).run()
    finally:
        await runner.close()


# ==== §19 wait session =========================================================================


@frozen_record
class WatchSpec:
    """One `kubectl get ... -w` that covers some waited resources (kubectl watches one type)."""

    args: Tuple[str, ...]
    #: Names to keep (None: every object the watch reports is waited for).
    names: Optional[frozenset] = None


def watch_specs(flags: ParsedFlags) -> List[WatchSpec]:
    """The watches that see exactly the resources kubectl wait would visit."""
    scope: List[str] = []
    if flags.get("selector"):
        scope.append("--selector=" + flags.get("selector"))
    if flags.get("field-selector"):
        scope.append("--field-selector=" + flags.get("field-selector"))
    if flags.get("all-namespaces"):
        scope.append("--all-namespaces")
    if flags.get("filename"):
        files = ["--filename=" + name for name in flags.get("filename")]
        return [WatchSpec(("get", *files, "--recursive=%s" % str(flags.get("recursive")).lower()))]
    args = flags.positionals
    by_type: Dict[str, List[str]] = {}
    if args and "/" not in args[0]:
        by_type[args[0]] = list(args[1:])
    else:
        for arg in args:
            kind, _, name = arg.partition("/")
            by_type.setdefault(kind, []).append(name)
    specs = []
    for kind, names in by_type.items():
        if len(names) == 1 and not flags.get("field-selector"):
            specs.append(
                WatchSpec(
                    ("get", kind, "--field-selector=metadata.name=" + names[0], *scope),
                    frozenset(names),
                )
            )
        else:
            specs.append(WatchSpec(("get", kind, *scope), frozenset(names) if names else None))
    return specs


#: kubectl wait's printing flags, reused to print an object our readiness rules waited for.
_PRINT_FLAGS = frozenset(
    ("output", "template", "show-managed-fields", "allow-missing-template-keys")
)
#: kubectl wait's resource-builder flags, reused for the initial `kubectl get`.
_LOOKUP_FLAGS = frozenset(("selector", "field-selector", "all-namespaces", "filename", "recursive"))
#: A watch whose every object is a waited resource (the initial lookup).
ALL_OF_WATCH = WatchSpec(("get",))
_WATCH_TAIL = ("--watch", "--output=json", "--output-watch-events")


class WaitTarget:
    """A waited resource as we see it now, with how long it has been in its state."""

    def __init__(self, obj_id: str, namespace: str, obj: Optional[Dict[str, Any]], now: float):
        self.obj_id = obj_id
        self.namespace = namespace
        self.obj = obj
        self.report = compute_status(obj, now)
        self.since = now
        self.seen = obj is not None
        self.met_printed = False

    @property
    def kind(self) -> str:
        return str((self.obj or {}).get("kind") or "")

    @property
    def name(self) -> str:
        return self.obj_id.partition("/")[2]

    def plural_name(self) -> str:
        """`deployments/web`, as kubectl's wait errors name resources."""
        if self.kind:
            return "%s/%s" % (resource_plural(self.kind), self.name)
        typed = self.obj_id.partition("/")[0].split(".")[0].lower()
        kind = _NL_KIND_BY_WORD.get(typed, typed)
        plural = typed if typed.endswith("s") and typed not in _NL_SINGULAR_S else None
        return "%s/%s" % (plural or resource_plural(kind), self.name)


class WaitBoard:
    """Everything the watches saw: targets, their pods and recent events. No I/O here."""

    def __init__(self, specs: Sequence[WatchSpec]) -> None:
        self.specs = list(specs)
        self.targets: Dict[Tuple[str, str], WaitTarget] = {}
        self.pods: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self.events: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
        #: (namespace, resource id) → target key, once an object was matched to its target.
        self._aliases: Dict[Tuple[str, str], Tuple[str, str]] = {}

    def expect(self, type_text: str, name: str, namespace: str, now: float) -> None:
        key = (namespace, "%s/%s" % (type_text, name))
        if key not in self.targets:
            self.targets[key] = WaitTarget("%s/%s" % (type_text, name), namespace, None, now)

    def _find(self, obj: Dict[str, Any]) -> Optional[Tuple[str, str]]:
        """The target an object is: by its id (O(1)), else a named one not seen yet."""
        obj_id = resource_id(obj)
        namespace = (obj.get("metadata") or {}).get("namespace", "")
        known = self._aliases.get((namespace, obj_id))
        if known is not None:
            return known
        name = obj_id.partition("/")[2]
        for key, target in self.targets.items():
            if key[0] and key[0] != namespace:  # "" = the user's default namespace
                continue
            typed, _, typed_name = target.obj_id.partition("/")
            if target.obj is None and typed_name == name and _type_matches(typed, obj):
                self._aliases[(namespace, obj_id)] = key
                return key
        return None

    def apply_target(
        self, event_type: str, obj: Dict[str, Any], spec: WatchSpec, now: float
    ) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        if spec.names is not None and name not in spec.names:
            return
        key = self._find(obj)
        if key is None:
            if event_type == "DELETED":
                return
            key = ((obj.get("metadata") or {}).get("namespace", ""), resource_id(obj))
            self.targets[key] = WaitTarget(resource_id(obj), key[0], None, now)
            self._aliases[key] = key
        target = self.targets[key]
        target.obj = None if event_type == "DELETED" else obj
        if target.obj is not None:
            target.obj_id = resource_id(obj)
            target.namespace = (obj.get("metadata") or {}).get("namespace", "")
        self._recompute(target, now)

    def _recompute(self, target: WaitTarget, now: float) -> None:
        """New report; the state's clock restarts on a change of status, except at first
        sight (it has been in that state at least since we started looking)."""
        report = compute_status(target.obj, now, self.pods_of(target))
        if report.status is not target.report.status and target.seen:
            target.since = now
        target.seen = target.seen or target.obj is not None
        target.report = report

    def apply_pod(self, event_type: str, pod: Dict[str, Any], now: float) -> None:
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self.pods.pop(key, None)
        else:
            self.pods[key] = pod
        for target in self.targets.values():
            if target.obj is not None and (owns_pod(target.obj, pod) or target.kind == "Service"):
                self._recompute(target, now)

    def apply_event(self, event: Dict[str, Any]) -> None:
        """Keep the latest events per involved object; the oldest objects are forgotten first."""
        involved = event.get("involvedObject") or {}
        namespace = involved.get("namespace") or (event.get("metadata") or {}).get("namespace")
        key = (namespace or "", str(involved.get("name") or ""))
        uid = _event_uid(event)
        kept = [e for e in self.events.pop(key, []) if _event_uid(e) != uid]
        kept.append(event)
        self.events[key] = kept[-WAIT_EVENTS_PER_OBJECT:]
        while len(self.events) > WAIT_EVENT_OBJECTS_KEPT:
            del self.events[next(iter(self.events))]

    def pods_of(self, target: WaitTarget) -> List[Dict[str, Any]]:
        if target.obj is None or not has_pods(target.obj):
            return []
        pods = [pod for pod in self.pods.values() if owns_pod(target.obj, pod)]
        return sorted(pods, key=pod_name)

    def events_of(self, target: WaitTarget) -> List[Dict[str, Any]]:
        """Events about the resource and its pods, oldest first."""
        names = [target.name] + [pod_name(pod) for pod in self.pods_of(target)]
        found = [e for name in names for e in self.events.get((target.namespace, name), [])]
        return sorted(found, key=event_time)

    def latest_warning(self, target: WaitTarget) -> Optional[Dict[str, Any]]:
        warnings = [e for e in self.events_of(target) if e.get("type") == "Warning"]
        return warnings[-1] if warnings else None

    def ordered_targets(self) -> List[WaitTarget]:
        return list(self.targets.values())


def _listed_items(stdout: str) -> List[Dict[str, Any]]:
    """Objects from `kubectl get -o json`: a List's items, or the one object."""
    try:
        document = json.loads(stdout) if stdout.strip() else {}
    except ValueError:
        return []
    if not isinstance(document, dict):
        return []
    if document.get("kind") == "List" or "items" in document:
        return [item for item in document.get("items") or [] if isinstance(item, dict)]
    return [document] if document.get("metadata") else []


def _event_uid(event: Dict[str, Any]) -> str:
    meta = event.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name") or "")


def _type_matches(typed: str, obj: Dict[str, Any]) -> bool:
    """Whether the TYPE the user wrote ("deploy", "pods", "deployments.apps") names obj's kind."""
    word = typed.lower().split(".")[0]
    kind = str(obj.get("kind", "")).lower()
    known = _NL_KIND_BY_WORD.get(word)
    if known is not None:
        return known == kind
    return word in (kind, resource_plural(kind))


def target_unmet(target: WaitTarget, fors: Sequence[WaitFor]) -> List[Tuple[str, str]]:
    """(wanted, why not) for each --for (or readiness) the target does not meet yet."""
    unmet = []
    for wanted in fors or [READINESS]:
        met, why = for_satisfied(target.obj, wanted, target.report)
        if not met:
            unmet.append((wanted.describe(), why))
    return unmet


def target_failure(board: WaitBoard, target: WaitTarget, now: float) -> Tuple[str, str]:
    """(failure, where) --fail-fast watches: the resource's own, else its first failing pod's."""
    if target.report.failure:
        return target.report.failure, ""
    for pod in board.pods_of(target):
        failure = compute_status(pod, now).failure
        # A failed pod of a workload is retried or replaced: only the pod itself is doomed.
        if failure and failure != POD_FAILED:
            return failure, "pod/" + pod_name(pod)
    return "", ""


# ---- displays: live view, plain lines, JSON lines (all on stderr) -----------------------------


@frozen_record
class ProgressRow:
    """One line of progress: a target (depth 0) or one of its pods (depth 1)."""

    obj_id: str
    status: str
    message: str
    depth: int
    since_s: float
    met: bool
    warning: str = ""


def progress_rows(
    board: WaitBoard,
    fors: Sequence[WaitFor],
    now: float,
    show_missing: bool = True,
    wall_now: Optional[float] = None,
) -> List[ProgressRow]:
    """The live view's content, in display order (pure: board and time in, rows out).

    `now` is the monotonic clock of the board's timers; `wall_now` (default: `now`) the epoch
    time events are dated against. Until the first lookup is done, not having seen a
    resource does not mean NotFound."""
    wall = now if wall_now is None else wall_now
    rows = []
    for target in board.ordered_targets():
        if target.obj is None and not show_missing:
            continue
        warning = board.latest_warning(target)
        rows.append(
            ProgressRow(
                target.obj_id,
                target.report.status.value,
                target.report.message,
                0,
                now - target.since,
                not target_unmet(target, fors),
                event_line(warning, wall) if warning else "",
            )
        )
        rows.extend(child_rows(board.pods_of(target), now, target.kind == "Deployment"))
    return rows


def _replicaset_of(pod: Dict[str, Any]) -> str:
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == "ReplicaSet":
            return str(owner.get("name") or "")
    return ""


def child_rows(pods: Sequence[Dict[str, Any]], now: float, by_replicaset: bool) -> List[Any]:
    """A workload's pods (at most LIVE_PODS_SHOWN), under their ReplicaSet for a Deployment
    (deployment → replicaset → pods, from the pods' owners: no extra watch)."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for pod in pods:
        groups.setdefault(_replicaset_of(pod) if by_replicaset else "", []).append(pod)
    rows = []
    for replicaset in sorted(groups):
        members = groups[replicaset]
        depth = 1
        if replicaset:
            ready = sum(1 for pod in members if is_pod_ready(pod))
            state = ResourceStatus.CURRENT if ready == len(members) else ResourceStatus.IN_PROGRESS
            rows.append(
                ProgressRow(
                    "replicaset/" + replicaset,
                    state.value,
                    "%d/%d pods ready" % (ready, len(members)),
                    1,
                    0.0,
                    False,
                )
            )
            depth = 2
        for pod in members:
            report = compute_status(pod, now)
            rows.append(
                ProgressRow(
                    "pod/" + pod_name(pod), report.status.value, report.message, depth, 0.0, False
                )
            )
    shown = [row for row in rows if row.obj_id.startswith("pod/")][:LIVE_PODS_SHOWN]
    rows = [row for row in rows if not row.obj_id.startswith("pod/") or row in shown]
    if len(pods) > LIVE_PODS_SHOWN:
        more = "... %d more pods" % (len(pods) - LIVE_PODS_SHOWN)
        rows.append(ProgressRow("", "", more, 1, 0.0, False))
    return rows


def render_plain_row(row: ProgressRow, elapsed_s: float) -> str:
    prefix = "[%s] " % human_duration(elapsed_s)
    indent = "  " * row.depth
    mark = " (met)" if row.met and not row.depth else ""
    return "%s%s%s: %s%s: %s" % (prefix, indent, row.obj_id, row.status, mark, row.message)


class PlainProgress:
    """Piped: one plain line per state change (and per new Warning event)."""

    def __init__(self, stream: Any, started: float) -> None:
        self.stream = stream
        self.started = started
        self._last: Dict[str, Tuple[str, str, bool]] = {}
        self._warnings: set = set()

    def update(self, rows: Sequence[ProgressRow], now: float, header: str) -> None:
        for row in rows:
            if not row.obj_id:
                continue
            state = (row.status, row.message, row.met)
            if self._last.get(row.obj_id) != state:
                self._last[row.obj_id] = state
                self._write(render_plain_row(row, now - self.started))
            if row.warning and row.warning.split(" ago ", 1)[1] not in self._warnings:
                self._warnings.add(row.warning.split(" ago ", 1)[1])
                self._write("[%s]   %s" % (human_duration(now - self.started), row.warning))

    def _write(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass

    def message(self, line: str) -> None:
        self._write(line)

    def result(self, code: int, now: float) -> None:
        """The end: only machine-readable progress reports it (plain output has exit codes)."""

    def close(self) -> None:
        pass


class JsonProgress(PlainProgress):
    """--progress=json: one JSON object per state change, for machines."""

    def update(self, rows: Sequence[ProgressRow], now: float, header: str) -> None:
        parent = ""
        for row in rows:
            if not row.obj_id:
                continue
            if not row.depth:
                parent = row.obj_id
            state = (row.status, row.message, row.met)
            if row.warning and row.warning.split(" ago ", 1)[1] not in self._warnings:
                self._warnings.add(row.warning.split(" ago ", 1)[1])
                event = {"type": "event", "elapsed": round(now - self.started, 3)}
                event.update(resource=row.obj_id, message=row.warning)
                self._write(json.dumps(event, sort_keys=True))
            if self._last.get(row.obj_id) == state:
                continue
            self._last[row.obj_id] = state
            record = {
                "type": "status",
                "elapsed": round(now - self.started, 3),
                "resource": row.obj_id,
                "status": row.status,
                "message": row.message,
                "met": row.met,
            }
            if row.depth:
                record["parent"] = parent
            self._write(json.dumps(record, sort_keys=True))

    def message(self, line: str) -> None:
        self._write(json.dumps({"type": "message", "message": line}))

    def result(self, code: int, now: float) -> None:
        elapsed = round(now - self.started, 3)
        self._write(json.dumps({"type": "result", "exit_code": code, "elapsed": elapsed}))


class NullProgress(PlainProgress):
    def update(self, rows: Sequence[ProgressRow], now: float, header: str) -> None:
        pass

    def message(self, line: str) -> None:
        pass


_STATUS_STYLES = {
    "Current": "green",
    "InProgress": "yellow",
    "Failed": "bold red",
    "Terminating": "magenta",
    "NotFound": "dim",
    "Unknown": "dim",
}


class LiveProgress(PlainProgress):  # pragma: no cover - drawn on a terminal
    """A terminal: one redrawn table, kapp-style rows with child pods (rich, lazily)."""

    def __init__(self, stream: Any, started: float) -> None:
        super().__init__(stream, started)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream, highlight=False)
        self.live = Live(
            console=self.console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.live.start()

    def update(self, rows: Sequence[ProgressRow], now: float, header: str) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, show_header=True, title=header, title_justify="left", expand=False)
        for column in ("RESOURCE", "STATUS", "SINCE", "MESSAGE"):
            table.add_column(column, no_wrap=column != "MESSAGE", overflow="fold")
        for row in rows:
            name = ("  " * row.depth + "└ " if row.depth else "") + row.obj_id
            status = Text(
                row.status + (" ✓" if row.met else ""), style=_STATUS_STYLES.get(row.status, "")
            )
            since = "" if row.depth else human_duration(row.since_s)
            table.add_row(name, status, since, row.message)
            if row.warning:
                table.add_row("", "", "", Text(row.warning, style="red"))
        self.live.update(table, refresh=True)

    def message(self, line: str) -> None:
        self.live.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self.live.stop()


def make_progress(mode: ProgressMode, started: float) -> PlainProgress:
    stream = sys.stderr
    if mode is ProgressMode.AUTO:
        mode = ProgressMode.LIVE if _is_terminal(stream) else ProgressMode.PLAIN
    if mode is ProgressMode.LIVE:
        try:
            return LiveProgress(stream, started)
        except ImportError:  # no rich: plain lines still tell the story
            return PlainProgress(stream, started)
    return {
        ProgressMode.PLAIN: PlainProgress,
        ProgressMode.JSON: JsonProgress,
        ProgressMode.NONE: NullProgress,
    }[mode](stream, started)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


# ---- the session ---------------------------------------------------------------------------


class FailedFast(Exception):
    """--fail-fast saw a terminal failure."""

    def __init__(self, target: WaitTarget, failure: str) -> None:
        super().__init__(failure)
        self.target = target
        self.failure = failure


class WaitSession:
    """Runs one `kubectl vibe wait`: watches, the deciding kubectl wait, progress, explanations."""

    def __init__(self, options: WaitOptions, runner: KubectlRunner) -> None:
        self.options = options
        self.runner = runner
        self.started = _monotonic()
        self.deadline = self.started + effective_timeout(options.timeout_s)
        self.board = WaitBoard(watch_specs(options.flags))
        self.judge = FailFastJudge()
        self.changed = asyncio.Event()
        self.decider_wake = asyncio.Event()
        self.progress: PlainProgress = NullProgress(sys.stderr, self.started)
        self._watches: List[Any] = []  # tasks, each keeping one `kubectl get -w` running
        self._pods_watched = False
        self._kubectl_children: List[KubectlProcess] = []
        #: kubectl's own errors from the initial lookup (e.g. `Error from server (NotFound)`).
        self.lookup_errors: List[str] = []
        #: Whether the initial lookup is done: until then "not seen" does not mean NotFound.
        self.synced = False
        #: Set once the decision is made: the progress loop ends at its next beat.
        self.finished = False
        #: Ctrl-C or SIGTERM: which one (0: none).
        self.signal_number = 0
        self.interrupted = asyncio.Event()

    # -- watches --------------------------------------------------------------------------

    async def start_watches(self) -> None:
        for spec in self.board.specs:
            self._watch(spec.args, spec, "targets")
        self._watch(("get", "events", *self._scope()), None, "events")

    def start_pods_watch(self) -> None:
        """Pods are watched once some waited resource has pods (one watch for all of them)."""
        if not self._pods_watched:
            self._pods_watched = True
            self._watch(("get", "pods", *self._scope()), None, "pods")

    def _scope(self) -> List[str]:
        return ["--all-namespaces"] if self.options.flags.get("all-namespaces") else []

    def _watch(self, args: Sequence[str], spec: Optional[WatchSpec], what: str) -> None:
        self._watches.append(asyncio.ensure_future(self._keep_watching(args, spec, what)))

    async def _keep_watching(
        self, args: Sequence[str], spec: Optional[WatchSpec], what: str
    ) -> None:
        """One `kubectl get -w`, started again whenever it ends until the decision is made:
        the server closes watches after a while, and a type that does not exist yet (a CRD
        an operator installs later) becomes watchable."""
        while not self.finished:
            feed = _WatchFeed(self, JsonStreamDecoder(WATCH_MAX_DOCUMENT_BYTES), spec, what)
            child = await self.runner.start([*args, *_WATCH_TAIL], _ignore_line, feed.feed)
            await child.wait()
            await asyncio.sleep(WAIT_WATCH_RESTART_S)

    async def stop_watches(self) -> None:
        for task in self._watches:
            task.cancel()
        await asyncio.gather(*self._watches, return_exceptions=True)

    def on_watch_documents(
        self, documents: List[Any], spec: Optional[WatchSpec], what: str
    ) -> None:
        now = _monotonic()
        for document in documents:
            if not isinstance(document, dict) or "object" not in document:
                continue
            event_type, obj = document.get("type", ""), document["object"]
            if what == "pods":
                self.board.apply_pod(event_type, obj, now)
            elif what == "events":
                self.board.apply_event(obj)
            elif spec is not None:
                self.board.apply_target(event_type, obj, spec, now)
                if not self._pods_watched and has_pods(obj):
                    self.start_pods_watch()
        if not isinstance(self.progress, LiveProgress):
            self.refresh()  # lines and JSON records: every state change, none coalesced
        self.changed.set()
        self.decider_wake.set()

    # -- progress -------------------------------------------------------------------------

    def header(self, now: float) -> str:
        elapsed = now - self.started
        wanted = ", ".join(f.describe() for f in self.options.fors) or "readiness"
        left = max(0.0, self.deadline - now)
        return "waiting for %s · %s elapsed · %s left" % (
            wanted,
            human_duration(elapsed),
            human_duration(left),
        )

    def refresh(self) -> None:
        now = _monotonic()
        rows = progress_rows(
            self.board, self.options.fors, now, show_missing=self.synced, wall_now=_wall_clock()
        )
        self.progress.update(rows, now, self.header(now))

    async def progress_loop(self) -> None:
        """Redraw on change (at most LIVE_WAIT_REFRESH_S apart) or once a second for timers;
        check --fail-fast grace periods on the same beat."""
        while not self.finished:
            self.changed.clear()
            self.refresh()
            self.check_fail_fast()
            await asyncio.sleep(LIVE_WAIT_REFRESH_S)
            await _event_or_timeout(self.changed, 1.0)

    def check_fail_fast(self) -> None:
        if not self.options.fail_fast:
            return
        now = _monotonic()
        for target in self.board.ordered_targets():
            if not target_unmet(target, self.options.fors):
                continue
            failure, where = target_failure(self.board, target, now)
            if self.judge.observe(target.obj_id, failure, now):
                raise FailedFast(target, failure + (" on " + where if where else ""))

    # -- deciding -------------------------------------------------------------------------

    async def run(self) -> int:
        self.progress = make_progress(self.options.progress, self.started)
        failed: Optional[BaseException] = None
        try:
            self.expect_named_targets()
            await self.start_watches()
            ticker = asyncio.ensure_future(self.progress_loop())
            decider = asyncio.ensure_future(self.decide())
            interrupted = asyncio.ensure_future(self.interrupted.wait())
            self._install_signal_handlers()
            await asyncio.wait({ticker, decider, interrupted}, return_when=asyncio.FIRST_COMPLETED)
            self._remove_signal_handlers()
            interrupted.cancel()
            self.finished = True  # the ticker ends at its next beat; no cancellation race
            self.changed.set()
            # A decision already made wins over a failure seen in the same instant.
            failed = ticker.exception() if ticker.done() and not decider.done() else None
            if not decider.done():
                await self.stop_kubectl_children()
                decider.cancel()
            await asyncio.gather(decider, ticker, return_exceptions=True)
            if _succeeded(decider) and not self.signal_number:
                await self.catch_up()
            if _needs_explaining(decider, failed) and not self.signal_number:
                await asyncio.sleep(EXPLAIN_SETTLE_S)  # events trail the status they explain
            self.refresh()
            if failed is not None and not isinstance(failed, FailedFast):
                raise failed
        finally:
            self.finished = True
            await self.stop_watches()
            self.progress.close()
        if self.signal_number:  # like kubectl killed by the signal: never a success
            code = 128 + self.signal_number
        elif isinstance(failed, FailedFast):
            code = self.fail_fast_exit(failed)
        else:
            code = decider.result()
            if code != 0:
                self.print_explanations()
        self.progress.result(code, _monotonic())
        return code

    def _install_signal_handlers(self) -> None:
        """Ctrl-C / SIGTERM end the wait with 130 / 143 (a script must not take an interrupted
        wait for a met condition); the kubectl children are stopped first."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(signum)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    def _on_signal(self, signum: int) -> None:
        self.signal_number = int(signum)
        self.interrupted.set()

    async def catch_up(self) -> None:
        """kubectl wait said "condition met" from its own watch; ours may be a beat behind, or
        have started after a deletion (a watch's first list shows no DELETED). The last
        progress line must show what kubectl saw: wait briefly, then look again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_CATCH_UP_S
        while self._any_unmet():
            remaining = deadline - loop.time()
            if remaining <= 0:
                await self.look_again()
                return
            self.changed.clear()
            await _event_or_timeout(self.changed, remaining)

    def _any_unmet(self) -> bool:
        return any(target_unmet(t, self.options.fors) for t in self.board.ordered_targets())

    async def look_again(self) -> None:
        """One more `kubectl get` of the targets: what is listed replaces our copy, what is
        not listed any more is gone."""
        listed = await self._lookup()
        if listed is None:
            return
        now = _monotonic()
        seen = {resource_id(obj) for obj in listed}
        for obj in listed:
            self.board.apply_target("MODIFIED", obj, ALL_OF_WATCH, now)
        for target in self.board.ordered_targets():
            if target.obj is not None and resource_id(target.obj) not in seen:
                self.board.apply_target("DELETED", target.obj, ALL_OF_WATCH, now)

    async def _lookup(self) -> Optional[List[Dict[str, Any]]]:
        """The targets as `kubectl get` lists them now; None if that says nothing reliable."""
        flags = self.options.flags
        scope = ["--%s=%s" % (name, raw) for name, raw in flags.ordered if name in _LOOKUP_FLAGS]
        done = await self.runner.run(["get", *flags.positionals, *scope, "--output=json"], 60)
        if done.returncode != 0 and "(NotFound)" not in done.stderr:
            return None
        return _listed_items(done.stdout)

    async def decide(self) -> int:
        if self.options.decided_by_kubectl:
            lookup = asyncio.ensure_future(self.initial_lookup())
            try:
                if self.options.wait_for_create and not await self.wait_until_created():
                    return EXIT_ERROR
                return await self.run_kubectl_waits()
            finally:
                await asyncio.gather(lookup, return_exceptions=True)
        await self.initial_lookup()
        if self.options.wait_for_create and not await self.wait_until_created():
            return EXIT_ERROR
        return await self.decide_readiness()

    async def initial_lookup(self) -> None:
        """`kubectl get` of exactly what kubectl wait visits: the starting state (so NotFound
        rows are real) and, for our own readiness decision, kubectl's lookup errors."""
        flags = self.options.flags
        scope = ["--%s=%s" % (name, raw) for name, raw in flags.ordered if name in _LOOKUP_FLAGS]
        done = await self.runner.run(["get", *flags.positionals, *scope, "--output=json"], 60)
        now = _monotonic()
        for obj in _listed_items(done.stdout):
            self.board.apply_target("ADDED", obj, ALL_OF_WATCH, now)
        self.lookup_errors = [line for line in done.stderr.splitlines() if line.strip()]
        # Unreachable server, bad flags...: "not seen" then says nothing about existence.
        self.synced = done.returncode == 0 or "(NotFound)" in done.stderr
        if not isinstance(self.progress, LiveProgress) and self.synced:
            self.refresh()  # the starting state is a line of its own, whatever follows
        self.changed.set()

    async def run_kubectl_waits(self) -> int:
        options = self.options
        if not options.sequential_fors:
            return await self.run_kubectl_wait([f.raw for f in options.fors], options.timeout_text)
        code = 0
        for wanted in ordered_fors(options.fors):
            code = await self.run_kubectl_wait([wanted.raw], self.remaining_timeout_text())
            if code != 0:
                return code
        return code

    def remaining_timeout_text(self) -> Optional[str]:
        """One global deadline across sequential waits (kubectl 1.27+ semantics)."""
        if self.options.timeout_s <= 0:
            return self.options.timeout_text
        return "%.3fs" % max(0.001, self.deadline - _monotonic())

    async def run_kubectl_wait(self, fors: List[str], timeout_text: Optional[str]) -> int:
        argv = self.options.child_argv(fors, timeout_text)
        child = await self.runner.start(argv, self.pass_through, on_data=self.pass_stdout)
        self._kubectl_children.append(child)
        return await child.wait()

    def pass_through(self, stream: Stream, line: str) -> None:
        """kubectl's stderr lines, on our stderr."""
        self.err_line(line)

    def err_line(self, line: str) -> None:
        """A line for stderr, through the live view's console while it is on (not torn)."""
        if isinstance(self.progress, LiveProgress):
            self.progress.message(line)
        else:
            _write_line(sys.stderr, line)

    def out_line(self, line: str) -> None:
        """A line for stdout; on a terminal shared with the live view, through its console."""
        if isinstance(self.progress, LiveProgress) and _is_terminal(sys.stdout):
            self.progress.message(line)
        else:
            _write_line(sys.stdout, line)

    def pass_stdout(self, data: bytes) -> None:
        """kubectl's stdout, byte for byte (`-o jsonpath=...` prints no final newline)."""
        if isinstance(self.progress, LiveProgress) and _is_terminal(sys.stdout):
            self.progress.message(data.decode("utf-8", "replace").rstrip("\n"))
            return
        try:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except (BrokenPipeError, ValueError):
            pass

    def expect_named_targets(self) -> None:
        """A row for every resource named on the command line (NotFound until seen)."""
        now = _monotonic()
        namespace = self.options.flags.namespace
        positionals = self.options.flags.positionals
        if positionals and "/" not in positionals[0]:
            named = [(positionals[0], name) for name in positionals[1:]]
        else:
            named = [tuple(arg.partition("/")[::2]) for arg in positionals]
        for type_text, name in named:
            self.board.expect(type_text, name, namespace, now)

    async def wait_until_created(self) -> bool:
        """--wait-for-create on any kubectl: until every named resource (or, with a selector,
        one) exists, within the global deadline; then the real wait starts."""
        while True:
            self.decider_wake.clear()
            if self.all_created():  # the lookup's NotFound errors are history now
                self.lookup_errors = [e for e in self.lookup_errors if "(NotFound)" not in e]
                return True
            if _monotonic() >= self.deadline:
                missing = [t for t in self.board.targets.values() if t.obj is None]
                what = missing[0].plural_name() if missing else "the selected resources"
                self.err_line("error: timed out waiting for %s to be created" % what)
                return False
            await self.wake_or_timeout(min(1.0, self.deadline - _monotonic()))

    def all_created(self) -> bool:
        targets = list(self.board.targets.values())
        return bool(targets) and all(t.obj is not None for t in targets)

    async def wake_or_timeout(self, timeout: float) -> None:
        """Sleep until a watch reports something, or `timeout` seconds."""
        await _event_or_timeout(self.decider_wake, timeout)

    async def decide_readiness(self) -> int:
        """No --for: our kstatus rules decide; the output and errors mimic kubectl wait's."""
        targets = [t for t in self.board.ordered_targets() if t.obj is not None]
        if not targets:
            if not self.lookup_errors:
                self.lookup_errors = ["error: no matching resources found"]
            return self.print_errors([])
        once = self.options.timeout_s == 0
        while True:
            self.decider_wake.clear()
            for target in targets:
                if target.met_printed:
                    continue
                if target_unmet(target, ()):
                    break
                target.met_printed = True
                await self.print_met(target)
            pending = [t for t in targets if not t.met_printed]
            if not pending:
                return self.print_errors([]) if self.lookup_errors else 0
            if once or _monotonic() >= self.deadline:
                template = "condition not met for %s" if once else "timed out waiting for the "
                if not once:
                    template += "condition on %s"
                return self.print_errors([template % t.plural_name() for t in pending])
            await self.wake_or_timeout(min(1.0, self.deadline - _monotonic()))

    def print_errors(self, errors: List[str]) -> int:
        """kubectl's aggregate: one error gets `error: `, several are listed bare; the lookup's
        own lines (`Error from server (NotFound): ...`) follow verbatim, as kubectl prints them."""
        lines = list(errors)
        if len(lines) == 1 and not self.lookup_errors:
            lines[0] = "error: " + lines[0]
        for line in lines + self.lookup_errors:
            self.err_line(line)
        return EXIT_ERROR if lines or self.lookup_errors else 0

    async def print_met(self, target: WaitTarget) -> None:
        """kubectl's printer: `<id> condition met`, or -o name/json/yaml/... of the object."""
        output = self.options.flags.get("output") or ""
        if not output:
            self.out_line("%s condition met" % target.obj_id)
        elif output == "name":
            self.out_line(target.obj_id)
        else:
            printing = [
                "--%s=%s" % (name, raw)
                for name, raw in self.options.flags.ordered
                if name in _PRINT_FLAGS
            ]
            scope = ["--namespace=" + target.namespace] if target.namespace else []
            done = await self.runner.run(["get", target.obj_id, *scope, *printing], timeout=60)
            sys.stdout.write(done.stdout)
            sys.stderr.write(done.stderr)
            sys.stdout.flush()

    # -- endings --------------------------------------------------------------------------

    async def stop_kubectl_children(self) -> None:
        for child in self._kubectl_children:
            await child.stop()

    def fail_fast_exit(self, failed: FailedFast) -> int:
        _write_line(
            sys.stderr,
            "error: %s failed: %s (--fail-fast)" % (failed.target.obj_id, failed.failure),
        )
        self.print_explanations(failed.target)
        return EXIT_FAIL_FAST

    def print_explanations(self, first: Optional[WaitTarget] = None) -> None:
        """Every unsatisfied resource's story (the one that failed fast first)."""
        now = _monotonic()
        targets = self.board.ordered_targets()
        if first is not None:
            targets = [first] + [t for t in targets if t is not first]
        for target in targets:
            unmet = target_unmet(target, self.options.fors)
            if not unmet or (target.obj is None and not self.synced):
                continue
            meta = (target.obj or {}).get("metadata") or {}
            item = Explanation(
                target.obj_id,
                target.namespace,
                target.report,
                tuple(unmet),
                now - target.since,
                target.kind,
                tuple(meta.get("finalizers") or ()),
                target.obj if target.kind == "Pod" else None,
            )
            for line in explain(
                item, self.board.pods_of(target), self.board.events_of(target), _wall_clock()
            ):
                _write_line(sys.stderr, line)


def _succeeded(decider: Any) -> bool:
    done = decider.done() and not decider.cancelled() and decider.exception() is None
    return done and decider.result() == 0


def _needs_explaining(decider: Any, failed: Optional[BaseException]) -> bool:
    if isinstance(failed, FailedFast):
        return True
    if not decider.done() or decider.cancelled() or decider.exception() is not None:
        return False
    return decider.result() != 0


async def _event_or_timeout(event: asyncio.Event, timeout: float) -> None:
    """Wait for `event`, at most `timeout` seconds. Not asyncio.wait_for: up to Python 3.11 it
    can swallow a cancellation that races the event (bpo-42130), leaving a loop running."""
    if event.is_set():
        return
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=max(0.0, timeout))
    finally:
        waiter.cancel()


class _WatchFeed:
    """Feeds one watch's stdout bytes to its decoder and the session."""

    def __init__(
        self,
        session: WaitSession,
        decoder: JsonStreamDecoder,
        spec: Optional[WatchSpec],
        what: str = "targets",
    ) -> None:
        self.session = session
        self.decoder = decoder
        self.spec = spec
        self.what = what

    def feed(self, data: bytes) -> None:
        try:
            documents = self.decoder.feed(data)
        except VibeError:
            return
        self.session.on_watch_documents(documents, self.spec, self.what)


def _write_line(stream: Any, line: str) -> None:
    try:
        stream.write(line + "\n")
        stream.flush()
    except (BrokenPipeError, ValueError):
        pass


async def ask_llm(command: str, request: str) -> str:
    """--llm CMD: run by /bin/sh with the request as "$1" (and $KUBECTL_VIBE_REQUEST)."""
    env = dict(os.environ, KUBECTL_VIBE_REQUEST=request)
    runner = KubectlRunner("/bin/sh", env=env)
    try:
        done = await runner.run(
            ["-c", command + ' "$1"', "kubectl-vibe-llm", request], timeout=LLM_TIMEOUT_S
        )
    finally:
        await runner.close()
    if done.returncode != 0:
        raise VibeError(
            "the --llm command failed with exit code %d: %s"
            % (done.returncode, (done.stderr.strip().splitlines() or [""])[-1])
        )
    return done.stdout


async def run_wait(flags: ParsedFlags, prog: str) -> int:
    """`kubectl vibe wait`: options → complete → validate → run."""
    options = WaitOptions.from_flags(flags)
    runner = KubectlRunner(find_kubectl(), options.flags.globals_argv)
    try:
        await options.complete(runner)
        options.validate()
        if options.request or options.dry_run:
            line = options.arrow_line(prog)
            _write_line(sys.stdout if options.dry_run else sys.stderr, line)
        if options.dry_run:
            return 0
        return await WaitSession(options, runner).run()
    finally:
        await runner.close()


# ==== §20 Completion, version, main() ==========================================================


def print_completions(words: Sequence[str]) -> int:
    """`__complete WORD... CURRENT`: kubectl's plugin-completion protocol.

    One candidate per line (`value<TAB>description`), then the `:4` directive. Command names and
    flags are answered without importing asyncio or any dependency: this runs on every TAB.
    """
    for candidate in completion_candidates(words):
        print(candidate)
    print(COMPLETION_NO_FILES)
    return 0


def completion_candidates(words: Sequence[str]) -> List[str]:
    """Candidates for the last word, given the words before it (the command first)."""
    words = list(words) or [""]
    current = words[-1]
    if len(words) == 1:
        return _complete_command_names(current)
    command = COMMANDS_BY_NAME.get(words[0])
    if command is None or "=" in current:
        return []
    if current.startswith("-"):
        return _complete_flags(command, current)
    if command.name == "port-forward" and current.startswith("@"):
        return _complete_references(current)
    if command.name in ("port-forward", "wait"):
        before = _parse_for_completion(command, words[1:-1])
        if before is not None and not before.positionals:
            return _complete_resources(before.globals_argv, current)
    return []


def _complete_references(prefix: str) -> List[str]:
    """@GROUP of the project file, @NAME and @N of the remembered sets. Light: no YAML parser
    (group names are read off the file's lines), no lock wait beyond the store's."""
    candidates = []
    path = find_project_file(os.getcwd())
    for name in _project_group_names(path) if path else []:
        candidates.append("@%s\tgroup of %s" % (name, os.path.basename(path or "")))
    ranked = rank_stored(ForwardStore().load(), time.time())
    for index, entry in enumerate(ranked, 1):
        described = _short_description(entry.forward_set.describe())
        if entry.name:
            candidates.append("@%s\t%s" % (entry.name, described))
        candidates.append("@%d\t%s" % (index, described))
    return [candidate for candidate in candidates if candidate.startswith(prefix)]


_GROUP_LINE = LazyPattern(r"^  ([A-Za-z0-9][A-Za-z0-9_.-]*):\s*(#.*)?$")


def _project_group_names(path: str) -> List[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    names, inside = [], False
    for line in lines:
        if line.startswith("groups:"):
            inside = True
        elif line and not line.startswith((" ", "#")):
            inside = False
        match = _GROUP_LINE.match(line) if inside else None
        if match:
            names.append(match.group(1))
    return names


def _complete_command_names(prefix: str) -> List[str]:
    return [
        "%s\t%s" % (name, command.summary)
        for command in COMMANDS
        if not command.hidden
        for name in (command.name, *command.aliases)
        if name.startswith(prefix)
    ]


def _complete_flags(command: Command, prefix: str) -> List[str]:
    candidates = []
    for flag in (*command.flags, *GLOBAL_FLAGS, HELP_FLAG):
        if flag.hidden:
            continue
        spellings = ["--" + flag.long]
        if flag.short and not prefix.startswith("--"):
            spellings.append("-" + flag.short)
        description = _short_description(flag.help)
        candidates += [
            "%s\t%s" % (name, description) for name in spellings if name.startswith(prefix)
        ]
    return candidates


def _short_description(text: str) -> str:
    """The first sentence, cut at a word boundary to fit on a completion line."""
    sentence = text.split(". ")[0].rstrip(".")
    if len(sentence) <= COMPLETION_DESCRIPTION_CHARS:
        return sentence
    return sentence[: COMPLETION_DESCRIPTION_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _parse_for_completion(command: Command, words: Sequence[str]) -> Optional[ParsedFlags]:
    """The words before the cursor as flags; None when the cursor is a flag's value."""
    try:
        return FlagParser(command.flags, command.name).parse(words)
    except UsageError:
        return None


def _complete_resources(global_args: Sequence[str], prefix: str) -> List[str]:
    """TYPE/NAME of pods, services and deployments; nothing at all if kubectl fails or is slow."""
    try:
        names = asyncio.run(_fetch_resource_names(global_args))
    except Exception:  # a TAB shows no error: the user just gets no candidates
        return []
    return [name for name in names if name.startswith(prefix)]


async def _fetch_resource_names(global_args: Sequence[str]) -> List[str]:
    runner = KubectlRunner(find_kubectl(), global_args)
    try:
        done = await runner.run(
            ["get", COMPLETION_RESOURCE_KINDS, "-o", "name"], timeout=COMPLETION_TIMEOUT_S
        )
    finally:
        await runner.close()
    done.check()
    # `-o name` prints deployment.apps/web; `deployment/web` is what people type.
    return [_drop_api_group(line.strip()) for line in done.stdout.splitlines() if line.strip()]


def _drop_api_group(resource: str) -> str:
    kind, _, name = resource.partition("/")
    return "%s/%s" % (kind.split(".", 1)[0], name)


@dataclass
class CompletionInstallOptions:
    """`completion install [DIR]`: where the kubectl_complete-vibe helper is written."""

    action: str
    directory: str
    extra: List[str]
    argv0: str
    plugin_mode: bool

    @classmethod
    def from_flags(cls, flags: ParsedFlags, prog: str) -> CompletionInstallOptions:
        positionals = flags.positionals
        return cls(
            action=positionals[0] if positionals else "",
            directory=positionals[1] if len(positionals) > 1 else "",
            extra=positionals[2:],
            argv0=sys.argv[0] if sys.argv else "",
            plugin_mode=prog == "kubectl vibe",
        )

    def complete(self) -> None:
        if not self.directory and self.plugin_mode:
            # The directory kubectl found us in (krew's bin/, holding a symlink), not the
            # symlink's target in krew's store: only the former is on PATH.
            self.directory = os.path.dirname(os.path.abspath(self.argv0))

    def validate(self) -> None:
        if self.action != "install":
            raise UsageError(
                'unknown completion action "%s": use "completion install [DIR]"' % self.action
                if self.action
                else 'completion needs an action: "completion install [DIR]"',
                "completion",
            )
        if self.extra:
            raise UsageError(
                "completion install takes at most one DIR, got %s" % " ".join(self.extra),
                "completion",
            )
        if not self.directory:
            raise UsageError(
                "completion install needs a DIR on your PATH when not run as a kubectl plugin",
                "completion",
            )
        if not os.path.isdir(self.directory):
            raise VibeError("directory %s does not exist" % self.directory)

    def run(self) -> str:
        """Write the helper atomically, mode 0755; returns its path."""
        path = os.path.join(self.directory, COMPLETION_SHIM_NAME)
        temporary = path + ".tmp-%d" % os.getpid()
        try:
            with open(temporary, "w") as out:
                out.write(COMPLETION_SHIM)
            os.chmod(temporary, 0o755)
            os.replace(temporary, path)
        except OSError as exc:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise VibeError(
                "cannot write %s: %s" % (path, exc.strerror or exc),
                fix="Fix: pass a directory you can write that is on your PATH, e.g. "
                "kubectl vibe completion install ~/bin",
            ) from None
        return path


async def run_completion(flags: ParsedFlags, prog: str) -> int:
    """`completion install [DIR]`: make `kubectl vibe <TAB>` work (krew cannot install it)."""
    options = CompletionInstallOptions.from_flags(flags, prog)
    options.complete()
    options.validate()
    path = options.run()
    print("Installed %s" % path)
    print(
        "kubectl 1.26+ runs it to complete `kubectl vibe <TAB>`; kubectl's own completion must be "
        "enabled, e.g. `source <(kubectl completion bash)` in ~/.bashrc."
    )
    search_path = os.environ.get("PATH", "").split(os.pathsep)
    if os.path.abspath(options.directory) not in (os.path.abspath(d) for d in search_path if d):
        print("note: %s is not on your PATH, so kubectl will not find it." % options.directory)
    return 0


def version_line() -> str:
    return "kubectl-vibe v%s" % __version__


async def run_version(flags: ParsedFlags, prog: str) -> int:
    """Our version, the Python running us, and which kubectl children will use."""
    print(version_line())
    print("python %s (%s)" % (sys.version.split()[0], sys.executable or "unknown"))
    sys.stdout.flush()  # our lines first, even if kubectl is missing
    binary = find_kubectl()
    runner = KubectlRunner(binary, flags.globals_argv)
    try:
        done = await runner.run(["version", "--client", "-o", "json"], timeout=10)
    finally:
        await runner.close()
    try:
        client = json.loads(done.stdout)["clientVersion"]["gitVersion"]
    except (ValueError, KeyError, TypeError):
        client = "unknown version"
    print("kubectl %s (%s)" % (client, binary))
    return 0


#: Each command's run step, by name: async (flags, prog) -> exit code. Names, not objects, so the
#: table can sit here while the commands' sections are defined wherever the data flow puts them.
COMMAND_RUNNERS: Dict[str, str] = {
    "port-forward": "run_port_forward",
    "wait": "run_wait",
    "version": "run_version",
    "completion": "run_completion",
}


def dispatch(argv: Sequence[str], prog: str) -> int:
    """argv (without the program) → help, completion, or a command's run step."""
    if len(argv) > 1 and argv[0] == "help" and argv[1] in COMMANDS_BY_NAME:  # `help wait`
        sys.stdout.write(render_help(COMMANDS_BY_NAME[argv[1]], prog))
        return 0
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(render_root_help(prog))
        return 0
    if argv[0] in ("--version", "-V"):
        print(version_line())
        return 0
    if argv[0] == "__complete":
        return print_completions(argv[1:])
    command = COMMANDS_BY_NAME.get(argv[0])
    if command is None:
        if argv[0].startswith("-"):
            raise UsageError("unknown flag: %s" % argv[0].split("=")[0], prog=prog)
        raise UsageError('unknown command "%s" for "%s"' % (argv[0], prog), prog=prog)
    flags = FlagParser(command.flags, command.name).parse(argv[1:])
    if flags.get("help"):
        sys.stdout.write(render_help(command, prog))
        return 0
    handler = globals()[COMMAND_RUNNERS[command.name]]
    return asyncio.run(handler(flags, prog))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `kubectl vibe`, `kubectl-vibe`, `python3 -m kubectl_vibe_pf`."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = program_name()
    try:
        return dispatch(args, prog)
    except VibeError as exc:
        if isinstance(exc, UsageError) and not exc.prog:
            exc.prog = prog
        _print_error(exc.render())
        return exc.exit_code
    except KeyboardInterrupt:
        return 0  # kubectl's Ctrl-C exit code
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except Exception as exc:
        if os.environ.get(ENV_DEBUG):
            raise
        _print_error(
            "error: internal error: %s: %s\n"
            "Run again with %s=1 for a traceback, and please report it"
            % (type(exc).__name__, exc, ENV_DEBUG)
        )
        return EXIT_ERROR


def _print_error(text: str) -> None:
    try:
        sys.stderr.write(text.rstrip("\n") + "\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def _silence_stdout() -> None:
    """After EPIPE on stdout (e.g. `| head`), avoid a second error when Python flushes it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
