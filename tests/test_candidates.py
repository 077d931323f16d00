"""The plain and the full model side by side, the one validation supports kept (`lyra_hf.training.candidates`)."""

import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from test_library import LETTERS, variants

from lyra_hf.data.library import check_library
from lyra_hf.training.candidates import CONFIDENCE, MIN_ROWS_TO_OVERRULE, choose


LIBRARY = check_library(variants("".join(np.random.default_rng(0).choice(list(LETTERS), 40)), 50, most=3))
NOT_A_LIBRARY = check_library(["".join(np.random.default_rng(row).choice(list("ACGT"), 30)) for row in range(50)])


def noisy(labels: np.ndarray, noise: float, seed: int) -> np.ndarray:
    return labels + np.random.default_rng(seed).normal(0.0, noise, labels.shape)


def test_the_data_kind_decides_unless_validation_supports_the_other_candidate():
    """A library keeps the full model and other sequences the plain one when validation cannot tell them apart; a
    candidate far better on validation is kept either way. Each view's scores are the candidates' Spearman."""
    labels = np.random.default_rng(0).normal(size=(400, 1))
    close = {"plain": noisy(labels, 1.0, 1), "full": noisy(labels, 1.0, 2)}
    assert choose(close, labels, LIBRARY, seed=0)[0] == "full"
    assert choose(close, labels, NOT_A_LIBRARY, seed=0)[0] == "plain"

    far_apart = {"plain": noisy(labels, 2.0, 1), "full": noisy(labels, 0.3, 2)}
    chosen, evidence = choose(far_apart, labels, NOT_A_LIBRARY, seed=0)
    assert (
        chosen == "full" and evidence["favoured"] == "plain" and "validation supports the full model" in evidence["why"]
    )
    view = evidence["views"]["all validation rows"]
    assert view["full"] == pytest.approx(spearmanr(far_apart["full"][:, 0], labels[:, 0])[0])
    assert view["full_better_share"] >= CONFIDENCE and view["plain_better_share"] < 1 - CONFIDENCE
    reversed_roles = {"plain": far_apart["full"], "full": far_apart["plain"]}
    assert choose(reversed_roles, labels, LIBRARY, seed=0)[0] == "plain"
    assert "not a variant library" in evidence["why"] and json.loads(json.dumps(evidence)) == evidence


def test_a_candidate_that_ranks_the_fitter_variants_better_is_kept_where_all_rows_tie():
    """As in training on low fitness to design upward: both candidates put the duller half of validation below the
    fitter half, and each ranks one half right and the other at random, so they tie on all rows; only the one that
    ranks the fitter half (the variants worth making) is kept, against the library's favourite."""
    rng = np.random.default_rng(3)
    labels = np.sort(rng.normal(size=(400, 1)), axis=0)
    duller, fitter = np.arange(200), np.arange(200, 400)
    ranks_duller = labels.copy()
    ranks_duller[fitter] = rng.permutation(labels[fitter])
    ranks_fitter = labels.copy()
    ranks_fitter[duller] = rng.permutation(labels[duller])
    chosen, evidence = choose({"full": ranks_duller, "plain": ranks_fitter}, labels, LIBRARY, seed=0)
    views = evidence["views"]
    assert views["fitter half"]["plain_better_share"] >= CONFIDENCE
    assert (
        max(views["all validation rows"]["plain_better_share"], views["all validation rows"]["full_better_share"])
        < CONFIDENCE
    )
    assert chosen == "plain"


def test_a_few_dozen_validation_rows_never_overrule_the_data_kind():
    """Fewer than `MIN_ROWS_TO_OVERRULE` validation rows keep the data kind's favourite, however far apart the
    candidates look on them, and say why; as many rows with the same gap overrule it."""
    labels = np.random.default_rng(4).normal(size=(MIN_ROWS_TO_OVERRULE - 1, 1))
    predictions = {"plain": noisy(labels, 0.2, 5), "full": noisy(labels, 3.0, 6)}
    chosen, evidence = choose(predictions, labels, LIBRARY, seed=0)
    assert chosen == "full" and evidence["views"]["all validation rows"]["plain_better_share"] >= CONFIDENCE
    assert f"{MIN_ROWS_TO_OVERRULE - 1} validation rows are too few to overrule it" in evidence["why"]
    labels = np.random.default_rng(4).normal(size=(MIN_ROWS_TO_OVERRULE, 1))
    assert (
        choose({"plain": noisy(labels, 0.2, 5), "full": noisy(labels, 3.0, 6)}, labels, LIBRARY, seed=0)[0] == "plain"
    )


def test_sequences_of_one_length_that_are_no_library_favour_the_plain_model(tmp_path, capsys):
    """Random guides of one length through lyra-train: the plain model is the favourite, and with 16 validation rows,
    too few to overrule it, the only candidate trained; what was kept, and why, is in the log, the closing line and
    results.json."""
    from lyra_hf.train import main

    rng = np.random.default_rng(0)
    guides = ["".join(rng.choice(list("ACGT"), 20)) for _ in range(160)]
    rows = "".join(f"{guide},{guide.count('G') - guide[:5].count('A')}\n" for guide in guides)
    (tmp_path / "guides.csv").write_text("sequence,activity\n" + rows)
    flags = [
        "--train-file",
        str(tmp_path / "guides.csv"),
        "--label-columns",
        "activity",
        "--alphabet",
        "dna",
        "--hidden-size",
        "16",
    ]
    assert (
        main(
            [
                *flags,
                "--state-size",
                "8",
                "--epochs",
                "1",
                "--quiet",
                "--no-baseline",
                "--output-dir",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    choice = results["components"]["candidates"]
    assert (
        choice["chosen"] == choice["favoured"] == "plain"
        and not choice["library"]["is_library"]
        and choice["why"].startswith("not a variant library")
        and "16 validation rows are too few to overrule it" in choice["why"]
    )
    assert sorted(path.name for path in (tmp_path / "run" / "candidates").iterdir()) == ["plain"]
    assert results["settings"]["site_effects"] == "auto" and "baseline" not in results
    kept = json.loads((tmp_path / "run" / "candidates" / "plain" / "results.json").read_text())
    assert results["validation"] == kept["validation"] and results["history"] == kept["history"]
    assert kept["settings"]["site_effects"] == kept["settings"]["global_epistasis"] == "off"
    output = capsys.readouterr().out
    assert "keeping the plain model" in output and "the plain model alone" in output.splitlines()[-1]
