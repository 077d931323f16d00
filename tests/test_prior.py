"""Zero-shot priors (`lyra_hf.prior`): tables from an alignment and from a masked language model, read by lyra-train,
and a trained model's prior reaching every tool."""

import csv
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from lyra_hf.prior import main as prior_main
from lyra_hf.prior import read_prior, site_independent_prior
from lyra_hf.prior.alignment import CANONICAL, IDENTITY, PSEUDOCOUNT
from lyra_hf.prior.language_model import language_model_prior


WILD_TYPE = "MKTAYIAKQRQISFVKSHFSRQ"
# An A2M alignment: the query first; insertions (lowercase, `.`) and gaps (`-`); two near copies of one sequence.
ALIGNMENT = """>query
MKTAYIAKQRQISFVKSHFSRQ
>h1
MKTAYLAKQRQISFVKSgHFSRQ
>h2
MRTAYIAKQ-QISFIKSHFSKQ
>h3
MRTAYIAKQ-QISFIKSHFSKQ
>h4
--TGYIvAKERQLSFVKAHYSRQ
>h5
MKSAWIAKQRQ.ISYVKSHFTR-
>h6
MKTAYIGKQRAISFVRSHWSRE
"""


def reference_site_independent(matches: list[str]) -> np.ndarray:
    """The site-independent scores computed directly: weights 1 / neighbours at 80% identity (gaps as a symbol),
    weighted letter counts per column without gaps, a pseudocount of one sequence spread over the 20 letters, and
    log(f(letter) / f(wild type)); (positions, letters)."""
    weights = []
    for row in matches:
        neighbours = sum(sum(a == b for a, b in zip(row, other)) / len(row) >= IDENTITY for other in matches)
        weights.append(1.0 / neighbours)
    scores = np.zeros((len(matches[0]), len(CANONICAL)))
    for column in range(len(matches[0])):
        counts = {
            letter: sum(weight for row, weight in zip(matches, weights) if row[column] == letter)
            for letter in CANONICAL
        }
        total = sum(counts.values())
        frequency = {letter: (counts[letter] + PSEUDOCOUNT / 20) / (total + PSEUDOCOUNT) for letter in CANONICAL}
        wild = matches[0][column]
        scores[column] = [math.log(frequency[letter]) - math.log(frequency[wild]) for letter in CANONICAL]
    return scores


def test_a_site_independent_table_equals_a_direct_computation(tmp_path):
    (tmp_path / "family.a2m").write_text(ALIGNMENT)
    prior = site_independent_prior(str(tmp_path / "family.a2m"))
    matches = [
        "".join(
            character for character in record.split("\n", 1)[1].strip() if not (character.islower() or character == ".")
        )
        for record in ALIGNMENT.split(">")[1:]
    ]
    assert prior.wild_type == WILD_TYPE
    np.testing.assert_allclose(prior.scores, reference_site_independent(matches), atol=1e-6)
    assert prior.score(5, "I") == 0.0 and prior.score(5, "L") < 0  # the wild type's letter scores 0; a rarer one less


def test_an_insertion_of_the_query_has_no_score_and_a_first_position_shifts_the_table(tmp_path):
    (tmp_path / "family.a3m").write_text(">query\nMKtAY\n>h\nMK-Y\n>h2\nMRtAF\n")
    prior = site_independent_prior(str(tmp_path / "family.a3m"), first_position=3)
    assert prior.wild_type == "--MKTAY" and np.isnan(prior.scores[4]).all() and np.isnan(prior.scores[:2]).all()
    assert np.isfinite(prior.scores[[2, 3, 5, 6]]).all()


