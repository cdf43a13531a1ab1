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
"""

import hashlib
import json
import math
import os
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterator, Literal, Optional, Union

import torch
from jsonargparse import lazy_instance
from litgpt.data import DataModule
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader
from tqdm import tqdm

from litgpt_inheritune.errors import fail
from litgpt_inheritune.files import replace_dir

FORMAT_VERSION = 3  # part of the cache key: bump when the sampling rule or the stored layout changes
PART_BYTES = 64 * 2**20  # largest byte range of a jsonl/.txt file that one worker reads as a unit
PIECE_TOKENS = 4096  # the grain at which budgets are dealt to parts: no part gets a sliver of a few tokens
ITEM_TOKENS = 2**20  # tokens per item handed to litdata: no worker holds more than this plus one document
SUFFIXES = (".jsonl", ".jsonl.zst", ".parquet", ".txt")
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


class BadInput(ValueError):
    """An unreadable or malformed document: the message names the file and line."""


@dataclass(frozen=True)
class Part:
    """A unit of work for one litdata worker: a slice of one file and its shares of the two budgets."""

    path: str
    name: str  # the path relative to data_dir: seeds the part's choices, so that a copy elsewhere samples the same
    format: str
    start: int  # byte offset (jsonl, .txt lines) or row group (parquet)
    end: int
    val_tokens: int
    train_tokens: int
    size: int  # bytes, for the budget shares and litdata's work balancing
    files: tuple[tuple[str, str], ...] = ()  # "txt": the (path, name) of each one-document file of the group


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
    text_field: str = "text"
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
        staging = out_dir.with_name(f".{out_dir.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            manifest = self.tokenize_sample(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(staging, out_dir)

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


def file_parts(path: Path, size: int, txt_documents: str) -> Iterator[tuple[str, int, int, int]]:
    """(format, start, end, bytes) of the units a file is read in."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            metadata = pq.ParquetFile(path).metadata
        except Exception as error:
            fail(
                f"{path} is not a readable parquet file ({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})"
            )
        group_bytes = [metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups)]
        for g, nbytes in enumerate(group_bytes):
            yield "parquet", g, g + 1, max(1, round(size * nbytes / max(1, sum(group_bytes))))
    elif path.name.endswith(".zst") or (path.name.endswith(".txt") and txt_documents == "file"):
        yield ("jsonl.zst" if path.name.endswith(".zst") else "txt"), 0, size, size  # read whole, from the start
    else:
        format = "lines" if path.name.endswith(".txt") else "jsonl"
        count = max(1, math.ceil(size / PART_BYTES))  # parts of equal size: no small last part short of its share
        for k in range(count):
            yield format, k * size // count, (k + 1) * size // count, (k + 1) * size // count - k * size // count


