import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput, TokenClassifierOutput

from lyra_hf import (
    LyraConfig,
    LyraForSequenceClassification,
    LyraForSequenceRegression,
    LyraForTokenClassification,
    LyraModel,
)
from lyra_hf.modeling_lyra import LyraFFTConvolution, LyraS4D, LyraS4DBlock, fft_convolution, fft_length


HEADS = [LyraModel, LyraForSequenceRegression, LyraForSequenceClassification, LyraForTokenClassification]


def build(model_class, config, seed=0):
    torch.manual_seed(seed)
    return model_class(config).eval()


def main_output(model, **inputs):
    """The output that a head exposes per sequence or per position, plus the per-position hidden states."""
    out = model(**inputs, output_hidden_states=True)
    if isinstance(out, BaseModelOutputWithPooling):
        return out.pooler_output, out.last_hidden_state
    return out.logits, out.hidden_states[-1]


def random_batch(vocab_size, lengths, padding_side, pad_id=0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    input_ids = torch.full((len(lengths), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(lengths), longest, dtype=torch.long)
    sequences = []
    for row, length in enumerate(lengths):
        sequence = torch.randint(1, vocab_size, (length,), generator=generator)
        sequences.append(sequence)
        span = slice(0, length) if padding_side == "right" else slice(longest - length, longest)
        input_ids[row, span] = sequence
        attention_mask[row, span] = 1
    return input_ids, attention_mask, sequences


# --- padding exactness -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("model_class", HEADS)
def test_padded_batch_equals_each_sequence_alone(tiny_config, model_class, padding_side, bidirectional):
    config = tiny_config(bidirectional=bidirectional, num_labels=3)
    model = build(model_class, config)
    lengths = [17, 5, 11, 1]
    input_ids, attention_mask, sequences = random_batch(config.vocab_size, lengths, padding_side)
    with torch.no_grad():
        batch_main, batch_hidden = main_output(model, input_ids=input_ids, attention_mask=attention_mask)
        for row, sequence in enumerate(sequences):
            alone_main, alone_hidden = main_output(model, input_ids=sequence[None])
            real = attention_mask[row].bool()
            torch.testing.assert_close(batch_hidden[row, real], alone_hidden[0], atol=1e-5, rtol=0)
            if model_class is LyraForTokenClassification:
                torch.testing.assert_close(batch_main[row, real], alone_main[0], atol=1e-5, rtol=0)
            else:
                torch.testing.assert_close(batch_main[row], alone_main[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "max", "first", "last"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_every_pooling_ignores_padding(tiny_config, pooling, padding_side):
    config = tiny_config(pooling=pooling)
    model = build(LyraModel, config)
    input_ids, attention_mask, sequences = random_batch(config.vocab_size, [9, 4, 13], padding_side)
    with torch.no_grad():
        pooled = model(input_ids, attention_mask=attention_mask).pooler_output
        for row, sequence in enumerate(sequences):
            alone = model(sequence[None])
            torch.testing.assert_close(pooled[row], alone.pooler_output[0], atol=1e-5, rtol=0)
            hidden = alone.last_hidden_state[0]
            expected = {"mean": hidden.mean(0), "max": hidden.amax(0), "first": hidden[0], "last": hidden[-1]}
            torch.testing.assert_close(pooled[row], expected[pooling], atol=1e-5, rtol=0)


def test_default_model_is_padding_exact():
    model = build(LyraForSequenceRegression, LyraConfig())
    input_ids, attention_mask, sequences = random_batch(26, [40, 7], "left")
    with torch.no_grad():
        batch = model(input_ids, attention_mask=attention_mask).logits
        alone = torch.cat([model(sequence[None]).logits for sequence in sequences])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)


# --- S4D numerics ------------------------------------------------------------------------------------------------


def recurrence_reference(layer: LyraS4D, u: torch.Tensor) -> torch.Tensor:
    """y_t = 2 Re(C x_t) + D u_t with x_t = Abar x_{t-1} + Bbar u_t (and the mirrored recurrence for the anti-causal
    direction), directly in float64 from the layer's parameters."""
    kernel = layer.kernel
    dt = kernel.log_dt.double().exp()[:, None]
    A = torch.complex(-kernel.log_A_real.double().exp(), kernel.A_imag.double())
    A_bar = torch.exp(dt * A)
    B_bar = (A_bar - 1) / A
    C = torch.view_as_complex(kernel.C.double().contiguous())
    u = u.double()
    batch, length, hidden = u.shape
    y = u * layer.D.double()
    state = torch.zeros(batch, hidden, A.shape[-1], dtype=torch.complex128)
    for t in range(length):
        state = A_bar * state + B_bar * u[:, t, :, None]
        y[:, t] += 2 * (C[0] * state).sum(-1).real
    if layer.bidirectional:
        state = torch.zeros_like(state)
        for t in reversed(range(length - 1)):
            state = A_bar * state + B_bar * u[:, t + 1, :, None]
            y[:, t] += 2 * (C[1] * state).sum(-1).real
    return y


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("length", [1, 37, 300])
def test_fft_convolution_matches_the_recurrence(tiny_config, bidirectional, length):
    model = build(LyraModel, tiny_config(bidirectional=bidirectional))
    layer = model.layers[0].mixer
    u = torch.randn(2, length, model.config.hidden_size)
    with torch.no_grad():
        y = layer.convolve(u).double()
        reference = recurrence_reference(layer, u)
    relative_error = (y - reference).norm() / reference.norm()
    assert relative_error < 1e-5, relative_error


def straightforward_pgc(pgc, u):
    """The PGC block exactly as the paper writes it: in_proj, RMSNorm, split, nn.Conv1d over the channels-first
    layout, gate, out_proj, RMSNorm, with each normalisation computed in full."""

    def rms_norm(norm, h):
        return norm.weight * h / h.pow(2).mean(-1, keepdim=True).add(norm.variance_epsilon).sqrt()

    x, v = rms_norm(pgc.in_norm, pgc.in_proj(u)).chunk(2, dim=-1)
    x = pgc.conv(x.transpose(1, 2)).transpose(1, 2)
    return rms_norm(pgc.out_norm, pgc.out_proj(v * x))


@pytest.mark.parametrize("expansion_factor", [0.25, 2.0])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_pgc_equals_the_straightforward_composition(tiny_config, expansion_factor, batch_size):
    model = build(LyraModel, tiny_config(pgc_expansion_factors=[expansion_factor]))
    pgc = model.pgc_layers[0]
    with torch.no_grad():  # norm weights away from their initial ones, so that folding them is exercised
        for norm in (pgc.in_norm, pgc.out_norm):
            norm.weight.uniform_(-2, 2)
    u = torch.randn(batch_size, 29, model.config.hidden_size, requires_grad=True)
    output, reference = pgc(u), straightforward_pgc(pgc, u)
    torch.testing.assert_close(output, reference, rtol=1e-5, atol=1e-5)

    parameters = [u] + list(pgc.parameters())
    weights = torch.randn_like(output)
    gradients = torch.autograd.grad((output * weights).sum(), parameters)
    reference_gradients = torch.autograd.grad((reference * weights).sum(), parameters)
    for gradient, reference_gradient in zip(gradients, reference_gradients):
        torch.testing.assert_close(gradient, reference_gradient, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("length, n", [(1, 2), (5, 10), (7, 15), (16, 40)])  # even and odd FFT lengths
def test_fft_convolution_function_has_exact_gradients(length, n):
    u = torch.randn(2, 3, length, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(3, n, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(LyraFFTConvolution.apply(u, kernel), fft_convolution(u, torch.fft.rfft(kernel), n))
    assert torch.autograd.gradcheck(LyraFFTConvolution.apply, (u, kernel))


def test_convolution_with_autograd_matches_the_recurrence(tiny_config):
    model = build(LyraModel, tiny_config(bidirectional=True))
    layer = model.layers[0].mixer
    u = torch.randn(2, 37, model.config.hidden_size, requires_grad=True)
    y = layer.convolve(u)  # autograd on: the LyraFFTConvolution path
    reference = recurrence_reference(layer, u.detach())
    assert ((y.detach().double() - reference).norm() / reference.norm()) < 1e-5
    y.sum().backward()
    assert all(parameter.grad is not None for parameter in layer.kernel.parameters())


@pytest.mark.parametrize("length", [1, 2, 30, 1000, 4097])  # blocks of ceil(sqrt(L)): full, or a short last one
def test_kernel_blocks_equal_the_full_vandermonde_product(tiny_config, length):
    kernel = build(LyraModel, tiny_config(bidirectional=True)).layers[0].mixer.kernel
    with torch.no_grad():
        blocked_float32 = kernel(length).double()
        blocked = kernel.double()(length)
        dt = kernel.log_dt.double().exp()[:, None]
        A = torch.complex(-kernel.log_A_real.double().exp(), kernel.A_imag.double())
        C = torch.view_as_complex(kernel.C.double().contiguous()) * (torch.exp(dt * A) - 1) / A
        vandermonde = torch.exp((dt * A)[..., None] * torch.arange(length, dtype=torch.float64))
        direct = 2 * torch.einsum("dhn,hnl->dhl", C, vandermonde).real
    assert blocked.shape == (2, kernel.log_dt.shape[0], length)
    assert (blocked - direct).norm() / direct.norm() < 1e-6
    assert (blocked_float32 - direct).norm() / direct.norm() < 1e-5


def test_fft_lengths_are_fast_and_long_enough():
    for length in [1, 2, 3, 20, 237, 1000, 1024, 4097, 65536]:
        n = fft_length(length)
        assert n >= 2 * length
        remainder = n
        for prime in (2, 3, 5):
            while remainder % prime == 0:
                remainder //= prime
        assert remainder == 1, (length, n)
    assert fft_length(237) < 2 * 237 + 20 and fft_length(1024) == 2048


def test_ssm_runs_in_float32_under_autocast(tiny_config):
    model = build(LyraForSequenceRegression, tiny_config())
    layer = model.lyra.layers[0].mixer
    u = torch.randn(2, 64, model.config.hidden_size)
    with torch.no_grad():
        full_precision = layer.convolve(u)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer.kernel(64).dtype == torch.float32
            autocast_output = layer.convolve(u)
            logits = model(torch.randint(0, 12, (2, 64))).logits
    assert autocast_output.dtype == torch.float32
    torch.testing.assert_close(autocast_output, full_precision)
    assert torch.isfinite(logits).all()


def test_long_sequence_is_finite_under_autocast():
    config = LyraConfig(vocab_size=8, hidden_size=8, state_size=8, pgc_expansion_factors=[1.0], dropout=0.0)
    model = build(LyraForSequenceRegression, config)
    input_ids = torch.randint(0, 8, (1, 65_536))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(input_ids, output_hidden_states=True)
    assert all(torch.isfinite(hidden).all() for hidden in outputs.hidden_states)
    assert torch.isfinite(outputs.logits).all()


# --- transformers conventions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", HEADS)
def test_outputs_follow_transformers_conventions(tiny_config, model_class):
    config = tiny_config(num_labels=3, num_s4d_layers=3)
    model = build(model_class, config)
    input_ids = torch.randint(0, 12, (2, 10))
    with torch.no_grad():
        out = model(input_ids)
        assert out.hidden_states is None
        out = model(input_ids, output_hidden_states=True)
        config.output_hidden_states = True
        from_config = model(input_ids)
        as_tuple = model(input_ids, return_dict=False)
    expected_type = {
        LyraModel: BaseModelOutputWithPooling,
        LyraForTokenClassification: TokenClassifierOutput,
    }.get(model_class, SequenceClassifierOutput)
    assert isinstance(out, expected_type)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert all(hidden.shape == (2, 10, config.hidden_size) for hidden in out.hidden_states)
    assert len(from_config.hidden_states) == config.num_hidden_layers + 1
    assert len(as_tuple) == len(out.to_tuple())
    for tuple_value, dict_value in zip(as_tuple, out.to_tuple()):
        if isinstance(tuple_value, tuple):
            assert all(torch.equal(a, b) for a, b in zip(tuple_value, dict_value))
        else:
            assert torch.equal(tuple_value, dict_value)
    if model_class is LyraForTokenClassification:
        assert out.logits.shape == (2, 10, 3)
    elif model_class is not LyraModel:
        assert out.logits.shape == (2, 3)


def test_class_attributes():
    assert LyraModel.main_input_name == "input_ids"
    assert LyraModel.supports_gradient_checkpointing
    assert LyraModel._no_split_modules == ["LyraS4DBlock"]
    assert issubclass(LyraS4DBlock, torch.nn.Module)
    from transformers.generation import GenerationMixin
    from transformers.modeling_layers import GradientCheckpointingLayer

    assert issubclass(LyraS4DBlock, GradientCheckpointingLayer)
    assert not any(issubclass(cls, GenerationMixin) for cls in HEADS)


def test_sequence_losses_follow_problem_type(tiny_config):
    input_ids = torch.randint(0, 12, (4, 9))
    regression = build(LyraForSequenceRegression, tiny_config(num_labels=2))
    targets = torch.randn(4, 2)
    out = regression(input_ids, labels=targets)
    assert regression.config.problem_type == "regression"
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits, targets))

    single = build(LyraForSequenceClassification, tiny_config(num_labels=3))
    classes = torch.tensor([0, 2, 1, 2])
    out = single(input_ids, labels=classes)
    assert single.config.problem_type == "single_label_classification"
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, classes))

    multi = build(LyraForSequenceClassification, tiny_config(num_labels=3, problem_type="multi_label_classification"))
    multi_hot = torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]])
    out = multi(input_ids, labels=multi_hot)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, multi_hot))


