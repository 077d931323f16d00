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
"""PyTorch Lyra model (Ramesh, Siddiqui, Gu, Mitzenmacher, Sabeti, 2025, arXiv:2503.16351).

Self-contained (torch, transformers and the configuration only) so that checkpoints can carry it as remote code.
"""

import math

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import PreTrainedModel

from .configuration_lyra import LyraConfig


# Kernel spectra each S4D layer keeps at inference, one per sequence length (length-bucketed batches reuse them).
KERNEL_CACHE_SIZE = 8


def apply_mask_to_padding_states(hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the hidden states of padded positions, so that convolutions never mix them into real ones.

    Args:
        hidden_states (`torch.Tensor` of shape `(batch_size, sequence_length, channels)`)
        mask (`torch.Tensor` of shape `(batch_size, sequence_length, 1)`, *optional*): 1 for real tokens, 0 for padding.
    """
    if mask is None:
        return hidden_states
    return hidden_states * mask.to(hidden_states.dtype)


def fft_length(sequence_length: int) -> int:
    """Smallest length >= 2L (so the circular convolution of both the causal and the anti-causal kernel is a linear
    one) whose only prime factors are 2, 3 and 5, the sizes that FFT libraries handle fastest. While tracing
    (`torch.export`, `torch.compile`) the length may be symbolic, so it is 2L there."""
    target = 2 * sequence_length
    if torch.compiler.is_compiling():
        return target
    best = 1 << (target - 1).bit_length()
    power_of_5 = 1
    while power_of_5 < best:
        odd_part = power_of_5
        while odd_part < best:
            candidate = odd_part
            while candidate < target:
                candidate *= 2
            best = min(best, candidate)
            odd_part *= 3
        power_of_5 *= 5
    return best


class LyraRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-8):
        """Root-mean-square normalisation, computed in float32."""
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def inverse_rms(self, *parts: torch.Tensor) -> torch.Tensor:
        """1 / sqrt(mean(x^2) + eps) over the last dimension of `x`, given whole or as `parts` to concatenate along it;
        shape `(..., 1)`, in float32."""
        # One fused norm reduction per part; `pow(2).mean(-1)` would first write a full-size copy of the squares, and
        # these normalisations are memory-bound (about 3x faster this way on a CPU at 256 channels).
        squared_norm = sum(
            torch.linalg.vector_norm(part.to(torch.float32), dim=-1, keepdim=True).square() for part in parts
        )
        channels = sum(part.shape[-1] for part in parts)
        return torch.rsqrt(squared_norm / channels + self.variance_epsilon)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32) * self.inverse_rms(hidden_states)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, eps={self.variance_epsilon}"


class LyraPGC(nn.Module):
    """Projected gated convolution: the explicit second-order (pairwise) interactions of Lyra.

    in_proj (d -> 2E) -> RMSNorm -> split into x, v -> depthwise conv of x -> v * conv(x) -> out_proj (E -> d) ->
    RMSNorm
    """

    def __init__(self, config: LyraConfig, expansion_factor: float):
        super().__init__()
        self.expanded_size = int(expansion_factor * config.hidden_size)
        self.in_proj = nn.Linear(config.hidden_size, 2 * self.expanded_size)
        self.in_norm = LyraRMSNorm(2 * self.expanded_size, eps=config.rms_norm_eps)
        self.conv = nn.Conv1d(
            self.expanded_size,
            self.expanded_size,
            kernel_size=config.pgc_kernel_size,
            padding=config.pgc_kernel_size // 2,
            groups=self.expanded_size,
        )
        self.out_proj = nn.Linear(self.expanded_size, config.hidden_size)
        self.out_norm = LyraRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`)
            mask (`torch.Tensor` of shape `(batch_size, sequence_length, 1)`, *optional*)

        Returns:
            `torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`
        """
        # in_proj as its two halves, x and v, each contiguous (no split copies, no concatenated gradient).
        x, v = (
            nn.functional.linear(hidden_states, weight, bias)
            for weight, bias in zip(self.in_proj.weight.chunk(2), self.in_proj.bias.chunk(2))
        )
        # in_norm, applied in parts: its per-channel weight commutes with the per-channel convolution (x half) and with
        # out_proj (v half), so it is folded into their small weights; the inverse RMS, one number per position, scales
        # x before the convolution, and for v it commutes with out_proj, so it scales out_proj's d outputs rather than
        # its E inputs. Neither ever scales the (batch, length, 2E) activations. Masking the scale zeroes padding,
        # which the centred convolution would otherwise read one step ahead and one behind.
        scale = apply_mask_to_padding_states(self.in_norm.inverse_rms(x, v).to(x.dtype), mask)
        x_weight, v_weight = self.in_norm.weight.chunk(2)
        gated = v * self.depthwise_conv(x * scale, x_weight)
        projected_gated = nn.functional.linear(gated, self.out_proj.weight * v_weight)
        return self.out_norm(torch.addcmul(self.out_proj.bias, projected_gated, scale))

    def depthwise_conv(self, x: torch.Tensor, channel_scale: torch.Tensor) -> torch.Tensor:
        """`self.conv` of `channel_scale * x` along the sequence, in the `(batch_size, sequence_length, E)` layout.

        That layout is the channels-last layout of `(batch_size, E, 1, sequence_length)`, so a 2-D depthwise
        convolution over this view runs without the transposed copies of `nn.Conv1d` (whose channels-first depthwise
        kernel is also about 10x slower on a CPU) and returns the same layout.
        """
        weight = (self.conv.weight * channel_scale[:, None, None]).unsqueeze(2)  # (E, 1, 1, kernel_size)
        x = nn.functional.conv2d(
            x.transpose(1, 2).unsqueeze(2),
            weight,
            self.conv.bias,
            padding=(0, self.conv.padding[0]),
            groups=self.expanded_size,
        )
        return x.squeeze(2).transpose(1, 2)


class LyraS4DKernel(nn.Module):
    """Convolution kernel of a diagonal state space model (S4D), one per channel and direction.

    K[h, l] = 2 Re sum_n C'[h, n] exp(dt[h] A[h, n] l),  C' = C (exp(dt A) - 1) / A,  A = -exp(log_A_real) + i A_imag
    (zero-order-hold discretisation; the conjugate half of the state is implicit in `2 Re`).
    """

    def __init__(self, config: LyraConfig):
        super().__init__()
        num_directions = 2 if config.bidirectional else 1
        half_state = config.state_size // 2
        self.log_dt = nn.Parameter(torch.empty(config.hidden_size))
        # Complex C stored as (real, imaginary) pairs: safetensors and optimizers handle real tensors only.
        self.C = nn.Parameter(torch.empty(num_directions, config.hidden_size, half_state, 2))
        self.log_A_real = nn.Parameter(torch.empty(config.hidden_size, half_state))
        self.A_imag = nn.Parameter(torch.empty(config.hidden_size, half_state))
        # The S4D recipe's optimizer settings for the SSM parameters (the `_optim` tags of state-spaces' s4d.py): no
        # weight decay, and `config.ssm_learning_rate` when set. Kept by parameter name on the module, because loading
        # a checkpoint replaces the parameter tensors (and any tag on them).
        settings = {"weight_decay": 0.0} | (
            {"lr": config.ssm_learning_rate} if config.ssm_learning_rate is not None else {}
        )
        self._optim = {name: settings for name in ("log_dt", "log_A_real", "A_imag")}

    def forward(self, sequence_length: int) -> torch.Tensor:
        """
        Returns:
            `torch.Tensor` of shape `(num_directions, hidden_size, sequence_length)`, in at least float32.
        """
        # The kernel's long, slowly decaying tail needs float32 even under autocast.
        with torch.autocast(device_type=self.log_dt.device.type, enabled=False):
            dtype = torch.promote_types(self.log_dt.dtype, torch.float32)
            dt = self.log_dt.to(dtype).exp()[:, None]
            A_real = -self.log_A_real.to(dtype).exp()
            A_imag = self.A_imag.to(dtype)
            dtA_real, dtA_imag = dt * A_real, dt * A_imag

            # C' = C (exp(dt A) - 1) / A, in real arithmetic: (p + iq) / (a + ib) = ((pa + qb) + i(qa - pb)) / (a^2 +
            # b^2)
            decay = dtA_real.exp()
            p, q = decay * dtA_imag.cos() - 1, decay * dtA_imag.sin()
            norm = A_real.square() + A_imag.square()
            zoh_real, zoh_imag = (p * A_real + q * A_imag) / norm, (q * A_real - p * A_imag) / norm
            C_real, C_imag = self.C.to(dtype).unbind(-1)
            C_real, C_imag = C_real * zoh_real - C_imag * zoh_imag, C_real * zoh_imag + C_imag * zoh_real

            def powers(steps):  # exp(dtA * steps) as (real, imag), shape (hidden_size, half_state, len(steps))
                magnitude = (dtA_real[..., None] * steps).exp()
                phase = dtA_imag[..., None] * steps
                return magnitude * phase.cos(), magnitude * phase.sin()

            if torch.compiler.is_compiling():
                # Tracers cannot prove that the block layout below covers a symbolic length; the direct Vandermonde
                # product has plain shapes (at O(H * N * L) memory).
                real, imag = powers(torch.arange(sequence_length, device=dt.device, dtype=dtype))
                return 2 * (C_real[..., None] * real - C_imag[..., None] * imag).sum(-2)

            # exp(dtA (B q + r)) = exp(dtA B q) exp(dtA r): one real matrix product per channel fills the (q, r) tiles.
            # Memory stays O(H * L), not the O(H * N * L) of a full Vandermonde tensor (1 GB at L = 65,536 for the
            # default model), and with B = ceil(sqrt(L)) the exponentials take O(H * N * sqrt(L)): they, not the
            # product, are the kernel's cost at short lengths (fixed B = 64: 5.0 ms forward and backward at L = 30).
            block = math.isqrt(max(sequence_length, 1) - 1) + 1
            num_blocks = (sequence_length + block - 1) // block
            start_real, start_imag = powers(torch.arange(num_blocks, device=dt.device, dtype=dtype) * block)
            offset_real, offset_imag = powers(torch.arange(block, device=dt.device, dtype=dtype))
            # Re((a + ib)(c + id)) = ac - bd, with the left factor carrying C'.
            left_real = C_real[..., None] * start_real - C_imag[..., None] * start_imag
            left_imag = C_real[..., None] * start_imag + C_imag[..., None] * start_real
            left = torch.cat([left_real, -left_imag], dim=-2).transpose(-1, -2)  # (dirs, H, num_blocks, 2 * half_state)
            right = torch.cat([offset_real, offset_imag], dim=-2)  # (H, 2 * half_state, block)
            kernel = 2 * torch.matmul(left, right)  # (dirs, H, num_blocks, block)
            return kernel.flatten(-2)[..., :sequence_length]


def fft_convolution(u: torch.Tensor, kernel_spectrum: torch.Tensor, n: int) -> torch.Tensor:
    """Linear convolution of `u` `(batch_size, channels, length)` with a circular kernel of length `n >= 2 * length`
    given by its rFFT `(channels, n // 2 + 1)`; returns `(batch_size, channels, length)`."""
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * kernel_spectrum, n=n)[..., : u.shape[-1]]


