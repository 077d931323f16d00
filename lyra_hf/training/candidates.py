"""Candidates chosen on validation: where a new regression model's optional parts are left to lyra-train
(`--site-effects auto --global-epistasis auto`, sequences of one length), it trains the plain architecture and the full
one (site effects started from a linear fit, and the global-epistasis curve) side by side, each a complete run in
`OUTPUT_DIR/candidates/<name>/`, and keeps the one validation supports.

Which is kept: a variant library (`lyra_hf.data.library`) keeps the full model, and other sequences the plain one,
unless the other candidate is better on validation in paired bootstrap resamples of its rows, on all of them or on their
fitter half (how well each ranks the variants worth making), at `CONFIDENCE` over both views, and not worse so on the
other view, with at least `MIN_ROWS_TO_OVERRULE` validation rows: a few dozen rows cannot say, and the data's kind
decides (with fewer, only its candidate is trained: the other could not be kept). The choice reads Spearman correlation
(the mean over targets), the ranking that design and ProteinGym read; each candidate's epoch is chosen as in any run.
BENCHMARKS.md, "Defaults in regimes", measures the rule in five regimes.
"""

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from accelerate import Accelerator
from scipy.stats import spearmanr
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from ..checkpoints import RunLayout
from ..data import SEQUENCE_COLUMN, tokenize_dataset
from ..data.library import LibraryCheck, check_library
from ..outputs import atomic_directory, atomic_file, locked_output_dir, write_json, write_text
from ..tasks import TASKS
from .inputs import load_data, load_prior, memory_bound_max_length
from .loop import evaluation_loader, format_metric, predict
from .options import TrainOptions
from .results import beside_baseline, describe_protocol, run_card, run_record, share
from .runs import train_here_or_on_cpus, train_side_by_side
from .setup import build_config, build_tokenizer, pretrained_checkpoint
from .state import check_output_dir


# Each candidate's optional parts.
CANDIDATES = {
    "plain": {"site_effects": "off", "global_epistasis": "off"},
    "full": {"site_effects": "on", "global_epistasis": "on"},
}
# The share of bootstrap resamples in which the candidate the data's kind does not favour must win (over both views
# together: each view is held to 1 - (1 - CONFIDENCE) / views, Bonferroni's correction), and their number.
CONFIDENCE = 0.95
RESAMPLES = 1000
# Fewer validation rows than this never overrule the data's kind: on 39 rows of GFP, a bootstrap "supported" the plain
# model at 98% where it scored 0.55 on test against the full model's 0.65 (BENCHMARKS.md, "Defaults in regimes").
MIN_ROWS_TO_OVERRULE = 100
# The share of --max-train-minutes the candidates get; the rest pays for choosing between them.
CANDIDATE_BUDGET_SHARE = 0.97


def candidates_are_open(options: TrainOptions) -> bool:
    """Whether the options leave a new regression model's optional parts to lyra-train (the data then decides, once
    it is read, whether its sequences have one length)."""
    left_open = options.site_effects == "auto" and options.global_epistasis == "auto" and not options.config
    return left_open and TASKS[options.task].numeric_labels and not (options.ensemble or options.tune)


@dataclass
class Plan:
    """A run as lyra-train makes it: its options, and where its parts are open and its training sequences share one
    length, the candidates to train (with the data read, and whether they are a variant library, to decide); `runs`
    are what is trained."""

    options: TrainOptions
    candidates: dict[str, TrainOptions] | None = None
    dataset: object = None
    library: LibraryCheck | None = None

    @property
    def runs(self) -> dict[str, TrainOptions]:
        return self.candidates or {"": self.options}


def plan_run(options: TrainOptions) -> Plan:
    """Whether `options` make one run or a choice between candidates (the data are read, and a bad file or prior is
    refused, here, once, rather than in each candidate)."""
    if not candidates_are_open(options) or pretrained_checkpoint(options) is not None:
        return Plan(options)
    tokenizer = build_tokenizer(options)
    max_length = options.max_length or memory_bound_max_length(build_config(options, tokenizer), options.batch_size)
    dataset = load_data(options, tokenizer, max_length)[0]
    load_prior(options, dataset, tokenizer)
    if len({len("".join(sequence.split())) for sequence in dataset["train"][SEQUENCE_COLUMN]}) != 1:
        return Plan(options)
    candidates, library = candidate_options(options), check_library(dataset["train"][SEQUENCE_COLUMN])
    if len(dataset["validation"]) < MIN_ROWS_TO_OVERRULE:
        # Validation this small cannot overrule the data's kind, so the other candidate would be trained for nothing.
        favoured = favourite(library)[0]
        candidates = {favoured: dataclasses.replace(candidates[favoured], max_train_minutes=options.max_train_minutes)}
    return Plan(options, candidates, dataset, library)


