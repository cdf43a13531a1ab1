"""recipes/select_layers.py end to end at toy size (the README's table comes from its full-size run): one row per
measure with the blocks init chose, finite validation losses, the report and the plot."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from conftest import MATERIALS

ROOT = Path(__file__).resolve().parent.parent


def test_select_layers_trains_and_reports_one_row_per_measure(tmp_path):
    out_dir = tmp_path / "select"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "recipes" / "select_layers.py"),
            "--out_dir",
            str(out_dir),
            "--cache_dir",
            str(MATERIALS),
            "--n_layers",
            "2",
            "--measures",
            "first",
            "block_influence",
            "rank",
            "--train_tokens",
            "256",
            "--seq_len",
            "32",
            "--val_sequences",
            "8",
            "--analysis_sequences",
            "2",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out_dir / "summary.json").read_text())
    results = summary["results"]
    assert list(results) == ["reference", "first", "block_influence", "rank"]
    assert results["reference"]["layers"] == list(range(30)) and results["first"]["layers"] == [0, 1]
    # block 0 turns the embeddings into something else entirely (influence ~1), so blocks [0, 2) are the window of
    # highest influence: the same blocks as the prefix, whose trained result is reused instead of training them again
    assert results["block_influence"] == dict(results["first"], same_as="first")
    analysis = json.loads((out_dir / "analysis" / "attention.json").read_text())
    max_rank = analysis["max_rank"]
    best = max(
        range(29), key=lambda start: (max_rank[start] + max_rank[start + 1], -start)
    )  # the best 2-block window by MaxRank
    assert results["rank"]["layers"] == [best, best + 1]
    for name in ("first", "block_influence", "rank"):
        provenance = json.loads((out_dir / "checkpoints" / name / "provenance.json").read_text())
        assert provenance["layers"] == results[name]["layers"]
        assert all(math.isfinite(results[name][k]) and results[name][k] > 0 for k in ("val_loss_before", "val_loss"))
    # the trained 30-block reference is far better on held-out text than any 2 of its blocks
    assert math.isfinite(results["reference"]["val_loss"])
    assert results["reference"]["val_loss"] < min(results[n]["val_loss"] for n in ("first", "rank"))
    report = (out_dir / "report.md").read_text()
    for name in ("reference", "first", "rank"):
        assert f"| {name} | " in report
    assert "| block_influence | [0, 1] (as first) |" in report
    assert (out_dir / "val_loss.png").read_bytes()[:4] == b"\x89PNG"
