"""Runs that survive a cluster: every fault injected for real on CPU (signals, a file size limit, damaged files, a
second run on the same folder, two DDP ranks), checked against an uninterrupted run."""

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from litgpt.args import EvalArgs

from conftest import BIN
from litgpt_inheritune.cluster import LOCK_FILE, PREEMPTED_EXIT_CODE
from litgpt_inheritune.pretrain import setup as pretrain
from test_pretrain import cli_args, data_module, train_args

STEPS = ("--train.max_steps", "12", "--train.save_interval", "4", "--train.log_interval", "1")


def final_weights(out_dir: Path) -> dict:
    return torch.load(out_dir / "final" / "lit_model.pth", weights_only=True)


def max_difference(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def start(command: list[str], env: dict = {}, **kwargs) -> subprocess.Popen:
    """The console script as a child process; ``env`` adds to this process's environment."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **env}
    return subprocess.Popen(
        [str(BIN / command[0]), *command[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def wait_for_line(process: subprocess.Popen, text: str) -> None:
    """Reads the process's stdout until a line holds ``text`` (the progress lines say which step is done)."""
    for line in process.stdout:
        if text in line:
            return
    raise AssertionError(f"the run ended before printing {text!r}: {process.wait()} {process.stderr.read()}")


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate()
    return process.returncode, stderr


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def same_run(tiny_target, jsonl_corpus, out_dir: Path, **kwargs) -> None:
    """In this process, the run that cli_args(..., *STEPS) starts (subprocesses cost seconds of imports each)."""
    pretrain(
        tiny_target,
        out_dir=out_dir,
        data=data_module(jsonl_corpus),
        eval=EvalArgs(interval=1000, max_iters=5),
        train=train_args(max_steps=12, save_interval=4, lr_warmup_steps=5),
        **kwargs,
    )


@pytest.fixture(scope="module")
def straight(tiny_target, jsonl_corpus, tmp_path_factory) -> Path:
    """An uninterrupted run: 12 steps, a checkpoint every 4."""
    out_dir = tmp_path_factory.mktemp("straight") / "run"
    same_run(tiny_target, jsonl_corpus, out_dir)
    return out_dir


def test_sigterm_stops_at_a_step_checkpoint_and_resume_is_exact_and_a_second_run_is_locked_out(
    tiny_target, jsonl_corpus, straight, tmp_path
):
    out_dir = tmp_path / "run"
    command = cli_args(tiny_target, jsonl_corpus, out_dir, *STEPS)
    first = start(command)
    wait_for_line(first, "step 2/12")
    first.send_signal(signal.SIGSTOP)  # hold it mid-run, lock taken, while a second run tries the same folder
    try:
        with pytest.raises(SystemExit) as second:
            same_run(tiny_target, jsonl_corpus, out_dir, resume="auto")
    finally:
        first.send_signal(signal.SIGTERM)  # delivered when it continues: the cluster's preemption notice
        first.send_signal(signal.SIGCONT)
    assert str(second.value).startswith(
        f"error: --out_dir {out_dir} is in use by another run (host {socket.gethostname()}, PID {first.pid},"
    )

    code, stderr = finish(first)
    assert code == PREEMPTED_EXIT_CODE, stderr
    stopped = sorted(p.name for p in out_dir.glob("step-*"))[-1]
    step = int(stopped.split("-")[1])
    assert 2 <= step < 12 and not (out_dir / "final").exists()
    assert (
        f"Stopped by SIGTERM at step {step}; saved {out_dir / stopped}. To continue, run the same command with --resume auto"
        in stderr
    )
    assert json.loads((out_dir / stopped / "provenance.json").read_text())["step"] == step
    # the lock file still names the process that is gone; it does not block the next run
    assert f"PID {first.pid}," in (out_dir / LOCK_FILE).read_text()

    same_run(tiny_target, jsonl_corpus, out_dir, resume="auto")
    assert max_difference(final_weights(straight), final_weights(out_dir)) == 0.0
    assert f"PID {os.getpid()}," in (out_dir / LOCK_FILE).read_text()


def test_sigusr1_to_one_ddp_rank_stops_both_at_the_same_step(tiny_target, jsonl_corpus, tmp_path):
    """SLURM's --signal reaches rank 1 only: both ranks agree to stop at the same step (otherwise one would wait in
    the checkpoint's barrier while the other trains on), write one checkpoint and exit: 75 from the launched process."""
    ddp = (
        "--devices",
        "2",
        "--train.micro_batch_size",
        "2",
        "--train.max_steps",
        "8",
        "--train.save_interval",
        "100",
        "--train.log_interval",
        "1",
    )
    out_dir = tmp_path / "run"
    command = cli_args(tiny_target, jsonl_corpus, out_dir, *ddp)
    first = start(command)
    wait_for_line(first, "step 2/8")
    (rank_1,) = children(first.pid)
    os.kill(rank_1, signal.SIGUSR1)
    code, stderr = finish(first)
    assert code == PREEMPTED_EXIT_CODE, stderr
    (stopped,) = out_dir.glob("step-*")
    step = int(stopped.name.split("-")[1])
    assert 2 <= step < 8 and f"Stopped by SIGUSR1 at step {step}" in stderr
    saved = torch.load(stopped / "lit_model.pth", weights_only=True)
    assert saved["step_count"] == step and saved["train_dataloader"]["dataset"]["world_size"] == 2


def test_max_time_writes_a_step_checkpoint_and_the_job_continues_where_it_stopped(
    tiny_target, jsonl_corpus, tmp_path, monkeypatch
):
    """--train.max_time reached: a step checkpoint before final/; the same command with --resume auto goes on."""
    args = dict(data=data_module(jsonl_corpus), eval=EvalArgs(interval=1000, max_iters=2, final_validation=False))
    pretrain(tiny_target, out_dir=tmp_path / "straight", train=train_args(max_steps=7, save_interval=100), **args)

    # the stop check's clock advances one second each time it is read: a job of max_time 3 s makes two steps
    clock = iter(range(10**6))
    monkeypatch.setattr("litgpt_inheritune.cluster.time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    limited = train_args(max_steps=7, save_interval=100, max_time=3.0)
    jobs = []
    while not jobs or jobs[-1] < 7:
        pretrain(tiny_target, out_dir=tmp_path / "limited", resume="auto", train=limited, **args)
        jobs.append(json.loads((tmp_path / "limited" / "final" / "provenance.json").read_text())["step"])
        assert (tmp_path / "limited" / f"step-{jobs[-1]:08d}").is_dir() or jobs[-1] == 7
    assert jobs == [2, 4, 6, 7]
    assert max_difference(final_weights(tmp_path / "straight"), final_weights(tmp_path / "limited")) == 0.0


def test_full_disk_keeps_the_previous_checkpoint_and_says_how_much_is_needed(
    tiny_target, jsonl_corpus, straight, tmp_path
):
    """A file size limit (RLIMIT_FSIZE, in the child only) makes the write of step 8 fail after step 4."""
    out_dir = tmp_path / "run"
    shutil.copytree(straight, out_dir)
    for name in ("final", "step-00000008", "step-00000012"):  # as a run killed after step 4 leaves its folder
        shutil.rmtree(out_dir / name)
    needed = (straight / "step-00000008" / "lit_model.pth").stat().st_size
    limit = needed // 2

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing

    process = start([*cli_args(tiny_target, jsonl_corpus, out_dir, *STEPS), "--resume", "auto"], preexec_fn=small_files)
    code, stderr = finish(process)
    assert code == 1 and "Traceback" not in stderr, stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: the disk is full: writing {out_dir / 'step-00000008'} failed")
    assert f"file size limit (ulimit -f) {limit:,} bytes" in message
    estimate = int(message.split("needs about ")[1].split(" bytes")[0].replace(",", ""))
    assert 0.9 * needed <= estimate <= needed  # the tensors' bytes; the file adds a little zip framing
    assert "Kept step-00000004" in message
    assert sorted(p.name for p in out_dir.iterdir() if p.name.startswith((".step", "step", "final"))) == [
        "step-00000004"
    ]
    assert (out_dir / "step-00000004" / "lit_model.pth").read_bytes() == (
        straight / "step-00000004" / "lit_model.pth"
    ).read_bytes()


def test_damaged_checkpoints_are_named_and_resumed_from_only_when_asked(tiny_target, jsonl_corpus, straight, tmp_path):
    out_dir = tmp_path / "run"
    shutil.copytree(straight, out_dir)
    shutil.rmtree(out_dir / "final")
    newest = out_dir / "step-00000012" / "lit_model.pth"
    os.truncate(newest, newest.stat().st_size - 1000)
    altered = out_dir / "step-00000008" / "lit_model.pth"
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte inside a tensor: torch.load would not notice
    altered.write_bytes(bytes(data))

    def refused(resume) -> str:
        with pytest.raises(SystemExit) as error:
            same_run(tiny_target, jsonl_corpus, out_dir, resume=resume)
        assert "\n" not in str(error.value)
        return str(error.value)

    message = refused("auto")
    assert message.startswith(f"error: checkpoint {out_dir / 'step-00000012'} is damaged: lit_model.pth has")
    assert "(truncated or overwritten)" in message
    # the directory check is cheap: step 8 looks complete; reading it all (when it is chosen) finds the altered byte
    assert (
        f"the newest complete earlier checkpoint is {out_dir / 'step-00000008'}: resume from it with --resume"
        in message
    )
    message = refused(str(out_dir / "step-00000008"))
    assert "do not match their CRC-32 (altered on disk)" in message
    assert f"resume from it with --resume {out_dir / 'step-00000004'}" in message
    assert not (out_dir / "final").exists() and not list(out_dir.glob(".*partial"))

    same_run(tiny_target, jsonl_corpus, out_dir, resume=out_dir / "step-00000004")
    assert max_difference(final_weights(straight), final_weights(out_dir)) == 0.0
    assert (
        json.loads((out_dir / "step-00000012" / "provenance.json").read_text())["files"]["lit_model.pth"]["size_bytes"]
        == newest.stat().st_size
    )
