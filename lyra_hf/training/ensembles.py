"""Seed ensembles (`--ensemble N`): N complete runs that differ in their seed (and, with `--ensemble-validation rotate`,
the default when validation is carved from the training file, in the tenth of the training rows they validate on),
saved together as one model whose prediction is the members' mean, with their standard deviation."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
from accelerate import Accelerator
from transformers import AutoTokenizer

from ..baseline import fit_baseline
from ..checkpoints import ENSEMBLE_FILE, RunLayout
from ..data import tokenize_dataset
from ..outputs import atomic_directory, locked_output_dir, write_json, write_text
from ..tasks import TASKS
from .inputs import load_data, memory_bound_max_length
from .loop import evaluation_loader, format_metric, predict, score_predictions, score_saved_models
from .options import TrainOptions
from .results import beside_baseline, describe_protocol, run_card, share
from .runs import train_side_by_side
from .state import check_output_dir


def member_options(options: TrainOptions) -> dict[str, TrainOptions]:
    """Each member's run: its own folder and seed `seed + i`, on the ensemble's data split (`data_seed`); with
    `--ensemble-validation rotate`, member i validates on the split's i-th tenth (`--validation-part i`)."""
    rotate = options.ensemble_validation == "rotate"
    return {
        RunLayout.member_name(index): dataclasses.replace(
            options,
            output_dir=str(Path(options.output_dir) / RunLayout.member_name(index)),
            seed=options.seed + index,
            ensemble=None,
            ensemble_validation="shared",
            validation_part=index if rotate else options.validation_part,
            push_to_hub=None,
            no_baseline=True,
        )
        for index in range(options.ensemble)
    }


