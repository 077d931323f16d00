# Copyright 2026 The lyra-hf authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Character tokenizer for protein, DNA and RNA sequences, on the `tokenizers` (Rust) backend."""

import difflib
import functools
import re

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers.tokenization_utils_base import BatchEncoding, TruncationStrategy
from transformers.tokenization_utils_tokenizers import TokenizersBackend
from transformers.utils import PaddingStrategy


ALPHABETS = {
    "protein": "ACDEFGHIKLMNPQRSTVWYX",  # the 20 canonical residues and X (unknown residue)
    "dna": "ACGTN",
    "rna": "ACGUN",
}
UNKNOWN_MODES = ("unk", "error")


def alphabet_letters(alphabet: str) -> str:
    """The letters of `alphabet`: a name of `ALPHABETS` in any case, or the letters of a custom alphabet (upper-cased).
    A custom alphabet that reads like a misspelt name (`"protien"`, `"DNAs"`) is refused with the name it resembles."""
    name = alphabet.strip().lower()
    if name in ALPHABETS:
        return ALPHABETS[name]
    resembles = difflib.get_close_matches(name, ALPHABETS, n=1, cutoff=0.75) if name.isalpha() and len(name) > 3 else []
    if resembles:
        raise ValueError(
            f"`alphabet` {alphabet!r} is not one of the names {list(ALPHABETS)} (any case) but looks like "
            f"{resembles[0]!r}; pass the name, or a custom alphabet's letters in another order."
        )
    return alphabet.upper()


WHITESPACE = re.compile(r"\s")
NOT_IN_TABLE = -1


