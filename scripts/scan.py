"""Entry point of `lyra-scan` (see `lyra_hf/scan.py`), for `python scripts/scan.py`."""

import sys

from lyra_hf.scan import main


if __name__ == "__main__":
    sys.exit(main())