def test_global_epistasis_passes_the_heads_sum_through_its_curve(tiny_config):
    """`global_epistasis`: the head's output is `lower + span * sigmoid(slope * (z - center))` of what the same
    weights give without the curve, per output; the loss is taken after the curve; classifiers refuse it."""
    input_ids = torch.randint(0, 12, (4, 9))
    curved = build(LyraForSequenceRegression, tiny_config(num_labels=2, global_epistasis=True, site_effects_length=9))
    with torch.no_grad():
        curved.site_effects.weight.normal_()
        for parameter, values in zip(
            curved.global_epistasis.parameters(), ([0.5, -1.0], [2.0, 3.0], [0.1, -0.2], [0.3, -0.4])
        ):
            parameter.copy_(torch.tensor(values))
    straight = LyraForSequenceRegression(tiny_config(num_labels=2, site_effects_length=9)).eval()
    straight.load_state_dict(
        {name: value for name, value in curved.state_dict().items() if not name.startswith("global_epistasis")}
    )
    z = straight(input_ids).logits
    lower, span, center, log_slope = (
        torch.tensor(values) for values in ([0.5, -1.0], [2.0, 3.0], [0.1, -0.2], [0.3, -0.4])
    )
    expected = lower + span / (1 + torch.exp(-log_slope.exp() * (z - center)))
    targets = torch.randn(4, 2)
    out = curved(input_ids, labels=targets)
    torch.testing.assert_close(out.logits, expected)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(expected, targets))
    with pytest.raises(ValueError, match="global_epistasis"):
        tiny_config(num_labels=3, problem_type="single_label_classification", global_epistasis=True)


