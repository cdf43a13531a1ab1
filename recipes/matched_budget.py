"""Which derivation wins at the same budget? Inheritune against depth-pruning starts on one reference, one keep size
and one token budget, over several seeds: SmolLM2-135M-Instruct and the Lee news corpus, on a CPU.

analyze the reference once → `init` builds every start with n of its blocks (the first n; the window of highest
attention rank; ShortGPT's blocks of highest influence; LaCo's collapse; ReplaceMe's cut and linear bridge; the first
n with a linear bridge; a random initialisation of the same shape) → each start continues pretraining on the same
tokens (per seed: the same held-out text, training batches in the seed's order; optionally with distillation from
the reference) → validation loss before and after, the benchmarks (lm-eval on local items, with standard errors),
parameters and inference tokens/s of each → out_dir/report.md, summary.json, and `compare`'s table and plot of the
training runs in out_dir/compare/.

    .venv/bin/python recipes/matched_budget.py                  # full size: keep 10 of 30, 163,840 tokens, 2 seeds
    .venv/bin/python recipes/matched_budget.py --size toy       # seconds-scale, what the tests run
"""

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from common import DEFAULT_CACHE, lee_corpus, lee_data, offline_tasks, small_train_args, smollm2_checkpoint, step
from common import write_corpus
from litgpt.args import EvalArgs
from litgpt.config import Config

from litgpt_inheritune.analyze import main as analyze
from litgpt_inheritune.checkpoint import load_gpt
from litgpt_inheritune.compare import LossMeter
from litgpt_inheritune.compare import main as compare
from litgpt_inheritune.distill import DistillArgs
from litgpt_inheritune.evaluate import main as evaluate
from litgpt_inheritune.grow import STARTS, start_options
from litgpt_inheritune.init import main as init
from litgpt_inheritune.pretrain import setup as pretrain

