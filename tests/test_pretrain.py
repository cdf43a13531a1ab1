"""`litgpt inheritune pretrain` and the RedPajamaSample data module, on a tiny inherited model and a jsonl corpus."""

import csv
import math
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from litgpt.args import EvalArgs, LogArgs, TrainArgs

from conftest import BIN, run_cli, run_in_process, write_jsonl_corpus
from litgpt_inheritune.pretrain import setup as pretrain
from litgpt_inheritune.pretrain import total_steps
from litgpt_inheritune.redpajama import RedPajamaSample

SEQ = 32


def train_args(**overrides) -> TrainArgs:
    values = dict(
        save_interval=None,
        log_interval=1,
        global_batch_size=8,
        micro_batch_size=4,
        lr_warmup_steps=2,
        max_norm=1.0,
        min_lr=3e-5,
        max_seq_length=SEQ,
    )
    values.update(overrides)
    return TrainArgs(**values)


def data_module(corpus: Path, **overrides) -> RedPajamaSample:
    values = dict(data_dir=corpus, token_budget=20_000, val_tokens=2_000, num_workers=0)
    values.update(overrides)
    return RedPajamaSample(**values)


def metrics(out_dir: Path) -> list[dict]:
    with open(out_dir / "logs" / "csv" / "version_0" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def cli_args(target: Path, corpus: Path, out_dir: Path, *extra: str) -> list[str]:
    return [
        "litgpt",
        "inheritune",
        "pretrain",
        str(target),
        "--out_dir",
        str(out_dir),
        "--data",
        "RedPajamaSample",
        "--data.data_dir",
        str(corpus),
        "--data.token_budget",
        "20000",
        "--data.val_tokens",
        "2000",
        "--data.num_workers",
        "0",
        "--train.max_seq_length",
        str(SEQ),
        "--train.global_batch_size",
        "8",
        "--train.micro_batch_size",
        "4",
        "--train.lr_warmup_steps",
        "5",
        "--eval.interval",
        "1000",
        "--eval.max_iters",
        "5",
        *extra,
    ]


def test_epochs_over_the_token_budget_and_a_plain_final_checkpoint(tiny_target, jsonl_corpus, tmp_path):
    data = data_module(jsonl_corpus)
    out_dir = tmp_path / "run"
    pretrain(
        tiny_target,
        out_dir=out_dir,
        data=data,
        train=train_args(epochs=2),
        eval=EvalArgs(interval=10, max_iters=5, initial_validation=True),
    )

    # steps: 2 epochs of (train tokens // (SEQ + 1)) blocks, in micro-batches of 4, 2 micro-batches per step
    manifest = data.manifest()
    steps_per_epoch = manifest["train"]["tokens"] // (SEQ + 1) // 4 // 2
    rows = metrics(out_dir)
    train_rows = [r for r in rows if r["loss"]]
    assert [int(float(r["step"])) for r in train_rows] == list(range(1, 2 * steps_per_epoch + 1))
    assert float(train_rows[-1]["epoch"]) == 1
    val_losses = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert len(val_losses) == 1 + (2 * steps_per_epoch - 1) // 10 + 1  # initial, every 10 steps, final
    assert val_losses[-1] < val_losses[0] - 0.3  # it learns the corpus
    assert all(float(r["tokens_per_sec"]) > 0 for r in train_rows)
    lrs = [float(r["learning_rate"]) for r in train_rows]
    assert lrs[0] == pytest.approx(3e-4 / 2) and max(lrs) == pytest.approx(3e-4) and lrs[-1] == pytest.approx(3e-5)

    final = out_dir / "final"
    state_dict = torch.load(final / "lit_model.pth", weights_only=True)
    reference = torch.load(tiny_target / "lit_model.pth", weights_only=True)
    assert set(state_dict) == set(reference)  # a bare state dict, as `litgpt download` writes
    assert not torch.equal(state_dict["transformer.h.0.attn.qkv.weight"], reference["transformer.h.0.attn.qkv.weight"])
    assert yaml.safe_load((final / "model_config.yaml").read_text()) == yaml.safe_load(
        (tiny_target / "model_config.yaml").read_text()
    )
    assert (final / "tokenizer.json").read_bytes() == (tiny_target / "tokenizer.json").read_bytes()
    hparams = yaml.safe_load((final / "hyperparameters.yaml").read_text())
    assert hparams["train"]["epochs"] == 2 and hparams["data"]["init_args"]["token_budget"] == 20_000
    assert hparams["optimizer"]["init_args"] == {"lr": 3e-4, "weight_decay": 0.1, "betas": [0.9, 0.95]}
    provenance = json.loads((final / "provenance.json").read_text())
    assert provenance["step"] == 2 * steps_per_epoch and provenance["checkpoint_dir"] == str(tiny_target.resolve())


def test_final_checkpoint_works_with_litgpt_and_init(tiny_target, jsonl_corpus, tmp_path):
    out_dir = tmp_path / "run"
    pretrain(
        tiny_target,
        out_dir=out_dir,
        data=data_module(jsonl_corpus),
        train=train_args(max_steps=3, save_interval=3),
        eval=EvalArgs(interval=100, max_iters=2),
    )
    result = run_cli(
        "litgpt", "generate", str(out_dir / "final"), "--prompt", "the early", "--max_new_tokens", "4", check=True
    )
    assert result.stdout.strip().splitlines()[-1].startswith("the early")
    # a step checkpoint holds the whole training state, and our init reads its model
    step = torch.load(out_dir / "step-00000003" / "lit_model.pth", weights_only=True)
    assert {"model", "optimizer", "train_dataloader", "iter_num", "step_count", "epoch", "rng"} <= set(step)
    assert step["step_count"] == 3 and step["iter_num"] == 6
    from litgpt_inheritune.init import main as init

    grown = init(out_dir / "step-00000003", out_dir=tmp_path / "two", n_layers=2)
    assert torch.equal(
        torch.load(grown / "lit_model.pth", weights_only=True)["transformer.h.1.mlp.fc_1.weight"],
        step["model"]["transformer.h.1.mlp.fc_1.weight"],
    )


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (dict(epochs=3), 30),
        (dict(max_tokens=2560), 10),  # 2560 tokens / (8 x 32 per step)
        (dict(max_steps=7), 7),
        (dict(epochs=3, max_tokens=2560, max_steps=12), 10),
        (dict(epochs=1, max_steps=12), 10),
        (dict(max_time=5.0), 10),
    ],
)
def test_total_steps_is_the_first_limit(limits, expected):
    assert total_steps(train_args(**limits), steps_per_epoch=10, tokens_per_step=8 * SEQ) == expected


