import random

import pytest
import torch
from transformers import AutoTokenizer

from lyra_hf import LyraConfig, LyraModel, LyraTokenizer


def test_default_is_the_protein_tokenizer_matching_the_default_config():
    tokenizer = LyraTokenizer()
    assert len(tokenizer) == LyraConfig().vocab_size == 26
    assert tokenizer.pad_token_id == 0 and tokenizer.convert_ids_to_tokens(1) == "[UNK]"
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]
    assert tokenizer.is_fast


@pytest.mark.parametrize(
    "alphabet, letters", [("protein", "ACDEFGHIKLMNPQRSTVWYX"), ("dna", "ACGTN"), ("rna", "ACGUN"), ("XYZ", "XYZ")]
)
def test_alphabets_round_trip(alphabet, letters):
    tokenizer = LyraTokenizer.for_alphabet(alphabet)
    assert len(tokenizer) == 5 + len(letters)
    text = letters * 3
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == len(text) and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


@pytest.mark.parametrize("spelling", ["DNA", "Dna", " dna ", "dNa"])
def test_alphabet_names_are_read_in_any_case_and_near_misses_are_refused(spelling):
    tokenizer = LyraTokenizer.for_alphabet(spelling)
    assert (tokenizer.letters, tokenizer.alphabet) == ("ACGTN", "dna")
    assert LyraTokenizer.for_alphabet("Protein").get_vocab() == LyraTokenizer().get_vocab()
    for misspelt, name in (("protien", "protein"), ("DNAs", "dna")):
        with pytest.raises(ValueError, match=f"looks like '{name}'"):
            LyraTokenizer.for_alphabet(misspelt)
    assert LyraTokenizer.for_alphabet("acgu").letters == "ACGU"  # letters, not a name


def test_case_and_whitespace_are_ignored_and_split_words_encode_like_the_joined_string():
    tokenizer = LyraTokenizer()
    reference = tokenizer("MKTAYIAKQR")["input_ids"]
    assert tokenizer("mktay iakqr")["input_ids"] == reference
    assert tokenizer("MKTAY\nIAKQR\t ")["input_ids"] == reference
    assert tokenizer(["MKTAY", "IAKQR"], is_split_into_words=True)["input_ids"] == reference
    assert tokenizer("M K T A Y I A K Q R")["input_ids"] == reference


def test_unknown_characters_map_to_unk_by_default_and_error_on_request():
    tokenizer = LyraTokenizer()
    ids = tokenizer("AC1Z")["input_ids"]
    assert ids[2] == ids[3] == tokenizer.unk_token_id
    strict = LyraTokenizer(unknown="error")
    with pytest.raises(ValueError, match=r"'1' at position 3 .* of sequence 1"):
        strict(["ACD", "AC1D"])
    with pytest.raises(ValueError, match=r"'Z' at position 2 .* of sequence 0"):
        strict("aZ")
    assert strict("ac d")["input_ids"] == tokenizer("ACD")["input_ids"]


def test_padding_characters_are_masked():
    tokenizer = LyraTokenizer(padding_characters="J")
    encoded = tokenizer(["JJAAYj", "AC"], padding=True)
    assert encoded["input_ids"][0] == [0, 0, 5, 5, tokenizer.convert_tokens_to_ids("Y"), 0]
    assert encoded["attention_mask"] == [[0, 0, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]


def test_j_padding_gives_the_same_model_output_as_the_bare_sequence():
    tokenizer = LyraTokenizer(padding_characters="J")
    torch.manual_seed(0)
    model = LyraModel(LyraConfig(dropout=0.0)).eval()
    padded = tokenizer(["JJJCARDYWJJJJ"], return_tensors="pt")
    bare = tokenizer(["CARDYW"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**padded).pooler_output, model(**bare).pooler_output, atol=1e-5, rtol=0)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padding_sides_work_with_the_model(padding_side):
    tokenizer = LyraTokenizer(padding_side=padding_side)
    torch.manual_seed(0)
    model = LyraModel(LyraConfig(dropout=0.0)).eval()
    sequences = ["MKTAYIAKQRQISFVKSHFSRQ", "MKV", "ACDEFGHIK"]
    batch = tokenizer(sequences, padding=True, pad_to_multiple_of=8, return_tensors="pt")
    assert batch["input_ids"].shape[1] == 24
    real_column = 0 if padding_side == "right" else -1
    assert (batch["attention_mask"][:, real_column] == 1).all()
    with torch.no_grad():
        pooled = model(**batch).pooler_output
        for row, sequence in enumerate(sequences):
            alone = model(**tokenizer([sequence], return_tensors="pt")).pooler_output[0]
            torch.testing.assert_close(pooled[row], alone, atol=1e-5, rtol=0)


def test_truncation_pairs_and_special_tokens():
    tokenizer = LyraTokenizer()
    assert tokenizer("ACDEFG", truncation=True, max_length=4)["input_ids"] == tokenizer("ACDE")["input_ids"]
    pair = tokenizer("AC", "DE")["input_ids"]
    assert pair == tokenizer("AC")["input_ids"] + [tokenizer.sep_token_id] + tokenizer("DE")["input_ids"]
    assert tokenizer.get_special_tokens_mask(pair, already_has_special_tokens=True) == [0, 0, 1, 0, 0]
    assert tokenizer.convert_tokens_to_ids(["[CLS]", "[MASK]"]) == [2, 4]


def test_added_tokens():
    tokenizer = LyraTokenizer()
    tokenizer.add_tokens(["<phospho>"])
    ids = tokenizer("AC<phospho>D")["input_ids"]
    assert len(ids) == 4 and ids[2] == len(tokenizer) - 1


def test_save_load_through_auto_tokenizer_keeps_ids_and_arguments(tmp_path):
    tokenizer = LyraTokenizer(alphabet="dna", padding_characters="J", unknown="error", padding_side="left")
    tokenizer.save_pretrained(tmp_path)
    LyraConfig(vocab_size=len(tokenizer)).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, LyraTokenizer)
    assert (loaded.alphabet, loaded.padding_characters, loaded.unknown, loaded.padding_side) == (
        "dna",
        "J",
        "error",
        "left",
    )
    assert loaded.get_vocab() == tokenizer.get_vocab()
    texts = ["ACGTN", "jjacg"]
    assert loaded(texts, padding=True)["input_ids"] == tokenizer(texts, padding=True)["input_ids"]
    assert loaded(texts, padding=True)["attention_mask"] == tokenizer(texts, padding=True)["attention_mask"]
    with pytest.raises(ValueError, match="'U'"):
        loaded("ACGU")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown"):
        LyraTokenizer(unknown="ignore")
    with pytest.raises(ValueError, match="padding_characters"):
        LyraTokenizer(alphabet="dna", padding_characters="A")
    with pytest.raises(ValueError, match="alphabet"):
        LyraTokenizer(alphabet="AAC")


