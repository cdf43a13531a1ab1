"""pretrain's settings: the defaults it picks, the flags it refuses, LitGPT recipe keys, and the hyperparameters.yaml
that records a run (and that a resumed run must match)."""

import importlib
import json
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import torch
import yaml
from litgpt.args import EvalArgs, LogArgs, TrainArgs
from litgpt.config import Config
from litgpt.data import DataModule
from litgpt.utils import get_default_supported_precision, parse_devices

from litgpt_inheritune.checkpoint import check_checkpoint, resolve_checkpoint_dir
from litgpt_inheritune.errors import fail

# The types of the flags that pretrain takes and grow passes on to every run it trains, declared once for both.
Precision = Optional[Literal["bf16-true", "bf16-mixed", "16-mixed", "32-true"]]
Strategy = Literal["auto", "ddp", "fsdp"]
Devices = Union[int, str]
Optimizer = Union[str, dict]


def default_precision(precision: Optional[str]) -> str:
    # litgpt's choice on a GPU; on a CPU litgpt would also pick bf16-mixed, which is slower there than float32
    return precision or (get_default_supported_precision(training=True) if torch.cuda.is_available() else "32-true")


def stock_checkpoint_dir(
    checkpoint_dir: Optional[Path],
    initial_checkpoint_dir: Optional[Path],
    model_name: Optional[str],
    model_config: Optional[Config],
    tokenizer_dir: Optional[Path],
) -> Path:
    """The checkpoint to train, from our checkpoint_dir or ``litgpt pretrain``'s keys; refuses those keys where they
    would mean something this command cannot do (another architecture, another tokenizer, no checkpoint)."""
    if (
        checkpoint_dir is not None
        and initial_checkpoint_dir is not None
        and Path(checkpoint_dir) != Path(initial_checkpoint_dir)
    ):
        fail(
            f"checkpoint_dir {checkpoint_dir} and --initial_checkpoint_dir {initial_checkpoint_dir} differ; give one of them"
        )
    given = checkpoint_dir if checkpoint_dir is not None else initial_checkpoint_dir
    if given is None:
        fail(
            "give the inherited checkpoint to train: checkpoint_dir (positional) or --initial_checkpoint_dir (a LitGPT"
            " recipe's key); training from scratch is --initialize random on such a checkpoint"
        )
    checkpoint_dir = resolve_checkpoint_dir(
        Path(given), "checkpoint_dir" if checkpoint_dir is not None else "--initial_checkpoint_dir"
    )
    config = check_checkpoint_dir(checkpoint_dir)
    architecture = lambda c: {k: v for k, v in asdict(c).items() if k not in ("name", "hf_config")}  # noqa: E731
    if model_name is not None and model_name != config.name:
        try:
            named = Config.from_name(model_name)
        except ValueError:
            fail(
                f"--model_name {model_name} is not a litgpt model name; the architecture comes from {checkpoint_dir}"
                f" ({config.name}): leave --model_name unset or give {config.name}"
            )
        if architecture(named) != architecture(config):
            fail(
                f"--model_name {model_name} is not the architecture of {checkpoint_dir} ({config.name}, {config.n_layer}"
                f" blocks); leave --model_name unset or give {config.name}"
            )
    if model_config is not None and architecture(model_config) != architecture(config):
        fail(
            f"--model_config differs from {checkpoint_dir / 'model_config.yaml'}; the architecture comes from the checkpoint: leave --model_config unset"
        )
    if tokenizer_dir is not None:
        tokenizer_dir = resolve_checkpoint_dir(Path(tokenizer_dir), "--tokenizer_dir")
        names = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
        read = lambda d, n: (d / n).read_bytes() if (d / n).is_file() else None  # noqa: E731
        if any(read(tokenizer_dir, n) != read(checkpoint_dir, n) for n in names):
            fail(
                f"--tokenizer_dir {tokenizer_dir} holds another tokenizer than {checkpoint_dir}, whose tokenizer is used;"
                " leave --tokenizer_dir unset or give the checkpoint's folder"
            )
    return checkpoint_dir


def check_checkpoint_dir(checkpoint_dir: Path) -> Config:
    """The checkpoint's config, after making sure weights, config and tokenizer are all there."""
    check_checkpoint(checkpoint_dir, tokenizer=True)
    return Config.from_file(checkpoint_dir / "model_config.yaml")


