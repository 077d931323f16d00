"""Exact incremental scoring of substitution mutants against a wild type's cached activations (used by `lyra-scan`).

A substitution at position p changes the embedding at p only. Each PGC block's depthwise convolution (kernel k, radius
r = k // 2) widens the change by r on each side, so after the n PGC blocks the input of the first S4D layer differs
from the wild type's at most at p - R ... p + R (R = n r; 2 for the default model). That layer's convolution is
linear, so its output changes by K * du: a sum of a few shifted copies of the kernel, one batched matrix product,
instead of a new FFT convolution over the whole sequence. Everything after it is per position (GELU, the GLU-gated
projection, the residual) up to pooling and the head. For the default model a mutant then costs the per-position layers
of one S4D block instead of a whole forward pass.

A causal S4D layer (the default) saves more: its output is the wild type's before a mutant's first change, so only
positions from p - R on are computed; and with mean pooling a double mutant (a < b) equals its single mutant at a
before b - R, whose pooled part is summed once per position a and letter (`single_prefixes`), so only positions from
b - R on are computed per double mutant: about a third of the sequence on average over all pairs, against all of it
for a bidirectional layer. Further S4D layers run in full on every mutant, each costing what it costs in a forward pass
(its FFT convolution and projection over all L positions), so a model with two S4D layers gains little (BENCHMARKS.md).

The scores equal full forward passes up to float rounding (the wild type's convolution comes from an FFT, the change
from a direct sum; about 1e-6 relative in float32). Every Lyra configuration is covered (any odd PGC kernel, causal or
bidirectional, any pooling); other models, such as a checkpoint's own remote code, are scored by full forward passes
(`IncrementalScorer.unsupported` says why).
"""

import math

import torch
from torch import nn

from .modeling_lyra import LyraForSequenceClassification, fft_length, pool_hidden_states


