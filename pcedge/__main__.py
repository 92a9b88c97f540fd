"""``python -m pcedge``: the same as the ``pcedge`` command."""

import sys

from .cli import main

sys.exit(main())
