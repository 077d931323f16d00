"""Entry point of `lyra-scan` (see `lyra_hf/scan/`), for `python scripts/scan.py`."""

import sys

from lyra_hf.scan import main


if __name__ == "__main__":
    sys.exit(main())
