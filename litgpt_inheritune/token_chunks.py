"""Tokenizing sampled parts into litdata token chunks: litdata.optimize runs ``tokenize_part`` once per part, in N
worker processes, with a progress bar of documents, tokens, tokens/s and ETA. Parts are independent, so the workers
write the same tokens whatever their number."""

import json
import os
import shutil
import sys
import threading
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Iterator

import torch
from litgpt.tokenizer import Tokenizer
from tqdm import tqdm

from litgpt_inheritune.documents import BadInput, Part, documents

ITEM_TOKENS = 2**20  # tokens per item handed to litdata: no worker holds more than this plus one document


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
    """Runs litdata.optimize over the parts for one split, with a progress bar of documents, tokens, tokens/s and ETA;
    a bad document in any worker raises BadInput here."""
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
            raise BadInput(text.removeprefix("BadInput: "))
        raise RuntimeError(f"tokenizing {split} failed in a worker process:\n{text}")
    counts = read_progress(progress_dir)
    shutil.rmtree(progress_dir)
    return counts
