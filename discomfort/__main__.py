"""``python -m discomfort``: see ``discomfort/cli.py``."""

import sys

from .cli import main

sys.exit(main())