class LyraFFTConvolution(torch.autograd.Function):
    """`fft_convolution` of `u` with a real circular kernel `(channels, n)`, differentiable in both.

    Autograd's own backward of `rfft`/`irfft` runs a complex FFT of length n; the gradients of a convolution are
    correlations, which take one real FFT of the output gradient and one inverse real FFT per input:
    du = irfft(G conj(K))[:L] and dk = irfft(sum over the batch of G conj(U)), with G, U, K the rFFTs of the zero-padded
    output gradient, input and kernel.
    """

    @staticmethod
    def forward(ctx, u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        n = kernel.shape[-1]
        u_f, kernel_f = torch.fft.rfft(u, n=n), torch.fft.rfft(kernel)
        ctx.save_for_backward(u_f, kernel_f)
        ctx.length, ctx.n = u.shape[-1], n
        return torch.fft.irfft(u_f * kernel_f, n=n)[..., : ctx.length]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        u_f, kernel_f = ctx.saved_tensors
        n = ctx.n
        grad_f = torch.fft.rfft(grad_output, n=n)
        grad_u = grad_kernel = None
        if ctx.needs_input_grad[0]:
            grad_u = torch.fft.irfft(grad_f * kernel_f.conj(), n=n)[..., : ctx.length]
        if ctx.needs_input_grad[1]:
            grad_kernel = torch.fft.irfft((grad_f * u_f.conj()).sum(0), n=n)
        return grad_u, grad_kernel


class LyraS4D(nn.Module):
    """S4D layer: FFT convolution with the SSM kernel, D skip, GELU, dropout, then a GLU-gated position-wise mix."""

    def __init__(self, config: LyraConfig):
        super().__init__()
        self.bidirectional = config.bidirectional
        self.kernel = LyraS4DKernel(config)
        self.D = nn.Parameter(torch.empty(config.hidden_size))
        self.activation = nn.GELU()
        # Dropout tied over positions (whole channels), as in the S4 reference.
        self.dropout = nn.Dropout1d(config.dropout)
        self.output_linear = nn.Linear(config.hidden_size, 2 * config.hidden_size)
        self.glu = nn.GLU(dim=-1)
        # Kernel spectra reused across forwards at inference (see `kernel_spectrum`): a copy of the kernel's parameters
        # when they were computed, and the spectra by (sequence length, FFT length, device, dtype).
        self._cached_kernel_parameters = None
        self._cached_kernel_spectra = {}

    def train(self, mode: bool = True):
        self._cached_kernel_parameters, self._cached_kernel_spectra = None, {}
        return super().train(mode)

    def circular_kernel(self, sequence_length: int, n: int, dtype: torch.dtype) -> torch.Tensor:
        """The causal (plus, when bidirectional, anti-causal) kernel as one circular kernel of length `n`, shape
        `(hidden_size, n)`."""
        kernel = self.kernel(sequence_length).to(dtype)
        circular = nn.functional.pad(kernel[0], (0, n - sequence_length))
        if self.bidirectional:
            # The anti-causal kernel's lag -(i + 1) sits at index n - (i + 1) of the circular kernel.
            circular = circular + nn.functional.pad(kernel[1], (0, n - sequence_length)).flip(-1)
        return circular

    def kernel_spectrum(self, sequence_length: int, n: int, dtype: torch.dtype) -> torch.Tensor:
        """rFFT of `circular_kernel`, shape `(hidden_size, n // 2 + 1)`.

        Generating the kernel is most of an S4D layer's cost at long lengths, and at inference it is the same for every
        batch: in eval mode without autograd the spectrum is cached per (length, FFT length, device, dtype), up to
        `KERNEL_CACHE_SIZE` of them. The cache is dropped by `train()`/`eval()` and whenever any kernel parameter
        differs from the copy taken when it was filled (an optimizer step, `load_state_dict`, `.to()`, writes through
        `.data`), so a stale kernel is never used.
        """
        cacheable = not self.training and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        key = (sequence_length, n, self.kernel.log_dt.device, dtype)
        if cacheable:
            parameters = [parameter.detach() for parameter in self.kernel.parameters()]
            cached = self._cached_kernel_parameters
            if cached is None or not all(
                old.device == new.device and torch.equal(old, new) for old, new in zip(cached, parameters)
            ):
                self._cached_kernel_parameters = [parameter.clone() for parameter in parameters]
                self._cached_kernel_spectra = {}
            elif key in self._cached_kernel_spectra:
                return self._cached_kernel_spectra[key]

        spectrum = torch.fft.rfft(self.circular_kernel(sequence_length, n, dtype))
        if cacheable:
            if len(self._cached_kernel_spectra) >= KERNEL_CACHE_SIZE:
                self._cached_kernel_spectra.pop(next(iter(self._cached_kernel_spectra)))
            self._cached_kernel_spectra[key] = spectrum
        return spectrum

    def convolve(self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The linear SSM: y = K * u + D u, computed with FFTs in (at least) float32 whatever the autocast state.

        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`)
            mask (`torch.Tensor` of shape `(batch_size, sequence_length, 1)`, *optional*)

        Returns:
            `torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`, in at least float32.
        """
        sequence_length = hidden_states.shape[1]
        # bf16/fp16 FFTs lose the kernel's long tail, and cuFFT only takes half precision at powers of two.
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            dtype = torch.promote_types(hidden_states.dtype, torch.float32)
            u = apply_mask_to_padding_states(hidden_states, mask).to(dtype)
            n = fft_length(sequence_length)
            # Under autograd, LyraFFTConvolution's backward takes only real FFTs (compilers differentiate the plain
            # operations themselves); without it, at inference, the kernel's spectrum may come from the cache.
            if torch.is_grad_enabled() and not torch.compiler.is_compiling():
                kernel = self.circular_kernel(sequence_length, n, dtype)
                y = LyraFFTConvolution.apply(u.transpose(1, 2), kernel)
            else:
                y = fft_convolution(u.transpose(1, 2), self.kernel_spectrum(sequence_length, n, dtype), n)
            # Back to positions-major memory: GELU's backward over the channels-major view costs ~10x a contiguous
            # one on CPU (3 ms against 0.3 ms at batch 64, L = 32), and the output projection would copy it anyway.
            return torch.addcmul(y.transpose(1, 2), u, self.D.to(dtype)).contiguous()

    def position_wise(self, convolved: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """What follows the convolution at each position: GELU, dropout (tied over positions) and the GLU-gated
        projection, in `dtype`.

        Args:
            convolved (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)` or `(positions,
                hidden_size)`, any strides): the output of `convolve`.

        Returns:
            `torch.Tensor` of the shape of `convolved`
        """
        y = self.activation(convolved)
        y = self.dropout(y.transpose(-1, -2)).transpose(-1, -2)
        return self.glu(self.output_linear(y.to(dtype)))

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`)
            mask (`torch.Tensor` of shape `(batch_size, sequence_length, 1)`, *optional*)

        Returns:
            `torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`
        """
        return self.position_wise(self.convolve(hidden_states, mask), hidden_states.dtype)


class LyraS4DBlock(GradientCheckpointingLayer):
    """Pre-norm residual S4D block: h + dropout(S4D(RMSNorm(h)))."""

    def __init__(self, config: LyraConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.norm = LyraRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mixer = LyraS4D(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return hidden_states + self.dropout(self.mixer(self.norm(hidden_states), mask))


class LyraPreTrainedModel(PreTrainedModel):
    config: LyraConfig
    config_class = LyraConfig
    base_model_prefix = "lyra"
    main_input_name = "input_ids"
    _no_split_modules = ["LyraS4DBlock"]
    supports_gradient_checkpointing = True
    # Every Auto class that can load a Lyra directory, so that a checkpoint of any head also loads as remote code
    # through any of them (transformers records only the saved class by default).
    _remote_code_auto_map = {
        "AutoConfig": "configuration_lyra.LyraConfig",
        "AutoModel": "modeling_lyra.LyraModel",
        "AutoModelForSequenceClassification": "modeling_lyra.LyraForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_lyra.LyraForTokenClassification",
    }

    def __init__(self, config: LyraConfig, *inputs, **kwargs):
        super().__init__(config, *inputs, **kwargs)
        # Tags of the default model card that `push_to_hub` writes (an instance list: `add_model_tags` appends to it).
        self.model_tags = ["lyra", "biology", "state-space-model"]

    @torch.no_grad()
    def _init_weights(self, module):
        """Initialise the weights as the authors' model does: PyTorch's default fan-in initialisation, uniform in
        +-1/sqrt(fan_in), for linear and convolution weights and biases and for the embedding (the one-hot linear
        encoder it replaces, fan-in = vocab_size); unit norms; and the S4D initialisation for the SSM (log-uniform dt,
        A = -1/2 + i pi n, complex standard normal C, standard normal D).

        The normal(0.02) initialisation of transformers' language models does not suit Lyra: with embeddings and
        projections that small the biases drown the input signal after the first RMSNorm, and training at learning
        rates above 1e-3 collapses to a constant prediction (seen on `lyra-train`'s synthetic landscape: test Spearman
        0.08 at 3e-3 after 20 epochs, against 0.79 with this initialisation)."""
        config = self.config
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.Embedding):
            bound = 1.0 / math.sqrt(module.num_embeddings)
            init.uniform_(module.weight, -bound, bound)
        elif isinstance(module, LyraRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, LyraS4DKernel):
            init.uniform_(module.log_dt, math.log(config.dt_min), math.log(config.dt_max))
            # A complex standard normal has variance 1/2 in each of its real and imaginary parts.
            init.normal_(module.C, mean=0.0, std=math.sqrt(0.5))
            init.constant_(module.log_A_real, math.log(0.5))
            half_state = module.A_imag.shape[-1]
            init.copy_(module.A_imag, math.pi * torch.arange(half_state, dtype=torch.float32).expand_as(module.A_imag))
        elif isinstance(module, LyraS4D):
            init.normal_(module.D, mean=0.0, std=1.0)
        elif isinstance(module, LyraSiteEffects):
            init.zeros_(module.weight)  # no effect until trained (or set from a one-hot fit)
        elif isinstance(module, LyraPrior):
            init.zeros_(
                module.scale
            )  # no effect until trained (or set from a linear fit); the table is set, not learnt
        elif isinstance(module, LyraGlobalEpistasis):
            for parameter, value in (
                (module.lower, 0.0),
                (module.span, 1.0),
                (module.center, 0.0),
                (module.log_slope, 0.0),
            ):
                init.constant_(parameter, value)

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self._auto_class is not None:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **self._remote_code_auto_map}
        return super().save_pretrained(save_directory, *args, **kwargs)


def pool_hidden_states(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """Pool over real positions only.

    Args:
        hidden_states (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`)
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*)
        pooling (`str`): `"mean"`, `"max"`, `"first"` or `"last"` (first/last real token, left or right padded).

    Returns:
        `torch.Tensor` of shape `(batch_size, hidden_size)`
    """
    if attention_mask is None:
        attention_mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device, dtype=torch.long)
    mask = attention_mask.to(hidden_states.device).bool()
    if pooling == "mean":
        weights = mask.to(hidden_states.dtype)[..., None]
        return (hidden_states * weights).sum(1) / weights.sum(1)
    if pooling == "max":
        return hidden_states.masked_fill(~mask[..., None], torch.finfo(hidden_states.dtype).min).amax(1)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    if pooling == "first":
        index = positions.masked_fill(~mask, mask.shape[1]).amin(1)
    else:
        index = positions.masked_fill(~mask, -1).amax(1)
    return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), index]


