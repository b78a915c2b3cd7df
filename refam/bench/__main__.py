import sys

from refam.bench.cli import main

sys.exit(main())
