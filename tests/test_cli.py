import argparse

import pytest

from lyra_hf import cli, predict, scan, train


PARSERS = {"lyra-train": train.build_parser, "lyra-predict": predict.build_parser, "lyra-scan": scan.build_parser}


@pytest.mark.parametrize("command", list(PARSERS))
def test_help_describes_every_flag_and_shows_every_default(command):
    parser = PARSERS[command]()
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings[0]} has no help text"
        if action.default is not None and action.default is not False:
            assert f"(default: {action.default})" in text, (
                f"{command} --help does not show {action.option_strings[0]}'s default"
            )


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "0", "-2", "1e400", "ten"])
def test_bounded_numbers_refuse_text_non_finite_and_out_of_range_values(text):
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
        cli.bounded(float, above=0)(text)


def test_bounded_numbers_keep_the_ends_they_allow():
    assert cli.bounded(float, minimum=0, below=1)("0") == 0.0
    assert cli.bounded(int, minimum=2)("2") == 2
    with pytest.raises(argparse.ArgumentTypeError):
        cli.bounded(float, minimum=0, below=1)("1")
    with pytest.raises(argparse.ArgumentTypeError):
        cli.bounded(int, minimum=1)("1.5")


def test_the_rerun_hint_drops_and_adds_flags_in_either_spelling():
    argv = ["--epochs", "3", "--overwrite-output-dir", "--resume-from-checkpoint=old", "--output-dir", "my run"]
    drop = {"--resume-from-checkpoint": True, "--overwrite-output-dir": False}
    hint = cli.rerun_hint("lyra-train", argv, drop, add=("--resume-from-checkpoint", "latest"))
    assert hint == "lyra-train --epochs 3 --output-dir 'my run' --resume-from-checkpoint latest"


# Every flag the three commands accepted on 2026-12-05, before the application layer was reorganised (issue 29): a
# command may gain flags, never lose one.
FLAGS_BEFORE_THE_MOVE = {
    "lyra-train": [
        "--alphabet",
        "--batch-size",
        "--bidirectional",
        "--config",
        "--data-seed",
        "--dropout",
        "--ema-decay",
        "--ensemble",
        "--epochs",
        "--fold-column",
        "--folds",
        "--gradient-accumulation-steps",
        "--hidden-size",
        "--hub-dataset-name",
        "--hub-license",
        "--hub-private",
        "--hub-revision",
        "--ignore-label-characters",
        "--label-columns",
        "--label-mask-column",
        "--learning-rate",
        "--lr-scheduler",
        "--max-eval-samples",
        "--max-length",
        "--max-train-minutes",
        "--max-train-samples",
        "--metric-for-best-model",
        "--mixed-precision",
        "--num-processes",
        "--num-s4d-layers",
        "--num-workers",
        "--output-dir",
        "--overwrite-output-dir",
        "--padding-characters",
        "--push-to-hub",
        "--quiet",
        "--report-to",
        "--resume-from-checkpoint",
        "--seed",
        "--sequence-column",
        "--split-column",
        "--split-values",
        "--state-size",
        "--task",
        "--test-file",
        "--threads",
        "--train-file",
        "--unknown",
        "--validation-column",
        "--validation-file",
        "--warmup-ratio",
        "--weight-decay",
    ],
    "lyra-predict": [
        "--batch-size",
        "--device",
        "--input",
        "--model",
        "--num-processes",
        "--output",
        "--overwrite",
        "--revision",
        "--sequence-column",
        "--threads",
        "--trust-remote-code",
        "--unknown",
    ],
    "lyra-scan": [
        "--all-pairs",
        "--batch-size",
        "--device",
        "--fasta",
        "--heatmap",
        "--max-mutants",
        "--model",
        "--no-figures",
        "--num-processes",
        "--output-dir",
        "--overwrite",
        "--pairs",
        "--revision",
        "--sequence",
        "--target",
        "--threads",
        "--top-k",
    ],
}


@pytest.mark.parametrize("command", list(PARSERS))
def test_every_flag_of_before_the_move_is_still_accepted(command):
    accepted = {flag for action in PARSERS[command]()._actions for flag in action.option_strings}
    assert [flag for flag in FLAGS_BEFORE_THE_MOVE[command] if flag not in accepted] == []


def test_ctrl_c_while_a_command_starts_ends_in_one_line_with_130(tmp_path):
    """The installed command, interrupted while Python still imports the libraries (and a little later): exit code
    130 and one line, never a KeyboardInterrupt traceback (scripts/interrupt_check.py tries every command at random
    moments)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    command = Path(sys.executable).parent / "lyra-prior"
    if not command.exists():
        pytest.skip("lyra-hf's console scripts are not installed beside this Python")
    (tmp_path / "family.a2m").write_text(">q\nMKTAYIAKQR\n>h\nMKSAYIAKQR\n")
    for delay in (0.05, 0.5, 1.5):
        process = subprocess.Popen(
            [
                str(command),
                "--alignment",
                str(tmp_path / "family.a2m"),
                "--output",
                str(tmp_path / "prior.csv"),
                "--overwrite",
                "--no-figures",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        time.sleep(delay)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        lines = [line for line in stderr.splitlines() if line.strip()]
        if process.returncode == 0:
            continue  # it finished before the signal
        assert (
            process.returncode == 130 and len(lines) == 1 and lines[0].startswith("lyra-prior: interrupted (SIGINT)")
        ), (delay, stderr[-2000:])
