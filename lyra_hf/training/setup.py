"""What a run trains: the tokenizer, the configuration, the model (new or a checkpoint to fine-tune) and the
optimizer's parameter groups."""

import difflib
import json
import os
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig

from .. import LyraConfig, LyraTokenizer
from ..baseline import BaselineFit, fit_start
from ..checkpoints import check_model_and_tokenizer, load_tokenizer, resolve_checkpoint
from ..data import LABELS_COLUMN
from ..tasks import TASKS
from .options import ModelOptions, TrainOptions


# Keys a saved config.json carries besides the configuration's own fields.
SAVED_CONFIG_KEYS = ("auto_map", "torch_dtype", "use_cache")
# The least-squares fit of the global-epistasis curve to the start's training predictions: full-batch Adam steps over
# four numbers per output (scipy's curve_fit is the test's reference).
CURVE_FIT_STEPS = 300
CURVE_FIT_LEARNING_RATE = 0.05


def parameter_groups(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: the parameters a module tags with optimizer settings of their own (its `_optim`, by
    parameter name: the S4D recipe's SSM parameters, without weight decay and at `config.ssm_learning_rate` when set),
    one group per setting; biases, norm weights and other vectors without weight decay; the remaining matrices with
    `weight_decay`. Works for `Trainer` too (`optimizers=(AdamW(groups), None)`)."""
    tagged = {}
    for module in model.modules():
        for name, settings in getattr(module, "_optim", {}).items():
            tagged[id(getattr(module, name))] = settings
    groups = {
        "decay": {"params": [], "weight_decay": weight_decay, "lr": learning_rate},
        "no_decay": {"params": [], "weight_decay": 0.0, "lr": learning_rate},
    }
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        if id(parameter) in tagged:
            settings = {"weight_decay": weight_decay, "lr": learning_rate, **tagged[id(parameter)]}
            groups.setdefault(json.dumps(settings, sort_keys=True), {"params": [], **settings})["params"].append(
                parameter
            )
        else:
            groups["decay" if parameter.ndim >= 2 else "no_decay"]["params"].append(parameter)
    return [group for group in groups.values() if group["params"]]


def build_optimizer(model: torch.nn.Module, options: TrainOptions, device: torch.device) -> torch.optim.AdamW:
    # The fused kernel updates every parameter in one pass, where torch's default on a CPU loops over the tensors
    # (BENCHMARKS.md, "CPU use"); Trainer's default optimizer is the same.
    fused = True if device.type in ("cpu", "cuda") else None  # None: torch's own choice on other devices
    return torch.optim.AdamW(parameter_groups(model, options.learning_rate, options.weight_decay), fused=fused)


def is_checkpoint(path: str) -> bool:
    """A directory or Hub id holding model weights (rather than a config JSON to start from); checked."""
    if path.endswith(".json"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such config file: {path}")
        return False
    resolve_checkpoint(path)
    return True


def build_tokenizer(options: TrainOptions) -> LyraTokenizer:
    """The checkpoint's own tokenizer when `--config` names one to fine-tune (checked against its model), else a new
    one for `--alphabet`."""
    if options.config and is_checkpoint(options.config):
        source = resolve_checkpoint(options.config)
        tokenizer = load_tokenizer(options.config, source, {})
        if not isinstance(tokenizer, LyraTokenizer):
            raise ValueError(f"--config {options.config} holds a {type(tokenizer).__name__}, not a LyraTokenizer.")
        check_model_and_tokenizer(AutoConfig.from_pretrained(source), tokenizer, f"--config {options.config}")
        return tokenizer
    # The saved tokenizer keeps the run's rule for characters outside the alphabet, so that lyra-predict and
    # pipeline() treat them as training did: both refuse them, or both map them to [UNK].
    return LyraTokenizer.for_alphabet(
        options.alphabet, padding_characters=options.padding_characters, unknown=options.unknown
    )


def read_config_file(path: str) -> LyraConfig:
    """A LyraConfig from a JSON file the user wrote. A file that is not a JSON object, or a key LyraConfig does not
    know (a typo such as `hiden_size` would otherwise train at the default width), fails naming the file and the key;
    the values' types and ranges are LyraConfig's own checks."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--config {path} is not a JSON file ({error}).") from None
    if not isinstance(values, dict):
        raise ValueError(
            f"--config {path} must hold a JSON object of LyraConfig fields, got a {type(values).__name__}."
        )
    known = {*LyraConfig().to_dict(), *LyraConfig.attribute_map, *SAVED_CONFIG_KEYS}
    if unknown := [key for key in values if key not in known]:
        hints = [difflib.get_close_matches(key, known, n=1) for key in unknown]
        named = ", ".join(
            f"{key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "") for key, hint in zip(unknown, hints)
        )
        raise ValueError(f"--config {path}: unknown key {named}; LyraConfig's fields are listed in its docstring.")
    try:
        return LyraConfig(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--config {path}: {error}") from None


def size_overrides(options: TrainOptions) -> dict:
    return {field: getattr(options, field) for field in ModelOptions.SIZE_FIELDS if getattr(options, field) is not None}


def pretrained_checkpoint(options: TrainOptions) -> str | None:
    """The checkpoint `--config` names to fine-tune (None for a config JSON or none), refused with size flags."""
    if not (options.config and is_checkpoint(options.config)):
        return None
    if options.prior:
        raise ValueError(
            f"--prior cannot be added to the pretrained checkpoint {options.config}; train a new model with it."
        )
    if sizes := size_overrides(options):
        flags = ", ".join(f"--{field.replace('_', '-')}" for field in sizes)
        raise ValueError(
            f"{flags} cannot resize the pretrained checkpoint {options.config}; drop them or start from a config JSON."
        )
    return resolve_checkpoint(options.config)


def build_config(options: TrainOptions, tokenizer):
    """The architecture to train: a checkpoint's, a config JSON's, or the default, with the size flags applied."""
    if checkpoint := pretrained_checkpoint(options):
        return AutoConfig.from_pretrained(checkpoint)
    config = read_config_file(options.config) if options.config else LyraConfig()
    tokens = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "alphabet": tokenizer.letters}
    task_defaults = {} if options.config else TASKS[options.task].model_defaults  # a config JSON says it all
    for field, value in {**task_defaults, **size_overrides(options), **tokens}.items():
        setattr(config, field, value)
    config.validate_architecture()
    return config


def build_model(options: TrainOptions, tokenizer, names: list[str], config=None):
    """A fresh model from `config` (default: `build_config`), or a checkpoint to fine-tune with a head for this task's
    labels."""
    task = TASKS[options.task]
    labels = {"id2label": dict(enumerate(names)), "label2id": {name: index for index, name in enumerate(names)}}
    if checkpoint := pretrained_checkpoint(options):
        config = AutoConfig.from_pretrained(checkpoint, num_labels=len(names), problem_type=task.problem_type, **labels)
        # A new task gets a new head: weights of a head with another number of outputs are not loaded.
        return task.model_class.from_pretrained(checkpoint, config=config, ignore_mismatched_sizes=True)
    config = config or build_config(options, tokenizer)
    config.num_labels, config.problem_type = len(names), task.problem_type
    config.id2label, config.label2id = labels["id2label"], labels["label2id"]
    return task.model_class(config)


def start_global_epistasis(curve, latent: np.ndarray, targets: np.ndarray) -> None:
    """Start the curve at the targets' range, its steepest point (slope 1) at the latent's median, then fit it to
    map `latent` to `targets` (both (rows, outputs); unlabelled targets are NaN and left out) by least squares, so
    that training starts from the best curve through the start's predictions. A latent without spread (a model
    without a linear start) keeps the first guess."""
    latent, targets = (
        torch.as_tensor(np.asarray(array, dtype=np.float32)).reshape(len(array), -1) for array in (latent, targets)
    )
    labelled = torch.isfinite(targets)
    low = torch.stack([column[known].min() for column, known in zip(targets.T, labelled.T)])
    span = (torch.stack([column[known].max() for column, known in zip(targets.T, labelled.T)]) - low).clamp_min(1e-6)
    with torch.no_grad():
        curve.lower.copy_(low)
        curve.span.copy_(span)
        curve.center.copy_(latent.median(0).values)
        curve.log_slope.copy_(torch.log(4 / span))
    if float(latent.std(0).max()) == 0.0:
        return
    optimizer = torch.optim.Adam(curve.parameters(), lr=CURVE_FIT_LEARNING_RATE)
    targets = torch.where(labelled, targets, 0.0)
    with torch.enable_grad():
        for _ in range(CURVE_FIT_STEPS):
            loss = ((curve(latent) - targets) ** 2 * labelled).sum() / labelled.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    curve.zero_grad(set_to_none=True)  # training's first step must not see this fit's gradients


def start_from_baseline(model, fit: BaselineFit, tokenizer) -> None:
    """Set the model's site effects to a linear fit's weights per position and letter (`fit_baseline`, one-hot or with
    shared substitutions) and its pooled head to output the fit's intercept, so that training starts from the fit's
    predictions (exactly, or through the global-epistasis curve fitted to them: the head's weights are zeroed, so the
    network adds nothing yet) and learns what they miss. A binary logistic fit gives the second class's logit, the
    first's staying 0."""
    coefficients = fit.site_coefficients
    intercept = np.atleast_1d(fit.estimator.intercept_)
    if coefficients.shape[0] == 1 and model.config.num_labels == 2:
        coefficients = np.concatenate([np.zeros_like(coefficients), coefficients])
        intercept = np.concatenate([[0.0], intercept])
    site_effects, letters = model.site_effects, len(fit.letters)
    token_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(fit.letters)))
    with torch.no_grad():
        site_effects.weight.zero_()
        for position in range(min(fit.width, site_effects.length)):
            block = coefficients[:, position * letters : (position + 1) * letters].T
            site_effects.weight[position * site_effects.vocab_size + token_ids] = torch.as_tensor(
                block, dtype=site_effects.weight.dtype
            )
        model.score.weight.zero_()
        model.score.bias.copy_(torch.as_tensor(intercept, dtype=model.score.bias.dtype))
        if model.prior is not None:
            weights = (
                fit.prior_coefficients
                if len(fit.prior_coefficients) == model.config.num_labels
                else np.concatenate([[0.0], fit.prior_coefficients])
            )
            model.prior.scale.copy_(torch.as_tensor(weights, dtype=model.prior.scale.dtype))
    if model.global_epistasis is not None:
        start_global_epistasis(model.global_epistasis, fit.train_outputs, fit.train_targets)


