"""recipes/demo.py end to end at toy size (scripts/demo.sh runs it at full size): every step, report and summary."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import MATERIALS

ROOT = Path(__file__).resolve().parent.parent


def readme_toy_demo() -> list[str]:
    """The README's toy-size demo line, split as the shell would split it."""
    line = next(
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith(".venv/bin/python recipes/demo.py ")
    )
    return shlex.split(line)


def test_demo_runs_the_whole_method(tmp_path):
    """The README's toy line as written (2 optimizer steps of 8 x 32 tokens per model: the stages run, the comparison
    needs no more; 32-token sequences, as the validation loss of the 30-block reference on every held-out sequence is
    most of the run's time at the default 128), with this test's output folder and material cache."""
    out_dir = tmp_path / "demo"
    _, script, *args = readme_toy_demo()
    args[args.index("--out_dir") + 1] = str(out_dir)
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *args, "--cache_dir", str(MATERIALS)],
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


def test_a_learning_rate_that_is_not_positive_is_one_line_and_writes_nothing(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "demo.py"), "--lr", "0", "--out_dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --lr 0.0 must be a positive learning rate, e.g. 1e-3"
    assert not (tmp_path / "demo").exists()
