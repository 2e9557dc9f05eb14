#!/usr/bin/env python3
"""kubectl-vibe: `kubectl port-forward` and `kubectl wait`, observable, resilient, self-explaining.

One stdlib-first asyncio module. Runtime dependencies (rich, psutil, pyyaml) are imported
lazily, only by the code that needs them, so `--version`, `--help` and shell completion stay
as fast as a bare interpreter.

Map (sections in data-flow order: argv → options → targets → tunnel → proxy → display):

  §01 Header & compatibility    Python floor, version, cheap stdlib imports
  §02 Constants & limits        every tunable and buffer bound, with its reason
  §03 Errors                    VibeError tree; kubectl-style wording and exit codes
  §04 Utilities                 Go durations, human units, streaming JSON decoder
  §05 Flags                     pflag-compatible parser; kubectl global flags
  §06 Commands & help           the command table, usage texts, plugin-mode detection
  §07 port-forward arguments    TYPE/NAME, port specs, addresses (pure)
  §08 Targets                   selectors, pod choice, service → container port (pure)
  §09 kubectl output            Forwarding/Handling lines, klog errors, classification (pure)
  §10 Protocol sniffers         sans-IO: bytes in, events out (HTTP, TLS, gRPC, Postgres, Redis)
  §11 wait arguments            --for conditions, plain-English requests (pure)
  §12 wait rules                kstatus-like readiness, explanations (pure)
  §13 Kubectl runner            the only place that starts processes (I/O)
  §14 Tunnel supervisor         kubectl port-forward children, standby, backoff (I/O)
  §15 Proxy                     listeners the user owns, the lean relay, the registry (I/O)
  §16 port-forward session      live view, plain/JSON lines, summary, signals (I/O)
  §17 wait session              kubectl wait + watch, live progress, explanations (I/O)
  §18 Completion, version, main()

Rules: §04-§12 never do I/O (no asyncio, sockets, processes or clocks: time is passed in).
Only §13 starts processes. Inspection never sits on the relay's hot path.
"""

# ==== §01 Header & compatibility ===============================================================

from __future__ import annotations

import sys

if sys.version_info < (3, 9):  # noqa: UP036 - the one-line message *is* the point
    sys.stderr.write(
        "error: kubectl-vibe needs Python 3.9 or newer (found %s)\n" % sys.version.split()[0]
    )
    raise SystemExit(1)

import enum
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

__version__ = "0.1.0"

PY311 = sys.version_info >= (3, 11)


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

# ==== §02 Constants & limits ===================================================================

#: Environment variable kubectl (1.37+) sets to its own path when it dispatches a plugin.
ENV_KUBECTL_PATH = "KUBECTL_PATH"
#: Set to 1 to see Python tracebacks instead of one-line errors.
ENV_DEBUG = "KUBECTL_VIBE_DEBUG"
#: kubectl's exit code for every error path (cmdutil.DefaultErrorExitCode).
EXIT_ERROR = 1
#: Longest kubectl output line kept whole; longer ones are cut (a full pipe would block kubectl).
KUBECTL_LINE_LIMIT_BYTES = 1024 * 1024
#: How long a stopping kubectl gets after SIGTERM before SIGKILL.
KUBECTL_STOP_GRACE_S = 2.0
#: The relay's one shared read buffer. 256 KiB is asyncio's own recv size (max_size) and socat's
#: -b 262144 in the benchmark: fewer syscalls per GB without hurting latency.
RELAY_BUFFER_BYTES = 256 * 1024
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
# -- port-forward target resolution (§14a) --
#: How often the pod list is read again while no Running pod matches (kubectl watches instead).
RESOLVE_POLL_INTERVAL_S = 1.0
#: Bound on each kubectl get made while resolving a target (kubectl's own default is 32 s).
RESOLVE_REQUEST_TIMEOUT_S = 30.0
# -- wait (§11, §12, §17) --
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
#: How long the --llm command may think.
LLM_TIMEOUT_S = 60.0

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


class KubectlError(VibeError):
    """kubectl failed: its own last error line is the message, its exit code is ours."""

    def __init__(self, message: str, returncode: int = EXIT_ERROR, stderr: str = "") -> None:
        super().__init__(message, exit_code=returncode or EXIT_ERROR)
        self.stderr = stderr

    def render(self) -> str:
        # kubectl's own lines already carry their "error:" / "Error from server" prefix.
        if self.message.startswith(("error:", "Error", "E")):
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
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration ("1m30s", "-2h", "0", "1.5s"), exactly as time.ParseDuration."""
    body = text
    sign = 1.0
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError('time: invalid duration "%s"' % text)
    total = 0.0
    position = 0
    for match in _GO_DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _GO_DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(body):
        if re.fullmatch(r"[\d.]+", body):
            raise ValueError('time: missing unit in duration "%s"' % text)
        raise ValueError('time: invalid duration "%s"' % text)
    return sign * total


def format_go_duration(seconds: float) -> str:
    """Go's Duration.String() for whole seconds and above ("1m0s", "30s", "2h0m0s")."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    remaining = abs(seconds)
    hours, remaining = divmod(remaining, 3600)
    minutes, secs = divmod(remaining, 60)
    secs_text = ("%.9f" % secs).rstrip("0").rstrip(".") + "s"
    if hours:
        return "%s%dh%dm%s" % (sign, hours, minutes, secs_text)
    if minutes:
        return "%s%dm%s" % (sign, minutes, secs_text)
    return sign + secs_text


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


@dataclass(frozen=True)
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
    base = os.path.basename(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else ""))
    if base.startswith("kubectl-"):
        return "kubectl vibe"
    if base in ("__main__.py", "-m", ""):
        return "python3 -m kubectl_vibe_pf"
    return "python3 " + base


@dataclass(frozen=True)
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
        "output",
        FlagKind.STRING,
        "Output format: '' (live view on a terminal, kubectl lines when piped) or 'json' (one "
        "JSON object per event).",
        "o",
        default="",
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
        "templatefile, jsonpath, jsonpath-as-json, jsonpath-file). With -o json and a "
        "non-terminal stdout, progress is printed as JSON lines on stderr.",
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
        "Wait for resources that do not exist yet to be created first.",
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

 Without --for, waits for the kind's own readiness (Deployment available and rolled out, Pod
 Ready, Job complete, ...). A quoted plain-English request is turned into exact kubectl wait
 arguments, printed before anything runs.

 Exit codes: 0 condition met, 1 error or timeout (as kubectl), 3 --fail-fast saw a terminal
 failure.
""",
        examples="""
# Wait for the pod "busybox1" to contain the status condition of type "Ready"
{prog} wait --for=condition=Ready pod/busybox1

# Wait for the web deployment to be ready, stopping early if its pods cannot start
{prog} wait deploy/web --fail-fast --timeout=5m

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
    #: Any other TYPE: only the server knows whether it exists; §14a asks it, and then refuses it
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
        """kubectl's RESTMapper: case-insensitive; `NAME`, `NAME.GROUP` or `NAME.VERSION.GROUP`."""
        word = spelled.lower()
        name, _, group = word.partition(".")
        if name not in self.spellings:
            return False
        if not group:
            return True
        if not self.group:  # core kinds: "pods.v1" is the only qualified form
            return group == "v1"
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class PortSpec:
    """`[LOCAL:]REMOTE`. local None: the port the remote resolves to (the Service port for a
    Service, the container port otherwise); 0: a random free port. remote: a number or a name,
    as written (a Service port for svc/, a container port otherwise)."""

    local: Optional[int]
    remote: str
    text: str

    @property
    def remote_number(self) -> Optional[int]:
        """The remote as a number, if kubectl would read it as one (strconv.Atoi)."""
        return go_atoi(self.remote)


