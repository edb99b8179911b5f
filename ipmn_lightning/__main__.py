"""``python -m ipmn_lightning`` runs the ``ipmn`` console script."""

import sys

from ipmn_lightning.console.main import main

sys.exit(main())
