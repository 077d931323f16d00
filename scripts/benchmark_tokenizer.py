"""Tokenizer throughput against transformers' Python character tokenizers and the model's own training speed.

    python scripts/benchmark_tokenizer.py [--num-sequences 100000] [--length 237] [--batch-size 1000]

All on one thread (torch, tokenizers' Rust pool and BLAS pinned), in one run, so the ratios are side by side.
"""

import argparse
import json
import os
import platform
import random
import time


os.environ.setdefault("RAYON_NUM_THREADS", "1")  # the tokenizers backend's thread pool
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import datasets
import torch
import transformers
from datasets import Dataset
from transformers import ByT5Tokenizer, CanineTokenizer

from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer


def sequences_per_second(tokenizer, sequences, batch_size):
    start = time.perf_counter()
    for offset in range(0, len(sequences), batch_size):
        tokenizer(sequences[offset : offset + batch_size], padding=True, return_tensors="pt")
    return len(sequences) / (time.perf_counter() - start)


def dataset_map_sequences_per_second(tokenizer, sequences, num_proc):
    """Tokenize a `datasets.Dataset` column as `lyra_hf.data.tokenize_dataset` does (Arrow in and out, no tensors)."""
    dataset = Dataset.from_dict({"sequence": sequences})
    start = time.perf_counter()
    dataset.map(lambda batch: tokenizer(batch["sequence"]), batched=True, num_proc=num_proc, load_from_cache_file=False)
    return len(sequences) / (time.perf_counter() - start)


def training_sequences_per_second(length, batch_size=64, steps=10):
    torch.manual_seed(0)
    model = LyraForSequenceRegression(LyraConfig()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    input_ids = torch.randint(5, 26, (batch_size, length))
    labels = torch.randn(batch_size)
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            start = time.perf_counter()
        loss = model(input_ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-sequences", type=int, default=100_000)
    parser.add_argument("--length", type=int, default=237)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rng = random.Random(0)
    letters = "ACDEFGHIKLMNPQRSTVWY"
    sequences = ["".join(rng.choice(letters) for _ in range(args.length)) for _ in range(args.num_sequences)]
    backend_only = LyraTokenizer()
    backend_only._encode_with_lookup_table = lambda *args, **kwargs: None  # what input with whitespace etc. takes
    tokenizers = {
        "LyraTokenizer": LyraTokenizer(),
        "LyraTokenizer, Rust backend path (input with whitespace or unknown characters)": backend_only,
        "CanineTokenizer": CanineTokenizer(),
        "ByT5Tokenizer": ByT5Tokenizer(),
    }
    for tokenizer in tokenizers.values():  # warm-up
        tokenizer(sequences[:100], padding=True, return_tensors="pt")
    results = {name: sequences_per_second(tok, sequences, args.batch_size) for name, tok in tokenizers.items()}
    datasets.disable_progress_bars()
    for num_proc in (1, 2):
        results[f"LyraTokenizer in Dataset.map(batched=True, num_proc={num_proc})"] = dataset_map_sequences_per_second(
            LyraTokenizer(), sequences, num_proc
        )
    results["model training step (default LyraForSequenceRegression, batch 64)"] = training_sequences_per_second(
        args.length
    )

    lyra = results["LyraTokenizer"]
    fastest_python = max(results["CanineTokenizer"], results["ByT5Tokenizer"])
    training = results["model training step (default LyraForSequenceRegression, batch 64)"]
    print(
        f"{args.num_sequences} random protein sequences of length {args.length}, batches of {args.batch_size}, "
        f"padding, return_tensors='pt', 1 thread; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}\n"
    )
    print("| what | sequences/s | LyraTokenizer is |")
    print("| --- | ---: | ---: |")
    for name, value in results.items():
        print(f"| {name} | {value:,.0f} | {lyra / value:.2f}x |")
    print(f"\nLyraTokenizer / faster of CANINE and ByT5: {lyra / fastest_python:.2f}x (target >= 1.3x)")
    print(f"LyraTokenizer / model training throughput: {lyra / training:.1f}x (target >= 10x)")
    if args.output:
        with open(args.output + ".tmp", "w") as handle:
            json.dump(results, handle, indent=2)
        os.replace(args.output + ".tmp", args.output)


if __name__ == "__main__":
    main()
