"""pretrain's training state on disk: step checkpoints to resume from and the final checkpoint, each written into a
hidden folder that is renamed when complete (with configs, tokenizer, provenance, counters and RNG states; a full
disk is reported as such), the newest N kept; and resuming: finding the checkpoint, refusing a damaged one, and
restoring model, optimizer, data loader and RNG states from it."""

import errno
import json
import os
import random
import resource
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Union

import lightning as L
import numpy as np
import torch
import yaml
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.wrappers import _unwrap_objects
from litgpt.args import TrainArgs
from litgpt.config import Config
from litgpt.utils import save_config

from litgpt_inheritune.checkpoint import (
    PROVENANCE_FILE,
    STEP_DIR_PREFIX,
    copy_tokenizer_files,
    fingerprint,
    load_lazy_state_dict,
    save_state_dict,
    weight_records,
    write_provenance,
)
from litgpt_inheritune.cluster import preempted
from litgpt_inheritune.errors import fail
from litgpt_inheritune.files import partial_dir, replace_dir
from litgpt_inheritune.sharding import full_weights, is_sharded


def save_step(
    fabric: L.Fabric, state: dict, out_dir: Path, checkpoint_dir: Path, hparams: dict, keep: Optional[int] = None
) -> None:
    """out_dir/step-XXXXXXXX/: model, optimizer, data loader, RNG and counters, to resume from. With ``keep``, the
    older step checkpoints beyond the newest ``keep`` are deleted once this one is complete."""
    state["rng"] = get_rng_state()
    directory = out_dir / f"{STEP_DIR_PREFIX}{state['step_count']:08d}"
    with (
        full_disk_is_an_error(directory, state_bytes(state)),
        staged_checkpoint(fabric, directory, checkpoint_dir, hparams, state) as staging,
    ):
        fabric.save(staging / "lit_model.pth", state)
    if keep is not None and fabric.global_rank == 0:
        prune_step_checkpoints(out_dir, keep, directory)
    fabric.barrier()


def save_on_stop(
    fabric: L.Fabric,
    reason: str,
    state: dict,
    out_dir: Path,
    checkpoint_dir: Path,
    train: TrainArgs,
    hparams: dict,
    keep: Optional[int],
) -> None:
    """--train.max_time reached or a stop signal received: a step checkpoint to resume from (unless this step has
    one already); a signal then ends the process, max_time goes on to the final checkpoint."""
    step = state["step_count"]
    directory = out_dir / f"{STEP_DIR_PREFIX}{step:08d}"
    if step > 0 and not (train.save_interval and step % train.save_interval == 0):
        save_step(fabric, state, out_dir, checkpoint_dir, hparams, keep)
    if reason == "time":
        fabric.print(
            f"Stopping: --train.max_time {train.max_time} s reached at step {step}; saved {directory} (continue with --resume auto)"
        )
        return
    for logger in fabric.loggers:
        logger.finalize("success")  # the metrics logged so far reach the files
    preempted(fabric, reason, step, directory if step > 0 else None)


def save_final(fabric: L.Fabric, state: dict, out_dir: Path, checkpoint_dir: Path, hparams: dict) -> None:
    """out_dir/final/: a plain LitGPT checkpoint (bare state dict in lit_model.pth, configs, tokenizer, provenance).
    Under FSDP the shards are gathered tensor by tensor into rank 0's CPU memory (one full copy of the weights, no
    optimizer state), which rank 0 writes."""
    # the model is written twice on the way (Fabric's file, then the bare state dict)
    with (
        full_disk_is_an_error(out_dir / "final", 2 * state_bytes({"model": state["model"]})),
        staged_checkpoint(fabric, out_dir / "final", checkpoint_dir, hparams, state) as staging,
    ):
        if is_sharded(fabric):
            state_dict = full_weights(state["model"])  # every rank takes part; rank 0 receives
            if fabric.global_rank == 0:
                save_state_dict(state_dict, staging / "lit_model.pth")
            del state_dict
        else:
            saved = staging / "model.pth"
            fabric.save(saved, {"model": state["model"]})
            if fabric.global_rank == 0:
                save_state_dict(load_lazy_state_dict(saved), staging / "lit_model.pth")
                saved.unlink()
    fabric.print(f"Saved the trained model to {out_dir / 'final'}")