def train_ensemble(options: TrainOptions) -> str:
    """`--ensemble N`: N complete runs in `OUTPUT_DIR/member_<i>/` (`member_options`), then in `OUTPUT_DIR/best/` each
    member's best model as a `save_pretrained` subfolder, `ensemble.json` and a model card, and in
    `OUTPUT_DIR/results.json` the ensemble's validation and test metrics (its mean prediction, `Task.combine_logits`;
    with `--ensemble-validation rotate`, validation pools each member's own tenth, `out_of_member_validation`) next to
    each member's. With `--resume-from-checkpoint latest`, finished members are kept and an interrupted one
    continues from its last checkpoint."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "--ensemble trains its members in processes of its own; run it without accelerate launch or torchrun."
        )
    output_dir, layout = Path(options.output_dir), RunLayout(options.output_dir)
    members = member_options(options)
    with locked_output_dir(output_dir):
        check_output_dir(options, output_dir)
        train_side_by_side(
            members, resume=bool(options.resume_from_checkpoint), one_at_a_time=options.num_processes is not None
        )
        runs = {name: json.loads(RunLayout(member.output_dir).results.read_text()) for name, member in members.items()}
        tokenizer = AutoTokenizer.from_pretrained(RunLayout(members[next(iter(members))].output_dir).best)
        models = [
            TASKS[options.task].model_class.from_pretrained(RunLayout(member.output_dir).best)
            for member in members.values()
        ]
        max_length = options.max_length or memory_bound_max_length(models[0].config, options.batch_size)
        dataset, names = load_data(options, tokenizer, max_length)
        rotate = options.ensemble_validation == "rotate"
        pooled = (
            out_of_member_validation(list(members.values()), models, tokenizer, names, max_length) if rotate else None
        )
        results = evaluate_ensemble(options, models, tokenizer, dataset, names, runs, pooled)
        card = save_ensemble(options, members, models[0], tokenizer, dataset, results, runs)
        write_json(layout.results, results)
        write_json(layout.options, options.options_file_values())
        share(options, output_dir, card)
    metric, split = options.metric_for_best_model, "test" if results["test"] else "validation"
    return (
        f"ensemble of {len(members)}: {split} {metric} "
        f"{format_metric(results[split][metric])}{beside_baseline(results, split, metric)} (members "
        f"{format_metric(results['members_mean'][split].get(metric))} ± "
        f"{format_metric(results['members_std'][split].get(metric))}); "
        f"ensemble in {layout.best}"
    )


def save_ensemble(
    options: TrainOptions, members: dict[str, TrainOptions], model, tokenizer, dataset, results: dict, runs: dict
):
    """`OUTPUT_DIR/best/`: each member's best model in a subfolder, `ensemble.json` and the card, written atomically;
    returns the card."""
    first = next(iter(members))
    protocol = describe_protocol(options, runs[first]) + (
        f" Ensemble: {len(members)} members with seeds {options.seed}-{options.seed + len(members) - 1}, each chosen "
        "this way"
        + (
            ", member i on the i-th tenth of the training rows, so that together they learned from every row; the "
            "ensemble's validation score pools each member's predictions on its own tenth"
            if options.ensemble_validation == "rotate"
            else ", all on the same validation split"
        )
        + "; the ensemble predicts their mean (of class probabilities for classifiers) and their standard deviation."
    )
    card = run_card(options, model, tokenizer, results, dataset, protocol, ensemble_members=list(members))
    with atomic_directory(RunLayout(options.output_dir).best) as temporary:
        for name, member in members.items():
            shutil.copytree(RunLayout(member.output_dir).best, temporary / name)
        # transformers looks for a tokenizer's remote code at the repo's root even when loading a subfolder.
        for code in (temporary / first).glob("*.py"):
            shutil.copy(code, temporary / code.name)
        write_json(
            temporary / ENSEMBLE_FILE, {"members": list(members), "seeds": [member.seed for member in members.values()]}
        )
        write_text(temporary / "README.md", str(card))
    return card


def evaluate_ensemble(
    options: TrainOptions,
    models: list,
    tokenizer,
    dataset,
    names: list[str],
    runs: dict[str, dict],
    pooled_validation: dict | None,
) -> dict:
    """The ensemble's results.json: its own validation and test metrics (the members' best `models` together, on the
    splits of `dataset`, which every member used; or `pooled_validation`, `out_of_member_validation`'s, when each
    member validated on its own tenth), each member's (`runs`: their results.json), and the members' mean and standard
    deviation (`member_statistics`)."""
    task = TASKS[options.task]
    results = {"ensemble_size": len(runs), "seeds": [options.seed + index for index in range(len(runs))]}
    results["ensemble_validation"] = options.ensemble_validation
    scored = (
        dataset
        if pooled_validation is None
        else datasets.DatasetDict({split: rows for split, rows in dataset.items() if split != "validation"})
    )
    results.update(score_saved_models(options, models, tokenizer, scored, names, "ensemble"))
    if pooled_validation is not None:
        results["validation"] = pooled_validation
    results["members"] = {
        member: {
            "seed": results["seeds"][index],
            "best_epoch": run["best_epoch"],
            "validation": run["validation"],
            "test": run["test"],
        }
        for index, (member, run) in enumerate(runs.items())
    }
    results.update(member_statistics(results, runs))
    results["metric_for_best_model"] = options.metric_for_best_model
    if not options.no_baseline:
        results["baseline"] = fit_baseline(
            task, dataset, tokenizer.letters, names, options.metric_for_best_model, options.data_seed
        ).record
    results["num_parameters"] = sum(parameter.numel() for parameter in models[0].parameters())
    return results


def out_of_member_validation(
    members: list[TrainOptions], models: list, tokenizer, names: list[str], max_length: int
) -> dict:
    """With `--ensemble-validation rotate`, the ensemble's validation metrics: each member's predictions on its own
    validation tenth (rows no other member left out, and it never trained on), pooled and scored together."""
    task = TASKS[members[0].task]
    accelerator = Accelerator(mixed_precision=members[0].mixed_precision)
    pooled = []
    for member, model in zip(members, models):
        validation = load_data(member, tokenizer, max_length)[0]["validation"]
        rows = tokenize_dataset(datasets.DatasetDict(validation=validation), tokenizer)["validation"]
        loader = evaluation_loader(accelerator, rows, member.batch_size, task, tokenizer)
        model = accelerator.prepare_model(model, evaluation_mode=True)
        pooled.append(
            predict(model, loader, accelerator, task, f"member {member.validation_part} validation", not member.quiet)
        )
    predictions, references = (np.concatenate(arrays) for arrays in zip(*pooled))
    return score_predictions(predictions, references, task.compute_metrics(names), task)


def member_statistics(results: dict, runs: dict[str, dict]) -> dict:
    """The members' mean and standard deviation (NumPy's, over members) of each metric every member has."""
    return {
        statistic: {
            split: {
                metric: float(function([run[split][metric] for run in runs.values()]))
                for metric, value in results[split].items()
                if isinstance(value, float) and all(isinstance(run[split].get(metric), float) for run in runs.values())
            }
            for split in ("validation", "test")
            if results[split]
        }
        for statistic, function in (("members_mean", np.mean), ("members_std", np.std))
    }
