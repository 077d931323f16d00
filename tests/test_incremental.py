"""Incremental scoring (lyra_hf.incremental) against full forward passes of the same mutants."""

import pytest
import torch

from lyra_hf import LyraConfig, LyraForSequenceClassification, LyraForSequenceRegression, LyraTokenizer
from lyra_hf.incremental import IncrementalScorer


LENGTH = 40
# Site tuples (0-based): both ends, adjacent and overlapping windows, far apart, and next to padding positions.
DOUBLES = [[0, 1], [0, LENGTH - 1], [5, 6], [5, 9], [LENGTH - 2, LENGTH - 1], [10, 30], [2, 4], [19, 21]]
SINGLES = [[0], [1], [3], [21], [LENGTH - 1]]


def full_forward(model, wild, attention_mask, sites, tokens):
    count = tokens.shape[0] * tokens.shape[1]
    positions = sites[:, None].expand(tokens.shape).reshape(count, -1)
    input_ids = wild.repeat(count, 1)
    input_ids[torch.arange(count)[:, None], positions] = tokens.reshape(count, -1)
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask.expand(count, -1)).logits


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"bidirectional": True},
        {"num_s4d_layers": 2},  # exact for the first S4D layer, the second in full
        {"pgc_kernel_size": 5},
        {"pgc_residual": True, "pooling": "max"},
        {"pooling": "last", "bidirectional": True, "num_s4d_layers": 2},
        {"site_effects_length": 30},  # positions 30 and beyond have no site effect
        {"site_effects_length": LENGTH, "bidirectional": True, "pooling": "max"},
        {"site_effects_length": LENGTH, "global_epistasis": True},
        {"global_epistasis": True, "bidirectional": True, "num_s4d_layers": 2},
        {"prior_length": 30, "site_effects_length": LENGTH, "global_epistasis": True},  # positions 30 on: no prior
    ],
)
def test_incremental_scores_equal_full_forward_passes(config):
    torch.manual_seed(0)
    tokenizer = LyraTokenizer()
    model = LyraForSequenceRegression(LyraConfig(vocab_size=len(tokenizer), num_labels=2, **config)).eval()
    if model.site_effects is not None:  # they start at 0; a test of them needs effects
        torch.nn.init.normal_(model.site_effects.weight)
    if model.prior is not None:  # a prior's table and scale, which start at 0
        torch.nn.init.normal_(model.prior.table)
        torch.nn.init.normal_(model.prior.scale)
    if model.global_epistasis is not None:  # a curve steep enough to bend the scores
        torch.nn.init.constant_(model.global_epistasis.log_slope, 1.0)
    wild = torch.randint(5, 25, (LENGTH,))
    attention_mask = torch.ones(LENGTH, dtype=torch.long)
    attention_mask[[3, 20]] = 0  # padding characters inside the sequence
    scorer = IncrementalScorer(model, wild, attention_mask)
    for sites in (torch.tensor(DOUBLES), torch.tensor(SINGLES)):
        tokens = torch.randint(5, 25, (len(sites), 6, sites.shape[1]))
        incremental = scorer.score(sites, tokens).flatten(0, 1)
        full = full_forward(model, wild, attention_mask, sites, tokens)
        scale = full.abs().max()
        assert (incremental - full).abs().max() < 1e-5 * scale, config
        # One site at a time: a causal layer then computes only the positions from the site's window on.
        one_by_one = torch.cat([scorer.score(sites[i : i + 1], tokens[i : i + 1]) for i in range(len(sites))]).flatten(
            0, 1
        )
        assert (one_by_one - full).abs().max() < 1e-5 * scale, config
        if sites.shape[1] == 2:
            # Sites of different first positions in one batch, away from the start, given in either order.
            chosen = torch.tensor([3, 5, 7])
            expected = full.view(len(sites), -1, full.shape[-1])[chosen].flatten(0, 1)
            for flipped in (False, True):
                some_sites, some_tokens = (
                    (sites[chosen].flip(1), tokens[chosen].flip(2)) if flipped else (sites[chosen], tokens[chosen])
                )
                together = scorer.score(some_sites, some_tokens).flatten(0, 1)
                assert (together - expected).abs().max() < 1e-5 * scale, config
        # The mutants differ from each other and from the wild type: an unchanged score would not pass for them.
        assert full.std(0).min() > 1e-4