def tiny_esm(folder):
    """A randomly initialised ESM masked language model of a few thousand parameters with ESM's own vocabulary."""
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    vocabulary = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO", ".", "-", "<null_1>", "<mask>"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    tokenizer = EsmTokenizer(str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = EsmConfig(
        vocab_size=len(vocabulary),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id,
        position_embedding_type="rotary",
        token_dropout=False,
    )
    model = EsmForMaskedLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def test_masked_marginals_equal_a_direct_esm_computation(tmp_path):
    """lyra-prior --model on a tiny random ESM model saved to a folder: each substitution's score is log p(new) -
    log p(wild type) with that position masked, computed here one position at a time with EsmForMaskedLM."""
    model, tokenizer = tiny_esm(tmp_path / "esm")
    assert (
        prior_main(
            [
                "--model",
                str(tmp_path / "esm"),
                "--sequence",
                WILD_TYPE,
                "--output",
                str(tmp_path / "prior.csv"),
                "--batch-size",
                "5",
                "--no-figures",
            ]
        )
        == 0
    )
    table = read_prior(str(tmp_path / "prior.csv"), CANONICAL)
    ids = tokenizer(WILD_TYPE, return_tensors="pt")["input_ids"]
    for position, wild in enumerate(WILD_TYPE):
        masked = ids.clone()
        masked[0, position + 1] = tokenizer.mask_token_id  # after <cls>
        with torch.no_grad():
            log_probabilities = model(input_ids=masked).logits[0, position + 1].log_softmax(-1)
        for letter in CANONICAL:
            expected = float(
                log_probabilities[tokenizer.convert_tokens_to_ids(letter)]
                - log_probabilities[tokenizer.convert_tokens_to_ids(wild)]
            )
            assert table.score(position, letter) == pytest.approx(expected, abs=1e-5), (position, letter)
    wild_type_marginals = language_model_prior(model, tokenizer, WILD_TYPE, CANONICAL, "wild-type-marginals")
    with torch.no_grad():
        unmasked = model(input_ids=ids).logits[0, 1:-1].log_softmax(-1)
    letter = tokenizer.convert_tokens_to_ids("W")
    wild = torch.tensor(tokenizer.convert_tokens_to_ids(list(WILD_TYPE)))
    np.testing.assert_allclose(
        wild_type_marginals.scores[:, CANONICAL.index("W")],
        (unmasked[:, letter] - unmasked[torch.arange(len(WILD_TYPE)), wild]).numpy(),
        atol=1e-5,
    )


def write_library(path, rows: int = 160, unmutated: int = 20, seed: int = 0) -> None:
    """Single and double mutants of `WILD_TYPE` whose fitness follows a hidden per-substitution effect; position
    `unmutated` (0-based) keeps its letter."""
    effects = np.random.default_rng(0).normal(size=(len(WILD_TYPE), 20))
    rng = np.random.default_rng(seed)
    lines = ["sequence,fitness"]
    mutable = [position for position in range(len(WILD_TYPE)) if position != unmutated]
    for _ in range(rows):
        letters = list(WILD_TYPE)
        fitness = 0.0
        for position in rng.choice(mutable, rng.integers(1, 3), replace=False):
            letter = rng.integers(20)
            letters[position] = CANONICAL[letter]
            fitness += effects[position, letter] if CANONICAL[letter] != WILD_TYPE[position] else 0.0
        lines.append(f"{''.join(letters)},{fitness + 0.1 * rng.normal():.4f}")
    path.write_text("\n".join(lines) + "\n")


REMOTE_CODE_PREDICTS = textwrap.dedent(
    """
    import sys
    sys.modules["lyra_hf"] = None  # only the checkpoint's own code
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
    with torch.no_grad():
        print(" ".join(f"{value:.7f}" for value in model(**tokenizer(sys.argv[2:], return_tensors="pt")).logits[:,
        0].tolist()))
    """
)


