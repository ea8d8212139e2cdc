"""`python -m ponder ...`: the same as the `ponder` command."""

import sys

from ponder.api.cli import main

sys.exit(main())
