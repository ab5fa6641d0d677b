"""`python -m bidders.simulated`: run one simulated provider (see cli.py for the flags)."""

import sys

from bidders.simulated.cli import main

sys.exit(main())
