"""`litgpt inheritune grow`: the paper's Algorithm 1 end to end, and its baselines at the size it ends with.

Inherit the first n blocks of the reference, train, compare validation losses; while the target is worse than the
reference, inherit n + k blocks afresh from the reference and train again. Every round and baseline is an ordinary
`litgpt inheritune init` checkpoint trained by `litgpt inheritune pretrain` (run as a child process, so Fabric's
launcher handles several devices), with the same data, budget and settings. Validation losses of the reference, every
round and the baselines are measured the same way: the same held-out batches, one device.
"""

import json
import math
import sys
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from litgpt.args import EvalArgs, LogArgs, TrainArgs
from litgpt.config import Config
from litgpt.data import DataModule
from litgpt.types import LoggerChoice

from litgpt_inheritune.checkpoint import fail, fingerprint, write_text_atomic
from litgpt_inheritune.cluster import PREEMPTED_EXIT_CODE, lock_out_dir, run_forwarding_stop_signals, unlock_out_dir
from litgpt_inheritune.init import main as init
from litgpt_inheritune.pretrain import EVAL_DEFAULTS, PAPER_OPTIMIZER, TRAIN_DEFAULTS, LossMeter, hyperparameters
from litgpt_inheritune.redpajama import RedPajamaSample

BASELINES = {
    "random": "the final size's architecture trained from a random initialisation",
    "lazy": "the last n blocks of the reference (its lazy layers) instead of the first n",
    "hybrid_stacking": "the reference's first n/2 blocks stacked twice to n blocks, then trained",
    "stacking": "n/2 blocks trained from a random initialisation, stacked twice to n blocks, trained again (twice the budget)",
}


