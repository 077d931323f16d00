"""Run `lyra-train` under `accelerate launch` and keep each process's final parameters, so a test can compare ranks.

    accelerate launch --cpu --num_processes 2 tests/distributed_train.py [lyra-train flags]

Writes `OUTPUT_DIR/rank_<N>.safetensors` (the trained model of process N) next to the usual outputs.
"""

import sys
from pathlib import Path

from safetensors.torch import save_file

from lyra_hf.train import parse_options
from lyra_hf.training import train


if __name__ == "__main__":
    options = parse_options(sys.argv[1:])
    run = train(options)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in run.model.state_dict().items()}
    save_file(state, str(Path(options.output_dir, f"rank_{run.accelerator.process_index}.safetensors")))
