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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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

# -- §10 Protocol sniffers: every buffer a sniffer keeps is bounded here (added by perf) --
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
        "no-live", FlagKind.BOOL, "Print one plain line per state change instead of the live view."
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

# ==== §08 Targets ==============================================================================

# ==== §09 kubectl output =======================================================================

# ==== §10 Protocol sniffers ====================================================================

# Rules for §10: sans-IO (h11). The proxy feeds each connection's bytes as it relays them:
# `sniffer.feed(direction, data, now)`; `data` may be a memoryview valid only during the call,
# `b""` means EOF of that direction, `now` is the caller's clock. No asyncio, sockets or clocks.
# Sniffers keep only what they must (header blocks, frame headers, short names), skip bodies
# by length, never raise into the proxy (garbage or a limit → ProtocolGaveUp, then a no-op),
# and report through frozen events that also update the per-forward ProtocolStats.

import collections  # noqa: E402 - §10 needs deque/struct; cheap stdlib modules
import struct  # noqa: E402


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


@dataclass(frozen=True)
class ProtocolGaveUp(SniffEvent):
    kind: ProtocolKind
    reason: str


@dataclass(frozen=True)
class HttpExchange(SniffEvent):
    method: str
    path: str
    status: int
    latency_s: Optional[float]  # request's first byte → final response's first byte
    request_bytes: int
    response_bytes: int
    complete: bool = True  # False: the connection closed in the middle of the response body


@dataclass(frozen=True)
class HttpUpgraded(SniffEvent):
    protocol: str  # "websocket", "h2c", "tunnel" (CONNECT)…
    path: str


@dataclass(frozen=True)
class HttpRequestUnanswered(SniffEvent):
    method: str
    path: str


@dataclass(frozen=True)
class TlsClientHello(SniffEvent):
    version: str  # highest offered: "TLS 1.3"
    sni: str
    alpn: Tuple[str, ...]


@dataclass(frozen=True)
class TlsServerHello(SniffEvent):
    version: str  # chosen
    alpn: str  # chosen; "" in TLS 1.3, where it travels encrypted
    cipher: str


@dataclass(frozen=True)
class TlsAlert(SniffEvent):
    level: str  # "warning" / "fatal"
    description: str  # "handshake_failure"
    direction: Direction


@dataclass(frozen=True)
class PostgresEncryptionAnswered(SniffEvent):
    request: str  # "SSL" or "GSSENC"
    accepted: bool


@dataclass(frozen=True)
class PostgresStartup(SniffEvent):
    user: str
    database: str
    application_name: str
    ssl_requested: bool


@dataclass(frozen=True)
class PostgresServerVersion(SniffEvent):
    version: str


@dataclass(frozen=True)
class PostgresError(SniffEvent):
    severity: str
    code: str  # SQLSTATE
    message: str


@dataclass(frozen=True)
class PostgresQueryDone(SniffEvent):
    latency_s: Optional[float]  # 'Q' or Sync → ReadyForQuery


@dataclass(frozen=True)
class RedisCommand(SniffEvent):
    name: str


@dataclass(frozen=True)
class RedisError(SniffEvent):
    prefix: str  # "ERR", "WRONGTYPE", "NOAUTH"…
    message: str


@dataclass(frozen=True)
class RedisReply(SniffEvent):
    latency_s: Optional[float]


@dataclass(frozen=True)
class MysqlGreeting(SniffEvent):
    server_version: str


@dataclass(frozen=True)
class MysqlLogin(SniffEvent):
    user: str
    database: str
    ssl_requested: bool


@dataclass(frozen=True)
class MysqlCommand(SniffEvent):
    name: str


@dataclass(frozen=True)
class MysqlError(SniffEvent):
    code: int
    sqlstate: str
    message: str


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Http2Reset(SniffEvent):
    stream_id: int
    error: str
    direction: Direction


@dataclass(frozen=True)
class Http2GoAway(SniffEvent):
    last_stream_id: int
    error: str
    debug: str
    direction: Direction


@dataclass(frozen=True)
class GrpcStatus(SniffEvent):
    path: str
    code: int
    message: str


