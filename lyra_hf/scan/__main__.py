"""`python -m lyra_hf.scan`: the `lyra-scan` command."""

import sys

from .command import main


sys.exit(main())
