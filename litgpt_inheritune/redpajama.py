"""`RedPajamaSample`: a seeded sample of RedPajama-Data-1T-Sample documents up to a token budget, as litdata chunks.

The paper trains on 1B tokens sampled from RedPajama-Data-1T-Sample with the reference's tokenizer, repeated for
8 epochs. The files are jsonl, one ``{"text": ..., "meta": ...}`` object per line.
"""

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from litgpt.data import DataModule
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader

from litgpt_inheritune.checkpoint import fail, staged_dir

SHARD_TOKENS = 8 * 2**20  # tokens per intermediate shard handed to litdata's optimize


@dataclass
class RedPajamaSample(DataModule):
    """RedPajama-Data-1T-Sample: whole documents sampled with a seed until a token budget, plus a validation split.

    Documents are tokenized with the checkpoint's tokenizer (EOS after each), written once as litdata chunks under
    ``cache_dir`` (keyed by the files, tokenizer, budget, split and seed) and streamed with litdata, which shards
    them across ranks and nodes and can resume mid-epoch. When the data holds fewer tokens than the budget, all of
    it is used and a warning says how much that is.
    """

    data_dir: Path = Path("data/RedPajama-Data-1T-Sample")
    """Folder with the *.jsonl files. When it does not exist it is downloaded from the Hugging Face Hub (repo_id)."""
    token_budget: int = 1_000_000_000
    """Training tokens to sample (whole documents; the last one may overshoot)."""
    val_tokens: Optional[int] = None
    """Tokens held out for validation (sampled first). Default: val_fraction of the budget, at least one block."""
    val_fraction: float = 0.001
    """Fraction of the budget held out for validation when val_tokens is not given."""
    seed: int = 42
    """Seed for sampling documents and for shuffling the training stream."""
    num_workers: int = 2
    """Data-loader worker processes per rank."""
    repo_id: str = "togethercomputer/RedPajama-Data-1T-Sample"
    """Hugging Face dataset to download when data_dir is absent."""
    cache_dir: Optional[Path] = None
    """Where the tokenized chunks go. Default: a folder next to data_dir named '<data_dir>-litdata'."""

    tokenizer: Optional[Tokenizer] = field(default=None, init=False, repr=False)
    batch_size: int = field(default=1, init=False, repr=False)
    seq_length: int = field(default=2048, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__init__()
        self.data_dir = Path(self.data_dir)
        if self.token_budget < 1:
            fail(f"--data.token_budget {self.token_budget} must be a positive number of tokens")
        if not 0 < self.val_fraction < 1:
            fail(f"--data.val_fraction {self.val_fraction} must be between 0 and 1")

    def connect(self, tokenizer: Optional[Tokenizer] = None, batch_size: int = 1, max_seq_length: int = -1) -> None:
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.seq_length = max_seq_length + 1  # inputs plus the next token as target

    @property
    def prepared_dir(self) -> Path:
        cache_dir = self.cache_dir or self.data_dir.with_name(self.data_dir.name + "-litdata")
        return Path(cache_dir) / self.cache_key()

    def jsonl_files(self) -> list[Path]:
        if not self.data_dir.exists():
            self.download()
        files = sorted(self.data_dir.rglob("*.jsonl"))
        if not files:
            fail(f"--data.data_dir {self.data_dir} holds no .jsonl files; expected RedPajama-style jsonl (one JSON object with 'text' per line)")
        return files

    def download(self) -> None:
        from huggingface_hub import snapshot_download

        print(f"Downloading {self.repo_id} to {self.data_dir} ...", file=sys.stderr)
        try:
            snapshot_download(self.repo_id, repo_type="dataset", allow_patterns=["*.jsonl"], local_dir=self.data_dir)
        except Exception as error:
            fail(f"--data.data_dir {self.data_dir} does not exist and {self.repo_id} could not be downloaded ({type(error).__name__})")

    def cache_key(self) -> str:
        if self.tokenizer is None:
            raise RuntimeError("call connect(tokenizer=...) first")
        files = self.jsonl_files()
        identity = {
            "files": [(str(p.relative_to(self.data_dir)), p.stat().st_size, p.stat().st_mtime_ns) for p in files],
            "tokenizer": tokenizer_fingerprint(self.tokenizer),
            "token_budget": self.token_budget,
            "val_tokens": self.val_token_budget(),
            "seed": self.seed,
            "seq_length": self.seq_length,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def val_token_budget(self) -> int:
        return self.val_tokens if self.val_tokens is not None else max(self.seq_length, int(self.val_fraction * self.token_budget))

    def prepare_data(self) -> None:
        out_dir = self.prepared_dir
        if (out_dir / "manifest.json").is_file():
            return
        with staged_dir(out_dir) as staging:
            manifest = self.tokenize_sample(staging / "shards")
            for split in ("val", "train"):
                write_chunks(sorted((staging / "shards").glob(f"{split}-*.npy")), staging / split, self.seq_length)
            shutil.rmtree(staging / "shards")
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    def tokenize_sample(self, shard_dir: Path) -> dict:
        """Walks the documents in a seeded random order: validation first, then training, each up to its budget."""
        files = self.jsonl_files()
        offsets = [(i, offset) for i, path in enumerate(files) for offset in line_offsets(path)]
        order = np.random.default_rng(self.seed).permutation(len(offsets))
        budgets = {"val": self.val_token_budget(), "train": self.token_budget}
        counts = {split: {"tokens": 0, "documents": 0} for split in budgets}
        shard_dir.mkdir(parents=True)
        handles = [open(path, "rb") for path in files]
        split, buffer, n_shards = "val", [], 0

        def flush() -> None:
            nonlocal buffer, n_shards
            if buffer:
                np.save(shard_dir / f"{split}-{n_shards:05d}.npy", np.concatenate(buffer).astype(np.int32))
                buffer, n_shards = [], n_shards + 1

        try:
            for index in order:
                file_index, offset = offsets[index]
                handles[file_index].seek(offset)
                text = json.loads(handles[file_index].readline()).get("text", "")
                if not text.strip():
                    continue
                tokens = self.tokenizer.encode(text, eos=True).numpy()
                buffer.append(tokens)
                counts[split]["tokens"] += len(tokens)
                counts[split]["documents"] += 1
                if sum(map(len, buffer)) >= SHARD_TOKENS:
                    flush()
                if counts[split]["tokens"] >= budgets[split]:
                    flush()
                    if split == "train":
                        break
                    split = "train"
            flush()
        finally:
            for handle in handles:
                handle.close()

        for name, count in counts.items():
            if count["tokens"] < self.seq_length:
                fail(
                    f"--data.data_dir {self.data_dir} holds too little text for the {name} split: {count['tokens']}"
                    f" tokens, need at least {self.seq_length} (one sequence); lower --data.val_tokens or add data"
                )
        if counts["train"]["tokens"] < self.token_budget:
            print(
                f"warning: {self.data_dir} holds only {counts['train']['tokens']:,} training tokens after validation;"
                f" using all of them instead of --data.token_budget {self.token_budget:,}",
                file=sys.stderr,
            )
        return {"files": [str(p) for p in files], "seed": self.seed, "budgets": budgets, **counts}

    def manifest(self) -> dict:
        return json.loads((self.prepared_dir / "manifest.json").read_text())

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val", shuffle=False)

    def dataloader(self, split: str, shuffle: bool) -> DataLoader:
        from litdata.streaming import StreamingDataLoader, StreamingDataset, TokensLoader

        dataset = StreamingDataset(
            input_dir=str(self.prepared_dir / split),
            item_loader=TokensLoader(block_size=self.seq_length),
            shuffle=shuffle,
            drop_last=True,
            seed=self.seed,
        )
        return StreamingDataLoader(
            dataset, batch_size=self.batch_size, num_workers=self.num_workers, drop_last=True,
            pin_memory=torch.cuda.is_available(),
        )


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """SHA-256 of the tokenizer's full definition (vocabulary, merges, special tokens) and its BOS/EOS use."""
    if tokenizer.backend == "huggingface":
        definition = tokenizer.processor.to_str().encode()
    else:
        definition = tokenizer.processor.serialized_model_proto()
    extra = f"{tokenizer.bos_id}/{tokenizer.eos_id}/{tokenizer.use_bos}".encode()
    return hashlib.sha256(definition + extra).hexdigest()


def line_offsets(path: Path) -> list[int]:
    offsets, position = [], 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                offsets.append(position)
            position += len(line)
    return offsets


def load_tokens(path: str):
    yield torch.from_numpy(np.load(path))


def write_chunks(shards: list[Path], out_dir: Path, seq_length: int) -> None:
    from litdata import optimize
    from litdata.streaming import TokensLoader

    optimize(
        fn=load_tokens,
        inputs=[str(p) for p in shards],
        output_dir=str(out_dir),
        num_workers=1,
        chunk_bytes="64MB",
        item_loader=TokensLoader(block_size=seq_length),
        verbose=False,
    )
