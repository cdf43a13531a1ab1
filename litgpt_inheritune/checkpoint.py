"""Reading and writing LitGPT checkpoint directories safely: lazy loading, staged output, provenance."""

import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn, Optional

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from tqdm import tqdm

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
# Keys of a Hugging Face config.json that hold the number of blocks.
HF_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
PROVENANCE_FILE = "provenance.json"
SHOW_PROGRESS_FROM_BYTES = 64 * 2**20


def fail(message: str) -> NoReturn:
    """Stops a command on bad input: one line on stderr, exit code 1, no traceback."""
    raise SystemExit(f"error: {message}")


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
        fail(f"{name} {checkpoint_dir} is neither a folder nor checkpoints/{checkpoint_dir}, and downloading it as a Hugging Face model failed ({reason})")


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
    if tokenizer and not ((checkpoint_dir / "tokenizer.json").is_file() or (checkpoint_dir / "tokenizer.model").is_file()):
        fail(f"{name} {checkpoint_dir} is missing tokenizer.json or tokenizer.model; copy them from the reference checkpoint")


def load_lazy_state_dict(path: Path) -> dict:
    """Memory-maps a LitGPT ``.pth`` checkpoint: nothing is read until a tensor is used. Never unpickles objects."""
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


def write_hf_config(source_dir: Path, out_dir: Path, layers: list[int]) -> bool:
    """Copies the reference's Hugging Face config.json with the block count (and per-layer lists) cut to ``layers``.

    ``litgpt evaluate`` and ``convert_from_litgpt`` users load the converted weights with this file, so it must
    describe the derived model, not the reference.
    """
    if not (source_dir / "config.json").is_file():
        return False
    hf_config = json.loads((source_dir / "config.json").read_text())
    n_reference = next((hf_config[k] for k in HF_LAYER_COUNT_KEYS if isinstance(hf_config.get(k), int)), None)
    for key in HF_LAYER_COUNT_KEYS:
        if key in hf_config:
            hf_config[key] = len(layers)
    for key, value in hf_config.items():
        if "layer" in key and isinstance(value, list) and len(value) == n_reference:
            hf_config[key] = [value[i] for i in layers]
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return True


def load_gpt(checkpoint_dir: Path):
    """LitGPT's GPT with a checkpoint's weights (memory-mapped, on the CPU), built without a random initialisation
    of weights that the checkpoint overwrites."""
    from litgpt.config import Config
    from litgpt.model import GPT

    with torch.device("meta"):
        model = GPT(Config.from_file(checkpoint_dir / "model_config.yaml"))
    model.load_state_dict(load_lazy_state_dict(checkpoint_dir / "lit_model.pth"), assign=True)
    model.cos, model.sin = model.rope_cache()  # non-persistent buffers: not in the checkpoint
    return model


def write_text_atomic(path: Path, text: str) -> None:
    """Writes a file through a temporary sibling, so a reader never sees it half written."""
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text)
    temporary.replace(path)


def write_provenance(out_dir: Path, record: dict) -> None:
    from importlib.metadata import version

    record = dict(record)
    record["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["versions"] = {name: version(name) for name in ("litgpt-inheritune", "litgpt", "torch")}
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")


def check_out_dir(out_dir: Path, overwrite: bool, protected: tuple[Path, ...] = ()) -> None:
    """Refuses an out_dir that would destroy something: a file, a non-empty folder without overwrite, an input."""
    resolved = out_dir.resolve()
    for path in protected:
        path = path.resolve()
        if resolved == path or resolved in path.parents:
            fail(f"--out_dir {out_dir} would replace the input {path}; choose another directory")
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out_dir {out_dir} is a file; give a directory path")
    if out_dir.is_symlink() and not out_dir.exists():
        fail(f"--out_dir {out_dir} is a broken link; give a directory path")
    if any(parent.exists() and not parent.is_dir() for parent in out_dir.parents):
        fail(f"--out_dir {out_dir} lies inside a file; give a directory path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        fail(f"--out_dir {out_dir} exists and is not empty; pass --overwrite true to replace it or choose another")


@contextmanager
def staged_dir(out_dir: Path):
    """Yields a temporary directory next to ``out_dir`` that replaces it only when the block succeeds.

    A failure or interruption leaves ``out_dir`` exactly as it was.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir(staging, out_dir)


def replace_dir(staging: Path, out_dir: Path) -> None:
    """Puts the finished folder ``staging`` in place of ``out_dir`` (if any): at every moment one complete version
    exists under ``out_dir``'s name or beside it."""
    if out_dir.exists():
        retired = out_dir.with_name(f".{out_dir.name}.replaced-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(out_dir, retired)
        os.rename(staging, out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, out_dir)


def prune_step_checkpoints(out_dir: Path, keep: int, newest: Path) -> list[Path]:
    """Deletes the complete step checkpoints (``step-*/``) in ``out_dir`` beyond the newest ``keep``, never ``newest``
    (the one just written). Each is renamed to a hidden name first, so that a crash mid-delete leaves no folder that
    looks like a complete checkpoint."""
    others = sorted(path for path in out_dir.glob("step-*") if path.is_dir() and path != newest)
    doomed = others[: max(0, len(others) - (keep - 1))]
    for path in doomed:
        os.rename(path, path.with_name(f".{path.name}.deleting"))
    for retired in out_dir.glob(".step-*.deleting"):  # also what a run killed mid-delete left behind
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
    if weights.is_dir():
        return None  # a sharded FSDP checkpoint: torch.distributed.checkpoint's own metadata describes it
    try:
        recorded = json.loads((directory / PROVENANCE_FILE).read_text()).get("files", {}).get(weights.name)
    except (OSError, ValueError):
        return f"{PROVENANCE_FILE} is missing or unreadable"
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


def intact_checkpoint(path: Path) -> Path:
    """``path`` when its weights are intact; otherwise stops, naming the damage and the newest earlier step
    checkpoint beside it that is complete, to resume from only when asked (never silently)."""
    damage = checkpoint_damage(path)
    if damage is None:
        return path
    earlier = sorted(p for p in path.parent.glob("step-*") if p.name < path.name and (p / "lit_model.pth").exists())
    good = next((p for p in reversed(earlier) if checkpoint_damage(p, read_all=False) is None), None)
    hint = f"the newest complete earlier checkpoint is {good}: resume from it with --resume {good}" if good else "no earlier complete checkpoint is there"
    fail(f"checkpoint {path} is damaged: {damage}; {hint}, or delete {path} to start again")
