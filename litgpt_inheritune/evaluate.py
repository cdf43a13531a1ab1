"""`litgpt inheritune evaluate`: lm-evaluation-harness on a LitGPT checkpoint, with a table beside chance level."""

import difflib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Literal, Optional, Union

import torch

from litgpt_inheritune.checkpoint import fail, resolve_checkpoint_dir, write_text_atomic

# The paper's low-data suite (Table 6): task -> shots. "wsc" is SuperGLUE WSC (104 validation items), the paper's "Winograd".
LOW_DATA = {
    "piqa": 0, "boolq": 0, "winogrande": 0, "wsc": 0, "logiqa": 0, "truthfulqa_mc2": 0,
    "mnli": 0, "qnli": 0, "wnli": 0, "mmlu": 5,
}
# Chance or majority-class accuracy (%) on the split lm-eval scores; None where no simple baseline applies.
CHANCE = {
    "piqa": 50.0, "boolq": 62.2, "winogrande": 50.0, "wsc": 63.5, "logiqa": 25.0, "truthfulqa_mc2": None,
    "mnli": 35.4, "qnli": 50.5, "wnli": 56.3, "mmlu": 25.0, "arc_easy": 25.0, "arc_challenge": 25.0,
    "sciq": 25.0, "hellaswag": 25.0,
}
# The paper's Table 6 (accuracy, %).
PAPER = {
    "OpenLLaMA-3B (paper)": {"wsc": 63.46, "piqa": 74.97, "boolq": 67.18, "winogrande": 62.27, "logiqa": 28.4, "mmlu": 27.21,
                             "wnli": 50.7, "qnli": 51.3, "mnli": 37.3, "truthfulqa_mc2": 35.0},
    "Inheritune 1.5B (paper)": {"wsc": 50.96, "piqa": 56.47, "boolq": 61.68, "winogrande": 51.69, "logiqa": 25.19, "mmlu": 25.67,
                                "wnli": 43.66, "qnli": 49.41, "mnli": 34.42, "truthfulqa_mc2": 48.61},
}
METRICS = ("acc,none", "acc_norm,none", "exact_match,none", "word_perplexity,none")


def main(
    checkpoint_dir: Path,
    tasks: str = "low_data",
    num_fewshot: Optional[int] = None,
    limit: Optional[float] = None,
    include_path: Optional[Path] = None,
    batch_size: Union[int, Literal["auto"]] = 8,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    out_dir: Optional[Path] = None,
    compare: Optional[list[Path]] = None,
    paper: bool = True,
    seed: int = 1234,
    trust_remote_code: bool = False,
    log_samples: bool = False,
) -> dict:
    """Evaluate a LitGPT checkpoint with lm-evaluation-harness, directly on LitGPT's model (no conversion).

    Writes out_dir/results.json (lm-eval's results) and out_dir/results.md: one row per task with the metric, the
    chance or majority-class level, the other evaluated models given with --compare and the paper's Table 6.

    Arguments:
        checkpoint_dir: A LitGPT checkpoint directory.
        tasks: "low_data" (the paper's ten benchmarks, MMLU 5-shot and the rest 0-shot) or comma-separated lm-eval
            task names (also from --include_path).
        num_fewshot: Shots for every task, overriding the suite's per-task counts.
        limit: Examples per task (a number, or a fraction below 1), for quick runs.
        include_path: A folder of extra lm-eval task YAMLs (e.g. tasks that read local Arrow files).
        batch_size: Sequences per forward pass, or "auto" (lm-eval's meaning: the largest batch up to 64 whose forward
            pass over the longest request fits in memory, halving until it does).
        device: "cpu", "cuda", "cuda:1", ... Default: cuda when available.
        dtype: "float32", "bfloat16" or "float16". Default: the checkpoint's on a GPU, float32 on a CPU.
        out_dir: Where results go. Default: <checkpoint_dir>/evaluate.
        compare: out_dirs of other `evaluate` runs to show side by side (reference, inherited, baselines).
        paper: Show the paper's Table 6 rows for the tasks it reports.
        seed: Seed for few-shot sampling and anything random in lm-eval.
        trust_remote_code: Let datasets run code shipped with a task's dataset (off unless you ask).
        log_samples: Also write lm-eval's per-item records (prompt, arguments, responses, metrics) to
            out_dir/samples_<task>_<time>.jsonl, as ``lm_eval --log_samples`` does.
    """
    checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
    for name in ("lit_model.pth", "model_config.yaml"):
        if not (checkpoint_dir / name).is_file():
            fail(f"checkpoint_dir {checkpoint_dir} is missing {name}; expected a LitGPT checkpoint directory")
    if not ((checkpoint_dir / "tokenizer.json").is_file() or (checkpoint_dir / "tokenizer.model").is_file()):
        fail(f"checkpoint_dir {checkpoint_dir} has no tokenizer.json or tokenizer.model")
    if include_path is not None and not Path(include_path).is_dir():
        fail(f"--include_path {include_path} is not a folder of task YAMLs")
    for path in compare or []:
        if not (Path(path) / "results.json").is_file():
            fail(f"--compare {path} holds no results.json from `litgpt inheritune evaluate`")
    out_dir = checkpoint_dir / "evaluate" if out_dir is None else Path(out_dir)
    shots = task_shots(tasks, num_fewshot)

    from lm_eval import evaluator
    from lm_eval.tasks import TaskManager

    task_manager = TaskManager(include_path=str(include_path) if include_path else None)
    check_task_names(list(shots), task_manager)
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        fail(f"--batch_size {batch_size} must be a positive number or auto")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None and torch.device(device).type == "cpu":
        dtype = "float32"  # bf16/fp16 matmuls on a CPU are slow and lose precision
    from litgpt_inheritune.lm_eval_model import LitGPTLM

    model = LitGPTLM(checkpoint_dir, batch_size=batch_size, device=device, dtype=getattr(torch, dtype) if dtype else None)
    from lm_eval.loggers import EvaluationTracker

    # given a .json path, lm-eval's tracker writes the per-item records into that file's folder
    tracker = EvaluationTracker(output_path=str(out_dir / "results.json"))
    tracker.date_id = datetime.now().isoformat().replace(":", "-")  # set by lm-eval's CLI when it saves the results
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if trust_remote_code:
        import datasets

        datasets.config.HF_DATASETS_TRUST_REMOTE_CODE = True

    merged: dict = {}
    for k in sorted(set(shots.values()), key=lambda v: -1 if v is None else v):
        names = [task for task, n in shots.items() if n == k]
        results = evaluator.simple_evaluate(
            model=model, tasks=names, num_fewshot=k, limit=limit, task_manager=task_manager, random_seed=seed,
            numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed, log_samples=log_samples,
        )
        for task, samples in results.get("samples", {}).items():
            tracker.save_results_samples(task_name=task, samples=samples)
            if not (out_dir / f"samples_{task}_{tracker.date_id}.jsonl").is_file():  # lm-eval only logs a warning
                fail(f"--log_samples: could not write {out_dir}/samples_{task}_{tracker.date_id}.jsonl")
        for key in ("results", "groups", "configs", "versions", "n-shot", "higher-is-better", "n-samples"):
            merged.setdefault(key, {}).update(results.get(key, {}))
    merged["model"] = {"checkpoint_dir": str(checkpoint_dir.resolve()), "name": model.model.config.name,
                       "n_layer": model.model.config.n_layer, "limit": limit, "device": device,
                       "dtype": str(next(model.model.parameters()).dtype).removeprefix("torch."), "batch_size": model.batch_size}

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "results.json", json.dumps(merged, indent=2, default=str) + "\n")
    table = results_table(merged, list(shots), [json.loads((Path(p) / "results.json").read_text()) for p in compare or []], paper)
    write_text_atomic(out_dir / "results.md", table)
    print(table)
    return merged


