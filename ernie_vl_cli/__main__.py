"""`python -m ernie_vl_cli ...`: the `ernie-vl` command line."""

import sys

from . import main

sys.exit(main())
