"""Share trained checkpoints on the Hub: the model card, and one atomic commit of a `lyra-train` run.

A pushed repo holds `config.json`, `model.safetensors`, the tokenizer files, the modeling and configuration code
(`auto_map`, so it loads with `trust_remote_code=True` where lyra-hf is not installed), `results.json` and a model card
(`README.md`) built from `model_card_template.md` (also at `model_cards/template.md`).
"""

from pathlib import Path

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData

from .checkpoints import RunLayout
from .metrics import METRICS
from .tasks import task_of
from .tokenization_lyra import ALPHABETS


TEMPLATE = Path(__file__).with_name("model_card_template.md")


def alphabet_name(tokenizer) -> str:
    """`protein`, `dna`, `rna` or `custom`: the tag the card gets."""
    return next((name for name, letters in ALPHABETS.items() if letters == tokenizer.letters), "custom")


def test_results(task, dataset_name: str, test: dict) -> list[EvalResult]:
    """The test metrics as the card's `model-index` entries (the undefined ones left out)."""
    return [
        EvalResult(
            task_type=task.pipeline_tag,
            task_name=task.title,
            dataset_type=dataset_name,
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type=metric,
            metric_name=METRICS[metric].title,
            metric_value=round(float(test[metric]), 4),
        )
        for metric in task.metric_names
        if isinstance(test.get(metric), (int, float))
    ]


def results_table(task, test: dict, results: dict | None, ensemble_members: list[str] | None) -> str:
    """The card's results section: the test metrics as a table, saying which model scored them, with the one-hot
    baseline's beside them when the run fitted one."""
    if not test:
        return "No test results were recorded for this checkpoint."
    baseline = (results or {}).get("baseline") or {}
    columns = [
        entry
        for entry in (baseline, baseline.get("with_prior"), baseline.get("prior_alone"))
        if entry and entry.get("test")
    ]

    def shown(values: dict, metric: str) -> str:
        return "undefined" if values.get(metric) is None else f"{values[metric]:.4f}" if metric in values else "-"

    header = (
        "| metric | value |"
        + "".join(f" {entry['name']} |" for entry in columns)
        + "\n| --- | ---: |"
        + " ---: |" * len(columns)
    )
    rows = "\n".join(
        f"| {METRICS[metric].title} | {shown(test, metric)} |"
        + "".join(f" {shown(entry['test'], metric)} |" for entry in columns)
        for metric in task.metric_names
        if metric in test
    )
    rows += f"\n\n{test['note']}." if "note" in test else ""
    if columns:
        rows += (
            f"\n\nThe {baseline['name']} baseline (each position's letter one-hot) was fitted on the same train "
            "split, its regularisation chosen on validation."
        )
    if len(columns) > 1:
        rows += (
            " With the model's zero-shot prior, the same ridge with the prior's score as one more feature, and the "
            "prior's score alone, stand beside it."
        )
    chosen = (
        f"the mean prediction of {len(ensemble_members)} members"
        if ensemble_members
        else f"best epoch {results.get('best_epoch')}"
    )
    return (
        f"On the test split ({test.get('num_samples', test.get('num_residues', '?'))} samples), "
        f"{chosen}:\n\n{header}\n{rows}"
    )


INTENDED_USE = (
    "{task} of {alphabet} sequences like those it was trained on: scoring variants, ranking designs, screening "
    "candidates before experiments. It is a small supervised model for one assay, not a general foundation model."
)


def build_model_card(
    model,
    tokenizer,
    repo_id: str,
    results: dict | None = None,
    dataset_name: str | None = None,
    license: str | None = None,
    training_data: str | None = None,
    protocol: str | None = None,
    ensemble_members: list[str] | None = None,
) -> ModelCard:
    """A model card with YAML metadata (library, pipeline tag, tags, license, datasets, `model-index` with the test
    metrics of `results` when given) and the sections readers need: intended use, how to load, data and protocol,
    results, architecture, limitations and the citation. For a seed ensemble, `model` is one of its members and
    `ensemble_members` names their subfolders."""
    config = model.config
    task = task_of(config, type(model).__name__)
    alphabet = alphabet_name(tokenizer)
    names = [config.id2label[index] for index in range(config.num_labels)]
    dataset_name = dataset_name or "custom"
    test = (results or {}).get("test") or {}
    tags = [
        "lyra",
        "biology",
        alphabet if alphabet != "custom" else "biological-sequences",
        "state-space-model",
        task.name,
    ]
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag=task.pipeline_tag, tags=tags, license=license,
        datasets=[dataset_name] if dataset_name != "custom" else None, model_name=repo_id.split("/")[-1],
        eval_results=test_results(task, dataset_name, test) or None,
    )  # fmt: skip
    prediction, head = task.describe_head(names, config)
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        ensemble_members=ensemble_members,
        num_parameters=f"{model.num_parameters():,}",
        prediction=prediction,
        alphabet_name=alphabet if alphabet != "custom" else f"custom-alphabet ({tokenizer.letters})",
        intended_use=INTENDED_USE.format(task=task.title, alphabet=alphabet),
        auto_class=task.auto_class.__name__,
        training_data=training_data or f"Dataset: {dataset_name}.",
        protocol=protocol
        or "The epoch was chosen on a validation split; the test split was scored once with that model.",
        results_table=results_table(task, test, results, ensemble_members),
        pgc_expansions=" and ".join(str(factor) for factor in config.pgc_expansion_factors),
        num_s4d_layers=config.num_s4d_layers,
        hidden_size=config.hidden_size,
        state_size=config.state_size,
        direction=", bidirectional" if config.bidirectional else "",
        head=head,
        letters=tokenizer.letters,
    )


def push_run(
    run_dir: str | Path,
    repo_id: str,
    card: ModelCard,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
) -> str:
    """Push a `lyra-train` output directory's best model, tokenizer, `results.json` and the card in one commit (the
    server applies it whole or not at all); creates the repo and the branch when needed. A seed ensemble's `best/`
    goes with its member subfolders and `ensemble.json`. Returns the commit URL."""
    run = RunLayout(run_dir)
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    best = run.best
    operations = [
        CommitOperationAdd(path_in_repo=path.relative_to(best).as_posix(), path_or_fileobj=str(path))
        for path in sorted(best.rglob("*"))
        if path.is_file() and path.relative_to(best).as_posix() != "README.md"
    ]
    operations.append(CommitOperationAdd(path_in_repo=RunLayout.RESULTS, path_or_fileobj=str(run.results)))
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode()))
    commit = api.create_commit(
        repo_id, operations=operations, commit_message="Upload Lyra model trained with lyra-train", revision=revision
    )
    return commit.commit_url


__all__ = ["build_model_card", "push_run", "alphabet_name"]
