"""Steps the recipes share: progress lines, the Lee corpus's data module, the small training loop's arguments, and
the material (materials.py, beside the package, not in it: the cache, SmolLM2, the Lee corpus and its jsonl)."""

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from litgpt.args import TrainArgs

from litgpt_inheritune.redpajama import RedPajamaSample

sys.path.append(str(Path(__file__).resolve().parents[1]))  # materials.py: demo and test material, not in the package
from materials import DEFAULT_CACHE, lee_corpus, offline_tasks, smollm2_checkpoint, write_corpus  # noqa: E402, F401


def step(message: str) -> None:
    print(f"\n=== {message} [{time.strftime('%H:%M:%S')}]", file=sys.stderr, flush=True)


@dataclass
class ReorderedSample(RedPajamaSample):
    """RedPajamaSample whose training batches come in the order that ``order_seed`` shuffles them into; the sampled
    documents and the validation split stay those of ``seed``, so runs with several seeds share their held-out text."""

    order_seed: Optional[int] = None

    def train_dataloader(self):
        loader = super().train_dataloader()
        if self.order_seed is not None:
            loader.dataset.seed = self.order_seed  # litdata builds its shuffler from it at the first iteration
        return loader


def lee_data(
    data_dir: Path, cache_dir: Path, val_sequences: int, seq_len: int, seed: int, order_seed: Optional[int] = None
) -> RedPajamaSample:
    """All of the corpus: ``val_sequences`` sequences held out for validation, the rest for training. Without an
    ``order_seed`` it is the package's RedPajamaSample, so that a run's hyperparameters.yaml (and a model card made
    from it) names a class that ``litgpt inheritune pretrain --config`` finds outside this folder."""
    sample = dict(
        data_dir=data_dir,
        token_budget=10**9,
        val_tokens=val_sequences * (seq_len + 1),
        num_workers=0,
        cache_dir=cache_dir,
        seed=seed,
    )
    return RedPajamaSample(**sample) if order_seed is None else ReorderedSample(**sample, order_seed=order_seed)


def small_train_args(train_tokens: int, seq_len: int, warmup_steps: int, log_interval: int = 4) -> TrainArgs:
    """Global batch 8 (micro-batch 4), cosine to 3e-5, gradient clipping 1.0, no step checkpoints."""
    return TrainArgs(
        save_interval=None,
        log_interval=log_interval,
        global_batch_size=8,
        micro_batch_size=4,
        lr_warmup_steps=warmup_steps,
        max_tokens=train_tokens,
        max_seq_length=seq_len,
        max_norm=1.0,
        min_lr=3e-5,
    )