def main(
    reference_dir: Path,
    out_dir: Path = Path("out/inheritune/grow"),
    n_layers: Optional[int] = None,
    grow_by: int = 2,
    max_layers: Optional[int] = None,
    baselines: str = "random,lazy",
    tolerance: float = 0.0,
    precision: Optional[Literal["bf16-true", "bf16-mixed", "32-true"]] = None,
    data: Optional[DataModule] = None,
    train: TrainArgs = TRAIN_DEFAULTS,
    eval: EvalArgs = EVAL_DEFAULTS,
    log: LogArgs = LogArgs(),
    optimizer: Union[str, dict] = PAPER_OPTIMIZER,
    devices: Union[int, str] = "auto",
    strategy: Literal["auto", "ddp", "fsdp"] = "auto",
    activation_checkpointing: bool = False,
    logger_name: LoggerChoice = "csv",
    seed: int = 42,
) -> dict:
    """Inherit, train, grow (Algorithm 1): rounds of n, n + k, ... blocks until the target's validation loss reaches
    the reference's, then the baselines at that size on the same budget.

    Writes out_dir/<n>L/{init,train} per round, out_dir/baselines/<name>-<n>L/{init,train}, and out_dir/grow.json and
    grow.md (validation loss of the reference, every round and every baseline). Re-running continues: finished rounds
    are reused and an interrupted training resumes from its newest checkpoint.

    Arguments:
        reference_dir: The reference LitGPT checkpoint.
        out_dir: Where rounds, baselines and the report go.
        n_layers: Blocks in the first round. Default: half of the reference's (the paper's l = L/2).
        grow_by: Blocks added per round (the paper's k = 2).
        max_layers: Stop growing at this many blocks even if the target has not matched. Default: the reference's.
        baselines: Comma-separated, trained at the final size n: "random" (same architecture, random initialisation),
            "lazy" (the reference's last n blocks), "hybrid_stacking" (its first n/2 blocks stacked twice),
            "stacking" (n/2 blocks trained from random initialisation, stacked twice, trained again). "" for none.
        tolerance: The target matches when its validation loss <= the reference's + tolerance.
        precision: As for pretrain; also used to measure validation losses.
        data: Data module, as for pretrain. Default: ``RedPajamaSample``.
        train: Training arguments of every round and baseline (the paper's T steps: --train.max_steps, or epochs/tokens).
        eval: Validation arguments; --eval.max_iters batches also measure the losses compared between models.
        log: Logger arguments, as for pretrain.
        optimizer: As for pretrain.
        devices: Devices per training run (one node); losses are measured on one.
        strategy: As for pretrain.
        activation_checkpointing: As for pretrain.
        logger_name: As for pretrain.
        seed: Random seed of every training run.
    """
    reference_dir, out_dir = Path(reference_dir), Path(out_dir)
    if not (reference_dir / "model_config.yaml").is_file():
        fail(f"reference_dir {reference_dir} has no model_config.yaml; expected a LitGPT checkpoint directory")
    n_reference = Config.from_file(reference_dir / "model_config.yaml").n_layer
    sizes = round_sizes(n_reference, n_layers, grow_by, max_layers)
    chosen = [name.strip() for name in baselines.split(",") if name.strip()]
    for name in chosen:
        if name not in BASELINES:
            fail(f"--baselines: unknown baseline {name!r}; valid: {', '.join(BASELINES)} (comma-separated) or ''")
    if tolerance < 0:
        fail(f"--tolerance {tolerance} must be 0 or more")
    data = RedPajamaSample() if data is None else data
    pretrain_args = hyperparameters(dict(
        precision=precision, data=data, train=train, eval=eval, log=log, optimizer=optimizer, devices=devices,
        strategy=strategy, activation_checkpointing=activation_checkpointing, logger_name=logger_name, seed=seed,
    ))
    measure = LossMeter(reference_dir, data, train, eval, precision)

    report = {"reference": {"checkpoint": str(reference_dir), "n_layers": n_reference, "val_loss": measure(reference_dir)},
              "tolerance": tolerance, "rounds": [], "baselines": {}, "result": None}
    lock_out_dir(out_dir)  # one grow per out_dir (each training run also locks its own folder)
    target_loss = report["reference"]["val_loss"] + tolerance
    print(f"grow: reference {reference_dir} ({n_reference} blocks): validation loss {report['reference']['val_loss']:.4f};"
          f" rounds of {', '.join(map(str, sizes))} blocks until <= {target_loss:.4f}")
    for n in sizes:
        layers = list(range(n))
        final = train_run(reference_dir, layers, out_dir / f"{n}L", pretrain_args, "checkpoint")
        entry = {"n_layers": n, "layers": f"0-{n - 1}", "checkpoint": str(final), "val_loss": measure(final)}
        entry["matched"] = entry["val_loss"] <= target_loss
        report["rounds"].append(entry)
        report["result"] = str(final) if entry["matched"] else None
        print(f"grow: {n} blocks: validation loss {entry['val_loss']:.4f} ({'matches' if entry['matched'] else 'above'} the reference)")
        write_report(out_dir, report)
        if entry["matched"]:
            break
    else:
        print(f"grow: no round up to {sizes[-1]} blocks reached the reference's validation loss", file=sys.stderr)

    n = report["rounds"][-1]["n_layers"]
    for name in chosen:
        if name == "lazy" and n == n_reference:
            print(f"grow: baseline lazy skipped: at {n} blocks the last n blocks are the first n")
            continue
        final, layers = train_baseline(name, reference_dir, n, n_reference, out_dir / "baselines" / f"{name}-{n}L", pretrain_args)
        report["baselines"][name] = {"n_layers": n, "layers": layers, "checkpoint": str(final), "val_loss": measure(final)}
        print(f"grow: baseline {name} ({n} blocks): validation loss {report['baselines'][name]['val_loss']:.4f}")
        write_report(out_dir, report)
    print((out_dir / "grow.md").read_text())
    unlock_out_dir(out_dir)
    return report


def round_sizes(n_reference: int, n_layers: Optional[int], grow_by: int, max_layers: Optional[int]) -> list[int]:
    """n, n + k, n + 2k, ... up to max_layers, which ends the list even when k does not divide the distance."""
    n = n_reference // 2 if n_layers is None else n_layers
    top = n_reference if max_layers is None else max_layers
    if not 1 <= n <= n_reference:
        fail(f"--n_layers {n} is out of range; valid: 1..{n_reference} (the reference has {n_reference} blocks)")
    if not n <= top <= n_reference:
        fail(f"--max_layers {top} is out of range; valid: {n}..{n_reference} (from --n_layers to the reference's blocks)")
    if grow_by < 1:
        fail(f"--grow_by {grow_by} must be 1 or more")
    sizes = list(range(n, top + 1, grow_by))
    return sizes if sizes[-1] == top else sizes + [top]


