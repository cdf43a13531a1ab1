"""LitGPT checkpoint folders: checking and resolving them, reading them lazily, writing pretrain's step and final
checkpoints (staged, with configs, tokenizer, provenance and RNG states), resuming, pruning, and damage checks."""

import hashlib
import json
import os
import random
import shutil
import sys
import threading
import zipfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Union

import lightning as L
import numpy as np
import torch
import yaml
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.wrappers import _unwrap_objects
from litgpt.config import Config
from litgpt.utils import save_config
from tqdm import tqdm

from litgpt_inheritune.errors import fail
from litgpt_inheritune.cluster import full_disk_is_an_error, partial_dir, state_bytes
from litgpt_inheritune.files import replace_dir
from litgpt_inheritune.sharding import full_weights, is_sharded

# What litgpt's Tokenizer and its HF conversion read from a checkpoint directory, besides weights and configs.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "chat_template.jinja",  # transformers >= 4.50 keeps the chat template here, not in tokenizer_config.json
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
    "prompt_style.yaml",
)
PROVENANCE_FILE = "provenance.json"
STEP_DIR_PREFIX = "step-"  # pretrain's step checkpoints: out_dir/step-00001000/
SHOW_PROGRESS_FROM_BYTES = 64 * 2**20


def resolve_checkpoint_dir(checkpoint_dir: Path, name: str = "checkpoint_dir") -> Path:
    """litgpt's conventions for a checkpoint argument: ``org/model`` stands for ``checkpoints/org/model``
    (``extend_checkpoint_dir``), and a Hugging Face model that is not there yet is downloaded into it
    (``auto_download_checkpoint``, i.e. ``litgpt download``). Any other path is returned as given."""
    from litgpt.utils import auto_download_checkpoint, extend_checkpoint_dir

    path = extend_checkpoint_dir(Path(checkpoint_dir))
    if path.exists() or path.is_absolute() or len(path.parts) != 2 or path.parts[0] in ("checkpoints", ".", ".."):
        return path
    try:
        return auto_download_checkpoint(str(path))
    except (Exception, SystemExit) as error:  # no network, no such repository, a gated model, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        fail(
            f"{name} {checkpoint_dir} is neither a folder nor checkpoints/{checkpoint_dir}, and downloading it as a Hugging Face model failed ({reason})"
        )


def check_checkpoint(checkpoint_dir: Path, name: str = "checkpoint_dir", tokenizer: bool = False) -> None:
    """litgpt's own check of a checkpoint folder (lit_model.pth, model_config.yaml), as one line naming ``name``.

    The tokenizer is checked here, not by litgpt: litgpt's check also demands tokenizer_config.json, which its
    ``Tokenizer`` treats as optional.
    """
    from litgpt.utils import check_valid_checkpoint_dir

    checkpoint_dir = Path(checkpoint_dir)
    try:
        check_valid_checkpoint_dir(checkpoint_dir, verbose=False, raise_error=True, ignore_tokenizer_files=True)
    except FileNotFoundError as error:  # litgpt's message starts with "checkpoint_dir '<absolute path>'"
        fail(f"{name} {str(error).removeprefix('checkpoint_dir ').rstrip('.')}; expected a LitGPT checkpoint folder")
    if tokenizer and not (
        (checkpoint_dir / "tokenizer.json").is_file() or (checkpoint_dir / "tokenizer.model").is_file()
    ):
        fail(
            f"{name} {checkpoint_dir} is missing tokenizer.json or tokenizer.model; copy them from the reference checkpoint"
        )


