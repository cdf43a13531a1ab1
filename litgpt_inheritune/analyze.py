"""`litgpt inheritune analyze`: attention rank and column mass per head and layer beside other layer-redundancy
measures, lazy layers, plots and tables."""

import csv
import io
import json
import random
import sys
from pathlib import Path
from typing import Iterator, Literal, Optional

import torch
from litgpt.model import GPT
from litgpt.tokenizer import Tokenizer
from tqdm import tqdm

from litgpt_inheritune.attention import (
    approximate_rank,
    attention_entropy,
    best_windows,
    capture_attention,
    column_mass_count,
    first_token_mass,
    lazy_layers,
    potent_prefix,
)
from litgpt_inheritune.checkpoint import STEP_DIR_PREFIX, check_checkpoint, load_gpt, resolve_checkpoint_dir
from litgpt_inheritune.errors import fail
from litgpt_inheritune.documents import TEXT_FIELD, BadInput, file_documents
from litgpt_inheritune.files import check_out_dir, staged_dir, write_text_atomic
from litgpt_inheritune.redundancy import angular_distance, block_influence, capture_block_inputs, skip_loss_sums

TEXT_SUFFIXES = (".txt", ".jsonl")
DTYPES = {"32-true": torch.float32, "bf16-true": torch.bfloat16, "16-true": torch.float16}


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
    window_sizes: Optional[list[int]] = None,
    skip_sequences: Optional[int] = None,
    device: str = "cpu",
    precision: Literal["32-true", "bf16-true", "16-true"] = "32-true",
    checkpoints: Optional[list[Path]] = None,
    plots: bool = True,
    overwrite: bool = False,
) -> dict:
    """Measure attention collapse and layer redundancy: attention rank and column mass beside block influence,
    angular distance, skip-one-block loss increase, attention entropy and first-token (sink) mass.

    For N random windows of T tokens (each inside one document): k* (singular values needed for a fraction tau of
    the energy) and m* (columns needed for a fraction eta of the squared mass) of each head's T x T attention matrix;
    Rank(h, l) and m(h, l) are their means. MaxRank(l) = max over heads, AvgMass(l) = mean over heads. Layers with
    MaxRank below lazy_threshold are lazy. The same pass gives the other measures (see docs/analyze.md). Writes
    attention.json, layers.csv, heads.csv, windows.csv and PNG plots to out_dir. Layers are 0-based.

    Arguments:
        checkpoint_dir: A LitGPT checkpoint directory, or a `pretrain` out_dir (its step-* folders and final/ are
            analysed in training order, to watch lazy layers appear or heal).
        data_path: A text file (one document), a RedPajama-style .jsonl file (one {"text": ...} document a line), or
            a folder of them. Only the documents needed for the windows are read and tokenized.
        out_dir: Where the tables and plots go. Must be empty or absent unless --overwrite true.
        num_sequences: N, the number of random windows (the paper: 100).
        seq_len: T, tokens per window (the paper: 100).
        seed: Seed for drawing the windows.
        tau: Energy fraction for the approximate rank k*.
        eta: Mass fraction for the column count m*.
        lazy_threshold: Layers whose MaxRank is below this are reported as lazy.
        batch_size: Windows per forward pass.
        window_sizes: Sizes n of the block windows whose angular distance is measured (default: every n in 1..L).
        skip_sequences: The skip-one-block loss increase is measured on the first this many windows (it re-runs
            the later blocks and the LM head once per block, the costliest measure). Default: one window in 32
            (3 of 100), which keeps the whole analysis under twice the cost of attention rank and mass alone.
        device: Where the model runs: "cpu", "cuda", "cuda:1", "mps".
        precision: The model's weights and activations: "32-true" (float32), "bf16-true" or "16-true". The measures
            themselves are computed in float32.
        checkpoints: More checkpoint directories to analyse and compare with checkpoint_dir (placed before a
            pretrain out_dir's step-* and final/ checkpoints, e.g. the inherited model they started from).
        plots: Write PNG plots.
        overwrite: Replace a non-empty out_dir (as a whole: nothing of an earlier analysis stays).
    """
    if data_path is None:
        fail("--data_path is required: the text file, .jsonl file or folder of them that the windows are drawn from")
    if not Path(data_path).exists():
        fail(f"--data_path {data_path} does not exist; give a text file, a .jsonl file or a folder of them")
    runs = checkpoint_list(resolve_checkpoint_dir(checkpoint_dir), checkpoints)
    skip_sequences = default_skip_sequences(num_sequences) if skip_sequences is None else skip_sequences
    for name, value, least in (
        ("num_sequences", num_sequences, 1),
        ("seq_len", seq_len, 2),
        ("batch_size", batch_size, 1),
        ("skip_sequences", skip_sequences, 1),
    ):
        if value < least:
            fail(f"--{name} {value} must be at least {least}")
    for name, value in (("tau", tau), ("eta", eta)):
        if not 0 < value <= 1:
            fail(f"--{name} {value} must be in (0, 1]")
    if precision not in DTYPES:
        fail(f"--precision {precision} is not supported; valid: {', '.join(DTYPES)}")
    device = check_device(device)
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite, protected=tuple(runs))
    settings = dict(
        data_path=str(data_path),
        num_sequences=num_sequences,
        seq_len=seq_len,
        seed=seed,
        tau=tau,
        eta=eta,
        lazy_threshold=lazy_threshold,
        skip_sequences=min(skip_sequences, num_sequences),
        device=str(device),
        precision=precision,
        dtype=str(DTYPES[precision]).removeprefix("torch."),
        windows="one per document of at least seq_len tokens, at a random offset inside it",
    )

    results = {}
    with staged_dir(out_dir) as staging:
        for checkpoint in runs:
            label = checkpoint.name if len(runs) > 1 else None
            target = staging if label is None else staging / checkpoint.name
            model = load_model(checkpoint, device, precision)
            windows = sample_windows(Tokenizer(checkpoint), Path(data_path), num_sequences, seq_len, seed)
            result = analyze_model(
                model, windows, tau, eta, lazy_threshold, batch_size, window_sizes, skip_sequences, desc=checkpoint.name
            )
            result.update(
                settings=dict(settings, window_sizes=list(map(int, result["angular_distance"]))),
                checkpoint=str(checkpoint),
                name=model.config.name,
                label=label or model.config.name,
            )
            write_tables(result, target)
            if plots:
                from litgpt_inheritune.plots import plot_analysis

                plot_analysis(result, target)
            results[checkpoint.name] = result
            print(summary(result), file=sys.stderr)
            del model
        if len(runs) > 1:
            write_trajectory(results, staging, plots)
    return results[runs[0].name] if len(runs) == 1 else results


