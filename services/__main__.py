"""The command line's entry point: `linjerum` (the console script) and `python -m services`,
as `linjerum run` starts its children. It imports the service only when it runs: a worker
process (PDF rendering) runs its program's main module again before its first task, and
services.cli imports the whole service (a second of CPU per worker); the worker of `python -m
services` skips a package's `__main__` altogether, the console script's imports only this."""

from __future__ import annotations

import sys


def main() -> int:
    from services.cli import main as command_line

    return command_line()


if __name__ == "__main__":
    sys.exit(main())