def parse_port_spec(text: str, kind: ResourceKind = ResourceKind.POD) -> PortSpec:
    """kubectl splitPort + client-go parsePorts, checking early what needs no lookup.

    Where kubectl reads a port with no colon, or with equal sides (`http:http`), the local port
    becomes what the remote resolves to: local None. For a Service the remote is checked against
    the Service (§08 resolve_forwards), so only the local side is checked here.
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
    """The pod-path checks kubectl makes whatever the pod holds (convertPodNamedPortToNumber)."""
    if remote == "":
        raise VibeError("remote port cannot be empty")
    if go_atoi(remote) is None:
        return  # a container port name: checked against the pod in §08
    if local is None:
        parse_local_port(remote)  # the remote is also the local port, and client-go reads it first
    parse_container_port(remote)


class FailureMode(enum.Enum):
    """client-go listen failure modes: ALL (localhost: fails only if every address fails) and
    ANY (an explicit IP: any failing address fails the port)."""

    ALL = "all"
    ANY = "any"


@dataclass(frozen=True)
class ListenAddress:
    address: str
    family: str  # "tcp4" or "tcp6", as net.Listen
    mode: FailureMode


@dataclass(frozen=True)
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


@dataclass
class PortForwardOptions:
    """kubectl port-forward's options: from_flags → complete (lookups) → validate → run (§16)."""

    ref: ResourceRef
    ports: List[PortSpec]
    listen: ListenPlan
    pod_running_timeout: float = 60.0
    namespace: str = ""
    output: str = ""
    live: Optional[bool] = None
    resolution: Optional[Resolution] = None

    @classmethod
    def from_flags(cls, flags: ParsedFlags) -> PortForwardOptions:
        """Positionals and flags, checked in kubectl's order (Complete, then client-go)."""
        args = flags.positionals
        if len(args) < 2:
            raise UsageError(
                "TYPE/NAME and list of ports are required for port-forward", "port-forward"
            )
        timeout = float(flags.get("pod-running-timeout", 60.0))
        _check_pod_running_timeout(timeout)
        ref = parse_resource_ref(args[0])
        options = cls(
            ref=ref,
            ports=[parse_port_spec(text, ref.kind) for text in args[1:]],
            listen=parse_addresses(list(flags.get("address") or ["localhost"])),
            pod_running_timeout=timeout,
            namespace=flags.namespace,
            output=flags.get("output") or "",
            live=False if flags.get("no-live") else None,
        )
        return options

    def validate(self) -> None:
        _check_pod_running_timeout(self.pod_running_timeout)
        if not self.ports:
            raise VibeError("at least 1 PORT is required for port-forward")
        if self.output not in OUTPUT_FORMATS:
            raise VibeError(
                'unable to match a printer suitable for the output format "%s", allowed formats '
                "are: json" % self.output
            )

    async def complete(self, runner: KubectlRunner) -> Resolution:
        """Namespace from the kubeconfig when -n is absent, then TYPE/NAME → a Running pod."""
        resolver = TargetResolver(runner, self.namespace)
        if not self.namespace:
            self.namespace = await resolver.namespace_default()
            resolver.namespace = self.namespace
        self.resolution = await resolver.resolve(self.ref, self.ports, self.pod_running_timeout)
        return self.resolution


def _check_pod_running_timeout(timeout: float) -> None:
    if timeout <= 0:
        raise UsageError("--pod-running-timeout must be higher than zero", "port-forward")


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
            "invalid label selector: %r is not a valid label selector operator" % operator
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


@dataclass(frozen=True)
class Forward:
    """One resolved forward: local port (0 = random) → container port on the chosen pod."""

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


def resolve_forwards(
    ref: ResourceRef, obj: Dict[str, Any], pod: Dict[str, Any], specs: Sequence[PortSpec]
) -> List[Forward]:
    """kubectl's port translation, re-applied to each new pod (named targetPorts may differ)."""
    if obj.get("kind") == "Service":
        svc_ports = (obj.get("spec") or {}).get("ports") or []
        _check_udp(
            specs, _udp_only(svc_ports, "port"), lambda name: service_port_by_name(obj, name)
        )
        return [_service_forward(obj, pod, spec) for spec in specs]
    udp_only = _udp_only(_container_ports(pod, with_init=False), "containerPort")
    _check_udp(specs, udp_only, lambda name: container_port_by_name(pod, name))
    return [_pod_forward(pod, spec) for spec in specs]


def _service_forward(svc: Dict[str, Any], pod: Dict[str, Any], spec: PortSpec) -> Forward:
    """translateServicePortToTargetPort: a named remote becomes its Service port number first."""
    service_port = spec.remote_number
    if service_port is None:
        service_port = service_port_by_name(svc, spec.remote)
    container_port = container_port_for_service_port(svc, pod, service_port)
    local = service_port if spec.local is None else spec.local
    if spec.local is None:
        local = parse_local_port(str(service_port))
    return Forward(local, parse_container_port(str(container_port)), spec, service_port)


def _pod_forward(pod: Dict[str, Any], spec: PortSpec) -> Forward:
    """convertPodNamedPortToNumber, then client-go parsePorts on the result."""
    if spec.remote == "":
        raise VibeError("remote port cannot be empty")
    remote_text = spec.remote
    if spec.remote_number is None:
        remote_text = str(container_port_by_name(pod, spec.remote))
    local = parse_local_port(remote_text) if spec.local is None else spec.local
    return Forward(local, parse_container_port(remote_text), spec, None)


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


def describe_pod_health(pod: Dict[str, Any]) -> List[str]:
    """Plain lines that may explain a dead tunnel: restarts (OOMKilled...), waits, not Ready."""
    status = pod.get("status") or {}
    lines: List[str] = []
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        lines.append(
            "pod %s is being deleted (since %s)"
            % (pod_name(pod), pod["metadata"]["deletionTimestamp"])
        )
    phase = pod_phase(pod)
    if phase and phase != "Running":
        reason = status.get("reason") or ""
        lines.append("pod %s is %s%s" % (pod_name(pod), phase, " (%s)" % reason if reason else ""))
    for container in status.get("initContainerStatuses") or []:
        lines.extend(_container_health_lines(container, init=True))
    for container in status.get("containerStatuses") or []:
        lines.extend(_container_health_lines(container, init=False))
    if phase == "Running" and not is_pod_ready(pod):
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

# ==== §09 kubectl output =======================================================================


class ErrorCause(enum.Enum):
    """Why a kubectl port-forward error happened, as far as its text tells."""

    POD_GONE = "pod-gone"
    NOT_LISTENING = "not-listening"
    PEER_RESET = "peer-reset"
    STUCK_TUNNEL = "stuck-tunnel"
    FORBIDDEN = "forbidden"
    UNREACHABLE = "unreachable"
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
        r"|unable to find sandbox|could not find sandbox",
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
    ErrorCause.OTHER: ("kubectl reported an unexpected error", "see the message above"),
}


def describe_cause(cause: ErrorCause) -> Tuple[str, str]:
    """(what happened, what to do), one line each, for the live view and the summary."""
    return _CAUSE_TEXT[cause]


@dataclass(frozen=True)
class ForwardingFrom:
    address: str
    local_port: int
    remote_port: int


@dataclass(frozen=True)
class HandlingConnection:
    local_port: int


@dataclass(frozen=True)
class ForwardError:
    cause: ErrorCause
    message: str
    local_port: Optional[int] = None
    remote_port: Optional[int] = None


@dataclass(frozen=True)
class LostConnection:
    pass


@dataclass(frozen=True)
class ListenFailed:
    local_port: int
    message: str


@dataclass(frozen=True)
class FatalError:
    message: str
    cause: ErrorCause = ErrorCause.OTHER


@dataclass(frozen=True)
class Unrecognized:
    text: str


KubectlEvent = Any  # one of the frozen dataclasses above

_FORWARDING_FROM = re.compile(r"^Forwarding from (\[[^\]]+\]|[^\s:]+):(\d+) -> (\d+)$")
_HANDLING = re.compile(r"^Handling connection for (\d+)$")
_LISTEN_FAILED = re.compile(r"^Unable to listen on port (\d+): (.*)$")
#: klog header: severity, MMDD, time, thread id, file:line]
_KLOG = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ([^ \]]+)\] (.*)$")
#: "an error occurred forwarding 8080 -> 80: ..." (≤1.36 message body)
_FORWARDING_PORTS = re.compile(r"(?:forwarding|port) (\d+) -> (\d+)")
_GO_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_STRUCTURED = re.compile(r"^" + _GO_QUOTED + r"(.*)$")
_KV = re.compile(r"(\w+)=(" + _GO_QUOTED + r"|\S+)")


