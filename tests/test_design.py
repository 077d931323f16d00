"""lyra-design: designs equal an independent exhaustive argmax (lyra-predict on every candidate), diversity rules,
exclusion, libraries, the objective grammar, ensembles' ucb and Thompson sampling, and bad inputs."""

import csv
import itertools
import json

import numpy as np
import pytest
import torch

from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer
from lyra_hf.design import DesignOptions, design, main
from lyra_hf.design.expressions import parse_constraint, parse_objective
from lyra_hf.design.selection import distance
from lyra_hf.predict import predict


WILD_TYPE = "MKTAYIAKQR"


def tiny_model(seed: int = 0, **config):
    torch.manual_seed(seed)
    tokenizer = LyraTokenizer()
    config = {"id2label": {0: "fitness"}, **config}
    return LyraForSequenceRegression(
        LyraConfig(hidden_size=16, state_size=8, dropout=0.0, vocab_size=len(tokenizer), **config)
    ).eval(), tokenizer


def save_ensemble(folder, members, tokenizer):
    for index, member in enumerate(members):
        member.save_pretrained(folder / f"member_{index}")
        tokenizer.save_pretrained(folder / f"member_{index}")
    (folder / "ensemble.json").write_text(json.dumps({"members": [f"member_{index}" for index in range(len(members))]}))


def every_variant(positions: list[int], letters: str, max_mutations: int) -> list[str]:
    """The design space spelled out directly: every sequence changing 1..max_mutations of `positions` (1-based)."""
    variants = []
    for count in range(1, max_mutations + 1):
        for chosen in itertools.combinations(positions, count):
            options = [[letter for letter in letters if letter != WILD_TYPE[position - 1]] for position in chosen]
            for combination in itertools.product(*options):
                sequence = list(WILD_TYPE)
                for position, letter in zip(chosen, combination):
                    sequence[position - 1] = letter
                variants.append("".join(sequence))
    return variants


def hamming(first: str, second: str) -> int:
    return sum(a != b for a, b in zip(first, second))


def test_designs_are_the_exhaustive_argmax_that_keeps_the_diversity_rules():
    model, tokenizer = tiny_model()
    options = DesignOptions(
        positions="2-5", letters="ACDEG", max_mutations=3, num_designs=10, min_distance=2, max_per_site=7
    )
    result = design(model, tokenizer, WILD_TYPE, options, progress=False)
    # Independently: every variant through lyra-predict's full forward passes, then the same greedy rules by hand.
    variants = every_variant([2, 3, 4, 5], "ACDEG", 3)
    assert result.space_size == len(variants) == len(result.candidates["sequence"])
    predicted = {sequence: float(output[0]) for sequence, output in zip(variants, predict(model, tokenizer, variants))}
    expected, per_site = [], {}
    for sequence in sorted(variants, key=lambda entry: -predicted[entry]):
        changed = [position for position in range(len(WILD_TYPE)) if sequence[position] != WILD_TYPE[position]]
        if all(hamming(sequence, other) >= 2 for other in expected) and all(
            per_site.get(position, 0) < 7 for position in changed
        ):
            expected.append(sequence)
            for position in changed:
                per_site[position] = per_site.get(position, 0) + 1
        if len(expected) == 10:
            break
    assert len(expected) == 10 and max(per_site.values()) == 7  # a full batch, and the per-site rule binds
    assert result.designs["sequence"] == expected
    np.testing.assert_allclose(
        result.designs["predicted_fitness"], [predicted[sequence] for sequence in expected], atol=1e-5
    )
    assert result.designs["rank"] == list(range(1, 11))
    first = result.designs[0]
    assert first["distance_to_wild_type"] == len(first["mutations"].split(":")) == hamming(first["sequence"], WILD_TYPE)


def test_excluded_sequences_are_never_proposed_and_distances_to_them_are_reported():
    model, tokenizer = tiny_model()
    options = DesignOptions(positions="1-3", max_mutations=1, num_designs=10)
    best = design(model, tokenizer, WILD_TYPE, options, progress=False).designs["sequence"]
    again = design(model, tokenizer, WILD_TYPE, options, measured=best[:5], progress=False)
    assert not set(best[:5]) & set(again.designs["sequence"])
    assert again.designs["sequence"][:5] == best[5:]
    assert all(distance >= 1 for distance in again.designs["distance_to_measured"])


