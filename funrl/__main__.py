"""``python -m funrl`` is the ``funrl`` command line."""

import sys

from funrl.cli import main

sys.exit(main())
