"""`litgpt inheritune compare`: one table and one plot for any set of `pretrain` runs (grow's rounds and baselines,
or out_dirs given by hand): final validation loss, parameters, tokens, wall time, and validation-loss curves against
tokens with the reference's level as a line (the paper's Figures 5 and 14); and LossMeter, the validation loss of any
checkpoint on the same held-out batches (grow's rounds against the reference, the recipes' comparisons)."""

import csv
import json
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from litgpt.args import EvalArgs, TrainArgs
from litgpt.config import Config
from litgpt.data import DataModule
from litgpt.model import GPT
from litgpt.tokenizer import Tokenizer

from litgpt_inheritune.checkpoint import STEP_DIR_PREFIX, load_gpt
from litgpt_inheritune.errors import fail
from litgpt_inheritune.files import write_text_atomic
from litgpt_inheritune.plots import plot_loss_curves
from litgpt_inheritune.pretrain import train_seq_length, validate
from litgpt_inheritune.settings import default_precision


def logged_seconds(row: dict) -> Optional[float]:
    """The clock of a CSV metrics row: pretrain logs Lightning's throughput clock (training time, validation and
    saving left out) as ``throughput/time``; stock litgpt and older runs as ``time``. None on rows without one."""
    value = row.get("throughput/time") or row.get("time")
    return float(value) if value else None


def main(
    run_dirs: list[Path],
    out_dir: Path = Path("out/inheritune/compare"),
    labels: Optional[list[str]] = None,
    reference_loss: Optional[float] = None,
) -> dict:
    """Compare pretrain runs: writes out_dir/compare.md (table), compare.json (the numbers and curves) and compare.png.

    Arguments:
        run_dirs: ``litgpt inheritune pretrain`` out_dirs (each with logs/csv/ from the csv logger and final/ or step-*/).
        out_dir: Where the table, JSON and plot go.
        labels: A name per run for the table and legend. Default: each run folder's path.
        reference_loss: Draw the reference's validation loss as a horizontal line and give each run's distance to it.
    """
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    if not run_dirs:
        fail("give at least one pretrain out_dir to compare")
    if labels is not None and len(labels) != len(run_dirs):
        fail(f"--labels has {len(labels)} names for {len(run_dirs)} runs; give one per run or none")
    runs = [read_run(run_dir, label) for run_dir, label in zip(run_dirs, labels or [str(d) for d in run_dirs])]
    result = {"reference_loss": reference_loss, "runs": runs}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "compare.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out_dir / "compare.md", comparison_table(runs, reference_loss) + "\n")
    plot_loss_curves(runs, reference_loss, out_dir / "compare.png", "validation loss against training tokens")
    print((out_dir / "compare.md").read_text())
    return result


def read_run(run_dir: Path, label: str) -> dict:
    """A pretrain out_dir's final validation loss, parameters, tokens, steps, wall time and validation curve."""
    logs = sorted((run_dir / "logs" / "csv").glob("version_*/metrics.csv"))
    checkpoints = [run_dir / "final"] + sorted(run_dir.glob(f"{STEP_DIR_PREFIX}*"), reverse=True)
    checkpoint = next((c for c in checkpoints if (c / "model_config.yaml").is_file()), None)
    if not logs or checkpoint is None:
        fail(
            f"{run_dir} is not a pretrain out_dir with csv logs (logs/csv/version_*/metrics.csv) and a checkpoint; "
            "give the --out_dir of a `litgpt inheritune pretrain` run with --logger_name csv"
        )
    rows, wall_time = [], 0.0
    for log in logs:  # a resumed run logs into a new version folder; its clock restarts
        with open(log) as f:
            version = list(csv.DictReader(f))
        rows += version
        wall_time += max((t for t in map(logged_seconds, version) if t is not None), default=0.0)
    tokens_at = {int(float(r["step"])): int(float(r["tokens"])) for r in rows if r.get("tokens")}
    per_step = max(tokens_at.values()) / max(tokens_at) if tokens_at else 0
    curve = sorted({int(float(r["step"])): float(r["val_loss"]) for r in rows if r.get("val_loss")}.items())
    steps = max(tokens_at, default=0)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in GPT(Config.from_file(checkpoint / "model_config.yaml")).parameters())
    return {
        "label": label,
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint),
        "val_loss": curve[-1][1] if curve else None,
        "parameters": parameters,
        "steps": steps,
        "tokens": tokens_at.get(steps, 0),
        "wall_time_s": round(wall_time, 3),
        "curve": [[round(step * per_step), loss] for step, loss in curve],
    }


def comparison_table(runs: list[dict], reference_loss: Optional[float]) -> str:
    lines = [
        "| run | final validation loss | vs reference | parameters | steps | tokens | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    if reference_loss is not None:
        lines.append(f"| reference | {reference_loss:.4f} | | | | | |")
    for run in runs:
        loss = "n/a" if run["val_loss"] is None else f"{run['val_loss']:.4f}"
        gap = "" if reference_loss is None or run["val_loss"] is None else f"{run['val_loss'] - reference_loss:+.4f}"
        lines.append(
            f"| {run['label']} | {loss} | {gap} | {run['parameters'] / 1e6:.3f} M | {run['steps']:,} |"
            f" {run['tokens']:,} | {run['wall_time_s']:.1f} s |"
        )
    return "\n".join(lines)


class LossMeter:
    """Validation loss of a checkpoint on the first --eval.max_iters held-out batches, on one device."""

    def __init__(
        self, reference_dir: Path, data: DataModule, train: TrainArgs, eval: EvalArgs, precision: Optional[str]
    ) -> None:
        self.fabric = L.Fabric(accelerator="auto", devices=1, precision=default_precision(precision))
        self.seq_len = train_seq_length(Config.from_file(reference_dir / "model_config.yaml"), train)
        data.connect(tokenizer=Tokenizer(reference_dir), batch_size=train.micro_batch_size, max_seq_length=self.seq_len)
        data.prepare_data()
        data.setup()
        self.val_dataloader = self.fabric.setup_dataloaders(data.val_dataloader())
        self.max_iters = eval.max_iters

    @torch.no_grad()
    def __call__(self, checkpoint: Path) -> float:
        model = load_gpt(checkpoint)
        model.max_seq_length = self.seq_len
        loss = validate(self.fabric, self.fabric.setup(model), self.val_dataloader, self.max_iters)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the memory back: grow's training runs are other processes on the same GPU
        return loss
