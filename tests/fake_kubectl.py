"""A fake kubectl for fast unit tests of the runner and the CLI (never for end-to-end claims).

It appends its argv (as one JSON line) to $FAKE_KUBECTL_LOG, then behaves according to its
first argument, so a test chooses the behaviour through the args it gives the runner:

  version ...            kubectl's `version --client -o json` answer
  get ... -o json        {"kind": "List", "items": []}, or kubectl's NotFound error for "missing"
  get ... -o name        a pod, a service and a deployment
  lines N                N numbered lines, alternating stdout and stderr
  long-line BYTES        BYTES of "x" on stdout without a newline, then "\\nafter" on both pipes
  flood MIB              MIB MiB of lines on each of stdout and stderr
  sleep                  prints "ready", then sleeps until killed
  ignore-term            ignores SIGTERM, prints "ready", sleeps until SIGKILLed
  fail CODE              two stderr lines, then exits with CODE
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def install(directory: Path, name: str = "kubectl") -> Path:
    """Write an executable `kubectl` into `directory` that runs this fake; returns its path."""
    path = directory / name
    path.write_text('#!/bin/sh\nexec "%s" "%s" "$@"\n' % (sys.executable, HERE))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def recorded_argvs(log: Path) -> list:
    """Every argv the fake received (without argv[0]), in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def _sleep_forever(message: str) -> None:
    print(message, flush=True)
    while True:
        time.sleep(3600)


def _get(args: list) -> int:
    if any("missing" in arg for arg in args):  # a name, or a namespace, that does not exist
        sys.stderr.write("I1125 14:00:00.000000 1 request.go:1] retrying\n")
        sys.stderr.write('Error from server (NotFound): pods "missing" not found\n')
        return 1
    if "name" in args:
        print("pod/web-7d4b9c-x2x\nservice/web\ndeployment.apps/web")
    else:
        print(json.dumps({"kind": "List", "items": []}))
    return 0


def main(args: list) -> int:
    log = os.environ.get("FAKE_KUBECTL_LOG")
    if log:
        with open(log, "a") as out:
            out.write(json.dumps(args) + "\n")
    verb = args[0] if args else ""
    if verb == "version":
        print(json.dumps({"clientVersion": {"gitVersion": "v1.99.0-fake"}}))
        return 0
    if verb == "get":
        return _get(args)
    if verb == "lines":
        for number in range(int(args[1])):
            print("line %d" % number, file=sys.stdout if number % 2 == 0 else sys.stderr)
        return 0
    if verb == "long-line":
        sys.stdout.write("x" * int(args[1]))
        sys.stdout.write("\nafter\n")
        sys.stderr.write("after\n")
        return 0
    if verb == "flood":
        line = "y" * 99 + "\n"
        for _ in range(int(args[1]) * 1024 * 1024 // len(line)):
            sys.stdout.write(line)
            sys.stderr.write(line)
        return 0
    if verb == "sleep":
        _sleep_forever("ready")
    if verb == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _sleep_forever("ready")
    if verb == "fail":
        sys.stderr.write("first line\nerror: the last line says why\n")
        return int(args[1])
    sys.stderr.write('error: unknown command "%s" for "kubectl"\n' % verb)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