def train_baseline(name: str, reference_dir: Path, n: int, n_reference: int, run_dir: Path, pretrain_args: dict) -> tuple[Path, str]:
    """Trains baseline ``name`` with n blocks; returns its final checkpoint and which blocks of the reference it holds."""
    half = list(range(math.ceil(n / 2)))
    stacked = (half + half)[:n]
    if name == "random":
        return train_run(reference_dir, list(range(n)), run_dir, pretrain_args, "random"), "random init"
    if name == "lazy":
        return train_run(reference_dir, list(range(n_reference - n, n_reference)), run_dir, pretrain_args, "checkpoint"), f"{n_reference - n}-{n_reference - 1}"
    if name == "hybrid_stacking":
        return train_run(reference_dir, stacked, run_dir, pretrain_args, "checkpoint"), ",".join(map(str, stacked))
    first = train_run(reference_dir, half, run_dir / "half", pretrain_args, "random")
    return train_run(first, stacked, run_dir, pretrain_args, "checkpoint"), f"random init of {len(half)}, stacked"


def train_run(reference_dir: Path, layers: list[int], run_dir: Path, pretrain_args: dict, initialize: str) -> Path:
    """Inherits ``layers`` into run_dir/init and trains it into run_dir/train; reuses whatever a previous run with the
    same settings finished."""
    init_dir, train_dir = run_dir / "init", run_dir / "train"
    config = {**pretrain_args, "checkpoint_dir": str(init_dir), "out_dir": str(train_dir), "initialize": initialize, "resume": "auto"}
    settings = yaml.safe_dump(config, sort_keys=False)
    if (run_dir / "pretrain.yaml").is_file() and (run_dir / "pretrain.yaml").read_text() != settings:
        fail(f"{run_dir} holds a run with other settings (see its pretrain.yaml); give another --out_dir or delete it")
    check_same_reference(init_dir, reference_dir)
    if not (init_dir / "provenance.json").is_file() or json.loads((init_dir / "provenance.json").read_text())["layers"] != layers:
        init(reference_dir, out_dir=init_dir, layers=",".join(map(str, layers)), overwrite=True, allow_repeats=True)
    final = train_dir / "final"
    if (final / "lit_model.pth").is_file():
        print(f"grow: reusing {final}")
        return final
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "pretrain.yaml", settings)
    command = [sys.executable, "-m", "litgpt_inheritune", "pretrain", "--config", str(run_dir / "pretrain.yaml")]
    print(f"grow: {' '.join(command)}", flush=True)
    code, stop_signal = run_forwarding_stop_signals(command)
    if stop_signal is not None:
        print(f"grow: stopped by {stop_signal} while training {run_dir}; run the same grow command again to continue"
              f" (exit code {PREEMPTED_EXIT_CODE}: preempted, resumable)", file=sys.stderr, flush=True)
        raise SystemExit(PREEMPTED_EXIT_CODE)
    if code != 0:
        fail(f"pretrain of {run_dir} failed (exit code {code}); fix the cause and re-run grow: finished runs are reused")
    return final


def check_same_reference(init_dir: Path, reference_dir: Path) -> None:
    """Refuses to reuse a run inherited from another reference (another checkpoint, or this path with other
    weights), which would compare old rounds with the new reference."""
    provenance = init_dir / "provenance.json"
    if not provenance.is_file():
        return
    recorded = json.loads(provenance.read_text())["reference"]
    current = fingerprint(reference_dir / "lit_model.pth")
    if recorded.get("checksum") != current["checksum"]:
        fail(
            f"{init_dir.parent} was inherited from reference {recorded['path']} ({recorded.get('checksum')}), not from"
            f" {reference_dir.resolve()} ({current['checksum']}); give another --out_dir or delete {init_dir.parent}"
        )


def write_report(out_dir: Path, report: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "grow.json", json.dumps(report, indent=2) + "\n")
    reference = report["reference"]
    lines = ["| model | blocks | layers of the reference | validation loss | vs reference |", "|---|---|---|---|---|",
             f"| reference | {reference['n_layers']} | all | {reference['val_loss']:.4f} | |"]
    for entry in report["rounds"]:
        lines.append(f"| round | {entry['n_layers']} | {entry['layers']} | {entry['val_loss']:.4f} |"
                     f" {entry['val_loss'] - reference['val_loss']:+.4f}{' matched' if entry['matched'] else ''} |")
    for name, entry in report["baselines"].items():
        lines.append(f"| baseline: {name} | {entry['n_layers']} | {entry['layers']} | {entry['val_loss']:.4f} |"
                     f" {entry['val_loss'] - reference['val_loss']:+.4f} |")
    result = report["result"] or "none: no round matched the reference"
    text = "\n".join(lines) + f"\n\nGrown model: {result}.\n" + "".join(f"Baseline {name}: {BASELINES[name]}.\n" for name in report["baselines"])
    write_text_atomic(out_dir / "grow.md", text)