def test_a_candidate_library_restricts_the_designs_to_it():
    model, tokenizer = tiny_model()
    library = every_variant([2, 7], "AW", 2)[:5] + ["MKTAYIAKQW"]
    result = design(model, tokenizer, WILD_TYPE, DesignOptions(num_designs=4), library=library, progress=False)
    assert set(result.designs["sequence"]) <= set(library) and len(result.candidates["sequence"]) == len(library)
    predicted = [float(output[0]) for output in predict(model, tokenizer, library)]
    assert result.designs["sequence"] == [library[index] for index in np.argsort(predicted)[::-1][:4]]


def test_an_ensembles_ucb_ranks_by_mean_plus_beta_std_of_its_members_run_alone():
    members = [tiny_model(seed)[0] for seed in range(3)]
    tokenizer = LyraTokenizer()
    options = DesignOptions(positions="4-6", max_mutations=2, num_designs=15, acquisition="ucb:2")
    result = design(members, tokenizer, WILD_TYPE, options, progress=False)
    variants = result.candidates["sequence"]
    alone = np.array([[float(output[0]) for output in predict(member, tokenizer, variants)] for member in members])
    value = alone.mean(0) + 2 * alone.std(0)
    assert result.designs["sequence"] == [variants[index] for index in np.argsort(-value, kind="stable")[:15]]
    np.testing.assert_allclose(result.designs["acquisition"], np.sort(value)[::-1][:15], atol=1e-5)
    # Thompson sampling: design i is the best left under the member drawn for turn i.
    thompson = design(
        members,
        tokenizer,
        WILD_TYPE,
        DesignOptions(positions="4-6", max_mutations=2, num_designs=6, acquisition="thompson"),
        progress=False,
    )
    chosen = set()
    for sequence, value in zip(thompson.designs["sequence"], thompson.designs["acquisition"]):
        member = int(np.argmin([abs(alone[index][variants.index(sequence)] - value) for index in range(3)]))
        left = [index for index in range(len(variants)) if variants[index] not in chosen]
        assert sequence == variants[max(left, key=lambda index: alone[member][index])]
        chosen.add(sequence)


def test_beam_search_scores_what_exhaustive_search_scores_and_takes_over_above_max_candidates():
    model, tokenizer = tiny_model()
    exhaustive = design(
        model, tokenizer, WILD_TYPE, DesignOptions(positions="2-6", max_mutations=2, num_designs=8), progress=False
    )
    beam = design(
        model,
        tokenizer,
        WILD_TYPE,
        DesignOptions(positions="2-6", max_mutations=2, num_designs=8, search="beam"),
        progress=False,
    )
    scored = dict(zip(exhaustive.candidates["sequence"], exhaustive.candidates["predicted_fitness"]))
    assert set(beam.candidates["sequence"]) <= set(scored)
    np.testing.assert_allclose(
        beam.candidates["predicted_fitness"], [scored[sequence] for sequence in beam.candidates["sequence"]], atol=1e-5
    )
    singles = DesignOptions(positions="2-6", max_mutations=1, num_designs=8)
    assert (
        design(model, tokenizer, WILD_TYPE, singles, progress=False).designs["sequence"]
        == design(
            model, tokenizer, WILD_TYPE, singles.__class__(**{**singles.__dict__, "search": "beam"}), progress=False
        ).designs["sequence"]
    )
    # Every position, up to three changes: 1.1 million candidates, above --max-candidates, so the beam searches.
    large = design(
        model,
        tokenizer,
        WILD_TYPE,
        DesignOptions(max_mutations=3, num_designs=20, max_candidates=10_000),
        progress=False,
    )
    assert (
        large.space_size > 10_000 and len(large.candidates["sequence"]) < large.space_size and len(large.designs) == 20
    )
    assert max(large.designs["distance_to_wild_type"]) >= 2


