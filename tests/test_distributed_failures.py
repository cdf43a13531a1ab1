"""Two CPU ranks (DDP over gloo): an error on one rank ends both processes with its message; uneven validation data
cannot leave one rank waiting for the other."""

import os
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