def test_a_prior_from_lyra_prior_trains_and_reaches_every_tool(tmp_path, capsys):
    """An alignment's prior (lyra-prior) trains a model (lyra-train --prior) that holds the table and starts its
    weight from the augmented fit; its predictions are the same through the model, lyra-predict, lyra-scan's
    incremental scores (to 1e-5), lyra-design, pipeline() and remote code without lyra_hf; and a substitution the
    prior cannot score is refused in one line."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from lyra_hf.design import main as design_main
    from lyra_hf.predict import main as predict_main
    from lyra_hf.scan import main as scan_main
    from lyra_hf.train import main as train_main

    # The query's residue 21 is an insertion (lowercase; `.` where a homologue has none): the prior has no score there.
    records = [record.split("\n", 1) for record in ALIGNMENT.split(">")[1:]]
    inserted = [
        (name, body.strip()[:20] + (body.strip()[20].lower() if body.strip()[20] != "-" else ".") + body.strip()[21:])
        for name, body in records
    ]
    (tmp_path / "family.a2m").write_text("".join(f">{name}\n{body}\n" for name, body in inserted))
    assert prior_main(["--alignment", str(tmp_path / "family.a2m"), "--output", str(tmp_path / "prior.csv")]) == 0
    assert (
        tmp_path / "prior.png"
    ).stat().st_size > 0 and "substitutions of a 22-residue wild type" in capsys.readouterr().out
    write_library(tmp_path / "library.csv")
    write_library(tmp_path / "test.csv", rows=40, seed=1)
    flags = [
        "--train-file",
        str(tmp_path / "library.csv"),
        "--test-file",
        str(tmp_path / "test.csv"),
        "--label-columns",
        "fitness",
        "--prior",
        str(tmp_path / "prior.csv"),
    ]
    flags += [
        "--hidden-size",
        "16",
        "--state-size",
        "8",
        "--epochs",
        "2",
        "--site-effects",
        "on",
        "--quiet",
        "--output-dir",
        str(tmp_path / "run"),
    ]
    assert train_main(flags) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (
        results["baseline"]["with_prior"]["name"] == "one-hot ridge + prior"
        and "spearmanr" in results["baseline"]["prior_alone"]["test"]
    )
    assert "| one-hot ridge + prior | the prior alone |" in (tmp_path / "run" / "best" / "README.md").read_text()
    best = tmp_path / "run" / "best"
    model, tokenizer = (
        AutoModelForSequenceClassification.from_pretrained(best).eval(),
        AutoTokenizer.from_pretrained(best),
    )
    prior = site_independent_prior(str(tmp_path / "family.a2m"))
    table = model.prior.table.view(len(WILD_TYPE), -1)
    assert (
        table[3, tokenizer.convert_tokens_to_ids("W")] == pytest.approx(prior.score(3, "W"), abs=1e-6)
        and model.prior.scale.item() != 0
    )

    variants = [
        WILD_TYPE[:3] + "W" + WILD_TYPE[4:],
        WILD_TYPE[:10] + "D" + WILD_TYPE[11:15] + "A" + WILD_TYPE[16:],
        WILD_TYPE,
    ]
    with torch.no_grad():
        expected = model(**tokenizer(variants, return_tensors="pt")).logits[:, 0].numpy()
    (tmp_path / "variants.csv").write_text("sequence\n" + "\n".join(variants) + "\n")
    assert (
        predict_main(
            [
                "--model",
                str(best),
                "--input",
                str(tmp_path / "variants.csv"),
                "--output",
                str(tmp_path / "predictions.csv"),
            ]
        )
        == 0
    )
    with open(tmp_path / "predictions.csv") as handle:
        np.testing.assert_allclose(
            [float(row["predicted_fitness"]) for row in csv.DictReader(handle)], expected, atol=1e-5
        )
    assert (
        scan_main(
            ["--model", str(best), "--sequence", WILD_TYPE, "--output-dir", str(tmp_path / "scan"), "--no-figures"]
        )
        == 0
    )
    with open(tmp_path / "scan" / "singles.csv") as handle:
        singles = {(int(row["position"]), row["mutant"]): float(row["score"]) for row in csv.DictReader(handle)}
    assert singles[(4, "W")] == pytest.approx(float(expected[0]), abs=1e-5)
    assert (
        design_main(
            [
                "--model",
                str(best),
                "--sequence",
                WILD_TYPE,
                "--positions",
                "4",
                "--letters",
                "W",
                "--num-designs",
                "1",
                "--output-dir",
                str(tmp_path / "design"),
                "--no-figures",
            ]
        )
        == 0
    )
    with open(tmp_path / "design" / "designs.csv") as handle:
        assert float(next(csv.DictReader(handle))["predicted_fitness"]) == pytest.approx(float(expected[0]), abs=1e-5)
    [scored] = pipeline("text-classification", model=model, tokenizer=tokenizer)(variants[0])
    assert scored["score"] == pytest.approx(float(expected[0]), abs=1e-5)
    remote = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_PREDICTS, str(best), *variants],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert remote.returncode == 0, remote.stderr[-2000:]
    np.testing.assert_allclose([float(value) for value in remote.stdout.split()], expected, atol=1e-5)

    # The query's insertion has no score: a variant changing it is refused by lyra-predict in one line, naming it.
    assert np.isnan(prior.scores[20]).all() and torch.isnan(table[20, tokenizer.convert_tokens_to_ids("A")])
    capsys.readouterr()
    (tmp_path / "bad.csv").write_text("sequence\n" + WILD_TYPE[:20] + "A" + WILD_TYPE[21:] + "\n")
    assert (
        predict_main(
            [
                "--model",
                str(best),
                "--input",
                str(tmp_path / "bad.csv"),
                "--output",
                str(tmp_path / "bad_predictions.csv"),
            ]
        )
        == 1
    )
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "A at position 21" in line and "no score" in line and not (tmp_path / "bad_predictions.csv").exists()
