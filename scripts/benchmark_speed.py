"""Inference and training speed and peak memory: lyra_hf against the published Lyra model and ESM-2, side by side.

    python scripts/benchmark_speed.py [--threads 1] [--device cpu|cuda] [--retain-freed-memory] [--output results/speed]

Every measurement runs in its own subprocess with the same pinned thread count, float32 (plus a bf16-autocast row for
lyra_hf on CUDA): a warm-up, then the median of `--repeats` timed repetitions. Models:

- `lyra_hf`: the default `LyraForSequenceRegression` with a 20-letter vocabulary (plus padding), in eval mode as users
  run it (kernel spectra cached across batches of the same length).
- `reference`: the published Lyra model as its authors' PyTorch code computes it (see `build_reference_lyra`), with
  the same weights: its RMSNorm, PGC blocks and one-hot linear encoder, and an S4D layer whose kernel is regenerated on
  every forward from the complex (H, N/2, L) Vandermonde product and convolved by FFTs of length 2L; no caching, no
  chunking. Written here, in the benchmark, as the baseline; the run checks that its outputs equal lyra_hf's.
- `esm2_8m`, `esm2_35m`: ESM-2 at the 8M and 35M shapes from `transformers.EsmConfig` (rotary positions), random
  weights, no download.

Inference: tokens/s at L = 256 ... 65,536 with batch x L = 65,536 tokens. Training: forward + backward + AdamW step at
L = 256 and 1,024 (same tokens per step). Memory: peak resident set of one forward of one sequence at L = 16,384 and
65,536, each in a fresh process. A configuration whose forward is estimated (from one probe sequence) to take more
than `--max-forward-seconds` is reported as skipped, with the estimate. Also: the padded-token fraction of a realistic
length mix batched at random and batched by length (as lyra-predict and lyra-train's evaluation do).

`--retain-freed-memory` makes every worker, whatever its model, keep freed memory for reuse
(`lyra_hf.retain_freed_memory`, as lyra-train, lyra-predict and lyra-scan do) instead of glibc's default of returning
large blocks to the kernel and faulting them in again on the next batch.
"""

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


LENGTHS = (256, 1024, 4096, 16384, 65536)
TRAIN_LENGTHS = (256, 1024)
MEMORY_LENGTHS = (16384, 65536)
TOKENS_PER_BATCH = 65536
MODELS = ("lyra_hf", "reference", "esm2_8m", "esm2_35m")
ESM_SHAPES = {"esm2_8m": (320, 6, 20, 1280), "esm2_35m": (480, 12, 20, 1920)}


# --- models (built inside the worker processes) -----------------------------------------------------------------


