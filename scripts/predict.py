"""Entry point of `lyra-predict` (see `lyra_hf/predict.py`), for `python scripts/predict.py` and
`accelerate launch scripts/predict.py`."""

import sys

from lyra_hf.predict import main


if __name__ == "__main__":
    sys.exit(main())
