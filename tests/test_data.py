import math

import datasets
import numpy as np
import pytest
import torch

from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraForTokenClassification, LyraTokenizer
from lyra_hf.data import collator_for, label_names, load_sequence_dataset, read_fasta, tokenize_dataset


def write(path, text):
    path.write_text(text)
    return path


def test_csv_regression_to_padded_batches(tmp_path):
    csv = write(
        tmp_path / "train.csv",
        "sequence,label,other\n" + "".join(f"{'ACDEFGHIK'[: 3 + i % 6]},{i / 10},x\n" for i in range(30)),
    )
    tokenizer = LyraTokenizer()
    dataset = load_sequence_dataset(csv, alphabet=tokenizer.letters, validation_fraction=0.2, seed=1)
    # Six sequences, five rows each: 20% carves two of them whole, so that validation scores no sequence training saw.
    assert set(dataset) == {"train", "validation"} and len(dataset["validation"]) == 10
    again = load_sequence_dataset(csv, alphabet=tokenizer.letters, validation_fraction=0.2, seed=1)
    assert dataset["validation"]["sequence"] == again["validation"]["sequence"]
    tokenized = tokenize_dataset(dataset, tokenizer)
    batch = collator_for("regression", tokenizer)([tokenized["train"][i] for i in range(5)])
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["labels"].shape == (5, 1)
    out = LyraForSequenceRegression(LyraConfig()).eval()(**batch)
    assert torch.isfinite(out.loss)


def test_validation_parts_are_disjoint_tenths_of_one_shuffle_and_part_0_is_datasets_own_split(tmp_path):
    rng = np.random.default_rng(0)
    csv = write(
        tmp_path / "train.csv",
        "sequence,label\n" + "".join(f"{''.join(rng.choice(list('ACDEFGHIK'), 8))},{row}\n" for row in range(95)),
    )
    labels = [float(row) for row in range(95)]  # each row's label names it
    parts = [
        load_sequence_dataset(csv, alphabet=LyraTokenizer().letters, seed=3, validation_part=part) for part in range(10)
    ]
    validation = [[labels[0] for labels in part["validation"]["labels"]] for part in parts]
    # ceil(10% of 95) = 10 rows each; 95 rows hold 9 whole slices, so part 9 wraps around to part 0.
    assert [len(rows) for rows in validation] == [10] * 10 and validation[9] == validation[0]
    assert len({row for rows in validation[:9] for row in rows}) == 90
    for part, rows in zip(parts, validation):
        assert sorted(rows + [labels[0] for labels in part["train"]["labels"]]) == labels
    # The shuffle is NumPy's seeded permutation, of which part k is the k-th slice of 10 rows.
    shuffled = np.random.default_rng(3).permutation(95)
    assert all(
        sorted(rows) == sorted(float(row) for row in shuffled[10 * part : 10 * part + 10])
        for part, rows in enumerate(validation[:9])
    )
    # Part 0 is the split every run made before parts existed: datasets' train_test_split with the same seed.
    table = datasets.Dataset.from_dict({"label": labels}).train_test_split(test_size=0.1, seed=3)
    assert (
        validation[0] == table["test"]["label"]
        and [labels[0] for labels in parts[0]["train"]["labels"]] == table["train"]["label"]
    )


def test_a_carved_validation_split_keeps_every_duplicate_on_one_side(tmp_path):
    """20 sequences appear twice (in any case, once with a space): each one's rows are all in train or all in
    validation, in every part, and every row is in one of the two."""
    rng = np.random.default_rng(1)
    sequences = ["".join(rng.choice(list("ACDEFGHIK"), 8)) for _ in range(80)]
    rows = [(sequence, row) for row, sequence in enumerate(sequences)] + [
        (sequences[row].lower()[:4] + " " + sequences[row][4:], 100 + row) for row in range(20)
    ]
    csv = write(
        tmp_path / "train.csv", "sequence,label\n" + "".join(f"{sequence},{label}\n" for sequence, label in rows)
    )
    for part in range(3):
        dataset = load_sequence_dataset(csv, alphabet=LyraTokenizer().letters, seed=5, validation_part=part)
        sides = {
            split: {"".join(sequence.split()).upper() for sequence in dataset[split]["sequence"]}
            for split in ("train", "validation")
        }
        assert not sides["train"] & sides["validation"] and len(sides["validation"]) >= 2
        assert len(dataset["train"]) + len(dataset["validation"]) == 100


