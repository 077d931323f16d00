import os

import pytest
import torch


# Tests must never reach the real Hub (this machine cannot, and CI must not depend on it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_config():
    """A small Lyra with every code path (two PGC blocks, two S4D layers) that runs in milliseconds."""
    from lyra_hf import LyraConfig

    def make(**overrides):
        values = dict(vocab_size=12, hidden_size=16, state_size=8, num_s4d_layers=2, dropout=0.0)
        values.update(overrides)
        return LyraConfig(**values)

    return make
