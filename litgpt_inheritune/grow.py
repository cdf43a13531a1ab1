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
from typing import Literal, Optional

import torch
import yaml
from litgpt.args import EvalArgs, LogArgs, TrainArgs
from litgpt.config import Config
from litgpt.data import DataModule
from litgpt.types import LoggerChoice

from litgpt_inheritune.checkpoint import check_checkpoint, fingerprint, load_lazy_state_dict, resolve_checkpoint_dir
from litgpt_inheritune.errors import fail
from litgpt_inheritune.files import write_text_atomic
from litgpt_inheritune.cluster import PREEMPTED_EXIT_CODE, lock_out_dir, run_forwarding_stop_signals, unlock_out_dir
from litgpt_inheritune.distill import DistillArgs
from litgpt_inheritune.inherit import BLOCK_PARTS, compact_layers, count_blocks, grown_state_dict
from litgpt_inheritune.init import main as init
from litgpt_inheritune.compare import LossMeter, write_grow_report
from litgpt_inheritune.pretrain import EVAL_DEFAULTS, PAPER_OPTIMIZER, TRAIN_DEFAULTS
from litgpt_inheritune.selection import MEASURES
from litgpt_inheritune.settings import (
    Devices,
    Optimizer,
    Precision,
    Strategy,
    check_optimizer,
    flat_settings,
    hyperparameters,
    refuse_unused_args,
)
from litgpt_inheritune.redpajama import DEFAULT_DATA, data_or_default

BASELINES = {
    "random": "the final size's architecture trained from a random initialisation",
    "last_n": "the reference's last n blocks instead of its first n (the paper's lazy-layer initialisation; whether"
    " they are lazy is for an attention analysis to say)",
    "hybrid_stacking": "the reference's first n/2 blocks stacked twice to n blocks, then trained",
    "stacking": "n/2 blocks trained from a random initialisation, stacked twice to n blocks, trained again (twice the budget)",
    "half_width": "every block of the reference at half width (first half of the heads or query groups, MLP and"
    " embedding channels; the paper's Table 1)",
    "attn": "the first n blocks with only attention and its norm inherited, the MLP and its norm freshly initialised (Table 2)",
    "mlp": "the first n blocks with only the MLP and its norm inherited, attention and its norm freshly initialised (Table 2)",
    "attn_mlp_no_norm": "the first n blocks with attention and MLP inherited, their norms freshly initialised (Table 2)",
    "distill_random": "random initialisation trained with logit distillation from the reference (Figure 7)",
    "distill_alternate": "DistilBERT-style: every other block of the reference, then the blocks the paper names, trained"
    " with logit distillation from the reference (Figure 7)",
    "inherit_distill": "the first n blocks (Inheritune) trained with logit distillation from the reference",
}
BASELINE_ALIASES = {"lazy": "last_n"}  # the old name: the last n blocks are not always the lazy ones

# How each round's n blocks come from the reference: `init` options (see docs/init.md), and what each start needs.
STARTS = {
    "first": "the first n blocks (Inheritune)",
    "rank": "the contiguous n blocks of highest mean MaxRank (init --select rank --keep window; needs --analysis)",
    "block_influence": "the n blocks of highest block influence (ShortGPT: init --select block_influence --keep best;"
    " needs --analysis)",
    "laco": "LaCo's layer collapse: groups of 4 consecutive blocks merged from the top down until n remain (init"
    " --merge laco)",
    "bridge": "the first n blocks with the rest replaced by a linear map folded into block n-1 (init --bridge linear;"
    " needs --calibration_data)",
    "replaceme": "ReplaceMe: the contiguous blocks of smallest angular distance cut (block 0 kept) and replaced by a"
    " linear map (init --select angular_distance --keep cut --bridge linear; needs --analysis and --calibration_data)",
    "iterative": "SLEB: blocks removed one at a time by calibration loss until n remain (init --select iterative;"
    " needs --calibration_data)",
}


