import math

import pytest
import torch

from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraForTokenClassification, LyraTokenizer
from lyra_hf.data import collator_for, label_names, load_sequence_dataset, read_fasta, tokenize_dataset


def write(path, text):
    path.write_text(text)
    return path


def test_csv_regression_to_padded_batches(tmp_path):
    csv = write(tmp_path / "train.csv", "sequence,label,other\n" + "".join(f"{'ACDEFGHIK'[: 3 + i % 6]},{i / 10},x\n" for i in range(30)))
    tokenizer = LyraTokenizer()
    dataset = load_sequence_dataset(csv, alphabet=tokenizer.letters, validation_fraction=0.2, seed=1)
    assert set(dataset) == {"train", "validation"} and len(dataset["validation"]) == 6
    again = load_sequence_dataset(csv, alphabet=tokenizer.letters, validation_fraction=0.2, seed=1)
    assert dataset["validation"]["sequence"] == again["validation"]["sequence"]
    tokenized = tokenize_dataset(dataset, tokenizer)
    batch = collator_for("regression", tokenizer)([tokenized["train"][i] for i in range(5)])
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["labels"].shape == (5, 1)
    out = LyraForSequenceRegression(LyraConfig()).eval()(**batch)
    assert torch.isfinite(out.loss)


def test_tsv_with_several_targets(tmp_path):
    tsv = write(tmp_path / "data.tsv", "seq\ty1\ty2\nACG\t1.0\t2.0\nTTA\t3\t4\nGGC\t5\t6\nCCA\t0\t1\n")
    dataset = load_sequence_dataset(tsv, validation_file=tsv, sequence_column="seq", label_columns=["y1", "y2"], alphabet="ACGTN")
    assert dataset["train"][1]["labels"] == [3.0, 4.0]


def test_fasta_with_header_labels(tmp_path):
    fasta = write(tmp_path / "seqs.fasta", ">P1 label=0.5 name=a\nMKTAY IAKQR\nQISF\n>P2 label=-1\nmkv\n>P3 label=2e-1\nACD\n")
    records = read_fasta(fasta)
    assert records["sequence"] == ["MKTAYIAKQRQISF", "mkv", "ACD"] and records["label"] == [0.5, -1.0, 0.2]
    dataset = load_sequence_dataset(fasta, validation_file=fasta, test_file=fasta, alphabet=LyraTokenizer().letters)
    assert dataset["test"]["sequence"][0] == "MKTAYIAKQRQISF" and dataset["test"]["labels"][1] == [-1.0]


def test_classification_keeps_label_names(tmp_path):
    csv = write(tmp_path / "c.csv", "sequence,kind\nACD,enzyme\nKLM,binder\nACK,enzyme\nMMM,other\n")
    dataset = load_sequence_dataset(csv, validation_file=csv, label_columns="kind", task="classification")
    assert label_names(dataset) == ["binder", "enzyme", "other"]
    assert dataset["train"]["labels"] == [1, 0, 1, 2]


def test_token_classification_labels_align_with_residues(tmp_path):
    csv = write(tmp_path / "t.csv", "sequence,ss\nACDE,HHEC\nKL M,CC H\nMKTAY,EEEHH\n")
    dataset = load_sequence_dataset(csv, validation_file=csv, label_columns="ss", task="token-classification")
    assert label_names(dataset) == ["C", "E", "H"]
    assert dataset["train"][1]["labels"] == [0, 0, 2]
    tokenizer = LyraTokenizer()
    tokenized = tokenize_dataset(dataset, tokenizer)
    batch = collator_for("token-classification", tokenizer)([tokenized["train"][i] for i in range(3)])
    assert batch["labels"].shape == batch["input_ids"].shape and (batch["labels"][1, 3:] == -100).all()
    model = LyraForTokenClassification(LyraConfig(num_labels=3)).eval()
    assert torch.isfinite(model(**batch).loss)


@pytest.mark.parametrize(
    "content, kwargs, message",
    [
        ("seq,label\nACD,1\n", {}, r"no column 'sequence'; available columns: \['seq', 'label'\]"),
        ("sequence,y\nACD,1\n", {}, r"no column 'label'.*\['sequence', 'y'\]"),
        ("sequence,label\nACD,1\nKLM,nan\n", {}, "NaN label in column 'label' at row 2"),
        ("sequence,label\nACD,1\nKLM,\n", {}, "missing or NaN label in column 'label' at row 2"),
        ("sequence,label\nACD,1\n,2\n", {}, "empty sequence in column 'sequence' at row 2"),
        ("sequence,label\nACD,1\nAC1D,2\n", {"alphabet": "ACDEFGHIKLMNPQRSTVWYX"}, "row 2 has character '1' at position 3"),
        ("sequence,label\nACD,high\n", {}, "label 'high' .* row 1 is not a number"),
        ("sequence,ss\nACDE,HHE\n", {"label_columns": "ss", "task": "token-classification"}, "row 1 has 3 per-residue labels .* 4 residues"),
    ],
)
def test_bad_files_are_reported_with_their_row(tmp_path, content, kwargs, message):
    path = write(tmp_path / "bad.csv", content)
    with pytest.raises(ValueError, match=message):
        load_sequence_dataset(path, validation_file=path, **kwargs)


def test_unknown_unk_opts_into_mapping(tmp_path):
    path = write(tmp_path / "u.csv", "sequence,label\nAC1D,1\nACD,2\n")
    dataset = load_sequence_dataset(path, validation_file=path, alphabet="ACD", unknown="unk")
    assert dataset["train"]["sequence"][0] == "AC1D"


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_sequence_dataset(tmp_path / "nope.csv")


def test_gifford_file_reads_with_j_as_padding():
    path = "../shared/data/gifford/test.csv"
    pytest.importorskip("pandas")
    import os

    if not os.path.exists(path):
        pytest.skip("shared Gifford data not present")
    tokenizer = LyraTokenizer(padding_characters="J")
    dataset = load_sequence_dataset(
        path, validation_file=path, sequence_column="CDR3", label_columns="enrichment", alphabet=tokenizer.letters, padding_characters="J"
    )
    first = tokenizer(dataset["train"][0]["sequence"])
    assert len(first["input_ids"]) == 20 and 0 < sum(first["attention_mask"]) < 20
    assert not any(math.isnan(value[0]) for value in dataset["train"][:100]["labels"])
