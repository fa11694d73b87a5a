"""`python -m exchange.cli` runs `hie`."""

import contextlib
import sys

from exchange.cli.main import main

with contextlib.suppress(KeyboardInterrupt):
    sys.exit(main())
