"""Data modules that sample whole documents from a folder of text up to a token budget, as litdata token chunks.

``RedPajama`` reads any folder of .jsonl, .jsonl.zst, .parquet (a text field) or .txt files: the full
RedPajama-Data-1T with its per-source subfolders (optionally in RedPajama's source mixture), or a corpus of your own.
``RedPajamaSample`` is the same module that downloads RedPajama-Data-1T-Sample when its folder is absent (the paper
samples 1B tokens from it and trains 8 epochs).

How documents are chosen, streaming, with memory flat in the corpus size and the same result for any number of
workers: every file is cut into parts (line-aligned byte ranges of at most PART_BYTES for jsonl and .txt lines, row
groups for parquet; a compressed file is one part; one-document .txt files are grouped into parts of up to
PART_BYTES). Each budget (within its source's share when a mixture is given) is cut into pieces of at most
PIECE_TOKENS tokens, dealt to the parts by systematic sampling in proportion to their bytes: a part's share is a whole
number of tokens, within one piece of its proportion, and the shares add up to the budget exactly. Each part is read
from a seeded position, wrapping around to its start (a group of .txt files in a seeded order): documents go to
validation up to the part's validation share, then to training up to its training share; the document that crosses a
share is cut at it (its first tokens, then EOS) and its rest is left out of both splits. So the tokens written equal
the budgets whatever the document sizes, unless the data hold fewer. Parts are independent, so litdata's workers
tokenize them in parallel and write the same tokens whatever their number.

Here: the data module, the budgets and how they are dealt. The parts and their readers are in ``documents.py``, the
tokenizing into litdata chunks in ``token_chunks.py``.
"""

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import torch
from jsonargparse import lazy_instance
from litgpt.data import DataModule
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader

from litgpt_inheritune.errors import fail
from litgpt_inheritune.documents import SUFFIXES, TEXT_FIELD, BadInput, Part, file_parts, group_documents, unit_random
from litgpt_inheritune.files import partial_dir, staged_dir
from litgpt_inheritune.token_chunks import write_split

FORMAT_VERSION = 3  # part of the cache key: bump when the sampling rule or the stored layout changes
PIECE_TOKENS = 4096  # the grain at which budgets are dealt to parts: no part gets a sliver of a few tokens

# Tokens per source of RedPajama-Data-1T (billions, from its dataset card), named as its download folders.
REDPAJAMA_MIXTURE = {
    "common_crawl": 878,
    "c4": 175,
    "github": 59,
    "book": 26,
    "arxiv": 28,
    "wikipedia": 24,
    "stackexchange": 20,
}