def task_shots(tasks: str, num_fewshot: Optional[int]) -> dict:
    """Task name -> shots (None: the task's own default)."""
    names = [t.strip() for t in str(tasks).split(",") if t.strip()]
    shots = {}
    for name in names:
        if name == "low_data":
            shots.update(LOW_DATA)
        else:
            shots[name] = None
    if not shots:
        fail("--tasks is empty; give low_data or comma-separated lm-eval task names")
    if num_fewshot is not None:
        if num_fewshot < 0:
            fail(f"--num_fewshot {num_fewshot} must be 0 or more")
        shots = {name: num_fewshot for name in shots}
    return shots


def check_task_names(names: list[str], task_manager) -> None:
    known = set(task_manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
            fail(f"--tasks: unknown task {name!r}; closest: {', '.join(close) or 'none'} (`lm_eval --tasks list` lists all)")


def score(results: dict, task: str) -> tuple[Optional[str], Optional[float]]:
    entry = results.get("results", {}).get(task) or results.get("groups", {}).get(task)
    if entry is None:
        return None, None
    for metric in METRICS:
        if isinstance(entry.get(metric), (int, float)):
            value = entry[metric]
            return metric.split(",")[0], value * 100 if metric.startswith(("acc", "exact")) else value
    return None, None


def results_table(results: dict, tasks: list[str], others: list[dict], paper: bool) -> str:
    model = results["model"]
    columns = column_labels([model] + [o["model"] for o in others])
    paper_columns = [name for name in PAPER if paper and any(task.removesuffix("_offline") in PAPER[name] for task in tasks)]
    header = ["task", "shots", "metric", *columns, "chance", *paper_columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in tasks:
        metric, value = score(results, task)
        shots = results.get("n-shot", {}).get(task, "")
        row = [task, str(shots), metric or "", fmt(value)] + [fmt(score(o, task)[1]) for o in others]
        base = task.removesuffix("_offline")
        row += [fmt(CHANCE.get(base))] + [fmt(PAPER[name].get(base)) for name in paper_columns]
        lines.append("| " + " | ".join(row) + " |")
    limit = model.get("limit")
    note = f"\nScores in %, on at most {limit} examples per task (--limit).\n" if limit else "\nScores in %.\n"
    return "\n".join(lines) + "\n" + note + "Chance: the accuracy of guessing, or of always answering the majority class.\n"


def column_labels(models: list[dict]) -> list[str]:
    """"name (n layers)" per model; where two share that label (an inherited model and its random-init baseline),
    the last two parts of their checkpoint paths tell them apart."""
    labels = [f"{m['name']} ({m['n_layer']} layers)" for m in models]
    return [
        f"{label} {'/'.join(Path(m['checkpoint_dir']).parts[-2:])}" if labels.count(label) > 1 else label
        for label, m in zip(labels, models)
    ]


def fmt(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.2f}"
