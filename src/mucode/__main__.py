"""`python -m mucode` runs the command line."""

import sys

from mucode.cli import main


sys.exit(main())
