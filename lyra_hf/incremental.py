"""Exact incremental scoring of substitution mutants against a wild type's cached activations (used by `lyra-scan`).

A substitution at position p changes the embedding at p only. Each PGC block's depthwise convolution (kernel k, radius
r = k // 2) widens the change by r on each side, so after the n PGC blocks the input of the first S4D layer differs
from the wild type's at most at p - R ... p + R (R = n r; 2 for the default model). That layer's convolution is
linear, so its output changes by K * du: a sum of a few shifted copies of the kernel, computed as one small grouped
convolution, instead of a new FFT convolution over the whole sequence. Everything after it is per position (GELU, the
GLU-gated projection, the residual) up to pooling and the head; further S4D layers run in full. For the default model
at L = 237 a mutant then costs the per-position layers of one S4D block instead of a whole forward pass.

The scores equal full forward passes up to float rounding (the wild type's convolution comes from an FFT, the change
from a direct sum; about 1e-6 relative in float32). Every Lyra configuration is covered (any odd PGC kernel, causal or
bidirectional, any pooling); other models, such as a checkpoint's own remote code, are scored by full forward passes
(`IncrementalScorer.unsupported` says why).
"""

import torch
from torch import nn

from .modeling_lyra import LyraForSequenceClassification, fft_length, pool_hidden_states


class IncrementalScorer:
    """Scores of substitution mutants of one wild type, from the wild type's activations computed once.

        scorer = IncrementalScorer(model, wild_ids)    # (L,) token ids; attention_mask (L,) optional
        logits = scorer.score(sites, tokens)           # sites (P, k) 0-based positions, tokens (P, M, k) new token ids

    The logits are the model's, (P, M, num_labels)."""

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
        with torch.no_grad():
            hidden = self.pgc_stack(self.padded_ids[None], self.padded_mask[None])[0]  # (L + 4R, H)
            self.wild_hidden = hidden[margin : margin + length]
            mask = self.padded_mask[:, None].to(hidden.dtype)
            self.wild_mixer_input = first.norm(hidden) * mask  # u of the first S4D layer, 0 beyond the ends
            self.wild_convolved = first.mixer.convolve(first.norm(self.wild_hidden)[None], self.attention_mask[None, :, None])[0]
            self.lag_bank = self.kernel_by_lag(first.mixer, length, radius)

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
        L - 1 + R (0 beyond +-(L - 1)), shape (2 (L - 1 + R) + 1, H): the same circular kernel that the FFT path uses."""
        n = fft_length(length)
        circular = mixer.circular_kernel(length, n, torch.promote_types(mixer.D.dtype, torch.float32))  # (H, n)
        widest = length - 1 + radius
        lags = torch.arange(-(length - 1), length, device=circular.device)
        bank = circular.new_zeros(circular.shape[0], 2 * widest + 1)
        bank[:, lags + widest] = circular[:, lags % n]
        bank[:, widest] += mixer.D.to(bank.dtype)
        return bank

    @torch.no_grad()
    def score(self, sites: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of mutants grouped by the positions they change: mutant (i, j) puts `tokens[i, j, :]` at the
        distinct positions `sites[i, :]`. `sites` is (P, k) and `tokens` (P, M, k) (pad a short group with the wild
        type's own tokens); returns (P, M, num_labels)."""
        model, backbone = self.model, self.model.lyra
        first, mixer = backbone.layers[0], backbone.layers[0].mixer
        sites, tokens = sites.to(self.device).long(), tokens.to(self.device).long()
        (num_sites, count), per_site = sites.shape, tokens.shape[1]
        batch = num_sites * per_site
        radius, length, margin = self.radius, self.length, 2 * self.radius
        positions = sites[:, None].expand(num_sites, per_site, count).reshape(batch, count)

        # 1. The PGC stack on a window of 4R + 1 around each substitution (holding all of the mutant's substitutions
        # that fall in it); its middle 2R + 1 outputs are exact.
        ids = self.padded_ids.repeat(batch, 1)
        ids[torch.arange(batch, device=self.device)[:, None], positions + margin] = tokens.reshape(batch, count)
        window = positions[..., None] + torch.arange(2 * margin + 1, device=self.device)  # padded coordinates
        hidden = self.pgc_stack(ids.gather(1, window.flatten(1)).view(batch * count, -1), self.padded_mask[window].flatten(0, 1))
        changed = hidden[:, radius : radius + 2 * radius + 1].unflatten(0, (batch, count))  # (B, k, 2R + 1, H)
        where = sites[..., None] - radius + torch.arange(2 * radius + 1, device=self.device)  # (P, k, 2R + 1), original coordinates
        # A position two windows share counts once (the first window's); positions beyond the ends change nothing.
        keep = (where >= 0) & (where < length)
        for later in range(1, count):
            for earlier in range(later):
                keep[:, later] &= (where[:, later] - sites[:, earlier, None]).abs() > radius
        where, keep = where.flatten(1), keep.flatten(1)  # (P, C) with C = k (2R + 1)

        # 2. The first S4D layer's input changes by du on those positions, and its output (with the D skip) by
        # sum over them of K[t - s] du[s]: per channel, the (M, C) changes of a site's mutants times the (C, L)
        # kernel rows shifted to the site's positions, one batched matrix product. From here the layout is
        # (H, batch, L), so that the position-wise projection is one matrix product without transposed copies.
        dtype = self.wild_mixer_input.dtype
        mixer_input = first.norm(changed).to(dtype).flatten(1, 2) * self.padded_mask[where + margin].repeat_interleave(per_site, 0)[..., None]
        delta = (mixer_input - self.wild_mixer_input[where + margin].repeat_interleave(per_site, 0)) * keep.repeat_interleave(per_site, 0)[..., None]
        hidden_size = delta.shape[-1]
        widest = (self.lag_bank.shape[1] - 1) // 2
        shifted = self.lag_bank.unfold(1, length, 1).index_select(1, (widest - where).flatten())  # (H, P C, L)
        delta = delta.view(num_sites, per_site, -1, hidden_size).permute(3, 0, 1, 2).reshape(hidden_size * num_sites, per_site, -1)
        response = torch.bmm(delta, shifted.view(hidden_size * num_sites, -1, length))  # (H P, M, L)
        convolved = self.wild_convolved.T[:, None] + response.view(hidden_size, batch, length)

        # 3. Per position from here: the rest of the first S4D layer and its residual, then the other layers in full.
        activated = mixer.activation(convolved).view(hidden_size, batch * length)
        projected = torch.addmm(mixer.output_linear.bias[:, None], mixer.output_linear.weight, activated)
        value, gate = projected.chunk(2)
        hidden_states = (self.wild_hidden.T[:, None] + (value * gate.sigmoid()).view(hidden_size, batch, length)).view(hidden_size, -1)
        changed_hidden = changed.flatten(1, 2) - self.wild_hidden[where.clamp(0, length - 1)].repeat_interleave(per_site, 0)
        rows, columns = keep.repeat_interleave(per_site, 0).nonzero(as_tuple=True)
        hidden_states.index_add_(1, rows * length + where.repeat_interleave(per_site, 0)[rows, columns], changed_hidden[rows, columns].T)
        hidden_states = hidden_states.view(hidden_size, batch, length).permute(1, 2, 0)  # (B, L, H), a view
        attention_mask = self.attention_mask.expand(batch, length)
        for layer in backbone.layers[1:]:
            hidden_states = layer(hidden_states, attention_mask[..., None])
        logits = model.score(pool_hidden_states(hidden_states, attention_mask, model.config.pooling))
        return logits.view(num_sites, per_site, -1)


__all__ = ["IncrementalScorer"]
