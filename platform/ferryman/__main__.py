"""`python -m ferryman` is the `ferryman` command."""

import sys

from ferryman.cli.main import main

sys.exit(main())