def test_the_objective_grammar_takes_targets_numbers_and_plus_minus_times_only():
    values = {"binding": np.array([1.0, 2.0]), "expression": np.array([-1.0, 3.0])}
    np.testing.assert_allclose(parse_objective("binding + 0.5*expression", list(values))(values), [0.5, 3.5])
    np.testing.assert_allclose(
        parse_objective("-binding - 2*expression*binding + 1e-1", list(values))(values), [1.1, -13.9]
    )
    np.testing.assert_array_equal(parse_constraint("expression>0", list(values))(values), [False, True])
    np.testing.assert_array_equal(parse_constraint("binding < 2*expression", list(values))(values), [False, True])
    for bad in (
        "__import__('os')",
        "binding / 2",
        "(binding)",
        "binding ** 2",
        "stability",
        "binding +",
        "binding 2",
        "binding > 0",
    ):
        with pytest.raises(ValueError, match="--objective"):
            parse_objective(bad, list(values))
    for bad in ("expression", "expression >> 0", "expression > 0 > 1", "expression = 0", "exp(expression) > 0"):
        with pytest.raises(ValueError, match="--constraint"):
            parse_constraint(bad, list(values))


def test_hamming_distance_of_substitution_sets():
    assert distance(((1, 2), (3, 4)), ((1, 2), (3, 5))) == 1
    assert (
        distance(((1, 2),), ((3, 4),)) == 2
        and distance((), ((3, 4), (5, 6))) == 2
        and distance(((1, 2),), ((1, 2),)) == 0
    )


def test_cli_writes_designs_candidates_and_figure_and_a_second_round_never_reproposes(tmp_path, capsys):
    members = [tiny_model(seed)[0] for seed in range(2)]
    tokenizer = LyraTokenizer()
    save_ensemble(tmp_path / "ensemble", members, tokenizer)
    flags = [
        "--model",
        str(tmp_path / "ensemble"),
        "--sequence",
        WILD_TYPE,
        "--positions",
        "2-4",
        "--num-designs",
        "8",
        "--acquisition",
        "ucb:1",
    ]
    assert main([*flags, "--output-dir", str(tmp_path / "round1")]) == 0
    with open(tmp_path / "round1" / "designs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and list(rows[0])[:4] == ["rank", "sequence", "mutations", "predicted_fitness"]
    assert {
        "predicted_fitness_std",
        "objective",
        "acquisition",
        "distance_to_wild_type",
        "distance_to_measured",
    } <= set(rows[0])
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "round1" / "candidates.parquet").num_rows == len(
        every_variant([2, 3, 4], "ACDEFGHIKLMNPQRSTVWY", 2)
    )
    if (tmp_path / "round1" / "design.png").exists():
        assert (tmp_path / "round1" / "design.png").read_bytes()[:4] == b"\x89PNG"
    assert (
        main([*flags, "--exclude", str(tmp_path / "round1" / "designs.csv"), "--output-dir", str(tmp_path / "round2")])
        == 0
    )
    with open(tmp_path / "round2" / "designs.csv") as handle:
        second = list(csv.DictReader(handle))
    assert not {row["sequence"] for row in rows} & {row["sequence"] for row in second}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--positions", "3-40"], "--positions: positions 3-40 are outside the sequence"),
        (["--positions", "6-3"], "--positions: the range 6-3 runs backwards; write it 3-6"),
        (["--letters", "ABZ"], "--letters 'ABZ': 'B', 'Z'"),
        (["--positions", "1", "--letters", "M"], "the design space is empty"),
        (
            ["--positions", "1-3", "--letters", "A", "--max-mutations", "1", "--constraint", "fitness>1e9"],
            "--constraint 'fitness>1e9' holds for none of the 3 candidates",
        ),
        (
            ["--positions", "1-10", "--max-mutations", "3", "--max-candidates", "1000", "--search", "exhaustive"],
            "more than --max-candidates 1,000",
        ),
        (["--objective", "stability*2"], "'stability' is not a target of this model"),
        (["--acquisition", "ucb:2"], "reads the spread of a seed ensemble"),
        (["--acquisition", "greedy"], "'greedy' is not one of mean"),
        (["--acquisition", "ucb:nan"], "--acquisition 'ucb:nan': ucb takes a finite number"),
        (["--acquisition", "ucb:inf"], "--acquisition 'ucb:inf': ucb takes a finite number"),
        (["--objective", "1e999*fitness"], "1e999 is too large to be a number"),
        (["--constraint", "fitness>1e999"], "1e999 is too large to be a number"),
        (
            ["--objective", "1e300*1e300*fitness", "--positions", "1-3"],
            "--objective '1e300*1e300*fitness' is not a finite number for",
        ),
        (
            ["--constraint", "1e300*1e300*fitness>0", "--positions", "1-3"],
            "--constraint '1e300*1e300*fitness>0' is not a finite number for some candidates",
        ),
    ],
)
def test_bad_inputs_fail_in_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    model, tokenizer = tiny_model()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    capsys.readouterr()  # what saving printed (transformers' own progress bar, before a command turned it off)
    output = tmp_path / "out"
    assert main(["--model", str(tmp_path / "model"), "--sequence", WILD_TYPE, "--output-dir", str(output), *flags]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0], error
    assert not [path for path in output.iterdir() if not path.name.startswith(".")] if output.exists() else True


