"""``python -m cnnvis_eval.cli``."""

import sys

from . import main

sys.exit(main())