def start_options(start: str, n: int, analysis: Optional[Path], calibration_data: Optional[Path]) -> dict:
    """The `init` options that build start ``start`` with n blocks."""
    if start == "first":
        return {"layers": ",".join(map(str, range(n)))}
    if start in ("rank", "block_influence", "replaceme") and analysis is None:
        fail(
            f"--start {start} chooses blocks by an analysis; give --analysis DIR (an `analyze` out_dir of the reference)"
        )
    if start in ("bridge", "replaceme", "iterative") and calibration_data is None:
        fail(f"--start {start} needs calibration text; give --calibration_data (a text file, .jsonl file or folder)")
    calibration = {"data_path": calibration_data}
    return {"n_layers": n} | {
        "rank": {"select": "rank", "keep": "window", "analysis": analysis},
        "block_influence": {"select": "block_influence", "keep": "best", "analysis": analysis},
        "laco": {"merge": "laco"},
        "bridge": {"bridge": "linear", **calibration},
        "replaceme": {
            "select": "angular_distance",
            "keep": "cut",
            "analysis": analysis,
            "bridge": "linear",
            **calibration,
        },
        "iterative": {"select": "iterative", **calibration},
    }[start]


def main(
    reference_dir: Path,
    out_dir: Path = Path("out/inheritune/grow"),
    n_layers: Optional[int] = None,
    grow_by: int = 2,
    max_layers: Optional[int] = None,
    baselines: str = "random,last_n",
    tolerance: float = 0.0,
    # pretrain's flags, with its types and defaults (settings.py, pretrain.py): the signature is the CLI, so listed here
    precision: Precision = None,
    data: Optional[DataModule] = DEFAULT_DATA,
    train: TrainArgs = TRAIN_DEFAULTS,
    eval: EvalArgs = EVAL_DEFAULTS,
    log: LogArgs = LogArgs(),
    optimizer: Optimizer = PAPER_OPTIMIZER,
    devices: Devices = "auto",
    strategy: Strategy = "auto",
    activation_checkpointing: bool = False,
    logger_name: LoggerChoice = "csv",
    seed: int = 42,
    grow_from: Literal["reference", "trained"] = "reference",
    distill: DistillArgs = DistillArgs(),
    analysis: Optional[Path] = None,
    start: str = "first",
    calibration_data: Optional[Path] = None,
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
            "last_n" (the reference's last n blocks; "lazy" is accepted for it), "hybrid_stacking" (its first n/2
            blocks stacked twice), "stacking" (n/2 blocks trained from random initialisation, stacked twice, trained
            again), "half_width" (all blocks at half width), "attn", "mlp", "attn_mlp_no_norm" (sub-module
            ablations), "distill_random", "distill_alternate" (DistilBERT-style), "inherit_distill" (the first n
            blocks with distillation). "" for none.
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
        grow_from: "reference" inherits every round afresh from the reference (the paper); "trained" continues from
            the previous round's trained model plus the reference's next k blocks.
        distill: --distill.alpha and --distill.temperature of the distillation baselines; the teacher is always the
            reference (leave --distill.teacher_dir unset).
        analysis: An ``analyze`` out_dir of the reference (attention.json): the report names its lazy layers and which
            of them the last_n baseline holds; the starts that choose blocks by a measure read it.
        start: How every round's n blocks come from the reference: "first" (the paper), "rank", "block_influence"
            (ShortGPT), "laco" (LaCo's layer collapse), "bridge" (the first n blocks plus a linear map for the rest),
            "replaceme" (ReplaceMe's cut and map), "iterative" (SLEB); see docs/init.md. The baselines do not change.
        calibration_data: Calibration text for the starts that fit or choose on it (bridge, replaceme, iterative).
    """
    reference_dir, out_dir = resolve_checkpoint_dir(reference_dir, "reference_dir"), Path(out_dir)
    check_checkpoint(reference_dir, "reference_dir")
    n_reference = Config.from_file(reference_dir / "model_config.yaml").n_layer
    sizes = round_sizes(n_reference, n_layers, grow_by, max_layers)
    chosen = chosen_baselines(baselines)
    if distill.teacher_dir is not None:
        fail(f"--distill.teacher_dir {distill.teacher_dir}: grow distils from the reference; leave it unset")
    lazy_layers = analysed_lazy_layers(analysis, n_reference)
    starts = round_starts(start, sizes, grow_from, analysis, calibration_data)
    if tolerance < 0:
        fail(f"--tolerance {tolerance} must be 0 or more")
    refuse_unused_args(train, eval, log, logger_name)
    check_optimizer(optimizer)
    data = data_or_default(data)
    pretrain_args = hyperparameters(
        dict(
            precision=precision,
            data=data,
            train=train,
            eval=eval,
            log=log,
            optimizer=optimizer,
            devices=devices,
            strategy=strategy,
            activation_checkpointing=activation_checkpointing,
            logger_name=logger_name,
            seed=seed,
        )
    )
    check_previous_settings(out_dir, pretrain_args, grow_from, start)

    measure = LossMeter(reference_dir, data, train, eval, precision)
    distill_args = {"teacher_dir": str(reference_dir), "alpha": distill.alpha, "temperature": distill.temperature}
    report = {
        "reference": {"checkpoint": str(reference_dir), "n_layers": n_reference, "val_loss": measure(reference_dir)},
        "tolerance": tolerance,
        "settings": {
            **run_settings(pretrain_args, measure, grow_from, distill_args, analysis, lazy_layers),
            "start": start,
        },
        "rounds": [],
        "baselines": {},
        "result": None,
    }
    tokens_per_step = train.global_batch_size * measure.seq_len
    lock_out_dir(out_dir)  # one grow per out_dir (each training run also locks its own folder)
    try:
        grow_rounds(report, reference_dir, out_dir, starts, start, grow_from, pretrain_args, measure, tokens_per_step)
        train_baselines(report, chosen, reference_dir, out_dir, pretrain_args, distill_args, measure, tokens_per_step)
        print((out_dir / "grow.md").read_text())
    finally:
        unlock_out_dir(out_dir)
    return report


def chosen_baselines(baselines: str) -> list[str]:
    """The baselines that --baselines names, by their current names."""
    chosen = [BASELINE_ALIASES.get(name.strip(), name.strip()) for name in baselines.split(",") if name.strip()]
    for name in chosen:
        if name not in BASELINES:
            fail(f"--baselines: unknown baseline {name!r}; valid: {', '.join(BASELINES)} (comma-separated) or ''")
    return chosen


def round_starts(
    start: str, sizes: list[int], grow_from: str, analysis: Optional[Path], calibration_data: Optional[Path]
) -> dict[int, dict]:
    """The `init` options of every round's start, by its size; refuses, before anything is measured, a start that
    cannot be built."""
    if start not in STARTS:
        fail(f"--start {start} is not a start; valid: {', '.join(STARTS)}")
    if start != "first" and grow_from == "trained":
        fail(
            f"--grow_from trained adds the reference's next blocks to the first n; it needs --start first, not {start}"
        )
    if calibration_data is not None and not Path(calibration_data).exists():
        fail(
            f"--calibration_data {calibration_data} does not exist; give a text file, a .jsonl file or a folder of them"
        )
    return {n: start_options(start, n, analysis, calibration_data) for n in sizes}


def grow_rounds(
    report: dict,
    reference_dir: Path,
    out_dir: Path,
    starts: dict[int, dict],
    start: str,
    grow_from: str,
    pretrain_args: dict,
    measure: LossMeter,
    tokens_per_step: int,
) -> None:
    """Algorithm 1: trains a round of each size in ``starts`` in turn, until one's validation loss reaches the
    reference's (plus the tolerance); each round goes into the report, which is rewritten after it."""
    reference_loss = report["reference"]["val_loss"]
    target_loss = reference_loss + report["tolerance"]
    sizes = list(starts)
    print(
        f"grow: reference {reference_dir} ({report['reference']['n_layers']} blocks): validation loss"
        f" {reference_loss:.4f}; rounds of {', '.join(map(str, sizes))} blocks until <= {target_loss:.4f}"
    )
    previous = None
    for n, options in starts.items():
        final = train_run(
            reference_dir,
            list(range(n)) if start == "first" else None,
            out_dir / f"{n}L",
            pretrain_args,
            "checkpoint",
            {key: value for key, value in options.items() if key != "layers"},
            previous=previous if grow_from == "trained" else None,
        )
        previous = final
        made = json.loads((out_dir / f"{n}L" / "init" / "provenance.json").read_text())
        entry = {
            "n_layers": n,
            "layers": compact_layers(made["layers"]).replace("_", ",") + ("" if start == "first" else f" ({start})"),
            **measured(final, measure, tokens_per_step),
        }
        entry["matched"] = entry["val_loss"] <= target_loss
        report["rounds"].append(entry)
        report["result"] = str(final) if entry["matched"] else None
        print(
            f"grow: {n} blocks: validation loss {entry['val_loss']:.4f} ({'matches' if entry['matched'] else 'above'} the reference)"
        )
        write_grow_report(out_dir, report, BASELINES, STARTS)
        if entry["matched"]:
            return
    print(f"grow: no round up to {sizes[-1]} blocks reached the reference's validation loss", file=sys.stderr)


def train_baselines(
    report: dict,
    chosen: list[str],
    reference_dir: Path,
    out_dir: Path,
    pretrain_args: dict,
    distill_args: dict,
    measure: LossMeter,
    tokens_per_step: int,
) -> None:
    """Trains the ``chosen`` baselines at the size of the last round; each goes into the report, which is rewritten
    after it."""
    n, n_reference = report["rounds"][-1]["n_layers"], report["reference"]["n_layers"]
    for name in chosen:
        if name == "last_n" and n == n_reference:
            print(f"grow: baseline last_n skipped: at {n} blocks the last n blocks are the first n")
            continue
        final, layers = train_baseline(
            name, reference_dir, n, n_reference, out_dir / "baselines" / f"{name}-{n}L", pretrain_args, distill_args
        )
        report["baselines"][name] = {
            "n_layers": n_reference if name == "half_width" else n,
            "layers": layers,
            **measured(final, measure, tokens_per_step),
        }
        print(f"grow: baseline {name} ({n} blocks): validation loss {report['baselines'][name]['val_loss']:.4f}")
        write_grow_report(out_dir, report, BASELINES, STARTS)


def measured(final: Path, measure: LossMeter, tokens_per_step: int) -> dict:
    """A finished run as the report holds it: its final checkpoint, validation loss, optimizer steps and training
    tokens (from the checkpoint's provenance)."""
    val_loss = measure(final)
    steps = json.loads((final / "provenance.json").read_text())["step"]
    return {"checkpoint": str(final), "val_loss": val_loss, "steps": steps, "tokens": steps * tokens_per_step}


def round_sizes(n_reference: int, n_layers: Optional[int], grow_by: int, max_layers: Optional[int]) -> list[int]:
    """n, n + k, n + 2k, ... up to max_layers, which ends the list even when k does not divide the distance."""
    n = n_reference // 2 if n_layers is None else n_layers
    top = n_reference if max_layers is None else max_layers
    if not 1 <= n <= n_reference:
        fail(f"--n_layers {n} is out of range; valid: 1..{n_reference} (the reference has {n_reference} blocks)")
    if not n <= top <= n_reference:
        fail(
            f"--max_layers {top} is out of range; valid: {n}..{n_reference} (from --n_layers to the reference's blocks)"
        )
    if grow_by < 1:
        fail(f"--grow_by {grow_by} must be 1 or more")
    sizes = list(range(n, top + 1, grow_by))
    return sizes if sizes[-1] == top else sizes + [top]


def train_baseline(
    name: str, reference_dir: Path, n: int, n_reference: int, run_dir: Path, pretrain_args: dict, distill_args: dict
) -> tuple[Path, str]:
    """Trains baseline ``name`` with n blocks; returns its final checkpoint and which blocks of the reference it holds."""
    half = list(range(math.ceil(n / 2)))
    stacked = (half + half)[:n]
    first = list(range(n))
    distilled = {**pretrain_args, "distill": distill_args}
    if name == "random":
        return train_run(reference_dir, first, run_dir, pretrain_args, "random"), "random init"
    if name in ABLATION_PARTS:
        return train_run(
            reference_dir, first, run_dir, pretrain_args, "checkpoint", {"parts": ABLATION_PARTS[name]}
        ), f"0-{n - 1} ({ABLATION_PARTS[name]})"
    if name == "half_width":
        return train_run(
            reference_dir, list(range(n_reference)), run_dir, pretrain_args, "checkpoint", {"half_width": True}
        ), f"0-{n_reference - 1}, half width"
    if name == "distill_random":
        return train_run(reference_dir, first, run_dir, distilled, "random"), "random init, distilled"
    if name == "inherit_distill":
        return train_run(reference_dir, first, run_dir, distilled, "checkpoint"), f"0-{n - 1}, distilled"
    if name == "distill_alternate":
        layers = alternate_layers(n, n_reference)
        return train_run(reference_dir, layers, run_dir, distilled, "checkpoint"), ",".join(
            map(str, layers)
        ) + ", distilled"
    if name == "last_n":
        return train_run(
            reference_dir, list(range(n_reference - n, n_reference)), run_dir, pretrain_args, "checkpoint"
        ), f"{n_reference - n}-{n_reference - 1}"
    if name == "hybrid_stacking":
        return train_run(reference_dir, stacked, run_dir, pretrain_args, "checkpoint"), ",".join(map(str, stacked))
    trained_half = train_run(reference_dir, half, run_dir / "half", pretrain_args, "random")
    return train_run(
        trained_half, stacked, run_dir, pretrain_args, "checkpoint"
    ), f"random init of {len(half)}, stacked"


ABLATION_PARTS = {"attn": "attn,attn_norm", "mlp": "mlp,mlp_norm", "attn_mlp_no_norm": "attn,mlp"}


def alternate_layers(n: int, n_reference: int) -> list[int]:
    """DistilBERT-style student blocks: every other block of the teacher (0, 2, 4, ...), then, when the student has more
    blocks than that, the contiguous run ending two blocks before the last (the paper: 24 -> 16 takes 0, 2, ..., 22,
    then 18, 19, 20, 21)."""
    alternate = list(range(0, n_reference, 2))[:n]
    start = max(0, n_reference - 2 - (n - len(alternate)))  # from 0 only for references of fewer than 4 blocks
    return alternate + list(range(start, start + n - len(alternate)))


def train_run(
    reference_dir: Path,
    layers: Optional[list[int]],
    run_dir: Path,
    pretrain_args: dict,
    initialize: str,
    init_options: Optional[dict] = None,
    previous: Optional[Path] = None,
) -> Path:
    """Inherits ``layers`` into run_dir/init (with init's ``init_options``, which choose the blocks when ``layers`` is
    None; or, given ``previous``, a trained smaller model plus the reference's next blocks) and trains it into
    run_dir/train; reuses whatever a previous run with the same settings finished."""
    init_dir, train_dir = run_dir / "init", run_dir / "train"
    config = {
        **pretrain_args,
        "checkpoint_dir": str(init_dir),
        "out_dir": str(train_dir),
        "initialize": initialize,
        "resume": "auto",
    }
    settings = yaml.safe_dump(config, sort_keys=False)
    if (run_dir / "pretrain.yaml").is_file() and (run_dir / "pretrain.yaml").read_text() != settings:
        fail(f"{run_dir} holds a run with other settings (see its pretrain.yaml); give another --out_dir or delete it")
    check_same_reference(init_dir, reference_dir)
    options = init_options or {}
    wanted = {
        "half_width": options.get("half_width", False),
        "grown_from": None if previous is None else str(previous),
        "parts": options.get("parts", ",".join(BLOCK_PARTS)).split(","),
        "start": {
            "select": options.get("select", "first"),
            "keep": options.get("keep") if options.get("select", "first") in MEASURES else None,
            "merge": options.get("merge"),
            "bridge": options.get("bridge"),
        },
        **({"layers": layers} if layers is not None else {"n_layer": options["n_layers"]}),
    }
    made = json.loads((init_dir / "provenance.json").read_text()) if (init_dir / "provenance.json").is_file() else {}
    made = {
        "layers": None,
        "half_width": False,
        "grown_from": None,
        "parts": list(BLOCK_PARTS),
        "start": {"select": "first", "keep": None, "merge": None, "bridge": None},
        **made,
    }  # older provenance lacks the new keys
    if any(made[key] != value for key, value in wanted.items()):
        chosen = {} if layers is None else {"layers": ",".join(map(str, layers)), "allow_repeats": True}
        init(reference_dir, out_dir=init_dir, overwrite=True, **chosen, **options)
        if previous is not None:
            continue_from_trained(init_dir, previous)
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
        print(
            f"grow: stopped by {stop_signal} while training {run_dir}; run the same grow command again to continue"
            f" (exit code {PREEMPTED_EXIT_CODE}: preempted, resumable)",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(PREEMPTED_EXIT_CODE)
    if code != 0:
        fail(
            f"pretrain of {run_dir} failed (exit code {code}); fix the cause and re-run grow: finished runs are reused"
        )
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


def continue_from_trained(init_dir: Path, previous: Path) -> None:
    """--grow_from trained: the freshly inherited n + k blocks in init_dir take the previous round's trained embedding,
    blocks, final norm and head in place of the reference's first n blocks (inherit.grown_state_dict); only the k new
    blocks stay the reference's. The tensors are inherit.py's business; reading and writing the files stay here, as
    inherit.py imports nothing of the checkpoint modules."""
    trained = load_lazy_state_dict(previous / "lit_model.pth")
    try:
        state_dict = grown_state_dict(load_lazy_state_dict(init_dir / "lit_model.pth"), trained)
    except ValueError as error:
        fail(f"--grow_from trained: {previous} {error}")
    temporary = init_dir / "lit_model.pth.partial"
    torch.save(state_dict, temporary)
    temporary.replace(init_dir / "lit_model.pth")
    provenance = json.loads((init_dir / "provenance.json").read_text())
    provenance["grown_from"] = str(previous)
    provenance["inherited"] = [
        f"embedding, blocks 0-{count_blocks(trained) - 1}, final norm and head of {previous} (trained)",
        f"blocks {count_blocks(trained)}-{count_blocks(state_dict) - 1} of the reference",
    ]
    write_text_atomic(init_dir / "provenance.json", json.dumps(provenance, indent=2) + "\n")


def analysed_lazy_layers(analysis: Optional[Path], n_reference: int) -> Optional[list[int]]:
    """The lazy layers that `analyze` found in the reference, or None without --analysis."""
    if analysis is None:
        return None
    path = Path(analysis) / "attention.json"
    if not path.is_file():
        fail(
            f"--analysis {analysis} holds no attention.json; give the out_dir of `litgpt inheritune analyze` run on the reference"
        )
    result = json.loads(path.read_text())
    if len(result["max_rank"]) != n_reference:
        fail(f"--analysis {analysis} describes {len(result['max_rank'])} layers but the reference has {n_reference}")
    return result["lazy_layers"]


def check_previous_settings(out_dir: Path, pretrain_args: dict, grow_from: str, start: str = "first") -> None:
    """Refuses, before anything is measured or trained, a re-run whose settings differ from those out_dir's runs were
    trained with, naming the first setting that differs."""
    wanted = flat_settings(pretrain_args)
    saved_runs = (
        sorted(out_dir.glob("*/pretrain.yaml"))
        + sorted(out_dir.glob("baselines/*/pretrain.yaml"))
        + sorted(out_dir.glob("baselines/*/half/pretrain.yaml"))
    )
    for path in saved_runs:
        saved = flat_settings(yaml.safe_load(path.read_text()))
        for key, value in wanted.items():
            if key in saved and saved[key] != value:
                fail(
                    f"{path.parent} was trained with --{key.replace('init_args.', '')} {saved[key]} but this run asks for"
                    f" {value}; give another --out_dir,"
                    " or delete the folder to train it again"
                )
    if (out_dir / "grow.json").is_file():
        before = json.loads((out_dir / "grow.json").read_text()).get("settings", {}).get("grow_from", "reference")
        if before != grow_from:
            fail(
                f"{out_dir} holds rounds grown with --grow_from {before} but this run asks for {grow_from}; give another --out_dir"
            )
        started = json.loads((out_dir / "grow.json").read_text()).get("settings", {}).get("start", "first")
        if started != start:
            fail(
                f"{out_dir} holds rounds started with --start {started} but this run asks for {start}; give another --out_dir"
            )


def run_settings(
    pretrain_args: dict,
    measure: LossMeter,
    grow_from: str,
    distill_args: dict,
    analysis: Optional[Path],
    lazy_layers: Optional[list[int]],
) -> dict:
    """What every run was trained and measured on, for grow.json and grow.md."""
    train = pretrain_args["train"]
    batches = min(measure.max_iters, len(measure.val_dataloader))
    return {
        "grow_from": grow_from,
        "data": pretrain_args["data"],
        "train": {
            key: train[key]
            for key in ("epochs", "max_tokens", "max_steps", "max_time", "global_batch_size")
            if train.get(key) is not None
        },
        "seq_len": measure.seq_len,
        "validation": {"batches": batches, "tokens": batches * train["micro_batch_size"] * measure.seq_len},
        "distill": {key: distill_args[key] for key in ("alpha", "temperature")},
        "analysis": None if analysis is None else {"path": str(analysis), "lazy_layers": lazy_layers},
    }
