"""A run's state between epochs: the checkpoints it writes (`accelerator.save_state` plus `training_state.json`), the
best epoch's model, and resuming, which continues only the run that was checkpointed."""

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..checkpoints import RunLayout
from ..outputs import atomic_directory, raise_write_error, refuse_earlier_outputs, replace_directory, write_json
from .options import INPUT_FILES, RUN_ONLY_OPTIONS, TrainOptions, flag_name


TRAINING_STATE_FILE = "training_state.json"
# The moving average of the weights (with --ema-decay), saved with each checkpoint as safetensors, never pickled.
EMA_FILE = "ema.safetensors"


def check_output_dir(options: TrainOptions, output_dir: Path) -> None:
    """Refuse to write over an earlier run (or a `best/` folder of the user's) unless told to continue or replace it;
    the replacing itself waits until every input has been checked."""
    if not options.resume_from_checkpoint and not options.overwrite_output_dir:
        remedy = "--resume-from-checkpoint latest to continue it or --overwrite-output-dir to replace it"
        refuse_earlier_outputs(f"--output-dir {output_dir}", RunLayout(output_dir).existing_outputs(), "a run", remedy)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run_settings(options: TrainOptions) -> dict:
    """What a run computes from, as JSON values: every option but `RUN_ONLY_OPTIONS`, with each input file (data, config
    JSON) by the SHA-256 of its content rather than its path (a moved file is the same data, an edited one is not)."""
    values = dataclasses.asdict(options)
    settings = {key: value for key, value in values.items() if key not in RUN_ONLY_OPTIONS + INPUT_FILES}
    settings["input_sha256"] = {
        key: file_sha256(path) for key in INPUT_FILES if (path := values[key]) and os.path.isfile(path)
    }
    return json.loads(json.dumps(settings))


def new_state(options: TrainOptions) -> dict:
    """The state of a run before its first epoch; `settings` are compared when the run is resumed."""
    state = {
        "epoch": 0,
        "best_epoch": None,
        "best_metric": None,
        "history": [],
        "train_seconds": 0.0,
        "train_samples": 0,
        "steps": 0,
    }
    return {**state, "settings": run_settings(options)}


def changed_inputs(options: TrainOptions, recorded: dict[str, str]) -> dict[str, tuple[str, str]]:
    """The input files whose content is not what a run recorded (`recorded`: input -> SHA-256, as `run_settings`
    takes them): input -> (recorded digest, now's digest, or "none" for an input now missing)."""
    now = run_settings(options)["input_sha256"]
    return {
        key: (recorded.get(key, "none"), now.get(key, "none"))
        for key in sorted(set(now) | set(recorded))
        if now.get(key) != recorded.get(key)
    }


def rerun_changes(options: TrainOptions) -> dict[str, tuple[str, str]]:
    """For a run made from an options.json (`lyra-train OPTIONS_JSON`), the inputs that differ from those the run it
    records read (its results.json, beside it; none when there is no results.json)."""
    results = Path(options.rerun_of).parent / RunLayout.RESULTS if options.rerun_of else None
    if results is None or not results.is_file():
        return {}
    return changed_inputs(options, json.loads(results.read_text()).get("input_sha256", {}))


def check_rerun_inputs(options: TrainOptions) -> None:
    """Refuse to rerun an options.json on input files other than its run's, naming the first and both digests,
    unless --allow-changed-inputs (results.json then records them, `run_record`)."""
    if options.allow_changed_inputs or not (changes := rerun_changes(options)):
        return
    key, (recorded, now) = next(iter(changes.items()))
    raise ValueError(
        f"{options.rerun_of} reruns a run whose {flag_name(key)} had SHA-256 {recorded[:16]}…; {getattr(options, key)} "
        f"now has {now[:16]}…: not the same data. Pass --allow-changed-inputs to run it anyway."
    )


