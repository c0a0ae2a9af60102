"""One-line CLI errors: a mistake a user can cause is printed as `minerva-fm CMD: error: WHERE: WHAT` (no traceback)
and the command exits non-zero."""

from __future__ import annotations

import re
import sys
from pathlib import Path

_ATOMIC_TEMP = re.compile(r"^\.(?P<name>.+)\.\d+\.[0-9a-f]+\.tmp$")  # minerva_common/atomic.py temp names


def _target(filename) -> str:
    """The file a user asked for: an atomic write's hidden temp name is shown as its target."""
    path = Path(str(filename))
    match = _ATOMIC_TEMP.match(path.name)
    return str(path.with_name(match["name"])) if match else str(path)


def describe(err: BaseException, where: str | Path | None = None) -> str:
    """The error on one line: `file: reason (errno N)` for OS errors (`where` when the error names no file), else
    the message with its lines joined."""
    if isinstance(err, OSError) and err.strerror:
        filename = err.filename or where
        where = f"{_target(filename)}: " if filename and str(filename) not in err.strerror else ""
        code = f" (errno {err.errno})" if err.errno and f"errno {err.errno}" not in err.strerror else ""
        return f"{where}{err.strerror}{code}"
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


def report(command: str, err: BaseException, status: int = 1, where: str | Path | None = None) -> int:
    """Print `minerva-fm COMMAND: error: ...` on stderr and return `status` (the exit code)."""
    print(f"minerva-fm {command}: error: {describe(err, where)}", file=sys.stderr)
    return status


__all__ = ["describe", "report"]