def build_reference_lyra(lyra_model):
    """The published Lyra model as its authors' PyTorch code computes it (the repository's `nn/lyra_base.py`,
    `nn/s4d.py` and `utils/rmsnorm.py`, with `nn.Conv1d` and `torch.fft` where the GPU code calls FlashFFTConv),
    carrying
    `lyra_model`'s weights: a linear encoder of one-hot inputs, two PGC blocks, RMSNorm, one S4D layer (kernel from the
    full complex (H, N/2, L) Vandermonde product on every forward, FFTs of length 2L, channels-first layout with a 1x1
    convolution and GLU), residual, mean pooling and a linear decoder."""
    import torch
    from torch import nn

    class RMSNorm(nn.Module):  # x / (||x|| / sqrt(d) + eps) * scale
        def __init__(self, d, eps=1e-8):
            super().__init__()
            self.d, self.eps = d, eps
            self.scale = nn.Parameter(torch.ones(d))

        def forward(self, x):
            rms_x = x.norm(2, dim=-1, keepdim=True) * self.d ** (-1.0 / 2)
            return self.scale * (x / (rms_x + self.eps))

    class PGC(nn.Module):
        def __init__(self, d_model, expansion_factor):
            super().__init__()
            expanded = int(d_model * expansion_factor)
            self.in_proj = nn.Linear(d_model, 2 * expanded)
            self.in_norm = RMSNorm(2 * expanded)
            self.conv = nn.Conv1d(expanded, expanded, kernel_size=3, padding=1, groups=expanded)
            self.out_proj = nn.Linear(expanded, d_model)
            self.out_norm = RMSNorm(d_model)

        def forward(self, u):
            x, v = self.in_norm(self.in_proj(u)).chunk(2, dim=-1)
            x = self.conv(x.transpose(1, 2).contiguous()).transpose(1, 2)
            return self.out_norm(self.out_proj(v * x))

    class S4DKernel(nn.Module):
        def __init__(self, h, n):
            super().__init__()
            self.log_dt = nn.Parameter(torch.zeros(h))
            self.C = nn.Parameter(torch.zeros(h, n // 2, 2))
            self.log_A_real = nn.Parameter(torch.zeros(h, n // 2))
            self.A_imag = nn.Parameter(torch.zeros(h, n // 2))

        def forward(self, length):
            dt = torch.exp(self.log_dt)
            C = torch.view_as_complex(self.C)
            A = -torch.exp(self.log_A_real) + 1j * self.A_imag
            dtA = A * dt.unsqueeze(-1)
            vandermonde = dtA.unsqueeze(-1) * torch.arange(length, device=A.device)  # (H, N/2, L), complex
            C = C * (torch.exp(dtA) - 1.0) / A
            return 2 * torch.einsum("hn, hnl -> hl", C, torch.exp(vandermonde)).real

    class S4D(nn.Module):
        def __init__(self, h, n, dropout):
            super().__init__()
            self.D = nn.Parameter(torch.zeros(h))
            self.kernel = S4DKernel(h, n)
            self.activation = nn.GELU()
            self.dropout = nn.Dropout1d(dropout)
            self.output_linear = nn.Sequential(nn.Conv1d(h, 2 * h, kernel_size=1), nn.GLU(dim=-2))

        def forward(self, u):  # (B, L, H) in and out, channels-first inside
            u = u.transpose(-1, -2)
            length = u.size(-1)
            k_f = torch.fft.rfft(self.kernel(length), n=2 * length)
            u_f = torch.fft.rfft(u, n=2 * length)
            y = torch.fft.irfft(u_f * k_f, n=2 * length)[..., :length]
            y = y + u * self.D.unsqueeze(-1)
            y = self.output_linear(self.dropout(self.activation(y)))
            return y.transpose(-1, -2)

    class Lyra(nn.Module):
        def __init__(self, config):
            super().__init__()
            d = config.hidden_size
            self.encoder = nn.Linear(config.vocab_size, d)
            self.pgc1, self.pgc2 = (PGC(d, factor) for factor in config.pgc_expansion_factors)
            self.s4d = S4D(d, config.state_size, config.dropout)
            self.norm = RMSNorm(d)
            self.decoder = nn.Linear(d, config.num_labels)
            self.dropout = nn.Dropout(config.dropout)

        def forward(self, one_hot):
            x = self.pgc2(self.pgc1(self.encoder(one_hot)))
            x = self.dropout(self.s4d(self.norm(x))) + x
            return self.decoder(x.mean(dim=1))

    config = lyra_model.config
    if config.bidirectional or config.num_s4d_layers != 1 or len(config.pgc_expansion_factors) != 2:
        raise ValueError("the published model has two PGC blocks and one causal S4D layer")
    reference = Lyra(config)
    source = lyra_model.state_dict()
    renamed = {
        "encoder.weight": source["lyra.embeddings.weight"].T,
        "encoder.bias": torch.zeros(config.hidden_size),
        "norm.scale": source["lyra.layers.0.norm.weight"],
        "s4d.D": source["lyra.layers.0.mixer.D"],
        "s4d.kernel.C": source["lyra.layers.0.mixer.kernel.C"][0],
        "s4d.output_linear.0.weight": source["lyra.layers.0.mixer.output_linear.weight"][..., None],
        "s4d.output_linear.0.bias": source["lyra.layers.0.mixer.output_linear.bias"],
        "decoder.weight": source["score.weight"],
        "decoder.bias": source["score.bias"],
    }
    for name in ("log_dt", "log_A_real", "A_imag"):
        renamed[f"s4d.kernel.{name}"] = source[f"lyra.layers.0.mixer.kernel.{name}"]
    for index, block in enumerate(("pgc1", "pgc2")):
        for name, tensor in source.items():
            prefix = f"lyra.pgc_layers.{index}."
            if name.startswith(prefix):
                renamed[f"{block}.{name[len(prefix) :].replace('norm.weight', 'norm.scale')}"] = tensor
    reference.load_state_dict(renamed)
    return reference


def build_model(name: str):
    """The model to measure, its vocabulary size, and a function from token ids to its model inputs (one-hot vectors
    for the published model, which takes them from its data loader: built outside the timed region)."""
    import torch

    torch.manual_seed(0)
    if name in ("lyra_hf", "reference"):
        from lyra_hf import LyraConfig, LyraForSequenceRegression

        model = LyraForSequenceRegression(LyraConfig(vocab_size=21))
        if name == "reference":
            vocab_size = model.config.vocab_size
            return build_reference_lyra(model), 21, lambda ids: torch.nn.functional.one_hot(ids, vocab_size).float()
        return model, 21, lambda ids: ids
    from transformers import EsmConfig, EsmForSequenceClassification

    hidden, layers, heads, intermediate = ESM_SHAPES[name]
    config = EsmConfig(
        vocab_size=33,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        position_embedding_type="rotary",
        max_position_embeddings=70000,
        pad_token_id=1,
        mask_token_id=32,
        token_dropout=False,
        num_labels=1,
    )
    return EsmForSequenceClassification(config), 33, lambda ids: ids


# --- worker: one measurement in this process ---------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_worker(spec: dict) -> dict:
    import torch

    if spec.get("retain_freed_memory"):
        from lyra_hf import retain_freed_memory

        retain_freed_memory()
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    model, vocab, model_inputs = build_model(spec["model"])
    model.to(device)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    length, task = spec["length"], spec["task"]
    batch = 1 if task == "memory" else max(1, TOKENS_PER_BATCH // length)
    generator = torch.Generator().manual_seed(0)
    inputs = model_inputs(torch.randint(4, vocab - 1, (batch, length), generator=generator).to(device))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.get("bf16", False))

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if task in ("inference", "memory"):
        model.eval()

        def step(batch_inputs):
            with torch.no_grad(), autocast:
                model(batch_inputs)
    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        labels = torch.randn(batch, device=device)

        def step(batch_inputs):
            with autocast:
                if spec["model"] == "reference":  # the published training loop: MSE on the decoder's output
                    predictions = model(batch_inputs).squeeze(-1)
                    loss = torch.nn.functional.mse_loss(predictions, labels[: len(batch_inputs)])
                else:
                    loss = model(batch_inputs, labels=labels[: len(batch_inputs)]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    if task == "memory":
        before = peak_rss_mb()
        step(inputs)
        return {"peak_rss_mb": peak_rss_mb(), "rss_before_forward_mb": before, "parameters": parameters}

    # Probe with one sequence to estimate the full batch; skip what would take too long.
    start = time.perf_counter()
    step(inputs[:1])
    synchronize()
    estimate = (time.perf_counter() - start) * batch
    if estimate > spec["max_forward_seconds"]:
        return {"skipped": True, "estimated_seconds": estimate, "parameters": parameters}
    step(inputs)  # warm-up (and, for lyra_hf in eval mode, the kernel cache)
    synchronize()
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        step(inputs)
        synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"seconds": seconds, "tokens_per_second": batch * length / seconds, "batch": batch, "parameters": parameters}


# --- orchestration -----------------------------------------------------------------------------------------------


def measure(spec: dict) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=environment
    )
    if completed.returncode != 0:
        return {
            "error": completed.stderr.strip().splitlines()[-1]
            if completed.stderr.strip()
            else f"exit {completed.returncode}"
        }
    return json.loads(completed.stdout.strip().splitlines()[-1])


def padding_fractions(seed: int = 0, count: int = 20000, batch_size: int = 64) -> dict:
    """Padded share of tokens for a protein-like length mix (log-normal, median 300, 30-2,000 residues)."""
    import numpy as np

    from lyra_hf.predict import length_buckets

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(math.log(300), 0.6, count).astype(int), 30, 2000)

    def padded_fraction(batches):
        padded = sum(len(batch) * lengths[batch].max() for batch in batches)
        return 1 - lengths.sum() / padded

    random_batches = np.array_split(rng.permutation(count), math.ceil(count / batch_size))
    return {
        "random batches": padded_fraction(random_batches),
        "length-bucketed batches": padded_fraction(length_buckets(lengths.tolist(), batch_size)),
    }


def reference_agreement(lengths=(7, 256, 1000)) -> float:
    """Largest absolute difference between lyra_hf's and the reference's outputs, over random batches of `lengths`."""
    import torch

    lyra, vocab, _ = build_model("lyra_hf")
    reference, _, one_hot = build_model("reference")
    difference = 0.0
    with torch.no_grad():
        for length in lengths:
            input_ids = torch.randint(4, vocab - 1, (3, length), generator=torch.Generator().manual_seed(length))
            outputs = lyra.eval()(input_ids).logits, reference.eval()(one_hot(input_ids))
            difference = max(difference, (outputs[0] - outputs[1]).abs().max().item())
    return difference


def fmt(entry: dict | None, key: str = "tokens_per_second") -> str:
    if not entry:
        return "—"
    if entry.get("skipped"):
        return f"skipped (~{entry['estimated_seconds']:,.0f} s/forward)"
    if "error" in entry:
        return f"error: {entry['error'][:60]}"
    return f"{entry[key]:,.0f}"


def ratio(a: dict | None, b: dict | None, key: str = "tokens_per_second") -> str:
    if a and b and key in a and key in b:
        value = a[key] / b[key]
        return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"
    if a and b and key in a and b.get("skipped"):  # against the skipped model's estimated speed
        return f"~{a[key] * b['estimated_seconds'] / TOKENS_PER_BATCH:,.0f}x (est.)"
    return "—"


def render(results: dict, rows: list[str]) -> str:
    """The Markdown tables of a run's results."""
    setup = results["setup"]
    inference, training, memory = results["inference"], results["training"], results["memory"]
    allocator = "freed memory retained for reuse" if setup.get("retain_freed_memory") else "default allocator"
    lines = [
        f"Device {setup['device']}, {setup['threads']} thread(s), float32, {allocator}; median of {setup['repeats']} "
        f"after a warm-up; batch x L = {TOKENS_PER_BATCH:,} tokens."
    ]
    if "reference_max_abs_difference" in results:
        lines.append(
            f"Reference outputs equal lyra_hf's to {results['reference_max_abs_difference']:.1e} (largest absolute "
            "difference)."
        )
    lines.append("")
    lines += [
        "Inference, tokens/s:",
        "",
        "| model | parameters | " + " | ".join(f"L = {length:,}" for length in LENGTHS) + " |",
        "| --- | ---: |" + " ---: |" * len(LENGTHS),
    ]
    for row in rows:
        parameters = next(
            (entry.get("parameters") for entry in inference[row].values() if entry.get("parameters")), None
        )
        lines.append(
            f"| {row} | {parameters:,} | " + " | ".join(fmt(inference[row].get(length)) for length in LENGTHS) + " |"
        )
    for other in ("reference", "esm2_8m"):
        if "lyra_hf" in inference and other in inference:
            lines.append(
                f"| lyra_hf / {other} | | "
                + " | ".join(ratio(inference["lyra_hf"][length], inference[other][length]) for length in LENGTHS)
                + " |"
            )
    if "lyra_hf" in inference:
        lyra = inference["lyra_hf"]
        if "tokens_per_second" in lyra[65536] and "tokens_per_second" in lyra[4096]:
            lines += [
                "",
                "Scaling: lyra_hf tokens/s at L = 65,536 / at L = 4,096 = "
                f"{lyra[65536]['tokens_per_second'] / lyra[4096]['tokens_per_second']:.2f}",
            ]
    if training:
        lines += [
            "",
            "Training step (forward + backward + AdamW), tokens/s:",
            "",
            "| model | " + " | ".join(f"L = {length:,}" for length in TRAIN_LENGTHS) + " |",
            "| --- |" + " ---: |" * len(TRAIN_LENGTHS),
        ]
        for row, entries in training.items():
            lines.append(f"| {row} | " + " | ".join(fmt(entries.get(length)) for length in TRAIN_LENGTHS) + " |")
        if "lyra_hf" in training and "reference" in training:
            lines.append(
                "| lyra_hf / reference | "
                + " | ".join(
                    ratio(training["lyra_hf"][length], training["reference"][length]) for length in TRAIN_LENGTHS
                )
                + " |"
            )
    if memory:
        lines += [
            "",
            "Peak resident memory of one forward of one sequence (fresh process), MB:",
            "",
            "| model | " + " | ".join(f"L = {length:,}" for length in MEMORY_LENGTHS) + " |",
            "| --- |" + " ---: |" * len(MEMORY_LENGTHS),
        ]
        for row, entries in memory.items():
            lines.append(
                f"| {row} | " + " | ".join(fmt(entries.get(length), "peak_rss_mb") for length in MEMORY_LENGTHS) + " |"
            )
    padding = results["padding"]
    lines += [
        "",
        "Padded-token fraction, 20,000 protein-like lengths (log-normal, median 300), batches of 64: "
        + ", ".join(f"{name} {value:.1%}" for name, value in padding.items()),
    ]
    return "\n".join(lines)


def from_json(path: str) -> tuple[dict, list[str]]:
    """A run's results read back from its JSON (whose keys are strings), and its rows."""
    results = json.loads(Path(path).read_text())
    for table in ("inference", "training", "memory"):
        results[table] = {
            row: {int(length): entry for length, entry in entries.items()} for row, entries in results[table].items()
        }
    return results, list(results["inference"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-forward-seconds", type=float, default=60.0)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    parser.add_argument("--retain-freed-memory", action="store_true", help="every worker keeps freed memory for reuse")
    parser.add_argument("--output", default="speed", help="writes OUTPUT.json and OUTPUT.md")
    parser.add_argument("--render", metavar="JSON", help="print the tables of an earlier run's OUTPUT.json and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    if args.render:
        print(render(*from_json(args.render)))
        return

    models = [name for name in args.models.split(",") if name]
    rows = list(models) + (["lyra_hf (bf16 autocast)"] if args.device == "cuda" else [])
    common = {
        "threads": args.threads,
        "device": args.device,
        "repeats": args.repeats,
        "max_forward_seconds": args.max_forward_seconds,
        "retain_freed_memory": args.retain_freed_memory,
    }
    results = {
        "inference": {},
        "training": {},
        "memory": {},
        "setup": {**common, "machine": platform.processor() or platform.machine()},
    }
    if "lyra_hf" in models and "reference" in models:
        results["reference_max_abs_difference"] = reference_agreement()
    for row in rows:
        name, bf16 = row.split(" ")[0], "bf16" in row
        for length in LENGTHS:
            previous = results["inference"].get(row, {}).get(length // 4, {})
            if name.startswith("esm") and length > 4096 and ("seconds" in previous or previous.get("skipped")):
                # Attention scores alone (heads x L^2 floats per layer) would fill this machine's memory: estimate
                # from the previous length instead (cost per token grows with L once attention dominates).
                seconds = previous.get("seconds") or previous["estimated_seconds"]
                gigabytes = ESM_SHAPES[name][2] * length**2 * 4 / 1e9
                entry = {
                    "skipped": True,
                    "estimated_seconds": seconds * 4,
                    "reason": f"attention scores need {gigabytes:,.0f} GB per layer",
                }
            else:
                entry = measure({**common, "model": name, "bf16": bf16, "task": "inference", "length": length})
            results["inference"].setdefault(row, {})[length] = entry
            print(row, "inference", length, results["inference"][row][length], file=sys.stderr, flush=True)
        if name in ("lyra_hf", "reference"):
            for length in TRAIN_LENGTHS:
                results["training"].setdefault(row, {})[length] = measure(
                    {**common, "model": name, "bf16": bf16, "task": "train", "length": length}
                )
                print(row, "training", length, results["training"][row][length], file=sys.stderr, flush=True)
            if not bf16:
                for length in MEMORY_LENGTHS:
                    results["memory"].setdefault(row, {})[length] = measure(
                        {**common, "model": name, "task": "memory", "length": length}
                    )
                    print(row, "memory", length, results["memory"][row][length], file=sys.stderr, flush=True)
    results["padding"] = padding_fractions()

    table = render(results, rows)
    print(table)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    for suffix, content in ((".json", json.dumps(results, indent=2)), (".md", table + "\n")):
        temporary = output.with_name(output.name + suffix + ".tmp")
        temporary.write_text(content)
        os.replace(temporary, output.with_name(output.name + suffix))


if __name__ == "__main__":
    main()