def default_skip_sequences(num_sequences: int) -> int:
    return max(1, round(num_sequences / 32))


def check_device(device: str) -> torch.device:
    try:
        device = torch.device(device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        fail(
            f"--device {device} is not usable here ({str(error).splitlines()[0]}); valid: cpu, or cuda/mps where available"
        )
    return device


def checkpoint_list(checkpoint_dir: Path, checkpoints: Optional[list[Path]]) -> list[Path]:
    """--checkpoints then the step-* and final/ checkpoints of a pretrain out_dir in training order; or checkpoint_dir
    then --checkpoints."""
    checkpoint_dir = Path(checkpoint_dir)
    steps = sorted(checkpoint_dir.glob(f"{STEP_DIR_PREFIX}*/lit_model.pth"))
    trained = [p.parent for p in steps] + (
        [checkpoint_dir / "final"] if (checkpoint_dir / "final" / "lit_model.pth").is_file() else []
    )
    extra = [Path(c) for c in checkpoints or []]
    runs = extra + trained if trained else [checkpoint_dir] + extra
    if len({run.name for run in runs}) < len(runs):
        fail(f"checkpoints {[str(r) for r in runs]} share folder names; their results would overwrite each other")
    for run in runs:
        check_checkpoint(run, "checkpoint")
    return runs


def load_model(checkpoint_dir: Path, device: str = "cpu", precision: str = "32-true") -> GPT:
    return load_gpt(checkpoint_dir).to(device=device, dtype=DTYPES[precision]).eval()


def iter_documents(data_path: Path, seed: int, text_field: str = TEXT_FIELD) -> Iterator[str]:
    """The documents of a text file, a .jsonl file or a folder of them (file order shuffled by seed), read lazily."""
    files = (
        [data_path]
        if data_path.is_file()
        else sorted(p for p in data_path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())
    )
    random.Random(seed).shuffle(files)
    for path in files:
        try:
            yield from file_documents(path, text_field)
        except BadInput as error:
            if error.line is None:
                fail(str(error))
            fail(f"{path} line {error.line} is not a JSON object with a '{text_field}' field")


def sample_windows(
    tokenizer: Tokenizer, data_path: Path, n: int, seq_len: int, seed: int, text_field: str = TEXT_FIELD
) -> torch.Tensor:
    """N windows of seq_len tokens, each inside one document, so no end-of-text or start-of-text token of a
    neighbouring document sits inside a window (it would act as an artificial attention sink).

    Documents are read and tokenized one at a time until N of them hold at least seq_len tokens; each gives one
    window at a random offset. With fewer such documents in the whole data, windows are spread over them at random.
    """
    documents = []
    for text in iter_documents(data_path, seed, text_field):
        tokens = tokenizer.encode(text)
        if len(tokens) >= seq_len:
            documents.append(tokens)
            if len(documents) == n:
                break
    if not documents:
        fail(f"--data_path {data_path} holds no document of at least --seq_len {seq_len} tokens")
    generator = torch.Generator().manual_seed(seed)
    picks = (
        list(range(len(documents)))
        + torch.randint(0, len(documents), (n - len(documents),), generator=generator).tolist()
    )
    windows = []
    for pick in picks:
        start = torch.randint(0, len(documents[pick]) - seq_len + 1, (1,), generator=generator).item()
        windows.append(documents[pick][start : start + seq_len])
    return torch.stack(windows).long()


@torch.no_grad()
def analyze_model(
    model: GPT,
    windows: torch.Tensor,
    tau: float,
    eta: float,
    lazy_threshold: float,
    batch_size: int,
    window_sizes: Optional[list[int]] = None,
    skip_sequences: Optional[int] = None,
    desc: str = "analyze",
) -> dict:
    """Every measure from one pass over the windows; the skip losses re-run the later blocks on the first windows."""
    n_layer, n_head = model.config.n_layer, model.config.n_head
    window_sizes = check_window_sizes(window_sizes, n_layer)
    if windows.size(1) > model.config.block_size:
        fail(f"--seq_len {windows.size(1)} exceeds the model's context of {model.config.block_size} tokens")
    per_head = {
        name: torch.zeros(n_layer, n_head, dtype=torch.float64) for name in ("rank", "mass", "entropy", "sink_mass")
    }
    influence = torch.zeros(n_layer, dtype=torch.float64)
    angles = {n: torch.zeros(n_layer - n + 1, dtype=torch.float64) for n in window_sizes}
    skip_count = min(skip_sequences or default_skip_sequences(len(windows)), len(windows))
    loss_sums = torch.zeros(n_layer + 1, dtype=torch.float64)  # [full model, skip block 0, ..., skip block L-1]
    example, inputs, kept_inputs = {}, {}, []

    def attention_sink(layer: int, probabilities: torch.Tensor) -> None:
        for name, measure in (
            ("rank", lambda p: approximate_rank(p, tau)),
            ("mass", lambda p: column_mass_count(p, eta)),
            ("entropy", attention_entropy),
            ("sink_mass", first_token_mass),
        ):
            per_head[name][layer] += measure(probabilities).sum(dim=0).double().cpu()
        if layer not in example:
            example[layer] = probabilities[0].cpu()  # the first window's maps, for the plots

    model.max_seq_length = windows.size(1)
    device = next(model.parameters()).device
    head, model.lm_head = model.lm_head, torch.nn.Identity()  # the main pass needs hidden states, not logits
    try:
        with capture_attention(model, attention_sink), capture_block_inputs(model, inputs.__setitem__):
            for start in tqdm(
                range(0, len(windows), batch_size), desc=desc, unit="batch", file=sys.stderr, disable=None
            ):
                batch = windows[start : start + batch_size].to(device)
                model(batch)
                hidden = [inputs[layer] for layer in range(n_layer + 1)]
                influence += block_influence(hidden).double().cpu()
                for n in window_sizes:
                    angles[n] += angular_distance(hidden, n).double().cpu()
                if start < skip_count:
                    keep = min(batch_size, skip_count - start)
                    kept_inputs.append((batch[:keep], [x[:keep] for x in hidden]))
    finally:
        model.lm_head = head
    # outside the captures: these passes are not part of the attention statistics
    for batch, hidden in tqdm(
        kept_inputs, desc=f"{desc}: skip each block", unit="batch", file=sys.stderr, disable=None
    ):
        full, skipped = skip_loss_sums(model, batch, hidden)
        loss_sums += torch.cat([full[None], skipped]).double().cpu()
    count = len(windows)
    rank, mass, entropy, sink_mass = (per_head[name] / count for name in ("rank", "mass", "entropy", "sink_mass"))
    losses = loss_sums / (skip_count * (windows.size(1) - 1))
    max_rank = rank.max(dim=1).values.tolist()
    return {
        "max_rank": max_rank,
        "avg_mass": mass.mean(dim=1).tolist(),
        "rank": rank.tolist(),
        "mass": mass.tolist(),
        "block_influence": (influence / count).tolist(),
        "skip_loss": (losses[1:] - losses[0]).tolist(),
        "loss": losses[0].item(),
        "entropy": entropy.tolist(),
        "sink_mass": sink_mass.tolist(),
        "angular_distance": {str(n): (angles[n] / count).tolist() for n in window_sizes},
        "lazy_layers": lazy_layers(max_rank, lazy_threshold),
        "suggested_layers": {
            "prefix": potent_prefix(max_rank, lazy_threshold),
            "best_window": {str(n): layers for n, layers in best_windows(max_rank).items()},
        },
        "example_attention": {layer: maps.tolist() for layer, maps in example.items()},
    }


def check_window_sizes(window_sizes: Optional[list[int]], n_layer: int) -> list[int]:
    if window_sizes is None:
        return list(range(1, n_layer + 1))
    for n in window_sizes:
        if not 1 <= n <= n_layer:
            fail(f"--window_sizes {n} is out of range; valid: 1..{n_layer} (the model has {n_layer} blocks)")
    return sorted(set(window_sizes))


def write_tables(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in result.items() if k != "example_attention"}
    public["indexing"] = "layers and heads are 0-based; a window [start, stop) holds blocks start..stop-1"
    write_text_atomic(out_dir / "attention.json", json.dumps(public, indent=2) + "\n")
    lazy = set(result["lazy_layers"])
    columns = ("max_rank", "avg_mass", "block_influence", "skip_loss")
    rows = [
        [
            layer,
            *(f"{result[c][layer]:.6g}" for c in columns),
            f"{sum(entropy) / len(entropy):.6g}",
            f"{sum(sink) / len(sink):.6g}",
            layer in lazy,
        ]
        for layer, (entropy, sink) in enumerate(zip(result["entropy"], result["sink_mass"]))
    ]
    write_csv(out_dir / "layers.csv", ["layer", *columns, "entropy", "sink_mass", "lazy"], rows)
    rows = [
        [layer, head, *(f"{result[c][layer][head]:.6g}" for c in ("rank", "mass", "entropy", "sink_mass"))]
        for layer in range(len(result["rank"]))
        for head in range(len(result["rank"][layer]))
    ]
    write_csv(out_dir / "heads.csv", ["layer", "head", "rank", "mass", "entropy", "sink_mass"], rows)
    max_rank = result["max_rank"]
    rows = [
        [n, start, start + int(n), f"{distance:.6g}", f"{sum(max_rank[start : start + int(n)]) / int(n):.6g}"]
        for n, distances in result["angular_distance"].items()
        for start, distance in enumerate(distances)
    ]
    write_csv(out_dir / "windows.csv", ["n", "start", "stop", "angular_distance", "avg_max_rank"], rows)


def write_trajectory(results: dict, out_dir: Path, plots: bool) -> None:
    """MaxRank per layer for every checkpoint, in training order."""
    rows = [
        [name, layer, f"{r:.4f}", f"{m:.4f}"]
        for name, result in results.items()
        for layer, (r, m) in enumerate(zip(result["max_rank"], result["avg_mass"]))
    ]
    write_csv(out_dir / "trajectory.csv", ["checkpoint", "layer", "max_rank", "avg_mass"], rows)
    trajectory = {
        name: {k: result[k] for k in ("max_rank", "avg_mass", "lazy_layers")} for name, result in results.items()
    }
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
        f"{result['label']}: {len(result['max_rank'])} layers, MaxRank "
        + " ".join(f"{r:.1f}" for r in result["max_rank"])
        + f"; lazy layers {lazy or 'none'}; potent prefix {len(prefix)} layers"
    )