# ---- the bounded receive buffer shared by every sniffer (h11 ReceiveBuffer) ----


class _GiveUp(Exception):
    """Raised inside a sniffer to stop parsing; Sniffer.feed() turns it into ProtocolGaveUp."""


_LINE_END = re.compile(rb"\n")
_HEAD_END = re.compile(rb"\n\r?\n")


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
        parts = ["%s requests" % format(self.exchanges, ",")]
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
        parts = ["%s streams" % format(self.streams, ",")]
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
            parts.append("%s queries" % format(self.queries, ","))
        latency = _latency_text(self.latency)
        if latency:
            parts.append(latency)
        if self.errors.total:
            (code, message), _ = self.errors.most_common(1)[0]
            plural = "s" if self.errors.total > 1 else ""
            parts.append("%d error%s: %s %s" % (self.errors.total, plural, code, message))
        name = "Postgres %s" % self.server_version if self.server_version else "Postgres"
        return "%s: %s" % (name, ", ".join(parts))

    def problems(self) -> List[str]:
        return [
            _times(count, "Postgres %s %s" % (code, message))
            for (code, message), count in self.errors.most_common(5)
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
        parts = ["%s commands" % format(self.commands.total, ",")]
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
        parts.append("%s queries" % format(queries, ","))
        if self.errors.total:
            (code, message), _ = self.errors.most_common(1)[0]
            plural = "s" if self.errors.total > 1 else ""
            parts.append("%d error%s: %d %s" % (self.errors.total, plural, code, message))
        name = "MySQL %s" % self.server_version if self.server_version else "MySQL"
        return "%s: %s" % (name, ", ".join(parts))

    def problems(self) -> List[str]:
        return [
            _times(count, "MySQL %d %s" % (code, message))
            for (code, message), count in self.errors.most_common(5)
        ]


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
_HTTP1_REQUEST_START = re.compile(rb"[A-Z][A-Z-]{1,19} (/|\*|[a-zA-Z][a-zA-Z0-9+.-]*://|[^ /]+:\d)")
_HTTP1_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ \S+ HTTP/\d\.\d\r?\n")
_RESP_ARRAY_START = re.compile(rb"\*[0-9]{1,9}\r\n[$*]")
_REDIS_INLINE = re.compile(rb"(?i)(PING|AUTH|HELLO|INFO|SELECT|ECHO|QUIT|COMMAND)( |\r?\n)")
#: Ports that only break ties between equally plausible guesses.
_PORT_HINTS = {
    6379: ProtocolKind.REDIS,
    5432: ProtocolKind.POSTGRES,
    3306: ProtocolKind.MYSQL,
}


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
        if len(server_prefix) < 6 and remote_port == 3306:
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


_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/(\d)\.(\d)")
_STATUS_LINE = re.compile(r"HTTP/(\d)\.(\d) (\d{3})(?: .*)?")
_ID_SEGMENT = re.compile(
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
_FRAMING_HEADER = re.compile(
    rb"\n(content-length|transfer-encoding|upgrade)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE
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
    if len(values) != 1 or not next(iter(values)).isdigit():
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
_RESP_COMMAND_HEAD = re.compile(rb"\*([1-9][0-9]{0,8})\r\n\$([0-9]{1,9})\r\n")
_RESP_BULK_HEAD = re.compile(rb"\$([0-9]{1,9})\r\n")
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
            self._on_command(side.name.decode("latin-1").upper(), now)
        elif side.push:
            side.push = False
        else:
            self._on_reply(now)

    def _on_command(self, name: str, now: float) -> None:
        if not name:
            raise _GiveUp("RESP command without a name")
        self._emit(RedisCommand(_text(name.encode("latin-1"), SNIFF_MAX_NAME_BYTES)), now)
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


# ==== §11 wait arguments =======================================================================

# ==== §12 wait rules ===========================================================================

# ==== §13 Kubectl runner =======================================================================

import shutil  # noqa: E402 - the I/O half of the module starts here
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

# ---- §14b Tunnels: kubectl port-forward children behind the proxy -----------------------------

# ==== §15 Proxy ================================================================================

# ==== §16 port-forward session =================================================================

# ==== §17 wait session =========================================================================

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