def test_tsv_with_several_targets(tmp_path):
    tsv = write(tmp_path / "data.tsv", "seq\ty1\ty2\nACG\t1.0\t2.0\nTTA\t3\t4\nGGC\t5\t6\nCCA\t0\t1\n")
    dataset = load_sequence_dataset(
        tsv, validation_file=tsv, sequence_column="seq", label_columns=["y1", "y2"], alphabet="ACGTN"
    )
    assert dataset["train"][1]["labels"] == [3.0, 4.0]


def test_fasta_with_header_labels(tmp_path):
    fasta = write(
        tmp_path / "seqs.fasta", ">P1 label=0.5 name=a\nMKTAY IAKQR\nQISF\n>P2 label=-1\nmkv\n>P3 label=2e-1\nACD\n"
    )
    records = read_fasta(fasta)
    assert records["sequence"] == ["MKTAYIAKQRQISF", "mkv", "ACD"] and records["label"] == [0.5, -1.0, 0.2]
    dataset = load_sequence_dataset(fasta, validation_file=fasta, test_file=fasta, alphabet=LyraTokenizer().letters)
    assert dataset["test"]["sequence"][0] == "MKTAYIAKQRQISF" and dataset["test"]["labels"][1] == [-1.0]


def test_classification_keeps_label_names(tmp_path):
    csv = write(tmp_path / "c.csv", "sequence,kind\nACD,enzyme\nKLM,binder\nACK,enzyme\nMMM,other\n")
    dataset = load_sequence_dataset(csv, validation_file=csv, label_columns="kind", task="classification")
    assert label_names(dataset) == ["binder", "enzyme", "other"]
    assert dataset["train"]["labels"] == [1, 0, 1, 2]


def test_per_residue_digit_labels_stay_text(tmp_path):
    """FLIP writes per-residue classes as digits: a leading zero must survive, and a long row must not overflow."""
    long = "A" * 40
    csv = write(tmp_path / "d.csv", f"sequence,conservation\nACDE,0912\n{long},{'98' * 20}\nKLMN,0000\n")
    dataset = load_sequence_dataset(csv, validation_file=csv, label_columns="conservation", task="token-classification")
    assert label_names(dataset) == ["0", "1", "2", "8", "9"]
    assert dataset["train"][0]["labels"] == [0, 4, 1, 2] and len(dataset["train"][1]["labels"]) == 40


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
        (
            "sequence,label\nACD,1\nAC1D,2\n",
            {"alphabet": "ACDEFGHIKLMNPQRSTVWYX"},
            "row 2 has character '1' at position 3",
        ),
        ("sequence,label\nACD,high\n", {}, "label 'high' .* row 1 is not a number"),
        (
            "sequence,ss\nACDE,HHE\n",
            {"label_columns": "ss", "task": "token-classification"},
            "row 1 has 3 per-residue labels .* 4 residues",
        ),
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
        path,
        validation_file=path,
        sequence_column="CDR3",
        label_columns="enrichment",
        alphabet=tokenizer.letters,
        padding_characters="J",
    )
    first = tokenizer(dataset["train"][0]["sequence"])
    assert len(first["input_ids"]) == 20 and 0 < sum(first["attention_mask"]) < 20
    assert not any(math.isnan(value[0]) for value in dataset["train"][:100]["labels"])