def train_one(options: TrainOptions) -> str | None:
    """One run, or where the optional parts are open and the training sequences share one length, its candidates
    (side by side on CPUs) and the choice between them; the closing line."""
    started, plan = time.time(), plan_run(options)
    if plan.candidates is None:
        return train_here_or_on_cpus(options)
    with locked_output_dir(options.output_dir):
        check_output_dir(options, Path(options.output_dir))
        train_side_by_side(
            plan.candidates,
            resume=bool(options.resume_from_checkpoint),
            one_at_a_time=options.num_processes is not None,
            started=started,
        )
        return finish_candidates(plan, started)


def candidate_options(options: TrainOptions) -> dict[str, TrainOptions]:
    """Each candidate's run: its folder and its optional parts."""
    minutes = options.max_train_minutes and options.max_train_minutes * CANDIDATE_BUDGET_SHARE
    return {
        name: dataclasses.replace(
            options,
            output_dir=str(RunLayout(options.output_dir).candidate(name).root),
            **parts,
            max_train_minutes=minutes,
            push_to_hub=None,
        )
        for name, parts in CANDIDATES.items()
    }


def finish_candidates(plan: Plan, started: float) -> str:
    """Once the candidates have trained: keep the one `choose` picks in `OUTPUT_DIR/best/`, and write
    `OUTPUT_DIR/results.json` (the kept run's results, with the choice and its evidence under `components`) and its
    test predictions; the closing line."""
    options, runs, layout, library = plan.options, plan.candidates, RunLayout(plan.options.output_dir), plan.library
    if len(runs) == 1:
        chosen, evidence = unopposed(library, len(plan.dataset["validation"]))
    else:
        predictions, labels = validation_predictions(runs)
        chosen, evidence = choose(predictions, labels, library, options.data_seed)
    tqdm.write(f"lyra-train: {evidence['why']}; keeping the {chosen} model.")
    kept = RunLayout(runs[chosen].output_dir)
    results = json.loads(kept.results.read_text())
    results["components"] = {**(results.get("components") or {}), "candidates": evidence}
    results.update(run_record(options, results["input_sha256"]), run_seconds=time.time() - started)
    card = save_chosen(options, runs[chosen], results, plan.dataset)
    if kept.test_predictions.is_file():
        with atomic_file(layout.test_predictions) as temporary:
            shutil.copyfile(kept.test_predictions, temporary)
    write_json(layout.results, results)
    write_json(layout.options, options.options_file_values())
    share(options, Path(options.output_dir), card)
    return candidates_line(options, results, evidence)


def save_chosen(options: TrainOptions, chosen: TrainOptions, results: dict, dataset):
    """`OUTPUT_DIR/best/`: the chosen candidate's model and tokenizer, with a card of its own that says how it was
    chosen, written atomically; returns the card."""
    evidence = results["components"]["candidates"]
    with atomic_directory(RunLayout(options.output_dir).best) as temporary:
        shutil.copytree(RunLayout(chosen.output_dir).best, temporary, dirs_exist_ok=True)
        model, tokenizer = (
            TASKS[options.task].model_class.from_pretrained(temporary),
            AutoTokenizer.from_pretrained(temporary),
        )
        trained = "the plain and the full model side by side" if evidence["views"] else "one candidate"
        protocol = describe_protocol(chosen, results) + (
            f" lyra-train trained {trained} and kept the {evidence['chosen']} one: {evidence['why']}."
        )
        card = run_card(options, model, tokenizer, results, dataset, protocol)
        write_text(temporary / "README.md", str(card))
    return card


def candidates_line(options: TrainOptions, results: dict, evidence: dict) -> str:
    metric, split = options.metric_for_best_model, "test" if results["test"] else "validation"
    view = evidence["views"].get("all validation rows")
    scores = (
        "validation spearmanr: " + ", ".join(f"{name} {format_metric(view[name])}" for name in CANDIDATES)
        if view
        else f"the {evidence['chosen']} model alone (validation too small to choose)"
    )
    return (
        f"best epoch {results['best_epoch']} of the {evidence['chosen']} model: {split} {metric} "
        f"{format_metric(results[split][metric])}"
        f"{beside_baseline(results, split, metric)}; {scores}; model and tokenizer in "
        f"{RunLayout(options.output_dir).best}"
    )