def check_launch_args(devices: Union[int, str], num_nodes: int, keep_checkpoints: Optional[int]) -> int:
    """--devices as a number of devices (litgpt's reading of "auto", "2", ...), checked with --num_nodes and
    --keep_checkpoints."""
    try:
        devices = parse_devices(devices)
    except ValueError as error:
        fail(f"--devices {devices}: {error}")
    if num_nodes < 1:
        fail(f"--num_nodes {num_nodes} must be 1 or more")
    if keep_checkpoints is not None and keep_checkpoints < 1:
        fail(f"--keep_checkpoints {keep_checkpoints} must be at least 1 (or unset to keep every step checkpoint)")
    return devices


def check_optimizer(optimizer: Optimizer) -> None:
    """--optimizer as litgpt reads it: a torch.optim class name, a dotted class path, or a dict of class_path and
    init_args. The class is built once on a one-element tensor, so that a wrong name, argument or value ends in one
    line here and not in a traceback after the launch."""
    example = 'e.g. AdamW, or \'{"class_path": "torch.optim.AdamW", "init_args": {"lr": 3e-4}}\''
    path, init_args = optimizer, {}
    if isinstance(optimizer, dict):
        path, init_args = optimizer.get("class_path"), optimizer.get("init_args") or {}
        loose = sorted(set(optimizer) - {"class_path", "init_args"})  # --optimizer.lr, --optimizer.init_args.lr
        if loose:
            fail(
                f"--optimizer.{loose[0]} is not read: give the optimizer whole, with its class_path and init_args, {example}"
            )
        if not isinstance(path, str) or not isinstance(init_args, dict):
            fail(f"--optimizer {json.dumps(optimizer)} must be a class name or a class_path with init_args, {example}")
    module, _, name = path.rpartition(".")
    try:
        optimizer_class = getattr(importlib.import_module(module or "torch.optim"), name)
    except (ImportError, AttributeError, ValueError) as error:
        fail(
            f"--optimizer {path!r} names no optimizer class ({error}): give a torch.optim class or a class path, {example}"
        )
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
        fail(f"--optimizer {path!r} is not a torch optimizer class, {example}")
    try:
        optimizer_class([torch.nn.Parameter(torch.zeros(1))], **init_args)
    except (TypeError, ValueError, RuntimeError) as error:
        fail(f"--optimizer {path} does not take init_args {json.dumps(init_args)}: {error}")


def check_train_args(train: TrainArgs, eval: EvalArgs, world_size: int) -> None:
    if train.micro_batch_size < 1 or train.global_batch_size < 1:
        fail(
            f"--train.micro_batch_size {train.micro_batch_size} and --train.global_batch_size {train.global_batch_size} must be positive"
        )
    per_rank = train.global_batch_size // world_size
    if per_rank < train.micro_batch_size or per_rank % train.micro_batch_size or train.global_batch_size % world_size:
        fail(
            f"--train.global_batch_size {train.global_batch_size} must split into whole micro-batches of"
            f" --train.micro_batch_size {train.micro_batch_size} on each of {world_size} ranks"
            f" (a multiple of {train.micro_batch_size * world_size})"
        )
    if train.max_norm is None:
        fail("--train.max_norm is required (the paper clips gradients at 1.0)")
    if all(v is None for v in (train.epochs, train.max_tokens, train.max_steps, train.max_time)):
        fail("give a stop condition: --train.epochs, --train.max_tokens, --train.max_steps or --train.max_time")
    if train.log_interval < 1 or (train.save_interval is not None and train.save_interval < 1):
        fail("--train.log_interval and --train.save_interval must be at least 1")


def refuse_unused_args(train: TrainArgs, eval: EvalArgs, log: LogArgs, logger_name: str) -> None:
    """Stops on a TrainArgs / EvalArgs / LogArgs field that this loop would ignore (as litgpt's validate_args does);
    every other field is honoured."""
    if train.tie_embeddings:
        fail(
            "--train.tie_embeddings true is not supported: the architecture and weights come from the checkpoint (its embedding and head stay as they are)"
        )
    if eval.max_new_tokens is not None:
        fail(
            f"--eval.max_new_tokens {eval.max_new_tokens} is not supported: pretraining generates no text (leave it unset)"
        )
    if eval.evaluate_example != EvalArgs.evaluate_example:
        fail(
            f"--eval.evaluate_example {eval.evaluate_example} is not supported: pretraining generates no examples (leave it unset)"
        )
    defaults = LogArgs()
    for name, loggers in (
        ("project", "wandb"),
        ("run", "wandb"),
        ("group", "wandb"),
        ("teamspace", "litlogger"),
        ("metadata", "litlogger"),
        ("log_model", "litlogger"),
        ("save_logs", "litlogger"),
        ("checkpoint_name", "litlogger"),
    ):
        if getattr(log, name) != getattr(defaults, name) and logger_name != loggers:
            fail(f"--log.{name} is read only by --logger_name {loggers}, not {logger_name}")


