"""--strategy fsdp on two real CPU processes (FSDP2 over gloo, no mocks), checked against one process.

One FSDP run with a teacher (distillation; the teacher is sharded too) is stopped by SIGTERM after a sharded step
checkpoint, resumed writing its checkpoints as one file (--fsdp_state_dict full), killed with SIGKILL after one, and
resumed to its end; its logged losses and final weights are compared with those of the same run in one process. The training data give an optimizer step the same sequences on 1 rank and on 2
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

from conftest import run_cli, run_in_process
from litgpt_inheritune.cluster import PREEMPTED_EXIT_CODE
from test_pretrain import cli_args
from test_reliability import max_difference, start, wait_for_line

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
    "--train.max_norm",
    "0.1",  # below this tiny model's gradient norms (0.41 on random tokens): clipping over every shard acts
)
FSDP = ("--devices", "2", "--strategy", "fsdp")
TOLERANCE = 1e-5  # float32: the ranks sum gradients in another order than one process


def command(target: Path, corpus: Path, out_dir: Path, teacher: Path, *extra: str) -> list[str]:
    args = cli_args(target, corpus, out_dir, *SETTINGS, "--distill.teacher_dir", str(teacher), *extra)
    del args[args.index("RedPajamaSample") - 1 : args.index("RedPajamaSample") + 1]  # --data is in SETTINGS
    return args


def launch(args: list[str]) -> subprocess.Popen:
    """The console script, in a session of its own (so that SIGKILL can reach every rank, as a lost node does)."""
    pythonpath = os.pathsep.join([*os.environ.get("PYTHONPATH", "").split(os.pathsep), str(TESTS)])
    return start(args, env={"PYTHONPATH": pythonpath}, start_new_session=True)


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

    # resumed, writing its checkpoints as one file (--fsdp_state_dict full), then every rank killed after one
    second = launch([*make(run, "--resume", "auto", "--fsdp_state_dict", "full"), *FSDP])
    while not (run / "step-00000004").exists() and second.poll() is None:
        time.sleep(0.005)
    os.killpg(second.pid, signal.SIGKILL)
    stdout, stderr = second.communicate()
    assert f"Resuming from {stopped}" in stdout + stderr
    assert not (run / "final").exists(), "the run finished before it could be killed"

    third = launch([*make(run, "--resume", "auto"), *FSDP])  # resumed to the end, sharded checkpoints again
    stdout, stderr = third.communicate()
    assert third.returncode == 0, stderr
    return dict(
        root=root, run=run, one=root / "one", stopped=stopped, output=stdout + stderr, make=make, teacher=teacher
    )


def test_fsdp_run_stopped_killed_and_resumed_equals_one_process(runs):
    """(a) FSDP equals one process with the same global batch; (b) SIGKILL after a checkpoint and (c) a SIGTERM
    preemption both resume exactly, from sharded and from gathered checkpoints; (d) distillation with the teacher
    sharded gives the same losses."""
    assert f"Resuming from {runs['run'] / 'step-00000004'}" in runs["output"]
    assert "distributed_backend=gloo" in runs["output"]
    one, fsdp = losses(runs["one"]), losses(runs["run"])
    assert sorted(fsdp) == sorted(one) == list(range(1, STEPS + 1))
    for step in one:
        for key in ("loss", "ce_loss", "kl_loss"):
            assert fsdp[step][key] == pytest.approx(one[step][key], abs=TOLERANCE), (step, key)
    assert max_difference(weights(runs["one"]), weights(runs["run"])) <= TOLERANCE
    # pruned to the newest 2: step 4 one file gathered on rank 0, step 6 a torch.distributed.checkpoint folder
    kept = sorted(p.name for p in runs["run"].glob("step-*"))
    assert kept == ["step-00000004", "step-00000006"]
    assert set(torch.load(runs["run"] / "step-00000004" / "lit_model.pth", weights_only=True)) == {
        "model", "optimizer", "train_dataloader", "iter_num", "step_count", "epoch", "rng"
    }  # fmt: skip
    assert sorted(p.name for p in (runs["run"] / "step-00000006" / "lit_model.pth").iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "meta.pt",
    ]
    for name in kept:
        provenance = json.loads((runs["run"] / name / "provenance.json").read_text())
        assert provenance["fsdp"] is True and provenance["world_size"] == 2
    assert not list(runs["run"].glob(".*partial"))


def test_a_sharded_checkpoint_resumes_in_one_process_and_only_under_fsdp(runs):
    """(g) The SIGTERM checkpoint of 2 processes, resumed by 1: torch.distributed.checkpoint redistributes the shards,
    the data loader's position counts sequences of all ranks, and the run ends at the weights of the uninterrupted one; without FSDP the
    resume is refused in one line."""
    out_dir = runs["root"] / "two_to_one"
    args = runs["make"](out_dir, "--resume", "auto")[2:]
    code, _, stderr = run_in_process(*args, "--devices", "1")
    assert code == 1
    assert stderr.strip().splitlines() == [
        f"error: --resume {out_dir / runs['stopped'].name} was written by FSDP on 2 processes;"
        " resume it with --strategy fsdp (with any number of processes: its shards are redistributed)"
    ]
    environment = dict(os.environ)  # Fabric sets MASTER_PORT, LOCAL_RANK, ... here; later launches must not see them
    try:
        code, stdout, stderr = run_in_process(*args, "--devices", "1", "--strategy", "fsdp")
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environment)
    assert code == 0, stderr
    assert "1 ranks" in stdout + stderr
    assert max_difference(weights(runs["one"]), weights(out_dir)) <= TOLERANCE


def test_damaged_sharded_checkpoints_are_named_and_never_used(runs, tmp_path):
    """A shard cut short or missing, or unreadable metadata: --resume names the folder and the damage in one line."""
    from litgpt_inheritune.train_state import find_resume_path

    for damage, expected in (
        (
            lambda folder: os.truncate(folder / "__1_0.distcp", 100),
            "lit_model.pth/__1_0.distcp has 100 bytes, fewer than",
        ),
        (lambda folder: (folder / "__0_0.distcp").unlink(), "lit_model.pth/__0_0.distcp is missing"),
        (lambda folder: (folder / ".metadata").write_bytes(b"not a pickle"), "lit_model.pth/.metadata is unreadable"),
    ):
        out_dir = tmp_path / "run"
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.copytree(runs["run"], out_dir, ignore=shutil.ignore_patterns("final", "logs"))
        damage(out_dir / "step-00000006" / "lit_model.pth")
        with pytest.raises(SystemExit) as refused:
            find_resume_path("auto", out_dir, runs["run"])
        message = str(refused.value)
        assert message.startswith(f"error: checkpoint {out_dir / 'step-00000006'} is damaged: ") and "\n" not in message
        assert expected in message
        assert f"resume from it with --resume {out_dir / 'step-00000004'}" in message


def test_consolidated_final_checkpoint_serves_evaluate_export_and_litgpt_generate(runs, offline_tasks, tmp_path):
    """(e) final/ is one plain state dict (the keys and shapes of the checkpoint trained), which evaluate, export
    (transformers then gives litgpt's logits) and `litgpt generate` read."""
    from litgpt.config import Config
    from litgpt.model import GPT
    from transformers import AutoModelForCausalLM

    final = runs["run"] / "final"
    state_dict = weights(runs["run"])
    with torch.device("meta"):
        model = GPT(Config.from_file(final / "model_config.yaml"))
    assert {k: v.shape for k, v in state_dict.items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert json.loads((final / "provenance.json").read_text())["fsdp"] is True

    code, _, stderr = run_in_process(
        "evaluate", str(final), "--tasks", "piqa_offline", "--include_path", str(offline_tasks), "--limit", "4",
        "--out_dir", str(tmp_path / "eval"), "--paper", "false",
    )  # fmt: skip
    assert code == 0, stderr
    assert "piqa_offline" in json.loads((tmp_path / "eval" / "results.json").read_text())["results"]

    code, _, stderr = run_in_process("export", str(final), "--out_dir", str(tmp_path / "hf"), "--dtype", "float32")
    assert code == 0, stderr
    model = GPT(Config.from_file(final / "model_config.yaml"))
    model.load_state_dict(state_dict)
    idx = torch.randint(0, 320, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
        torch.testing.assert_close(hf(idx).logits, model.eval()(idx), rtol=0, atol=1e-4)

    result = run_cli("litgpt", "generate", str(final), "--prompt", "the early", "--max_new_tokens", "4", check=True)
    assert result.stdout.strip().splitlines()[-1].startswith("the early")
