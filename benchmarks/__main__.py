"""``python -m benchmarks``: run the benchmark, print the table and write the JSON."""

import sys

from .run import main

sys.exit(main())