def _backend_only(tokenizer):
    """The same tokenizer with the lookup-table path switched off, so every call goes through the Rust backend."""
    tokenizer._encode_with_lookup_table = lambda *args, **kwargs: None
    return tokenizer


def _as_lists(encoding):
    return {key: value.tolist() if hasattr(value, "tolist") else value for key, value in encoding.items()}


@pytest.mark.parametrize("padding_characters", ["", "J"])
def test_lookup_table_path_equals_the_backend(padding_characters):
    fast = LyraTokenizer(padding_characters=padding_characters)
    backend = _backend_only(LyraTokenizer(padding_characters=padding_characters))
    rng = random.Random(0)
    letters = "ACDEFGHIKLMNPQRSTVWYXacdy" + padding_characters * 3
    batch = ["".join(rng.choice(letters) for _ in range(rng.randint(0, 40))) for _ in range(9)] + ["", "ACD"]
    options = [
        {},
        {"padding": True},
        {"padding": "max_length", "max_length": 45},
        {"padding": True, "pad_to_multiple_of": 8},
        {"padding": True, "padding_side": "left"},
        {"padding": True, "truncation": True, "max_length": 17},
        {"truncation": True, "max_length": 5},
        {"padding": "max_length", "truncation": True, "max_length": 10, "pad_to_multiple_of": 5},
        {"padding": True, "return_attention_mask": False},
    ]
    for kwargs in options:
        for return_tensors in (None, "np", "pt"):
            if return_tensors and not kwargs.get("padding"):
                continue
            for truncation_side in ("right", "left"):
                fast.truncation_side = backend.truncation_side = truncation_side
                for text in (batch, batch[3]):
                    expected = backend(text, return_tensors=return_tensors, **kwargs)
                    actual = fast(text, return_tensors=return_tensors, **kwargs)
                    assert type(actual).__name__ == "LyraBatchEncoding", (kwargs, return_tensors)
                    assert _as_lists(actual) == _as_lists(expected), (kwargs, return_tensors, truncation_side)
                    if return_tensors == "pt":
                        assert actual["input_ids"].dtype == expected["input_ids"].dtype
                    # The backend's alignment information is still there, computed when asked for.
                    assert actual.tokens() == expected.tokens()
                    assert actual.word_ids() == expected.word_ids()


def test_lookup_table_path_leaves_everything_else_to_the_backend():
    tokenizer = LyraTokenizer()
    for text in ["AC D", "ACZ", "ACé", "AC[MASK]D"]:
        assert type(tokenizer(text)).__name__ == "BatchEncoding", text
    assert type(tokenizer("ACD", return_offsets_mapping=True)).__name__ == "BatchEncoding"
    assert type(tokenizer("ACD", "EF")).__name__ == "BatchEncoding"
    with pytest.raises(ValueError, match="'Z' at position 3"):
        LyraTokenizer(unknown="error")(["ACD", "ACZ"])
    tokenizer.add_tokens(["CD"])
    encoding = tokenizer("ACDA")
    assert type(encoding).__name__ == "BatchEncoding"
    assert encoding["input_ids"] == [tokenizer.convert_tokens_to_ids(t) for t in ["A", "CD", "A"]]
