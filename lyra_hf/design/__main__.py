"""`python -m lyra_hf.design`: the `lyra-design` command."""

import sys

from .command import main


sys.exit(main())
