"""`python -m scriptgen`: the `scriptgen` command."""

import sys

from scriptgen.cli import main

sys.exit(main())
