"""How a command stops on bad input: one line on stderr, exit code 1, no traceback. Imports nothing of ours, so that
every module can use it."""

from typing import NoReturn


def fail(message: str) -> NoReturn:
    """Stops a command on bad input: one line on stderr, exit code 1, no traceback."""
    raise SystemExit(f"error: {message}")
