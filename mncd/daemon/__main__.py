"""``python -m mncd.daemon``: the same as the ``mncd`` command."""

import sys

from mncd.daemon.main import main

sys.exit(main())
