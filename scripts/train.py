"""Entry point of `lyra-train` (see `lyra_hf/train.py`), for `python scripts/train.py` and
`accelerate launch scripts/train.py`."""

import sys

from lyra_hf.train import main


if __name__ == "__main__":
    sys.exit(main())
