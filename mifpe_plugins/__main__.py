"""``python -m mifpe_plugins ...`` is the ``mifpe`` command (and what ``torchrun -m`` starts)."""

import sys

from .cli import main

sys.exit(main())
