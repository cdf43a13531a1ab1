"""recipes/demo.py end to end at toy size (scripts/demo.sh runs it at full size): every step, report and summary."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import MATERIALS

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_the_whole_method(tmp_path):
    out_dir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "recipes" / "demo.py"),
            "--out_dir",
            str(out_dir),
            "--cache_dir",
            str(MATERIALS),
            "--n_layers",
            "4",
            "--train_tokens",
            "512",  # 2 optimizer steps of 8 x 32 tokens per model: the stages run, the comparison needs no more
            "--lr",
            "2e-3",
            "--eval_limit",
            "3",
            "--analysis_sequences",
            "2",
            # 32-token sequences: the validation loss of the 30-block reference on every held-out sequence is most of the
            # run's time at the default 128, and nothing below depends on the length
            "--seq_len",
            "32",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert {k: summary[k]["n_layers"] for k in ("reference", "inherited", "random")} == {
        "reference": 30,
        "inherited": 4,
        "random": 4,
    }
    assert summary["inherited"]["params"] == summary["random"]["params"] < summary["reference"]["params"]
    for name in ("reference", "inherited", "random"):
        assert summary[name]["val_loss"] > 0
        assert set(summary[name]["scores"]) == {"piqa_offline", "arc_easy_offline", "boolq_offline", "sciq_offline"}
    # the reference is the trained 30-block model: far better on held-out text than 512 tokens of training can make a 4-block one
    assert summary["reference"]["val_loss"] < min(summary["inherited"]["val_loss"], summary["random"]["val_loss"])
    for run in ("inherited", "random"):  # --lr is both runs' peak learning rate, the paper's other AdamW settings kept
        hyperparameters = yaml.safe_load((out_dir / "runs" / run / "final" / "hyperparameters.yaml").read_text())
        assert hyperparameters["optimizer"]["init_args"] == {"lr": 2e-3, "weight_decay": 0.1, "betas": [0.9, 0.95]}
    report = (out_dir / "report.md").read_text()
    assert "| reference | 30 |" in report and "| random | 4 |" in report
    for picture in ("loss_curves.png", "analysis/max_rank.png", "hf/inherited/loss.png", "hf/inherited/max_rank.png"):
        assert (out_dir / picture).read_bytes()[:4] == b"\x89PNG"
    # the inherited model's card: SmolLM2 as base model, and the reference's and inherited model's scores
    from huggingface_hub import ModelCard

    card = ModelCard.load(out_dir / "hf" / "inherited" / "README.md")
    assert (card.data.base_model, card.data.license) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")
    scores = {entry.dataset_name: round(100 * entry.metric_value, 2) for entry in card.data.eval_results}
    assert scores == summary["inherited"]["scores"]
    piqa = next(line for line in card.text.splitlines() if line.startswith("| piqa_offline |"))
    assert f"| {summary['reference']['scores']['piqa_offline']:.2f} ± " in piqa
    for stage in (
        "analyze the reference",
        "inherit the first 4 of 30 blocks",
        "pretrain inherited",
        "pretrain random",
        "evaluate random",
        "export the inherited model",
        "report",
    ):
        assert f"=== {stage}" in result.stderr
