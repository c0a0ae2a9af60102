"""One-line CLI errors: a mistake a user can cause is printed as `minerva-fm CMD: error: WHERE: WHAT` (no traceback)
and the command exits non-zero."""

from __future__ import annotations

import sys


def describe(err: BaseException) -> str:
    """The error on one line: `file: reason (errno N)` for OS errors, else the message with its lines joined."""
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename}: " if err.filename and str(err.filename) not in err.strerror else ""
        code = f" (errno {err.errno})" if err.errno and f"errno {err.errno}" not in err.strerror else ""
        return f"{where}{err.strerror}{code}"
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


def report(command: str, err: BaseException, status: int = 1) -> int:
    """Print `minerva-fm COMMAND: error: ...` on stderr and return `status` (the exit code)."""
    print(f"minerva-fm {command}: error: {describe(err)}", file=sys.stderr)
    return status


__all__ = ["describe", "report"]