class LyraModel(LyraPreTrainedModel):
    """The bare Lyra backbone: embedding, PGC blocks, then pre-norm residual S4D layers (no final norm, as in the
    authors' model). Its `pooler_output` is the masked pooling chosen by `config.pooling`."""

    def __init__(self, config: LyraConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.pgc_layers = nn.ModuleList([LyraPGC(config, factor) for factor in config.pgc_expansion_factors])
        self.layers = nn.ModuleList([LyraS4DBlock(config, layer_idx=idx) for idx in range(config.num_s4d_layers)])
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings = new_embeddings

    def pgc_stack(self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The PGC blocks, each with its residual when `config.pgc_residual`: the input of the first S4D layer.

        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`): embedded tokens.
            mask (`torch.Tensor` of shape `(batch_size, sequence_length, 1)`, *optional*)

        Returns:
            `torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`
        """
        for pgc in self.pgc_layers:
            pgc_output = pgc(hidden_states, mask)
            hidden_states = hidden_states + pgc_output if self.config.pgc_residual else pgc_output
        return hidden_states

    def _validate_inputs(self, input_ids, attention_mask, inputs_embeds):
        if (input_ids is None) == (inputs_embeds is None):
            given = "both" if input_ids is not None else "neither"
            raise ValueError(f"Specify exactly one of `input_ids` or `inputs_embeds`, got {given}.")
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
        if len(shape) != 2 or (inputs_embeds is not None and inputs_embeds.dim() != 3):
            raise ValueError(
                "`input_ids` must have shape (batch_size, sequence_length) and `inputs_embeds` "
                f"(batch_size, sequence_length, hidden_size), got {tuple(shape)}."
            )
        if shape[1] == 0:
            raise ValueError(f"Empty sequences: the inputs have shape {tuple(shape)}, with sequence length 0.")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(shape):
            raise ValueError(
                f"`attention_mask` has shape {tuple(attention_mask.shape)} but the inputs have shape {tuple(shape)}."
            )
        # Checks on tensor values need concrete tensors: they run in eager mode only, never while tracing.
        if torch.compiler.is_compiling():
            return
        if input_ids is not None:
            vocab_size = self.embeddings.num_embeddings
            out_of_range = (input_ids < 0) | (input_ids >= vocab_size)
            if out_of_range.any():
                row, col = out_of_range.nonzero()[0].tolist()
                raise ValueError(
                    f"`input_ids` contains {input_ids[row, col].item()} at (batch {row}, position {col}), outside the "
                    f"vocabulary of size {vocab_size}."
                )
        if attention_mask is not None:
            empty_rows = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
            if empty_rows:
                raise ValueError(f"Empty sequences: `attention_mask` has no real token in batch rows {empty_rows}.")

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | BaseModelOutputWithPooling:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Token ids. Exactly one of `input_ids` and `inputs_embeds` is given.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                1 for real tokens, 0 for padding (left or right). Padded positions never influence real ones.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
                Embedded tokens, used instead of `input_ids`.
            output_hidden_states (`bool`, *optional*):
                Also return the output of the embedding + PGC stage and of each S4D layer.
            return_dict (`bool`, *optional*):
                Return a [`~transformers.modeling_outputs.BaseModelOutputWithPooling`] instead of a tuple.

        Returns:
            `BaseModelOutputWithPooling`: `last_hidden_state` `(batch_size, sequence_length, hidden_size)`,
            `pooler_output` `(batch_size, hidden_size)`, and `hidden_states`, a tuple of `num_s4d_layers + 1` tensors
            of shape `(batch_size, sequence_length, hidden_size)` when asked for.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._validate_inputs(input_ids, attention_mask, inputs_embeds)

        hidden_states = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        mask = attention_mask[..., None] if attention_mask is not None else None
        hidden_states = self.pgc_stack(hidden_states, mask)

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask)
            if output_hidden_states:
                all_hidden_states = all_hidden_states + (hidden_states,)

        pooled_output = pool_hidden_states(hidden_states, attention_mask, self.config.pooling)
        if not return_dict:
            return tuple(v for v in (hidden_states, pooled_output, all_hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled_output, hidden_states=all_hidden_states
        )


class LyraSiteEffects(nn.Module):
    """A weight per position and token for each output, summed over a sequence's first `config.site_effects_length`
    positions (padding excluded): the one-hot linear model of fitness-landscape work, which learns one effect per
    position and letter, as a term of Lyra's sequence head. Lyra's embedding carries no position; this term gives
    fixed-length variant libraries that bias, and lets the convolutions and the S4D layer learn what it cannot."""

    def __init__(self, config: LyraConfig):
        super().__init__()
        self.length, self.vocab_size = config.site_effects_length, config.vocab_size
        self.weight = nn.Parameter(torch.zeros(self.length * self.vocab_size, config.num_labels))
        # Optimizer settings of their own (the `_optim` tag habit, see LyraS4DKernel).
        if config.site_effects_learning_rate is not None:
            self._optim = {"weight": {"lr": config.site_effects_learning_rate}}

    def rows(self, positions: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The weights of tokens `input_ids` at `positions` (same shape), zero beyond the first `length` positions:
        (..., num_labels)."""
        inside = positions < self.length
        index = torch.where(inside, positions * self.vocab_size + input_ids, 0)
        return self.weight[index] * inside[..., None]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): the tokens, right-padded.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 0 at padding.

        Returns:
            `torch.Tensor` of shape `(batch_size, num_labels)`.
        """
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        terms = self.rows(positions, input_ids)
        if attention_mask is not None:
            terms = terms * attention_mask[..., None].to(terms.dtype)
        return terms.sum(1)


class LyraPrior(nn.Module):
    """A zero-shot prior as a term of the sequence head (`config.prior_length`): a fixed score for each position and
    token, relative to the wild type (0 at its letters; NaN where the prior has no score), summed over a sequence's
    first `prior_length` positions and multiplied by a learnt weight per output. A variant's prior score is then the
    sum of its substitutions' scores, the additive approximation of zero-shot fitness work (Hsu et al., 2022)."""

    def __init__(self, config: LyraConfig):
        super().__init__()
        self.length, self.vocab_size, self.alphabet = config.prior_length, config.vocab_size, config.alphabet
        self.register_buffer("table", torch.zeros(self.length * self.vocab_size))
        self.scale = nn.Parameter(torch.zeros(config.num_labels))

    def scores(self, positions: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The prior's score of tokens `input_ids` at `positions` (same shape), 0 beyond the first `length`."""
        inside = positions < self.length
        return torch.where(inside, self.table[torch.where(inside, positions * self.vocab_size + input_ids, 0)], 0.0)

    def rows(self, positions: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The term's part for tokens `input_ids` at `positions`: (..., num_labels)."""
        return self.scores(positions, input_ids)[..., None] * self.scale

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): the tokens, right-padded.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 0 at padding.

        Returns:
            `torch.Tensor` of shape `(batch_size, num_labels)`.

        Raises:
            `ValueError` naming the first substitution the prior has no score for.
        """
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        scores = self.scores(positions, input_ids)
        if attention_mask is not None:
            scores = torch.where(attention_mask.bool(), scores, 0.0)
        self.refuse_unscored(positions, input_ids, scores)
        return scores.sum(1, keepdim=True) * self.scale

    def refuse_unscored(self, positions: torch.Tensor, input_ids: torch.Tensor, scores: torch.Tensor) -> None:
        """Raise a `ValueError` naming the first token the prior has no score for (NaN among `scores`)."""
        unscored = torch.isnan(scores)
        if unscored.any():
            first = tuple(torch.nonzero(unscored)[0])
            token, position = int(input_ids[first]), int(positions[first])
            letter_index = token - (self.vocab_size - len(self.alphabet or ""))  # the letters follow the special tokens
            letter = self.alphabet[letter_index] if self.alphabet and letter_index >= 0 else f"token {token}"
            raise ValueError(
                f"{letter} at position {position + 1}: the model's prior has no score for this substitution."
            )


class LyraGlobalEpistasis(nn.Module):
    """The global-epistasis curve of a regression head (`config.global_epistasis`): per output, `lower + span *
    sigmoid(slope * (z - center))` of the head's sum `z`, with `slope = exp(log_slope) > 0`, so the curve is monotone
    in `z` (increasing while `span > 0`). It starts as the logistic curve from 0 to 1 around 0; `lyra-train` fits it
    to its linear start's training predictions first."""

    def __init__(self, config: LyraConfig):
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(config.num_labels))
        self.span = nn.Parameter(torch.ones(config.num_labels))
        self.center = nn.Parameter(torch.zeros(config.num_labels))
        self.log_slope = nn.Parameter(torch.zeros(config.num_labels))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """`latent` (..., num_labels) to the measured scale, same shape."""
        return self.lower + self.span * torch.sigmoid(self.log_slope.exp() * (latent - self.center))


class LyraForSequenceClassification(LyraPreTrainedModel):
    """Lyra with a linear head on the pooled sequence: regression (`num_labels` targets, MSE), single-label
    (cross-entropy) or multi-label (BCE) classification, chosen by `config.problem_type` as in every transformers
    sequence classifier."""

    def __init__(self, config: LyraConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.lyra = LyraModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels)
        self.site_effects = LyraSiteEffects(config) if config.site_effects_length else None
        self.prior = LyraPrior(config) if config.prior_length else None
        self.global_epistasis = LyraGlobalEpistasis(config) if config.global_epistasis else None
        # The loss is the sequence-classification loss for every face of this head (see LyraForSequenceRegression).
        self.loss_type = "ForSequenceClassification"
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | SequenceClassifierOutput:
        r"""
        Args:
            labels (`torch.Tensor` of shape `(batch_size,)` or `(batch_size, num_labels)`, *optional*):
                Float targets for regression, class indices for single-label and multi-hot floats for multi-label
                classification.

            See [`LyraModel.forward`] for the other arguments.

        Returns:
            `SequenceClassifierOutput`: `logits` of shape `(batch_size, num_labels)` and `loss` when `labels` is given.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.lyra(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.score(outputs.pooler_output)
        if self.site_effects is not None:
            if input_ids is None:
                raise ValueError(
                    "A model with site effects (`config.site_effects_length`) needs `input_ids`, not `inputs_embeds`."
                )
            logits = logits + self.site_effects(input_ids, attention_mask)
        if self.prior is not None:
            if input_ids is None:
                raise ValueError("A model with a prior (`config.prior_length`) needs `input_ids`, not `inputs_embeds`.")
            logits = logits + self.prior(input_ids, attention_mask)
        if self.global_epistasis is not None:
            logits = self.global_epistasis(logits)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)

        if not return_dict:
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class LyraForSequenceRegression(LyraForSequenceClassification):
    """The regression face of [`LyraForSequenceClassification`]: the same modules and weights with
    `problem_type="regression"` (`num_labels` real-valued targets, MSE loss).

    It is saved as the [`LyraForSequenceClassification`] it is (`architectures` and `auto_map` name that class), so
    that `AutoModelForSequenceClassification` and `pipeline` load every sequence checkpoint as one class whose behaviour
    follows `config.problem_type`. With two classes behind one Auto class, the class a checkpoint loaded as depended on
    which checkpoint the process had loaded before (transformers registers the first remote class it loads)."""

    def __init__(self, config: LyraConfig):
        config.problem_type = "regression"
        super().__init__(config)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers records `type(self).__name__`; this class adds no module or weight, so saving as the sequence
        # head writes the same files under the name every Auto class maps to.
        self.__class__ = LyraForSequenceClassification
        try:
            return self.save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.__class__ = LyraForSequenceRegression


class LyraForTokenClassification(LyraPreTrainedModel):
    """Lyra with a linear head at every position (per-residue labels such as disorder or secondary structure)."""

    def __init__(self, config: LyraConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.lyra = LyraModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | TokenClassifierOutput:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Class index per position; -100 and padded positions are ignored by the cross-entropy loss.

            See [`LyraModel.forward`] for the other arguments.

        Returns:
            `TokenClassifierOutput`: `logits` of shape `(batch_size, sequence_length, num_labels)` and `loss` when
            `labels` is given.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.lyra(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask.to(labels.device) == 0, -100)
            loss = self.loss_function(logits=logits, labels=labels, config=self.config)

        if not return_dict:
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


__all__ = [
    "LyraPreTrainedModel",
    "LyraModel",
    "LyraForSequenceClassification",
    "LyraForSequenceRegression",
    "LyraForTokenClassification",
]
