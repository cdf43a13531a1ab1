"""Wall time of `analyze` versus a straightforward Hugging Face implementation, on SmolLM2-135M (30 layers, 9 heads).

The straightforward one: transformers with ``output_attentions=True`` (eager attention), then for every sequence,
layer and head a NumPy SVD (float64) for k* and a column-mass count for m*, one matrix at a time. Both see the
same N windows of T tokens of real news text (gensim's Lee corpus); the script also checks that both give the same
Rank(h, l) table. Two ratios: `analyze` as a user runs it (every measure) and our attention rank and mass alone, each
against the straightforward rank and mass. Goal: ours <= 0.5 of the straightforward time for the same two measures.

It also times the attention rank and mass alone (the analysis before block influence, angular distance, skip loss,
entropy and sink mass were added; same pass, same batches): the whole analysis should cost under 2x that. The two
are timed in turn --repeats times and the fastest of each is kept, so that a burst of load from other processes on
the machine weighs on the ratio less; the CPU time of this process is reported beside the wall time.

    .venv/bin/python benchmarks/analyze_speed.py [--num_sequences 100 --seq_len 100 --skip_sequences 3 --repeats 2]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from litgpt_inheritune.analyze import analyze_model, default_skip_sequences, load_model, sample_windows
from litgpt_inheritune.attention import approximate_rank, capture_attention, column_mass_count

sys.path.append(str(Path(__file__).resolve().parents[1]))  # materials.py: demo and test material, not in the package
from materials import DEFAULT_CACHE, fetch, lee_corpus, smollm2_checkpoint  # noqa: E402


def straightforward(gguf_file: Path, windows: torch.Tensor, tau: float, eta: float) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, torch_dtype=torch.float32, attn_implementation="eager"
    ).eval()
    n_layer, n_head = model.config.num_hidden_layers, model.config.num_attention_heads
    rank = np.zeros((n_layer, n_head))
    mass = np.zeros((n_layer, n_head))
    with torch.no_grad():
        for window in windows:
            attentions = model(window[None], output_attentions=True).attentions
            for layer, probabilities in enumerate(attentions):
                for head in range(n_head):
                    a = probabilities[0, head].double().numpy()
                    energy = np.linalg.svd(a, compute_uv=False) ** 2
                    rank[layer, head] += np.searchsorted(np.cumsum(energy) / energy.sum(), tau - 1e-9) + 1
                    columns = np.sort((a**2).sum(axis=0))[::-1]
                    mass[layer, head] += np.searchsorted(np.cumsum(columns) / columns.sum(), eta - 1e-9) + 1
    return {"rank": rank / len(windows), "mass": mass / len(windows)}


@torch.no_grad()
def rank_and_mass_only(model, windows: torch.Tensor, tau: float, eta: float, batch_size: int) -> None:
    """The analysis as it was before the other measures: attention rank and mass, no LM head."""
    head, model.lm_head = model.lm_head, torch.nn.Identity()
    model.max_seq_length = windows.size(1)

    def sink(layer: int, probabilities: torch.Tensor) -> None:
        approximate_rank(probabilities, tau).sum(dim=0)
        column_mass_count(probabilities, eta).sum(dim=0)

    with capture_attention(model, sink):
        for batch in windows.split(batch_size):
            model(batch)
    model.lm_head = head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_sequences", type=int, default=100)
    parser.add_argument("--seq_len", type=int, default=100)
    parser.add_argument("--skip_sequences", type=int, default=None, help="default: analyze's (3 of 100 windows)")
    parser.add_argument("--repeats", type=int, default=2, help="timings of each; the fastest is kept")
    parser.add_argument(
        "--straightforward",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the Hugging Face + NumPy reference (--no-straightforward: only the 2x ratio)",
    )
    parser.add_argument("--cache_dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()

    checkpoint = smollm2_checkpoint(args.cache_dir)
    from litgpt.tokenizer import Tokenizer

    windows = sample_windows(
        Tokenizer(checkpoint), lee_corpus(args.cache_dir), args.num_sequences, args.seq_len, seed=42
    )

    model = load_model(checkpoint)
    rank_and_mass_only(model, windows[:2], tau=0.9, eta=0.9, batch_size=10)  # warm-up: page the weights in
    times = {"rank_and_mass": [], "all_measures": []}
    for _ in range(args.repeats):
        start = time.perf_counter(), time.process_time()
        rank_and_mass_only(model, windows, tau=0.9, eta=0.9, batch_size=10)
        times["rank_and_mass"].append((time.perf_counter() - start[0], time.process_time() - start[1]))
        start = time.perf_counter(), time.process_time()
        ours = analyze_model(
            model, windows, tau=0.9, eta=0.9, lazy_threshold=2.0, batch_size=10, skip_sequences=args.skip_sequences
        )
        times["all_measures"].append((time.perf_counter() - start[0], time.process_time() - start[1]))
    (rank_and_mass_seconds, ours_seconds), (rank_and_mass_cpu, ours_cpu) = (
        (min(t[i] for t in v) for v in times.values()) for i in (0, 1)
    )
    report = {
        "num_sequences": args.num_sequences,
        "seq_len": args.seq_len,
        "skip_sequences": args.skip_sequences or default_skip_sequences(args.num_sequences),
        "ours_seconds": round(ours_seconds, 1),
        "rank_and_mass_only_seconds": round(rank_and_mass_seconds, 1),
        "all_measures_over_rank_and_mass": round(ours_seconds / rank_and_mass_seconds, 2),
        "all_measures_over_rank_and_mass_cpu_time": round(ours_cpu / rank_and_mass_cpu, 2),
        "every_run_wall_and_cpu_seconds": {k: [[round(x, 1) for x in t] for t in v] for k, v in times.items()},
        "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
    }
    if args.straightforward:
        start = time.perf_counter()
        baseline = straightforward(fetch("smollm2", args.cache_dir), windows, tau=0.9, eta=0.9)
        baseline_seconds = time.perf_counter() - start
        report.update(
            straightforward_seconds=round(baseline_seconds, 1),
            ratio=round(ours_seconds / baseline_seconds, 3),  # every measure against rank and mass there
            rank_and_mass_ratio=round(rank_and_mass_seconds / baseline_seconds, 3),  # the same two measures
            max_abs_rank_difference=float(np.abs(np.array(ours["rank"]) - baseline["rank"]).max()),
            max_abs_mass_difference=float(np.abs(np.array(ours["mass"]) - baseline["mass"]).max()),
            lazy_layers=ours["lazy_layers"],
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
