"""A masked protein language model's zero-shot prior (ESM-1v, ESM-2 or any model `AutoModelForMaskedLM` loads), as
Meier et al. (2021) score substitutions:

- masked marginals: each position masked in turn, a substitution's score `log p(new letter) - log p(wild type's
  letter)` at that position; one forward pass per position, in batches of positions;
- wild-type marginals: the same log ratio from one forward pass over the unmasked wild type.
"""

import numpy as np
import torch

from .table import PriorTable


METHODS = ("masked-marginals", "wild-type-marginals")


def residue_token_positions(tokenizer, sequence: str) -> tuple[list[int], list[int]]:
    """The wild type's token ids (with the model's special tokens) and the index of each residue's token: character
    tokenizers (ESM) take the sequence as it is, word tokenizers (ProtBERT) with spaces between residues."""
    residue_ids = tokenizer.convert_tokens_to_ids(list(sequence))
    if tokenizer.unk_token_id in residue_ids:
        raise ValueError(
            f"the language model's tokenizer has no token for {sequence[residue_ids.index(tokenizer.unk_token_id)]!r} "
            "of the wild type."
        )
    for text in (sequence, " ".join(sequence)):
        ids = tokenizer(text)["input_ids"]
        for start in range(len(ids) - len(residue_ids) + 1):
            if ids[start : start + len(residue_ids)] == residue_ids:
                return ids, list(range(start, start + len(residue_ids)))
    raise ValueError("the language model's tokenizer does not give one token per residue of the wild type.")


@torch.no_grad()
def language_model_prior(
    model,
    tokenizer,
    sequence: str,
    letters: str,
    method: str = "masked-marginals",
    batch_size: int = 16,
    device: str = "cpu",
) -> PriorTable:
    """The prior of `sequence`'s substitutions to `letters` (see the module's docstring); letters the language model
    has no token for get no score (NaN)."""
    sequence = sequence.strip().upper()
    ids, positions = residue_token_positions(tokenizer, sequence)
    vocabulary = tokenizer.get_vocab()
    letter_ids = [vocabulary.get(letter) for letter in letters]
    known = [index for index, token in enumerate(letter_ids) if token is not None]
    model = model.to(device).eval()
    log_probabilities = np.empty((len(sequence), len(letters)))
    log_probabilities[:] = np.nan
    if method == "wild-type-marginals":
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, positions]
        rows = [(range(len(sequence)), logits.log_softmax(-1).cpu().numpy())]
    else:
        rows = []
        for start in range(0, len(sequence), batch_size):
            chosen = range(start, min(start + batch_size, len(sequence)))
            batch = torch.tensor([ids] * len(chosen), device=device)
            batch[torch.arange(len(chosen)), [positions[index] for index in chosen]] = tokenizer.mask_token_id
            logits = model(input_ids=batch).logits[torch.arange(len(chosen)), [positions[index] for index in chosen]]
            rows.append((chosen, logits.log_softmax(-1).cpu().numpy()))
    for chosen, values in rows:
        log_probabilities[np.array(chosen)[:, None], np.array(known)] = values[
            :, [letter_ids[index] for index in known]
        ]
    wild = np.array([vocabulary[letter] for letter in sequence])
    wild_log_probability = np.array(
        [values[row, wild[index]] for chosen, values in rows for row, index in enumerate(chosen)]
    )
    return PriorTable(
        sequence, letters, log_probabilities - wild_log_probability[:, None], f"{type(model).__name__} {method}"
    )
