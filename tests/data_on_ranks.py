"""Data modules for two-rank tests: the test's pretrain processes import them by class path (tests/ on PYTHONPATH)."""

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset

from litgpt_inheritune.redpajama import RedPajamaSample


def rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


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


@dataclass
class OneStream(RedPajamaSample):
    """RedPajamaSample whose training sequences form one stream whatever the number of ranks (litdata's canonical
    stream of a single node), so that runs on 1 and on 2 ranks see the same sequences in each optimizer step."""

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        loader.dataset.num_canonical_nodes = 1
        return loader
