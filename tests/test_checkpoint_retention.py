"""--keep_checkpoints: only the newest N step checkpoints stay on disk, also across a kill and a resume."""

import signal
import subprocess
import time

from conftest import BIN, run_in_process
from litgpt_inheritune.train_state import prune_step_checkpoints
from test_pretrain import cli_args


def step_dirs(out_dir):
    return sorted(p.name for p in out_dir.glob("step-*"))


def test_keep_newest_checkpoints_across_a_kill_and_resume(tiny_target, jsonl_corpus, tmp_path):
    out_dir = tmp_path / "run"
    flags = (
        "--train.max_steps",
        "80",
        "--train.save_interval",
        "10",
        "--train.log_interval",
        "50",
        "--keep_checkpoints",
        "2",
    )
    command = cli_args(tiny_target, jsonl_corpus, out_dir, *flags)
    process = subprocess.Popen(
        [str(BIN / command[0]), *command[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # kill once step 30 is complete and the oldest is gone: a step's checkpoint is complete before the oldest is
    # deleted, so a kill in between (the moment step 30 appears) leaves keep + 1, which the next save prunes
    seen = set()
    while process.poll() is None:
        dirs = step_dirs(out_dir) if out_dir.exists() else []
        if "step-00000030" in dirs and len(dirs) <= 2:
            break
        if "step-00000030" not in dirs:
            seen.add(len(dirs))
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert max(seen) <= 2 and not (out_dir / "final").exists()
    kept = step_dirs(out_dir)
    assert len(kept) == 2 and kept[-1] >= "step-00000030"

    # the resume in this process (the kill needs the child process; an interpreter start costs seconds on 2 cores)
    code, stdout, stderr = run_in_process(*cli_args(tiny_target, jsonl_corpus, out_dir, *flags, "--resume", "auto")[2:])
    assert code == 0, stderr
    assert f"Resuming from {out_dir / kept[-1]}" in stdout + stderr
    assert step_dirs(out_dir) == ["step-00000070", "step-00000080"]
    assert (out_dir / "final" / "lit_model.pth").is_file()
    assert not [p.name for p in out_dir.iterdir() if p.name.startswith(".step")]  # no half-deleted or staged folders


def test_prune_keeps_the_newest_and_the_one_just_written(tmp_path):
    for step in (10, 20, 30, 40):
        (tmp_path / f"step-{step:08d}").mkdir()
        (tmp_path / f"step-{step:08d}" / "lit_model.pth").write_bytes(b"x")
    (tmp_path / "final").mkdir()
    deleted = prune_step_checkpoints(tmp_path, keep=2, newest=tmp_path / "step-00000040")
    assert [p.name for p in deleted] == ["step-00000010", "step-00000020"]
    assert step_dirs(tmp_path) == ["step-00000030", "step-00000040"] and (tmp_path / "final").is_dir()
    prune_step_checkpoints(tmp_path, keep=1, newest=tmp_path / "step-00000030")  # resumed from an older one
    assert step_dirs(tmp_path) == ["step-00000030"]


def test_keep_checkpoints_below_one_is_refused(tiny_target, jsonl_corpus, tmp_path):
    code, _, stderr = run_in_process(
        *cli_args(tiny_target, jsonl_corpus, tmp_path / "run", "--train.max_steps", "2", "--keep_checkpoints", "0")[2:]
    )
    assert code != 0 and "Traceback" not in stderr
    assert "--keep_checkpoints 0 must be at least 1" in stderr
    assert not (tmp_path / "run").exists()


def test_step_checkpoints_are_streamed_to_disk_not_buffered_in_memory(tiny_target, jsonl_corpus, tmp_path, monkeypatch):
    """Lightning's default writer serialises a checkpoint into RAM before writing it (a second copy of weights and
    optimizer states); pretrain's saves must not go through it."""
    import lightning.fabric.plugins.io.torch_io as torch_io
    import torch
    from litgpt.args import EvalArgs

    from litgpt_inheritune.pretrain import setup as pretrain
    from test_pretrain import data_module, train_args

    def buffered(*args, **kwargs):
        raise AssertionError("checkpoint serialised into memory")

    monkeypatch.setattr(torch_io, "_atomic_save", buffered)
    pretrain(
        tiny_target,
        out_dir=tmp_path / "run",
        data=data_module(jsonl_corpus),
        train=train_args(max_steps=2, save_interval=1),
        eval=EvalArgs(interval=1000, max_iters=1),
    )
    state = torch.load(tmp_path / "run" / "step-00000002" / "lit_model.pth", weights_only=True)
    assert state["step_count"] == 2 and state["optimizer"]["state"]