# label -> the start of `grow --start` that builds it ("random": the first n blocks' shape from a random init)
RUNS = {
    "first": "first",
    "rank_window": "rank",
    "shortgpt": "block_influence",
    "laco": "laco",
    "replaceme": "replaceme",
    "first_bridge": "bridge",
    "random": "random",
}
OPTIONAL_RUNS = {"sleb": "iterative"}
TASKS = "piqa_offline,arc_easy_offline,sciq_offline,boolq_offline,winogrande_offline"
CHANCE = {
    "piqa_offline": 50.0,
    "arc_easy_offline": 25.0,
    "sciq_offline": 25.0,
    "boolq_offline": 62.2,
    "winogrande_offline": 50.0,
}
SIZES = {
    "full": dict(
        n_layers=10,
        train_tokens=163840,
        seeds=[42, 43],
        eval_limit=200,
        seq_len=128,
        val_sequences=64,
        analysis_sequences=30,
        calibration_sequences=64,
        eval_interval=80,
    ),
    "toy": dict(
        n_layers=8,
        train_tokens=512,
        seeds=[42],
        eval_limit=2,
        seq_len=32,
        val_sequences=8,
        analysis_sequences=2,
        calibration_sequences=8,
        eval_interval=1,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="full", help="preset of the settings below")
    parser.add_argument("--out_dir", type=Path, default=Path("out/matched_budget"))
    parser.add_argument("--reference", type=Path, help="a LitGPT checkpoint (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--data_path", type=Path, help="a text file, one document a line (default: the Lee corpus)")
    parser.add_argument("--n_layers", type=int, help="blocks every start keeps (the reference has 30)")
    parser.add_argument("--train_tokens", type=int, help="training tokens of every run")
    parser.add_argument("--seeds", type=int, nargs="+", help="one training run per start and seed")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=[*RUNS, *OPTIONAL_RUNS])
    parser.add_argument("--distill", action="store_true", help="train with logit distillation from the reference")
    parser.add_argument("--tasks", default=TASKS, help="lm-eval tasks (the offline ones read local items)")
    parser.add_argument("--eval_limit", type=int, help="items per task; 0 skips the benchmarks")
    parser.add_argument("--seq_len", type=int, help="training and validation sequence length")
    parser.add_argument("--val_sequences", type=int, help="held-out sequences for the validation loss")
    parser.add_argument("--analysis_sequences", type=int, help="windows of analyze")
    parser.add_argument("--calibration_sequences", type=int, help="calibration windows of the bridges and SLEB")
    parser.add_argument("--eval_interval", type=int, help="optimizer steps between validations during training")
    parser.add_argument("--seed", type=int, default=42, help="seed of the data sample, analysis and calibration")
    parser.add_argument("--cache_dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in out_dir: keep the starts, finished runs and scores already there,"
        " and resume an unfinished training run from its last step checkpoint",
    )
    args = parser.parse_args()
    for key, value in SIZES[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    out, started = args.out_dir, time.perf_counter()
    timings = Timings(out / "timings.json" if args.resume else None)
    out.mkdir(parents=True, exist_ok=True)

    def kept(path: Path) -> bool:  # with --resume: what an earlier invocation finished (written whole, by rename)
        return args.resume and path.is_file()

    reference = args.reference or smollm2_checkpoint(args.cache_dir)
    data_dir = write_corpus(args.data_path or lee_corpus(args.cache_dir), out / "data" / "lee")
    n, n_reference = args.n_layers, Config.from_file(reference / "model_config.yaml").n_layer
    step(f"analyze the reference: {args.analysis_sequences} windows")
    with timings("analyze"):
        analysis = analyze(
            reference,
            data_path=data_dir,
            out_dir=out / "analysis",
            num_sequences=args.analysis_sequences,
            seq_len=min(100, Config.from_file(reference / "model_config.yaml").block_size),
            window_sizes=[1, n, n_reference - n],
            plots=False,
            overwrite=True,
        )

    starts = {}
    for label in args.runs:
        name = {**RUNS, **OPTIONAL_RUNS}[label]
        if name == "random":
            continue
        step(f"{label}: {STARTS[name]}")
        if kept(out / "checkpoints" / label / "provenance.json"):
            starts[label] = out / "checkpoints" / label
            continue
        options = start_options(name, n, out / "analysis", data_dir)
        if "data_path" in options:
            options.update(calibration_sequences=args.calibration_sequences, seed=args.seed)
        with timings(f"init_{label}"):
            starts[label] = init(reference, out_dir=out / "checkpoints" / label, overwrite=True, **options)
    if "random" in args.runs:
        first = out / "checkpoints" / "first"
        starts["random"] = (
            starts.get("first")
            or (first if kept(first / "provenance.json") else None)
            or init(reference, out_dir=first, n_layers=n, overwrite=True)
        )

    def data(order_seed=None):  # the same sample and held-out articles for every run
        return lee_data(data_dir, out / "data" / "litdata", args.val_sequences, args.seq_len, args.seed, order_seed)

    train = small_train_args(args.train_tokens, args.seq_len, warmup_steps=2)
    if args.resume:  # step checkpoints to resume from, the newest only
        train.save_interval = args.eval_interval
    meter = LossMeter(reference, data(), train, EvalArgs(max_iters=10**9), precision=None)  # every held-out batch
    results = {"reference": {"layers": list(range(n_reference)), "val_loss": meter(reference)}}
    distill = DistillArgs(teacher_dir=reference) if args.distill else DistillArgs()
    runs = {}
    for seed in args.seeds:
        for label, checkpoint in starts.items():
            step(
                f"{label}, seed {seed}: pretrain on {args.train_tokens:,} tokens{' with distillation' if args.distill else ''}"
            )
            run_dir = out / "runs" / f"{label}-seed{seed}"
            runs[label, seed] = run_dir
            if kept(run_dir / "final" / "lit_model.pth"):
                continue
            if run_dir.exists() and not args.resume:
                shutil.rmtree(run_dir)
            with timings(f"train_{label}_seed{seed}"):
                pretrain(
                    checkpoint,
                    out_dir=run_dir,
                    initialize="random" if label == "random" else "checkpoint",
                    data=data(order_seed=seed),
                    train=train,
                    eval=EvalArgs(interval=args.eval_interval, max_iters=10**9, initial_validation=True),
                    seed=seed,
                    distill=distill,
                    resume="auto" if args.resume else False,
                    keep_checkpoints=1 if args.resume else None,
                )

    for label, checkpoint in starts.items():
        provenance = json.loads((checkpoint / "provenance.json").read_text())
        trained = [meter(runs[label, seed] / "final") for seed in args.seeds]
        results[label] = {
            "start": STARTS[{**RUNS, **OPTIONAL_RUNS}[label]] if label != "random" else "random initialisation",
            "layers": provenance["layers"] if label != "random" else None,
            "val_loss_before": initial_loss(runs[label, args.seeds[0]]) if label == "random" else meter(checkpoint),
            "val_loss_seeds": trained,
            "val_loss": statistics.mean(trained),
            "val_loss_sd": statistics.stdev(trained) if len(trained) > 1 else None,
            **{key: provenance[key] for key in ("merged", "bridges") if key in provenance and label != "random"},
        }
    max_rank = analysis["max_rank"]
    for label, result in results.items():
        if result["layers"] is not None:
            result["mean_max_rank"] = sum(max_rank[i] for i in result["layers"]) / len(result["layers"])

    models = {"reference": [reference]} | {
        label: [runs[label, seed] / "final" for seed in args.seeds] for label in starts
    }
    for label, checkpoints in models.items():
        step(
            f"{label}: parameters, inference tokens/s"
            + (f", {args.eval_limit} items per task" if args.eval_limit else "")
        )
        results[label]["parameters"] = sum(t.numel() for t in load_gpt(checkpoints[0]).parameters())
        results[label]["tokens_per_s"] = tokens_per_second(checkpoints[0], args.seq_len)
        if args.eval_limit:
            results[label]["scores"] = benchmark(checkpoints, args, out / "eval" / label, timings)

    step("compare: table and plot of every training run")
    compare(
        [runs[key] for key in sorted(runs)],
        out_dir=out / "compare",
        labels=[f"{label} (seed {seed})" for label, seed in sorted(runs)],
        reference_loss=results["reference"]["val_loss"],
    )
    summary = {
        "reference": Config.from_file(reference / "model_config.yaml").name,
        "results": results,
        "lazy_layers": analysis["lazy_layers"],
        "settings": {**{k: str(v) for k, v in vars(args).items()}, "load_average": os.getloadavg()},
        "timings": timings.table,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "phase_minutes": round(sum(t["wall_s"] for t in timings.table.values()) / 60, 1),
        "cpu_minutes": round(time.process_time() / 60, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report(summary, args))
    print((out / "report.md").read_text())


class Timings:
    """Wall and CPU seconds (this process, all threads) of each phase. On a crowded machine both grow: torch's
    threads spin while they wait for a core, and that counts as CPU time. With a ``path`` the table is read from it
    and written back after every phase, so a resumed recipe keeps the timings of the phases it does not repeat (a
    training run resumed from a step checkpoint counts only the part after it)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.table = json.loads(path.read_text()) if path is not None and path.is_file() else {}

    @contextmanager
    def __call__(self, name: str):
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.table[name] = {
            "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(time.process_time() - cpu, 1),
        }
        print(f"{name}: {self.table[name]['wall_s']} s wall, {self.table[name]['cpu_s']} s CPU", file=sys.stderr)
        if self.path is not None:
            self.path.write_text(json.dumps(self.table, indent=2) + "\n")


def initial_loss(run_dir: Path) -> float:
    """The validation loss pretrain logged before its first step (the same held-out batches as LossMeter's)."""
    import csv

    log = next((run_dir / "logs" / "csv").glob("version_*/metrics.csv"))
    with open(log) as f:
        rows = [row for row in csv.DictReader(f) if row.get("val_loss")]
    return float(min(rows, key=lambda row: int(float(row["step"])))["val_loss"])


@torch.no_grad()
def tokens_per_second(checkpoint: Path, seq_len: int, batch_size: int = 4, repeats: int = 3) -> float:
    """Forward (prefill) tokens per second of a batch of ``batch_size`` x ``seq_len`` tokens, best of ``repeats``
    after one warm-up, float32 on the CPU with torch's threads as set."""
    model = load_gpt(checkpoint).eval()
    model.max_seq_length = seq_len
    idx = torch.randint(0, model.config.vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    model(idx)
    best = math.inf
    for _ in range(repeats):
        clock = time.perf_counter()
        model(idx)
        best = min(best, time.perf_counter() - clock)
    return batch_size * seq_len / best


def benchmark(checkpoints: list[Path], args, out_dir: Path, timings: "Timings") -> dict:
    """Accuracy (%) per task: the mean over the checkpoints (one per seed) and lm-eval's standard error, averaged.
    Each evaluation is a timed phase, eval_<out_dir's name>_seed<i>; with --resume one already written is read."""
    per_task = {}
    for i, checkpoint in enumerate(checkpoints):
        done = out_dir / f"seed{i}" / "results.json"
        if args.resume and done.is_file():
            result = json.loads(done.read_text())
        else:
            with timings(f"eval_{out_dir.name}_seed{i}"):
                result = evaluate(
                    checkpoint,
                    tasks=args.tasks,
                    include_path=offline_tasks(args.cache_dir),
                    limit=args.eval_limit,
                    out_dir=out_dir / f"seed{i}",
                    paper=False,
                )
        for task in args.tasks.split(","):
            scores = result["results"][task]
            per_task.setdefault(task, []).append((scores["acc,none"], scores.get("acc_stderr,none")))
    return {
        task: {
            "acc": 100 * statistics.mean(acc for acc, _ in values),
            "stderr": 100 * statistics.mean(error for _, error in values)
            if all(e is not None for _, e in values)
            else None,
            "items": args.eval_limit,
        }
        for task, values in per_task.items()
    }


def report(summary: dict, args) -> str:
    results = summary["results"]
    tasks = args.tasks.split(",") if args.eval_limit else []
    seeds = ", ".join(map(str, args.seeds))
    lines = [
        f"# Matched budget: {args.n_layers} of {summary['reference']}'s {len(results['reference']['layers'])} blocks,"
        f" {args.train_tokens:,} tokens per run",
        "",
        f"Seeds {seeds}; {'with' if args.distill else 'without'} distillation from the reference; wall time"
        f" {summary['minutes']} min ({summary['phase_minutes']} min in the timed phases of every invocation: analysis,"
        f" starts, training, benchmarks); load average at the end {summary['settings']['load_average']}.",
        f"Lazy layers of the reference (MaxRank < 2): {summary['lazy_layers'] or 'none'}.",
        "",
        "| start | blocks | mean MaxRank of the blocks | validation loss before | after (mean ± sd over seeds) |"
        + "".join(f" {t.removesuffix('_offline')} |" for t in tasks)
        + " parameters | inference tokens/s |",
        "|---|---|---|---|---|" + "---|" * len(tasks) + "---|---|",
    ]
    order = sorted(results, key=lambda label: (label != "reference", results[label]["val_loss"]))
    for label in order:
        r = results[label]
        blocks = (
            f"all {len(r['layers'])}"
            if label == "reference"
            else "random init"
            if r["layers"] is None
            else compact(r["layers"])
        )
        before = f"{r['val_loss_before']:.3f}" if "val_loss_before" in r else ""
        after = f"{r['val_loss']:.3f}" + (f" ± {r['val_loss_sd']:.3f}" if r.get("val_loss_sd") is not None else "")
        rank = f"{r['mean_max_rank']:.1f}" if "mean_max_rank" in r else ""
        cells = "".join(f" {score_text(r['scores'][t])} |" for t in tasks)
        lines.append(
            f"| {label} | {blocks} | {rank} | {before} | {after} |{cells}"
            f" {r['parameters'] / 1e6:.1f} M | {r['tokens_per_s']:,.0f} |"
        )
    lines += [
        "",
        "Starts: " + "; ".join(f"{label}: {r['start']}" for label, r in results.items() if "start" in r) + ".",
        "",
        "Scores: accuracy in % ± lm-eval's standard error on the first "
        f"{args.eval_limit} items of each validation set (chance: "
        + ", ".join(f"{t.removesuffix('_offline')} {CHANCE.get(t, '?')}" for t in tasks)
        + "). Inference: forward tokens/s of a 4 x seq_len batch on this CPU, best of 3.",
        "",
        "Training curves of every run: [compare/compare.md](compare/compare.md), ![validation loss](compare/compare.png)",
        "",
    ]
    return "\n".join(lines)


def score_text(score: dict) -> str:
    return f"{score['acc']:.1f}" + (f" ± {score['stderr']:.1f}" if score["stderr"] is not None else "")


def compact(layers: list[int]) -> str:
    from litgpt_inheritune.inherit import compact_layers

    return compact_layers(layers).replace("_", ",")


if __name__ == "__main__":
    sys.exit(main())
