"""``python -m loom.server [--host H] [--port P] [--data-dir DIR] [--allow-remote]``."""

import sys

from ._cli import main

sys.exit(main())
