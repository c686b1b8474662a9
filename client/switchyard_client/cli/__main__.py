"""``python -m switchyard_client.cli``: the same as ``switchyard-client``."""

import sys

from switchyard_client.cli import main

sys.exit(main())
