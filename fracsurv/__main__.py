"""``python -m fracsurv``: the same as the ``fracsurv`` command."""

import sys

from fracsurv.cli import main

sys.exit(main())
