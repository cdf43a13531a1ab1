"""`litgpt inheritune analyze`: attention rank and column mass per head and layer, lazy layers, plots and tables."""

import csv
import io
import json
import sys
from pathlib import Path
from typing import Optional

import torch
from litgpt.model import GPT
from litgpt.tokenizer import Tokenizer
from tqdm import tqdm

from litgpt_inheritune.attention import (
    approximate_rank,
    best_windows,
    capture_attention,
    column_mass_count,
    lazy_layers,
    potent_prefix,
)
from litgpt_inheritune.checkpoint import fail, load_gpt, resolve_checkpoint_dir, write_text_atomic

TEXT_SUFFIXES = (".txt", ".jsonl")


def main(
    checkpoint_dir: Path,
    data_path: Optional[Path] = None,
    out_dir: Path = Path("out/inheritune/analyze"),
    num_sequences: int = 100,
    seq_len: int = 100,
    seed: int = 42,
    tau: float = 0.9,
    eta: float = 0.9,
    lazy_threshold: float = 2.0,
    batch_size: int = 10,
    checkpoints: Optional[list[Path]] = None,
    plots: bool = True,
) -> dict:
    """Measure attention collapse: approximate rank and column mass of every head's attention matrix.

    For N random windows of T tokens: k* (singular values needed for a fraction tau of the energy) and m* (columns
    needed for a fraction eta of the squared mass) of each head's T x T attention matrix; Rank(h, l) and m(h, l) are
    their means. MaxRank(l) = max over heads, AvgMass(l) = mean over heads. Layers with MaxRank below
    lazy_threshold are lazy. Writes attention.json, layers.csv, heads.csv and PNG plots to out_dir.

    Arguments:
        checkpoint_dir: A LitGPT checkpoint directory, or a `pretrain` out_dir (its step-* folders and final/ are
            analysed in training order, to watch lazy layers appear or heal).
        data_path: A text file, a folder of .txt/.jsonl files, or a RedPajama-style .jsonl file.
        out_dir: Where the tables and plots go.
        num_sequences: N, the number of random windows (the paper: 100).
        seq_len: T, tokens per window (the paper: 100).
        seed: Seed for drawing the windows.
        tau: Energy fraction for the approximate rank k*.
        eta: Mass fraction for the column count m*.
        lazy_threshold: Layers whose MaxRank is below this are reported as lazy.
        batch_size: Windows per forward pass.
        checkpoints: More checkpoint directories to analyse and compare with checkpoint_dir.
        plots: Write PNG plots.
    """
    runs = checkpoint_list(resolve_checkpoint_dir(checkpoint_dir), checkpoints)
    if data_path is None or not Path(data_path).exists():
        fail(f"--data_path {data_path} does not exist; give a text file, a .jsonl file or a folder of them")
    for name, value in (("num_sequences", num_sequences), ("seq_len", seq_len), ("batch_size", batch_size)):
        if value < 1:
            fail(f"--{name} {value} must be at least 1")
    for name, value in (("tau", tau), ("eta", eta)):
        if not 0 < value <= 1:
            fail(f"--{name} {value} must be in (0, 1]")
    settings = dict(data_path=str(data_path), num_sequences=num_sequences, seq_len=seq_len, seed=seed, tau=tau,
                    eta=eta, lazy_threshold=lazy_threshold)

    results = {}
    for checkpoint in runs:
        target = out_dir if len(runs) == 1 else out_dir / checkpoint.name
        model = load_model(checkpoint)
        windows = sample_windows(Tokenizer(checkpoint), Path(data_path), num_sequences, seq_len, seed)
        result = analyze_model(model, windows, tau, eta, lazy_threshold, batch_size, desc=checkpoint.name)
        result.update(settings=settings, checkpoint=str(checkpoint), name=model.config.name)
        write_tables(result, target)
        if plots:
            from litgpt_inheritune.plots import plot_analysis

            plot_analysis(result, target)
        results[checkpoint.name] = result
        print(summary(result), file=sys.stderr)
    if len(runs) > 1:
        write_trajectory(results, out_dir, plots)
    return results[runs[0].name] if len(runs) == 1 else results


def checkpoint_list(checkpoint_dir: Path, checkpoints: Optional[list[Path]]) -> list[Path]:
    """checkpoint_dir (or the step-* and final/ checkpoints of a pretrain out_dir), then --checkpoints."""
    checkpoint_dir = Path(checkpoint_dir)
    steps = sorted(checkpoint_dir.glob("step-*/lit_model.pth"))
    runs = [p.parent for p in steps] + ([checkpoint_dir / "final"] if (checkpoint_dir / "final" / "lit_model.pth").is_file() else [])
    runs = (runs or [checkpoint_dir]) + [Path(c) for c in checkpoints or []]
    if len({run.name for run in runs}) < len(runs):
        fail(f"checkpoints {[str(r) for r in runs]} share folder names; their results would overwrite each other")
    for run in runs:
        missing = [n for n in ("lit_model.pth", "model_config.yaml") if not (run / n).is_file()]
        if missing:
            fail(f"checkpoint {run} is missing {', '.join(missing)}; expected a LitGPT checkpoint directory")
    return runs