def test_max_tokens_and_max_steps_stop_the_run(tiny_target, jsonl_corpus, tmp_path):
    pretrain(
        tiny_target,
        out_dir=tmp_path / "a",
        data=data_module(jsonl_corpus),
        train=train_args(max_tokens=5 * 8 * SEQ),
        eval=EvalArgs(final_validation=False),
    )
    assert max(int(float(r["step"])) for r in metrics(tmp_path / "a")) == 5
    pretrain(
        tiny_target,
        out_dir=tmp_path / "b",
        data=data_module(jsonl_corpus),
        train=train_args(max_steps=4, epochs=5),
        eval=EvalArgs(final_validation=False),
    )
    assert max(int(float(r["step"])) for r in metrics(tmp_path / "b")) == 4


def test_random_initialisation_baseline(tiny_target, jsonl_corpus, tmp_path):
    pretrain(
        tiny_target,
        out_dir=tmp_path / "r",
        initialize="random",
        data=data_module(jsonl_corpus),
        train=train_args(max_steps=1, lr_warmup_steps=1, min_lr=0.0),
        eval=EvalArgs(final_validation=False),
    )
    # litgpt's warm-up: optimizer step k of w runs at lr_max * k / w (1-based k, not 0 at the first step), so the
    # only step of a 1-step warm-up runs at the full 3e-4 of the default AdamW
    (row,) = metrics(tmp_path / "r")
    assert int(row["step"]) == 1 and float(row["learning_rate"]) == 3e-4 * 1 / 1
    trained = torch.load(tmp_path / "r" / "final" / "lit_model.pth", weights_only=True)
    inherited = torch.load(tiny_target / "lit_model.pth", weights_only=True)
    # one AdamW step moves each weight by about lr (3e-4): the weights are still the random initialisation, unrelated
    # to the checkpoint's
    weight = trained["transformer.h.0.attn.qkv.weight"]
    assert not torch.allclose(weight, inherited["transformer.h.0.attn.qkv.weight"], atol=1e-2)
    # litgpt's GPT-NeoX init, std (2 / 5 / n_embd) ** 0.5 with n_embd 32; the sample std of these 64 x 32 draws is
    # within 5% of it (3 standard errors)
    assert weight.shape == (64, 32)
    assert weight.std().item() == pytest.approx((2 / 5 / 32) ** 0.5, rel=0.05)


