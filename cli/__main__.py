"""`python -m cli`: the `userql` command where no console script is installed (the image)."""

import sys

from cli import main

sys.exit(main())
