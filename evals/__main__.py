"""`python -m cielr_agent.evals SUITE ...`: the same as `cielr eval SUITE ...`."""

import sys

from .runner import main

sys.exit(main())
