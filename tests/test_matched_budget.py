"""recipes/matched_budget.py end to end at toy size on a tiny reference: every start built as its method chooses
its blocks (checked against the analysis it read), trained on the same budget, measured and reported."""

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from conftest import MATERIALS, TEXT, make_reference

ROOT = Path(__file__).resolve().parent.parent


def test_matched_budget_trains_measures_and_reports_every_start(tmp_path):
    reference = make_reference(tmp_path / "reference", "llama-gqa")  # 6 blocks
    rng = random.Random(0)
    words = TEXT.split()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(40, 90))) for _ in range(120)))
    out_dir = tmp_path / "matched"
    command = [
        sys.executable,
        str(ROOT / "recipes" / "matched_budget.py"),
        "--size",
        "toy",
        "--reference",
        str(reference),
        "--data_path",
        str(corpus),
        "--n_layers",
        "3",
        "--tasks",
        "piqa_offline",
        "--out_dir",
        str(out_dir),
        "--cache_dir",
        str(MATERIALS),
        "--resume",  # in an empty out_dir: a fresh run that keeps step checkpoints
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out_dir / "summary.json").read_text())
    results = summary["results"]
    starts = ["first", "rank_window", "shortgpt", "laco", "replaceme", "first_bridge", "random"]
    assert set(results) == {"reference", *starts}

    # each method's blocks, from the analysis the recipe wrote
    analysis = json.loads((out_dir / "analysis" / "attention.json").read_text())
    rank, influence = analysis["max_rank"], analysis["block_influence"]
    best_window = max(range(4), key=lambda s: (sum(rank[s : s + 3]), -s))
    assert results["rank_window"]["layers"] == [best_window, best_window + 1, best_window + 2]
    assert results["shortgpt"]["layers"] == sorted(sorted(range(6), key=lambda i: (-influence[i], i))[:3])
    cut = min(range(1, 4), key=lambda s: (analysis["angular_distance"]["3"][s], s))
    assert results["replaceme"]["layers"] == [i for i in range(6) if not cut <= i < cut + 3]
    assert results["replaceme"]["bridges"][0]["cut"] == [cut, cut + 3]
    assert results["first"]["layers"] == [0, 1, 2] and results["first_bridge"]["layers"] == [0, 1, 2]
    assert results["first_bridge"]["bridges"][0]["cut"] == [3, 6]
    assert results["laco"]["layers"] == [0, 1, 2] and results["laco"]["merged"] == {"2": [3, 4, 5]}
    assert results["random"]["layers"] is None

    compared = {run["label"]: run for run in json.loads((out_dir / "compare" / "compare.json").read_text())["runs"]}
    for label in starts:
        r = results[label]
        final = out_dir / "runs" / f"{label}-seed42" / "final"
        parameters = sum(t.numel() for t in torch.load(final / "lit_model.pth", weights_only=True).values())
        assert r["parameters"] == parameters and r["tokens_per_s"] > 0
        assert all(math.isfinite(r[k]) for k in ("val_loss_before", "val_loss"))
        # the recipe's measurement and pretrain's own last validation, on the same held-out batches
        assert r["val_loss"] == compared[f"{label} (seed 42)"]["val_loss"] or math.isclose(
            r["val_loss"], compared[f"{label} (seed 42)"]["val_loss"], rel_tol=1e-4
        )
        score = r["scores"]["piqa_offline"]
        assert score["items"] == 2 and score["acc"] in (0.0, 50.0, 100.0) and score["stderr"] is not None
    assert results["reference"]["parameters"] > results["first"]["parameters"]
    report = (out_dir / "report.md").read_text()
    for label in ["reference", *starts]:
        assert f"| {label} | " in report
    assert (out_dir / "compare" / "compare.png").read_bytes()[:4] == b"\x89PNG"

    # interrupted: one run lost its final checkpoint (its step checkpoint stays), one start lost its scores
    timings = json.loads((out_dir / "timings.json").read_text())
    shutil.rmtree(out_dir / "runs" / "laco-seed42" / "final")
    shutil.rmtree(out_dir / "eval" / "shortgpt")
    untouched = (out_dir / "runs" / "first-seed42" / "final" / "lit_model.pth").stat().st_mtime_ns
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Resuming from" in output and str(out_dir / "runs" / "laco-seed42" / "step-00000002") in output
    assert output.count("Resuming from") == 1  # the finished runs are not trained again
    assert (out_dir / "runs" / "first-seed42" / "final" / "lit_model.pth").stat().st_mtime_ns == untouched
    assert (out_dir / "eval" / "shortgpt" / "seed0" / "results.json").is_file()
    resumed = json.loads((out_dir / "summary.json").read_text())["results"]
    for label in ["reference", *starts]:
        for key in ("val_loss", "val_loss_before", "parameters", "layers", "scores"):
            assert resumed[label].get(key) == results[label].get(key), (label, key)
    kept = json.loads((out_dir / "timings.json").read_text())
    assert kept["train_first_seed42"] == timings["train_first_seed42"]  # figures of phases not repeated stay
