"""``python -m chatlab`` is the same as the ``chatlab`` command."""

import sys

from .cli import main

sys.exit(main())