@contextmanager
def staged_checkpoint(fabric: L.Fabric, directory: Path, checkpoint_dir: Path, hparams: dict, state: dict):
    """Yields a hidden folder that every rank writes into; rank 0 then adds the configs, tokenizer and provenance
    and puts it in place of ``directory`` once every rank has written. An interrupted save leaves only the hidden
    folder, which the next save of the same name clears."""
    staging = partial_dir(directory)
    if fabric.global_rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    fabric.barrier()
    yield staging
    fabric.barrier()
    if fabric.global_rank == 0:
        write_side_files(
            staging, state["model"].config, checkpoint_dir, hparams, state, fabric.world_size, is_sharded(fabric)
        )
        replace_dir(staging, directory)
    fabric.barrier()


def write_side_files(
    directory: Path,
    config: Config,
    checkpoint_dir: Path,
    hparams: dict,
    state: dict,
    world_size: int = 1,
    fsdp: bool = False,
) -> None:
    save_config(config, directory)
    copy_tokenizer_files(checkpoint_dir, directory)
    (directory / "hyperparameters.yaml").write_text(yaml.safe_dump(hparams, sort_keys=False))
    write_provenance(
        directory,
        {
            "command": "litgpt inheritune pretrain",
            "checkpoint_dir": str(checkpoint_dir.resolve()),
            "step": state["step_count"],
            "iter_num": state["iter_num"],
            "epoch": state["epoch"],
            "name": config.name,
            "n_layer": config.n_layer,
            "world_size": world_size,
            "fsdp": fsdp,
            # size and checksum of the weights, checked before resuming (a truncated or altered file is refused);
            # a sharded checkpoint: the size of each of its files
            "files": weight_records(directory / "lit_model.pth"),
        },
    )


class StreamingCheckpointIO(TorchCheckpointIO):
    """Fabric's checkpoint writer, with ``torch.save`` straight into the file. Lightning's default serialises the
    whole checkpoint into an in-memory buffer first (its way of being atomic), which holds a second copy of the
    weights and optimizer states in RAM during every save (10.9 GB at the 1.5B shape); our saves are atomic already,
    written into a hidden folder that is renamed when complete. FSDP writes its own files and does not use this."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, path)


def prune_step_checkpoints(out_dir: Path, keep: int, newest: Path) -> list[Path]:
    """Deletes the complete step checkpoints (``step-*/``) in ``out_dir`` beyond the newest ``keep``, never ``newest``
    (the one just written). Each is renamed to a hidden name first, so that a crash mid-delete leaves no folder that
    looks like a complete checkpoint."""
    others = sorted(path for path in out_dir.glob(f"{STEP_DIR_PREFIX}*") if path.is_dir() and path != newest)
    doomed = others[: max(0, len(others) - (keep - 1))]
    for path in doomed:
        os.rename(path, path.with_name(f".{path.name}.deleting"))
    for retired in out_dir.glob(f".{STEP_DIR_PREFIX}*.deleting"):  # also what a run killed mid-delete left behind
        shutil.rmtree(retired)
    return doomed


@contextmanager
def full_disk_is_an_error(directory: Path, needed_bytes: int):
    """Turns running out of space while writing checkpoint ``directory`` into one line with the bytes it needs,
    after removing the partial folder; the checkpoints already complete stay as they are."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if not out_of_space(error):
            raise
        shutil.rmtree(partial_dir(directory), ignore_errors=True)
        free = shutil.disk_usage(directory.parent).free
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        size_limit = f", file size limit (ulimit -f) {limit:,} bytes" if limit != resource.RLIM_INFINITY else ""
        kept = sorted(p.name for p in directory.parent.glob(f"{STEP_DIR_PREFIX}*"))
        fail(
            f"the disk is full: writing {directory} failed ({free:,} bytes free on its disk{size_limit}); a checkpoint"
            f" needs about {needed_bytes:,} bytes. {'Kept ' + kept[-1] if kept else 'No earlier checkpoint exists'};"
            f" free space and run the same command with --resume auto"
        )