def start_model(
    model, fit_arguments: tuple, tokenizer, components, prior: dict | None = None
) -> tuple[dict | None, torch.Tensor | None]:
    """Start a new model's site effects (and a prior's weight) from the linear fit `fit_start` chooses (every process
    fits it: the same start everywhere), or without site effects, a prior's weight and the intercept from a linear fit
    of the labels to the prior alone, or a curve at the training labels' range. Returns the start's record (None
    without site effects), also in `components.record` (`components.Components`), and the pooled head's initial
    weights, which `start_from_baseline` zeroes and training takes back (`loop.release_head`). `prior`: each split's
    prior scores."""
    task, dataset = fit_arguments[0], fit_arguments[1]
    if model.config.site_effects_length:
        start_fit = fit_start(*fit_arguments, prior=prior)
        head = model.score.weight.detach().clone()
        start_from_baseline(model, start_fit, tokenizer)
        components.record["start"] = {key: start_fit.record[key] for key in ("name", "regularisation", "chosen_on")}
        return components.record["start"], head
    if not task.numeric_labels:
        return None, None
    labels = np.asarray(dataset["train"][LABELS_COLUMN], dtype=np.float64).reshape(len(dataset["train"]), -1)
    latent = start_prior_alone(model, prior["train"], labels) if model.prior is not None else np.zeros_like(labels)
    if model.config.global_epistasis:
        start_global_epistasis(model.global_epistasis, latent, labels)
    return None, None


def start_prior_alone(model, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A model without site effects starts its prior's weight and its head's intercept at the least-squares line
    through the training labels (unlabelled, NaN, left out) and the prior's scores; the line's values (rows,
    outputs)."""
    lines = np.zeros_like(labels)
    with torch.no_grad():
        for output, column in enumerate(labels.T):
            known = np.isfinite(column)
            slope, intercept = (
                np.polyfit(scores[known], column[known], 1)
                if np.ptp(scores[known]) > 0
                else (0.0, column[known].mean())
            )
            model.prior.scale[output] = float(slope)
            model.score.bias[output] += float(intercept)
            lines[:, output] = slope * scores + intercept
    return lines
