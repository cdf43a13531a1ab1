"""GPU acceptance for the 1.5B recipe (OpenLLaMA-3B, first 13 blocks): one markdown report of what only a GPU shows.

(a) training tokens/s and MFU of `litgpt inheritune pretrain` against stock `litgpt pretrain` at the 13-block shape,
    same settings, alternating repeats (benchmarks/train_throughput.py's `compare`), as a ratio;
(b) peak GPU memory (torch.cuda.max_memory_allocated / max_memory_reserved inside the training process, and
    nvidia-smi's figure for it) at the recipe's micro-batch (4 x 2048) against scripts/recipe_budget.py's estimate;
(c) training and validation loss after the same steps with bf16-true and with bf16-mixed on real text;
(d) a run killed with SIGKILL after its first checkpoint and resumed with --resume auto against the uninterrupted
    run: the largest absolute weight difference;
(e) `evaluate` of the trained model on the GPU and on the CPU (both float32), the same items: the scores;
(f) with more than one GPU: DDP and FSDP runs over all of them, their tokens/s and each GPU's peak memory against the
    recipe's estimate for that strategy.

The checkpoint has the registered config's shape (open_llama_3b-inheritune-13L) with random weights (or pass
--checkpoint_dir, e.g. a real `init --n_layers 13` of OpenLLaMA-3B) and a SentencePiece tokenizer trained on the
Lee news corpus (materials.sentencepiece_tokenizer); the text for (c)-(f) is that corpus as RedPajama-style jsonl
(or --data_dir, a folder of RedPajama jsonl files). Without CUDA it says so and exits 0. --dry-run runs every stage
on the CPU at toy scale (a 2-block LLaMA-shaped model, 64-token sequences, a few steps; DDP and FSDP run as two CPU
processes over gloo) so that the test suite exercises the same code.

Each check is one function of a shared Setup (CHECKS, at the end); the tokenized text and the bf16-true and
bf16-mixed training runs, which (a)-(e) read, are made once, by the first check that needs them. Each training run's
peak memory is taken in its child process (benchmarks/peak_memory.py).

    bash scripts/gpu_check.sh [--report out/gpu_check/report.md] [--dry-run] [--repeats 2] [--steps 40]
"""

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "scripts")]
sys.path.append(str(ROOT))  # materials.py: demo and test material, not in the package
import materials  # noqa: E402
import recipe_budget  # noqa: E402
import train_throughput  # noqa: E402
from peak_memory import measured_run, rank_peaks  # noqa: E402

from litgpt_inheritune.errors import fail  # noqa: E402
from litgpt_inheritune.files import write_text_atomic  # noqa: E402
from litgpt_inheritune.compare import logged_seconds  # noqa: E402

BIN = Path(sys.executable).parent
RECIPE = ROOT / "config_hub" / "pretrain" / "open_llama_3b-13L-1B-8ep.yaml"
TOY = {**materials.OPEN_LLAMA_TINY, "name": "gpu-check-toy", "block_size": 64, "n_layer": 2}
# the recipe's shape and optimizer; fewer steps and a smaller global batch so that each run takes minutes
SCALES = {
    "gpu": dict(
        model="open_llama_3b-inheritune-13L",
        seq_length=2048,
        micro_batch_size=4,
        global_batch_size=16,
        throughput_steps=12,
        throughput_warmup=4,
        repeats=2,
        steps=40,
        save_interval=20,
        eval_iters=2,
        eval_limit=20,
        num_workers=4,
    ),
    "dry-run": dict(
        model=TOY["name"],
        seq_length=64,
        micro_batch_size=4,
        global_batch_size=8,
        throughput_steps=6,
        throughput_warmup=2,
        repeats=1,
        steps=6,
        save_interval=2,
        eval_iters=8,
        eval_limit=2,
        num_workers=0,
    ),
}


