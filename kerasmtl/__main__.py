"""`python -m kerasmtl ...`: the `kerasmtl` command line."""

import sys

from kerasmtl.cli import main

if __name__ == "__main__":
    sys.exit(main())
