"""The 1.5B job at its true shape on this CPU: every stage a user runs, with peak memory, time and bytes written.

A synthetic reference with OpenLLaMA-3B's exact shape (26 blocks, n_embd 3200, vocabulary 32000) in bfloat16 (random
weights) and a real SentencePiece tokenizer.model (LLaMA-style BPE with byte fallback, trained with sentencepiece's
own trainer on the Lee news corpus) go through: init --n_layers 13 -> pretrain with
config_hub/pretrain/open_llama_3b-13L-1B-8ep.yaml (overriding only steps, sequence length, micro-batch and the data
folder) -> a step checkpoint -> SIGKILL -> --resume auto -> final/ -> evaluate on a few items -> export, then the
same pretrain as two FSDP processes (--strategy fsdp --devices 2, gloo): each rank's peak RSS (pretrain's last line)
against (weights + gradients + AdamW moments) / 2 per rank plus what every rank holds whole.
Each stage is a child process, measured with wait4 (peak RSS of that process), a clock and the bytes in its output.
Needs ~25 GB of free disk and ~20 GB of memory: run it alone.

    .venv/bin/python benchmarks/full_size.py [--work_dir benchmarks/.cache/full_size] [--keep false]
    .venv/bin/python benchmarks/full_size.py --reference pythia-14m --n_layers 2 --seq_len 32  # a tiny trial
    .venv/bin/python benchmarks/full_size.py --stages fsdp --seq_len 16  # FSDP alone (a step of 128 tokens takes
                                                  # over 17 min on a CPU without bf16 matrix kernels)
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RECIPE = ROOT / "config_hub" / "pretrain" / "open_llama_3b-13L-1B-8ep.yaml"

MAKE_REFERENCE = r"""
import json, sys
from pathlib import Path
import torch
from litgpt.config import Config
from litgpt.model import GPT
from litgpt.utils import save_config

out_dir = Path(sys.argv[1])
config = Config.from_name(sys.argv[2])
with torch.device("meta"):
    shapes = {name: tensor.shape for name, tensor in GPT(config).state_dict().items()}
generator = torch.Generator().manual_seed(0)
state_dict = {}
for name, shape in shapes.items():
    if name.endswith("norm_1.weight") or name.endswith("norm_2.weight") or name == "transformer.ln_f.weight":
        state_dict[name] = torch.ones(shape, dtype=torch.bfloat16)
    else:
        state_dict[name] = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
torch.save(state_dict, out_dir / "lit_model.pth")
save_config(config, out_dir)
(out_dir / "config.json").write_text(json.dumps({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": config.n_embd,
    "intermediate_size": config.intermediate_size, "num_attention_heads": config.n_head,
    "num_hidden_layers": config.n_layer, "num_key_value_heads": config.n_query_groups, "rms_norm_eps": config.norm_eps,
    "vocab_size": config.vocab_size, "max_position_embeddings": config.block_size, "bos_token_id": 1,
    "eos_token_id": 2, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}, indent=2))
print(sum(t.numel() for t in state_dict.values()))
"""

IMPORT_BASELINE = r"""
import psutil, torch, lightning, litgpt.model, litgpt_inheritune.pretrain
print(psutil.Process().memory_info().rss)
"""


def run_stage(name: str, command: list, out: Path, kill_when: Path = None) -> dict:
    """Runs one stage as a child process; peak RSS from wait4, seconds, bytes of `out` afterwards."""
    print(f"--- {name}: {' '.join(map(str, command))}", flush=True)
    log = open(out.parent / f"{name}.log", "w") if out.parent.is_dir() else subprocess.DEVNULL
    start = time.perf_counter()
    process = subprocess.Popen([str(c) for c in command], stdout=log, stderr=subprocess.STDOUT)
    killed = False
    if kill_when is not None:
        while process.poll() is None and not kill_when.exists():
            time.sleep(0.05)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed = True
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and not killed:
        sys.exit(f"{name} failed with exit code {code}; see {log.name}")
    written = (
        sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        if out.is_dir()
        else (out.stat().st_size if out.exists() else 0)
    )
    result = {
        "stage": name,
        "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,
        "seconds": seconds,
        "bytes_written_gb": written / 1e9,
        "killed": killed,
    }
    print(json.dumps(result), flush=True)
    return result


def cpu_memory_estimate(target: Path, params: int, baseline: int, micro_tokens: int) -> dict:
    """bf16-true training on a CPU: weights, gradients and both AdamW moments in bf16 (2 + 2 + 4 bytes per
    parameter); on resume, torch.load holds the whole step checkpoint (weights + moments, 6 bytes per parameter)
    beside the model before handing the moments to the optimizer, so the peak is the same 8 bytes per parameter.
    Activations at this tiny sequence length are taken from the measured per-token figure of scripts/recipe_budget.py."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from recipe_budget import activation_bytes
    from litgpt.config import Config

    activations = activation_bytes(Config.from_file(target / "model_config.yaml"), "bf16-true", 1, micro_tokens)
    return {
        "state": 8 * params,
        "baseline": baseline,
        "activations": activations,
        "total": 8 * params + baseline + activations,
    }


