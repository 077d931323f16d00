import json

import pytest

from lyra_hf import LyraConfig, LyraForSequenceRegression


def test_defaults_reproduce_the_authors_model():
    config = LyraConfig()
    assert (config.hidden_size, config.state_size, config.num_s4d_layers) == (64, 64, 1)
    assert config.pgc_expansion_factors == [0.25, 2.0]
    assert config.dropout == 0.2 and config.pooling == "mean" and not config.bidirectional
    assert config.num_labels == 1
    # The authors' forward pass with a 21-token protein vocabulary (their 47,745 counts 576 stale conv copies).
    assert LyraForSequenceRegression(LyraConfig(vocab_size=21)).num_parameters() == 47_169


def test_paper_and_earlier_package_names_are_aliases():
    config = LyraConfig(d_model=32, d_state=16, num_s4_layers=3)
    assert (config.hidden_size, config.state_size, config.num_s4d_layers) == (32, 16, 3)
    assert config.num_hidden_layers == 3 and config.d_model == 32
    config.num_hidden_layers = 4
    assert config.num_s4d_layers == 4


def test_round_trip_through_json(tmp_path):
    config = LyraConfig(hidden_size=32, pgc_expansion_factors=[1, 2, 0.5], pooling="max", bidirectional=True)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "lyra" and saved["pgc_expansion_factors"] == [1.0, 2.0, 0.5]
    loaded = LyraConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()


def test_classification_labels_are_kept():
    config = LyraConfig(num_labels=3, id2label={0: "low", 1: "mid", 2: "high"})
    assert config.num_labels == 3 and LyraConfig.from_dict(config.to_dict()).id2label[2] == "high"


@pytest.mark.parametrize(
    "field, value",
    [
        ("state_size", 7),
        ("pooling", "median"),
        ("hidden_size", 0),
        ("vocab_size", -1),
        ("num_s4d_layers", 0),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("pgc_kernel_size", 4),
        ("dt_min", 0.5),
        ("rms_norm_eps", 0.0),
        ("pgc_expansion_factors", [0.001]),
        ("ssm_learning_rate", -1e-3),
    ],
)
def test_invalid_values_name_the_field_and_value(field, value):
    with pytest.raises(ValueError, match=f"`{field}`.*{value}" if field != "pgc_expansion_factors" else field):
        LyraConfig(**{field: value})
