"""Training tokens/s of `litgpt inheritune pretrain` against stock `litgpt pretrain`, same tiny model, data and settings.

Builds a 4-block, 256-wide LLaMA-style checkpoint (3.6M parameters, byte-level BPE vocabulary of 320) and ~600 KB of
seeded random text, tokenizes the text once with litgpt's TextFiles module, then runs both commands one after the
other as subprocesses: the same weights, data, seed, precision (32-true), optimizer (torch's AdamW, default arguments),
sequence length, global and micro batch size and number of optimizer steps. Both log one CSV row per optimizer step
(ThroughputMonitor's `time`, seconds since the training loop started, and `tokens`); the throughput of each is
(tokens at the last step - tokens at step W) / (time at the last step - time at step W), with W = --warmup, so
startup, data preparation, data-loader worker start-up and compilation are left out.

Stock `litgpt pretrain` always calls torch.compile(model); ours does not unless --compile true. By default both run
eager (TORCHDYNAMO_DISABLE=1 in both processes turns stock's torch.compile into a no-op), which compares the two
training loops; with --compile both compile (ours gets --compile true).

    .venv/bin/python benchmarks/train_throughput.py [--steps 40] [--warmup 15] [--compile] [--work_dir benchmarks/.cache/train_throughput]
"""

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
SEQ_LENGTH, GLOBAL_BATCH, MICRO_BATCH, SEED = 128, 8, 4, 42


def make_checkpoint(checkpoint_dir: Path) -> None:
    import torch
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.utils import save_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import write_tokenizer

    config = Config(
        name="bench-llama", block_size=SEQ_LENGTH, vocab_size=320, padding_multiple=64, n_layer=4, n_embd=256,
        n_head=4, rotary_percentage=1.0, parallel_residual=False, bias=False, norm_class_name="RMSNorm",
        mlp_class_name="LLaMAMLP", intermediate_size=768,
    )
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(GPT(config).state_dict(), checkpoint_dir / "lit_model.pth")
    save_config(config, checkpoint_dir)
    write_tokenizer(checkpoint_dir, config.vocab_size)


def make_data(checkpoint_dir: Path, data_dir: Path) -> None:
    """Random sentences over the tests' word list, tokenized once: data_dir/train and data_dir/val (the first file)."""
    from litgpt.data import TextFiles
    from litgpt.tokenizer import Tokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import TEXT

    words, rng = TEXT.split(), random.Random(0)
    data_dir.mkdir(parents=True, exist_ok=True)
    for i, n_words in enumerate([5_000, 25_000, 25_000, 25_000]):
        (data_dir / f"part{i}.txt").write_text(" ".join(rng.choice(words) for _ in range(n_words)))
    data = TextFiles(train_data_path=data_dir)
    data.connect(tokenizer=Tokenizer(checkpoint_dir), batch_size=MICRO_BATCH, max_seq_length=SEQ_LENGTH)
    data.prepare_data()


def command(which: str, checkpoint_dir: Path, data_dir: Path, out_dir: Path, args: argparse.Namespace) -> list:
    steps = args.steps
    common = [
        "--out_dir", out_dir, "--data", "TextFiles", "--data.train_data_path", data_dir,
        "--data.num_workers", args.num_workers,
        "--train.max_seq_length", SEQ_LENGTH, "--train.global_batch_size", GLOBAL_BATCH,
        "--train.micro_batch_size", MICRO_BATCH, "--train.max_norm", 1.0, "--train.lr_warmup_steps", 10,
        "--train.log_interval", 1, "--train.save_interval", "null", "--eval.interval", 1000,
        "--eval.final_validation", "false", "--optimizer", "AdamW", "--logger_name", "csv",
        "--precision", "32-true", "--devices", 1, "--seed", SEED,
    ]
    if which == "ours":
        argv = ["inheritune", "pretrain", checkpoint_dir, "--train.max_steps", steps, "--compile", str(args.compile).lower()]
    else:  # stock stops on max_tokens; the model comes from --model_config, the weights from --initial_checkpoint_dir
        with open(checkpoint_dir / "model_config.yaml") as f:
            model_config = json.dumps(__import__("yaml").safe_load(f))
        argv = [
            "pretrain", "bench-llama", "--model_config", model_config, "--initial_checkpoint_dir", checkpoint_dir,
            "--tokenizer_dir", checkpoint_dir, "--train.max_tokens", steps * GLOBAL_BATCH * SEQ_LENGTH,
        ]
    return [str(BIN / "litgpt"), *map(str, argv + common)]


