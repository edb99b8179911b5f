"""``python -m ipmn_lightning`` runs the ``ipmn`` console script."""

import sys

from .cli import main

sys.exit(main())