def test_sigkill_and_resume_gives_the_same_weights(tiny_target, jsonl_corpus, tmp_path):
    """A run killed with SIGKILL right after a checkpoint and resumed with --resume auto ends where an uninterrupted run ends.
    The killed run is the console script; the straight and the resumed run the same command line in this process
    (an interpreter start costs seconds on 2 cores)."""
    common = ("--train.max_steps", "60", "--train.save_interval", "10", "--train.log_interval", "50")
    code, _, stderr = run_in_process(*cli_args(tiny_target, jsonl_corpus, tmp_path / "straight", *common)[2:])
    assert code == 0, stderr

    command = cli_args(tiny_target, jsonl_corpus, tmp_path / "killed", *common)
    process = subprocess.Popen(
        [str(BIN / command[0]), *command[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while not (tmp_path / "killed" / "step-00000020").exists() and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "final").exists(), "the run finished before it could be killed"
    completed = sorted(p.name for p in (tmp_path / "killed").glob("step-*"))
    assert completed[-1] < "step-00000060"

    code, stdout, stderr = run_in_process(
        *cli_args(tiny_target, jsonl_corpus, tmp_path / "killed", *common, "--resume", "auto")[2:]
    )
    assert code == 0, stderr
    assert f"Resuming from {tmp_path / 'killed' / completed[-1]}" in stdout + stderr
    straight = torch.load(tmp_path / "straight" / "final" / "lit_model.pth", weights_only=True)
    after_kill = torch.load(tmp_path / "killed" / "final" / "lit_model.pth", weights_only=True)
    assert max((straight[k] - after_kill[k]).abs().max().item() for k in straight) <= 1e-4
    assert not list((tmp_path / "killed").glob(".*partial"))


def test_two_processes_ddp_on_cpu(tiny_target, jsonl_corpus, tmp_path):
    """--devices 2 on a CPU: two processes, DDP over gloo, each rank its own shard of the data."""
    result = run_cli(
        *cli_args(
            tiny_target,
            jsonl_corpus,
            tmp_path / "ddp",
            "--devices",
            "2",
            "--train.micro_batch_size",
            "2",
            "--train.max_steps",
            "6",
            "--train.save_interval",
            "3",
            "--train.log_interval",
            "1",
            "--data.cache_dir",
            str(tmp_path / "cache"),
        ),
        check=True,
    )
    output = result.stdout + result.stderr
    # the data are prepared once, on rank 0, while the other rank says that it waits
    assert (
        "Preparing the data on rank 0 while the other 1 ranks wait" in output
        and output.count(f"Preparing {jsonl_corpus}: ") == 1
    )
    assert f"rank 1: waiting for rank 0 to prepare the data in {tmp_path / 'cache'}" in output
    assert "distributed_backend=gloo" in output and "Starting with 2 processes" in output
    assert "2 micro-batches of 2 per rank on 2 ranks" in output
    step = torch.load(tmp_path / "ddp" / "step-00000003" / "lit_model.pth", weights_only=True)
    assert step["train_dataloader"]["dataset"]["world_size"] == 2
    assert (tmp_path / "ddp" / "final" / "lit_model.pth").is_file()
    losses = [float(r["loss"]) for r in metrics(tmp_path / "ddp") if r["loss"]]
    assert len(losses) == 6


def test_litgpt_textfiles_data_module(tiny_target, tmp_path):
    """litgpt's own TextFiles module gets the checkpoint's tokenizer; the first file becomes the validation split."""
    texts = tmp_path / "texts"
    corpus = write_jsonl_corpus(tmp_path / "c", n_documents=60)
    texts.mkdir()
    for i, line in enumerate((corpus / "sample.jsonl").read_text().splitlines()):
        (texts / f"{i:03d}.txt").write_text(json.loads(line)["text"])
    code, stdout, stderr = run_in_process(
        "pretrain",
        str(tiny_target),
        "--out_dir",
        str(tmp_path / "run"),
        "--data",
        "TextFiles",
        "--data.train_data_path",
        str(texts),
        "--data.num_workers",
        "0",
        "--train.max_seq_length",
        str(SEQ),
        "--train.global_batch_size",
        "4",
        "--train.micro_batch_size",
        "4",
        "--train.max_steps",
        "3",
    )
    assert code == 0, stderr
    assert "Training 3 optimizer steps" in stdout
    assert (tmp_path / "run" / "final" / "lit_model.pth").is_file()


def test_bad_inputs_fail_with_one_line(tiny_target, jsonl_corpus, tmp_path, monkeypatch):
    def fails(message, **kwargs):
        arguments = dict(out_dir=tmp_path / "out", data=data_module(jsonl_corpus), train=train_args(max_steps=2))
        arguments.update(kwargs)
        with pytest.raises(SystemExit) as error:
            pretrain(arguments.pop("checkpoint_dir", tiny_target), **arguments)
        assert message in str(error.value) and "\n" not in str(error.value)

    fails("must split into whole micro-batches", train=train_args(max_steps=2, global_batch_size=4, micro_batch_size=8))
    fails("give a stop condition", train=train_args())
    fails(
        "--precision 16-mixed does not run with --strategy fsdp (Lightning's ModelParallelStrategy takes 32-true,"
        " bf16-true, bf16-mixed); choose one of those or --strategy ddp",
        strategy="fsdp",
        precision="16-mixed",
    )
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_target, no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    fails("is missing tokenizer.json or tokenizer.model", checkpoint_dir=no_tokenizer)
    fails("is not a checkpoint directory", checkpoint_dir=tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(f"--data.data_dir {empty} holds no .jsonl, .jsonl.zst, .parquet, .txt files", data=data_module(empty))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fails(
        f"--data.data_dir {tmp_path / 'absent'} does not exist and togethercomputer/RedPajama-Data-1T-Sample could not be downloaded",
        data=data_module(tmp_path / "absent"),
    )
    assert not (tmp_path / "out").exists()

    pretrain(
        tiny_target,
        out_dir=tmp_path / "done",
        data=data_module(jsonl_corpus),
        train=train_args(max_steps=2, save_interval=1),
        eval=EvalArgs(final_validation=False),
    )
    before = sorted(p.name for p in (tmp_path / "done").iterdir())
    fails("holds a previous run (step-00000002); pass --resume auto", out_dir=tmp_path / "done")
    fails("holds no complete checkpoint", out_dir=tmp_path / "fresh", resume=True)
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == before

    code, _, stderr = run_in_process(
        *cli_args(
            tiny_target, jsonl_corpus, tmp_path / "cli", "--train.max_steps", "2", "--train.micro_batch_size", "16"
        )[2:]
    )
    assert code == 1 and "Traceback" not in stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith("error: --train.global_batch_size 8 must split into whole micro-batches")
    )


def test_optimizer_on_the_command_line_whole_or_refused_in_one_line(tiny_target, jsonl_corpus, tmp_path):
    """The documented form, a whole class_path dict, replaces the default AdamW (jsonargparse 4.41 alone ends in a
    traceback there); a class name or class_path alone takes the class's defaults; a wrong name, argument or value,
    or a single argument given as --optimizer.lr (which the loop would not read), ends in one line and writes
    nothing."""

    def run(name: str, *optimizer: str) -> tuple[int, str]:
        argv = cli_args(tiny_target, jsonl_corpus, tmp_path / name, "--train.max_steps", "1", *optimizer)
        code, _, stderr = run_in_process(*argv[2:])
        assert "Traceback" not in stderr, stderr
        return code, stderr.strip().splitlines()[-1]

    sgd = '{"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}}'
    for name, optimizer, momentum in [
        ("dict", ["--optimizer", sgd], 0.9),
        ("class_path", ["--optimizer.class_path", "torch.optim.SGD"], 0),  # SGD's default
    ]:
        assert run(name, *optimizer, "--train.save_interval", "1")[0] == 0
        saved = torch.load(tmp_path / name / "step-00000001" / "lit_model.pth", weights_only=True)
        group = saved["optimizer"]["param_groups"][0]
        assert group["momentum"] == momentum and "betas" not in group
    assert yaml.safe_load((tmp_path / "dict" / "final" / "hyperparameters.yaml").read_text())["optimizer"] == {
        "class_path": "torch.optim.SGD",
        "init_args": {"lr": 0.05, "momentum": 0.9},
    }

    for optimizer, message in [
        (["--optimizer", "Adamw"], "error: --optimizer 'Adamw' names no optimizer class"),
        (["--optimizer", ""], "error: --optimizer '' names no optimizer class"),
        (["--optimizer", "torch.optim.lr_scheduler"], "error: --optimizer 'torch.optim.lr_scheduler' is not a torch"),
        (
            ["--optimizer", '{"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "betas": [0.9, 0.95]}}'],
            "error: --optimizer torch.optim.SGD does not take init_args",
        ),
        (
            ["--optimizer", '{"class_path": "torch.optim.AdamW", "init_args": {"lr": -1}}'],
            'error: --optimizer torch.optim.AdamW does not take init_args {"lr": -1}: Invalid learning rate: -1',
        ),
        (["--optimizer.lr", "1e-3"], "error: --optimizer.lr is not read: give the optimizer whole"),
        (["--optimizer.init_args.lr", "1e-3"], "error: --optimizer.lr is not read: give the optimizer whole"),
    ]:
        code, last_line = run("refused", *optimizer)
        assert code == 1 and last_line.startswith(message), (optimizer, last_line)
        assert not (tmp_path / "refused").exists()


def test_activation_checkpointing_and_optimizer_by_class_path(tiny_target, jsonl_corpus, tmp_path):
    """Recomputing activations changes memory, not results; any torch optimizer can be named by class path."""
    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}}
    for name, checkpointing in (("plain", False), ("recompute", True)):
        pretrain(
            tiny_target,
            out_dir=tmp_path / name,
            data=data_module(jsonl_corpus),
            optimizer=sgd,
            activation_checkpointing=checkpointing,
            train=train_args(max_steps=3, save_interval=3),
            eval=EvalArgs(final_validation=False),
        )
    plain = torch.load(tmp_path / "plain" / "final" / "lit_model.pth", weights_only=True)
    recompute = torch.load(tmp_path / "recompute" / "final" / "lit_model.pth", weights_only=True)
    assert set(plain) == set(recompute)  # no checkpoint-wrapper prefixes leak into the saved names
    assert max((plain[k] - recompute[k]).abs().max().item() for k in plain) <= 1e-6
    groups = torch.load(tmp_path / "plain" / "step-00000003" / "lit_model.pth", weights_only=True)["optimizer"][
        "param_groups"
    ]
    assert groups[0]["momentum"] == 0.9 and "betas" not in groups[0]