def check_resume_settings(options: TrainOptions, checkpoint: Path) -> None:
    """Refuse to resume `checkpoint` with settings other than those it was trained with, naming each difference
    (a resumed run continues that run: its data, architecture, optimizer and schedule)."""
    saved = json.loads((checkpoint / TRAINING_STATE_FILE).read_text()).get("settings")
    if saved is None:  # written before runs recorded their settings
        return
    now = run_settings(options)
    differences = [
        f"{flag_name(key)} {now.get(key)!r} (checkpoint: {saved.get(key)!r})"
        for key in sorted((set(now) | set(saved)) - {"input_sha256"})
        if now.get(key) != saved.get(key)
    ]
    differences += [
        f"{flag_name(key)} is not the file it was" for key in changed_inputs(options, saved.get("input_sha256", {}))
    ]
    if differences:
        raise ValueError(
            f"--resume-from-checkpoint {checkpoint}: this run differs from the one checkpointed: "
            f"{'; '.join(differences)}. "
            f"Resume with its settings (results.json and {TRAINING_STATE_FILE} list them) or start afresh with "
            "--overwrite-output-dir."
        )


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (incomplete ones are written under a temporary name and never match)."""
    checkpoints = [path for path in RunLayout(output_dir).saved_checkpoints() if (path / TRAINING_STATE_FILE).is_file()]
    return checkpoints[-1] if checkpoints else None


def checkpoint_to_resume(options: TrainOptions, output_dir: Path) -> Path | None:
    """The checkpoint `--resume-from-checkpoint` names (`latest`: the newest in the output folder; None when there is
    none yet), checked to be complete and to match this run's settings."""
    if not options.resume_from_checkpoint:
        return None
    checkpoint = (
        latest_checkpoint(output_dir)
        if options.resume_from_checkpoint == "latest"
        else Path(options.resume_from_checkpoint)
    )
    if checkpoint is None:
        return None
    if not (checkpoint / TRAINING_STATE_FILE).is_file():
        raise ValueError(
            f"--resume-from-checkpoint {checkpoint} is not a complete lyra-train checkpoint (no {TRAINING_STATE_FILE})."
        )
    check_resume_settings(options, checkpoint)
    return checkpoint


def restore_state(accelerator, checkpoint: Path, ema, state: dict) -> dict:
    """Load `checkpoint` into the prepared objects (and the moving average `ema`) and return its state, with this
    run's `state["settings"]`."""
    accelerator.load_state(str(checkpoint))
    restored = json.loads((checkpoint / TRAINING_STATE_FILE).read_text())
    if ema is not None:
        if not (checkpoint / EMA_FILE).is_file():
            raise ValueError(f"--ema-decay is set but checkpoint {checkpoint} was written without it (no {EMA_FILE}).")
        ema.load_state_dict(load_file(checkpoint / EMA_FILE))  # copied onto the parameters' device
    if accelerator.is_main_process:
        print(f"lyra-train: resumed from {checkpoint} after epoch {restored['epoch']}.", file=sys.stderr)
    return {**restored, "settings": state["settings"]}


def save_checkpoint(accelerator, output_dir: Path, epoch: int, state: dict, ema=None, keep: int = 2) -> None:
    """`accelerator.save_state` into a temporary directory, renamed once every process has written its part, so that
    a run killed while saving leaves the previous checkpoint as the latest."""
    final = RunLayout(output_dir).checkpoint(epoch)
    temporary = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(temporary))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if ema is not None:
                save_file(ema.state_dict(), temporary / EMA_FILE)
            write_json(temporary / TRAINING_STATE_FILE, state)
            replace_directory(temporary, final)
    except BaseException as error:
        # Every process writes its part, so this is not `atomic_directory`; the cleanup and the error are the same.
        shutil.rmtree(temporary, ignore_errors=True)
        raise_write_error(error, final)
    if accelerator.is_main_process:
        for old in RunLayout(output_dir).saved_checkpoints()[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def save_best(model, tokenizer, output_dir: Path) -> None:
    """The best epoch's model (unwrapped) and the tokenizer in `best/`, atomically (main process)."""
    with atomic_directory(RunLayout(output_dir).best) as temporary:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
