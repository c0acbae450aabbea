"""`python -m exporter`: the same as the `integration-health` console script."""

import contextlib
import sys

from exporter.cli import main

if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
