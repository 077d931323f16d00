"""Exact incremental scoring of substitution mutants against a wild type's cached activations (used by `lyra-scan`).

A substitution at position p changes the embedding at p only. Each PGC block's depthwise convolution (kernel k, radius
r = k // 2) widens the change by r on each side, so after the n PGC blocks the input of the first S4D layer differs
from the wild type's at most at p - R ... p + R (R = n r; 2 for the default model). That layer's convolution is
linear, so its output changes by K * du: a sum of a few shifted copies of the kernel, computed as one small grouped
convolution, instead of a new FFT convolution over the whole sequence. Everything after it is per position (GELU, the
GLU-gated projection, the residual) up to pooling and the head. For the default model at L = 237 a mutant then costs
the per-position layers of one S4D block instead of a whole forward pass. Further S4D layers run in full on every
mutant, each costing what it costs in a forward pass (its FFT convolution and projection over all L positions), so a
model with two S4D layers gains almost nothing (1.03x at L = 1,000, against 6.6x with one; BENCHMARKS.md).

The scores equal full forward passes up to float rounding (the wild type's convolution comes from an FFT, the change
from a direct sum; about 1e-6 relative in float32). Every Lyra configuration is covered (any odd PGC kernel, causal or
bidirectional, any pooling); other models, such as a checkpoint's own remote code, are scored by full forward passes
(`IncrementalScorer.unsupported` says why).
"""

import torch
from torch import nn

from .modeling_lyra import LyraForSequenceClassification, fft_length, pool_hidden_states


# Largest table of single-substitution windows (`IncrementalScorer.substitutions`) kept, in bytes: 66 MB at L = 1,000
# with a 26-token vocabulary; longer sequences compute every window afresh.
SUBSTITUTION_TABLE_BYTES = 256 * 2**20