@dataclass
class RedPajama(DataModule):
    """Any folder of documents (the full RedPajama-Data-1T, or .jsonl, .jsonl.zst, .parquet, .txt files of your own):
    whole documents sampled with a seed up to a token budget, plus a validation split.

    Documents are tokenized in parallel by litdata with the checkpoint's tokenizer (EOS after each) and written once
    under ``cache_dir``, keyed by the files' names and sizes, the tokenizer, the budgets, the seed and the mixture
    (not by the sequence length: litdata cuts the stored tokens into blocks when it loads them). litdata streams
    them, sharding across ranks and nodes and resuming mid-epoch. When the data hold fewer tokens than the budget,
    all of them are used and a warning says how many.
    """

    data_dir: Path = Path("data/RedPajama-Data-1T")
    """Folder of .jsonl, .jsonl.zst, .parquet or .txt files, searched recursively. With ``mixture``, its first-level
    subfolders are the sources (RedPajama-Data-1T: arxiv, book, c4, common_crawl, github, stackexchange, wikipedia)."""
    token_budget: int = 1_000_000_000
    """Training tokens to sample (whole documents)."""
    val_tokens: Optional[int] = None
    """Tokens held out for validation. Default: val_fraction of the budget, and at least one sequence
    (--train.max_seq_length + 1 tokens)."""
    val_fraction: float = 0.001
    """Fraction of the budget held out for validation when val_tokens is not given."""
    seed: int = 42
    """Seed for sampling documents and for shuffling the training stream."""
    mixture: Optional[Union[Literal["redpajama"], dict[str, float]]] = None
    """Shares of the budget per source subfolder: "redpajama" (RedPajama-Data-1T's token shares: common_crawl 72.6%,
    c4 14.5%, github 4.9%, arxiv 2.3%, book 2.1%, wikipedia 2.0%, stackexchange 1.7%) or e.g. {"c4": 1, "github": 1}.
    Default: every file in proportion to its size."""
    text_field: str = TEXT_FIELD
    """Field holding a document's text in jsonl and parquet files."""
    txt_documents: Literal["file", "line"] = "file"
    """A .txt file is one document ("file") or holds one document per non-empty line ("line")."""
    num_workers: int = 2
    """Data-loader worker processes per rank."""
    prepare_workers: Optional[int] = None
    """Processes that tokenize the data (litdata.optimize). Default: every CPU core. The tokens do not depend on it."""
    cache_dir: Optional[Path] = None
    """Where the tokenized chunks go. Default: a folder next to data_dir named '<data_dir>-litdata'."""

    tokenizer: Optional[Tokenizer] = field(default=None, init=False, repr=False)
    batch_size: int = field(default=1, init=False, repr=False)
    seq_length: int = field(default=2048, init=False, repr=False)
    _prepared_dir: Optional[Path] = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__init__()
        self.data_dir = Path(self.data_dir)
        if self.token_budget < 1:
            fail(f"--data.token_budget {self.token_budget} must be a positive number of tokens")
        if not 0 < self.val_fraction < 1:
            fail(f"--data.val_fraction {self.val_fraction} must be between 0 and 1")
        if self.val_tokens is not None and self.val_tokens < 1:
            fail(f"--data.val_tokens {self.val_tokens} must be a positive number of tokens")
        if isinstance(self.mixture, dict) and (not self.mixture or min(self.mixture.values()) <= 0):
            fail(f"--data.mixture {self.mixture} must give every source a positive share")

    def connect(self, tokenizer: Optional[Tokenizer] = None, batch_size: int = 1, max_seq_length: int = -1) -> None:
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.seq_length = max_seq_length + 1  # inputs plus the next token as target
        self._prepared_dir = None

    @property
    def prepared_dir(self) -> Path:
        if self._prepared_dir is None:  # listing a large corpus takes a while: once per connect()
            cache_dir = self.cache_dir or self.data_dir.with_name(self.data_dir.name + "-litdata")
            self._prepared_dir = Path(cache_dir) / self.cache_key()
        return self._prepared_dir

    def is_prepared(self) -> bool:
        return (self.prepared_dir / "manifest.json").is_file()

    def missing_data_dir(self) -> None:
        fail(
            f"--data.data_dir {self.data_dir} does not exist; download RedPajama-Data-1T into it (the files listed in"
            " https://huggingface.co/datasets/togethercomputer/RedPajama-Data-1T, one subfolder per source) or give a"
            f" folder of {', '.join(SUFFIXES)} files"
        )

    def files(self) -> list[Path]:
        """The corpus files in a fixed order (sorted relative paths); hidden files and folders are skipped."""
        if not self.data_dir.exists():
            self.missing_data_dir()
        files = sorted(
            p
            for p in self.data_dir.rglob("*")
            if p.name.endswith(SUFFIXES)
            and p.is_file()
            and not any(s.startswith(".") for s in p.relative_to(self.data_dir).parts)
        )
        if not files:
            fail(
                f"--data.data_dir {self.data_dir} holds no {', '.join(SUFFIXES)} files; expected documents such as RedPajama's jsonl (one JSON object with '{self.text_field}' per line)"
            )
        return files

    def source_shares(self, files: list[Path]) -> dict[str, float]:
        """Budget share per source (first-level subfolder); sources outside the mixture get none."""
        sources = sorted({source_of(p, self.data_dir) for p in files})
        if self.mixture is None:
            return {}
        weights = REDPAJAMA_MIXTURE if self.mixture == "redpajama" else self.mixture
        missing = sorted(set(weights) - set(sources))
        if missing:
            fail(
                f"--data.mixture names sources that --data.data_dir {self.data_dir} lacks: {', '.join(missing)}; its subfolders are: {', '.join(sources) or 'none'}"
            )
        total = sum(weights.values())
        return {name: weight / total for name, weight in weights.items()}

    def cache_key(self) -> str:
        if self.tokenizer is None:
            raise RuntimeError("call connect(tokenizer=...) first")
        files = self.files()
        identity = {
            "version": FORMAT_VERSION,
            # names and sizes: a copy of the data on another node or disk has the same key, a changed file another
            "files": [(p.relative_to(self.data_dir).as_posix(), p.stat().st_size) for p in files],
            "tokenizer": tokenizer_fingerprint(self.tokenizer),
            "token_budget": self.token_budget,
            "val_tokens": self.val_token_budget(),
            "seed": self.seed,
            "mixture": self.source_shares(files),
            "text_field": self.text_field,
            "txt_documents": self.txt_documents,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def val_token_budget(self) -> int:
        """--data.val_tokens, or else val_fraction of the budget and at least one sequence of the run."""
        if self.val_tokens is not None:
            return self.val_tokens
        return max(1, self.seq_length, int(self.val_fraction * self.token_budget))

    def parts(self) -> list[Part]:
        files = self.files()
        shares = self.source_shares(files)
        units: dict[str, list[tuple[Path, tuple]]] = {}  # per source: (file, unit) in file order
        for path in files:
            source = source_of(path, self.data_dir)
            if not shares or source in shares:
                units.setdefault(source if shares else ".", []).extend(
                    (path, unit) for unit in file_parts(path, path.stat().st_size, self.txt_documents)
                )
        sources = sorted(units)
        weights = [shares[source] for source in sources] if shares else [1]
        budgets = {
            split: dict(zip(sources, proportional(budget, weights)))
            for split, budget in (("val", self.val_token_budget()), ("train", self.token_budget))
        }
        parts = []
        for source in sources:
            grouped = group_documents(units[source], self.data_dir)
            sizes = [size for *_, size, _ in grouped]
            val = deal(budgets["val"][source], sizes, (self.seed, "val", source))
            train = deal(budgets["train"][source], sizes, (self.seed, "train", source))
            for (path, format, start, end, size, members), v, t in zip(grouped, val, train):
                name = path.relative_to(self.data_dir).as_posix()
                parts.append(Part(str(path), name, format, start, end, v, t, size, members))
        return parts

    def prepare_data(self) -> None:
        """Tokenizes the sample once (validation, then training) into a staging folder renamed into place at the end;
        an interrupted preparation leaves only the staging folder, which the next run starts afresh."""
        out_dir = self.prepared_dir
        if self.is_prepared():
            return
        with staged_dir(out_dir, staging=partial_dir(out_dir)) as staging:
            try:
                manifest = self.tokenize_sample(staging)
            except BadInput as error:
                fail(str(error))
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    def tokenize_sample(self, staging: Path) -> dict:
        parts = self.parts()
        workers = min(self.prepare_workers or os.cpu_count() or 1, len(parts))
        budgets = {"val": self.val_token_budget(), "train": self.token_budget}
        how = (
            ""
            if self.val_tokens is not None
            else f" (--data.val_fraction {self.val_fraction} of the budget, and at least one sequence of"
            f" {self.seq_length:,} tokens; --data.val_tokens sets it)"
        )
        print(
            f"Preparing {self.data_dir}: {len(parts):,} parts, {budgets['train']:,} training and {budgets['val']:,}"
            f" validation tokens{how}, {workers} tokenizer processes -> {self.prepared_dir}",
            file=sys.stderr,
        )
        counts = {
            split: write_split(
                parts, split, self.tokenizer, self.seed, self.text_field, staging, workers, budgets[split]
            )
            for split in ("val", "train")
        }
        for name in ("val", "train"):
            if counts[name]["tokens"] == 0:
                fail(
                    f"--data.data_dir {self.data_dir} gave no {name} tokens; raise --data.{'val_tokens' if name == 'val' else 'token_budget'} or add data"
                )
        for name in ("val", "train"):
            if counts[name]["tokens"] < budgets[name]:
                flag = "val_tokens" if name == "val" and self.val_tokens is not None else "token_budget"
                print(
                    f"warning: {self.data_dir} gave {counts[name]['tokens']:,} {name} tokens, fewer than the"
                    f" {budgets[name]:,} that --data.{flag} asks: the budget exceeds what the data hold (all of it is"
                    " used) or some parts ran out before their share",
                    file=sys.stderr,
                )
        print(
            f"Wrote {counts['train']['tokens']:,} training tokens ({counts['train']['documents']:,} documents) and"
            f" {counts['val']['tokens']:,} validation tokens ({counts['val']['documents']:,} documents)",
            file=sys.stderr,
        )
        return {
            "data_dir": str(self.data_dir),
            "files": len({p.path for p in parts if not p.files}) + sum(len(p.files) for p in parts),
            "parts": len(parts),
            "seed": self.seed,
            "mixture": self.source_shares(self.files()),
            "budgets": budgets,
            **counts,
        }

    def manifest(self) -> dict:
        return json.loads((self.prepared_dir / "manifest.json").read_text())

    def setup(self, stage: str = "") -> None:
        manifest = self.manifest()
        for name in ("val", "train"):
            if manifest[name]["tokens"] < self.seq_length:
                fail(
                    f"--data.data_dir {self.data_dir} holds too little text for the {name} split: {manifest[name]['tokens']}"
                    f" tokens, need at least {self.seq_length} (one sequence); lower --train.max_seq_length, raise"
                    f" --data.{'val_tokens' if name == 'val' else 'token_budget'} or add data"
                )

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val", shuffle=False)

    def dataloader(self, split: str, shuffle: bool) -> DataLoader:
        from litdata.streaming import StreamingDataLoader, StreamingDataset, TokensLoader

        dataset = StreamingDataset(
            input_dir=str(self.prepared_dir / split),
            item_loader=TokensLoader(block_size=self.seq_length),  # the block size is chosen here, at load time
            shuffle=shuffle,
            drop_last=True,
            seed=self.seed,
        )
        return StreamingDataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            drop_last=True,
            pin_memory=torch.cuda.is_available(),
        )


