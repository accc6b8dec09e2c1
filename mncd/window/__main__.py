"""``python -m mncd.window``."""

import sys

from mncd.window.app import main

sys.exit(main())