def test_token_loss_ignores_padding_and_minus_100(tiny_config):
    model = build(LyraForTokenClassification, tiny_config(num_labels=3))
    input_ids, attention_mask, _ = random_batch(12, [6, 3], "right")
    labels = torch.randint(0, 3, input_ids.shape)
    labels[0, 1] = -100
    out = model(input_ids, attention_mask=attention_mask, labels=labels)
    keep = attention_mask.bool() & (labels != -100)
    expected = torch.nn.functional.cross_entropy(out.logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)


def test_inputs_embeds_is_bit_identical_to_input_ids(tiny_config):
    for model_class in HEADS:
        model = build(model_class, tiny_config(num_labels=2))
        input_ids, attention_mask, _ = random_batch(12, [8, 5], "left")
        with torch.no_grad():
            from_ids = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
            embeds = model.get_input_embeddings()(input_ids)
            from_embeds = model(inputs_embeds=embeds, attention_mask=attention_mask, output_hidden_states=True)
        for a, b in zip(from_ids.to_tuple(), from_embeds.to_tuple()):
            if isinstance(a, tuple):
                assert all(torch.equal(x, y) for x, y in zip(a, b))
            else:
                assert torch.equal(a, b)


def test_input_embeddings_and_resize(tiny_config):
    model = build(LyraForSequenceRegression, tiny_config())
    assert isinstance(model.get_input_embeddings(), torch.nn.Embedding)
    old = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(20)
    assert model.config.vocab_size == 20 and model.get_input_embeddings().num_embeddings == 20
    assert torch.equal(model.get_input_embeddings().weight[:12], old)
    assert model(torch.tensor([[19, 3, 5]])).logits.shape == (1, 1)


