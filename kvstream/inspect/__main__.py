"""`python -m kvstream.inspect`: the same as the kvstream-inspect console script."""

import sys

from kvstream.inspect.cli import main

sys.exit(main())
