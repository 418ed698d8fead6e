"""`python -m kvstream`: the same entry point as the `kvstream` console script."""

import sys

from kvstream.cli import main

sys.exit(main())
