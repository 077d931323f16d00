import csv
import math

import numpy as np
import pytest
import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_outputs import SequenceClassifierOutput

from lyra_hf import (
    LyraConfig,
    LyraForSequenceClassification,
    LyraForSequenceRegression,
    LyraForTokenClassification,
    LyraTokenizer,
)
from lyra_hf.scan import main, mutant_letters, parse_positions, scan, scan_all_pairs


WILD_TYPE = "MKTAYIAKQR"


class PolynomialModel(nn.Module):
    """f(sequence) = sum_i additive[i, token_i] + a pairwise term for one chosen substitution pair: a model whose
    epistasis is known exactly."""

    def __init__(self, length, vocab_size, pair=None):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.additive = nn.Parameter(torch.randn(length, vocab_size, generator=generator, dtype=torch.float64))
        self.pair = pair  # ((position, token), (position, token), strength), 0-based
        self.config = PretrainedConfig(num_labels=1, problem_type="regression", id2label={0: "fitness"})

    def forward(self, input_ids, attention_mask=None):
        logits = self.additive[torch.arange(input_ids.shape[1]), input_ids].sum(-1, keepdim=True)
        if self.pair is not None:
            (a, token_a), (b, token_b), strength = self.pair
            logits = logits + strength * ((input_ids[:, a] == token_a) & (input_ids[:, b] == token_b))[:, None]
        return SequenceClassifierOutput(logits=logits)


def tiny_lyra(model_class=LyraForSequenceRegression, **config):
    torch.manual_seed(0)
    tokenizer = LyraTokenizer()
    model = model_class(LyraConfig(hidden_size=16, state_size=8, dropout=0.0, vocab_size=len(tokenizer), **config))
    return model.eval(), tokenizer


def test_row_counts_and_scores_equal_one_sequence_at_a_time():
    model, tokenizer = tiny_lyra(num_labels=2, id2label={0: "binding", 1: "expression"})
    result = scan(model, tokenizer, WILD_TYPE, pairs=[2, 5, 9], batch_size=7, progress=False)
    alphabet = len(mutant_letters(tokenizer))  # the 20 residues: X is never a mutant
    assert len(result.singles) == len(WILD_TYPE) * (alphabet - 1)
    assert len(result.pairs) == 3 * (alphabet - 1) ** 2  # three position pairs
    assert {"score_binding", "delta_expression", "epistasis_binding"} <= set(result.pairs.column_names)
    rng = np.random.default_rng(0)
    for row in rng.choice(len(result.singles), 12, replace=False).tolist():
        entry = result.singles[row]
        mutant = WILD_TYPE[: entry["position"] - 1] + entry["mutant"] + WILD_TYPE[entry["position"] :]
        assert entry["wild_type"] == WILD_TYPE[entry["position"] - 1] != entry["mutant"]
        with torch.no_grad():
            expected = model(**tokenizer(mutant, return_tensors="pt")).logits[0]
        assert entry["score_binding"] == pytest.approx(float(expected[0]), abs=1e-5)
        assert entry["delta_expression"] == pytest.approx(
            float(expected[1]) - result.wild_type_scores["expression"], abs=1e-5
        )
    for row in rng.choice(len(result.pairs), 8, replace=False).tolist():
        entry = result.pairs[row]
        mutant = list(WILD_TYPE)
        mutant[entry["position_a"] - 1], mutant[entry["position_b"] - 1] = entry["mutant_a"], entry["mutant_b"]
        with torch.no_grad():
            expected = model(**tokenizer("".join(mutant), return_tensors="pt")).logits[0, 0]
        assert entry["score_binding"] == pytest.approx(float(expected), abs=1e-5)


def test_an_additive_model_has_no_epistasis_and_a_known_pair_is_recovered():
    tokenizer = LyraTokenizer()
    ids = tokenizer.convert_tokens_to_ids
    additive = PolynomialModel(len(WILD_TYPE), len(tokenizer))
    result = scan(additive, tokenizer, WILD_TYPE, pairs=list(range(1, 11)), progress=False)
    assert np.abs(np.array(result.pairs["epistasis"])).max() < 1e-5
    assert np.abs(np.array(result.singles["delta"])).max() > 0.1

    pair = ((2, ids("W")), (6, ids("C")), 3.0)
    epistatic = PolynomialModel(len(WILD_TYPE), len(tokenizer), pair=pair)
    result = scan(epistatic, tokenizer, WILD_TYPE, top_k=10, progress=False)
    epistasis = np.abs(np.array(result.pairs["epistasis"]))
    strongest = result.pairs[int(epistasis.argmax())]
    assert (strongest["position_a"], strongest["mutant_a"], strongest["position_b"], strongest["mutant_b"]) == (
        3,
        "W",
        7,
        "C",
    )
    assert strongest["epistasis"] == pytest.approx(3.0, abs=1e-6)
    assert np.sort(epistasis)[-2] < 1e-5