def test_only_parameters_and_buffers_hold_tensors(tiny_config):
    model = build(LyraForTokenClassification, tiny_config(bidirectional=True))
    registered = {id(t) for t in list(model.parameters()) + list(model.buffers())}
    for module in model.modules():
        for name, value in vars(module).items():
            if isinstance(value, torch.Tensor):
                assert id(value) in registered, f"{type(module).__name__}.{name} is a plain tensor attribute"


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize(
    "model_class", [LyraForSequenceRegression, LyraForSequenceClassification, LyraForTokenClassification]
)
def test_every_parameter_gets_a_gradient(tiny_config, model_class, bidirectional):
    config = tiny_config(num_labels=2, bidirectional=bidirectional, dropout=0.1)
    model = build(model_class, config).train()
    input_ids, attention_mask, _ = random_batch(12, [7, 4], "right")
    if model_class is LyraForTokenClassification:
        labels = torch.randint(0, 2, input_ids.shape)
    elif model_class is LyraForSequenceRegression:
        labels = torch.randn(2, 2)
    else:
        labels = torch.tensor([0, 1])
    model(input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config):
    config = tiny_config(num_labels=1, num_s4d_layers=3, dropout=0.2)
    input_ids, attention_mask, _ = random_batch(12, [12, 6], "left")
    labels = torch.randn(2)
    gradients = []
    for checkpointing in (False, True):
        model = build(LyraForSequenceRegression, config).train()
        if checkpointing:
            # renamed in transformers 5.x; the old name warns that it will go away
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
            assert all(layer.gradient_checkpointing for layer in model.lyra.layers)
        torch.manual_seed(1)  # the same dropout masks; checkpointing replays them
        model(input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name in gradients[0]:
        torch.testing.assert_close(gradients[0][name], gradients[1][name], atol=1e-6, rtol=1e-5)


def test_tiny_model_overfits_a_tiny_batch(tiny_config):
    model = build(LyraForSequenceRegression, tiny_config()).train()
    input_ids, attention_mask, _ = random_batch(12, [10, 8, 6, 9, 7, 10, 5, 8], "right")
    labels = torch.randn(8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        loss = model(input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])


def test_default_config_builds_a_working_model():
    model = build(LyraForSequenceRegression, LyraConfig()).train()
    out = model(torch.randint(0, 26, (3, 30)), labels=torch.randn(3))
    out.loss.backward()
    assert out.logits.shape == (3, 1) and torch.isfinite(out.loss)


# --- initialisation ----------------------------------------------------------------------------------------------


def test_init_weights_initialises_every_parameter_on_meta(tiny_config):
    config = tiny_config(bidirectional=True, num_labels=2, global_epistasis=True)
    for model_class in HEADS:
        with torch.device("meta"):
            model = model_class(config)
        model.to_empty(device="cpu")
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.data.fill_(float("nan"))
        torch.manual_seed(0)
        model.initialize_weights()
        reference = build(model_class, config)
        for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
            assert torch.isfinite(p).all(), f"{name} was not initialised"
            assert p.shape == q.shape
        kernel = model.get_submodule(
            "lyra.layers.0.mixer.kernel" if model_class is not LyraModel else "layers.0.mixer.kernel"
        )
        assert torch.allclose(kernel.log_A_real, torch.full_like(kernel.log_A_real, math.log(0.5)))
        assert torch.equal(kernel.A_imag[3], math.pi * torch.arange(config.state_size // 2, dtype=torch.float32))
        dt = kernel.log_dt.exp()
        assert dt.min() >= config.dt_min and dt.max() <= config.dt_max


def test_missing_keys_get_the_same_weights_as_a_meta_build(tiny_config, tmp_path):
    """from_pretrained with every key missing and a meta-device build + `initialize_weights` draw the same weights
    from the same seed, and the deterministic ones (norms, A) equal those of `__init__`."""
    config = tiny_config(num_labels=2)
    model = build(LyraForSequenceRegression, config)
    model.save_pretrained(tmp_path)
    save_file({}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    torch.manual_seed(0)
    loaded = LyraForSequenceRegression.from_pretrained(tmp_path)
    with torch.device("meta"):
        meta_built = LyraForSequenceRegression(config)
    meta_built.to_empty(device="cpu")
    torch.manual_seed(0)
    meta_built.initialize_weights()
    for (name, a), (_, b), (_, c) in zip(
        loaded.named_parameters(), meta_built.named_parameters(), model.named_parameters()
    ):
        assert torch.equal(a, b), name
        if name.endswith(("norm.weight", "log_A_real", "A_imag")):
            assert torch.equal(a, c), name


def test_linear_convolution_and_embedding_weights_use_the_fan_in_initialisation():
    """The authors' (PyTorch default) initialisation: uniform in +-1/sqrt(fan_in), filling that range."""
    torch.manual_seed(0)
    model = LyraForSequenceRegression(LyraConfig())
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Embedding)):
            fan_in = module.num_embeddings if isinstance(module, torch.nn.Embedding) else module.weight[0].numel()
            for tensor in (module.weight, getattr(module, "bias", None)):
                if tensor is None or tensor.numel() < 8:
                    continue
                bound = 1 / math.sqrt(fan_in)
                assert tensor.abs().max() <= bound, name
                assert tensor.abs().max() > 0.7 * bound, name  # not a much narrower distribution


# --- save / load -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", HEADS)
def test_save_load_is_bit_identical(tiny_config, tmp_path, model_class):
    model = build(model_class, tiny_config(num_labels=2, bidirectional=True))
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    loaded = model_class.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    input_ids, attention_mask, _ = random_batch(12, [9, 4], "right")
    with torch.no_grad():
        before = main_output(model, input_ids=input_ids, attention_mask=attention_mask)[0]
        after = main_output(loaded, input_ids=input_ids, attention_mask=attention_mask)[0]
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_loading_mismatched_shapes_fails_clearly(tiny_config, tmp_path):
    build(LyraForSequenceRegression, tiny_config(hidden_size=16)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hidden_size"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        LyraForSequenceRegression.from_pretrained(tmp_path)


def test_loading_a_truncated_checkpoint_fails_clearly(tiny_config, tmp_path):
    build(LyraForSequenceRegression, tiny_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(Exception, match="(?i)safetensors|incomplete|metadata|deserializ|truncat"):
        LyraForSequenceRegression.from_pretrained(tmp_path)


# --- Auto classes and remote code --------------------------------------------------------------------------------


def test_auto_classes_load_every_head(tiny_config, tmp_path):
    config = tiny_config(num_labels=2)
    regression = build(LyraForSequenceRegression, config)
    regression.save_pretrained(tmp_path / "regression")
    token = build(LyraForTokenClassification, config)
    token.save_pretrained(tmp_path / "token")
    input_ids = torch.randint(0, 12, (2, 7))

    assert isinstance(AutoConfig.from_pretrained(tmp_path / "regression"), LyraConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path / "regression"), LyraModel)
    as_classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "regression").eval()
    assert isinstance(as_classifier, LyraForSequenceClassification)
    assert as_classifier.config.problem_type == "regression"
    assert torch.equal(as_classifier(input_ids).logits, regression(input_ids).logits)
    as_token = AutoModelForTokenClassification.from_pretrained(tmp_path / "token").eval()
    assert torch.equal(as_token(input_ids).logits, token(input_ids).logits)


def test_saved_directory_loads_as_remote_code_without_the_package(tiny_config, tmp_path):
    config = tiny_config(num_labels=2, bidirectional=True)
    input_ids = torch.randint(0, 12, (2, 7))
    expected = {}
    for name, model_class in [("regression", LyraForSequenceRegression), ("token", LyraForTokenClassification)]:
        model = build(model_class, config)
        model.save_pretrained(tmp_path / name)
        with torch.no_grad():
            expected[name] = model(input_ids).logits
            expected[name + "_base"] = model.base_model(input_ids).last_hidden_state
        auto_map = json.loads((tmp_path / name / "config.json").read_text())["auto_map"]
        assert set(auto_map) == {
            "AutoConfig",
            "AutoModel",
            "AutoModelForSequenceClassification",
            "AutoModelForTokenClassification",
        }
        assert (tmp_path / name / "modeling_lyra.py").exists()
    torch.save({"input_ids": input_ids, **expected}, tmp_path / "expected.pt")

    script = textwrap.dedent(
        """
        import sys
        sys.modules["lyra_hf"] = None  # `import lyra_hf` now fails: only the checkpoint's own code can be used
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification
        root = sys.argv[1]
        expected = torch.load(root + "/expected.pt", weights_only=True)
        ids = expected["input_ids"]
        with torch.no_grad():
            for name, auto in [("regression", AutoModelForSequenceClassification), ("token",
            AutoModelForTokenClassification)]:
                model = auto.from_pretrained(root + "/" + name, trust_remote_code=True).eval()
                assert "lyra_hf" not in type(model).__module__, type(model).__module__
                assert torch.equal(model(ids).logits, expected[name]), name
                base = AutoModel.from_pretrained(root + "/" + name, trust_remote_code=True).eval()
                torch.testing.assert_close(base(ids).last_hidden_state, expected[name + "_base"], atol=1e-6, rtol=0)
        try:
            import lyra_hf  # noqa: F401
        except ImportError:
            print("REMOTE CODE OK")
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE CODE OK" in result.stdout


AUTO_CLASS_LOADS = textwrap.dedent(
    """
    import sys
    if sys.argv[2] == "without-package":
        sys.modules["lyra_hf"] = None  # only the checkpoints' own code
    else:
        import lyra_hf  # noqa: F401  registers the Lyra classes with the Auto classes
    import torch
    from transformers import (
        AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer, pipeline
    )
    root, options = sys.argv[1], {"trust_remote_code": True} if sys.argv[2] == "without-package" else {}
    AUTO = {"regression": AutoModelForSequenceClassification, "classification": AutoModelForSequenceClassification,
            "token": AutoModelForTokenClassification}
    PROBLEM = {"regression": "regression", "classification": "single_label_classification", "token": None}
    sequence = "MKTAYIAKQR"
    # Every ordered pair of runs follows each other once, so each load comes after each other kind of load.
    for name in ["regression", "classification", "token", "regression", "token", "classification", "regression"]:
        folder = f"{root}/{name}/best"
        model = AUTO[name].from_pretrained(folder, **options).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, **options)
        assert type(model).__name__ == model.config.architectures[0], (name, type(model), model.config.architectures)
        assert ("lyra_hf" in type(model).__module__) == (sys.argv[2] == "with-package"), type(model).__module__
        assert model.config.problem_type == PROBLEM[name], (name, model.config.problem_type)
        with torch.no_grad():
            logits = model(**tokenizer(sequence, return_tensors="pt")).logits[0]
        if name == "token":
            tagged = pipeline("token-classification", model=model, tokenizer=tokenizer)(sequence)
            expected = [model.config.id2label[index] for index in logits.argmax(-1).tolist()]
            assert [entity["entity"] for entity in tagged] == expected, (tagged, expected)
        else:
            [top] = pipeline("text-classification", model=model, tokenizer=tokenizer)(sequence)
            expected = logits[0] if name == "regression" else logits.softmax(-1).max()
            assert abs(top["score"] - expected.item()) < 1e-5, (name, top, logits)
    print("AUTO CLASSES OK")
    """
)


def test_auto_classes_load_each_run_as_saved_in_any_order_with_and_without_the_package(tmp_path, monkeypatch, capsys):
    """Runs of each task, all in folders named `best`, load as the class and problem type they were saved with whatever
    was loaded before in the process, and their pipelines report what the model computes: the raw value of a regression,
    the probability of a class, a label per residue."""
    from accelerate.state import AcceleratorState

    from lyra_hf.train import main as train

    letters = "ACDEFGHIKLMNPQRSTVWY"
    rows = [("".join(letters[(7 * row + 3 * column) % 20] for column in range(8)), row) for row in range(60)]
    files = {
        "classification": "sequence,label\n" + "".join(f"{sequence},{'ab'[row % 2]}\n" for sequence, row in rows),
        "token": "sequence,label\n" + "".join(f"{sequence},{('HEC' * 4)[row % 3 :][:8]}\n" for sequence, row in rows),
    }
    tiny = ["--hidden-size", "16", "--state-size", "8", "--epochs", "1", "--batch-size", "16", "--quiet"]
    for name, task in [
        ("regression", "regression"),
        ("classification", "classification"),
        ("token", "token-classification"),
    ]:
        data = ["--max-train-samples", "64", "--max-eval-samples", "16"]
        if name in files:
            (tmp_path / f"{name}.csv").write_text(files[name])
            data = ["--train-file", str(tmp_path / f"{name}.csv"), "--task", task]
        assert train([*tiny, *data, "--output-dir", str(tmp_path / name)]) == 0
        AcceleratorState._reset_state(reset_partial_state=True)
    # With the package: in this process, which has loaded other Lyra checkpoints before. Without it: an isolated
    # interpreter that cannot import lyra_hf and runs the checkpoints' own code.
    monkeypatch.setattr(sys, "argv", ["auto_class_loads", str(tmp_path), "with-package"])
    exec(compile(AUTO_CLASS_LOADS, "auto_class_loads", "exec"), {"__name__": "auto_class_loads"})
    assert "AUTO CLASSES OK" in capsys.readouterr().out
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(
        [sys.executable, "-I", "-c", AUTO_CLASS_LOADS, str(tmp_path), "without-package"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0 and "AUTO CLASSES OK" in result.stdout, result.stderr[-3000:]


def test_the_regression_face_saves_as_the_sequence_head(tiny_config, tmp_path):
    regression = build(LyraForSequenceRegression, tiny_config())
    regression.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["LyraForSequenceClassification"] and saved["problem_type"] == "regression"
    assert saved["auto_map"]["AutoModelForSequenceClassification"] == "modeling_lyra.LyraForSequenceClassification"
    assert type(regression) is LyraForSequenceRegression  # the instance keeps its class after saving
    assert isinstance(LyraForSequenceRegression.from_pretrained(tmp_path), LyraForSequenceRegression)


# --- torch.export ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_export_matches_eager(tiny_config, dynamic):
    model = build(LyraForSequenceRegression, tiny_config(bidirectional=True))
    input_ids, attention_mask, _ = random_batch(12, [24, 13], "left")
    dynamic_shapes = None
    if dynamic:
        length = torch.export.Dim("length", min=2, max=4096)
        dynamic_shapes = {"input_ids": {1: length}, "attention_mask": {1: length}}
    exported = torch.export.export(
        model, args=(), kwargs={"input_ids": input_ids, "attention_mask": attention_mask}, dynamic_shapes=dynamic_shapes
    )
    checks = [(input_ids, attention_mask)]
    if dynamic:
        checks += [random_batch(12, [40, 3], "right")[:2], random_batch(12, [200, 64], "left")[:2]]
    for ids, mask in checks:
        with torch.no_grad():
            eager = model(ids, attention_mask=mask).logits
        exported_logits = exported.module()(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(exported_logits, eager, atol=1e-4, rtol=0)


# --- bad input ---------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors_naming_the_value(tiny_config):
    model = build(LyraForSequenceRegression, tiny_config())
    ids = torch.randint(0, 12, (2, 5))
    with pytest.raises(ValueError, match="12 at .*vocabulary of size 12"):
        model(torch.tensor([[1, 2, 12]]))
    with pytest.raises(ValueError, match="-1"):
        model(torch.tensor([[1, -1, 2]]))
    with pytest.raises(ValueError, match="sequence length 0"):
        model(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"no real token in batch rows \[1\]"):
        model(ids, attention_mask=torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 5\)"):
        model(ids, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="both"):
        model(ids, inputs_embeds=torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="neither"):
        model()


# --- kernel cache at inference -----------------------------------------------------------------------------------


def _spectra(model):
    return [layer.mixer._cached_kernel_spectra for layer in model.lyra.layers]


def test_cached_kernel_equals_a_fresh_one_and_is_reused(tiny_config):
    model = build(LyraForSequenceRegression, tiny_config(bidirectional=True)).eval()
    input_ids = torch.randint(5, 12, (3, 40))
    with torch.no_grad():
        first = model(input_ids).logits
        cached = [dict(spectra) for spectra in _spectra(model)]
        assert all(len(spectra) == 1 for spectra in cached)
        second = model(input_ids).logits
        for before, after in zip(cached, _spectra(model)):  # the very same tensors: reused, not recomputed
            assert all(after[key] is before[key] for key in before)
        mixer = model.lyra.layers[0].mixer
        key = next(iter(mixer._cached_kernel_spectra))
        mixer._cached_kernel_spectra.clear()
        fresh = mixer.kernel_spectrum(40, key[1], key[3])
    assert torch.equal(first, second)
    assert torch.equal(fresh, cached[0][key])
    with torch.enable_grad():  # with autograd on, nothing is cached (a cached graph would be stale)
        model.lyra.layers[0].mixer.train().eval()
        model(input_ids).logits.sum().backward()
    assert not model.lyra.layers[0].mixer._cached_kernel_spectra


def test_kernel_cache_is_invalidated_by_optimizer_steps_train_and_writes(tiny_config):
    model = build(LyraForSequenceRegression, tiny_config()).eval()
    input_ids = torch.randint(5, 12, (2, 30))
    labels = torch.randn(2)

    def eval_logits():
        with torch.no_grad():
            return model(input_ids).logits

    def uncached_logits():
        for spectra in _spectra(model):
            spectra.clear()
        for layer in model.lyra.layers:
            layer.mixer._cached_kernel_parameters = None
        return eval_logits()

    before = eval_logits()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    assert all(not spectra for spectra in _spectra(model))  # train() drops the cache
    model(input_ids, labels=labels).loss.backward()
    model.eval()
    eval_logits()  # fill the cache again
    optimizer.step()  # parameters change in eval mode, after the cache was filled
    after_step = eval_logits()
    assert not torch.equal(after_step, before)
    assert torch.equal(after_step, uncached_logits())
    eval_logits()
    kernel = model.lyra.layers[0].mixer.kernel
    kernel.log_dt.data.add_(0.3)  # even writes through .data, which autograd does not see
    after_write = eval_logits()
    assert torch.equal(after_write, uncached_logits())
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state["lyra.layers.0.mixer.kernel.A_imag"] += 1.0
    eval_logits()
    model.load_state_dict(state)
    assert torch.equal(eval_logits(), uncached_logits())


def test_a_65536_token_forward_of_a_tiny_model(tiny_config):
    model = build(LyraForSequenceRegression, tiny_config(bidirectional=True)).eval()
    with torch.no_grad():
        logits = model(torch.randint(5, 12, (1, 65536))).logits
    assert logits.shape == (1, 1) and torch.isfinite(logits).all()
