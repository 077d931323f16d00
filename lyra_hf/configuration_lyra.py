# Copyright 2026 The lyra-hf authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Lyra configuration"""

import math
import types
import typing

from transformers.configuration_utils import PreTrainedConfig


POOLING_MODES = ("mean", "max", "first", "last")


class LyraConfig(PreTrainedConfig):
    r"""
    Configuration of a Lyra model (Ramesh et al., 2025, arXiv:2503.16351): a token embedding, projected gated
    convolution (PGC) blocks, then pre-normalised S4D layers with residual connections, and a pooled or per-position
    head. The defaults reproduce the authors' model (`d_model=64`, `d_state=64`, PGC expansions 0.25 and 2, one S4D
    layer, dropout 0.2).

    Args:
        vocab_size (`int`, *optional*, defaults to 26):
            Number of token ids. The default matches `LyraTokenizer()`: 5 special tokens and the 21 protein letters.
        hidden_size (`int`, *optional*, defaults to 64):
            Width `d` of the residual stream. Alias: `d_model`.
        state_size (`int`, *optional*, defaults to 64):
            State size `N` of each S4D channel; must be even (`N / 2` complex-conjugate pairs). Alias: `d_state`.
        pgc_expansion_factors (`list[float]`, *optional*, defaults to `[0.25, 2.0]`):
            One PGC block per entry, each with `int(factor * hidden_size)` gated channels.
        pgc_kernel_size (`int`, *optional*, defaults to 3):
            Width of the depthwise convolution inside each PGC block (odd, centred).
        pgc_residual (`bool`, *optional*, defaults to `False`):
            Whether to add a residual connection around each PGC block (the authors' model has none).
        num_s4d_layers (`int`, *optional*, defaults to 1):
            Number of S4D layers. Aliases: `num_hidden_layers`, `num_s4_layers`.
        bidirectional (`bool`, *optional*, defaults to `False`):
            Whether each S4D layer also convolves with an anti-causal kernel (looks at the future of each position).
        dropout (`float`, *optional*, defaults to 0.2):
            Dropout probability after each S4D layer and, tied over positions, inside it.
        dt_min (`float`, *optional*, defaults to 0.001):
            Lower bound of the log-uniform initialisation of the S4D step size.
        dt_max (`float`, *optional*, defaults to 0.1):
            Upper bound of the log-uniform initialisation of the S4D step size.
        ssm_learning_rate (`float`, *optional*):
            Learning rate of the S4D parameters `log_dt`, `log_A_real` and `A_imag` (trained with no weight decay).
            `None` uses the optimizer's learning rate.
        pooling (`str`, *optional*, defaults to `"mean"`):
            How sequence heads pool positions: `"mean"`, `"max"`, `"first"` or `"last"`; padding is always ignored.
        rms_norm_eps (`float`, *optional*, defaults to 1e-08):
            Epsilon of the RMS normalisations.
        pad_token_id (`int`, *optional*, defaults to 0):
            Id of the padding token.
        site_effects_length (`int`, *optional*, defaults to 0):
            With `L > 0`, sequence heads add to their output a learnt weight for each position (of the first `L`) and
            token, summed over the sequence: the one-hot linear model of fitness-landscape work, inside the model, for
            fixed-length variant libraries (an "augmented" model; `lyra-train` starts it from the one-hot ridge fit).
            0 (the authors' model) adds nothing.
        site_effects_learning_rate (`float`, *optional*):
            Learning rate of the site effects; 0 keeps them where they start (a linear fit), so that the rest of the
            model learns what that fit misses. `None` uses the optimizer's learning rate.
        prior_length (`int`, *optional*, defaults to 0):
            With `L > 0`, sequence heads add to their output a zero-shot prior's score of the sequence, times a learnt
            weight per output: a fixed table of one score per position (of the first `L`) and token, relative to the
            wild type (0 at its letters, NaN where the prior has none), summed over the sequence, so that a variant's
            score is the sum of its substitutions' (`lyra-train --prior`). The table is a buffer of the model, saved
            and loaded with its weights. 0 adds nothing.
        global_epistasis (`bool`, *optional*, defaults to `False`):
            Whether a regression head passes each output through a learnt monotone curve, `lower + span *
            sigmoid(slope * (z - center))` of the sum `z` of its terms: the global-epistasis model of fitness-landscape
            work (Otwinowski et al., 2018), in which effects add up on a latent scale and the measured value saturates
            (a protein folds or it does not). It changes no ranking of `z`; it lets the terms be fitted on the scale
            where they add. Regression only.
        alphabet (`str`, *optional*):
            The letters of the tokenizer the model was trained with (`LyraTokenizer.letters`), whose embedding rows
            follow the special tokens'. Recorded by `lyra-train`, so that a tokenizer of another alphabet is refused
            where a model and its tokenizer are loaded together. `None`: not recorded.

    Example:

    ```python
    >>> from lyra_hf import LyraConfig, LyraForSequenceRegression

    >>> configuration = LyraConfig()
    >>> model = LyraForSequenceRegression(configuration)
    >>> configuration = model.config
    ```"""

    model_type = "lyra"
    attribute_map = {
        "d_model": "hidden_size",
        "d_state": "state_size",
        "num_hidden_layers": "num_s4d_layers",
        "num_s4_layers": "num_s4d_layers",
    }

    vocab_size: int = 26
    hidden_size: int = 64
    state_size: int = 64
    pgc_expansion_factors: list[int | float] | tuple[int | float, ...] = (0.25, 2.0)
    pgc_kernel_size: int = 3
    pgc_residual: bool = False
    num_s4d_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.2
    dt_min: float = 0.001
    dt_max: float = 0.1
    ssm_learning_rate: float | None = None
    pooling: str = "mean"
    rms_norm_eps: float = 1e-8
    pad_token_id: int | None = 0
    site_effects_length: int = 0
    site_effects_learning_rate: float | None = None
    prior_length: int = 0
    global_epistasis: bool = False
    alphabet: str | None = None

    def __post_init__(self, **kwargs):
        # Lyra is a regression model first (fitness, expression, enrichment): one target unless told otherwise.
        if self.id2label is None and kwargs.get("num_labels") is None:
            kwargs["num_labels"] = 1
        self.validate_types()
        self.pgc_expansion_factors = [float(factor) for factor in self.pgc_expansion_factors]
        super().__post_init__(**kwargs)
        # Fail at construction, naming the field, rather than deep inside the model's `__init__`.
        self.validate_architecture()

    def to_diff_dict(self) -> dict:
        # The diff is taken against PreTrainedConfig, whose default is two labels: a saved two-label config would lose
        # its labels and reload with Lyra's default of one. Always keep the label maps.
        output = super().to_diff_dict()
        full = self.to_dict()
        output.update({key: full[key] for key in ("id2label", "label2id") if full.get(key) is not None})
        return output

    def validate_types(self):
        """Every Lyra field must hold a value of its annotated type (a config file's `"64"` is not the integer 64, and
        `true` is not a number); raises `ValueError` naming the field and value."""
        for name, annotation in LyraConfig.__annotations__.items():
            value = getattr(self, name)
            if not _is_of_type(value, annotation):
                expected = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
                raise ValueError(f"`{name}` must be {expected}, got {value!r} ({type(value).__name__}).")

    def validate_architecture(self):
        """Every size and rate must make a working model; raises `ValueError` naming the field and value."""
        super().validate_architecture()
        self.validate_types()
        for name in ("vocab_size", "hidden_size", "state_size", "num_s4d_layers", "pgc_kernel_size"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        if self.state_size % 2:
            raise ValueError(
                f"`state_size` must be even (S4D keeps state_size / 2 complex-conjugate pairs), got {self.state_size}."
            )
        if self.pgc_kernel_size % 2 == 0:
            raise ValueError(
                f"`pgc_kernel_size` must be odd so the convolution is centred, got {self.pgc_kernel_size}."
            )
        for factor in self.pgc_expansion_factors:
            if int(factor * self.hidden_size) <= 0:
                raise ValueError(
                    f"`pgc_expansion_factors` entry {factor} gives {int(factor * self.hidden_size)} channels for "
                    f"hidden_size={self.hidden_size}; every entry must give at least one."
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout}.")
        if self.site_effects_learning_rate is not None and self.site_effects_learning_rate < 0:
            raise ValueError(
                f"`site_effects_learning_rate` must be non-negative or None, got {self.site_effects_learning_rate}."
            )
        for field in ("site_effects_length", "prior_length"):
            if getattr(self, field) < 0:
                raise ValueError(f"`{field}` must be 0 (none) or a number of positions, got {getattr(self, field)}.")
        if self.global_epistasis and self.problem_type in ("single_label_classification", "multi_label_classification"):
            raise ValueError(
                f"`global_epistasis` is for regression heads; this config's problem_type is {self.problem_type!r}."
            )
        if not 0.0 < self.dt_min <= self.dt_max:
            raise ValueError(
                f"`dt_min` and `dt_max` must satisfy 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}."
            )
        if self.ssm_learning_rate is not None and self.ssm_learning_rate < 0:
            raise ValueError(f"`ssm_learning_rate` must be non-negative or None, got {self.ssm_learning_rate}.")
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"`pooling` must be one of {POOLING_MODES}, got {self.pooling!r}.")
        if self.rms_norm_eps <= 0:
            raise ValueError(f"`rms_norm_eps` must be positive, got {self.rms_norm_eps}.")


def _is_of_type(value, annotation) -> bool:
    """Whether `value` fits a field annotation made of int, float, bool, str, None, unions and lists or tuples of them:
    a bool is not a number, an int is a float, and a float must be finite."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_of_type(value, argument) for argument in arguments)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_is_of_type(item, arguments[0]) for item in value)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


__all__ = ["LyraConfig"]
