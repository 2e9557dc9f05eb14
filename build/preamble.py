# Run by shiv's bootstrap inside the kubectl-vibe executable, before the module is imported.
# Keep it parseable by old Pythons: on 3.6 the module itself is a SyntaxError
# (`from __future__ import annotations`), so the one-line message must come from here.
import sys

if sys.version_info < (3, 9):  # noqa: UP036 - the one-line message *is* the point
    sys.stderr.write(
        "error: kubectl-vibe needs Python 3.9 or newer (found %s)\n" % sys.version.split()[0]
    )
    sys.exit(1)