def go_unquote(body: str) -> str:
    """Undo Go's strconv.Quote (as klog's structured values use it)."""
    try:
        return json.loads('"' + body + '"')
    except ValueError:
        return re.sub(r"\\(.)", r"\1", body)


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


def _parse_klog(text: str) -> KubectlEvent:
    match = _KLOG.match(text)
    assert match is not None
    message, values = parse_klog_structured(match.group(3))
    if message == "lost connection to pod":  # kubectl 1.23-1.26 logged it, exit 0
        return LostConnection()
    detail = values.get("err", "")
    full = (
        message
        if not detail
        else (detail if message == "Unhandled Error" else message + ": " + detail)
    )
    local, remote = _int_or_none(values.get("localPort")), _int_or_none(values.get("remotePort"))
    ports = _FORWARDING_PORTS.search(full)
    if ports and local is None:
        local, remote = int(ports.group(1)), int(ports.group(2))
    if match.group(1) in "IW" and not detail:
        return Unrecognized(text)
    return ForwardError(classify_error(full), full, local, remote)


def parse_kubectl_line(stream_name: str, text: str) -> KubectlEvent:
    """One line kubectl port-forward printed (stdout or stderr) → an event."""
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


# ==== §10 Protocol sniffers ====================================================================

# ==== §11 wait arguments =======================================================================

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
    READINESS = "readiness"  # no --for at all: the kind's own readiness (§12)


