"""--strategy fsdp on two real CPU processes (FSDP2 over gloo, no mocks), checked against one process.

One FSDP run with a teacher (distillation; the teacher is sharded too) is stopped by SIGTERM, resumed, killed with
SIGKILL after a sharded step checkpoint, and resumed to its end; its logged losses and final weights are compared with
those of the same run in one process. The training data give an optimizer step the same sequences on 1 rank and on 2
(data_on_ranks.SameSequencesOnAnyRanks), so the runs must agree to float32 rounding. Its SIGTERM checkpoint is also
resumed by one process (torch.distributed.checkpoint redistributes the shards), and its consolidated final/ is read
by evaluate, export and `litgpt generate`.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import BIN, run_in_process
from litgpt_inheritune.cluster import PREEMPTED_EXIT_CODE
from test_pretrain import cli_args
from test_reliability import max_difference, wait_for_line

TESTS = Path(__file__).resolve().parent
STEPS = 6
SETTINGS = (
    "--data",
    "data_on_ranks.SameSequencesOnAnyRanks",
    "--train.max_steps",
    str(STEPS),
    "--train.save_interval",
    "2",
    "--keep_checkpoints",
    "2",
    "--train.log_interval",
    "1",
    "--train.micro_batch_size",
    "2",
)
FSDP = ("--devices", "2", "--strategy", "fsdp")
TOLERANCE = 1e-5  # float32: the ranks sum gradients in another order than one process


def command(target: Path, corpus: Path, out_dir: Path, teacher: Path, *extra: str) -> list[str]:
    args = cli_args(target, corpus, out_dir, *SETTINGS, "--distill.teacher_dir", str(teacher), *extra)
    del args[args.index("RedPajamaSample") - 1 : args.index("RedPajamaSample") + 1]  # --data is in SETTINGS
    return args


def launch(args: list[str]) -> subprocess.Popen:
    """The console script, in a session of its own (so that SIGKILL can reach every rank, as a lost node does)."""
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join([*os.environ.get("PYTHONPATH", "").split(os.pathsep), str(TESTS)]),
    }
    return subprocess.Popen(
        [str(BIN / args[0]), *args[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def losses(out_dir: Path) -> dict[int, dict]:
    """Logged loss, cross-entropy and KL by step, over every session of a run (a resumed step: its last value)."""
    rows = {}
    for path in sorted((out_dir / "logs" / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:])):
        with open(path) as f:
            for row in csv.DictReader(f):
                if row.get("loss"):
                    rows[int(row["step"])] = {key: float(row[key]) for key in ("loss", "ce_loss", "kl_loss")}
    return rows


def weights(out_dir: Path) -> dict:
    return torch.load(out_dir / "final" / "lit_model.pth", weights_only=True)


@pytest.fixture(scope="module")
def runs(tiny_target, tiny_references, jsonl_corpus, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fsdp")
    teacher = tiny_references["llama-gqa"]
    make = lambda out_dir, *extra: command(tiny_target, jsonl_corpus, out_dir, teacher, *extra)  # noqa: E731

    code, _, stderr = run_in_process(*make(root / "one")[2:])  # the reference: one process, no FSDP
    assert code == 0, stderr

    run = root / "fsdp"
    first = launch([*make(run), *FSDP])  # stopped by SIGTERM, as a cluster preempts a job
    wait_for_line(first, f"step 1/{STEPS}")
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate()
    assert first.returncode == PREEMPTED_EXIT_CODE, stderr
    stopped = sorted(run.glob("step-*"))[-1]
    assert f"Stopped by SIGTERM at step {int(stopped.name[5:])}; saved {stopped}" in stderr
    shutil.copytree(run, root / "two_to_one")

    second = launch([*make(run, "--resume", "auto"), *FSDP])  # resumed, then every rank killed after a checkpoint
    while not (run / "step-00000004").exists() and second.poll() is None:
        time.sleep(0.005)
    os.killpg(second.pid, signal.SIGKILL)
    stdout, stderr = second.communicate()
    assert f"Resuming from {stopped}" in stdout + stderr
    assert not (run / "final").exists(), "the run finished before it could be killed"

    third = launch([*make(run, "--resume", "auto"), *FSDP])  # resumed to the end
    stdout, stderr = third.communicate()
    assert third.returncode == 0, stderr
    return dict(
        root=root, run=run, one=root / "one", stopped=stopped, output=stdout + stderr, make=make, teacher=teacher
    )


def test_fsdp_run_stopped_killed_and_resumed_equals_one_process(runs):
    """(a) FSDP equals one process with the same global batch; (b) SIGKILL after a sharded checkpoint and (c) a
    SIGTERM preemption both resume exactly; (d) distillation with the teacher sharded gives the same losses."""
    assert f"Resuming from {runs['run'] / 'step-00000004'}" in runs["output"]
    assert "distributed_backend=gloo" in runs["output"]
    one, fsdp = losses(runs["one"]), losses(runs["run"])
    assert sorted(fsdp) == sorted(one) == list(range(1, STEPS + 1))
    for step in one:
        for key in ("loss", "ce_loss", "kl_loss"):
            assert fsdp[step][key] == pytest.approx(one[step][key], abs=TOLERANCE), (step, key)
    assert max_difference(weights(runs["one"]), weights(runs["run"])) <= TOLERANCE
    # step checkpoints are torch.distributed.checkpoint folders, pruned to the newest 2
    kept = sorted(p.name for p in runs["run"].glob("step-*"))
    assert kept == ["step-00000004", "step-00000006"]
    for name in kept:
        assert sorted(p.name for p in (runs["run"] / name / "lit_model.pth").iterdir()) == [
            ".metadata",
            "__0_0.distcp",
            "__1_0.distcp",
            "meta.pt",
        ]
    provenance = json.loads((runs["run"] / "step-00000006" / "provenance.json").read_text())
    assert provenance["fsdp"] is True and provenance["world_size"] == 2
    assert not list(runs["run"].glob(".*partial"))