def unit_random(*key) -> float:
    """A number in [0, 1) fixed by the key: the seeded coin and start position of a part, the same in every process."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


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


def group_documents(units: list[tuple[Path, tuple]], data_dir: Path) -> list[tuple]:
    """(path, format, start, end, bytes, files) per part: one-document .txt files grouped, in file order, into parts of
    up to PART_BYTES (a part of one file could not give a share larger than its document); other units as they are."""
    parts, group, group_bytes = [], [], 0
    for path, (format, start, end, size) in [*units, (None, ("end", 0, 0, 0))]:
        if group and (format != "txt" or group_bytes + size > PART_BYTES):
            members = tuple((str(member), member.relative_to(data_dir).as_posix()) for member in group)
            parts.append((group[0], "txt", 0, group_bytes, max(1, group_bytes), members))
            group, group_bytes = [], 0
        if format == "txt":
            group.append(path)
            group_bytes += size
        elif path is not None:
            parts.append((path, format, start, end, size, ()))
    return parts


# ---- reading documents (runs in litdata's worker processes) ----


def documents(part: Part, seed: int, text_field: str) -> Iterator[tuple[int, str]]:
    """(location, text) of the part's documents, from a seeded position, wrapping around to the part's start."""
    if part.format == "txt":  # a group of one-document files, in a seeded order
        for path, name in sorted(part.files, key=lambda file: unit_random(seed, file[1])):
            yield 0, read_text(Path(path))
    elif part.format == "parquet":
        yield from parquet_documents(part, seed, text_field)
    elif part.format == "jsonl.zst":
        yield from json_lines(part.path, zst_lines(part.path), text_field)
    else:
        pivot = part.start + int(unit_random(seed, part.name, part.start) * (part.end - part.start))
        lines = rotated_lines(part.path, part.start, part.end, pivot)
        if part.format == "jsonl":
            yield from json_lines(part.path, lines, text_field)
        else:
            for offset, line in lines:
                yield offset, decode(line, part.path, offset).rstrip("\r\n")


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise BadInput(f"{path}: not UTF-8 text (byte {error.start}); convert it to UTF-8") from None
    except OSError as error:
        raise BadInput(f"{path}: cannot be read ({error.strerror})") from None


def rotated_lines(path: str, start: int, end: int, pivot: int) -> Iterator[tuple[int, bytes]]:
    """The lines that begin in [start, end), beginning with the first at or after pivot and wrapping around."""
    with open(path, "rb") as f:
        first = line_start(f, pivot)
        yield from lines_between(f, first, end)
        yield from lines_between(f, line_start(f, start), first)


def line_start(f, position: int) -> int:
    """The offset of the first line that begins at or after ``position``."""
    if position == 0:
        return 0
    f.seek(position - 1)
    f.readline()  # the rest of the line holding byte position - 1
    return f.tell()


def lines_between(f, begin: int, stop: int) -> Iterator[tuple[int, bytes]]:
    f.seek(begin)
    offset = begin
    while offset < stop:
        line = f.readline()
        if not line:
            return
        yield offset, line
        offset += len(line)


def zst_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """Lines of a zstandard-compressed file with their line numbers (0-based): read from the start, streaming."""
    import io

    import zstandard

    try:
        with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
            for number, line in enumerate(io.BufferedReader(reader)):
                yield -1 - number, line  # negative: a line number, not a byte offset
    except zstandard.ZstdError as error:
        raise BadInput(f"{path}: not a readable zstandard file ({error})") from None


def line_number(path: str, location: int) -> int:
    """1-based line number of a byte offset (or of a line number encoded as -1 - n)."""
    if location < 0:
        return -location
    count = 1
    with open(path, "rb") as f:
        while location > 0:
            block = f.read(min(location, 2**20))
            if not block:
                break
            count += block.count(b"\n")
            location -= len(block)
    return count


def decode(line: bytes, path: str, location: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{path} line {line_number(path, location)}: not UTF-8 text") from None


def json_lines(path: str, lines: Iterator[tuple[int, bytes]], text_field: str) -> Iterator[tuple[int, str]]:
    for location, line in lines:
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except ValueError as error:
            raise BadInput(
                f"{path} line {line_number(path, location)}: not a JSON object ({str(error).splitlines()[0]})"
            ) from None
        if not isinstance(document, dict) or not isinstance(document.get(text_field), str):
            keys = ", ".join(document) if isinstance(document, dict) else type(document).__name__
            raise BadInput(
                f"{path} line {line_number(path, location)}: no text field '{text_field}' (found: {keys}); set --data.text_field"
            ) from None
        yield location, document[text_field]


def parquet_documents(part: Part, seed: int, text_field: str) -> Iterator[tuple[int, str]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(part.path)
    if text_field not in parquet.schema_arrow.names:
        raise BadInput(
            f"{part.path}: no column '{text_field}' (columns: {', '.join(parquet.schema_arrow.names)}); set --data.text_field"
        )
    rows = parquet.metadata.row_group(part.start).num_rows
    pivot = int(unit_random(seed, part.name, part.start) * rows)

    def rows_between(begin: int, stop: int) -> Iterator[tuple[int, str]]:
        row = 0
        for batch in parquet.iter_batches(row_groups=[part.start], columns=[text_field], batch_size=1024):
            for text in batch.column(0).to_pylist():
                if begin <= row < stop and isinstance(text, str):
                    yield row, text
                row += 1
                if row >= stop:
                    return

    yield from rows_between(pivot, rows)
    yield from rows_between(0, pivot)


# ---- tokenizing the sample (litdata.optimize runs tokenize_part once per part, in N worker processes) ----


def tokenize_part(
    part: Part, tokenizer: Tokenizer, split: str, seed: int, text_field: str, progress_dir: str
) -> Iterator[torch.Tensor]:
    """litdata's function: the part's tokens (part_tokens), with any error written to a file in progress_dir instead
    of raised. A worker that raises is ended by litdata with SIGTERM, which orphans the process each worker starts
    (litdata's file remover, waiting forever on its queue with a copy of the parent's memory); a worker that returns
    ends them. After an error every worker skips its remaining parts, and write_split reports it."""
    errors = Path(progress_dir)
    if any(errors.glob("error-*")):
        return
    try:
        yield from part_tokens(part, tokenizer, split, seed, text_field, progress_dir)
    except Exception as error:
        text = f"BadInput: {error}" if isinstance(error, BadInput) else traceback.format_exc()
        (errors / f"error-{os.getpid()}.partial").write_text(text)
        (errors / f"error-{os.getpid()}.partial").replace(errors / f"error-{os.getpid()}")


def part_tokens(
    part: Part, tokenizer: Tokenizer, split: str, seed: int, text_field: str, progress_dir: str
) -> Iterator[torch.Tensor]:
    """Yields the part's tokens of ``split`` in items of about ITEM_TOKENS. Validation takes the documents first,
    up to the part's share; training continues with the next ones up to its own share."""
    shares = {"val": part.val_tokens, "train": part.train_tokens}
    phase, taken, buffer, buffered = "val", 0, [], 0
    counter = WorkerProgress(progress_dir)
    for location, text in documents(part, seed, text_field):
        if not text.strip():
            continue
        while phase is not None and taken >= shares[phase]:
            phase, taken = ("train" if phase == "val" else None), 0
        if phase is None or (phase == "train" and split == "val"):
            break
        tokens = tokenizer.encode(text, eos=True)
        room = shares[phase] - taken
        if len(tokens) > room:  # the document that crosses the share: its first tokens and EOS; the rest is left out
            tokens = torch.cat([tokens[: room - 1], tokens[-1:]])
        taken += len(tokens)
        if phase == split:
            buffer.append(tokens)
            buffered += len(tokens)
            counter.add(1, len(tokens))
            if buffered >= ITEM_TOKENS:
                yield torch.cat(buffer)
                counter.write()
                buffer, buffered = [], 0
    if buffer:
        yield torch.cat(buffer)
    counter.write()


