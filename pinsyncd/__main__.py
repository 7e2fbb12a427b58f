"""`python -m pinsyncd` runs the command-line interface."""

import sys

from pinsyncd.cli import main

sys.exit(main())
