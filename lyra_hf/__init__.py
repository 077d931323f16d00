"""lyra-hf: Lyra (Ramesh et al., 2025) as a native Hugging Face Transformers model."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from .allocator import retain_freed_memory
from .checkpoints import load_models
from .configuration_lyra import LyraConfig
from .cpu import configure_threads, usable_cpus
from .modeling_lyra import (
    LyraForSequenceClassification,
    LyraForSequenceRegression,
    LyraForTokenClassification,
    LyraModel,
    LyraPreTrainedModel,
)
from .tokenization_lyra import LyraTokenizer


__version__ = "0.1.0"

AutoConfig.register(LyraConfig.model_type, LyraConfig, exist_ok=True)
AutoModel.register(LyraConfig, LyraModel, exist_ok=True)
AutoModelForSequenceClassification.register(LyraConfig, LyraForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(LyraConfig, LyraForTokenClassification, exist_ok=True)
AutoTokenizer.register(LyraConfig, tokenizer_class=LyraTokenizer, exist_ok=True)

# `save_pretrained` then writes the code files and an `auto_map`, so checkpoints load with `trust_remote_code=True`
# where lyra_hf is not installed (LyraPreTrainedModel.save_pretrained completes the map for every head).
LyraConfig.register_for_auto_class()
LyraModel.register_for_auto_class("AutoModel")
LyraForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
LyraForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
LyraTokenizer.register_for_auto_class("AutoTokenizer")

__all__ = [
    "LyraConfig",
    "LyraPreTrainedModel",
    "LyraModel",
    "LyraForSequenceClassification",
    "LyraForSequenceRegression",
    "LyraForTokenClassification",
    "LyraTokenizer",
    "load_models",
    "retain_freed_memory",
    "configure_threads",
    "usable_cpus",
]
