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
#: How much of a kubectl pipe is read at once.
KUBECTL_READ_CHUNK_BYTES = 256 * 1024
#: How long a stopping kubectl gets after SIGTERM before SIGKILL.
KUBECTL_STOP_GRACE_S = 2.0

# Shell completion (§18).
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
_KUBECTL_ERROR_LINE = re.compile(r"error: |Error[ :]|E\d{4} ")


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
_GO_DURATION_STEP = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


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

    async def close(self) -> None:
        """Retire the watchdog and reap it: closing its pipe is what makes it kill the (by now
        empty) group and exit, exactly as when we die."""
        watchdog, self._watchdog = self._watchdog, None
        self.pgid = None
        if watchdog is None:
            return
        if watchdog.stdin is not None:
            watchdog.stdin.close()
        try:
            await asyncio.wait_for(watchdog.wait(), KUBECTL_STOP_GRACE_S)
        except asyncio.TimeoutError:
            watchdog.kill()
            await watchdog.wait()

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
        await self._lifeline.close()

    def kill_all_now(self) -> None:
        self._lifeline.kill_group_now()


# ==== §14 Tunnel supervisor ====================================================================

# ---- §14a Target resolution: TYPE/NAME → a Running pod and its container ports (I/O) ----------

# ---- §14b Tunnels: kubectl port-forward children behind the proxy -----------------------------

# ==== §15 Proxy ================================================================================

# ==== §16 port-forward session =================================================================

# ==== §17 wait session =========================================================================

# ==== §18 Completion, version, main() ==========================================================


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
    if command.name in ("port-forward", "wait"):
        before = _parse_for_completion(command, words[1:-1])
        if before is not None and not before.positionals:
            return _complete_resources(before.globals_argv, current)
    return []


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


#: Each command's run step, async (flags, prog) -> exit code, by name: looked up when the
#: command runs, so `version` works while a section further down is still being written.
COMMAND_HANDLERS: Dict[str, str] = {
    "port-forward": "run_port_forward",
    "wait": "run_wait",
    "version": "run_version",
    "completion": "run_completion",
}


def _command_handler(name: str) -> Callable[[ParsedFlags, str], Any]:
    return globals()[COMMAND_HANDLERS[name]]


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
    return asyncio.run(_command_handler(command.name)(flags, prog))


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