# Largest table of single-substitution windows (`IncrementalScorer.substitutions`) kept, in bytes: 66 MB at L = 1,000
# with a 26-token vocabulary; longer sequences compute every window afresh.
SUBSTITUTION_TABLE_BYTES = 256 * 2**20
# Positions whose `IncrementalScorer.single_prefixes` are kept: an all-pairs scan asks for one first position after
# the other (6.7 MB each at L = 1,000).
SINGLE_PREFIX_CACHE_SIZE = 4


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
        self.attention_mask = (
            torch.ones(length, dtype=torch.long) if attention_mask is None else attention_mask.long()
        ).to(self.device)
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
            self.wild_convolved = first.mixer.convolve(
                first.norm(self.wild_hidden)[None], self.attention_mask[None, :, None]
            )[0]
            self.lag_bank = self.kernel_by_lag(first.mixer, length, radius)
            self.pooling_weights = self.attention_mask.to(hidden.dtype) / self.attention_mask.sum()
            self.wild_pooled = self.pooling_weights @ self.wild_hidden  # (H,)
            # A causal S4D layer's output changes only from the first changed input on: before it every mutant keeps
            # the wild type's output (`score` computes positions from there), summed for mean pooling in prefixes.
            self.causal = not config.bidirectional
            mixer = first.mixer
            wild_mixed = mixer.position_wise(self.wild_convolved, hidden.dtype)
            self.wild_output = self.wild_hidden + wild_mixed
            self.wild_mixed_prefix = nn.functional.pad(
                torch.cumsum(self.pooling_weights[:, None] * wild_mixed, 0), (0, 0, 1, 0)
            )
            self.single_prefix_cache = {}
            # Site effects and a prior are sums over positions: the wild type's, and each substitution's change of it.
            self.wild_ids = wild_ids.to(self.device)
            self.additive_terms = [term for term in (model.site_effects, model.prior) if term is not None]
            self.wild_additive = sum(
                (term(self.wild_ids[None], self.attention_mask[None])[0] for term in self.additive_terms), 0.0
            )
            # The table of single-substitution windows, for multiple mutants, is filled one position at a time when a
            # mutant first needs it (`substitutions_at`): worker processes each fill what their own mutants use, in
            # parallel, and a position's rows come from the same batch of V windows whichever process computes them,
            # so the scores do not depend on how mutants were shared out.
            self.substitutions = self.known_positions = None
            table_shape = (length, backbone.embeddings.num_embeddings, 2 * radius + 1, hidden.shape[-1])
            if 2 * math.prod(table_shape) * hidden.element_size() <= SUBSTITUTION_TABLE_BYTES:
                self.substitutions = tuple(hidden.new_empty(table_shape) for _ in range(2))  # changed, du
                self.known_positions = torch.zeros(length, dtype=torch.bool, device=self.device)

    @staticmethod
    def unsupported(model) -> str | None:
        """Why the shortcut cannot score `model` (None when it can)."""
        if not isinstance(model, LyraForSequenceClassification):
            return f"{type(model).__name__} is not a Lyra sequence regression or classification head of lyra_hf"
        return None

    def pgc_stack(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Embedding and PGC blocks, as `LyraModel.forward` runs them: (batch, length, H)."""
        backbone = self.model.lyra
        return backbone.pgc_stack(backbone.embeddings(input_ids), mask[..., None])

    @staticmethod
    def kernel_by_lag(mixer, length: int, radius: int) -> torch.Tensor:
        """The S4D layer's response to a unit input at lag l = t - s, D included at l = 0, for l from -(L - 1 + R) to
        L - 1 + R (0 beyond +-(L - 1)), shape (H, 2 (L - 1 + R) + 1): the same circular kernel that the FFT path
        uses."""
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
        hidden = self.pgc_stack(
            ids.gather(1, window.flatten(1)).view(batch * count, -1), self.padded_mask[window].flatten(0, 1)
        )
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

    def changes(self, positions: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The PGC stack's output and the first S4D layer's input around each substitution of mutants putting
        `tokens` (B, k) at `positions` (B, k): for multiple mutants, looked up for substitutions more than 2R from the
        others and computed on shared windows for those closer; for single mutants (each window needed once)
        computed. Returns `windows`' four, flattened to C = k (2R + 1) positions a mutant:
        changed (B, C, H), du (B, C, H), where (B, C), keep (B, C)."""
        batch, count = positions.shape
        near = torch.zeros(batch, dtype=torch.bool, device=self.device)
        for later in range(1, count):
            for earlier in range(later):
                near |= (positions[:, later] - positions[:, earlier]).abs() <= 2 * self.radius
        if self.substitutions is None or count == 1 or near.all():
            changed, delta, where, keep = self.windows(positions, tokens)
        else:
            self.substitutions_at(positions[~near].unique())
            changed, delta = (table[positions, tokens] for table in self.substitutions)
            where = positions[..., None] - self.radius + torch.arange(2 * self.radius + 1, device=self.device)
            keep = (where >= 0) & (where < self.length)
            if near.any():
                changed[near], delta[near], _, keep[near] = self.windows(positions[near], tokens[near])
        return changed.flatten(1, 2), delta.flatten(1, 2), where.flatten(1), keep.flatten(1)

    def substitutions_at(self, positions: torch.Tensor) -> None:
        """Fill the table of single-substitution windows (`windows` of every token) at `positions` not filled yet."""
        vocab_size = self.substitutions[0].shape[1]
        tokens = torch.arange(vocab_size, device=self.device)[:, None]
        for position in positions[~self.known_positions[positions]].tolist():
            changed, delta, _, _ = self.windows(torch.full_like(tokens, position), tokens)
            self.substitutions[0][position], self.substitutions[1][position] = changed[:, 0], delta[:, 0]
            self.known_positions[position] = True

    def mixer_output(self, where: torch.Tensor, delta: torch.Tensor, num_sites: int, start: int) -> torch.Tensor:
        """The first S4D layer's mixer output (before the residual) at positions [start, L) of mutants whose input
        changes by `delta` (B, C, H) at `where` (B, C), B = num_sites x M mutants sharing their positions per site:
        (B, L - start, H)."""
        mixer = self.model.lyra.layers[0].mixer
        (batch, _, hidden_size), length = delta.shape, self.length
        per_site, span = batch // num_sites, length - start
        # The output (with the D skip) changes by the sum over the changed positions of K[t - s] du[s]: per channel
        # and site, the (M, C) changes of its mutants times the (C, span) kernel rows shifted to its positions, and
        # the wild type's output as one more row that every mutant takes once (a last column of ones), so that one
        # batched matrix product, in the (H, batch, span) layout, gives the mutants' outputs themselves.
        widest = (self.lag_bank.shape[1] - 1) // 2
        site_where = where.view(num_sites, per_site, -1)[:, 0]  # (P, C): the same positions for a site's mutants
        lags = (widest - site_where)[..., None] + torch.arange(start, length, device=self.device)
        wild_row = self.wild_convolved[start:].T[:, None, None].expand(-1, num_sites, 1, -1)
        rows = torch.cat([self.lag_bank[:, lags], wild_row], dim=2)
        delta = delta.view(num_sites, per_site, -1, hidden_size).permute(3, 0, 1, 2)
        delta = torch.cat([delta, delta.new_ones(hidden_size, num_sites, per_site, 1)], dim=3)
        convolved = torch.bmm(
            delta.reshape(hidden_size * num_sites, per_site, -1), rows.view(hidden_size * num_sites, -1, span)
        )
        # Per position from here. The projection reads the (H, B span) activations as their transpose, which BLAS takes
        # as it is, and writes the (B span, 2H) layout whose bias and GLU run along rows.
        mixed = mixer.position_wise(convolved.view(hidden_size, batch * span).T, delta.dtype)
        return mixed.view(batch, span, hidden_size)

    @torch.no_grad()
    def single_prefixes(self, position: int) -> torch.Tensor:
        """For each token x at `position`, the pooling-weighted sum of the single mutant's mixer output over the
        positions before t, for t from 0 to L: (V, L + 1, H). Kept for the last few positions asked for."""
        if position not in self.single_prefix_cache:
            vocab_size = self.model.lyra.embeddings.num_embeddings
            tokens = torch.arange(vocab_size, device=self.device)[:, None]
            _, delta, where, _ = self.changes(torch.full_like(tokens, position), tokens)
            start = max(0, position - self.radius)
            weighted = self.pooling_weights[start:, None] * self.mixer_output(where, delta, 1, start)
            after = self.wild_mixed_prefix[start] + torch.cumsum(weighted, 1)
            table = torch.cat([self.wild_mixed_prefix[: start + 1].expand(vocab_size, -1, -1), after], dim=1)
            if len(self.single_prefix_cache) >= SINGLE_PREFIX_CACHE_SIZE:
                self.single_prefix_cache.pop(next(iter(self.single_prefix_cache)))
            self.single_prefix_cache[position] = table
        return self.single_prefix_cache[position]

    @torch.no_grad()
    def head_output(self, logits: torch.Tensor, positions: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The head's output for the mutants putting `tokens` at `positions` (B, k), from its pooled term `logits`
        (B, labels): plus the site-effects and prior terms of each (the wild type's, changed at its substituted
        positions), then through the global-epistasis curve, for a model that has them. A substitution the prior has
        no score for is refused, naming it."""
        if self.additive_terms:
            masked = self.attention_mask[positions][..., None]  # padding positions add nothing
            for term in self.additive_terms:
                change = torch.where(
                    masked.bool(), term.rows(positions, tokens) - term.rows(positions, self.wild_ids[positions]), 0.0
                )
                if term is self.model.prior:
                    term.refuse_unscored(positions, tokens, change[..., 0])
                logits = logits + change.sum(1)
            logits = logits + self.wild_additive
        curve = self.model.global_epistasis
        return logits if curve is None else curve(logits)

    def score(self, sites: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of mutants grouped by the positions they change: mutant (i, j) puts `tokens[i, j, :]` at the
        distinct positions `sites[i, :]`. `sites` is (P, k) and `tokens` (P, M, k) (pad a short group with the wild
        type's own tokens); returns (P, M, num_labels)."""
        model, backbone = self.model, self.model.lyra
        sites, tokens = sites.to(self.device).long(), tokens.to(self.device).long()
        (num_sites, count), per_site = sites.shape, tokens.shape[1]
        batch, radius, length = num_sites * per_site, self.radius, self.length
        positions, tokens = (
            sites[:, None].expand(num_sites, per_site, count).reshape(batch, count),
            tokens.reshape(batch, count),
        )
        changed, delta, where, keep = self.changes(positions, tokens)
        changed_hidden = changed - self.wild_hidden[where.clamp(0, length - 1)]  # (B, C, H)

        if self.sum_pooled:
            # Mean pooling: the wild type's pooled hidden states, the changes of the hidden states themselves, and the
            # mean of the layer's output. A causal layer's output is the wild type's before a mutant's first change,
            # and a double mutant's equals its first substitution's single mutant before its second change: from the
            # batch's earliest second change on the output is computed, before it summed in `single_prefixes`.
            weights = self.pooling_weights[where.clamp(0, length - 1)] * keep
            pooled = self.wild_pooled + (weights[..., None] * changed_hidden).sum(1)
            if not self.causal:
                start, before = 0, self.wild_mixed_prefix[0]
            elif count == 2:
                first, second = positions.min(1), positions.max(1).values
                start = max(0, int(second.min()) - radius)
                first_tokens = tokens.gather(1, first.indices[:, None])[:, 0]
                before = torch.empty_like(pooled)
                for position in first.values.unique().tolist():
                    rows = first.values == position
                    before[rows] = self.single_prefixes(position)[first_tokens[rows], start]
            else:
                start = max(0, int(sites.min()) - radius)
                before = self.wild_mixed_prefix[start]
            mixed = self.mixer_output(where, delta, num_sites, start)
            pooled = pooled + before + torch.matmul(self.pooling_weights[start:], mixed)
            return self.head_output(model.score(pooled), positions, tokens).view(num_sites, per_site, -1)

        # Otherwise every position's hidden state, the wild type's output before the batch's first change (causal).
        start = max(0, int(sites.min()) - radius) if self.causal else 0
        mixed = self.mixer_output(where, delta, num_sites, start)
        prefix = self.wild_output[:start].expand(batch, start, -1)
        hidden_states = torch.cat([prefix, self.wild_hidden[start:] + mixed], dim=1).flatten(0, 1)
        rows, columns = keep.nonzero(as_tuple=True)
        hidden_states.index_add_(0, rows * length + where[rows, columns], changed_hidden[rows, columns])
        hidden_states = hidden_states.view(batch, length, -1)
        attention_mask = self.attention_mask.expand(batch, length)
        for layer in backbone.layers[1:]:
            hidden_states = layer(hidden_states, attention_mask[..., None])
        logits = model.score(pool_hidden_states(hidden_states, attention_mask, model.config.pooling))
        return self.head_output(logits, positions, tokens).view(num_sites, per_site, -1)


__all__ = ["IncrementalScorer"]