def load_lazy_state_dict(path: Path) -> dict:
    """Memory-maps a LitGPT ``.pth`` checkpoint: nothing is read until a tensor is used. Never unpickles objects."""
    if path.is_dir():
        fail(
            f"{path} is a sharded step checkpoint of `pretrain --strategy fsdp`; use the run's final/ (one file), or"
            f" resume the run from it"
        )
    if not path.is_file():
        fail(f"{path} does not exist; expected a LitGPT checkpoint file (lit_model.pth)")
    try:
        checkpoint = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises many types for truncated, corrupt or foreign files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        fail(f"{path} is not a readable PyTorch checkpoint ({reason})")
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]  # what `litgpt pretrain` and `finetune_full` save
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        fail(f"{path} does not hold a state dict of tensors")
    return checkpoint


def fingerprint(path: Path) -> dict:
    """Size and a checksum of a checkpoint that costs O(number of tensors), not O(bytes).

    PyTorch checkpoints are zip archives whose directory stores a CRC-32 of every tensor's bytes; the checksum is
    the SHA-256 of that directory (names, sizes, CRCs). A full SHA-256 would read the whole reference, which is
    exactly what ``init`` avoids.
    """
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            digest.update(f"{info.filename}\0{info.file_size}\0{info.CRC}\n".encode())
    return {"size_bytes": path.stat().st_size, "checksum": f"sha256-zipdir:{digest.hexdigest()}"}


def save_state_dict(state_dict: dict, path: Path) -> None:
    """``torch.save`` with a progress bar for large files (the bar follows the bytes on disk).

    Kept on purpose: torch.save has no progress callback, and a silent 7 GB write looks like a hang.
    """
    total = sum(t.numel() * t.element_size() for t in {id(t): t for t in state_dict.values()}.values())
    if total < SHOW_PROGRESS_FROM_BYTES:
        torch.save(state_dict, path)
        return
    done = threading.Event()

    def follow() -> None:
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"writing {path.name}", file=sys.stderr) as bar:
            while not done.wait(0.5):
                bar.update(max(0, (path.stat().st_size if path.exists() else 0) - bar.n))
            bar.update(total - bar.n)

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    try:
        torch.save(state_dict, path)
    finally:
        done.set()
        watcher.join()


def copy_tokenizer_files(source_dir: Path, out_dir: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (source_dir / name).is_file():
            shutil.copy2(source_dir / name, out_dir / name)
            copied.append(name)
    return copied


def load_gpt(checkpoint_dir: Path):
    """LitGPT's GPT with a checkpoint's weights (memory-mapped, on the CPU), built without a random initialisation
    of weights that the checkpoint overwrites."""
    from litgpt.model import GPT

    with torch.device("meta"):
        model = GPT(Config.from_file(checkpoint_dir / "model_config.yaml"))
    model.load_state_dict(load_lazy_state_dict(checkpoint_dir / "lit_model.pth"), assign=True)
    model.cos, model.sin = model.rope_cache()  # non-persistent buffers: not in the checkpoint
    return model


def write_provenance(out_dir: Path, record: dict) -> None:
    from importlib.metadata import version

    record = dict(record)
    record["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["versions"] = {name: version(name) for name in ("litgpt-inheritune", "litgpt", "torch")}
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")


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


def weight_records(weights: Path) -> dict:
    if weights.is_file():
        return {weights.name: fingerprint(weights)}
    if weights.is_dir():
        return {
            str(path.relative_to(weights.parent)): {"size_bytes": path.stat().st_size}
            for path in sorted(weights.iterdir())
            if path.is_file()
        }
    return {}


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


def find_resume_path(resume: Union[bool, str, Path], out_dir: Path, checkpoint_dir: Path) -> Optional[Path]:
    """The checkpoint folder to resume from, or None; refuses an out_dir that holds a run we were not asked to resume."""
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
        return intact_checkpoint(newest)
    if resume == "auto":
        return intact_checkpoint(newest) if newest is not None else None
    path = Path(resume)
    path = path.parent if path.name == "lit_model.pth" else path
    if not (path / "lit_model.pth").exists():
        fail(
            f"--resume {resume} is not a checkpoint folder holding lit_model.pth; valid: auto, true, false or such a folder"
        )
    return intact_checkpoint(path)
