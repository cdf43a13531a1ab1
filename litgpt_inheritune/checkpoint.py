"""LitGPT checkpoint folders, as every command reads and writes them: resolving and checking a checkpoint argument,
reading weights lazily, fingerprints, and the pieces of a folder (weights, tokenizer files, provenance). pretrain's
step and final checkpoints, resuming and damage checks are in train_state.py."""

import hashlib
import json
import shutil
import sys
import threading
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import torch
from litgpt.config import Config
from tqdm import tqdm

from litgpt_inheritune.errors import fail

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


def weight_records(weights: Path) -> dict:
    """What provenance.json records of a checkpoint's weights: size and checksum of a file (``fingerprint``), or
    the size of each file of a sharded folder."""
    if weights.is_file():
        return {weights.name: fingerprint(weights)}
    if weights.is_dir():
        return {
            str(path.relative_to(weights.parent)): {"size_bytes": path.stat().st_size}
            for path in sorted(weights.iterdir())
            if path.is_file()
        }
    return {}


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
