"""`python -m gateway`: the same as `scriptgen gateway` (same flags, same redacted JSON logs)."""

from __future__ import annotations

import sys

from scriptgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["gateway", *sys.argv[1:]]))