def state_bytes(state: dict) -> int:
    """Bytes of every tensor in a training state (model, optimizer): about what its checkpoint file holds."""
    seen, total = set(), 0

    def add(value) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            if id(value) not in seen:
                seen.add(id(value))
                total += value.numel() * value.element_size()
        elif isinstance(value, dict):
            for item in value.values():
                add(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                add(item)
        elif hasattr(value, "state_dict"):
            add(value.state_dict())

    for key in ("model", "optimizer"):
        add(state.get(key))
    return total


def out_of_space(error: BaseException) -> bool:
    """Whether a failed write ran out of room: ENOSPC, a quota, the file size limit, or torch's zip writer failing
    (it reports a short write without the errno)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        if isinstance(error, RuntimeError) and any(
            mark in str(error) for mark in ("inline_container", "PytorchStreamWriter", "file write failed")
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def find_resume_path(
    resume: Union[bool, str, Path], out_dir: Path, checkpoint_dir: Path, config: Optional[Config] = None
) -> Optional[Path]:
    """The checkpoint folder to resume from, or None; refuses an out_dir that holds a run we were not asked to resume,
    a damaged checkpoint, and (given the model's ``config``) a run of another model than ``checkpoint_dir``."""
    completed = sorted(out_dir.glob(f"{STEP_DIR_PREFIX}*/lit_model.pth")) if out_dir.is_dir() else []
    newest = completed[-1].parent if completed else None
    if resume is False or resume == "false":
        previous = newest or (out_dir / "final" if (out_dir / "final").exists() else None)
        if previous is not None:
            fail(
                f"--out_dir {out_dir} holds a previous run ({previous.name}); pass --resume auto to continue it or choose another --out_dir"
            )
        return None
    if resume is True or resume == "true":
        if newest is None:
            fail(f"--resume true but --out_dir {out_dir} holds no complete checkpoint (step-*/lit_model.pth)")
        path = newest
    elif resume == "auto":
        if newest is None:
            return None
        path = newest
    else:
        path = Path(resume)
        path = path.parent if path.name == "lit_model.pth" else path
        if not (path / "lit_model.pth").exists():
            fail(
                f"--resume {resume} is not a checkpoint folder holding lit_model.pth; valid: auto, true, false or such a folder"
            )
    path = intact_checkpoint(path)
    if config is not None and Config.from_file(path / "model_config.yaml") != config:
        fail(f"--resume {path} holds a run of another model than {checkpoint_dir}; choose another --out_dir")
    return path


def intact_checkpoint(path: Path) -> Path:
    """``path`` when its weights are intact; otherwise stops, naming the damage and the newest earlier step
    checkpoint beside it that is complete, to resume from only when asked (never silently)."""
    damage = checkpoint_damage(path)
    if damage is None:
        return path
    earlier = sorted(
        p for p in path.parent.glob(f"{STEP_DIR_PREFIX}*") if p.name < path.name and (p / "lit_model.pth").exists()
    )
    good = next((p for p in reversed(earlier) if checkpoint_damage(p, read_all=False) is None), None)
    hint = (
        f"the newest complete earlier checkpoint is {good}: resume from it with --resume {good}"
        if good
        else "no earlier complete checkpoint is there"
    )
    fail(f"checkpoint {path} is damaged: {damage}; {hint}, or delete {path} to start again")


def checkpoint_damage(directory: Path, read_all: bool = True) -> Optional[str]:
    """Why a checkpoint folder cannot be trusted, or None. Compares lit_model.pth with the size and zip-directory
    checksum that provenance.json recorded when it was saved (cheap: catches truncation and rewrites); ``read_all``
    also checks every tensor's bytes against their CRC-32 (one read of the file: catches altered bytes, which
    ``torch.load`` does not)."""
    weights = directory / "lit_model.pth"
    try:
        files = json.loads((directory / PROVENANCE_FILE).read_text()).get("files", {})
    except (OSError, ValueError):
        return f"{PROVENANCE_FILE} is missing or unreadable"
    if weights.is_dir():
        return sharded_damage(weights, files)
    recorded = files.get(weights.name)
    if not weights.is_file():
        return f"{weights.name} is missing"
    if recorded is not None and weights.stat().st_size != recorded["size_bytes"]:
        return f"{weights.name} has {weights.stat().st_size:,} bytes but had {recorded['size_bytes']:,} when saved (truncated or overwritten)"
    try:
        found = fingerprint(weights)
        if recorded is not None and found["checksum"] != recorded["checksum"]:
            return f"the tensor directory of {weights.name} differs from the one recorded when it was saved"
        if read_all:
            with zipfile.ZipFile(weights) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"the bytes of {bad} in {weights.name} do not match their CRC-32 (altered on disk)"
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        return f"{weights.name} is not a readable zip archive ({error})"
    return None


def sharded_damage(folder: Path, recorded: dict) -> Optional[str]:
    """Why a sharded (torch.distributed.checkpoint) folder cannot be trusted, or None: its metadata must be readable,
    every shard file it names must hold the bytes it points into, and every file must have the size recorded in
    provenance.json when it was saved (a missing, truncated or rewritten shard). DCP keeps no checksums, so bytes
    altered in place at the same size are not caught."""
    from lightning.fabric.utilities.load import _METADATA_FILENAME
    from torch.distributed.checkpoint import FileSystemReader

    if not (folder / _METADATA_FILENAME).is_file():
        return f"{folder.name}/{_METADATA_FILENAME} is missing"
    try:
        metadata = FileSystemReader(folder).read_metadata()
    except Exception as error:  # torch raises many types for a truncated or foreign file
        return f"{folder.name}/.metadata is unreadable ({type(error).__name__})"
    needed: dict[str, int] = {}
    for item in (metadata.storage_data or {}).values():
        needed[item.relative_path] = max(needed.get(item.relative_path, 0), item.offset + item.length)
    for name, size in sorted(needed.items()):
        path = folder / name
        if not path.is_file():
            return f"{folder.name}/{name} is missing"
        if path.stat().st_size < size:
            return f"{folder.name}/{name} has {path.stat().st_size:,} bytes, fewer than the {size:,} its metadata points into (truncated)"
    for name, record in sorted(recorded.items()):
        path = folder.parent / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != record["size_bytes"]:
            return f"{name} has {path.stat().st_size:,} bytes but had {record['size_bytes']:,} when saved (truncated or overwritten)"
    return None


def load_training_state(fabric: L.Fabric, path: Path, state: dict) -> None:
    """Restores a step checkpoint into ``state``: model, optimizer, counters, RNG states and the training data
    loader's position. The loader is restored here rather than by Fabric, which under FSDP (ModelParallelStrategy)
    hands a sharded checkpoint's other entries back as plain values without loading them into their objects."""
    restored = {key: value for key, value in state.items() if key != "train_dataloader"}
    remainder = fabric.load(path, restored, weights_only=True)
    state.update(restored)
    loader = _unwrap_objects(state["train_dataloader"])
    if "train_dataloader" in remainder and hasattr(loader, "load_state_dict"):
        loader.load_state_dict(remainder["train_dataloader"])
    set_rng_state(state["rng"])


def get_rng_state() -> dict:
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    version, inner, gauss_next = state["python"]
    random.setstate((version, tuple(inner), gauss_next))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
