"""``python -m snake``: the ``snake`` command (see ``snake --help``)."""

import sys

from ._cli.main import main

if __name__ == "__main__":
    sys.exit(main())
