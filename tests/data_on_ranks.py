"""Data modules for two-rank tests: the test's pretrain processes import them by class path (tests/ on PYTHONPATH)."""

import json
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset

from litgpt_inheritune.redpajama import RedPajamaSample


def rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


@dataclass
class UnevenValidation(RedPajamaSample):
    """RedPajamaSample whose validation split gives rank ``empty_rank`` no batch, as a split smaller than one batch
    per rank does."""

    empty_rank: int = 1

    def val_dataloader(self) -> DataLoader:
        if rank() == self.empty_rank:
            return DataLoader([], batch_size=self.batch_size)
        return super().val_dataloader()


class Unreadable(IterableDataset):
    """Training sequences of which the ``bad_item``-th cannot be read (a damaged shard on one node). Iterable, so
    Fabric adds no sampler: the loader keeps the length of the one it replaces."""

    def __init__(self, sequences: list, bad_item: int) -> None:
        self.sequences, self.bad_item = sequences, bad_item

    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self):
        for index, sequence in enumerate(self.sequences):
            if index == self.bad_item:
                raise OSError(f"shard of item {index} is unreadable")
            yield sequence


@dataclass
class FailsOnOneRank(RedPajamaSample):
    """RedPajamaSample whose training data cannot be read on rank ``failing_rank`` from its ``bad_batch``-th batch."""

    failing_rank: int = 1
    bad_batch: int = 3

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        if rank() != self.failing_rank:
            return loader
        sequences = [sequence for batch in loader for sequence in batch]
        return DataLoader(Unreadable(sequences, self.bad_batch * self.batch_size), batch_size=self.batch_size)


class Counted(IterableDataset):
    """Training sequences that append a line to ``log`` for each one read (how many a rank took, for the test)."""

    def __init__(self, sequences: list, log: str) -> None:
        self.sequences, self.log = sequences, log

    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self):
        for sequence in self.sequences:
            with open(self.log, "a") as f:
                f.write("1\n")
            yield sequence


@dataclass
class UnevenTraining(RedPajamaSample):
    """RedPajamaSample whose rank ``short_rank`` holds ``missing`` fewer training batches than the others (a dataset
    sharded by hand, unevenly); every rank counts the sequences it reads in ``log_dir``/rank-N.txt."""

    short_rank: int = 1
    missing: int = 3
    log_dir: str = "."

    def train_dataloader(self) -> DataLoader:
        sequences = [sequence for batch in super().train_dataloader() for sequence in batch]
        if rank() == self.short_rank:
            sequences = sequences[: len(sequences) - self.missing * self.batch_size]
        log = f"{self.log_dir}/rank-{rank()}.txt"
        return DataLoader(Counted(sequences, log), batch_size=self.batch_size)


class Interleaved(IterableDataset):
    """Sequence i of one stream on rank i mod the world size, from sequence ``start`` of the stream on."""

    def __init__(self, sequences: list) -> None:
        self.sequences, self.start = sequences, 0

    def __len__(self) -> int:
        return len(self.sequences) // world_size()

    def __iter__(self):
        yield from self.sequences[self.start + rank() :: world_size()]


class ResumableLoader(DataLoader):
    """A data loader whose position (sequences of the stream consumed by every rank together) is saved and
    restored, at any world size."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.yielded = 0

    def __iter__(self):
        for batch in super().__iter__():
            self.yielded += 1
            yield batch
        self.dataset.start, self.yielded = 0, 0  # the next epoch starts at the beginning

    def state_dict(self) -> dict:
        return {"sequences": self.dataset.start + self.yielded * self.batch_size * world_size()}

    def load_state_dict(self, state: dict) -> None:
        self.dataset.start, self.yielded = state["sequences"], 0


@dataclass
class SameSequencesOnAnyRanks(RedPajamaSample):
    """Training sequences that make an optimizer step hold the same sequences on 1 rank and on 2: the corpus's
    documents tokenized in order (EOS after each) and cut into windows, window i on rank i mod the world size, the
    position resumable at another world size. Validation as RedPajamaSample."""

    def train_dataloader(self) -> DataLoader:
        documents = [json.loads(line)["text"] for path in sorted(self.data_dir.glob("*.jsonl")) for line in open(path)]
        tokens = torch.cat([self.tokenizer.encode(text, eos=True) for text in documents])
        n = (len(tokens) - 1) // (self.seq_length - 1)
        windows = [tokens[i * (self.seq_length - 1) : i * (self.seq_length - 1) + self.seq_length] for i in range(n)]
        return ResumableLoader(Interleaved(windows), batch_size=self.batch_size)
