"""Bad inputs to lyra-train, lyra-predict, lyra-scan and the Python loaders, one table row each.

For every command case: the exit code (2 for a bad flag, 1 for bad data, checkpoints or folders), exactly one line on
stderr that starts `lyra-X: error:` and names the bad value, every file that existed before byte-identical afterwards,
and no temporary file left. The case names are listed in BENCHMARKS.md ("Bad inputs tried"), which a test checks.
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer
from lyra_hf import predict as predict_command
from lyra_hf import scan as scan_command
from lyra_hf import train as train_command
from lyra_hf.checkpoints import load_checkpoint
from lyra_hf.data import load_sequence_dataset, read_table
from lyra_hf.outputs import LOCK_FILE


REPO = Path(__file__).resolve().parents[1]
TINY = ["--hidden-size", "16", "--state-size", "8", "--epochs", "1", "--batch-size", "32", "--site-effects", "off"]
COMMANDS = {"train": train_command.main, "predict": predict_command.main, "scan": scan_command.main}
GOOD_LINES = [f"{'ACDEFGHIKLMNPQRSTVWY'[i % 20]}KTAYIAK{'QRS'[i % 3]},{i / 10}\n" for i in range(40)]
GOOD_ROWS = "".join(GOOD_LINES)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def save_tiny_checkpoint(path: Path, hidden_size: int = 16) -> Path:
    """A tiny model and its tokenizer, which refuses characters outside its alphabet as lyra-train's do by default."""
    torch.manual_seed(0)
    tokenizer = LyraTokenizer(padding_characters="J", unknown="error")
    model = LyraForSequenceRegression(
        LyraConfig(hidden_size=hidden_size, state_size=8, dropout=0.0, vocab_size=len(tokenizer))
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A complete lyra-train run folder (results.json, best/, checkpoints/) to copy into cases."""
    from accelerate.state import AcceleratorState

    folder = tmp_path_factory.mktemp("finished") / "run"
    flags = [*TINY, "--max-train-samples", "200", "--max-eval-samples", "50", "--output-dir", str(folder)]
    assert train_command.main(flags) == 0
    AcceleratorState._reset_state(reset_partial_state=True)
    return folder


# --- cases: each `setup(work, run)` makes its files in `work` and returns the command's flags -----------------------


def train_case(data: str | bytes | None = None, extra=(), name="train.csv", files: dict[str, str] | None = None):
    """lyra-train on `data` written to `name` (none: the synthetic landscape), with `files` written beside it."""

    def setup(work: Path, run: Path) -> list[str]:
        for file_name, content in (files or {}).items():
            write(work / file_name, content)
        flags = [*TINY, "--output-dir", str(work / "out"), *extra]
        if data is not None:
            flags += ["--train-file", str(write(work / name, data))]
        return [flag.format(work=work, run=run) for flag in flags]

    return setup


def prior_case(prior: str, data: str = "sequence,label\n" + GOOD_ROWS, extra=()):
    """lyra-train on `data` with `--prior` a file of `prior`."""
    return train_case(data, ("--prior", "{work}/prior.csv", *extra), files={"prior.csv": prior})


def over_previous_run(data: str, extra=()):
    """A finished run in the output folder, and a new run over it with bad data."""

    def setup(work: Path, run: Path) -> list[str]:
        shutil.copytree(run, work / "out")
        return [*TINY, "--train-file", str(write(work / "train.csv", data)), "--output-dir", str(work / "out"), *extra]

    return setup


def users_best_folder(work: Path, run: Path) -> list[str]:
    write(work / "out" / "best" / "notes.txt", "my own notes\n")
    return [*TINY, "--output-dir", str(work / "out")]


def locked_folder(work: Path, run: Path) -> list[str]:
    """Another run holds the folder's lock (taken here with a separate open file, as another process would)."""
    write(work / "out" / LOCK_FILE, "")
    handle = os.open(work / "out" / LOCK_FILE, os.O_RDWR)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    HELD_LOCKS.append(handle)
    return [*TINY, "--output-dir", str(work / "out"), "--overwrite-output-dir"]


HELD_LOCKS: list[int] = []


def longer_than_memory_allows(work: Path, run: Path) -> list[str]:
    from lyra_hf.training import memory_bound_max_length

    limit = memory_bound_max_length(LyraConfig(hidden_size=16, state_size=8), 32)
    data = "sequence,label\n" + GOOD_ROWS + "M" * (limit + 1000) + ",1.0\n"
    return [*TINY, "--train-file", str(write(work / "train.csv", data)), "--output-dir", str(work / "out")]


def predict_case(data: str | bytes | None = "sequence\nMKTAYIAK\nACDEF\n", model="{model}", extra=(), name="in.csv"):
    def setup(work: Path, run: Path) -> list[str]:
        save_tiny_checkpoint(work / "model")
        if data is not None:
            write(work / name, data)
        flags = ["--model", model, "--input", str(work / name), "--output", str(work / "out.csv"), *extra]
        return [flag.format(work=work, run=run, model=work / "model") for flag in flags]

    return setup


def pickle_only_checkpoint(work: Path) -> Path:
    folder = save_tiny_checkpoint(work / "pickled")
    state = {name: tensor for name, tensor in LyraForSequenceRegression.from_pretrained(folder).state_dict().items()}
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def with_model(prepare: Callable[[Path], Path], extra=()):
    def setup(work: Path, run: Path) -> list[str]:
        model = prepare(work)
        write(work / "in.csv", "sequence\nMKTAYIAK\n")
        return ["--model", str(model), "--input", str(work / "in.csv"), "--output", str(work / "out.csv"), *extra]

    return setup


def corrupt_checkpoint(work: Path) -> Path:
    folder = save_tiny_checkpoint(work / "corrupt")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return folder


def mismatched_checkpoint(work: Path) -> Path:
    folder = save_tiny_checkpoint(work / "mismatched")
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def existing_output(work: Path, run: Path) -> list[str]:
    write(work / "out.csv", "precious,results\n")
    return predict_case()(work, run)


def output_is_a_dangling_link(work: Path, run: Path) -> list[str]:
    (work / "out.csv").symlink_to(work / "gone" / "predictions.csv")
    return predict_case()(work, run)


def output_is_a_folder(work: Path, run: Path) -> list[str]:
    write(work / "out.csv" / "mine.txt", "mine\n")
    return predict_case()(work, run)


def scan_case(fasta: str | bytes | None = None, sequence=None, model="{model}", extra=()):
    def setup(work: Path, run: Path) -> list[str]:
        save_tiny_checkpoint(work / "model")
        flags = ["--model", model, "--output-dir", str(work / "scans"), "--no-figures", *extra]
        if fasta is not None:
            flags += ["--fasta", str(write(work / "wild_types.fasta", fasta))]
        if sequence is not None:
            flags += ["--sequence", sequence]
        return [flag.format(work=work, run=run, model=work / "model") for flag in flags]

    return setup


def earlier_scan(work: Path, run: Path) -> list[str]:
    write(work / "scans" / "singles.csv", "position,wild_type\n1,M\n")
    write(work / "scans" / "pairs.csv", "position_a\n1\n")
    return scan_case(sequence="MKTAYIAK")(work, run)


def with_dna_tokenizer(work: Path) -> Path:
    """A protein model beside a DNA tokenizer's files."""
    folder = save_tiny_checkpoint(work / "protein-model")
    LyraTokenizer.for_alphabet("dna").save_pretrained(folder)
    return folder


def with_rna_tokenizer(work: Path) -> Path:
    """A DNA model (recorded alphabet ACGTN) beside an RNA tokenizer: the same vocabulary size, other letters."""
    torch.manual_seed(0)
    dna = LyraTokenizer.for_alphabet("dna")
    config = LyraConfig(hidden_size=16, state_size=8, vocab_size=len(dna), alphabet=dna.letters)
    LyraForSequenceRegression(config).save_pretrained(work / "dna-model")
    LyraTokenizer.for_alphabet("rna").save_pretrained(work / "dna-model")
    return work / "dna-model"


def positional_checkpoint(**lengths) -> Callable[[Path], Path]:
    """A tiny model with per-position terms (`site_effects_length`, `prior_length`) for 8 residues."""

    def prepare(work: Path) -> Path:
        torch.manual_seed(0)
        tokenizer = LyraTokenizer(unknown="error")
        config = LyraConfig(
            hidden_size=16, state_size=8, vocab_size=len(tokenizer), alphabet=tokenizer.letters, **lengths
        )
        LyraForSequenceRegression(config).save_pretrained(work / "positional")
        tokenizer.save_pretrained(work / "positional")
        return work / "positional"

    return prepare


def scan_with(prepare: Callable[[Path], Path], sequence: str):
    def setup(work: Path, run: Path) -> list[str]:
        model = prepare(work)
        return ["--model", str(model), "--sequence", sequence, "--output-dir", str(work / "scans"), "--no-figures"]

    return setup


def without_tokenizer(work: Path) -> Path:
    folder = save_tiny_checkpoint(work / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    return folder


def resume_case(*extra):
    """The finished run resumed with other settings (its checkpoints and results must stay as they were)."""

    def setup(work: Path, run: Path) -> list[str]:
        write(work / "train.csv", "sequence,label\n" + GOOD_ROWS)
        flags = [*TINY, "--max-train-samples", "200", "--max-eval-samples", "50", "--output-dir", str(run)]
        return [flag.format(work=work) for flag in (*flags, "--resume-from-checkpoint", "latest", *extra)]

    return setup


def config_case(content: str):
    def setup(work: Path, run: Path) -> list[str]:
        return [*TINY, "--config", str(write(work / "config.json", content)), "--output-dir", str(work / "out")]

    return setup


def options_case(content: str):
    """lyra-train reading its options from a JSON file (an options.json), with a flag beside it."""

    def setup(work: Path, run: Path) -> list[str]:
        return [str(write(work / "options.json", content)), "--output-dir", str(work / "out")]

    return setup


@dataclass
class Case:
    name: str
    command: str
    setup: Callable[[Path, Path], list[str]]
    message: tuple[str, ...]  # substrings of the one error line: the bad value and where it is
    exit_code: int = 1


CASES = [
    # lyra-train: data files
    Case("train-empty-file", "train", train_case(b""), ("train.csv", "is empty")),
    Case("train-header-only", "train", train_case("sequence,label\n"), ("train.csv", "header", "no rows")),
    Case(
        "train-repeated-column",
        "train",
        train_case("sequence,label,label\n" + "".join(line.strip() + ",0\n" for line in GOOD_LINES)),
        ("train.csv", "column 'label' appears 2 times"),
    ),
    Case(
        "train-binary-file",
        "train",
        train_case(b"\x1f\x8b\x08\x00\xff\xfe" * 40),
        ("train.csv", "byte 1", "0x8b", "not UTF-8"),
    ),
    Case(
        "train-missing-file",
        "train",
        train_case(extra=("--train-file", "{work}/no/such.csv")),
        ("No such data file", "no/such.csv"),
    ),
    Case(
        "train-wrong-sequence-column",
        "train",
        train_case("seq,label\n" + GOOD_ROWS),
        ("no column 'sequence'", "available columns"),
    ),
    Case(
        "train-wrong-label-column",
        "train",
        train_case("sequence,label\n" + GOOD_ROWS, ("--label-columns", "fitness")),
        ("no column 'fitness'",),
    ),
    Case(
        "train-unknown-character",
        "train",
        train_case("sequence,label\n" + GOOD_ROWS + "ACZD,1\n"),
        ("row 41", "'Z'", "position 3"),
    ),
    Case(
        "train-empty-sequence",
        "train",
        train_case("sequence,label\n" + GOOD_ROWS + '"",1\n'),
        ("empty sequence", "row 41"),
    ),
    Case(
        "train-nan-label", "train", train_case("sequence,label\n" + GOOD_ROWS + "ACDE,nan\n"), ("NaN label", "row 41")
    ),
    Case(
        "train-inf-label",
        "train",
        train_case("sequence,label\n" + GOOD_ROWS + "ACDE,inf\n"),
        ("label inf", "row 41", "not finite"),
    ),
    Case(
        "train-label-too-large",
        "train",
        train_case("sequence,label\n" + GOOD_ROWS + "ACDE,1e300\n"),
        ("label 1e+300", "column 'label' at row 41", "too large"),
    ),
    Case(
        "train-text-label",
        "train",
        train_case("sequence,label\n" + GOOD_ROWS + "ACDE,high\n"),
        ("label 'high'", "row 41", "not a number"),
    ),
    Case(
        "train-all-padding-row",
        "train",
        train_case(
            "sequence,label\n" + "".join(GOOD_LINES[:11]) + "JJJJ,1\n" + GOOD_ROWS, ("--padding-characters", "J")
        ),
        ("row 12", "only padding characters"),
    ),
    Case(
        "train-longer-than-max-length",
        "train",
        train_case("sequence,label\n" + GOOD_ROWS + "M" * 500 + ",1\n", ("--max-length", "300")),
        ("row 41", "500 residues", "300", "--max-length"),
    ),
    Case(
        "train-longer-than-memory-allows",
        "train",
        longer_than_memory_allows,
        ("row 41", "residues long", "--max-length"),
    ),
    Case(
        "train-token-labels-wrong-length",
        "train",
        train_case("sequence,ss\nACDE,HHE\n", ("--task", "token-classification", "--label-columns", "ss")),
        ("row 1", "3 per-residue labels", "4 residues"),
    ),
    Case(
        "train-missing-config",
        "train",
        train_case(extra=("--config", "{work}/no/config.json")),
        ("No such config file", "no/config.json"),
    ),
    Case("train-config-is-a-run-folder", "train", train_case(extra=("--config", "{run}")), ("did you mean", "best")),
    Case(
        "train-config-key-typo",
        "train",
        config_case('{"hiden_size": 32}'),
        ("config.json", "unknown key 'hiden_size'", "did you mean 'hidden_size'"),
    ),
    Case(
        "train-config-string-number",
        "train",
        config_case('{"hidden_size": "64"}'),
        ("config.json", "`hidden_size` must be int", "'64' (str)"),
    ),
    Case("train-config-not-json", "train", config_case("hidden_size: 64\n"), ("config.json", "is not a JSON file")),
    Case(
        "train-json-lines-input",
        "train",
        train_case('{"sequence": "MKTA", "label": 1.0}\n', name="train.jsonl"),
        ("train.jsonl", "is JSON Lines", "CSV"),
    ),
    Case(
        "train-global-epistasis-classes",
        "train",
        train_case(
            "sequence,label\n" + "".join(f"MKTA{'ACD'[i % 3]},{'ab'[i % 2]}\n" for i in range(30)),
            ("--task", "classification", "--global-epistasis", "on"),
        ),
        ("--global-epistasis on", "regression", "classification"),
        2,
    ),
    Case(
        "train-one-class",
        "train",
        train_case(
            "sequence,label\n" + "".join(f"MKTA{'ACD'[i % 3]},a\n" for i in range(30)), ("--task", "classification")
        ),
        ("one class ('a')", "two or more"),
    ),
    Case(
        "train-one-row-validation",
        "train",
        train_case(
            "sequence,label\n" + GOOD_ROWS,
            ("--validation-file", "{work}/validation.csv"),
            files={"validation.csv": "sequence,label\nMKTAYIAK,0.3\n"},
        ),
        ("validation split: 1 row", "at least 2"),
    ),
    Case(
        "train-constant-label",
        "train",
        train_case("sequence,label\n" + "".join(f"{line.split(',')[0]},0.5\n" for line in GOOD_LINES)),
        ("every train label of 'label' is 0.5", "nothing to learn"),
    ),
    Case(
        "train-constant-validation-label",
        "train",
        train_case(
            "sequence,label\n" + GOOD_ROWS,
            ("--validation-file", "{work}/constant.csv"),
            files={"constant.csv": "sequence,label\nMKTAYIAK,1\nMKTAYIAV,1\n"},
        ),
        ("every validation label of 'label' is 1", "spearmanr", "--metric-for-best-model mse"),
    ),
    Case(
        "train-protein-file-as-dna",
        "train",
        train_case("sequence,label\n" + GOOD_ROWS, ("--alphabet", "dna", "--unknown", "unk")),
        ("train split", "of its letters lie outside the alphabet 'ACGTN'", "read like protein (--alphabet protein)"),
    ),
    Case(
        "train-custom-alphabet-like-a-name",
        "train",
        train_case(extra=("--alphabet", "protien")),
        ("'protien'", "looks like 'protein'"),
    ),
    # lyra-train: zero-shot priors (the training rows are variants of ?KTAYIAK?)
    Case(
        "train-prior-for-another-sequence",
        "train",
        prior_case("mutant,score\nM2D,0.5\n"),
        ("prior.csv", "position 2 is M in the prior and K", "another sequence"),
    ),
    Case(
        "train-prior-mutant-unparsed",
        "train",
        prior_case("mutant,score\nK2-D,0.5\n"),
        ("prior.csv", "row 1", "'K2-D'", "A14D"),
    ),
    Case(
        "train-prior-position-outside",
        "train",
        prior_case("mutant,score\nK2D,0.5\nQ20A,0.1\n"),
        ("prior.csv", "position 20", "outside the 9-residue"),
    ),
    Case(
        "train-prior-nan-score",
        "train",
        prior_case("mutant,score\nK2D,nan\n"),
        ("prior.csv", "row 1 (K2D)", "finite number"),
    ),
    Case(
        "train-prior-protein-for-dna",
        "train",
        prior_case(
            "mutant,score\nM1K,0.5\n",
            data="sequence,label\n" + "".join(f"ACGT{'ACGT'[i % 4]}A,{i}\n" for i in range(40)),
            extra=("--alphabet", "dna"),
        ),
        ("prior.csv", "'M'", "alphabet 'ACGTN'"),
    ),
    Case(
        "train-prior-without-a-score",
        "train",
        prior_case("mutant,score\nK2D,0.5\n"),
        ("the train split holds F1V", "prior.csv has no score for", "--prior-missing"),
    ),
    Case(
        "train-prior-missing-without-prior",
        "train",
        train_case("sequence,label\n" + GOOD_ROWS, ("--prior-missing", "0")),
        ("--prior-missing needs --prior",),
        2,
    ),
    # lyra-train: output folders
    Case(
        "train-over-previous-run",
        "train",
        train_case(extra=("--output-dir", "{run}")),
        ("already holds a run", "--overwrite-output-dir"),
    ),
    Case(
        "train-overwrite-with-nan-label",
        "train",
        over_previous_run("sequence,label\n" + GOOD_ROWS + "ACDE,nan\n", ("--overwrite-output-dir",)),
        ("NaN label", "row 41"),
    ),
    Case("train-over-users-best-folder", "train", users_best_folder, ("already holds a run (best)",)),
    Case("train-folder-in-use", "train", locked_folder, ("is in use by another run",)),
    Case(
        "train-resume-from-non-checkpoint",
        "train",
        train_case(extra=("--resume-from-checkpoint", "{work}")),
        ("is not a complete lyra-train checkpoint",),
    ),
    Case(
        "train-resume-other-architecture",
        "train",
        resume_case("--hidden-size", "32"),
        ("--hidden-size 32 (checkpoint: 16)", "--overwrite-output-dir"),
    ),
    Case("train-resume-more-epochs", "train", resume_case("--epochs", "4"), ("--epochs 4 (checkpoint: 1)",)),
    Case(
        "train-resume-other-learning-rate",
        "train",
        resume_case("--learning-rate", "0.01"),
        ("--learning-rate 0.01 (checkpoint: 0.003)",),
    ),
    Case(
        "train-resume-other-train-file",
        "train",
        resume_case("--train-file", "{work}/train.csv"),
        ("--train-file is not the file it was",),
    ),
    # lyra-train: flags
    Case("train-zero-epochs", "train", train_case(extra=("--epochs", "0")), ("--epochs", "at least 1", "got '0'"), 2),
    Case(
        "train-unknown-metric",
        "train",
        train_case(extra=("--metric-for-best-model", "auroc")),
        ("'auroc' is not a regression metric",),
        2,
    ),
    Case(
        "train-unknown-flag",
        "train",
        train_case(extra=("--no-such-flag",)),
        ("unrecognized arguments: --no-such-flag",),
        2,
    ),
    Case(
        "train-nan-learning-rate",
        "train",
        train_case(extra=("--learning-rate", "nan")),
        ("--learning-rate", "finite number above 0", "'nan'"),
        2,
    ),
    Case(
        "train-negative-time-budget",
        "train",
        train_case(extra=("--max-train-minutes", "-1")),
        ("--max-train-minutes", "above 0", "'-1'"),
        2,
    ),
    Case(
        "train-one-row-eval-limit",
        "train",
        train_case(extra=("--max-eval-samples", "1")),
        ("--max-eval-samples", "at least 2", "'1'"),
        2,
    ),
    Case(
        "train-options-key-typo",
        "train",
        options_case('{"epoch": 3}'),
        ("options.json", "unknown option 'epoch'", "did you mean 'epochs'"),
        2,
    ),
    Case(
        "train-options-out-of-range",
        "train",
        options_case('{"epochs": 0}'),
        ("options.json", "epochs", "at least 1", "got '0'"),
        2,
    ),
    Case(
        "train-options-text-for-number",
        "train",
        options_case('{"learning_rate": "fast"}'),
        ("options.json", "learning_rate", "'fast'"),
        2,
    ),
    Case(
        "train-options-switch-not-boolean",
        "train",
        options_case('{"quiet": "yes"}'),
        ("options.json", "quiet", "true or false", '"yes"'),
        2,
    ),
    Case(
        "train-options-not-a-choice",
        "train",
        options_case('{"task": "ranking"}'),
        ("options.json", "task", "regression", '"ranking"'),
        2,
    ),
    Case("train-options-not-json", "train", options_case("epochs: 3\n"), ("options.json", "cannot be read as JSON"), 2),
    Case("train-options-not-an-object", "train", options_case("[3]"), ("options.json", "JSON object", "list"), 2),
    Case(
        "train-options-contradict",
        "train",
        options_case('{"validation_column": "v"}'),
        ("--validation-column needs --split-column",),
        2,
    ),
    Case(
        "train-tracker-not-installed",
        "train",
        train_case(extra=("--report-to", "wandb")),
        ("--report-to wandb needs its package", "pip install wandb"),
        2,
    ),
    # lyra-predict: checkpoints
    Case(
        "predict-missing-absolute-model",
        "predict",
        predict_case(model="{work}/no/such/model"),
        ("No such directory", "no/such/model"),
    ),
    Case(
        "predict-missing-relative-model",
        "predict",
        predict_case(model="runs/no-such-run/best"),
        ("No such directory: runs/no-such-run/best",),
    ),
    Case(
        "predict-run-folder-as-model",
        "predict",
        predict_case(model="{run}"),
        ("lyra-train run folder", "did you mean", "/best?"),
    ),
    Case(
        "predict-pickle-only-checkpoint",
        "predict",
        with_model(pickle_only_checkpoint),
        ("pytorch_model.bin", "no model.safetensors"),
    ),
    Case("predict-corrupt-weights", "predict", with_model(corrupt_checkpoint), ("corrupt", "model.safetensors")),
    Case("predict-mismatched-config", "predict", with_model(mismatched_checkpoint), ("do not match", "config.json")),
    Case(
        "predict-protein-model-dna-tokenizer",
        "predict",
        with_model(with_dna_tokenizer),
        ("protein-model", "do not match", "10 tokens", "embedding 26"),
    ),
    Case(
        "predict-dna-model-rna-tokenizer",
        "predict",
        with_model(with_rna_tokenizer),
        ("dna-model", "alphabet is 'ACGUN'", "trained on 'ACGTN'"),
    ),
    Case(
        "predict-checkpoint-without-tokenizer",
        "predict",
        with_model(without_tokenizer),
        ("no-tokenizer", "holds no tokenizer"),
    ),
    Case(
        "predict-longer-than-site-effects",
        "predict",
        with_model(positional_checkpoint(site_effects_length=7)),
        ("row 1", "8 residues", "first 7 positions"),
    ),
    Case(
        "predict-other-length-than-prior",
        "predict",
        with_model(positional_checkpoint(prior_length=9)),
        ("row 1", "8 residues", "wild type of 9 residues"),
    ),
    Case("predict-model-is-a-file", "predict", predict_case(model="{work}/in.csv"), ("is a file",)),
    # lyra-predict: input and output files
    Case("predict-empty-input", "predict", predict_case(b""), ("in.csv", "is empty")),
    Case("predict-header-only-input", "predict", predict_case("sequence\n"), ("in.csv", "no rows")),
    Case(
        "predict-repeated-column",
        "predict",
        predict_case("name,sequence,name\na,MKTA,b\n"),
        ("in.csv", "column 'name' appears 2 times"),
    ),
    Case(
        "predict-binary-input", "predict", predict_case(b"PK\x03\x04\x14\x00\x08\x00\xc3\x28"), ("in.csv", "not UTF-8")
    ),
    Case("predict-wrong-column", "predict", predict_case("seq\nMKTA\n"), ("no column 'sequence'",)),
    Case(
        "predict-unknown-character", "predict", predict_case("sequence\nMKTA\nMK1A\n"), ("row 2", "'1'", "position 3")
    ),
    Case(
        "predict-all-padding-row",
        "predict",
        predict_case("sequence\nMKTA\nJJJ\n"),
        ("row 2", "only padding characters"),
    ),
    Case("predict-existing-output", "predict", existing_output, ("out.csv exists", "--overwrite")),
    Case("predict-output-is-a-folder", "predict", output_is_a_folder, ("out.csv is a directory",)),
    Case(
        "predict-output-dangling-link",
        "predict",
        output_is_a_dangling_link,
        ("--output", "out.csv is a link to", "gone/predictions.csv", "does not exist"),
    ),
    Case(
        "predict-zero-batch-size",
        "predict",
        predict_case(extra=("--batch-size", "0")),
        ("--batch-size", "at least 1", "got '0'"),
        2,
    ),
    Case(
        "predict-device-not-here",
        "predict",
        predict_case(extra=("--device", "cuda:7")),
        ("--device", "'cuda:7'", "no such cuda device"),
        2,
    ),
    Case(
        "predict-json-input",
        "predict",
        predict_case('[{"sequence": "MKTA"}]\n', name="in.json"),
        ("in.json", "is JSON", "CSV"),
    ),
    # lyra-scan
    Case(
        "scan-duplicate-fasta-ids",
        "scan",
        scan_case(">wt\nMKTAYIAK\n>wt\nMKTAYIAV\n"),
        ("records 1 ('wt') and 2 ('wt')", "share"),
    ),
    Case(
        "scan-ids-one-folder-after-escaping", "scan", scan_case(">a/b\nMKTA\n>a_b\nMKTV\n"), ("'a/b'", "'a_b'", "'a_b'")
    ),
    Case("scan-empty-fasta", "scan", scan_case(b""), ("wild_types.fasta", "is empty")),
    Case("scan-fasta-without-records", "scan", scan_case("MKTAYIAK\n"), ("line 1", "before any '>' header")),
    Case(
        "scan-bad-letter-in-one-record",
        "scan",
        scan_case(">ok\nMKTA\n>bad\nMK1A\n"),
        ("record 'bad'", "'1' at position 3"),
    ),
    Case(
        "scan-other-length-than-prior",
        "scan",
        scan_with(positional_checkpoint(prior_length=8), "MKTAYIA"),
        ("wild-type sequence", "7 residues", "wild type of 8 residues"),
    ),
    Case("scan-only-padding", "scan", scan_case(sequence="JJJ"), ("only padding characters",)),
    Case(
        "scan-earlier-scan-without-overwrite",
        "scan",
        earlier_scan,
        ("holds an earlier scan", "singles.csv", "pairs.csv", "--overwrite"),
    ),
    Case("scan-run-folder-as-model", "scan", scan_case(sequence="MKTA", model="{run}"), ("did you mean",)),
    Case(
        "scan-pairs-outside-sequence",
        "scan",
        scan_case(sequence="MKTA", extra=("--pairs", "2-9")),
        ("outside the sequence (1-4)",),
    ),
    Case(
        "scan-pairs-and-top-k",
        "scan",
        scan_case(sequence="MKTA", extra=("--pairs", "1-3", "--top-k", "3")),
        ("--pairs or --top-k",),
        2,
    ),
]


@contextlib.contextmanager
def stderr_as_a_terminal_shows_it():
    """Under pytest, library log handlers keep the stream they were made with and warnings are recorded, not printed;
    here both go to the current (captured) stderr, as in a process of its own."""
    handlers = [
        handler
        for name in ("transformers", "datasets", "accelerate", "huggingface_hub")
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, logging.StreamHandler)
    ]
    streams = [handler.stream for handler in handlers]
    for handler in handlers:
        handler.setStream(sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line)
        )
        try:
            yield
        finally:
            for handler, stream in zip(handlers, streams):
                handler.stream = stream


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def temporary_files(folder: Path) -> list[str]:
    return [str(path) for path in folder.rglob("*") if path.name.endswith((".tmp", ".old")) or ".tmp" in path.suffixes]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_fails_in_one_line_and_changes_nothing(case, tmp_path, finished_run, capfd, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    flags = case.setup(work, run)
    before = snapshot(tmp_path)
    capfd.readouterr()
    try:
        with stderr_as_a_terminal_shows_it():
            try:
                code = COMMANDS[case.command](flags)
            except SystemExit as exit:  # argparse's usage errors
                code = exit.code
    finally:
        while HELD_LOCKS:
            os.close(HELD_LOCKS.pop())
    error = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == case.exit_code, error
    assert len(error) == 1, error
    assert error[0].startswith(f"lyra-{case.command}: error:"), error
    for part in case.message:
        assert part in error[0], (part, error[0])
    after = snapshot(tmp_path)
    assert {name: after.get(name) for name in before} == before, "a file that existed before was changed or removed"
    assert not temporary_files(tmp_path)


PYTHON_CASES = {
    "python-empty-file": (lambda work: load_sequence_dataset(write(work / "t.csv", b"")), "is empty"),
    "python-binary-file": (lambda work: read_table(write(work / "t.csv", b"\x00\x01\xff")), "not UTF-8"),
    "python-inf-label": (
        lambda work: load_sequence_dataset(write(work / "t.csv", "sequence,label\nACD,1\nKLM,-inf\n")),
        "row 2",
    ),
    "python-run-folder-checkpoint": (lambda work: load_checkpoint(str(work / "run")), "did you mean"),
    "python-pickle-only-checkpoint": (
        lambda work: load_checkpoint(str(pickle_only_checkpoint(work))),
        "pytorch_model.bin",
    ),
}


@pytest.mark.parametrize("name", list(PYTHON_CASES))
def test_python_loaders_raise_one_clear_error(name, tmp_path, finished_run):
    shutil.copytree(finished_run, tmp_path / "run")
    load, message = PYTHON_CASES[name]
    with pytest.raises((ValueError, OSError)) as error:
        load(tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_every_case_is_listed_in_benchmarks():
    listed = (REPO / "BENCHMARKS.md").read_text().split("## Bad inputs tried", 1)[-1]
    assert [case.name for case in CASES if f"`{case.name}`" not in listed] == []
    assert [name for name in PYTHON_CASES if f"`{name}`" not in listed] == []


# --- what the fixes let through ------------------------------------------------------------------------------------


def test_overwrite_replaces_a_run_only_after_the_data_passed(tmp_path, finished_run):
    output = tmp_path / "run"
    shutil.copytree(finished_run, output)
    write(output / "checkpoints" / "epoch_0009" / "training_state.json", "{}")  # stale: the new run has 1 epoch
    assert (
        train_command.main(
            [
                *TINY,
                "--max-train-samples",
                "200",
                "--max-eval-samples",
                "50",
                "--seed",
                "3",
                "--output-dir",
                str(output),
                "--overwrite-output-dir",
            ]
        )
        == 0
    )
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == ["epoch_0001"]
    assert json.loads((output / "results.json").read_text())["history"][0]["epoch"] == 1


def test_scan_fasta_ids_stay_inside_the_output_folder(tmp_path):
    save_tiny_checkpoint(tmp_path / "model")
    fasta = write(tmp_path / "wild_types.fasta", ">../../escape\nMKTA\n>/abs/path\nMKTV\n>sp|P1|X\nMKTW\n")
    output = tmp_path / "deep" / "scans"
    assert (
        scan_command.main(
            ["--model", str(tmp_path / "model"), "--fasta", str(fasta), "--output-dir", str(output), "--no-figures"]
        )
        == 0
    )
    assert sorted(path.name for path in output.iterdir() if path.name != LOCK_FILE) == [
        "_._.._escape",
        "_abs_path",
        "sp_P1_X",
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["deep", "model", "wild_types.fasta"]


def test_scan_overwrite_leaves_no_stale_files(tmp_path):
    save_tiny_checkpoint(tmp_path / "model")
    output = tmp_path / "scan"
    flags = ["--model", str(tmp_path / "model"), "--sequence", "MKTAYIAK", "--output-dir", str(output), "--no-figures"]
    assert scan_command.main([*flags, "--pairs", "2-4"]) == 0
    write(output / "my_notes.txt", "mine\n")
    assert (output / "pairs.csv").exists()
    assert scan_command.main([*flags, "--overwrite"]) == 0
    assert sorted(path.name for path in output.iterdir()) == ["my_notes.txt", "singles.csv"]


def test_scan_proposes_only_real_residues_and_plots_without_warnings(tmp_path, recwarn):
    pytest.importorskip("matplotlib")
    save_tiny_checkpoint(tmp_path / "model")
    output = tmp_path / "scan"
    assert (
        scan_command.main(["--model", str(tmp_path / "model"), "--sequence", "MKJJXA", "--output-dir", str(output)])
        == 0
    )
    rows = (output / "singles.csv").read_text().splitlines()[1:]
    mutants = {row.split(",")[2] for row in rows}
    assert "X" not in mutants and "J" not in mutants and len(mutants) == 20
    assert {row.split(",")[0] for row in rows} == {"1", "2", "5", "6"}  # padding positions 3-4 are not mutated
    assert not [warning for warning in recwarn if issubclass(warning.category, RuntimeWarning)]


# --- two real processes on one output folder ------------------------------------------------------------------------


def test_the_lock_file_goes_with_the_command_and_a_stale_handle_locks_the_new_one(tmp_path):
    """A folder's lock file exists while a command holds it and is removed when it ends; a process that opened the
    file just before it was removed does not take that lock for the folder's, but the new file's; a lock another
    process holds is left alone."""
    from lyra_hf.outputs import locked_output_dir

    folder = tmp_path / "out"
    with locked_output_dir(folder):
        assert (folder / LOCK_FILE).exists()
        stale = os.open(folder / LOCK_FILE, os.O_RDWR)  # another process about to lock it
    assert not (folder / LOCK_FILE).exists()
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the removed file's lock: worth nothing
    with locked_output_dir(folder):
        assert (folder / LOCK_FILE).exists()
    os.close(stale)
    write(folder / LOCK_FILE, "")
    held = os.open(folder / LOCK_FILE, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(ValueError, match="in use by another run"):
        with locked_output_dir(folder):
            pass
    assert (folder / LOCK_FILE).exists()
    os.close(held)


def lock_held(path: Path) -> bool:
    """Whether another process holds the `flock` on `path`."""
    if not path.exists():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def test_a_second_run_into_a_busy_folder_fails_at_once_and_the_first_stays_consistent(tmp_path):
    """Two runs into a folder a third is training in are refused at once; then the third is interrupted (Ctrl-C to its
    process group, as a terminal sends it): one line saying how to resume, exit code 130, and a `best/` that is the
    best epoch its last checkpoint records."""
    from test_train import synthetic_test_spearman

    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    output = tmp_path / "shared"
    command = [
        sys.executable,
        "-m",
        "lyra_hf.train",
        "--hidden-size",
        "16",
        "--state-size",
        "8",
        "--batch-size",
        "32",
        "--max-train-samples",
        "1000",
        "--max-eval-samples",
        "101",
        "--output-dir",
        str(output),
        "--quiet",
        "--site-effects",
        "on",
    ]
    # A budget so that the first run ends by itself should this test stop before interrupting it.
    first = subprocess.Popen(
        [*command, "--epochs", "1000", "--max-train-minutes", "3"],
        env=environment,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not lock_held(output / LOCK_FILE):
        assert first.poll() is None and time.monotonic() < deadline, (
            first.stderr.read()[-2000:] if first.poll() is not None else "no lock"
        )
        time.sleep(0.05)
    # Two more runs at once: a plain one, and one that would replace the folder's run.
    started = time.monotonic()
    seconds = [
        subprocess.Popen(
            [*command, "--epochs", "1", "--seed", "2", *extra],
            env=environment,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in ([], ["--overwrite-output-dir"])
    ]
    for second in seconds:
        _, stderr = second.communicate(timeout=300)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert second.returncode == 1 and len(lines) == 1, stderr[-2000:]
        assert (
            lines[0].startswith("lyra-train: error:")
            and str(output) in lines[0]
            and "in use by another run" in lines[0]
        )
    assert first.poll() is None, "the first run ended before the others were refused"
    assert time.monotonic() - started < 40
    while not list((output / "checkpoints").glob("epoch_[0-9]*")):
        assert first.poll() is None and time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert first.returncode == 130 and len(lines) == 1, lines
    assert lines[0].startswith("lyra-train: interrupted (SIGINT); resume with: lyra-train ") and lines[0].endswith(
        "--resume-from-checkpoint latest"
    )
    assert not temporary_files(output) and not (output / "results.json").exists()
    latest = sorted((output / "checkpoints").glob("epoch_*"))[-1]
    state = json.loads((latest / "training_state.json").read_text())
    best = next(entry for entry in state["history"] if entry["epoch"] == state["best_epoch"])
    assert best["spearmanr"] == pytest.approx(
        synthetic_test_spearman(output / "best", 101, split="validation"), abs=1e-5
    )


# --- a full disk ----------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs where this test can mount one (root on Linux); otherwise None."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True
        ).returncode
        == 0
    )
    yield mount_point if mounted else None
    if mounted:
        subprocess.run(["umount", str(mount_point)], check=True)


def fill(folder: Path, leave_bytes: int) -> None:
    """Fill the file system of `folder` until about `leave_bytes` remain."""
    free = shutil.disk_usage(folder).free - leave_bytes
    if free > 0:
        write(folder / "filler.bin", b"\0" * free)


def test_full_disk_fails_in_one_line_and_keeps_the_previous_output(tmp_path, small_disk, capfd, monkeypatch):
    save_tiny_checkpoint(tmp_path / "model")
    write(tmp_path / "in.csv", "sequence\n" + "".join(f"MKTAYIAK{'ACDEFGHIKL'[i % 10]}\n" for i in range(4000)))
    folder = small_disk or tmp_path / "simulated"
    output = write(folder / "predictions.csv", "the previous predictions\n")
    if small_disk is not None:
        fill(folder, 16 * 1024)
    else:  # no tmpfs: the writer's own file gets the error a full disk gives
        import lyra_hf.checkpoints

        def full_disk_open(path, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        monkeypatch.setattr(lyra_hf.checkpoints, "open", full_disk_open, raising=False)
    before = snapshot(folder)
    capfd.readouterr()
    code = predict_command.main(
        [
            "--model",
            str(tmp_path / "model"),
            "--input",
            str(tmp_path / "in.csv"),
            "--output",
            str(output),
            "--overwrite",
        ]
    )
    error = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(error) == 1 and "No space left on device" in error[0], error
    assert snapshot(folder) == before and not temporary_files(folder)


def test_full_disk_during_training_leaves_no_temporary_folder(tmp_path, small_disk, capfd, monkeypatch):
    if small_disk is None:
        pytest.skip("needs a tmpfs (root on Linux) to fill")
    write(small_disk / "notes.txt", "mine\n")
    fill(small_disk, 24 * 1024)
    before = snapshot(small_disk)
    capfd.readouterr()
    code = train_command.main(
        [*TINY, "--max-train-samples", "200", "--max-eval-samples", "50", "--output-dir", str(small_disk / "run")]
    )
    error = [
        line for line in capfd.readouterr().err.splitlines() if line.strip() and "%|" not in line
    ]  # not progress bars
    assert code == 1 and len(error) == 1 and "No space left on device" in error[0], error
    after = snapshot(small_disk)
    assert {name: after[name] for name in before} == before and not temporary_files(small_disk)


INTERRUPTS = {
    # lyra-train in two processes (the elastic launcher's path), interrupted with Ctrl-C after its first checkpoint;
    # lyra-predict with two workers (50,000 rows), stopped by SIGTERM (one process, Ctrl-C: the busy-folder test below)
    "train-ctrl-c": (
        ["lyra_hf.train", *TINY, "--epochs", "50", "--max-train-samples", "3000", "--num-processes", "2", "--quiet"],
        signal.SIGINT,
    ),
    "predict-sigterm": (
        ["lyra_hf.predict", "--input", "{work}/many.csv", "--output", "{work}/out.csv", "--overwrite"],
        signal.SIGTERM,
    ),
}


@pytest.mark.parametrize("name", list(INTERRUPTS))
def test_an_interrupt_ends_in_one_line_and_leaves_nothing_partial(name, tmp_path, finished_run):
    """Ctrl-C (to the whole process group, as a terminal sends it) or SIGTERM while the command works: one line naming
    the signal, exit code 130 or 143, the earlier output unchanged, no temporary file; lyra-train says how to resume."""
    flags, signum = INTERRUPTS[name]
    work = tmp_path / "work"
    run = shutil.copytree(finished_run, tmp_path / "run")
    write(work / "out.csv", "precious,results\n")
    letters = "ACDEFGHIKLMNPQRSTVWY"
    write(work / "many.csv", "sequence\n" + "".join(letters[i % 20] * 2 + letters * 10 + "\n" for i in range(50_000)))
    output = ["--output-dir", str(work / "train")] if "train" in name else ["--model", str(run / "best")]
    command = [sys.executable, "-m", *[flag.format(work=work) for flag in flags], *output]
    environment = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    before = snapshot(tmp_path)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment, start_new_session=True
    )
    # At work: a training checkpoint written, or the prediction's temporary output file opened.
    started = (
        (lambda: (work / "train" / "checkpoints" / "epoch_0001").is_dir())
        if "train" in name
        else (lambda: list(work.glob(".out.csv.*.tmp")))
    )
    deadline = time.monotonic() + 120
    while not started():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    os.killpg(process.pid, signum)
    _, stderr = process.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert process.returncode == 128 + signum, stderr
    assert len(lines) == 1 and lines[0].startswith(
        f"lyra-{name.split('-')[0]}: interrupted ({signal.Signals(signum).name})"
    ), lines
    if "train" in name:
        assert lines[0].endswith(f"--output-dir {work / 'train'} --resume-from-checkpoint latest"), lines
    after = snapshot(tmp_path)
    assert {path: after.get(path) for path in before} == before
    assert not temporary_files(tmp_path)