def test_adamw_runs_fused_on_a_cpu_and_matches_torchs_per_tensor_update(tiny_target, jsonl_corpus, tmp_path):
    """On a CPU the optimizer gets torch's fused kernel (stock litgpt passes fused only on CUDA); the weights after
    three steps match torch's default per-tensor AdamW up to float rounding, and init_args that choose fused or
    foreach are kept."""
    paper = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 3e-3, "weight_decay": 0.1, "betas": [0.9, 0.95]}}
    per_tensor = {"class_path": "torch.optim.AdamW", "init_args": {**paper["init_args"], "fused": False}}
    foreach = {"class_path": "torch.optim.AdamW", "init_args": {**paper["init_args"], "foreach": True}}
    for name, optimizer in (("fused", paper), ("per_tensor", per_tensor), ("foreach", foreach)):
        pretrain(
            tiny_target,
            out_dir=tmp_path / name,
            data=data_module(jsonl_corpus),
            optimizer=optimizer,
            train=train_args(max_steps=3, save_interval=3),
            eval=EvalArgs(final_validation=False),
        )
    saved = {
        name: torch.load(tmp_path / name / "step-00000003" / "lit_model.pth", weights_only=True)
        for name in ("fused", "per_tensor", "foreach")
    }
    groups = {name: state["optimizer"]["param_groups"][0] for name, state in saved.items()}
    assert (groups["fused"]["fused"], groups["fused"]["foreach"]) == (True, None)
    assert (groups["per_tensor"]["fused"], groups["per_tensor"]["foreach"]) == (False, None)
    assert (groups["foreach"]["fused"], groups["foreach"]["foreach"]) == (None, True)
    start = torch.load(tiny_target / "lit_model.pth", weights_only=True)
    fused, plain = saved["fused"]["model"], saved["per_tensor"]["model"]
    assert max((fused[k] - start[k]).abs().max().item() for k in start) > 1e-3  # three steps moved the weights
    assert max((fused[k] - plain[k]).abs().max().item() for k in plain) <= 1e-5
    assert paper["init_args"] == {"lr": 3e-3, "weight_decay": 0.1, "betas": [0.9, 0.95]}  # the caller's dict is kept