class IncrementalScorer:
    """Scores of substitution mutants of one wild type, from the wild type's activations computed once.

        scorer = IncrementalScorer(model, wild_ids)    # (L,) token ids; attention_mask (L,) optional
        logits = scorer.score(sites, tokens)           # sites (P, k) 0-based positions, tokens (P, M, k) new token ids

    The logits are the model's, (P, M, num_labels). The windows of every single substitution (each position x each
    token) are computed once, so that the double mutants of positions more than 2R apart, the most of an all-pairs
    scan, look theirs up instead of running the PGC blocks again."""

    def __init__(self, model, wild_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        if reason := self.unsupported(model):
            raise ValueError(f"incremental scoring does not cover this model: {reason}")
        self.model = model.eval()
        backbone = model.lyra
        config = model.config
        self.device = next(model.parameters()).device
        self.length = length = len(wild_ids)
        self.radius = radius = len(backbone.pgc_layers) * (config.pgc_kernel_size // 2)
        self.attention_mask = (torch.ones(length, dtype=torch.long) if attention_mask is None else attention_mask.long()).to(self.device)
        # The wild type with `2R` padding positions on each side: a window of 4R + 1 around any position then fits, and
        # the padding (mask 0) feeds the convolutions zeros there, exactly as their own zero padding at the ends does.
        margin = 2 * radius
        self.padded_ids = nn.functional.pad(wild_ids.to(self.device), (margin, margin), value=config.pad_token_id or 0)
        self.padded_mask = nn.functional.pad(self.attention_mask, (margin, margin))
        first = backbone.layers[0]
        # Mean pooling after a single S4D layer is a sum over positions of the residual stream, so the wild type's
        # part of it is summed once and each mutant adds only its changes (`score`).
        self.sum_pooled = config.pooling == "mean" and config.num_s4d_layers == 1
        with torch.no_grad():
            hidden = self.pgc_stack(self.padded_ids[None], self.padded_mask[None])[0]  # (L + 4R, H)
            self.wild_hidden = hidden[margin : margin + length]
            mask = self.padded_mask[:, None].to(hidden.dtype)
            self.wild_mixer_input = first.norm(hidden) * mask  # u of the first S4D layer, 0 beyond the ends
            self.wild_convolved = first.mixer.convolve(first.norm(self.wild_hidden)[None], self.attention_mask[None, :, None])[0]
            self.lag_bank = self.kernel_by_lag(first.mixer, length, radius)
            self.pooling_weights = self.attention_mask.to(hidden.dtype) / self.attention_mask.sum()
            self.wild_pooled = self.pooling_weights @ self.wild_hidden  # (H,)
            self.substitutions = None
            vocab_size = backbone.embeddings.num_embeddings
            if 2 * length * vocab_size * (2 * radius + 1) * hidden.shape[-1] * hidden.element_size() <= SUBSTITUTION_TABLE_BYTES:
                positions = torch.arange(length, device=self.device).repeat_interleave(vocab_size)[:, None]
                tokens = torch.arange(vocab_size, device=self.device).repeat(length)[:, None]
                changed, delta, _, _ = self.windows(positions, tokens)
                self.substitutions = (changed.view(length, vocab_size, 2 * radius + 1, -1), delta.view(length, vocab_size, 2 * radius + 1, -1))

    @staticmethod
    def unsupported(model) -> str | None:
        """Why the shortcut cannot score `model` (None when it can)."""
        if not isinstance(model, LyraForSequenceClassification):
            return f"{type(model).__name__} is not a Lyra sequence regression or classification head of lyra_hf"
        return None

    def pgc_stack(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Embedding and PGC blocks, as `LyraModel.forward` runs them: (batch, length, H)."""
        backbone = self.model.lyra
        hidden = backbone.embeddings(input_ids)
        for pgc in backbone.pgc_layers:
            output = pgc(hidden, mask[..., None])
            hidden = hidden + output if self.model.config.pgc_residual else output
        return hidden

    @staticmethod
    def kernel_by_lag(mixer, length: int, radius: int) -> torch.Tensor:
        """The S4D layer's response to a unit input at lag l = t - s, D included at l = 0, for l from -(L - 1 + R) to
        L - 1 + R (0 beyond +-(L - 1)), shape (H, 2 (L - 1 + R) + 1): the same circular kernel that the FFT path uses."""
        n = fft_length(length)
        circular = mixer.circular_kernel(length, n, torch.promote_types(mixer.D.dtype, torch.float32))  # (H, n)
        widest = length - 1 + radius
        lags = torch.arange(-(length - 1), length, device=circular.device)
        bank = circular.new_zeros(circular.shape[0], 2 * widest + 1)
        bank[:, lags + widest] = circular[:, lags % n]
        bank[:, widest] += mixer.D.to(bank.dtype)
        return bank

    def windows(self, positions: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """For mutants putting `tokens` (B, k) at `positions` (B, k): the PGC stack's output on the 2R + 1 positions
        around each substitution, run on a window of 4R + 1 that holds all of the mutant's substitutions falling in
        it (its middle outputs are exact), and the change `du` it makes to the first S4D layer's input there, zero
        where a position lies beyond the ends or was already counted by an earlier window of the same mutant.
        Returns changed (B, k, 2R + 1, H), du (B, k, 2R + 1, H), where (B, k, 2R + 1) and keep (B, k, 2R + 1)."""
        first = self.model.lyra.layers[0]
        batch, count = positions.shape
        radius, length, margin = self.radius, self.length, 2 * self.radius
        ids = self.padded_ids.repeat(batch, 1)
        ids[torch.arange(batch, device=self.device)[:, None], positions + margin] = tokens
        window = positions[..., None] + torch.arange(2 * margin + 1, device=self.device)  # padded coordinates
        hidden = self.pgc_stack(ids.gather(1, window.flatten(1)).view(batch * count, -1), self.padded_mask[window].flatten(0, 1))
        changed = hidden[:, radius : radius + 2 * radius + 1].unflatten(0, (batch, count))
        where = positions[..., None] - radius + torch.arange(2 * radius + 1, device=self.device)  # original coordinates
        keep = (where >= 0) & (where < length)
        for later in range(1, count):
            for earlier in range(later):
                keep[:, later] &= (where[:, later] - positions[:, earlier, None]).abs() > radius
        dtype = self.wild_mixer_input.dtype
        mixer_input = first.norm(changed).to(dtype) * self.padded_mask[where + margin][..., None].to(dtype)
        delta = (mixer_input - self.wild_mixer_input[where + margin]) * keep[..., None]
        return changed, delta, where, keep

    @torch.no_grad()
    def score(self, sites: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of mutants grouped by the positions they change: mutant (i, j) puts `tokens[i, j, :]` at the
        distinct positions `sites[i, :]`. `sites` is (P, k) and `tokens` (P, M, k) (pad a short group with the wild
        type's own tokens); returns (P, M, num_labels)."""
        model, backbone = self.model, self.model.lyra
        mixer = backbone.layers[0].mixer
        sites, tokens = sites.to(self.device).long(), tokens.to(self.device).long()
        (num_sites, count), per_site = sites.shape, tokens.shape[1]
        batch, radius, length = num_sites * per_site, self.radius, self.length
        positions, tokens = sites[:, None].expand(num_sites, per_site, count).reshape(batch, count), tokens.reshape(batch, count)

        # 1. The PGC stack's output and the first S4D layer's input change only around each substitution: looked up
        # for substitutions more than 2R from the others, computed on shared windows for those closer.
        near = torch.zeros(batch, dtype=torch.bool, device=self.device)
        for later in range(1, count):
            for earlier in range(later):
                near |= (positions[:, later] - positions[:, earlier]).abs() <= 2 * radius
        if self.substitutions is None or near.all():
            changed, delta, where, keep = self.windows(positions, tokens)
        else:
            changed, delta = (table[positions, tokens] for table in self.substitutions)
            where = positions[..., None] - radius + torch.arange(2 * radius + 1, device=self.device)
            keep = (where >= 0) & (where < length)
            if near.any():
                changed[near], delta[near], _, keep[near] = self.windows(positions[near], tokens[near])
        hidden_size = delta.shape[-1]
        where, keep, changed, delta = where.flatten(1), keep.flatten(1), changed.flatten(1, 2), delta.flatten(1, 2)  # C = k (2R + 1)

        # 2. The first S4D layer's output (with the D skip) changes by the sum over those positions of K[t - s] du[s]:
        # per channel and site, the (M, C) changes of its mutants times the (C, L) kernel rows shifted to its
        # positions, one batched matrix product that starts from the wild type's output, in the (H, batch, L) layout.
        widest = (self.lag_bank.shape[1] - 1) // 2
        site_where = where.view(num_sites, per_site, -1)[:, 0]  # (P, C): the same positions for a site's mutants
        lags = (widest - site_where)[..., None] + torch.arange(length, device=self.device)
        # Per site, C rows of K[t - s] for t in [0, L), and the wild type's output as one more row that every mutant
        # takes once (a last column of ones): the product is then the mutant's output itself.
        rows = torch.cat([self.lag_bank[:, lags], self.wild_convolved.T[:, None, None].expand(-1, num_sites, 1, -1)], dim=2)
        delta = delta.view(num_sites, per_site, -1, hidden_size).permute(3, 0, 1, 2)
        delta = torch.cat([delta, delta.new_ones(hidden_size, num_sites, per_site, 1)], dim=3)
        convolved = torch.bmm(delta.reshape(hidden_size * num_sites, per_site, -1), rows.view(hidden_size * num_sites, -1, length))

        # 3. Per position from here: the rest of the first S4D layer (GELU, projection, GLU) and its residual. The
        # projection reads the (H, B L) activations as their transpose, which BLAS takes as it is, and writes the
        # (B L, 2H) layout whose bias and GLU run along rows.
        activated = mixer.activation(convolved).view(hidden_size, batch * length)
        projected = torch.addmm(mixer.output_linear.bias, activated.T, mixer.output_linear.weight.T)
        mixed = nn.functional.glu(projected, dim=-1).view(batch, length, hidden_size)
        changed_hidden = changed - self.wild_hidden[where.clamp(0, length - 1)]  # (B, C, H)
        if self.sum_pooled:
            # Mean over real positions of wild hidden + its changes + the layer's output.
            weights = self.pooling_weights[where.clamp(0, length - 1)] * keep
            pooled = self.wild_pooled + (weights[..., None] * changed_hidden).sum(1) + torch.matmul(self.pooling_weights, mixed)
            return model.score(pooled).view(num_sites, per_site, -1)
        hidden_states = (self.wild_hidden + mixed).view(batch * length, hidden_size)
        rows, columns = keep.nonzero(as_tuple=True)
        hidden_states.index_add_(0, rows * length + where[rows, columns], changed_hidden[rows, columns])
        hidden_states = hidden_states.view(batch, length, hidden_size)
        attention_mask = self.attention_mask.expand(batch, length)
        for layer in backbone.layers[1:]:
            hidden_states = layer(hidden_states, attention_mask[..., None])
        logits = model.score(pool_hidden_states(hidden_states, attention_mask, model.config.pooling))
        return logits.view(num_sites, per_site, -1)


__all__ = ["IncrementalScorer"]
