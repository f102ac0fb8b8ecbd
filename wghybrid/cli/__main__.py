"""`python -m wghybrid.cli`: the same as the `wghybrid` command."""

import sys

from wghybrid.cli.table import main

sys.exit(main())
