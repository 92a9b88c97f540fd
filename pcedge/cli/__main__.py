"""``python -m pcedge.cli``: the same as the ``pcedge`` command."""

import sys

from . import main

sys.exit(main())
