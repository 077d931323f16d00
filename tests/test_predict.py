import csv
import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from lyra_hf import (
    LyraConfig,
    LyraForSequenceClassification,
    LyraForSequenceRegression,
    LyraForTokenClassification,
    LyraModel,
    LyraTokenizer,
)
from lyra_hf.cpu import cpu_batch_tokens
from lyra_hf.predict import batch_tokens, length_buckets, main


SEQUENCES = ["ACDEFGHIK", "MNPQ", "RSTVWYACDEFGHIKLMN", "AC", "KLMNPQRSTV", "W" * 25, "ACJJ"]


def save_checkpoint(path, model_class, unknown: str = "error", **config):
    """A tiny model and its tokenizer, which refuses characters outside its alphabet as lyra-train's do by default."""
    torch.manual_seed(0)
    tokenizer = LyraTokenizer(padding_characters="J", unknown=unknown)
    model = model_class(LyraConfig(hidden_size=16, state_size=8, dropout=0.0, **config)).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer


def write_input(path, sequences=SEQUENCES):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "sequence"])
        writer.writerows((f"s{index}", sequence) for index, sequence in enumerate(sequences))
    return path


def read_output(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def one_at_a_time(model, tokenizer, sequence):
    with torch.no_grad():
        return model(**tokenizer(sequence, return_tensors="pt")).logits[0]


def test_length_buckets_cover_every_index_once_in_length_order():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    buckets = length_buckets(lengths, 3)
    assert sorted(np.concatenate(buckets).tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in np.concatenate(buckets)] == sorted(lengths)
    assert [len(bucket) for bucket in buckets] == [3, 3, 1]


def test_length_buckets_hold_at_most_max_tokens_once_padded():
    lengths = [10, 10, 10, 10, 30, 30, 30, 100, 10]
    buckets = length_buckets(lengths, batch_size=4, max_tokens=60)
    assert sorted(np.concatenate(buckets).tolist()) == list(range(len(lengths)))
    for bucket in buckets:
        padded = len(bucket) * max(lengths[i] for i in bucket)
        assert len(bucket) <= 4 and (padded <= 60 or len(bucket) == 1)
    # Cut at the row cap, then at the token cap (two rows padded to 30), and the 100 alone.
    assert [[lengths[i] for i in bucket] for bucket in buckets] == [[10] * 4, [10, 30], [30, 30], [100]]


def test_cpu_batches_shrink_with_the_widest_member():
    narrow, wide = (LyraForSequenceRegression(LyraConfig(hidden_size=width, state_size=4)) for width in (16, 128))
    assert batch_tokens([narrow, wide], "cpu") == batch_tokens([wide], "cpu") == cpu_batch_tokens(128)
    assert cpu_batch_tokens(128) == cpu_batch_tokens(16) // 8  # tokens x width held constant
    assert batch_tokens([narrow], "cuda") is None


def test_regression_round_trip_with_several_targets(tmp_path):
    model, tokenizer = save_checkpoint(
        tmp_path / "model", LyraForSequenceRegression, num_labels=2, id2label={0: "binding", 1: "expression"}
    )
    output = tmp_path / "out.csv"
    assert (
        main(
            [
                "--model",
                str(tmp_path / "model"),
                "--input",
                str(write_input(tmp_path / "in.csv")),
                "--output",
                str(output),
                "--batch-size",
                "3",
            ]
        )
        == 0
    )
    rows = read_output(output)
    assert [row["name"] for row in rows] == [f"s{index}" for index in range(len(SEQUENCES))]
    assert list(rows[0]) == ["name", "sequence", "predicted_binding", "predicted_expression"]
    for row, sequence in zip(rows, SEQUENCES):
        expected = one_at_a_time(model, tokenizer, sequence)
        actual = torch.tensor([float(row["predicted_binding"]), float(row["predicted_expression"])])
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_fields_longer_than_the_csv_modules_default_limit_are_read(tmp_path):
    """lyra-train reads CSV fields of any length; so does lyra-predict (the csv module stops at 131,072 by default)."""
    model, tokenizer = save_checkpoint(tmp_path / "model", LyraForSequenceRegression)
    long = "ACDEFGHIKLMNPQRSTVWY" * 7_000  # 140,000 residues
    (tmp_path / "in.csv").write_text(f"sequence\n{long}\nMKTA\n")
    assert (
        main(
            [
                "--model",
                str(tmp_path / "model"),
                "--input",
                str(tmp_path / "in.csv"),
                "--output",
                str(tmp_path / "out.csv"),
            ]
        )
        == 0
    )
    rows = read_output(tmp_path / "out.csv")
    assert len(rows[0]["sequence"]) == len(long)
    torch.testing.assert_close(
        torch.tensor([float(rows[1]["predicted_LABEL_0"])]),
        one_at_a_time(model, tokenizer, "MKTA"),
        atol=1e-5,
        rtol=1e-5,
    )


def test_classification_writes_labels_and_probabilities(tmp_path):
    model, tokenizer = save_checkpoint(
        tmp_path / "model", LyraForSequenceClassification, num_labels=3, id2label={0: "low", 1: "mid", 2: "high"}
    )
    output = tmp_path / "out.csv"
    assert (
        main(
            [
                "--model",
                str(tmp_path / "model"),
                "--input",
                str(write_input(tmp_path / "in.csv")),
                "--output",
                str(output),
            ]
        )
        == 0
    )
    for row, sequence in zip(read_output(output), SEQUENCES):
        probabilities = torch.softmax(one_at_a_time(model, tokenizer, sequence), -1)
        actual = torch.tensor([float(row[f"probability_{name}"]) for name in ("low", "mid", "high")])
        torch.testing.assert_close(actual, probabilities, atol=1e-5, rtol=1e-5)
        assert row["predicted_label"] == ["low", "mid", "high"][int(probabilities.argmax())]


def test_token_classification_writes_one_label_per_residue(tmp_path):
    model, tokenizer = save_checkpoint(
        tmp_path / "model", LyraForTokenClassification, num_labels=3, id2label={0: "C", 1: "E", 2: "H"}
    )
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">s{index}\n{sequence}\n" for index, sequence in enumerate(SEQUENCES)))
    output = tmp_path / "out.csv"
    assert (
        main(["--model", str(tmp_path / "model"), "--input", str(fasta), "--output", str(output), "--batch-size", "2"])
        == 0
    )
    for row, sequence in zip(read_output(output), SEQUENCES):
        expected = "".join("CEH"[label] for label in one_at_a_time(model, tokenizer, sequence).argmax(-1).tolist())
        assert row["predicted_labels"] == expected and len(expected) == len(sequence)


