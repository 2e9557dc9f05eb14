"""The module keeps the shape its map promises: sections in order, small functions, a light
start-up path."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(REPO, "kubectl_vibe_pf.py")
with open(MODULE, encoding="utf-8") as _file:
    SOURCE = _file.read()


def test_the_map_at_the_top_names_every_section_in_file_order() -> None:
    docstring = ast.get_docstring(ast.parse(SOURCE)) or ""
    in_map = re.findall(r"^  (§\d\d) ", docstring, re.M)
    banners = re.findall(r"^# ==== (§\d\d) ", SOURCE, re.M)

    assert in_map == banners == ["§%02d" % n for n in range(1, 21)]


def test_pure_sections_come_before_the_first_process_socket_or_event_loop() -> None:
    first_io = SOURCE.index("# ==== §14 ")
    pure = SOURCE[SOURCE.index("# ==== §04 ") : first_io]

    for forbidden in ("create_subprocess", "asyncio.", "socket.socket(", "time.monotonic()"):
        assert forbidden not in pure, forbidden


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(SOURCE))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []


def test_version_and_help_import_nothing_heavy() -> None:
    probe = (
        "import sys, runpy; sys.argv = ['kubectl-vibe', '%s']\n"
        "try:\n    runpy.run_path(%r, run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in ('asyncio', 'rich', 'psutil', 'yaml') if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=%%r' %% heavy)\n"
    )
    for flag in ("--version", "--help"):
        done = subprocess.run(
            [sys.executable, "-c", probe % (flag, MODULE)], capture_output=True, text=True
        )
        assert "HEAVY=[]" in done.stderr, (flag, done.stderr)