def test_readme_design_rounds_run_as_written_and_never_repropose_a_measured_variant(tmp_path, monkeypatch):
    import re
    import shlex
    import subprocess
    import sys

    from test_try_it import REPO, bash_blocks

    from lyra_hf.train import main as train_main

    (block,) = bash_blocks((REPO / "README.md").read_text(), "Design the next batch")
    script = " ".join(block).replace("\\ ", "")
    wild_type = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "synthetic_lab.py"), "wild-type"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    script = script.replace('"$(python scripts/synthetic_lab.py wild-type)"', wild_type)
    commands = [
        command.strip() for command in re.split(r"(?=\b(?:python|lyra-train|lyra-design) )", script) if command.strip()
    ]
    assert [command.split()[0] for command in commands] == [
        "python",
        "lyra-train",
        "lyra-design",
        "python",
        "lyra-train",
        "lyra-design",
    ]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scripts").symlink_to(REPO / "scripts")
    # As written, without the small-data floor of optimizer steps (its own test covers it), to keep the test short.
    monkeypatch.setattr("lyra_hf.training.schedule.DEFAULT_MIN_STEPS", 0)
    measured_before = {}
    for command in commands:
        words = shlex.split(command)
        if words[0] == "python":
            subprocess.run([sys.executable, *words[1:]], check=True, capture_output=True)
        else:
            if words[0] == "lyra-design":
                with open("measured.csv") as handle:
                    measured_before[words[words.index("--output-dir") + 1]] = {
                        row["sequence"] for row in csv.DictReader(handle)
                    }
            assert (train_main if words[0] == "lyra-train" else main)(words[1:]) == 0, command
    for folder, measured in measured_before.items():
        with open(tmp_path / folder / "designs.csv") as handle:
            designs = {row["sequence"] for row in csv.DictReader(handle)}
        assert len(designs) == 96 and not designs & measured
    assert len(measured_before["design2"]) == 384 + 96


def test_a_batch_smaller_than_asked_says_why(tmp_path, capsys):
    """A space of fewer candidates than --num-designs gives them all; diversity rules that cut the batch are named."""
    model, tokenizer = tiny_model()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    capsys.readouterr()
    flags = ["--model", str(tmp_path / "model"), "--sequence", WILD_TYPE, "--no-figures"]
    assert (
        main(
            [
                *flags,
                "--positions",
                "1-2",
                "--letters",
                "A",
                "--max-mutations",
                "1",
                "--num-designs",
                "5",
                "--output-dir",
                str(tmp_path / "small"),
            ]
        )
        == 0
    )
    assert "2 of 5 designs: the design space holds 2 candidates not measured yet" in capsys.readouterr().err
    with open(tmp_path / "small" / "designs.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    record = json.loads((tmp_path / "small" / "design.json").read_text())
    assert (record["num_designs_asked"], record["num_designs_chosen"]) == (5, 2)
    assert record["smaller_batch_reason"].startswith("the design space holds 2 candidates not measured yet")
    assert (
        main(
            [
                *flags,
                "--positions",
                "1",
                "--max-mutations",
                "1",
                "--num-designs",
                "5",
                "--max-per-site",
                "2",
                "--output-dir",
                str(tmp_path / "site"),
            ]
        )
        == 0
    )
    assert "2 of 5 designs: --min-distance 1 and --max-per-site 2 leave no other candidate" in capsys.readouterr().err
    reason = json.loads((tmp_path / "site" / "design.json").read_text())["smaller_batch_reason"]
    assert reason.startswith("--min-distance 1 and --max-per-site 2 leave no other candidate")
