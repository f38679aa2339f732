"""`python -m services`, the command line as the `linjerum` script runs it, and how `linjerum
run` starts its children: worker processes (PDF rendering) run their program's main module
again unless it is a package's `__main__`, and services.cli imports the whole service."""

from services.cli import main

raise SystemExit(main())
