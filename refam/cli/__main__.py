"""``python -m refam.cli`` (and ``torchrun ... -m refam.cli``): the same as the ``refam`` command."""

import sys

from refam.cli import main

sys.exit(main())