def check_one_step(
    train: TrainArgs, train_dataloader, accumulation: int, world_size: int, seq_len: int, config: Config
) -> None:
    """Refuses training data that fill less than one optimizer step, naming what sets the step's size."""
    if len(train_dataloader) >= accumulation:
        return
    try:
        sequences = f"{len(train_dataloader.dataset) * world_size}"
    except TypeError:  # an iterable dataset without a length
        sequences = f"at most {len(train_dataloader) * train.micro_batch_size * world_size}"
    source = (
        "--train.max_seq_length"
        if train.max_seq_length
        else f"the model's block size ({config.name}; --train.max_seq_length unset)"
    )
    fail(
        f"the training data fill {sequences} sequences of {seq_len} tokens, less than one optimizer step of"
        f" --train.global_batch_size {train.global_batch_size} sequences ({train.global_batch_size * seq_len:,} tokens);"
        f" the sequence length {seq_len} is {source}: lower --train.max_seq_length or --train.global_batch_size,"
        " or give more data (e.g. a larger --data.token_budget)"
    )


# Settings a resumed run may change: where things go, how often it logs, validates and saves, how long this session
# runs, and speed switches that leave the numbers alone. Any other change would alter the data, the model or the
# learning-rate schedule halfway through a run.
RESUME_MAY_CHANGE = (
    "resume",
    "out_dir",
    "train.max_time",
    "train.save_interval",
    "train.log_interval",
    "eval.",
    "log.",
    "logger_name",
    "compile",
    "activation_checkpointing",
    "data.init_args.num_workers",
    "data.init_args.cache_dir",
    "fsdp_state_dict",
)


# With FSDP on both sides, the number of processes may change too: torch.distributed.checkpoint reshards the weights
# and optimizer states, and the global batch (so the schedule) stays.
RESHARDED_MAY_CHANGE = ("devices", "num_nodes", "strategy")


def check_resumed_settings(resume_path: Optional[Path], hparams: dict, sharded: bool = False) -> None:
    """Refuses to resume a run with settings that differ from the ones it was started with (its hyperparameters.yaml).
    ``sharded``: this run uses FSDP. A checkpoint written by FSDP resumes only under FSDP, with any number of
    processes."""
    saved_file = resume_path / "hyperparameters.yaml" if resume_path is not None else None
    if saved_file is None or not saved_file.is_file():
        return
    provenance = resume_path / "provenance.json"
    written = json.loads(provenance.read_text()) if provenance.is_file() else {}
    if written.get("fsdp") and not sharded:
        fail(
            f"--resume {resume_path} was written by FSDP on {written['world_size']} processes; resume it with"
            " --strategy fsdp (with any number of processes: its shards are redistributed)"
        )
    may_change = RESUME_MAY_CHANGE + (RESHARDED_MAY_CHANGE if sharded and written.get("fsdp") else ())
    saved, current = flat_settings(yaml.safe_load(saved_file.read_text()) or {}), flat_settings(hparams)
    changed = [
        f"--{key.replace('init_args.', '')} {current.get(key)} (was {saved.get(key)})"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key) and not key.startswith(may_change)
    ]
    if changed:
        fail(
            f"--resume: {', '.join(changed)} differ from the run being resumed ({saved_file}); resume with its settings,"
            " or start a new run from its checkpoint with another --out_dir"
        )


def flat_settings(settings: dict, prefix: str = "") -> dict:
    """{"train": {"max_steps": 2}} -> {"train.max_steps": 2}"""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def hyperparameters(arguments: dict) -> dict:
    """The command's arguments as YAML-able values, so that hyperparameters.yaml can be passed back as --config.

    Kept on purpose: litgpt's ``capture_hparams`` writes a data module as ``str(module)``, which --config cannot read
    back; here it becomes jsonargparse's ``class_path`` / ``init_args``.
    """

    def plain(value):
        if isinstance(value, DataModule) and is_dataclass(value):
            init_args = {f.name: plain(getattr(value, f.name)) for f in fields(value) if f.init}
            return {"class_path": f"{type(value).__module__}.{type(value).__qualname__}", "init_args": init_args}
        if is_dataclass(value):
            return plain(asdict(value))
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)

    return {name: plain(value) for name, value in arguments.items()}