def validation_predictions(runs: dict[str, TrainOptions]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each candidate's best model's predictions on the validation split (the same rows for both) and its labels."""
    first = next(iter(runs.values()))
    task, accelerator, predictions = TASKS[first.task], Accelerator(mixed_precision=first.mixed_precision), {}
    for name, run in runs.items():
        best = RunLayout(run.output_dir).best
        tokenizer = build_tokenizer(dataclasses.replace(run, config=str(best)))
        model = accelerator.prepare_model(task.model_class.from_pretrained(best), evaluation_mode=True)
        rows = load_data(run, tokenizer, run.max_length or memory_bound_max_length(model.config, run.batch_size))[0][
            "validation"
        ]
        loader = evaluation_loader(
            accelerator,
            tokenize_dataset(datasets.DatasetDict(validation=rows), tokenizer)["validation"],
            run.batch_size,
            task,
            tokenizer,
        )
        predictions[name], labels = predict(model, loader, accelerator, task, f"{name} validation", not run.quiet)
    return predictions, labels.reshape(len(labels), -1)


def choose(
    predictions: dict[str, np.ndarray], labels: np.ndarray, library: LibraryCheck, seed: int
) -> tuple[str, dict]:
    """The candidate to keep, from each candidate's validation `predictions` of `labels` (rows, targets), and why (see
    the module's docstring): results.json's `components.candidates`."""
    favoured, other = favourite(library)
    rows = {"all validation rows": np.arange(len(labels))}
    if labels.shape[1] == 1:
        rows["fitter half"] = np.flatnonzero(labels[:, 0] >= np.median(labels[:, 0]))
    rng, views = np.random.default_rng(seed), {}
    for view, indices in rows.items():
        resamples = [indices] + [rng.choice(indices, len(indices)) for _ in range(RESAMPLES)]
        scores = {
            name: np.array([spearman(predictions[name][sample], labels[sample]) for sample in resamples])
            for name in predictions
        }
        shares = {
            f"{name}_better_share": float(np.mean(scores[name][1:] > scores[rival][1:]))
            for name, rival in ((other, favoured), (favoured, other))
        }
        views[view] = {**{name: float(value[0]) for name, value in scores.items()}, **shares}
    level = 1 - (1 - CONFIDENCE) / len(views)
    better = [view for view in views.values() if view[f"{other}_better_share"] >= level]
    worse = [view for view in views.values() if view[f"{favoured}_better_share"] >= level]
    enough = len(labels) >= MIN_ROWS_TO_OVERRULE
    chosen = other if better and not worse and enough else favoured
    why = f"{library.reason}, so the {favoured} model unless validation supports the {other} one"
    if chosen == other:
        verdict = f"validation supports the {other} model"
    elif better and not worse:
        verdict = f"{len(labels)} validation rows are too few to overrule it (at least {MIN_ROWS_TO_OVERRULE})"
    else:
        verdict = f"validation does not support the {other} model"
    return chosen, {
        "chosen": chosen,
        "favoured": favoured,
        "why": f"{why}: {verdict}",
        "confidence": CONFIDENCE,
        "per_view_confidence": level,
        "views": views,
        "library": library.record(),
    }


def favourite(library: LibraryCheck) -> tuple[str, str]:
    """The candidate the data's kind favours (a variant library: the full model; other sequences: the plain one), and
    the other."""
    return ("full", "plain") if library.is_library else ("plain", "full")


def unopposed(library: LibraryCheck, validation_rows: int) -> tuple[str, dict]:
    """The candidate the data's kind favours where validation has too few rows to overrule it (`plan_run` trained no
    other), and why."""
    favoured, other = favourite(library)
    verdict = (
        f"{validation_rows} validation rows are too few to overrule it (at least {MIN_ROWS_TO_OVERRULE}), so the "
        f"{other} one was not trained"
    )
    return favoured, {
        "chosen": favoured,
        "favoured": favoured,
        "why": f"{library.reason}, so the {favoured} model unless validation supports the {other} one: {verdict}",
        "confidence": CONFIDENCE,
        "views": {},
        "library": library.record(),
    }


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman correlation, the mean over targets; a constant column counts as no correlation (0)."""
    values = [
        spearmanr(predicted, label)[0] if np.ptp(predicted) and np.ptp(label) else 0.0
        for predicted, label in zip(predictions.T, labels.T)
    ]
    return float(np.mean(values))
