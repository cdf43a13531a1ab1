"""Which measure chooses the blocks that train best? SmolLM2-135M-Instruct and the Lee news corpus, on a CPU.

analyze the reference once (every measure on the same windows) → for each measure, `init --select MEASURE --keep
RULE` inherits n of its 30 blocks → each target continues pretraining on the same tokens in the same order →
validation loss of every target and of the reference on the same held-out articles → out_dir/report.md,
out_dir/summary.json, out_dir/val_loss.png.

    .venv/bin/python recipes/select_layers.py [--n_layers 6 --keep window --train_tokens 16384]
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import DEFAULT_CACHE, lee_corpus, lee_data, small_train_args, smollm2_checkpoint, step, write_corpus
from litgpt.args import EvalArgs

from litgpt_inheritune.analyze import main as analyze
from litgpt_inheritune.init import main as init
from litgpt_inheritune.compare import LossMeter
from litgpt_inheritune.pretrain import setup as pretrain
from litgpt_inheritune.selection import MEASURES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", type=Path, default=Path("out/select_layers"))
    parser.add_argument("--n_layers", type=int, default=6, help="blocks to inherit (the reference has 30)")
    parser.add_argument("--keep", choices=("window", "best"), default="window", help="init's rule for every measure")
    parser.add_argument("--measures", nargs="+", default=["first", *MEASURES], help="first (the prefix) and measures")
    parser.add_argument("--train_tokens", type=int, default=16384, help="training tokens for each target")
    parser.add_argument("--analysis_sequences", type=int, default=30, help="windows of 100 tokens for analyze")
    parser.add_argument("--seq_len", type=int, default=128, help="training and validation sequence length")
    parser.add_argument("--val_sequences", type=int, default=64, help="held-out sequences for the validation loss")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache_dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    started, out = time.perf_counter(), args.out_dir
    out.mkdir(parents=True, exist_ok=True)

    reference = smollm2_checkpoint(args.cache_dir)
    data_dir = write_corpus(lee_corpus(args.cache_dir), out / "data" / "lee")
    step(f"analyze the reference: {args.analysis_sequences} windows of 100 tokens, every measure")
    analysis = analyze(
        reference,
        data_path=data_dir,
        out_dir=out / "analysis",
        num_sequences=args.analysis_sequences,
        seq_len=100,
        window_sizes=[1, args.n_layers],
        overwrite=True,
    )

    def data():  # the same held-out articles and the same training tokens for every target
        return lee_data(data_dir, out / "data" / "litdata", args.val_sequences, args.seq_len, args.seed)

    train = small_train_args(args.train_tokens, args.seq_len, warmup_steps=2)
    meter = LossMeter(reference, data(), train, EvalArgs(max_iters=10**9), precision=None)  # every held-out batch
    results = {"reference": {"layers": list(range(30)), "val_loss_before": None, "val_loss": meter(reference)}}
    for measure in args.measures:
        selection = (
            dict(select="first")
            if measure == "first"
            else dict(select=measure, keep=args.keep, analysis=out / "analysis")
        )
        target = init(
            reference, out_dir=out / "checkpoints" / measure, n_layers=args.n_layers, overwrite=True, **selection
        )
        layers = json.loads((target / "provenance.json").read_text())["layers"]
        same = next(
            (name for name, result in results.items() if name != "reference" and result["layers"] == layers), None
        )
        if same is not None:  # the same blocks trained on the same tokens with the same seed: the same model
            step(f"{measure}: blocks {layers}, as chosen by {same}: its result stands")
            results[measure] = dict(results[same], same_as=same)
            continue
        step(f"{measure}: blocks {layers}, pretrain on {args.train_tokens:,} tokens")
        run_dir = out / "runs" / measure
        if run_dir.exists():
            shutil.rmtree(run_dir)
        pretrain(
            target,
            out_dir=run_dir,
            data=data(),
            train=train,
            eval=EvalArgs(interval=10**6, final_validation=False),
            seed=args.seed,
        )
        results[measure] = {"layers": layers, "val_loss_before": meter(target), "val_loss": meter(run_dir / "final")}
        print(f"{measure}: {results[measure]}", file=sys.stderr)

    summary = {
        "results": results,
        "lazy_layers": analysis["lazy_layers"],
        "settings": {
            **{k: str(v) for k, v in vars(args).items()},
            "minutes": round((time.perf_counter() - started) / 60, 1),
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(results, args, out / "val_loss.png")
    (out / "report.md").write_text(report(summary, args))
    print((out / "report.md").read_text())


def plot(results: dict, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in results if name != "reference"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.bar(
        names,
        [results[n]["val_loss_before"] for n in names],
        color="tab:blue",
        alpha=0.3,
        label="inherited, before training",
    )
    ax.bar(
        names, [results[n]["val_loss"] for n in names], color="tab:blue", label=f"after {args.train_tokens:,} tokens"
    )
    ax.axhline(results["reference"]["val_loss"], color="black", linestyle="--", label="reference (30 blocks)")
    ax.set(
        ylabel="validation loss",
        title=f"{args.n_layers} of SmolLM2-135M's 30 blocks chosen by each measure (--keep {args.keep})",
    )
    ax.set_ylim(bottom=min(r["val_loss"] for r in results.values()) - 0.5)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(summary: dict, args) -> str:
    lines = [
        "# Layer selection by measure: SmolLM2-135M-Instruct on the Lee corpus",
        "",
        f"Settings: {json.dumps(summary['settings'])}",
        "",
        f"Lazy layers of the reference: {summary['lazy_layers']}",
        "",
        "| choice | blocks | validation loss before training | after |",
        "|---|---|---|---|",
    ]
    for name, result in sorted(summary["results"].items(), key=lambda item: item[1]["val_loss"]):
        before = "" if result["val_loss_before"] is None else f"{result['val_loss_before']:.3f}"
        blocks = (
            "0-29"
            if name == "reference"
            else str(result["layers"]) + (f" (as {result['same_as']})" if "same_as" in result else "")
        )
        lines.append(f"| {name} | {blocks} | {before} | {result['val_loss']:.3f} |")
    return "\n".join(lines + ["", "![validation loss per choice](val_loss.png)", ""])


if __name__ == "__main__":
    main()