def fsdp_memory_estimate(params: int, estimate: dict, ranks: int) -> list[int]:
    """Per rank of an FSDP bf16-true run: weights, gradients and AdamW moments split over the ranks (8 bytes per
    parameter in all), plus what every rank holds whole (the imports, activations). Rank 0 also maps the whole
    starting checkpoint while it broadcasts it, and gathers the whole bf16 model for final/ (2 bytes per parameter,
    one at a time)."""
    shared = estimate["baseline"] + estimate["activations"]
    return [8 * params // ranks + shared + (2 * params if rank == 0 else 0) for rank in range(ranks)]


def rank_peaks(log: Path) -> list[float]:
    """Each rank's peak RSS in GB, from pretrain's "Peak memory per rank (peak RSS): a, b GB" line."""
    import re

    match = re.search(r"Peak memory per rank \([^)]*\): ([\d., ]+) GB", log.read_text())
    if match is None:
        sys.exit(f"no peak memory per rank in {log}")
    return [float(value) for value in match.group(1).split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", type=Path, default=ROOT / "benchmarks" / ".cache" / "full_size")
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--keep", default="false", help="keep the multi-GB folders afterwards (true/false)")
    parser.add_argument("--reference", default="open_llama_3b", help="litgpt config name of the reference's shape")
    parser.add_argument("--n_layers", type=int, default=13)
    parser.add_argument(
        "--stages",
        choices=("all", "fsdp"),
        default="all",
        help="all: every stage; fsdp: the reference, init and the 2-process FSDP pretrain only",
    )
    args = parser.parse_args()
    work = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stages = []

    sys.path.append(str(ROOT))  # materials.py: demo and test material, not in the package
    from materials import DEFAULT_CACHE, lee_corpus, offline_tasks, sentencepiece_tokenizer

    cache = ROOT / ".cache" / "materials" if (ROOT / ".cache" / "materials").is_dir() else DEFAULT_CACHE
    text = lee_corpus(cache)
    reference, target, run, hf = work / "reference", work / "target", work / "run", work / "hf"
    reference.mkdir()
    sentencepiece_tokenizer(reference, text, vocab_size=8000)
    data_dir = work / "data"
    data_dir.mkdir()
    with open(data_dir / "lee.jsonl", "w") as f:
        for i, line in enumerate(text.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                f.write(json.dumps({"text": line.strip(), "meta": {"source": "lee", "line": i}}) + "\n")

    baseline = int(
        subprocess.run([sys.executable, "-c", IMPORT_BASELINE], capture_output=True, text=True, check=True).stdout
    )
    # what the CLI itself takes before any work: `--help` imports everything a command imports
    cli_baseline = (
        run_stage("cli --help", [BIN / "litgpt", "inheritune", "init", "--help"], work / "none")["peak_rss_gb"] * 1e9
    )
    stages.append(
        run_stage(
            "reference", [sys.executable, "-c", MAKE_REFERENCE, reference, args.reference], reference / "lit_model.pth"
        )
    )
    stages.append(
        run_stage(
            "init",
            [BIN / "litgpt", "inheritune", "init", reference, "--n_layers", str(args.n_layers), "--out_dir", target],
            target,
        )
    )

    pretrain = [
        BIN / "litgpt",
        "inheritune",
        "pretrain",
        "--config",
        RECIPE,
        target,
        "--out_dir",
        run,  # positional after --config
        "--data.data_dir",
        data_dir,
        "--data.val_tokens",
        str(4 * (args.seq_len + 1)),
        "--data.num_workers",
        "0",
        "--train.max_steps",
        "2",
        "--train.max_seq_length",
        str(args.seq_len),
        "--train.micro_batch_size",
        "1",
        "--train.global_batch_size",
        "2",
        "--train.save_interval",
        "1",
        "--train.lr_warmup_steps",
        "1",
        "--train.log_interval",
        "1",
        "--eval.interval",
        "1000",
        "--eval.max_iters",
        "2",
        "--keep_checkpoints",
        "1",
    ]
    if args.stages == "all":
        stages.append(run_stage("pretrain (killed after step 1)", pretrain, run, kill_when=run / "step-00000001"))
        stages.append(run_stage("pretrain --resume auto", [*pretrain, "--resume", "auto"], run))
        final = run / "final"
        tasks = offline_tasks(cache)
        stages.append(
            run_stage(
                "evaluate",
                [
                    BIN / "litgpt",
                    "inheritune",
                    "evaluate",
                    final,
                    "--tasks",
                    "piqa_offline,boolq_offline",
                    "--include_path",
                    tasks,
                    "--limit",
                    "4",
                    "--batch_size",
                    "4",
                    "--out_dir",
                    work / "eval",
                    "--paper",
                    "false",
                ],
                work / "eval",
            )
        )
        stages.append(run_stage("export", [BIN / "litgpt", "inheritune", "export", final, "--out_dir", hf], hf))
    fsdp_run = work / "run_fsdp"
    fsdp = [*pretrain[: pretrain.index("--out_dir") + 1], fsdp_run, *pretrain[pretrain.index("--out_dir") + 2 :]]
    stages.append(run_stage("pretrain FSDP, 2 processes", [*fsdp, "--devices", "2", "--strategy", "fsdp"], fsdp_run))

    import torch

    target_weights = torch.load(target / "lit_model.pth", weights_only=True, mmap=True)
    params = sum(t.numel() for t in target_weights.values())
    target_bytes = (target / "lit_model.pth").stat().st_size
    estimate = cpu_memory_estimate(target, params, baseline, args.seq_len)
    fsdp_peaks = rank_peaks(work / "pretrain FSDP, 2 processes.log")
    fsdp_estimate = fsdp_memory_estimate(params, estimate, len(fsdp_peaks))
    summary = {
        "params": params,
        "import_baseline_gb": baseline / 1e9,
        "target_bytes_gb": target_bytes / 1e9,
        "init_peak_over_target": stages[1]["peak_rss_gb"] * 1e9 / target_bytes,
        "cli_baseline_gb": cli_baseline / 1e9,
        "init_peak_above_baseline_over_target": (stages[1]["peak_rss_gb"] * 1e9 - cli_baseline) / target_bytes,
        "pretrain_estimate_gb": {k: v / 1e9 for k, v in estimate.items()},
    }
    if args.stages == "all":
        step_files = (run / "step-00000002").rglob("*")
        summary["step_checkpoint_gb"] = sum(f.stat().st_size for f in step_files if f.is_file()) / 1e9
        peak = max(s["peak_rss_gb"] for s in stages[2:4])
        summary["pretrain_peak_over_estimate"] = peak * 1e9 / estimate["total"]
    summary |= {
        "fsdp_peak_rss_gb_per_rank": fsdp_peaks,
        "fsdp_peak_rss_gb_summed": sum(fsdp_peaks),
        "fsdp_estimate_gb_per_rank": [e / 1e9 for e in fsdp_estimate],
        "fsdp_peak_over_estimate_per_rank": [p * 1e9 / e for p, e in zip(fsdp_peaks, fsdp_estimate)],
        "stages": stages,
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    print("| stage | peak RSS | time | written |\n|---|---|---|---|")
    for s in stages:
        print(f"| {s['stage']} | {s['peak_rss_gb']:.2f} GB | {s['seconds']:.0f} s | {s['bytes_written_gb']:.2f} GB |")
    print(json.dumps({k: v for k, v in summary.items() if k != "stages"}, indent=2))
    if args.keep != "true":
        for folder in (reference, target, run, hf, fsdp_run):
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