def run(which: str, args: argparse.Namespace, checkpoint_dir: Path, data_dir: Path) -> dict:
    run_dir = args.work_dir / which
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(data_dir, run_dir / "data")  # already tokenized: TextFiles skips its preparation
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if not args.compile:
        env["TORCHDYNAMO_DISABLE"] = "1"  # stock's unconditional torch.compile(model) returns the model unchanged
    argv = command(which, checkpoint_dir, run_dir / "data", run_dir / "out", args)
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    (run_dir / "log.txt").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"{which} failed ({result.returncode}), see {run_dir / 'log.txt'}:\n{result.stderr[-3000:]}")

    # one row per optimizer step: `tokens` counts the tokens trained on, `time` the seconds since the loop started
    with open(run_dir / "out" / "logs" / "csv" / "version_0" / "metrics.csv") as f:
        rows = sorted((r for r in csv.DictReader(f) if r.get("time")), key=lambda r: int(r["tokens"]))
    tokens = [int(r["tokens"]) for r in rows]
    times = [float(r["time"]) for r in rows]
    if tokens != [(i + 1) * GLOBAL_BATCH * SEQ_LENGTH for i in range(args.steps)]:
        sys.exit(f"{which}: expected {args.steps} logged steps of {GLOBAL_BATCH * SEQ_LENGTH} tokens, got {tokens}")
    step_seconds = sorted(b - a for a, b in zip(times[args.warmup - 1 :], times[args.warmup :]))
    return {
        "tokens_per_sec": round((tokens[-1] - tokens[args.warmup - 1]) / (times[-1] - times[args.warmup - 1]), 1),
        "median_step_seconds": round(step_seconds[len(step_seconds) // 2], 4),
        "max_step_seconds": round(step_seconds[-1], 4),
        "warmup_seconds": round(times[args.warmup - 1], 2),
        "process_seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per command")
    parser.add_argument("--warmup", type=int, default=15, help="first steps left out of the measurement")
    parser.add_argument("--compile", action="store_true", help="compile both models (default: neither)")
    parser.add_argument("--num_workers", type=int, default=1, help="data-loader workers of both commands")
    parser.add_argument("--work_dir", type=Path, default=Path("benchmarks/.cache/train_throughput"))
    args = parser.parse_args()
    if not 1 <= args.warmup < args.steps:
        parser.error("--warmup must be at least 1 and below --steps")
    checkpoint_dir, data_dir = args.work_dir / "checkpoint", args.work_dir / "data"
    if not (checkpoint_dir / "lit_model.pth").is_file():
        print(f"building the checkpoint in {checkpoint_dir} ...", file=sys.stderr)
        make_checkpoint(checkpoint_dir)
    if not (data_dir / "val").is_dir():
        print(f"writing and tokenizing the text in {data_dir} ...", file=sys.stderr)
        shutil.rmtree(data_dir, ignore_errors=True)
        make_data(checkpoint_dir, data_dir)

    ours = run("ours", args, checkpoint_dir, data_dir)
    stock = run("stock", args, checkpoint_dir, data_dir)
    report = {
        "ours_tokens_per_sec": ours["tokens_per_sec"],
        "stock_tokens_per_sec": stock["tokens_per_sec"],
        "ratio": round(ours["tokens_per_sec"] / stock["tokens_per_sec"], 3),
        "steps_measured": args.steps - args.warmup,
        "stock_torch_compile": args.compile,
        "ours_torch_compile": args.compile,
        "settings": {
            "steps": args.steps, "warmup_steps": args.warmup, "max_seq_length": SEQ_LENGTH,
            "global_batch_size": GLOBAL_BATCH, "micro_batch_size": MICRO_BATCH, "precision": "32-true",
            "seed": SEED, "torch_threads": __import__("torch").get_num_threads(),
        },
        "ours": ours,
        "stock": stock,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