def test_every_logged_step_reaches_the_csv(tiny_target, jsonl_corpus, tmp_path):
    """The CSV logger writes every log_interval rows; the ones after the last write must be flushed at the end."""
    pretrain(
        tiny_target,
        out_dir=tmp_path / "run",
        data=data_module(jsonl_corpus),
        train=train_args(max_steps=3, log_interval=2),
        eval=EvalArgs(final_validation=True),
    )
    rows = metrics(tmp_path / "run")
    assert [int(float(r["step"])) for r in rows if r["loss"]] == [2, 3]
    assert any(r["val_loss"] for r in rows)


def test_train_eval_log_fields_are_honoured_or_refused(tiny_target, tiny_references, jsonl_corpus, tmp_path):
    """Fields the loop would ignore are refused with one line, by pretrain and by grow; --train.lr_warmup_fraction
    is a fraction of an epoch (litgpt's TrainArgs.warmup_iters) and the first optimizer step runs above lr 0."""
    from litgpt_inheritune.grow import main as grow

    for kwargs, message in [
        (dict(train=train_args(max_steps=2, tie_embeddings=True)), "--train.tie_embeddings true is not supported"),
        (dict(eval=EvalArgs(max_new_tokens=5)), "--eval.max_new_tokens 5 is not supported"),
        (dict(eval=EvalArgs(evaluate_example="random")), "--eval.evaluate_example random is not supported"),
        (dict(log=LogArgs(project="p")), "--log.project is read only by --logger_name wandb, not csv"),
        (
            dict(log=LogArgs(teamspace="t"), logger_name="tensorboard"),
            "--log.teamspace is read only by --logger_name litlogger, not tensorboard",
        ),
    ]:
        arguments = {
            "out_dir": tmp_path / "refused",
            "data": data_module(jsonl_corpus),
            "train": train_args(max_steps=2),
            **kwargs,
        }
        with pytest.raises(SystemExit, match=message):
            pretrain(tiny_target, **arguments)
        with pytest.raises(SystemExit, match=message):
            grow(tiny_references["llama-gqa"], **arguments)
    assert not (tmp_path / "refused").exists()

    data = data_module(jsonl_corpus)
    pretrain(
        tiny_target,
        out_dir=tmp_path / "warmup",
        data=data,
        eval=EvalArgs(max_iters=1, final_validation=False),
        train=train_args(epochs=1, lr_warmup_steps=None, lr_warmup_fraction=0.5),
    )
    micro_batches = data.manifest()["train"]["tokens"] // (SEQ + 1) // 4  # len(train_dataloader): one epoch
    warmup = math.ceil(0.5 * micro_batches / 2)  # in optimizer steps of 2 micro-batches
    lrs = [float(r["learning_rate"]) for r in metrics(tmp_path / "warmup") if r["loss"]]
    assert len(lrs) == micro_batches // 2 > warmup + 1
    assert lrs[:warmup] == pytest.approx([3e-4 * k / warmup for k in range(1, warmup + 1)])
    assert all(lr < 3e-4 for lr in lrs[warmup:]) and lrs[-1] == pytest.approx(3e-5)