def test_classifier_logits_and_the_fallback_rule():
    torch.manual_seed(1)
    tokenizer = LyraTokenizer()
    model = LyraForSequenceClassification(
        LyraConfig(vocab_size=len(tokenizer), num_labels=3, hidden_size=16, state_size=8)
    ).eval()
    wild = torch.randint(5, 25, (LENGTH,))
    sites, tokens = torch.tensor(DOUBLES), torch.randint(5, 25, (len(DOUBLES), 4, 2))
    incremental = IncrementalScorer(model, wild).score(sites, tokens).flatten(0, 1)
    full = full_forward(model, wild, torch.ones(LENGTH, dtype=torch.long), sites, tokens)
    assert torch.allclose(incremental, full, atol=1e-5 * full.abs().max())
    assert IncrementalScorer.unsupported(model) is None
    with pytest.raises(ValueError, match="is not a Lyra sequence regression or classification head"):
        IncrementalScorer(torch.nn.Linear(2, 2), wild)


def test_without_the_substitution_table_every_window_is_computed_alike(monkeypatch):
    import lyra_hf.incremental as incremental

    torch.manual_seed(2)
    tokenizer = LyraTokenizer()
    model = LyraForSequenceRegression(LyraConfig(vocab_size=len(tokenizer), hidden_size=16, state_size=8)).eval()
    wild = torch.randint(5, 25, (LENGTH,))
    sites, tokens = torch.tensor(DOUBLES), torch.randint(5, 25, (len(DOUBLES), 5, 2))
    with_table = IncrementalScorer(model, wild)
    monkeypatch.setattr(incremental, "SUBSTITUTION_TABLE_BYTES", 0)
    without = IncrementalScorer(model, wild)
    assert with_table.substitutions is not None and without.substitutions is None
    full = full_forward(model, wild, torch.ones(LENGTH, dtype=torch.long), sites, tokens)
    for scorer in (with_table, without):
        assert (scorer.score(sites, tokens).flatten(0, 1) - full).abs().max() < 1e-5 * full.abs().max()


def test_a_substitution_the_prior_cannot_score_is_refused_naming_it():
    """Full forward passes and incremental scores alike refuse a substitution whose prior score is missing (NaN),
    naming its letter and 1-based position; the wild type and scored substitutions go through."""
    tokenizer = LyraTokenizer()
    config = LyraConfig(
        vocab_size=len(tokenizer), hidden_size=16, state_size=8, prior_length=LENGTH, alphabet=tokenizer.letters
    )
    model = LyraForSequenceRegression(config).eval()
    wild = torch.tensor(tokenizer.convert_tokens_to_ids(list("ACDEFGHIKL" * 4)))
    unscored = int(tokenizer.convert_tokens_to_ids("W"))
    with torch.no_grad():
        model.prior.table.view(LENGTH, -1)[7, unscored] = float("nan")
    scorer = IncrementalScorer(model, wild)
    assert torch.isfinite(
        scorer.score(torch.tensor([[7]]), torch.tensor([[[int(tokenizer.convert_tokens_to_ids("Y"))]]]))
    ).all()
    with pytest.raises(ValueError, match="W at position 8: the model's prior has no score"):
        scorer.score(torch.tensor([[2, 7]]), torch.tensor([[[5, unscored]]]))
    mutant = wild.clone()
    mutant[7] = unscored
    with pytest.raises(ValueError, match="W at position 8"):
        model(input_ids=mutant[None])