def test_refuses_to_overwrite_and_writes_atomically(tmp_path, capsys):
    save_checkpoint(tmp_path / "model", LyraForSequenceRegression)
    output = tmp_path / "out.csv"
    output.write_text("precious\n")
    flags = [
        "--model",
        str(tmp_path / "model"),
        "--input",
        str(write_input(tmp_path / "in.csv")),
        "--output",
        str(output),
    ]
    assert main(flags) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert output.read_text() == "precious\n"
    assert main([*flags, "--overwrite"]) == 0
    assert len(read_output(output)) == len(SEQUENCES)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.csv", "model", "out.csv"]  # no temporary left


@pytest.mark.parametrize(
    "case, message",
    [
        ("column", "no column 'sequence'; available columns"),
        ("unknown", "row 2 has character 'Z' at position 3"),
        ("empty", "empty sequence in column 'sequence' at row 1"),
        ("no_model", "no/such/model"),
        ("bare_encoder", "a bare encoder without a prediction head"),
        ("no_input", "No such data file"),
    ],
)
def test_bad_input_gives_one_error_line(tmp_path, capsys, case, message):
    save_checkpoint(tmp_path / "model", LyraModel if case == "bare_encoder" else LyraForSequenceRegression)
    source = tmp_path / "in.csv"
    source.write_text(
        {"column": "seq\nACD\n", "unknown": "sequence\nACD\nACZ\n", "empty": 'sequence\n""\n'}.get(
            case, "sequence\nACD\n"
        )
    )
    flags = {
        "--model": "no/such/model" if case == "no_model" else str(tmp_path / "model"),
        "--input": str(tmp_path / "missing.csv") if case == "no_input" else str(source),
        "--output": str(tmp_path / "out.csv"),
    }
    capsys.readouterr()
    assert main([item for pair in flags.items() for item in pair]) == 1
    error = [line for line in capsys.readouterr().err.strip().splitlines() if "%|" not in line]  # not progress bars
    assert len(error) == 1 and error[0].startswith("lyra-predict: error:") and message in error[0], error
    assert not (tmp_path / "out.csv").exists()


def save_ensemble(path, model_class, members=3, **config):
    """An ensemble folder as lyra-train writes it: member subfolders (different weights) and ensemble.json."""
    models = []
    for index in range(members):
        torch.manual_seed(index)
        tokenizer = LyraTokenizer(padding_characters="J")
        model = model_class(LyraConfig(hidden_size=16, state_size=8, dropout=0.0, **config)).eval()
        model.save_pretrained(path / f"member_{index}")
        tokenizer.save_pretrained(path / f"member_{index}")
        models.append(model)
    (path / "ensemble.json").write_text(json.dumps({"members": [f"member_{index}" for index in range(members)]}))
    return models, tokenizer


