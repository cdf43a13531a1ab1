"""`litgpt inheritune compare`: one table and one plot for any set of `pretrain` runs (grow's rounds and baselines,
or out_dirs given by hand): final validation loss, parameters, tokens, wall time, and validation-loss curves against
tokens with the reference's level as a line (the paper's Figures 5 and 14); grow's report (grow.json, grow.md and
grow.png) with the same table and plot; and LossMeter, the validation loss of any checkpoint on the same held-out
batches (grow's rounds against the reference, the recipes' comparisons)."""

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
    rows = [] if reference_loss is None else [["reference", f"{reference_loss:.4f}", "", "", "", "", ""]]
    for run in runs:
        loss = "n/a" if run["val_loss"] is None else f"{run['val_loss']:.4f}"
        gap = "" if reference_loss is None or run["val_loss"] is None else f"{run['val_loss'] - reference_loss:+.4f}"
        budget = [f"{run['steps']:,}", f"{run['tokens']:,}", f"{run['wall_time_s']:.1f} s"]
        rows.append([run["label"], loss, gap, f"{run['parameters'] / 1e6:.3f} M", *budget])
    header = ["run", "final validation loss", "vs reference", "parameters", "steps", "tokens", "wall time"]
    return markdown_table(header, rows)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of text cells (compare.md's, grow.md's)."""
    return "\n".join([markdown_row(header), "|" + "---|" * len(header), *map(markdown_row, rows)])


def markdown_row(cells: list[str]) -> str:
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"  # an empty cell is one space


def write_grow_report(out_dir: Path, report: dict, baselines: dict, starts: dict) -> None:
    """grow's report: grow.json (the numbers), grow.md (a table of the reference, every round and every baseline, and
    what they were trained and measured on) and grow.png (their validation-loss curves). ``baselines`` and ``starts``
    describe grow's baselines and starts in words, by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "grow.json", json.dumps(report, indent=2) + "\n")
    result = report["result"] or "none: no round matched the reference"
    text = (
        grow_table(report)
        + f"\n\nGrown model: {result}.\n"
        + "".join(f"Baseline {name}: {baselines[name]}.\n" for name in report["baselines"])
    )
    text += grow_settings_text(report, starts)
    write_text_atomic(out_dir / "grow.md", text)
    plot_grow_report(out_dir, report)


def grow_table(report: dict) -> str:
    """The validation loss of the reference, every round and every baseline, with each one's distance to the
    reference and training budget."""
    reference = report["reference"]
    rows = [["reference", f"{reference['n_layers']}", "all", f"{reference['val_loss']:.4f}", "", "", ""]]
    models = [("round", entry) for entry in report["rounds"]]
    models += [(f"baseline: {name}", entry) for name, entry in report["baselines"].items()]
    for model, entry in models:
        gap = f"{entry['val_loss'] - reference['val_loss']:+.4f}{' matched' if entry.get('matched') else ''}"
        budget = [f"{entry['steps']:,}", f"{entry['tokens']:,}"] if "steps" in entry else ["", ""]
        rows.append([model, f"{entry['n_layers']}", entry["layers"], f"{entry['val_loss']:.4f}", gap, *budget])
    header = ["model", "blocks", "layers of the reference", "validation loss", "vs reference", "steps", "tokens"]
    return markdown_table(header, rows)


def grow_settings_text(report: dict, starts: dict) -> str:
    """The data, budget, validation size and (with --analysis) the lazy layers, in words under grow's table."""
    settings = report.get("settings")
    if settings is None:
        return ""
    data = settings["data"]
    data_text = data if isinstance(data, str) else f"{data['class_path']} {json.dumps(data.get('init_args', {}))}"
    budget = ", ".join(f"--train.{key} {value}" for key, value in settings["train"].items())
    validation = settings["validation"]
    text = (
        f"\nData: {data_text}.\nBudget of every run: {budget}, sequences of {settings['seq_len']} tokens"
        f" (stacking trains twice: its half model first).\nValidation loss: the first {validation['batches']} held-out"
        f" batches ({validation['tokens']:,} tokens), the same for every model, on one device.\n"
        f"Rounds grown from: the {settings['grow_from']} model.\n"
        f"Start of every round: {starts[settings.get('start', 'first')]}.\n"
    )
    if "distill" in settings and any(
        name.startswith("distill") or name.endswith("distill") for name in report["baselines"]
    ):
        text += f"Distillation: teacher the reference, alpha {settings['distill']['alpha']}, temperature {settings['distill']['temperature']}.\n"
    last_n = report["baselines"].get("last_n")
    if settings.get("analysis"):
        lazy = settings["analysis"]["lazy_layers"]
        text += f"Lazy layers of the reference by the analysis in {settings['analysis']['path']}: {lazy or 'none'}.\n"
        if last_n is not None:
            first, last = map(int, last_n["layers"].split("-"))
            held = [layer for layer in lazy if first <= layer <= last]
            text += f"The last_n baseline holds blocks {first}-{last}; lazy among them: {held or 'none'}.\n"
    elif last_n is not None:
        text += "No --analysis given: whether the last_n baseline's blocks are lazy is not measured.\n"
    return text


def plot_grow_report(out_dir: Path, report: dict) -> None:
    """grow.png: validation loss against training tokens of every round and baseline, with the reference's level."""
    entries = [(f"{entry['n_layers']} blocks (round)", entry) for entry in report["rounds"]]
    entries += [(f"{name} ({entry['n_layers']} blocks)", entry) for name, entry in report["baselines"].items()]
    runs = [read_run(Path(entry["checkpoint"]).parent, label) for label, entry in entries]
    plot_loss_curves(
        runs,
        report["reference"]["val_loss"],
        out_dir / "grow.png",
        f"grow: validation loss of every round and baseline (reference: {report['reference']['n_layers']} blocks)",
    )


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