def test_classifier_scores_the_chosen_class_probability():
    model, tokenizer = tiny_lyra(LyraForSequenceClassification, num_labels=3, id2label={0: "low", 1: "mid", 2: "high"})
    result = scan(model, tokenizer, WILD_TYPE, target="mid", progress=False)
    assert result.targets == ["probability_mid"]
    with torch.no_grad():
        probability = model(**tokenizer(WILD_TYPE, return_tensors="pt")).logits.softmax(-1)[0, 1]
    assert result.wild_type_scores["probability_mid"] == pytest.approx(float(probability), abs=1e-6)
    assert all(0 <= value <= 1 for value in result.singles["score"])


def test_positions_parse_and_check():
    assert parse_positions("2-4, 7", 10) == [2, 3, 4, 7]
    for bad, message in [
        ("0-3", "outside the sequence"),
        ("5-11", "outside"),
        ("a-b", "not a position"),
        ("4", "fewer than two"),
        ("8-3", "the range 8-3 runs backwards; write it 3-8"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_positions(bad, 10)


def test_cli_writes_csvs_and_figures(tmp_path):
    pytest.importorskip("matplotlib")
    model, tokenizer = tiny_lyra()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    output = tmp_path / "scan"
    assert (
        main(["--model", str(tmp_path / "model"), "--sequence", WILD_TYPE, "--top-k", "3", "--output-dir", str(output)])
        == 0
    )
    with open(output / "singles.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(WILD_TYPE) * 19 and list(rows[0]) == ["position", "wild_type", "mutant", "score", "delta"]
    with open(output / "pairs.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 3 * 19 * 19
    for name in ("singles_heatmap.png", "positions.png", "epistasis.png"):
        assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sequence", "MKZA"], "Wild-type letter 'Z' at position 3 is not in the model's alphabet"),
        (["--sequence", "MKTA", "--pairs", "2-9"], "outside the sequence (1-4)"),
        (["--sequence", "  "], "The wild-type sequence is empty"),
        (["--sequence", "MKTA", "--token-model"], "Token-classification checkpoints are not supported"),
        (
            ["--sequence", "MKTA", "--target", "foo"],
            "--target 'foo': it names a classifier's class, and this model is a regression",
        ),
        (["--sequence", "MKTAYIAK", "--pairs", "8-3"], "--pairs: the range 8-3 runs backwards"),
    ],
)
def test_bad_input_gives_one_error_line(tmp_path, capsys, flags, message):
    token_model = "--token-model" in flags
    flags = [flag for flag in flags if flag != "--token-model"]
    model, tokenizer = tiny_lyra(LyraForTokenClassification if token_model else LyraForSequenceRegression)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    capsys.readouterr()
    assert (
        main(["--model", str(tmp_path / "model"), "--output-dir", str(tmp_path / "out"), "--no-figures", *flags]) == 1
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("lyra-scan: error:") and message in error[0], error


def test_cli_scans_every_record_of_a_fasta_and_writes_csvs_without_matplotlib(tmp_path, capsys, monkeypatch):
    import importlib.util

    model, tokenizer = tiny_lyra()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "wild_types.fasta").write_text(">first\nMKTAYIAK\n>second\nACDEFG\n")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "matplotlib" else real_find_spec(name, *args)
    )
    output = tmp_path / "scans"
    assert (
        main(
            [
                "--model",
                str(tmp_path / "model"),
                "--fasta",
                str(tmp_path / "wild_types.fasta"),
                "--output-dir",
                str(output),
            ]
        )
        == 0
    )
    assert "pip install lyra-hf[plot]" in capsys.readouterr().err
    for name, length in (("first", 8), ("second", 6)):
        with open(output / name / "singles.csv") as handle:
            assert len(list(csv.DictReader(handle))) == length * 19
        assert not list((output / name).glob("*.png"))


def test_an_ensemble_scan_gives_the_members_mean_and_spread_of_scores_deltas_and_epistasis(tmp_path):
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        tokenizer = LyraTokenizer()
        members.append(
            LyraForSequenceRegression(
                LyraConfig(hidden_size=16, state_size=8, dropout=0.0, vocab_size=len(tokenizer))
            ).eval()
        )
    result = scan(members, tokenizer, WILD_TYPE, pairs=[2, 5], processes=2, progress=False)
    alone = [scan(member, tokenizer, WILD_TYPE, pairs=[2, 5], progress=False) for member in members]
    assert result.members == 3
    for table in ("singles", "pairs"):
        for column in ("score", "delta", "epistasis") if table == "pairs" else ("score", "delta"):
            values = np.array([getattr(single, table)[column] for single in alone])  # (members, rows)
            assert values.std(0).max() > 1e-4
            np.testing.assert_allclose(getattr(result, table)[column], values.mean(0), atol=1e-6)
            np.testing.assert_allclose(getattr(result, table)[f"{column}_std"], values.std(0), atol=1e-6)

    pytest.importorskip("matplotlib")
    for index, member in enumerate(members):
        member.save_pretrained(tmp_path / "ensemble" / f"member_{index}")
        tokenizer.save_pretrained(tmp_path / "ensemble" / f"member_{index}")
    (tmp_path / "ensemble" / "ensemble.json").write_text('{"members": ["member_0", "member_1", "member_2"]}')
    output = tmp_path / "scan"
    assert (
        main(
            [
                "--model",
                str(tmp_path / "ensemble"),
                "--sequence",
                WILD_TYPE,
                "--output-dir",
                str(output),
                "--heatmap",
                "std",
            ]
        )
        == 0
    )
    with open(output / "singles.csv") as handle:
        assert list(next(csv.DictReader(handle))) == [
            "position",
            "wild_type",
            "mutant",
            "score",
            "score_std",
            "delta",
            "delta_std",
        ]
    assert (output / "singles_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = [
        "--model",
        str(tmp_path / "ensemble" / "member_0"),
        "--sequence",
        WILD_TYPE,
        "--output-dir",
        str(tmp_path / "one"),
        "--heatmap",
        "std",
    ]
    assert main(single) == 1


def test_the_complete_pair_map_of_an_additive_model_has_no_epistasis_and_finds_a_known_pair(tmp_path):
    import pyarrow.parquet as pq

    tokenizer = LyraTokenizer()
    ids = tokenizer.convert_tokens_to_ids
    additive = PolynomialModel(len(WILD_TYPE), len(tokenizer))
    dataset, summary, result = scan_all_pairs(
        additive, tokenizer, WILD_TYPE, tmp_path / "additive.parquet", progress=False
    )
    length = len(WILD_TYPE)
    assert (
        len(dataset) == pq.ParquetFile(tmp_path / "additive.parquet").metadata.num_rows == math.comb(length, 2) * 19**2
    )
    assert np.abs(np.array(dataset["epistasis"])).max() < 1e-5
    assert np.abs(np.array(dataset["delta"])).max() > 0.1
    assert summary["max_abs_epistasis"].shape == (length, length) and np.nanmax(summary["max_abs_epistasis"]) < 1e-5
    assert np.isnan(np.diag(summary["max_abs_epistasis"])).all() and not np.isnan(
        summary["max_abs_epistasis"][0, length - 1]
    )

    pair = ((2, ids("W")), (6, ids("C")), 3.0)
    epistatic = PolynomialModel(len(WILD_TYPE), len(tokenizer), pair=pair)
    _, summary, _ = scan_all_pairs(epistatic, tokenizer, WILD_TYPE, tmp_path / "epistatic.parquet", progress=False)
    strongest = np.unravel_index(np.nanargmax(summary["max_abs_epistasis"]), summary["max_abs_epistasis"].shape)
    assert sorted(int(position) for position in strongest) == [2, 6]
    assert summary["max_abs_epistasis"][2, 6] == pytest.approx(3.0, abs=1e-5)
    assert summary["mean_epistasis"][2, 6] == pytest.approx(3.0 / 19**2, abs=1e-6)


def test_all_pairs_cli_counts_every_double_mutant_and_refuses_beyond_max_mutants(tmp_path, capsys):
    import pyarrow.parquet as pq

    model, _ = tiny_lyra()
    tokenizer = LyraTokenizer(padding_characters="J")
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    # X (any residue) is replaced by 20 letters, the others by 19; J is padding and never mutated.
    wild_type = "MKXAYJAKQR"
    base = ["--model", str(tmp_path / "model"), "--sequence", wild_type, "--all-pairs"]
    assert main([*base, "--output-dir", str(tmp_path / "scan"), "--no-figures"]) == 0
    table = pq.read_table(tmp_path / "scan" / "pairs.parquet")
    # 9 mutable positions: 8 with 19 letters and X with 20.
    expected = math.comb(8, 2) * 19**2 + 8 * 19 * 20
    assert table.num_rows == expected and table.schema.field("epistasis").type == "float"
    assert table.column_names == [
        "position_a",
        "wild_type_a",
        "mutant_a",
        "position_b",
        "wild_type_b",
        "mutant_b",
        "score",
        "delta",
        "epistasis",
    ]
    assert 6 not in table.column("position_a").to_pylist() + table.column("position_b").to_pylist()
    with open(tmp_path / "scan" / "pair_summary.csv") as handle:
        assert len(list(csv.DictReader(handle))) == math.comb(9, 2)
    capsys.readouterr()
    assert main([*base, "--output-dir", str(tmp_path / "refused"), "--max-mutants", "1000"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        f"--all-pairs would score {expected:,} double mutants (36 position pairs): about" in error
        and f"--max-mutants {expected}" in error
    )
    assert not (tmp_path / "refused" / "pairs.parquet").exists()


def test_an_interrupted_all_pairs_scan_leaves_no_partial_output(tmp_path, monkeypatch, capsys):
    import lyra_hf.scan.pairs as pairs_module
    import lyra_hf.scan.scoring as scoring_module

    model, tokenizer = tiny_lyra()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    output = tmp_path / "scan"
    flags = [
        "--model",
        str(tmp_path / "model"),
        "--sequence",
        WILD_TYPE,
        "--output-dir",
        str(output),
        "--no-figures",
        "--num-processes",
        "1",
    ]
    assert main(flags) == 0  # an earlier scan, kept whole
    earlier = (output / "singles.csv").read_text()
    monkeypatch.setattr(pairs_module, "PAIR_CHUNK_SITES", 4)
    real_score_group, calls = scoring_module.score_group, []

    def interrupted(state, group):
        calls.append(1)
        if len(calls) > 20:  # after the singles and some double mutants have been written
            raise KeyboardInterrupt
        return real_score_group(state, group)

    monkeypatch.setattr(scoring_module, "score_group", interrupted)
    capsys.readouterr()
    assert main([*flags, "--all-pairs", "--overwrite", "--batch-size", "50"]) == 130
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "lyra-scan: interrupted (SIGINT); nothing partial was written"
    )
    assert sorted(path.name for path in output.iterdir()) == ["singles.csv"]  # the lock file goes with the command
    assert (output / "singles.csv").read_text() == earlier


def test_padding_characters_of_the_wild_type_stay_padding_as_in_lyra_predict():
    model, _ = tiny_lyra()
    tokenizer = LyraTokenizer(padding_characters="J")
    result = scan(model, tokenizer, "JJMKTAYJJ", progress=False)
    with torch.no_grad():
        expected = model(**tokenizer("JJMKTAYJJ", return_tensors="pt")).logits[0, 0]
    assert result.wild_type_scores[result.targets[0]] == pytest.approx(float(expected), abs=1e-6)
    assert sorted(set(result.singles["position"])) == [3, 4, 5, 6, 7]
    mutant = "JJMKTAWJJ"
    with torch.no_grad():
        expected = model(**tokenizer(mutant, return_tensors="pt")).logits[0, 0]
    row = [
        index
        for index, (position, letter) in enumerate(zip(result.singles["position"], result.singles["mutant"]))
        if (position, letter) == (7, "W")
    ][0]
    assert result.singles[row]["score"] == pytest.approx(float(expected), abs=1e-6)


def test_an_ensemble_pair_map_gives_the_members_mean_and_spread_in_worker_processes(tmp_path):
    members = []
    for seed in range(2):
        torch.manual_seed(seed)
        tokenizer = LyraTokenizer()
        members.append(
            LyraForSequenceRegression(LyraConfig(hidden_size=16, state_size=8, vocab_size=len(tokenizer))).eval()
        )
    together, _, _ = scan_all_pairs(
        members, tokenizer, "MKTAYIA", tmp_path / "both.parquet", processes=2, progress=False
    )
    alone = [
        scan_all_pairs(member, tokenizer, "MKTAYIA", tmp_path / f"{index}.parquet", progress=False)[0]
        for index, member in enumerate(members)
    ]
    assert len(together) == math.comb(7, 2) * 19**2
    epistasis = np.array([dataset["epistasis"] for dataset in alone])
    np.testing.assert_allclose(together["epistasis"], epistasis.mean(0), atol=1e-6)
    np.testing.assert_allclose(together["epistasis_std"], epistasis.std(0), atol=1e-6)