def test_an_ensemble_predicts_the_members_mean_and_numpys_standard_deviation(tmp_path):
    labels = {"num_labels": 2, "id2label": {0: "binding", 1: "expression"}}
    models, tokenizer = save_ensemble(tmp_path / "ensemble", LyraForSequenceRegression, **labels)
    assert (
        main(
            [
                "--model",
                str(tmp_path / "ensemble"),
                "--input",
                str(write_input(tmp_path / "in.csv")),
                "--output",
                str(tmp_path / "out.csv"),
                "--num-processes",
                "2",
            ]
        )
        == 0
    )
    rows = read_output(tmp_path / "out.csv")
    assert list(rows[0]) == [
        "name",
        "sequence",
        "predicted_binding",
        "predicted_binding_std",
        "predicted_expression",
        "predicted_expression_std",
    ]
    for row, sequence in zip(rows, SEQUENCES):
        members = np.array(
            [one_at_a_time(model, tokenizer, sequence).numpy() for model in models]
        )  # (members, targets)
        assert members[:, 0].std() > 1e-3  # the members differ, so the mean and spread are tested for real
        for column, name in enumerate(["binding", "expression"]):
            assert float(row[f"predicted_{name}"]) == pytest.approx(members[:, column].mean(), abs=1e-5)
            assert float(row[f"predicted_{name}_std"]) == pytest.approx(members[:, column].std(), abs=1e-5)


def test_an_ensemble_classifier_averages_probabilities(tmp_path):
    labels = {"num_labels": 3, "id2label": {0: "low", 1: "mid", 2: "high"}}
    models, tokenizer = save_ensemble(tmp_path / "ensemble", LyraForSequenceClassification, **labels)
    assert (
        main(
            [
                "--model",
                str(tmp_path / "ensemble"),
                "--input",
                str(write_input(tmp_path / "in.csv")),
                "--output",
                str(tmp_path / "out.csv"),
            ]
        )
        == 0
    )
    for row, sequence in zip(read_output(tmp_path / "out.csv"), SEQUENCES):
        probabilities = np.array([one_at_a_time(model, tokenizer, sequence).softmax(-1).numpy() for model in models])
        assert row["predicted_label"] == ["low", "mid", "high"][int(probabilities.mean(0).argmax())]
        for column, name in enumerate(["low", "mid", "high"]):
            assert float(row[f"probability_{name}"]) == pytest.approx(probabilities[:, column].mean(), abs=1e-6)
            assert float(row[f"probability_{name}_std"]) == pytest.approx(probabilities[:, column].std(), abs=1e-6)


def test_ensemble_members_must_agree_and_the_manifest_must_list_them(tmp_path, capsys):
    save_ensemble(tmp_path / "ensemble", LyraForSequenceRegression, members=2)
    save_checkpoint(tmp_path / "ensemble" / "member_1", LyraForSequenceRegression, num_labels=2)
    flags = ["--input", str(write_input(tmp_path / "in.csv")), "--output", str(tmp_path / "out.csv")]
    assert main(["--model", str(tmp_path / "ensemble"), *flags]) == 1
    assert "ensemble member member_1 has another alphabet or other targets than member_0" in capsys.readouterr().err
    (tmp_path / "ensemble" / "ensemble.json").write_text(json.dumps({"members": ["../elsewhere"]}))
    assert main(["--model", str(tmp_path / "ensemble"), *flags]) == 1
    assert "ensemble.json must list the members' subfolder names, got ['../elsewhere']" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_a_hub_name_with_the_hub_out_of_reach_fails_in_one_line_without_retries(tmp_path, capsys, monkeypatch):
    """A name that is not a local folder, with the Hub's endpoint closed (and nothing cached): one line naming the
    name and the endpoint, at once, rather than the Hub client's retries."""
    import time

    from lyra_hf import checkpoints

    monkeypatch.setattr(checkpoints.hf_constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setattr(checkpoints.hf_constants, "HF_HUB_OFFLINE", False)
    (tmp_path / "in.csv").write_text("sequence\nMKTA\n")
    started = time.monotonic()
    assert (
        main(
            ["--model", "someone/no-model", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv")]
        )
        == 1
    )
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "someone/no-model: no such local directory, and the Hub is out of reach (127.0.0.1:9" in line
    assert time.monotonic() - started < 10 and not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("unknown", ["error", "unk"])
def test_lyra_predict_and_pipeline_treat_an_unknown_character_alike(tmp_path, capsys, unknown):
    """A sequence with `*`: a tokenizer saved to refuse such characters (lyra-train's default) makes lyra-predict and
    pipeline() both refuse it; one saved to map them to [UNK] makes both score it, the same."""
    from transformers import pipeline

    model, tokenizer = save_checkpoint(tmp_path / "model", LyraForSequenceRegression, unknown=unknown)
    (tmp_path / "in.csv").write_text("sequence\nMKT*AYI\n")
    capsys.readouterr()
    code = main(
        ["--model", str(tmp_path / "model"), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv")]
    )
    scorer = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(tmp_path / "model"))
    if unknown == "error":
        assert code == 1 and "'*'" in capsys.readouterr().err and not (tmp_path / "out.csv").exists()
        with pytest.raises(ValueError, match="'\\*'"):
            scorer("MKT*AYI")
    else:
        assert code == 0
        with open(tmp_path / "out.csv") as handle:
            row = next(csv.DictReader(handle))
        predicted = float(next(value for name, value in row.items() if name.startswith("predicted_")))
        assert scorer("MKT*AYI")[0]["score"] == pytest.approx(predicted, abs=1e-5)