def test_a_flip_style_split_column_gives_the_splits_of_three_files(tmp_path):
    """FLIP keeps every row in one file: `set` says train or test, `validation` marks validation rows among train."""
    rows = [
        (
            f"{'ACDEFGHIKL'[i % 10]}{'MNPQRSTVWY'[i % 7]}K",
            i / 10,
            "test" if i % 4 == 0 else "train",
            "True" if i % 4 == 1 else "False",
        )
        for i in range(40)
    ]
    flip = write(
        tmp_path / "flip.csv",
        "sequence,target,set,validation\n" + "".join(f"{s},{y},{split},{v}\n" for s, y, split, v in rows),
    )
    separate = {}
    for name, keep in (
        ("train", lambda r: r[2] == "train" and r[3] == "False"),
        ("validation", lambda r: r[3] == "True"),
        ("test", lambda r: r[2] == "test"),
    ):
        separate[name] = write(
            tmp_path / f"{name}.csv", "sequence,target\n" + "".join(f"{r[0]},{r[1]}\n" for r in rows if keep(r))
        )
    one = load_sequence_dataset(flip, label_columns="target", split_column="set", validation_column="validation")
    three = load_sequence_dataset(
        separate["train"], validation_file=separate["validation"], test_file=separate["test"], label_columns="target"
    )
    for split in ("train", "validation", "test"):
        assert one[split]["sequence"] == three[split]["sequence"] and one[split]["labels"] == three[split]["labels"]
    assert [len(one[split]) for split in ("train", "validation", "test")] == [20, 10, 10]
    # Without a validation column, validation is carved from the train rows as for a lone train file.
    carved = load_sequence_dataset(flip, label_columns="target", split_column="set", seed=3)
    assert len(carved["test"]) == 10 and len(carved["train"]) + len(carved["validation"]) == 30