def load_model(checkpoint_dir: Path) -> GPT:
    model = load_gpt(checkpoint_dir)
    model.lm_head = torch.nn.Identity()  # the analysis needs attention, not logits: skip the vocabulary projection
    return model.float().eval()


def read_documents(data_path: Path) -> list[str]:
    files = [data_path] if data_path.is_file() else sorted(p for p in data_path.rglob("*") if p.suffix in TEXT_SUFFIXES)
    documents = []
    for path in files:
        if path.suffix == ".jsonl":
            documents += [json.loads(line).get("text", "") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            documents.append(path.read_text(encoding="utf-8"))
    return [d for d in documents if d.strip()]


def sample_windows(tokenizer: Tokenizer, data_path: Path, n: int, seq_len: int, seed: int) -> torch.Tensor:
    """N windows of seq_len tokens at random offsets of the concatenated documents (EOS between them)."""
    documents = read_documents(data_path)
    stream = torch.cat([tokenizer.encode(d, eos=True) for d in documents]) if documents else torch.empty(0, dtype=torch.int)
    if len(stream) < seq_len:
        fail(f"--data_path {data_path} holds {len(stream)} tokens, fewer than --seq_len {seq_len}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - seq_len + 1, (n,), generator=generator)
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()]).long()


@torch.no_grad()
def analyze_model(model: GPT, windows: torch.Tensor, tau: float, eta: float, lazy_threshold: float,
                  batch_size: int, desc: str = "analyze") -> dict:
    n_layer, n_head = model.config.n_layer, model.config.n_head
    rank_sum = torch.zeros(n_layer, n_head, dtype=torch.float64)
    mass_sum = torch.zeros(n_layer, n_head, dtype=torch.float64)
    example = {}

    def sink(layer: int, probabilities: torch.Tensor) -> None:
        rank_sum[layer] += approximate_rank(probabilities, tau).sum(dim=0)
        mass_sum[layer] += column_mass_count(probabilities, eta).sum(dim=0)
        if layer not in example:
            example[layer] = probabilities[0]  # the first window's maps, for the plots

    if windows.size(1) > model.config.block_size:
        fail(f"--seq_len {windows.size(1)} exceeds the model's context of {model.config.block_size} tokens")
    model.max_seq_length = windows.size(1)
    with capture_attention(model, sink):
        for batch in tqdm(windows.split(batch_size), desc=desc, unit="batch", file=sys.stderr, disable=None):
            model(batch)
    rank = rank_sum / len(windows)
    mass = mass_sum / len(windows)
    max_rank = rank.max(dim=1).values.tolist()
    return {
        "max_rank": max_rank,
        "avg_mass": mass.mean(dim=1).tolist(),
        "rank": rank.tolist(),
        "mass": mass.tolist(),
        "lazy_layers": lazy_layers(max_rank, lazy_threshold),
        "suggested_layers": {
            "prefix": potent_prefix(max_rank, lazy_threshold),
            "best_window": {str(n): layers for n, layers in best_windows(max_rank).items()},
        },
        "example_attention": {layer: maps.tolist() for layer, maps in example.items()},
    }


def write_tables(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in result.items() if k != "example_attention"}
    write_text_atomic(out_dir / "attention.json", json.dumps(public, indent=2) + "\n")
    lazy = set(result["lazy_layers"])
    rows = [[layer, f"{r:.4f}", f"{m:.4f}", layer in lazy] for layer, (r, m) in enumerate(zip(result["max_rank"], result["avg_mass"]))]
    write_csv(out_dir / "layers.csv", ["layer", "max_rank", "avg_mass", "lazy"], rows)
    rows = [[layer, head, f"{r:.4f}", f"{m:.4f}"] for layer, (ranks, masses) in enumerate(zip(result["rank"], result["mass"]))
            for head, (r, m) in enumerate(zip(ranks, masses))]
    write_csv(out_dir / "heads.csv", ["layer", "head", "rank", "mass"], rows)


def write_trajectory(results: dict, out_dir: Path, plots: bool) -> None:
    """MaxRank per layer for every checkpoint, in training order."""
    rows = [[name, layer, f"{r:.4f}", f"{m:.4f}"] for name, result in results.items()
            for layer, (r, m) in enumerate(zip(result["max_rank"], result["avg_mass"]))]
    write_csv(out_dir / "trajectory.csv", ["checkpoint", "layer", "max_rank", "avg_mass"], rows)
    trajectory = {name: {k: result[k] for k in ("max_rank", "avg_mass", "lazy_layers")} for name, result in results.items()}
    write_text_atomic(out_dir / "trajectory.json", json.dumps(trajectory, indent=2) + "\n")
    if plots:
        from litgpt_inheritune.plots import plot_trajectory

        plot_trajectory(results, out_dir)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def summary(result: dict) -> str:
    lazy = result["lazy_layers"]
    prefix = result["suggested_layers"]["prefix"]
    return (
        f"{result['name']}: {len(result['max_rank'])} layers, MaxRank "
        + " ".join(f"{r:.1f}" for r in result["max_rank"])
        + f"; lazy layers {lazy or 'none'}; potent prefix {len(prefix)} layers"
    )