class WorkerProgress:
    """Documents and tokens this worker process has written, in a small file the main process sums for its bar."""

    totals = {"documents": 0, "tokens": 0}  # per process: a worker keeps its counts across parts

    def __init__(self, progress_dir: str) -> None:
        self.path = Path(progress_dir) / f"{os.getpid()}.json"

    def add(self, documents: int, tokens: int) -> None:
        self.totals["documents"] += documents
        self.totals["tokens"] += tokens

    def write(self) -> None:
        partial_path = self.path.with_suffix(".partial")
        partial_path.write_text(json.dumps(self.totals))
        partial_path.replace(self.path)


def read_progress(progress_dir: Path) -> dict:
    totals = {"documents": 0, "tokens": 0}
    for path in progress_dir.glob("*.json"):
        try:
            counts = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key in totals:
            totals[key] += counts[key]
    return totals


def write_split(
    parts: list[Part],
    split: str,
    tokenizer: Tokenizer,
    seed: int,
    text_field: str,
    staging: Path,
    workers: int,
    budget: int,
) -> dict:
    """Runs litdata.optimize over the parts for one split, with a progress bar of documents, tokens, tokens/s and ETA."""
    from litdata import optimize
    from litdata.streaming import TokensLoader

    progress_dir = staging / f"progress-{split}"
    progress_dir.mkdir()
    done = threading.Event()
    interactive = sys.stderr.isatty()
    started = time.time()

    def follow() -> None:
        # the bar starts with the first counts: by then litdata has forked its workers, none of which inherits a
        # lock this thread might hold
        bar = None
        while True:
            stop = done.wait(0.5 if interactive else 30)
            counts = read_progress(progress_dir)
            if bar is None and (counts["documents"] or stop):
                bar = tqdm(
                    total=budget,
                    desc=f"tokenizing {split}",
                    unit="tok",
                    unit_scale=True,
                    file=sys.stderr,
                    dynamic_ncols=True,
                    mininterval=0.5 if interactive else 30,
                )
                bar.start_t = started  # rates and ETA from the start of the split, not of the bar
            if bar is not None:
                bar.set_postfix_str(f"{counts['documents']:,} documents", refresh=False)
                bar.update(counts["tokens"] - bar.n)
            if stop:
                bar.close()
                return

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    try:
        optimize(
            fn=partial(
                tokenize_part,
                tokenizer=tokenizer,
                split=split,
                seed=seed,
                text_field=text_field,
                progress_dir=str(progress_dir),
            ),
            inputs=parts,
            weights=[part.size for part in parts],
            output_dir=str(staging / split),
            num_workers=workers,
            chunk_bytes="16MB",  # what a worker buffers before writing a chunk: its memory does not grow beyond this
            item_loader=TokensLoader(),  # no block size: the tokens are stored once, cut into blocks when loaded
            keep_data_ordered=True,  # a fixed slice of parts per worker: the same chunks for the same number of workers
            verbose=False,
            start_method="fork",  # spawn would import torch and litgpt again in every worker, for every split
        )
    finally:
        done.set()
        watcher.join()
    for error in sorted(progress_dir.glob("error-*")):
        text = error.read_text()
        if text.startswith("BadInput: "):
            fail(text.removeprefix("BadInput: "))
        raise RuntimeError(f"tokenizing {split} failed in a worker process:\n{text}")
    counts = read_progress(progress_dir)
    shutil.rmtree(progress_dir)
    return counts


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """SHA-256 of the tokenizer's full definition (vocabulary, merges, special tokens) and its BOS/EOS use."""
    if tokenizer.backend == "huggingface":
        definition = tokenizer.processor.to_str().encode()
    else:
        definition = tokenizer.processor.serialized_model_proto()
    extra = f"{tokenizer.bos_id}/{tokenizer.eos_id}/{tokenizer.use_bos}".encode()
    return hashlib.sha256(definition + extra).hexdigest()