def main() -> None:
    args = parse_args()
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU, even on a GPU machine (set before CUDA is initialised)
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine, nothing to check (--dry-run runs the stages on the CPU)")
        return
    started = time.time()
    setup = Setup.from_args(args)
    sections = [header(setup)]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.report, sections[0])
    for check in CHECKS:
        sections.append(timed(check, setup))
        write_text_atomic(args.report, "\n".join(sections))  # after every check: a failing one leaves those before
    sections.append(f"Finished in {time.time() - started:.0f} s.\n")
    write_text_atomic(args.report, "\n".join(sections))
    print(f"gpu_check: report written to {args.report}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=Path("out/gpu_check/report.md"), help="the markdown report")
    parser.add_argument(
        "--work_dir", type=Path, default=None, help="checkpoints and runs (default: next to the report)"
    )
    parser.add_argument("--dry-run", dest="dry_run", action="store_true", help="every stage on the CPU at toy scale")
    parser.add_argument(
        "--checkpoint_dir", type=Path, default=None, help="a 13-block checkpoint instead of random weights"
    )
    parser.add_argument("--data_dir", type=Path, default=None, help="RedPajama jsonl folder instead of the Lee corpus")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of the (c)-(f) runs")
    parser.add_argument("--repeats", type=int, default=None, help="alternating runs of each command in (a)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models in (a)")
    parser.add_argument(
        "--peak_tflops",
        type=float,
        default=None,
        help="the device's peak for MFU (default: Lightning's table for the GPU in bf16)",
    )
    parser.add_argument("--cache_dir", type=Path, default=materials.DEFAULT_CACHE, help="where the real text is cached")
    return parser.parse_args()


@dataclass
class Setup:
    """What the six checks share: the command line, the scale, the checkpoint, the text and the work folder; the
    tokenized text and the two training runs are made once, by the first check that needs them."""

    args: argparse.Namespace
    scale: dict
    checkpoint: Path
    data_dir: Path
    work: Path
    env: dict

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Setup":
        scale = dict(SCALES["dry-run" if args.dry_run else "gpu"])
        scale.update({k: v for k, v in (("steps", args.steps), ("repeats", args.repeats)) if v is not None})
        if scale["steps"] < 2 * scale["save_interval"] or scale["repeats"] < 1:
            fail(
                f"--steps {scale['steps']} --repeats {scale['repeats']}: need at least {2 * scale['save_interval']}"
                f" steps (the resume check kills a run after its first checkpoint, every {scale['save_interval']}"
                " steps) and 1 repeat"
            )
        for name, folder in (("checkpoint_dir", args.checkpoint_dir), ("data_dir", args.data_dir)):
            if folder is not None and not folder.is_dir():
                fail(f"--{name} {folder} is not a folder")
        work = args.work_dir or args.report.parent
        work.mkdir(parents=True, exist_ok=True)
        return cls(
            args=args,
            scale=scale,
            checkpoint=args.checkpoint_dir or build_checkpoint(work / "checkpoint", scale["model"], args),
            data_dir=args.data_dir or materials.write_corpus(materials.lee_corpus(args.cache_dir), work / "lee"),
            work=work,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )

    @cached_property
    def prepared(self) -> Path:
        """The text tokenized once, here, for every check: the pretrain runs find it in the cache."""
        return timed(prepare_text, self)

    @cached_property
    def runs(self) -> dict:
        """The same run in bf16-true (the recipe's) and bf16-mixed, each measured for peak memory."""
        return timed(training_runs, self)


def timed(stage, *args):
    start = time.perf_counter()
    result = stage(*args)
    print(f"gpu_check: {stage.__name__} took {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return result


def device_name(args: argparse.Namespace) -> str:
    return "CPU (dry run)" if args.dry_run else f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"


def header(setup: Setup) -> str:
    scale = setup.scale
    return (
        f"# GPU acceptance report\n\n"
        f"- device: {device_name(setup.args)}; torch {torch.__version__}\n"
        f"- model: {scale['model']} from {setup.checkpoint}; text: {setup.data_dir}\n"
        f"- settings: micro-batch {scale['micro_batch_size']} x {scale['seq_length']} tokens, global batch"
        f" {scale['global_batch_size']}, AdamW (lr 3e-4, weight decay 0.1, betas 0.9/0.95), seed 42\n"
        f"- command: `bash scripts/gpu_check.sh {' '.join(sys.argv[1:])}`\n"
    )


def build_checkpoint(out_dir: Path, name: str, args: argparse.Namespace) -> Path:
    """Random weights of the registered config (bf16), a SentencePiece tokenizer trained on real text."""
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.utils import save_config

    if (out_dir / "lit_model.pth").is_file():
        return out_dir
    tokenizer = materials.sentencepiece_tokenizer(
        out_dir, materials.lee_corpus(args.cache_dir), vocab_size=TOY["vocab_size"]
    )
    config = Config(**TOY) if args.dry_run else Config.from_name(name)
    import sentencepiece

    assert sentencepiece.SentencePieceProcessor(model_file=str(tokenizer)).vocab_size() <= config.vocab_size
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = GPT(config)
    torch.save({k: v.to(torch.bfloat16).cpu() for k, v in model.state_dict().items()}, out_dir / "lit_model.pth")
    save_config(config, out_dir)
    return out_dir


def flops_per_token(checkpoint: Path, seq_length: int) -> float:
    """Training FLOPs per token: 6 x parameters (forward and backward matmuls) + 12 x layers x n_embd x sequence
    length (attention scores and weighted values). litgpt's estimate_flops would add the attention term a second
    time (for "frozen" parameters, even when there are none)."""
    from litgpt.config import Config
    from litgpt.model import GPT

    config = Config.from_file(checkpoint / "model_config.yaml")
    with torch.device("meta"):
        parameters = sum(p.numel() for p in GPT(config).parameters())
    return 6 * parameters + 12 * config.n_layer * config.n_embd * seq_length


def peak_flops(args: argparse.Namespace):
    if args.peak_tflops is not None:
        return args.peak_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    from lightning.fabric.utilities.throughput import get_available_flops

    return get_available_flops(torch.device("cuda"), torch.bfloat16)


def mfu(tokens_per_sec: float, per_token: float, peak) -> str:
    return "n/a (peak unknown)" if not peak else f"{tokens_per_sec * per_token / peak:.1%}"


def throughput(setup: Setup) -> str:
    """(a) train_throughput.compare at this scale and precision, on the same tokenized text as the other checks."""
    checkpoint, scale, args, work = setup.checkpoint, setup.scale, setup.args, setup.work / "throughput"
    settings = argparse.Namespace(
        data_module="LitData",
        steps=scale["throughput_steps"],
        warmup=scale["throughput_warmup"],
        repeats=scale["repeats"],
        compile=args.compile,
        per_tensor_optimizer=False,  # on CUDA both run AdamW fused
        num_workers=scale["num_workers"],
        work_dir=work,
        seq_length=scale["seq_length"],
        global_batch_size=scale["global_batch_size"],
        micro_batch_size=scale["micro_batch_size"],
        precision="bf16-true",
    )
    shutil.rmtree(work / "data", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        shutil.copytree(setup.prepared / split, work / "data" / split)
    report = train_throughput.compare(checkpoint, settings)
    (work / "report.json").write_text(json.dumps(report, indent=2))
    per_token, peak = flops_per_token(checkpoint, scale["seq_length"]), peak_flops(args)
    rows = [
        f"| {which} | {report[f'{which}_tokens_per_sec']:,.1f} | {mfu(report[f'{which}_tokens_per_sec'], per_token, peak)} |"
        for which in ("ours", "stock")
    ]
    return "\n".join(
        [
            "## (a) Throughput: ours vs stock `litgpt pretrain`\n",
            f"bf16-true, {settings.steps} steps per run of which the first {settings.warmup} are left out, best of"
            f" {settings.repeats} alternating runs each, torch.compile: {args.compile}. MFU = tokens/s x"
            f" {per_token / 1e9:.6g} GFLOP/token (6 x parameters + attention) / peak"
            f" {'n/a' if not peak else f'{peak / 1e12:.0f} TFLOP/s'}.\n",
            "| command | tokens/s | MFU |",
            "|---|---|---|",
            *rows,
            "",
            f"ratio ours/stock: **{report['ratio']:.3f}** (of median step times: {report['ratio_of_median_steps']:.3f};"
            f" median of the alternating pairs' ratios: {report['median_pair_ratio']:.3f})\n",
        ]
    )


def data_module(data_dir: Path, out_dir: Path, scale: dict):
    """RedPajamaSample as pretrain_args configures it (same cache key); validation: the batches one validation reads."""
    from litgpt_inheritune.redpajama import RedPajamaSample

    return RedPajamaSample(
        data_dir=data_dir,
        token_budget=10**9,
        val_tokens=scale["eval_iters"] * scale["micro_batch_size"] * (scale["seq_length"] + 1),
        num_workers=scale["num_workers"],
        cache_dir=out_dir.parent / "litdata",
    )


def prepare_text(setup: Setup) -> Path:
    from litgpt.tokenizer import Tokenizer

    scale = setup.scale
    data = data_module(setup.data_dir, setup.work / "runs" / "prepare", scale)
    data.connect(
        tokenizer=Tokenizer(setup.checkpoint),
        batch_size=scale["micro_batch_size"],
        max_seq_length=scale["seq_length"],
    )
    data.prepare_data()
    return data.prepared_dir


def pretrain_args(setup: Setup, out_dir: Path, *extra, **scale_changes) -> list[str]:
    """Our pretrain on RedPajama-style jsonl (data_module's settings) at the setup's scale with ``scale_changes``."""
    scale = {**setup.scale, **scale_changes}
    data = data_module(setup.data_dir, out_dir, scale)
    return [
        "pretrain",
        str(setup.checkpoint),
        "--out_dir",
        str(out_dir),
        "--data",
        "RedPajamaSample",
        "--data.data_dir",
        str(data.data_dir),
        "--data.token_budget",
        str(data.token_budget),
        "--data.val_tokens",
        str(data.val_tokens),
        "--data.num_workers",
        str(data.num_workers),
        "--data.cache_dir",
        str(data.cache_dir),
        "--train.max_seq_length",
        str(scale["seq_length"]),
        "--train.micro_batch_size",
        str(scale["micro_batch_size"]),
        "--train.global_batch_size",
        str(scale["global_batch_size"]),
        "--train.max_steps",
        str(scale["steps"]),
        "--train.lr_warmup_steps",
        str(max(1, scale["steps"] // 10)),
        "--train.log_interval",
        "1",
        "--train.save_interval",
        str(scale["save_interval"] or "null"),
        "--eval.interval",
        "100000",
        "--eval.max_iters",
        str(scale["eval_iters"]),
        "--logger_name",
        "csv",
        "--seed",
        "42",
        *extra,
    ]


def training_runs(setup: Setup) -> dict:
    runs, work = {}, setup.work / "runs"
    for precision in ("bf16-true", "bf16-mixed"):
        # only bf16-true's final weights are needed later ((d), (e)): no step checkpoints (~11 GB each at full size)
        changes = {} if precision == "bf16-true" else {"save_interval": None}
        arguments = pretrain_args(setup, work / precision, "--precision", precision, **changes)
        runs[precision] = measured_run(arguments, work / precision, setup.env)
        remove_step_checkpoints(work / precision)
    return runs


def remove_step_checkpoints(out_dir: Path) -> None:
    for step in out_dir.glob("step-*"):
        shutil.rmtree(step)


def memory(setup: Setup) -> str:
    """(b) measured peak against recipe_budget's arithmetic for the recipe at this shape."""
    scale, args = setup.scale, setup.args
    lines = [
        "## (b) Peak memory vs the recipe's estimate\n",
        f"Micro-batch {scale['micro_batch_size']} x {scale['seq_length']} tokens. Estimate: scripts/recipe_budget.py"
        f" for {RECIPE.name} at this shape."
        + (
            " Dry run: the CPU has no torch.cuda counters, so 'measured' is the process's peak RSS (not comparable)."
            if args.dry_run
            else ""
        )
        + "\n",
        "| precision | measured peak GB | max_memory_reserved GB | nvidia-smi GB | estimate GB | measured / estimate |",
        "|---|---|---|---|---|---|",
    ]
    for precision, run in setup.runs.items():
        estimate = estimate_gb(setup, precision) * 1e9
        peak = run["peak"]
        measured = peak.get("max_allocated_bytes", peak["max_rss_bytes"])
        reserved, smi = peak.get("max_reserved_bytes"), peak.get("nvidia_smi_bytes")
        lines.append(
            f"| {precision} | {measured / 1e9:.2f} | {gb(reserved)} | {gb(smi)} | {estimate / 1e9:.2f} | {measured / estimate:.2f} |"
        )
    return "\n".join(lines) + "\n"


def estimate_gb(setup: Setup, precision: str, **parallel) -> float:
    """recipe_budget's GB per GPU for the recipe at the checkpoint's shape, this micro-batch and ``precision``;
    ``parallel``: strategy and devices (default: the recipe's, one device)."""
    from litgpt.config import Config

    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(precision=precision, **parallel)
    recipe["train"].update(micro_batch_size=setup.scale["micro_batch_size"], max_seq_length=setup.scale["seq_length"])
    config = Config.from_file(setup.checkpoint / "model_config.yaml")  # the toy's too, which has no registered name
    return recipe_budget.budget(recipe, "A6000", config)["memory_gb"]


def gb(value) -> str:
    return "n/a" if value is None else f"{value / 1e9:.2f}"


def metrics(out_dir: Path) -> list[dict]:
    with open(out_dir / "logs" / "csv" / "version_0" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def precisions(setup: Setup) -> str:
    """(c) the last training losses and the final validation loss of each precision."""
    lines = [
        "## (c) bf16-true vs bf16-mixed\n",
        "Same checkpoint, data, seed and steps; the cosine schedule runs to its"
        " minimum within these steps, where pure-bf16 AdamW updates are smallest.\n",
        "| precision | steps | train loss (mean of the last 5 steps) | final val loss | seconds |",
        "|---|---|---|---|---|",
    ]
    runs = setup.runs
    for precision, run in runs.items():
        rows = metrics(run["out_dir"])
        train = [float(r["loss"]) for r in rows if r.get("loss")]
        val = [float(r["val_loss"]) for r in rows if r.get("val_loss")]
        run["train_loss"] = sum(train[-5:]) / len(train[-5:])
        lines.append(f"| {precision} | {len(train)} | {run['train_loss']:.4f} | {val[-1]:.4f} | {run['seconds']:.0f} |")
    difference = runs["bf16-true"]["train_loss"] - runs["bf16-mixed"]["train_loss"]
    lines.append(f"\ntrain loss bf16-true - bf16-mixed: **{difference:+.4f}**\n")
    return "\n".join(lines)


def resume(setup: Setup) -> str:
    """(d) bf16-true killed with SIGKILL as soon as its first checkpoint exists, resumed, against the straight run."""
    scale, env, out_dir = setup.scale, setup.env, setup.work / "runs" / "killed"
    shutil.rmtree(out_dir, ignore_errors=True)
    arguments = pretrain_args(setup, out_dir, "--precision", "bf16-true")
    process = subprocess.Popen(
        [str(BIN / "litgpt-inheritune"), *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    first = out_dir / f"step-{scale['save_interval']:08d}"
    while not (first / "lit_model.pth").exists() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    completed = sorted(p.name for p in out_dir.glob("step-*"))
    if (out_dir / "final").exists() or not completed:
        sys.exit(f"gpu_check: the run in {out_dir} was not killed between its first checkpoint and its end")
    result = subprocess.run(
        [str(BIN / "litgpt-inheritune"), *arguments, "--resume", "auto"], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        sys.exit(f"gpu_check: --resume auto failed ({result.returncode}):\n{result.stderr[-3000:]}")
    resumed_from = re.search(r"Resuming from (\S+)", result.stdout + result.stderr)[1]
    straight = torch.load(setup.runs["bf16-true"]["out_dir"] / "final" / "lit_model.pth", weights_only=True)
    after_kill = torch.load(out_dir / "final" / "lit_model.pth", weights_only=True)
    difference = max((straight[k].float() - after_kill[k].float()).abs().max().item() for k in straight)
    remove_step_checkpoints(out_dir)
    return (
        "## (d) SIGKILL + --resume auto\n\n"
        f"bf16-true, {scale['steps']} steps, checkpoints every {scale['save_interval']}; killed once {first.name} was"
        f" complete (checkpoints on disk then: {', '.join(completed)}), resumed from {Path(resumed_from).name} with"
        " `--resume auto`.\n\n"
        f"max |weight difference| against the uninterrupted run: **{difference:.3g}**\n"
    )


def evaluate_devices(setup: Setup) -> str:
    """(e) the same items on both devices, float32 on both so that the scores can agree exactly."""
    from litgpt_inheritune.evaluate import main as evaluate

    final, work = setup.runs["bf16-true"]["out_dir"] / "final", setup.work / "evaluate"
    scale, args = setup.scale, setup.args
    tasks = "piqa_offline,arc_easy_offline"
    devices = ["cpu", "cpu"] if args.dry_run else ["cuda", "cpu"]
    scores = {}
    for i, device in enumerate(devices):
        results = evaluate(
            final,
            tasks=tasks,
            include_path=materials.offline_tasks(args.cache_dir),
            limit=scale["eval_limit"],
            device=device,
            dtype="float32",
            out_dir=work / f"{i}-{device}",
        )["results"]
        scores[f"{i}-{device}"] = {
            task: (results[task]["acc,none"], results[task]["acc_norm,none"]) for task in tasks.split(",")
        }
    first, second = scores.values()
    lines = [
        "## (e) evaluate on GPU vs CPU\n",
        f"The bf16-true run's final checkpoint, float32 on both, {scale['eval_limit']} items per task."
        + (" Dry run: both on the CPU." if args.dry_run else "")
        + "\n",
        f"| task | acc {devices[0]} | acc {devices[1]} | acc_norm {devices[0]} | acc_norm {devices[1]} |",
        "|---|---|---|---|---|",
    ]
    for task in tasks.split(","):
        lines.append(
            f"| {task} | {first[task][0]:.4f} | {second[task][0]:.4f} | {first[task][1]:.4f} | {second[task][1]:.4f} |"
        )
    same = all(first[task] == second[task] for task in first)
    lines.append(f"\nsame scores: **{'yes' if same else 'no'}**\n")
    return "\n".join(lines)


def distributed(setup: Setup) -> str:
    """(f) DDP and FSDP over every GPU (dry run: two CPU processes over gloo); tokens/s from the logged step times and
    each rank's peak memory (pretrain's last line) against recipe_budget's estimate per GPU for that strategy."""
    scale, args, work = setup.scale, setup.args, setup.work / "runs"
    devices = 2 if args.dry_run else torch.cuda.device_count()
    lines = ["## (f) Several GPUs: DDP and FSDP\n"]
    if devices < 2:
        return "\n".join(lines + ["Skipped: one GPU.\n"])
    per_round = scale["micro_batch_size"] * devices  # the global batch: whole micro-batches on every device
    global_batch = per_round * -(-scale["global_batch_size"] // per_round)
    peak_kind = "peak RSS (dry run: not comparable with the GPU estimate)" if args.dry_run else "max_memory_allocated"
    lines += [
        f"{devices} devices, bf16-true, global batch {global_batch}, the same steps; tokens/s over the steps after the"
        f" first quarter; peak memory per rank: {peak_kind}; estimate: scripts/recipe_budget.py for {RECIPE.name} at"
        " this shape with that strategy (FSDP: weights, gradients and AdamW moments split over the devices).\n",
        "| strategy | tokens/s | seconds | peak per rank GB | estimate per GPU GB | largest peak / estimate |",
        "|---|---|---|---|---|---|",
    ]
    for strategy in ("ddp", "fsdp"):
        out_dir = work / strategy
        arguments = pretrain_args(
            setup,
            out_dir,
            *("--precision", "bf16-true", "--devices", str(devices), "--strategy", strategy),
            global_batch_size=global_batch,
            save_interval=None,
        )
        run = measured_run(arguments, out_dir, setup.env)
        rows = [r for r in metrics(out_dir) if r.get("loss")]
        times = [t for t in map(logged_seconds, rows) if t is not None]
        tokens_per_step = global_batch * scale["seq_length"]
        if len(times) != len(rows) or len(times) < 3:  # no per-step timing: the whole process's time
            tokens_per_sec = len(rows) * tokens_per_step / run["seconds"]
        else:
            w = len(times) // 4
            tokens_per_sec = (len(times) - 1 - w) * tokens_per_step / (times[-1] - times[w])
        peaks = rank_peaks(run["log"])
        estimate = estimate_gb(setup, "bf16-true", strategy=strategy, devices=devices) * 1e9
        lines.append(
            f"| {strategy} | {tokens_per_sec:,.1f} | {run['seconds']:.0f} | {', '.join(f'{p:.2f}' for p in peaks)}"
            f" | {estimate / 1e9:.2f} | {max(peaks) * 1e9 / estimate:.2f} |"
        )
        shutil.rmtree(out_dir / "final")
    return "\n".join(lines) + "\n"


CHECKS = (throughput, memory, precisions, resume, evaluate_devices, distributed)  # (a) to (f), in the report's order

if __name__ == "__main__":
    main()