@dataclass
class RedPajamaSample(RedPajama):
    """RedPajama-Data-1T-Sample (about 1B LLaMA tokens, the paper's low-data regime), downloaded from the Hugging Face
    Hub when data_dir does not exist; otherwise the same as ``RedPajama`` (any folder of .jsonl, .jsonl.zst,
    .parquet or .txt files works)."""

    data_dir: Path = Path("data/RedPajama-Data-1T-Sample")
    """Folder with the documents (.jsonl, .jsonl.zst, .parquet or .txt). When it does not exist, repo_id is downloaded into it."""
    repo_id: str = "togethercomputer/RedPajama-Data-1T-Sample"
    """Hugging Face dataset to download when data_dir is absent."""

    def missing_data_dir(self) -> None:
        from huggingface_hub import snapshot_download

        print(f"Downloading {self.repo_id} to {self.data_dir} ...", file=sys.stderr)
        try:
            snapshot_download(self.repo_id, repo_type="dataset", allow_patterns=["*.jsonl"], local_dir=self.data_dir)
        except Exception as error:
            fail(
                f"--data.data_dir {self.data_dir} does not exist and {self.repo_id} could not be downloaded ({type(error).__name__})"
            )


# The command-line default of pretrain, grow and prepare_data: jsonargparse applies `--data.data_dir DIR` (and any
# other --data.* flag) to a default given as a lazy instance, while a default of None has no class to apply it to.
DEFAULT_DATA = lazy_instance(RedPajamaSample)