@dataclass(frozen=True)
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
    version) → validate (pure) → run (§17, the only I/O)."""

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
        """`→ kubectl wait deployment/web -n prod --for=condition=Available --timeout=5m`."""
        vibe_only = not self.fors or any(
            arg.split("=", 1)[0] in ("--fail-fast", "--wait-for-create") for arg in self.translated
        )
        command = "%s wait" % prog if vibe_only else "kubectl wait"
        return "→ %s %s" % (command, " ".join(_shell_quote(arg) for arg in self.translated))

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
    if is_plain_english(parsed.positionals) or not (parsed.positionals or parsed.get("filename")):
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
    return re.compile(r"(?:%s)(?=$|[\s,.;!?])[\s,.;!?]*" % pattern, re.IGNORECASE)


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


def _for_phrase(phrase: Phrase, kind: str, parse: RequestParse) -> List[str]:
    """The exact --for values a phrase means for a kind ([] = the kind's own readiness)."""
    table: Dict[Tuple[Phrase, str], List[str]] = {
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
    if phrase is Phrase.DELETED:
        return ["delete"]
    if phrase is Phrase.CREATED:
        return ["create"]
    if (phrase, kind) in table:
        return table[(phrase, kind)]
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


# ==== §12 wait rules ===========================================================================


class ResourceStatus(enum.Enum):
    """kstatus's statuses: what a waited resource is doing right now."""

    IN_PROGRESS = "InProgress"
    CURRENT = "Current"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    NOT_FOUND = "NotFound"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
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


def _pod_status(pod: Dict[str, Any]) -> StatusReport:
    phase = _status(pod).get("phase") or "Pending"
    if phase == "Succeeded":
        return StatusReport(ResourceStatus.CURRENT, "Pod has completed successfully")
    if phase == "Failed":
        reason = _status(pod).get("reason") or "Failed"
        return StatusReport(
            ResourceStatus.FAILED, "Pod has failed: %s" % reason, (reason,), "Pod Failed"
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
    why = "%s is %s" % (_condition_text(condition, wanted.name), condition.get("status"))
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
    return commands


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


@dataclass(frozen=True)
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
    lines += _explain_pods(pods, now)
    lines += _explain_events(events, now)
    if item.report.status is ResourceStatus.NOT_FOUND:
        commands = next_commands_not_found(item.obj_id, item.namespace)
    else:
        commands = next_commands(item.obj_id, item.namespace, pods)
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


# ==== §13 Kubectl runner =======================================================================

import shutil  # noqa: E402
import signal  # noqa: E402


class Stream(enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


#: Receives each complete line a kubectl child prints, without its newline.
LineHandler = Callable[[Stream, str], None]


@dataclass(frozen=True)
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
        if self._watchdog is not None and self._watchdog.returncode is None:
            return
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

    def kill_group_now(self) -> None:
        """Synchronous last resort: kill every child (and the watchdog) at once."""
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.pgid = None


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
            chunk = await reader.read(256 * 1024)
            if not chunk:
                return
            self._on_data(chunk)

    async def _drain_lines(self, reader: Optional[asyncio.StreamReader], stream: Stream) -> None:
        assert reader is not None
        while True:
            try:
                raw = await reader.readline()
            except ValueError:  # a line over the limit: asyncio dropped it; keep draining
                continue
            if not raw:
                return
            self._on_line(stream, raw.decode("utf-8", "replace").rstrip("\r\n"))

    async def wait(self) -> int:
        """Exit code, once the child has exited *and* everything it printed was delivered."""
        code = await self.proc.wait()
        await asyncio.gather(*self._drains, return_exceptions=True)
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

    async def start(
        self,
        args: Sequence[str],
        on_line: LineHandler,
        on_data: Optional[Callable[[bytes], None]] = None,
    ) -> KubectlProcess:
        """Start a long-running child (`port-forward`, `get -w`, `wait`)."""
        proc = await self._spawn(args, asyncio.subprocess.DEVNULL)
        child = KubectlProcess(proc, self.argv(args), on_line, on_data)
        self._live = [p for p in self._live if p.returncode is None]
        self._live.append(child)
        return child

    @property
    def live(self) -> List[KubectlProcess]:
        return [p for p in self._live if p.returncode is None]

    async def close(self, grace: float = KUBECTL_STOP_GRACE_S) -> None:
        """Stop every child this runner started, then the lifeline."""
        await asyncio.gather(*(child.stop(grace) for child in self._live), return_exceptions=True)
        self._live = []
        self._lifeline.kill_group_now()

    def kill_all_now(self) -> None:
        self._lifeline.kill_group_now()


# ==== §14 Tunnel supervisor ====================================================================

# ---- §14a Target resolution: TYPE/NAME → a Running pod and its container ports (I/O) ----------


@dataclass(frozen=True)
class Resolution:
    """TYPE/NAME resolved: the chosen Running pod and the forwards mapped onto it."""

    ref: ResourceRef
    pod_name: str
    pod: Dict[str, Any]
    forwards: Tuple[Forward, ...]
    obj: Dict[str, Any]


class TargetResolver:
    """TYPE/NAME → a Running pod and its container ports, with kubectl's lookups and messages.

    Unlike kubectl, which fails at once when the chosen pod is not Running, a Pending or
    Unknown pod is waited for (up to the timeout): during a failover the next pod is usually
    still starting. Failed and Succeeded pods fail at once, with kubectl's message.
    """

    def __init__(self, runner: KubectlRunner, namespace: str) -> None:
        self.runner = runner
        self.namespace = namespace

    def _ns(self) -> List[str]:
        return ["-n", self.namespace] if self.namespace else []

    async def namespace_default(self) -> str:
        """The namespace of the kubeconfig's current context, else "default" (as kubectl)."""
        done = await self.runner.run(
            ["config", "view", "--minify", "-o", "jsonpath={..namespace}"],
            timeout=RESOLVE_REQUEST_TIMEOUT_S,
        )
        words = done.stdout.split() if done.returncode == 0 else []
        return words[0] if words else "default"

    async def get_object(self, ref: ResourceRef) -> Dict[str, Any]:
        """The object TYPE/NAME names; kubectl's own error line (NotFound, unknown TYPE) if not."""
        return await self.runner.get_json([ref.get_arg, *self._ns()], RESOLVE_REQUEST_TIMEOUT_S)

    async def list_pods(self, selector: str) -> List[Dict[str, Any]]:
        args = ["pods", *self._ns()] + (["-l", selector] if selector else [])
        listed = await self.runner.get_json(args, RESOLVE_REQUEST_TIMEOUT_S)
        return list(listed.get("items") or [])

    async def resolve(
        self,
        ref: ResourceRef,
        specs: Sequence[PortSpec],
        timeout: float,
        exclude: Any = frozenset(),
    ) -> Resolution:
        """kubectl Complete + Run's pod checks: object, pod choice, phase, port mapping."""
        loop = asyncio.get_event_loop()
        deadline = loop.time() + timeout
        obj = await self.get_object(ref)
        selector = None if obj.get("kind") == "Pod" else selector_for(obj)
        while True:
            pod = await self._candidate(obj, selector, exclude)
            if pod is not None and pod_phase(pod) in POD_TERMINAL_PHASES:
                raise VibeError(pod_not_running_message(pod))
            if pod is not None and pod_phase(pod) == "Running":
                forwards = resolve_forwards(ref, obj, pod, specs)
                return Resolution(ref, pod_name(pod), pod, tuple(forwards), obj)
            remaining = deadline - loop.time()
            if remaining <= 0:
                if pod is None:
                    raise VibeError("timed out waiting for the condition")
                raise VibeError(pod_not_running_message(pod))
            await asyncio.sleep(min(RESOLVE_POLL_INTERVAL_S, remaining))

    async def _candidate(
        self, obj: Dict[str, Any], selector: Optional[str], exclude: Any
    ) -> Optional[Dict[str, Any]]:
        """The pod kubectl would pick now: the pod itself, or the best of the selector's."""
        if selector is None:
            if pod_name(obj) in exclude:
                return None
            fresh = await self.get_object(
                ResourceRef(ResourceKind.POD, pod_name(obj), pod_name(obj))
            )
            return fresh
        return choose_pod(await self.list_pods(selector), exclude)

    async def pod(self, name: str) -> Dict[str, Any]:
        return await self.get_object(ResourceRef(ResourceKind.POD, name, name))

    async def pod_events(self, pod_name: str) -> List[Dict[str, Any]]:
        """Recent events of a pod, oldest first, to explain why a tunnel died."""
        selector = "involvedObject.name=%s,involvedObject.kind=Pod" % pod_name
        listed = await self.runner.get_json(
            ["events", *self._ns(), "--field-selector", selector], RESOLVE_REQUEST_TIMEOUT_S
        )
        events = list(listed.get("items") or [])
        events.sort(key=event_time)
        return events


# ---- §14b Tunnels: kubectl port-forward children behind the proxy -----------------------------
#
# A Tunnel is one `kubectl port-forward pod/P :R1 :R2 --address 127.0.0.1` child: kubectl picks
# free loopback ports and says which in its `Forwarding from` lines. The Supervisor keeps an
# active tunnel and a warm standby to the same pod (kubectl closes a whole tunnel on the first
# error of any one connection, kubectl#1169), watches the pods, and rebuilds both on a new pod,
# with capped exponential backoff, whenever they die.


class LinkOutcome(enum.Enum):
    CLOSED = "closed"  # both sides finished normally
    RESET = "reset"  # established, then cut (tunnel lost, peer reset)
    FAILED = "failed"  # never reached the pod (no tunnel in time, refused, nothing listening)


@dataclass(frozen=True)
class Lease:
    """Where one link's upstream goes: a tunnel's loopback port (tunnel is opaque here)."""

    host: str
    port: int
    tunnel: Any = None


@dataclass(frozen=True)
class Verdict:
    """What a failed tunnel means for a link that had no answer yet."""

    reason: str
    retry: bool  # replay on the next tunnel (pod gone, tunnel lost) or not (nothing listening)
    outcome: LinkOutcome


class NoUpstream(Exception):
    """No tunnel became ready in time; the message says why (shown and counted)."""


class UpstreamSource:
    """What the proxy needs from the tunnels. StaticUpstream (benchmarks) and Supervisor."""

    async def acquire(self, key: int, timeout: float) -> Lease:
        """A lease for forward number `key`, waiting up to `timeout` for a ready tunnel."""
        raise NotImplementedError

    def link_ended(self, lease: Lease, link: Link) -> None:
        """Called when a link that used `lease` ends; lets the tunnel reclassify it later."""

    async def verdict(self, lease: Lease, wait: float) -> Optional[Verdict]:
        """If the lease's tunnel fails within `wait` seconds: what that means for the link."""
        return None


class TunnelState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FAILING = "failing"  # kubectl reported a fatal error and is about to exit
    EXITED = "exited"


class Tunnel:
    """One kubectl port-forward child, its loopback ports and how it ended."""

    def __init__(self, pod_name: str, namespace: str, remote_ports: Sequence[int]) -> None:
        self.pod_name = pod_name
        self.namespace = namespace
        self.remote_ports = tuple(sorted(set(remote_ports)))
        self.state = TunnelState.STARTING
        self.local_ports: Dict[int, int] = {}
        self.cause: Optional[ErrorCause] = None
        self.error = ""
        self.exit_code: Optional[int] = None
        self.stderr_tail: Any = None  # collections.deque of recent unparsed lines
        self.recent_ends: Any = None  # deque of (time, link) for late reclassification
        self.process: Optional[KubectlProcess] = None
        self.ready = asyncio.Event()
        self.ended = asyncio.Event()
        self._on_change: Callable[[Tunnel], None] = _ignore_tunnel_change

    def __repr__(self) -> str:
        return "<Tunnel %s %s %s>" % (self.pod_name, self.state.value, self.local_ports)

    @property
    def usable(self) -> bool:
        return self.state in (TunnelState.STARTING, TunnelState.READY)

    def argv(self) -> List[str]:
        ports = [":%d" % port for port in self.remote_ports]
        return ["port-forward", "pod/" + self.pod_name, "-n", self.namespace,
                "--address", "127.0.0.1", *ports]  # fmt: skip

    async def start(self, runner: KubectlRunner, on_change: Callable[[Tunnel], None]) -> None:
        import collections

        self.stderr_tail = collections.deque(maxlen=TUNNEL_STDERR_TAIL_LINES)
        self.recent_ends = collections.deque(maxlen=TUNNEL_RECENT_LINKS)
        self._on_change = on_change
        self.process = await runner.start(self.argv(), self._on_line)
        asyncio.ensure_future(self._watch_exit())

    async def stop(self) -> None:
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
        if self.state is TunnelState.STARTING and all(
            port in self.local_ports for port in self.remote_ports
        ):
            self.state = TunnelState.READY
            self.ready.set()
            self._on_change(self)

    def _failed(self, event: Any) -> None:
        cause = getattr(event, "cause", None) or classify_error(getattr(event, "message", ""))
        if self.cause is None or self.cause is ErrorCause.OTHER:
            self.cause = cause
            self.error = getattr(event, "message", "") or "lost connection to pod"
        if self.state in (TunnelState.STARTING, TunnelState.READY):
            self.state = TunnelState.FAILING
            self.ended.set()
            self._on_change(self)

    def _lost(self, event: Any) -> None:
        if self.cause is None:
            self.cause = ErrorCause.OTHER
            self.error = "lost connection to pod"
        self._failed(event)

    # -- links that ended just before the tunnel failed were cut by it -------------------------

    def note_link_ended(self, link: Link, now: float) -> None:
        if self.recent_ends is not None and self.state is not TunnelState.EXITED:
            self.recent_ends.append((now, link))

    def links_cut_by_failure(self, now: float) -> List[Link]:
        if self.recent_ends is None:
            return []
        return [link for ended, link in self.recent_ends if now - ended <= TUNNEL_VERDICT_WINDOW_S]


def _ignore_tunnel_change(tunnel: Tunnel) -> None:
    pass


_TUNNEL_HANDLERS: Dict[type, Callable[[Tunnel, Any], None]] = {
    ForwardingFrom: Tunnel._forwarding,
    ForwardError: Tunnel._failed,
    FatalError: Tunnel._failed,
    ListenFailed: Tunnel._failed,
    LostConnection: Tunnel._lost,
}


class ForwardState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"


class EventKind(enum.Enum):
    FORWARDING = "forwarding"  # a local port is listening and its first tunnel is ready
    CONNECTION = "connection"  # a client connected (kubectl's "Handling connection for N")
    TUNNEL_LOST = "tunnel_lost"
    RECONNECTING = "reconnecting"
    RECONNECTED = "reconnected"
    POD = "pod"  # the pod behind the forward changed: replaced, restarted, not ready
    LISTEN_FAILED = "listen_failed"
    ERROR = "error"
    STOPPED = "stopped"


@dataclass(frozen=True)
class SessionEvent:
    """Something the user should hear about, from any target; sinks decide how to show it."""

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


#: Receives every SessionEvent (the session fans them out to the display and sinks).
EventSink = Callable[[SessionEvent], None]


class Supervisor(UpstreamSource):
    """Keeps one target forwarding: tunnels up, pods watched, failures counted and explained."""

    def __init__(
        self,
        runner: KubectlRunner,
        resolver: Any,
        resolution: Any,
        specs: Sequence[Any],
        *,
        pod_running_timeout: float,
        emit: EventSink,
    ) -> None:
        self.runner = runner
        self.resolver = resolver
        self.resolution = resolution
        self.specs = list(specs)
        self.pod_running_timeout = pod_running_timeout
        self._emit = emit
        self.state = ForwardState.STARTING
        self.attempt = 0
        self.reason = ""
        self.active: Optional[Tunnel] = None
        self.standby: Optional[Tunnel] = None
        self.proxies: List[ForwardProxy] = []
        self.reconnects: Dict[str, int] = {}
        self.pod_notes: List[str] = []  # restarts, waiting reasons: for the summary
        self.fatal: Optional[VibeError] = None
        self.pods_seen: Dict[str, dict] = {}
        self.dead_pods: set[str] = set()
        self._needs_resolve = False
        self._ever_ready = False
        self._wake = asyncio.Event()
        self._active_ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._tasks: List[Any] = []
        self.uptime = UptimeClock()

    def __repr__(self) -> str:
        return "<Supervisor %s %s pod=%s>" % (self.label, self.state.value, self.pod_name)

    @property
    def label(self) -> str:
        return self.resolution.ref.text

    @property
    def pod_name(self) -> str:
        return self.resolution.pod_name

    def emit(self, kind: EventKind, message: str, **data: Any) -> None:
        self._emit(SessionEvent(_wall_clock(), kind, self.label, message, tuple(data.items())))

    # -- the proxy's side: leases and verdicts -----------------------------------------------------

    async def acquire(self, key: int, timeout: float) -> Lease:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            tunnel = self.active
            if tunnel is not None and tunnel.state is TunnelState.READY:
                port = tunnel.local_ports.get(self.resolution.forwards[key].remote_port)
                if port:
                    return Lease("127.0.0.1", port, tunnel)
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopped.is_set():
                raise NoUpstream(self._why_no_tunnel(timeout))
            self._active_ready.clear() if tunnel is None or not tunnel.usable else None
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

    def link_ended(self, lease: Lease, link: Link) -> None:
        if isinstance(lease.tunnel, Tunnel):
            lease.tunnel.note_link_ended(link, asyncio.get_running_loop().time())

    async def verdict(self, lease: Lease, wait: float) -> Optional[Verdict]:
        tunnel = lease.tunnel
        if not isinstance(tunnel, Tunnel):
            return None
        try:
            await asyncio.wait_for(tunnel.ended.wait(), wait)
        except asyncio.TimeoutError:
            return None
        cause = tunnel.cause or ErrorCause.OTHER
        reason = cause_summary(cause, tunnel.remote_ports)
        if cause in (ErrorCause.NOT_LISTENING, ErrorCause.FORBIDDEN):
            return Verdict(reason, retry=False, outcome=LinkOutcome.FAILED)
        return Verdict(reason, retry=True, outcome=LinkOutcome.RESET)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until stop(): keep an active and a standby tunnel, rebuilding them as they die."""
        self._tasks.append(asyncio.ensure_future(self._watch_pods()))
        while not self._stopped.is_set():
            try:
                await self._step()
            except VibeError as exc:
                if self._is_fatal(exc):
                    self.fatal = exc
                    self.state = ForwardState.FAILED
                    self.emit(EventKind.ERROR, exc.message)
                    return
                await self._retry_later(exc.message)
                continue
            await self._sleep(None)

    def _is_fatal(self, exc: VibeError) -> bool:
        """Only what can never work ends the session: RBAC refusing the very first tunnel."""
        return not self._ever_ready and classify_error(exc.message) is ErrorCause.FORBIDDEN

    async def _step(self) -> None:
        if self._needs_resolve:
            await self._re_resolve()
        active_lost = self.active is None or not self.active.usable
        if active_lost and not self._promote_standby():
            self.active = await self._start_tunnel(wait_ready=True)
            self._became_ready()
        if self.standby is None or not self.standby.usable:
            self.standby = await self._start_tunnel(wait_ready=False)

    def _promote_standby(self) -> bool:
        standby = self.standby
        if standby is None or standby.state is not TunnelState.READY:
            return False
        self.active, self.standby = standby, None
        self.emit(EventKind.RECONNECTED, "switched to the standby tunnel to pod %s" % self.pod_name)
        self._became_ready()
        return True

    async def _start_tunnel(self, wait_ready: bool) -> Tunnel:
        remote_ports = [forward.remote_port for forward in self.resolution.forwards]
        tunnel = Tunnel(self.pod_name, self.resolver.namespace, remote_ports)
        await tunnel.start(self.runner, self._tunnel_changed)
        if not wait_ready:
            return tunnel
        ready = asyncio.ensure_future(tunnel.ready.wait())
        ended = asyncio.ensure_future(tunnel.ended.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        await asyncio.wait([ready, ended, stopped], timeout=TUNNEL_START_TIMEOUT_S,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        for waiter in (ready, ended, stopped):
            waiter.cancel()
        if tunnel.state is TunnelState.READY:
            return tunnel
        await tunnel.stop()
        if tunnel.cause is ErrorCause.POD_GONE:
            self._mark_pod_gone(self.pod_name)
        raise VibeError(tunnel.error or "kubectl port-forward was not ready within %s"
                        % format_go_duration(TUNNEL_START_TIMEOUT_S))  # fmt: skip

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
        await self._sleep(delay)

    async def _sleep(self, delay: Optional[float]) -> None:
        """Until something changes (a tunnel, a pod, stop()) or `delay` seconds pass."""
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()

    # -- tunnels and pods changing under us --------------------------------------------------------

    def _tunnel_changed(self, tunnel: Tunnel) -> None:
        if tunnel.state is TunnelState.READY:
            if tunnel is self.active:
                self._active_ready.set()
            self._wake.set()
            return
        if tunnel.usable:
            return
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
        self._cut_links_of(tunnel, summary)
        detail = (": " + tunnel.error) if tunnel.error else ""
        self.emit(EventKind.TUNNEL_LOST, "%s%s" % (summary, detail), cause=cause.name.lower())
        standby_ready = self.standby is not None and self.standby.state is TunnelState.READY
        if not standby_ready or self._needs_resolve:
            self.state = ForwardState.RECONNECTING
            self.reason = summary
            self.uptime.down(_monotonic())

    def _cut_links_of(self, tunnel: Tunnel, reason: str) -> None:
        """Links the pod already answered die with their tunnel: reset them, say why."""
        now = asyncio.get_running_loop().time()
        for link in tunnel.links_cut_by_failure(now):
            link.forward.stats.reclassify_as_reset(reason)
        tunnel.recent_ends.clear()
        for proxy in self.proxies:
            for link in list(proxy.links):
                if link.lease is not None and link.lease.tunnel is tunnel and link.down_bytes:
                    link.client.abort()
                    if link.upstream is not None:
                        link.upstream.abort()
                    link.finish(LinkOutcome.RESET, reason)

    def _mark_pod_gone(self, pod_name: str) -> None:
        if pod_name != self.pod_name or pod_name in self.dead_pods:
            return
        self.dead_pods.add(pod_name)
        self._needs_resolve = True
        for tunnel in (self.active, self.standby):
            if tunnel is not None and tunnel.pod_name == pod_name and tunnel.usable:
                asyncio.ensure_future(tunnel.stop())
        self._wake.set()

    async def _re_resolve(self) -> None:
        previous = self.pod_name
        self.state = ForwardState.RECONNECTING
        self.reason = "pod %s is gone; waiting for a Ready replacement" % previous
        resolution = await self.resolver.resolve(
            self.resolution.ref,
            self.specs,
            self.pod_running_timeout,
            exclude=frozenset(self.dead_pods),
        )
        if not is_pod_ready(resolution.pod) and resolution.ref.kind is not ResourceKind.POD:
            raise VibeError("pod %s is not Ready yet" % resolution.pod_name)
        self.resolution = resolution
        self._needs_resolve = False
        for tunnel in (self.active, self.standby):
            if tunnel is not None and tunnel.pod_name != resolution.pod_name:
                await tunnel.stop()
        self.active = self.standby = None
        message = "now forwarding to pod %s (was %s)" % (resolution.pod_name, previous)
        self.emit(EventKind.POD, message, pod=resolution.pod_name, previous=previous)

    async def _watch_pods(self) -> None:
        """`kubectl get pods -w` on the target's pods: deaths, replacements, restarts."""
        while not self._stopped.is_set():
            on_data = functools.partial(self._pod_events, JsonStreamDecoder())
            try:
                child = await self.runner.start(self._pod_watch_args(), _ignore_line, on_data)
                await child.wait()
            except VibeError:
                pass
            await self._wait_stopped(POD_WATCH_RESTART_S)

    def _pod_watch_args(self) -> List[str]:
        ref = self.resolution.ref
        args = ["get", "pods", "-n", self.resolver.namespace, "-w", "-o", "json",
                "--output-watch-events"]  # fmt: skip
        if ref.kind is ResourceKind.POD:
            return [*args, "--field-selector", "metadata.name=" + ref.name]
        return [*args, "-l", selector_for(self.resolution.obj)]

    def _pod_events(self, decoder: JsonStreamDecoder, data: bytes) -> None:
        for document in decoder.feed(data):
            if isinstance(document, dict) and isinstance(document.get("object"), dict):
                self._pod_changed(document.get("type", ""), document["object"])

    def _pod_changed(self, kind: str, pod: dict) -> None:
        name = pod.get("metadata", {}).get("name", "")
        before = self.pods_seen.get(name)
        if kind == "DELETED":
            self.pods_seen.pop(name, None)
        else:
            self.pods_seen[name] = pod
        if name == self.pod_name:
            self._note_pod_health(before, pod, deleted=kind == "DELETED")
            if kind == "DELETED" or pod.get("metadata", {}).get("deletionTimestamp"):
                self.emit(EventKind.POD, "pod %s is terminating" % name, pod=name)
                self._mark_pod_gone(name)
        if self.state is not ForwardState.READY:
            self._wake.set()

    def _note_pod_health(self, before: Optional[dict], pod: dict, deleted: bool) -> None:
        if deleted or before is None:
            return
        old, new = describe_pod_health(before), describe_pod_health(pod)
        for line in new:
            if line not in old:
                self.pod_notes.append(line)
                del self.pod_notes[:-POD_NOTES_KEPT]
                self.emit(EventKind.POD, "pod %s: %s" % (pod["metadata"]["name"], line))

    # -- stopping ----------------------------------------------------------------------------------

    async def _wait_stopped(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stopped.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self.state = ForwardState.STOPPED
        self.uptime.down(_monotonic())
        for task in self._tasks:
            task.cancel()
        tunnels = [tunnel for tunnel in (self.active, self.standby) if tunnel is not None]
        await asyncio.gather(*(tunnel.stop() for tunnel in tunnels), return_exceptions=True)


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


def _ignore_line(stream: Stream, text: str) -> None:
    pass


def _wall_clock() -> float:
    import time

    return time.time()


def _monotonic() -> float:
    import time

    return time.monotonic()


# ==== §15 Proxy ================================================================================
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


class StaticUpstream(UpstreamSource):
    """A fixed upstream address, for benchmarks and tests of the data path without kubectl."""

    def __init__(self, host: str, port: int) -> None:
        self.lease = Lease(host, port)

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
        "state",
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
        self.down_bytes = 0
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
                transport, _ = await loop.create_connection(
                    RelayProtocols.upstream_half(self), lease.host, lease.port
                )
            except OSError:
                # The tunnel died between acquire and connect: take the next one, within time.
                forward.source.link_ended(lease, self)
                if loop.time() >= deadline:
                    self.fail("tunnel refused the connection")
                    return
                await asyncio.sleep(LINK_RETRY_PAUSE_S)
                continue
            if self.state is LinkState.CLOSED:  # the client left while we were connecting
                transport.close()
                forward.source.link_ended(lease, self)
                return
            self.opened(transport, lease)
            return

    def opened(self, transport: Any, lease: Lease) -> None:
        self.upstream = transport
        self.lease = lease
        self.state = LinkState.OPEN
        _set_nodelay(transport)
        if self.pending:
            transport.write(bytes(self.pending))
            self.forward.stats.bytes_up += len(self.pending)
        self.replay = self.pending if len(self.pending) <= LINK_REPLAY_MAX_BYTES else None
        self.pending = bytearray()
        if self.client_eof and transport.can_write_eof():
            transport.write_eof()
        self.client.resume_reading()

    # -- the hot path: one call per chunk in each direction -------------------------------------

    def from_client(self, nbytes: int) -> None:
        view = self.forward.relay.view[:nbytes]
        if self.state is not LinkState.OPEN:
            self.pending += view
            if len(self.pending) > LINK_PENDING_MAX_BYTES:
                self.client.pause_reading()
            return
        self.forward.stats.bytes_up += nbytes
        if self.replay is not None:
            self.replay += view
            if len(self.replay) > LINK_REPLAY_MAX_BYTES:
                self.replay = None
        if self.observer is not None:
            self.observer.feed(DIRECTION_UP, view)
        self.forward.send(self.upstream, view)

    def from_upstream(self, nbytes: int) -> None:
        view = self.forward.relay.view[:nbytes]
        self.forward.stats.bytes_down += nbytes
        if self.down_bytes == 0:
            self.replay = None  # the pod answered: from now on this link lives or dies with it
        self.down_bytes += nbytes
        if self.observer is not None:
            self.observer.feed(DIRECTION_DOWN, view)
        self.forward.send(self.client, view)

    # -- half-close and endings ------------------------------------------------------------------

    def client_finished(self) -> None:
        self.client_eof = True
        if self.observer is not None:
            self.observer.feed(DIRECTION_UP, b"")
        if self.state is LinkState.OPEN and self.upstream.can_write_eof():
            self.upstream.write_eof()
        self._close_if_both_finished()

    def upstream_finished(self) -> None:
        self.upstream_eof = True
        if self.down_bytes == 0 and self.replay is not None:
            return  # maybe the tunnel died under us: upstream_lost decides, after a verdict
        if self.observer is not None:
            self.observer.feed(DIRECTION_DOWN, b"")
        if self.client.can_write_eof():
            self.client.write_eof()
        self._close_if_both_finished()

    def _close_if_both_finished(self) -> None:
        if self.client_eof and self.upstream_eof:
            self.client.close()
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
        if self.down_bytes == 0 and self.replay is not None:
            self.forward.spawn(self.retry_elsewhere(exc))
            return
        if exc is not None:
            self.client.abort()
            self.finish(LinkOutcome.RESET, _describe_socket_error(exc))
        else:
            self.client.close()
            self.finish(LinkOutcome.CLOSED)

    async def retry_elsewhere(self, exc: Optional[BaseException]) -> None:
        """The upstream ended before the pod said a word. If its tunnel failed, replay the
        client's bytes through the next tunnel; if the tunnel is fine, the pod closed for real."""
        lease = self.lease
        assert lease is not None
        verdict = await self.forward.source.verdict(lease, REPLAY_VERDICT_WAIT_S)
        if self.state is LinkState.CLOSED:
            return
        if verdict is None:  # the tunnel is healthy: the pod itself closed the connection
            if exc is not None:
                self.client.abort()
                self.finish(LinkOutcome.RESET, _describe_socket_error(exc))
            else:
                self.client.close()
                self.finish(LinkOutcome.CLOSED)
            return
        if not verdict.retry or self.forward.replays_exhausted(self):
            self.client.abort() if verdict.outcome is LinkOutcome.RESET else self.client.close()
            self.finish(verdict.outcome, verdict.reason)
            return
        self.forward.source.link_ended(lease, self)
        self.forward.stats.replayed += 1
        self.pending = self.replay or bytearray()
        self.replay = bytearray()
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


def _describe_socket_error(exc: BaseException) -> str:
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
        self._replays: Dict[int, int] = {}

    def __repr__(self) -> str:
        return "<ForwardProxy :%d #%d links=%d>" % (self.port, self.key, len(self.links))

    # -- listening, with kubectl's all/any semantics ---------------------------------------------

    async def listen(self, addresses: Sequence[str], port: int, require_all: bool) -> List[str]:
        """Bind `port` (0 = random, then reused) on each address; return kubectl-style errors.

        require_all=False is kubectl's "localhost" mode: one address binding is enough.
        """
        loop = asyncio.get_running_loop()
        errors = []
        for address in addresses:
            try:
                server = await loop.create_server(
                    self._new_client_half, host=address, port=self.port or port, backlog=1024
                )
            except OSError as exc:
                errors.append(_listen_error_text(address, self.port or port, exc))
                continue
            self._servers.append(server)
            self.addresses.append(address)
            if not self.port:
                self.port = server.sockets[0].getsockname()[1]
        if errors and (require_all or not self._servers):
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
        self._replays.pop(id(link), None)
        if link.lease is not None:
            self.source.link_ended(link.lease, link)
        if link.observer is not None:
            link.observer.close(outcome, cause)

    def replays_exhausted(self, link: Link) -> bool:
        count = self._replays.get(id(link), 0) + 1
        self._replays[id(link)] = count
        return count > LINK_MAX_REPLAYS

    def send(self, transport: Any, view: memoryview) -> None:
        """Write a chunk of the shared buffer; hand the buffer over if the write was partial."""
        if transport.get_write_buffer_size():
            transport.write(bytes(view))  # queued behind earlier data: it must be a copy
            return
        transport.write(view)
        if _TRANSPORT_KEEPS_VIEWS and transport.get_write_buffer_size():
            self.relay.handed_over()

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
            link.finish(LinkOutcome.RESET, "session ended")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


#: Python 3.12+ transports queue a view of a partially-written buffer instead of copying it.
_TRANSPORT_KEEPS_VIEWS = sys.version_info >= (3, 12)


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


class StaticForward:
    """A forward to a fixed address: the data path alone, for benchmarks and tests."""

    def __init__(self, proxy: ForwardProxy) -> None:
        self.proxy = proxy

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
    factory = _make_inspector_factory() if inspect else None
    proxy = ForwardProxy(
        StaticUpstream(*upstream),
        0,
        RelayBuffer(RELAY_BUFFER_BYTES),
        wait_timeout=5.0,
        inspector_factory=factory,
    )
    errors = await proxy.listen([address], port, require_all=True)
    if errors:
        raise VibeError(errors[0])
    return StaticForward(proxy)


# ==== §16 port-forward session =================================================================

# ==== §17 wait session =========================================================================


@dataclass(frozen=True)
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


def _object_key(obj: Dict[str, Any]) -> Tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (resource_id(obj), meta.get("namespace", ""), meta.get("uid", ""))


class WaitTarget:
    """A waited resource as we see it now, with how long it has been in its state."""

    def __init__(self, obj_id: str, namespace: str, obj: Optional[Dict[str, Any]], now: float):
        self.obj_id = obj_id
        self.namespace = namespace
        self.obj = obj
        self.report = compute_status(obj, now)
        self.since = now
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
        self.version = 0
        #: Names expected to exist (given by the user), so NotFound can be shown.
        self.expected: List[Tuple[str, str]] = []

    def expect(self, type_text: str, name: str, namespace: str, now: float) -> None:
        key = (namespace, "%s/%s" % (type_text, name))
        if key not in self.targets:
            self.targets[key] = WaitTarget("%s/%s" % (type_text, name), namespace, None, now)
            self.expected.append(key)

    def _find(self, obj: Dict[str, Any]) -> Optional[Tuple[str, str]]:
        obj_id = resource_id(obj)
        namespace = (obj.get("metadata") or {}).get("namespace", "")
        name = obj_id.partition("/")[2]
        for key, target in self.targets.items():
            if key[0] and key[0] != namespace:  # "" = the user's default namespace
                continue
            if target.obj_id == obj_id:
                return key
            typed, _, typed_name = target.obj_id.partition("/")
            if target.obj is None and typed_name == name and _type_matches(typed, obj):
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
        target = self.targets[key]
        target.obj = None if event_type == "DELETED" else obj
        if target.obj is not None:
            target.obj_id = resource_id(obj)
            target.namespace = (obj.get("metadata") or {}).get("namespace", "")
        self._recompute(target, now)

    def _recompute(self, target: WaitTarget, now: float) -> None:
        report = compute_status(target.obj, now, self.pods_of(target))
        if (report.status, report.message) != (target.report.status, target.report.message):
            if report.status is not target.report.status:
                target.since = now
            target.report = report
        else:
            target.report = report
        self.version += 1

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
        self.version += 1

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
        self.version += 1

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
        if failure:
            return failure, "pod/" + pod_name(pod)
    return "", ""


# ---- displays: live view, plain lines, JSON lines (all on stderr) -----------------------------


@dataclass(frozen=True)
class ProgressRow:
    """One line of progress: a target (depth 0) or one of its pods (depth 1)."""

    obj_id: str
    status: str
    message: str
    depth: int
    since_s: float
    met: bool
    warning: str = ""


def progress_rows(board: WaitBoard, fors: Sequence[WaitFor], now: float) -> List[ProgressRow]:
    """The live view's content, in display order (pure: board and time in, rows out)."""
    rows = []
    for target in board.ordered_targets():
        warning = board.latest_warning(target)
        rows.append(
            ProgressRow(
                target.obj_id,
                target.report.status.value,
                target.report.message,
                0,
                now - target.since,
                not target_unmet(target, fors),
                event_line(warning, now) if warning else "",
            )
        )
        pods = board.pods_of(target)
        for pod in pods[:LIVE_PODS_SHOWN]:
            report = compute_status(pod, now)
            rows.append(
                ProgressRow(
                    "pod/" + pod_name(pod), report.status.value, report.message, 1, 0.0, False
                )
            )
        if len(pods) > LIVE_PODS_SHOWN:
            rows.append(
                ProgressRow(
                    "", "", "... %d more pods" % (len(pods) - LIVE_PODS_SHOWN), 1, 0.0, False
                )
            )
    return rows


def render_plain_row(row: ProgressRow, elapsed_s: float) -> str:
    prefix = "[%s] " % human_duration(elapsed_s)
    indent = "  " if row.depth else ""
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
        for column in ("RESOURCE", "STATUS", "FOR", "MESSAGE"):
            table.add_column(column, no_wrap=column != "MESSAGE", overflow="fold")
        for row in rows:
            name = ("  └ " if row.depth else "") + row.obj_id
            status = Text(
                row.status + (" ✓" if row.met else ""), style=_STATUS_STYLES.get(row.status, "")
            )
            since = "" if row.depth else human_duration(row.since_s)
            table.add_row(name, status, since, row.message)
            if row.warning:
                table.add_row("", "", "", Text(row.warning, style="red"))
        self.live.update(table, refresh=True)

    def message(self, line: str) -> None:
        self.live.console.print(line, markup=False, highlight=False)

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
        self._watches: List[KubectlProcess] = []
        self._pods_watched = False
        self._kubectl_children: List[KubectlProcess] = []
        #: kubectl's own errors from the initial lookup (e.g. `Error from server (NotFound)`).
        self.lookup_errors: List[str] = []
        #: Whether the initial lookup is done: until then "not seen" does not mean NotFound.
        self.synced = False

    # -- watches --------------------------------------------------------------------------

    async def start_watches(self) -> None:
        for spec in self.board.specs:
            decoder = JsonStreamDecoder(WATCH_MAX_DOCUMENT_BYTES)
            self._watches.append(
                await self.runner.start(
                    [*spec.args, *_WATCH_TAIL],
                    _ignore_line,
                    on_data=_WatchFeed(self, decoder, spec).feed,
                )
            )
        await self.start_events_watch()

    async def start_pods_watch(self) -> None:
        if self._pods_watched:
            return
        self._pods_watched = True
        scope = ["--all-namespaces"] if self.options.flags.get("all-namespaces") else []
        decoder = JsonStreamDecoder(WATCH_MAX_DOCUMENT_BYTES)
        self._watches.append(
            await self.runner.start(
                ["get", "pods", *scope, *_WATCH_TAIL],
                _ignore_line,
                on_data=_WatchFeed(self, decoder, None, "pods").feed,
            )
        )

    async def start_events_watch(self) -> None:
        scope = ["--all-namespaces"] if self.options.flags.get("all-namespaces") else []
        decoder = JsonStreamDecoder(WATCH_MAX_DOCUMENT_BYTES)
        self._watches.append(
            await self.runner.start(
                ["get", "events", *scope, *_WATCH_TAIL],
                _ignore_line,
                on_data=_WatchFeed(self, decoder, None, "events").feed,
            )
        )

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
                if not self._pods_watched and obj.get("kind") != "Pod" and has_pods(obj):
                    asyncio.ensure_future(self.start_pods_watch())
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
        if not self.synced:
            return
        now = _monotonic()
        rows = progress_rows(self.board, self.options.fors, now)
        self.progress.update(rows, now, self.header(now))

    async def progress_loop(self) -> None:
        """Redraw on change (at most LIVE_WAIT_REFRESH_S apart) or once a second for timers;
        check --fail-fast grace periods on the same beat."""
        while True:
            try:
                await asyncio.wait_for(self.changed.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            self.changed.clear()
            self.refresh()
            self.check_fail_fast()
            await asyncio.sleep(LIVE_WAIT_REFRESH_S)

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
        try:
            self.expect_named_targets()
            await self.start_watches()
            ticker = asyncio.ensure_future(self.progress_loop())
            decider = asyncio.ensure_future(self.decide())
            done, _ = await asyncio.wait({ticker, decider}, return_when=asyncio.FIRST_COMPLETED)
            if decider not in done:
                decider.cancel()
                await asyncio.gather(decider, return_exceptions=True)
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            self.refresh()
            if ticker in done and isinstance(ticker.exception(), FailedFast):
                return await self.fail_fast_exit(ticker.exception())
            if ticker in done and ticker.exception() is not None:
                raise ticker.exception()
            code = decider.result()
        finally:
            self.progress.close()
        if code != 0:
            self.print_explanations()
        return code

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
        self.synced = True
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
        child = await self.runner.start(argv, self.pass_through)
        self._kubectl_children.append(child)
        return await child.wait()

    def pass_through(self, stream: Stream, line: str) -> None:
        """kubectl's own lines, verbatim, on the stream it used (through the live view's
        console when both share the terminal, so the view is not torn)."""
        live = isinstance(self.progress, LiveProgress)
        if stream is Stream.STDERR:
            if live:
                self.progress.message(line)
            else:
                _write_line(sys.stderr, line)
        elif live and _is_terminal(sys.stdout):
            self.progress.message(line)
        else:
            _write_line(sys.stdout, line)

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
            if self.all_created():
                return True
            if _monotonic() >= self.deadline:
                missing = [t for t in self.board.targets.values() if t.obj is None]
                what = missing[0].plural_name() if missing else "the selected resources"
                _write_line(sys.stderr, "error: timed out waiting for %s to be created" % what)
                return False
            await self.wake_or_timeout(min(1.0, self.deadline - _monotonic()))

    def all_created(self) -> bool:
        targets = list(self.board.targets.values())
        return bool(targets) and all(t.obj is not None for t in targets)

    async def wake_or_timeout(self, timeout: float) -> None:
        """Sleep until a watch reports something, or `timeout` seconds."""
        try:
            await asyncio.wait_for(self.decider_wake.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            pass

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
        own `Error from server (NotFound)` lines come last, as kubectl prints them."""
        lines = errors + [e for e in self.lookup_errors if not e.startswith("error: ")]
        lines += [e[len("error: ") :] for e in self.lookup_errors if e.startswith("error: ")]
        if len(lines) == 1 and not lines[0].startswith("Error from server"):
            lines[0] = "error: " + lines[0]
        for line in lines:
            _write_line(sys.stderr, line)
        return EXIT_ERROR if lines else 0

    async def print_met(self, target: WaitTarget) -> None:
        """kubectl's printer: `<id> condition met`, or -o name/json/yaml/... of the object."""
        output = self.options.flags.get("output") or ""
        if not output:
            _write_line(sys.stdout, "%s condition met" % target.obj_id)
        elif output == "name":
            _write_line(sys.stdout, target.obj_id)
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

    async def fail_fast_exit(self, failed: FailedFast) -> int:
        for child in self._kubectl_children:
            await child.stop()
        _write_line(
            sys.stderr,
            "error: %s failed: %s (--fail-fast)" % (failed.target.obj_id, failed.failure),
        )
        self.print_explanations()
        return EXIT_FAIL_FAST

    def print_explanations(self) -> None:
        now = _monotonic()
        for target in self.board.ordered_targets():
            unmet = target_unmet(target, self.options.fors)
            if not unmet:
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
            )
            for line in explain(
                item, self.board.pods_of(target), self.board.events_of(target), _wall_clock()
            ):
                _write_line(sys.stderr, line)


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
        if options.request:
            line = options.arrow_line(prog)
            _write_line(sys.stdout if options.dry_run else sys.stderr, line)
        if options.dry_run:
            return 0
        return await WaitSession(options, runner).run()
    finally:
        await runner.close()


# ==== §18 Completion, version, main() ==========================================================


def version_line() -> str:
    return "kubectl-vibe v%s" % __version__


async def run_version(flags: ParsedFlags, prog: str) -> int:
    """Our version, the Python running us, and which kubectl children will use."""
    print(version_line())
    print("python %s (%s)" % (sys.version.split()[0], sys.executable or "unknown"))
    try:
        binary = find_kubectl()
    except KubectlNotFound as exc:
        print("kubectl: not found (%s)" % exc.message.split(": ", 1)[1])
        return 0
    done = await KubectlRunner(binary).run(["version", "--client", "-o", "json"], timeout=10)
    try:
        client = json.loads(done.stdout)["clientVersion"]["gitVersion"]
    except (ValueError, KeyError, TypeError):
        client = "unknown version"
    print("kubectl %s (%s)" % (client, binary))
    return 0


def _command_handlers() -> Dict[str, Callable[[ParsedFlags, str], Any]]:
    """Each command's run step: async (flags, prog) -> exit code."""
    return {
        "port-forward": run_port_forward,
        "wait": run_wait,
        "version": run_version,
        "completion": run_completion,
    }


def dispatch(argv: Sequence[str], prog: str) -> int:
    """argv (without the program) → help, completion, or a command's run step."""
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
    handler = _command_handlers()[command.name]
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
            "error: internal error: %s: %s\nRun again with %s=1 for a traceback, and please report it"
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
