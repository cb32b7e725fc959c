"""``python -m orchestra``: the same as the ``orchestra`` command."""

import sys

from orchestra.cli.main import main

sys.exit(main())