def data_or_default(data: Optional[DataModule]) -> DataModule:
    """A fresh RedPajamaSample for a Python caller that left ``data`` at its default."""
    return RedPajamaSample() if data is None or data is DEFAULT_DATA else data


def source_of(path: Path, data_dir: Path) -> str:
    parts = path.relative_to(data_dir).parts
    return parts[0] if len(parts) > 1 else "."


def proportional(total: int, weights: list[float]) -> list[int]:
    """Whole numbers in proportion to ``weights`` that add up to ``total`` (cumulative rounding)."""
    cumulative, shares, given = 0.0, [], 0
    for weight in weights:
        cumulative += weight
        upto = round(total * cumulative / sum(weights))
        shares.append(upto - given)
        given = upto
    return shares


def deal(budget: int, sizes: list[int], key) -> list[int]:
    """Each part's share of ``budget`` tokens: the budget is cut into equal pieces of at most PIECE_TOKENS, and piece
    k goes to the part whose bytes hold position (k + u) / pieces of the corpus (u fixed by ``key``): systematic
    sampling, so a share is within one piece of the part's proportion, and the shares add up to the budget."""
    pieces = max(1, math.ceil(budget / PIECE_TOKENS))
    total = max(1, sum(sizes))
    offset = int(unit_random(*key) * 2**32)  # u = offset / 2**32, in integers: exact for any corpus size
    shares, before, cumulative = [], 0, 0
    for size in sizes:
        cumulative += size
        # pieces k with (k + u) / pieces < cumulative / total, i.e. k < (cumulative * pieces * 2**32 - offset * total) / (total * 2**32)
        upto = min(pieces, max(0, -(-(cumulative * pieces * 2**32 - offset * total) // (total * 2**32))))
        shares.append(budget * upto // pieces - budget * before // pieces)
        before = upto
    return shares


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """SHA-256 of the tokenizer's full definition (vocabulary, merges, special tokens) and its BOS/EOS use."""
    if tokenizer.backend == "huggingface":
        definition = tokenizer.processor.to_str().encode()
    else:
        definition = tokenizer.processor.serialized_model_proto()
    extra = f"{tokenizer.bos_id}/{tokenizer.eos_id}/{tokenizer.use_bos}".encode()
    return hashlib.sha256(definition + extra).hexdigest()
