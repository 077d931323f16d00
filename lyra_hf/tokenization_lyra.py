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

import re

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers.tokenization_utils_tokenizers import TokenizersBackend


ALPHABETS = {
    "protein": "ACDEFGHIKLMNPQRSTVWYX",  # the 20 canonical residues and X (unknown residue)
    "dna": "ACGTN",
    "rna": "ACGUN",
}
UNKNOWN_MODES = ("unk", "error")
WHITESPACE = re.compile(r"\s")


class LyraTokenizer(TokenizersBackend):
    r"""
    Character-level tokenizer for biological sequences: one token per residue or nucleotide.

    The vocabulary is `[PAD]` (id 0), `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`, then the alphabet's letters. Input is
    case-insensitive, whitespace (as in FASTA files or UniProt's blocks of ten) is dropped, and no special token is
    added to a single sequence (Lyra pools, it needs no CLS); a pair is joined by `[SEP]`.

    Args:
        alphabet (`str`, *optional*, defaults to the 20 canonical amino acids and `X`):
            The letters of the vocabulary, or one of `"protein"`, `"dna"` (`ACGTN`), `"rna"` (`ACGUN`).
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
        letters = ALPHABETS.get(alphabet, alphabet).upper()
        if not letters or len(set(letters)) != len(letters) or WHITESPACE.search(letters):
            raise ValueError(f"`alphabet` must be distinct non-whitespace characters or {list(ALPHABETS)}, got {alphabet!r}.")
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
        self._tokenizer = Tokenizer(WordLevel(vocab, unk_token=str(unk_token)))
        # Upper-case the letters that have a case, drop whitespace, and turn padding characters into the pad token.
        rules = [normalizers.Replace(Regex(r"\s+"), "")]
        rules += [normalizers.Replace(letter.lower(), letter) for letter in letters if letter.lower() != letter]
        for character in padding_characters:
            rules += [normalizers.Replace(character, str(pad_token))]
            if character.lower() != character:
                rules += [normalizers.Replace(character.lower(), str(pad_token))]
        self._tokenizer.normalizer = normalizers.Sequence(rules)
        # Every character is a token, except special tokens written out in full (such as the padding replacement).
        special_pattern = "|".join(re.escape(token) for token in specials)
        self._tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(f"{special_pattern}|."), behavior="isolated")
        self._tokenizer.decoder = decoders.Fuse()
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
        if self.unknown == "error":
            batched = isinstance(text, (list, tuple)) and (not is_split_into_words or isinstance(text[0], (list, tuple)))
            texts = list(text) if batched else [text]
            pairs = list(text_pair) if batched and text_pair is not None else [text_pair]
            self._check_known_characters(texts if text_pair is None else list(zip(texts, pairs)))
        return super()._encode_plus(text, text_pair, *args, is_split_into_words=is_split_into_words, **kwargs)

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
