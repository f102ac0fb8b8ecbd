"""`python -m wghybrid`: the same as the `wghybrid` command."""

import sys

from wghybrid.cli import main

sys.exit(main())