@pytest.mark.parametrize(
    "text, flags, message",
    [
        (
            "sequence,y,set\nACD,1,train\nKLM,2,valid\n",
            {"split_column": "set"},
            "'valid' in column 'set' at row 2 is neither 'train' nor 'test'",
        ),
        ("sequence,y,set\nACD,1,train\nKLM,2,train\n", {"split_column": "set"}, "no row has 'test' in column 'set'"),
        (
            "sequence,y,set,v\nACD,1,train,maybe\nKLM,2,test,\n",
            {"split_column": "set", "validation_column": "v"},
            "'maybe' in column 'v' at row 1",
        ),
        (
            "sequence,y,set,v\nACD,1,train,0\nKLM,2,test,\n",
            {"split_column": "set", "validation_column": "v"},
            "no 'train' row is marked true in column 'v'",
        ),
        ("sequence,y\nACD,1\nKLM,2\n", {"split_column": "set"}, "no column 'set'"),
        (
            "sequence,y,fold\nACD,1,0\nKLM,2,1\n",
            {"fold_column": "fold", "test_fold": "7"},
            "fold '7' is not in column 'fold', whose folds are ['0', '1']",
        ),
    ],
)
def test_bad_split_and_fold_columns_name_the_value(tmp_path, text, flags, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_sequence_dataset(write(tmp_path / "d.csv", text), label_columns="y", **flags)


def test_fold_column_makes_that_fold_the_test_split(tmp_path):
    rows = [(f"{'ACDEFGHIKL'[i % 10]}{'MNPQRSTVWY'[i % 9]}{'KR'[i % 2]}", i, i % 5) for i in range(50)]
    path = write(
        tmp_path / "gym.csv",
        "mutated_sequence,DMS_score,fold_random_5\n" + "".join(f"{s},{y},{f}\n" for s, y, f in rows),
    )
    seen_in_test = []
    for fold in range(5):
        dataset = load_sequence_dataset(
            path,
            sequence_column="mutated_sequence",
            label_columns="DMS_score",
            fold_column="fold_random_5",
            test_fold=str(fold),
            seed=0,
        )
        test = sorted(int(labels[0]) for labels in dataset["test"]["labels"])
        assert test == [y for _, y, f in rows if f == fold]
        others = [int(labels[0]) for split in ("train", "validation") for labels in dataset[split]["labels"]]
        assert sorted(others + test) == list(range(50))  # every row once, in one split
        seen_in_test += test
    assert sorted(seen_in_test) == list(range(50))


def test_unknown_characters_map_to_unk_when_asked(tmp_path):
    path = write(tmp_path / "d.csv", "sequence,y\nACUD,1\nKOLM,2\nACDE,3\n")
    with pytest.raises(ValueError, match="'U' at position 3.*--unknown unk"):
        load_sequence_dataset(path, validation_file=path, label_columns="y", alphabet=LyraTokenizer().letters)
    dataset = load_sequence_dataset(
        path, validation_file=path, label_columns="y", alphabet=LyraTokenizer().letters, unknown="unk"
    )
    tokenizer = LyraTokenizer()
    ids = tokenize_dataset(dataset, tokenizer)["train"][0]["input_ids"]
    assert tokenizer.unk_token_id in ids and tokenizer.convert_ids_to_tokens(ids).count(tokenizer.unk_token) == 1


def per_residue_gradient(path, **flags):
    """The loss gradient of a fixed model on the whole file as one batch."""
    dataset = load_sequence_dataset(
        path, validation_file=path, label_columns="ss", task="token-classification", **flags
    )
    tokenizer = LyraTokenizer()
    tokenized = tokenize_dataset(dataset, tokenizer)["train"]
    batch = collator_for("token-classification", tokenizer)([tokenized[i] for i in range(len(tokenized))])
    torch.manual_seed(0)
    model = LyraForTokenClassification(
        LyraConfig(num_labels=len(label_names(dataset)), hidden_size=16, state_size=8, dropout=0.0)
    )
    model(**batch).loss.backward()
    return batch["labels"], torch.cat([parameter.grad.flatten() for parameter in model.parameters()])


def test_residues_without_a_label_give_no_loss(tmp_path):
    sequences = ["MKTAYIAK", "QRQISFVKSH", "FSRQ"]
    labels = ["HHXXEECC", "CCHHHXEEEC", "XXCC"]
    ignored = write(tmp_path / "x.csv", "sequence,ss\n" + "".join(f"{s},{y}\n" for s, y in zip(sequences, labels)))
    batch_labels, gradient = per_residue_gradient(ignored, ignore_label_characters="X")
    assert (batch_labels == -100).sum() == sum(label.count("X") for label in labels) + 2 * 10 - 8 - 4  # X's and padding
    # The same residues masked by a 0/1 column instead, with arbitrary labels under the mask, flipped twice.
    for flip in ("H", "E"):
        masked_labels = [label.replace("X", flip) for label in labels]
        masks = ["".join("0" if c == "X" else "1" for c in label) for label in labels]
        masked = write(
            tmp_path / f"m{flip}.csv",
            "sequence,ss,mask\n" + "".join(f"{s},{y},{m}\n" for s, y, m in zip(sequences, masked_labels, masks)),
        )
        masked_batch_labels, masked_gradient = per_residue_gradient(masked, mask_column="mask")
        assert torch.equal(masked_batch_labels, batch_labels)
        assert torch.allclose(masked_gradient, gradient, rtol=0, atol=0)
    bad = write(tmp_path / "bad.csv", "sequence,ss,mask\nMKTA,HHEE,1101\nMKT,HHE,11\n")
    with pytest.raises(ValueError, match="mask '11' in column 'mask' at row 2 must be one 0 or 1 per residue"):
        load_sequence_dataset(
            bad, validation_file=bad, label_columns="ss", task="token-classification", mask_column="mask"
        )


def test_synthetic_wild_type_is_the_landscape_s_wild_type():
    from lyra_hf.data import synthetic_fitness_dataset, synthetic_wild_type

    wild_type = synthetic_wild_type(length=30, seed=42)
    variants = synthetic_fitness_dataset(num_train=200, num_validation=10, num_test=10, seed=42)["train"]["sequence"]
    differences = [sum(a != b for a, b in zip(variant, wild_type)) for variant in variants]
    assert len(wild_type) == 30 and min(differences) >= 1 and np.mean(differences) < 4  # 1 + Poisson(2) substitutions
    assert synthetic_wild_type(length=30, seed=43) != wild_type


def test_the_synthetic_landscapes_true_fitness_is_what_its_labels_measure():
    from lyra_hf.data import synthetic_fitness_dataset, synthetic_landscape, synthetic_wild_type

    dataset = synthetic_fitness_dataset(num_train=400, num_validation=50, num_test=50, seed=7)
    landscape = synthetic_landscape(seed=7)
    assert landscape.wild_type_sequence == synthetic_wild_type(seed=7)
    truth = landscape.fitness(dataset["train"]["sequence"])
    noise = np.array([labels[0] for labels in dataset["train"]["labels"]]) - truth
    assert abs(noise.mean()) < 0.02 and 0.08 < noise.std() < 0.12  # the labels' measurement noise, sd 0.1
    assert landscape.fitness([landscape.wild_type_sequence])[0] == 0.0