def character_tokenizer(vocab: dict[str, int], letters: str, padding_characters: str, specials: list[str]) -> Tokenizer:
    """The `tokenizers` backend: one token per character, letters upper-cased, whitespace dropped, padding characters
    turned into the pad token (`specials[0]`)."""
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=specials[1]))
    rules = [normalizers.Replace(Regex(r"\s+"), "")]
    rules += [normalizers.Replace(letter.lower(), letter) for letter in letters if letter.lower() != letter]
    for character in padding_characters:
        rules += [normalizers.Replace(character, specials[0])]
        if character.lower() != character:
            rules += [normalizers.Replace(character.lower(), specials[0])]
    tokenizer.normalizer = normalizers.Sequence(rules)
    # Every character is a token, except special tokens written out in full (such as the padding replacement).
    special_pattern = "|".join(re.escape(token) for token in specials)
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(f"{special_pattern}|."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def lookup_table(characters: list[tuple[str, int]]) -> np.ndarray:
    """The token id of each ASCII byte (either case of each character), `NOT_IN_TABLE` for the others."""
    table = np.full(128, NOT_IN_TABLE, dtype=np.int64)
    for character, token_id in characters:
        for variant in {character, character.lower()}:
            if variant.isascii() and len(variant) == 1:
                table[ord(variant)] = token_id
    return table


class LyraBatchEncoding(BatchEncoding):
    """
    A `BatchEncoding` made by the lookup-table path. Its `tokenizers.Encoding` objects (behind `tokens()`, `word_ids()`,
    `char_to_token()`, ...) are computed by the backend on first use, so the common case does not pay for them.
    """

    _encode_with_backend = None
    _computed_encodings = None

    def __init__(self, data, encode_with_backend, tensor_type=None):
        self._encode_with_backend = encode_with_backend
        super().__init__(data, tensor_type=tensor_type, n_sequences=1)

    @property
    def _encodings(self):
        if self._encode_with_backend is not None:
            self._encodings = self._encode_with_backend()
        return self._computed_encodings

    @_encodings.setter
    def _encodings(self, encodings):
        self._computed_encodings = encodings
        if encodings is not None:
            self._encode_with_backend = None


class LyraTokenizer(TokenizersBackend):
    r"""
    Character-level tokenizer for biological sequences: one token per residue or nucleotide.

    The vocabulary is `[PAD]` (id 0), `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`, then the alphabet's letters. Input is
    case-insensitive, whitespace (as in FASTA files or UniProt's blocks of ten) is dropped, and no special token is
    added to a single sequence (Lyra pools, it needs no CLS); a pair is joined by `[SEP]`.

    Batches made only of the alphabet's letters and padding characters are encoded by a byte lookup table, about 80x
    faster than the backend and equal to it value for value; all other input goes through the `tokenizers` backend.

    Args:
        alphabet (`str`, *optional*, defaults to the 20 canonical amino acids and `X`):
            The letters of the vocabulary, or one of `"protein"`, `"dna"` (`ACGTN`), `"rna"` (`ACGUN`) in any case.
        padding_characters (`str`, *optional*, defaults to `""`):
            Characters that stand for padding inside the data (the Gifford antibody data pads with `J`): they become
            `[PAD]` tokens with `attention_mask` 0, so the model ignores them.
        unknown (`str`, *optional*, defaults to `"unk"`):
            What to do with characters outside the alphabet: `"unk"` maps them to `[UNK]`, as every transformers
            tokenizer does; `"error"` raises a `ValueError` naming the character, its position and the sequence.
    """

    vocab_files_names = {"tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        alphabet: str = "protein",
        padding_characters: str = "",
        unknown: str = "unk",
        pad_token: str = "[PAD]",
        unk_token: str = "[UNK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        mask_token: str = "[MASK]",
        **kwargs,
    ):
        letters = alphabet_letters(alphabet)
        alphabet = alphabet.strip().lower() if alphabet.strip().lower() in ALPHABETS else alphabet
        if not letters or len(set(letters)) != len(letters) or WHITESPACE.search(letters):
            raise ValueError(
                f"`alphabet` must be distinct non-whitespace characters or {list(ALPHABETS)}, got {alphabet!r}."
            )
        padding_characters = padding_characters.upper()
        if overlap := set(padding_characters) & set(letters):
            raise ValueError(f"`padding_characters` {sorted(overlap)} are also letters of the alphabet {letters!r}.")
        if unknown not in UNKNOWN_MODES:
            raise ValueError(f"`unknown` must be one of {UNKNOWN_MODES}, got {unknown!r}.")
        self.alphabet = alphabet
        self.letters = letters
        self.padding_characters = padding_characters
        self.unknown = unknown
        self._known_characters = set(letters + letters.lower() + padding_characters + padding_characters.lower())

        specials = [str(token) for token in (pad_token, unk_token, cls_token, sep_token, mask_token)]
        vocab = {token: index for index, token in enumerate(specials + list(letters))}
        self._tokenizer = character_tokenizer(vocab, letters, padding_characters, specials)
        super().__init__(
            alphabet=alphabet,
            padding_characters=padding_characters,
            unknown=unknown,
            pad_token=pad_token,
            unk_token=unk_token,
            cls_token=cls_token,
            sep_token=sep_token,
            mask_token=mask_token,
            **kwargs,
        )
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single="$A", pair=f"$A {self.sep_token} $B:1", special_tokens=[(str(self.sep_token), self.sep_token_id)]
        )
        # Plain batches of letters skip the backend: one table lookup per byte (see `_encode_with_lookup_table`).
        self._lookup_table = lookup_table(
            [(letter, vocab[letter]) for letter in letters]
            + [(character, self.pad_token_id) for character in padding_characters]
        )
        self._vocab_size_without_added_tokens = len(vocab)

    @classmethod
    def for_alphabet(cls, alphabet: str, **kwargs) -> "LyraTokenizer":
        """A tokenizer for `"protein"`, `"dna"`, `"rna"` or a custom alphabet string."""
        return cls(alphabet=alphabet, **kwargs)

    def _check_known_characters(self, batch) -> None:
        """With `unknown="error"`, raise on the first character outside the alphabet."""
        for index, item in enumerate(batch):
            texts = item if isinstance(item, (tuple, list)) else (item,)
            for text in texts:
                text = "".join(text) if isinstance(text, (tuple, list)) else text
                unknown = set(text) - self._known_characters
                unknown = {character for character in unknown if not character.isspace()}
                if unknown:
                    position = min(text.index(character) for character in unknown)
                    raise ValueError(
                        f"Unknown character {text[position]!r} at position {position + 1} (1-based) of sequence "
                        f"{index}: not in the alphabet {self.letters!r}. Use unknown='unk' to map it to "
                        f"{self.unk_token}."
                    )

    def _encode_plus(self, text, text_pair=None, *args, is_split_into_words: bool = False, **kwargs):
        if not args and text_pair is None and not is_split_into_words:
            encoded = self._encode_with_lookup_table(text, **kwargs)
            if encoded is not None:
                return encoded
        if self.unknown == "error":
            batched = isinstance(text, (list, tuple)) and (
                not is_split_into_words or isinstance(text[0], (list, tuple))
            )
            texts = list(text) if batched else [text]
            pairs = list(text_pair) if batched and text_pair is not None else [text_pair]
            self._check_known_characters(texts if text_pair is None else list(zip(texts, pairs)))
        return super()._encode_plus(text, text_pair, *args, is_split_into_words=is_split_into_words, **kwargs)

    def _encode_with_lookup_table(
        self,
        text,
        padding_strategy: PaddingStrategy = PaddingStrategy.DO_NOT_PAD,
        truncation_strategy: TruncationStrategy = TruncationStrategy.DO_NOT_TRUNCATE,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors=None,
        return_attention_mask: bool | None = None,
        verbose: bool = True,
        **kwargs,
    ) -> BatchEncoding | None:
        """
        Encode a string or a batch of strings made only of the alphabet's letters and padding characters with a byte
        lookup table, which is several times faster than the backend's per-string path (see BENCHMARKS.md). Returns
        `None`, leaving the input to the backend, for everything else: whitespace, other characters, non-ASCII text,
        added tokens, a template that adds special tokens, and options this path does not produce (offsets,
        overflow, lengths, special-tokens or token-type masks, strides). The outputs are the backend's, value for value.
        """
        is_batched = isinstance(text, (list, tuple))
        texts = list(text) if is_batched else [text]
        codes = self._lookup_codes(texts, truncation_strategy, kwargs)
        if codes is None:
            return None
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        starts = np.cumsum(lengths) - lengths
        if truncation_strategy != TruncationStrategy.DO_NOT_TRUNCATE and max_length is not None:
            if self.truncation_side == "left":
                starts += np.maximum(lengths - max_length, 0)
            lengths = np.minimum(lengths, max_length)
        longest = int(lengths.max())
        if padding_strategy == PaddingStrategy.MAX_LENGTH and (max_length is None or longest > max_length):
            return None  # the backend leaves longer rows unpadded: let it
        width = {PaddingStrategy.LONGEST: longest, PaddingStrategy.MAX_LENGTH: max_length}.get(padding_strategy)
        if width is not None and pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        self._eventual_warn_about_too_long_sequence(range(width or longest), max_length, verbose)
        input_ids, attention_mask = self._lay_out(
            codes, starts, lengths, width, padding_side or self.padding_side, return_tensors
        )
        data = {"input_ids": input_ids}
        if return_attention_mask or (return_attention_mask is None and "attention_mask" in self.model_input_names):
            data["attention_mask"] = attention_mask
        if not is_batched and return_tensors is None:
            data = {key: value[0] for key, value in data.items()}

        options = {
            "padding_strategy": padding_strategy,
            "truncation_strategy": truncation_strategy,
            "max_length": max_length,
        }
        options.update(pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side, verbose=False)
        encode_with_backend = functools.partial(self._backend_encodings, texts, options)
        return LyraBatchEncoding(data, encode_with_backend, tensor_type=return_tensors)

    def _backend_encodings(self, texts: list, options: dict):
        """The backend's `Encoding`s of `texts` (what a lookup-table batch gives, on demand, for `.encodings`)."""
        return super()._encode_plus(texts, **options).encodings

    def _lookup_codes(self, texts: list, truncation_strategy: TruncationStrategy, kwargs: dict) -> np.ndarray | None:
        """The token ids of the texts joined, by the byte lookup table; None when this path does not apply."""
        unsupported = (
            kwargs.get("stride", 0)
            or kwargs.get("return_overflowing_tokens")
            or kwargs.get("return_special_tokens_mask")
            or kwargs.get("return_offsets_mapping")
            or kwargs.get("return_length")
            or kwargs.get("return_token_type_ids")
            or truncation_strategy == TruncationStrategy.ONLY_SECOND
        )
        if (
            unsupported
            or not texts
            or not all(isinstance(item, str) for item in texts)
            or self._tokenizer.get_vocab_size(with_added_tokens=True) != self._vocab_size_without_added_tokens
            or self._tokenizer.post_processor.num_special_tokens_to_add(False)
        ):
            return None
        joined = "".join(texts)
        if not joined.isascii():
            return None
        codes = self._lookup_table[np.frombuffer(joined.encode("ascii"), dtype=np.uint8)]
        return None if (codes == NOT_IN_TABLE).any() else codes

    def _lay_out(
        self,
        codes: np.ndarray,
        starts: np.ndarray,
        lengths: np.ndarray,
        width: int | None,
        padding_side: str,
        return_tensors,
    ):
        """The rows' input ids and attention masks: lists of each row's length (`width` None), or padded to `width`."""
        if width is None:
            input_ids = [codes[start : start + length].tolist() for start, length in zip(starts, lengths)]
            is_token = (codes != self.pad_token_id).astype(np.int64)  # padding characters encode as [PAD]
            return input_ids, [is_token[start : start + length].tolist() for start, length in zip(starts, lengths)]
        columns = np.arange(width)
        shift = width - lengths if padding_side == "left" else np.zeros_like(lengths)
        inside = (columns >= shift[:, None]) & (columns < (shift + lengths)[:, None])
        positions = np.clip(starts[:, None] + columns - shift[:, None], 0, max(len(codes) - 1, 0))
        input_ids = np.where(inside, codes[positions] if len(codes) else self.pad_token_id, self.pad_token_id)
        attention_mask = (input_ids != self.pad_token_id).astype(np.int64)
        if return_tensors is None:
            return input_ids.tolist(), attention_mask.tolist()
        return input_ids, attention_mask

    def _convert_encoding(self, encoding, *args, **kwargs):
        encoding_dict, encodings = super()._convert_encoding(encoding, *args, **kwargs)
        if self.padding_characters and "attention_mask" in encoding_dict:
            # Padding characters became [PAD] tokens: mask them like the padding the tokenizer adds itself.
            pad_id = self.pad_token_id
            encoding_dict["attention_mask"] = [
                [0 if token == pad_id else mask for token, mask in zip(ids, masks)]
                for ids, masks in zip(encoding_dict["input_ids"], encoding_dict["attention_mask"])
            ]
        return encoding_dict, encodings


__all__ = ["LyraTokenizer"]
