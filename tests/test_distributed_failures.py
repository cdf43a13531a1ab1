"""Two CPU ranks (DDP over gloo): an error on one rank ends both processes with its message; uneven validation data
cannot leave one rank waiting for the other, nor can uneven training data."""

import os
import re
import subprocess
from pathlib import Path

from conftest import BIN
from test_pretrain import cli_args

TESTS = Path(__file__).resolve().parent
# Before each rank posted its failure, the other waited in a collective for torch.distributed's 30-minute timeout.
TIMEOUT = 240


def run_two_ranks(
    target: Path, corpus: Path, out_dir: Path, data_class: str, *extra: str
) -> subprocess.CompletedProcess:
    args = cli_args(
        target,
        corpus,
        out_dir,
        "--devices",
        "2",
        "--train.micro_batch_size",
        "2",
        "--train.max_steps",
        "6",
        "--train.save_interval",
        "1000",
        *extra,
    )
    args[args.index("RedPajamaSample")] = f"data_on_ranks.{data_class}"
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join([*os.environ.get("PYTHONPATH", "").split(os.pathsep), str(TESTS)]),
    }
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, timeout=TIMEOUT)


def test_uneven_validation_data_ends_every_rank_with_one_message(tiny_target, jsonl_corpus, tmp_path):
    """Rank 1 holds no validation batch, rank 0 several: both agree there is none on every rank and stop with the
    same one-line error (before, rank 1 failed alone and rank 0 waited in the all-reduce of the loss)."""
    result = run_two_ranks(
        tiny_target, jsonl_corpus, tmp_path / "out", "UnevenValidation", "--eval.initial_validation", "true"
    )
    assert result.returncode != 0
    assert "error: the validation data holds less than one batch on at least one of the 2 ranks" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "final").exists()


def test_an_error_on_one_rank_ends_every_rank_with_its_message(tiny_target, jsonl_corpus, tmp_path):
    """Rank 0 cannot read a training batch at step 2 while rank 1 goes on into the gradient all-reduce: rank 0 prints
    its error, rank 1 says it stopped because of it, the command exits non-zero."""
    result = run_two_ranks(
        tiny_target,
        jsonl_corpus,
        tmp_path / "out",
        "FailsOnOneRank",
        "--data.failing_rank",
        "0",
        "--data.bad_batch",
        "3",
    )
    assert result.returncode != 0
    assert "OSError: shard of item 6 is unreadable" in result.stderr
    assert "rank 1 stopped because rank 0 failed: OSError: shard of item 6 is unreadable" in result.stderr
    assert not (tmp_path / "out" / "final").exists()


def test_uneven_training_data_gives_every_rank_the_same_steps(tiny_target, jsonl_corpus, tmp_path):
    """Rank 1 holds 3 training batches fewer than rank 0: both read the smaller count in each of 2 epochs and end
    together (before, each rank counted its own steps per epoch and rank 0 went on alone into a gradient all-reduce)."""
    out_dir = tmp_path / "out"
    result = run_two_ranks(
        tiny_target,
        jsonl_corpus,
        out_dir,
        "UnevenTraining",
        "--data.log_dir",
        str(tmp_path),
        "--data.token_budget",
        "4000",
        "--train.epochs",
        "2",
        "--train.max_steps",
        "1000",
        "--train.log_interval",
        "1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    read = [len((tmp_path / f"rank-{rank}.txt").read_text().splitlines()) for rank in (0, 1)]
    held = re.search(r"the 2 ranks hold ([\d,]+) to ([\d,]+) training batches", result.stderr)
    assert held, result.stderr[-3000:]
    fewest, most = int(held[1]), int(held[2])
    assert most == fewest + 3
    # global batch 8 = 2 ranks x 2 micro-batches of 2: 2 batches per step, so an odd count leaves one batch out
    steps_per_epoch = fewest // 2
    assert f"{steps_per_epoch} steps per epoch" in result.stdout
    # each rank read the same 2 x used batches of 2 sequences for its steps, plus the rest of its first pass, read to
    # end that epoch and dropped (3 batches more on rank 0, and the odd one out on both)
    used = 2 * steps_per_epoch
    assert read == [2 * (most + used), 2 * (fewest + used)]
    metrics = (out_dir / "logs" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    steps = [row.split(",")[header.index("step")] for row in metrics[1:]]
    assert max(int(float(step)) for step in steps if step) == 2 * steps_per_epoch
    assert (out_dir / "final" / "lit_model.pth").is_file()
