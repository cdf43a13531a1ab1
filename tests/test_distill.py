"""Logit distillation in `pretrain` (--distill.*): the loss, a short run whose KL term falls, and bad input."""

import shutil

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from litgpt.args import EvalArgs
from litgpt.config import Config
from litgpt.model import GPT
from litgpt.tokenizer import Tokenizer

from conftest import run_in_process
from litgpt_inheritune.distill import DistillArgs, distillation_loss
from litgpt_inheritune.export import main as export
from litgpt_inheritune.pretrain import setup as pretrain
from test_pretrain import SEQ, cli_args, data_module, metrics, train_args


def reference_loss(logits, teacher_logits, targets, alpha, T):
    """alpha * CE + (1 - alpha) * T^2 * KL(p_teacher || p_student), token by token in float64."""
    ce, kl, n = 0.0, 0.0, 0
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            if targets[b, t] == -100:
                continue
            log_p = torch.log_softmax(logits[b, t].double(), -1)
            ce -= log_p[targets[b, t]].item()
            p_teacher = torch.softmax(teacher_logits[b, t].double() / T, -1)
            q_student = torch.softmax(logits[b, t].double() / T, -1)
            kl += (p_teacher * (p_teacher.log() - q_student.log())).sum().item()
            n += 1
    return alpha * ce / n + (1 - alpha) * T**2 * kl / n, ce / n, T**2 * kl / n


@pytest.mark.parametrize(("alpha", "temperature"), [(0.6, 1.0), (0.25, 2.5), (1.0, 0.5), (0.0, 1.0)])
def test_loss_equals_an_independent_computation(alpha, temperature):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=generator) * 3
    teacher_logits = torch.randn(2, 5, 11, generator=generator) * 3
    targets = torch.randint(0, 11, (2, 5), generator=generator)
    targets[1, 3] = -100  # ignored position: neither CE nor KL counts it
    loss, ce, kl = distillation_loss(logits, teacher_logits, targets, alpha, temperature)
    expected = reference_loss(logits, teacher_logits, targets, alpha, temperature)
    assert (loss.item(), ce.item(), kl.item()) == pytest.approx(expected, rel=1e-5)
    assert distillation_loss(teacher_logits, teacher_logits, targets, alpha, temperature)[2].abs().item() < 1e-6


def held_out_ce(checkpoint, corpus) -> float:
    data = data_module(corpus)
    data.connect(tokenizer=Tokenizer(checkpoint), batch_size=4, max_seq_length=SEQ)
    data.prepare_data()
    data.setup()
    model = GPT(Config.from_file(checkpoint / "model_config.yaml"))
    model.load_state_dict(torch.load(checkpoint / "lit_model.pth", weights_only=True))
    model.eval()
    with torch.no_grad():
        losses = [
            torch.nn.functional.cross_entropy(
                model(b[:, :SEQ].long()).flatten(0, 1), b[:, 1 : SEQ + 1].long().flatten()
            ).item()
            for b, _ in zip(data.val_dataloader(), range(5))
        ]
    return sum(losses) / len(losses)


def test_short_run_logs_ce_and_kl_apart_and_the_kl_falls(tiny_references, tiny_target, jsonl_corpus, tmp_path):
    """The 3-block student learns towards its 6-block teacher; validation stays the student's cross-entropy.

    The tiny reference is untrained (near-uniform predictions, KL ~0.01 from the start), so the teacher is made
    confident: its head scaled by 8."""
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_references["llama-gqa"], teacher)
    weights = torch.load(teacher / "lit_model.pth", weights_only=True)
    weights["lm_head.weight"] *= 8
    torch.save(weights, teacher / "lit_model.pth")
    before = torch.load(teacher / "lit_model.pth", weights_only=True)
    out_dir = tmp_path / "run"
    pretrain(
        tiny_target,
        out_dir=out_dir,
        data=data_module(jsonl_corpus),
        train=train_args(max_steps=12),
        optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 3e-3}},
        eval=EvalArgs(max_iters=5),
        distill=DistillArgs(teacher_dir=teacher, alpha=0.6, temperature=1.0),
    )
    rows = [r for r in metrics(out_dir) if r["loss"]]
    assert len(rows) == 12
    for r in rows:
        assert float(r["loss"]) == pytest.approx(0.6 * float(r["ce_loss"]) + 0.4 * float(r["kl_loss"]), rel=1e-5)
    kl = [float(r["kl_loss"]) for r in rows]
    assert sum(kl[-3:]) / 3 < 0.9 * sum(kl[:3]) / 3, kl  # 2.85 -> 2.45 here
    val = [float(r["val_loss"]) for r in metrics(out_dir) if r["val_loss"]]
    assert val[-1] == pytest.approx(held_out_ce(out_dir / "final", jsonl_corpus), abs=1e-4)
    after = torch.load(teacher / "lit_model.pth", weights_only=True)
    assert all(torch.equal(before[k], after[k]) for k in before)
    saved = yaml.safe_load((out_dir / "final" / "hyperparameters.yaml").read_text())["distill"]
    assert saved == {"teacher_dir": str(teacher), "alpha": 0.6, "temperature": 1.0}
    card = ModelCard.load(export(out_dir / "final", out_dir=tmp_path / "hf") / "README.md")
    assert f"| distillation | teacher {teacher}, alpha 0.6, temperature 1.0 |" in card.text


def test_bad_distillation_input_is_one_line(tiny_references, tiny_target, jsonl_corpus, tmp_path):
    teacher = tiny_references["llama-gqa"]

    def fails(message, **distill):
        with pytest.raises(SystemExit) as error:
            pretrain(
                tiny_target,
                out_dir=tmp_path / "out",
                data=data_module(jsonl_corpus),
                train=train_args(max_steps=2),
                distill=DistillArgs(**distill),
            )
        assert message in str(error.value) and "\n" not in str(error.value)

    fails("--distill.alpha 1.5 is outside [0, 1]", teacher_dir=teacher, alpha=1.5)
    fails("--distill.alpha -0.1 is outside [0, 1]", teacher_dir=teacher, alpha=-0.1)
    fails("--distill.temperature -1.0 must be above 0", teacher_dir=teacher, temperature=-1.0)
    fails(
        f"--distill.teacher_dir '{tmp_path}' is missing the files: ['lit_model.pth', 'model_config.yaml']",
        teacher_dir=tmp_path,
    )
    other = tmp_path / "other-vocabulary"
    shutil.copytree(teacher, other)
    config = yaml.safe_load((other / "model_config.yaml").read_text())
    config.update(vocab_size=400, padded_vocab_size=416)
    (other / "model_config.yaml").write_text(yaml.safe_dump(config))
    fails(
        f"--distill.teacher_dir {other} has another vocabulary (400 tokens, padded 416) than the student (320, padded 320)",
        teacher_dir=other,
    )
    assert not (tmp_path / "out").exists()

    code, _, stderr = run_in_process(
        *cli_args(
            tiny_target,
            jsonl_corpus,
            tmp_path / "cli",
            "--train.max_steps",
            "2",
            "--distill.teacher_dir",
            str(teacher),
            "--distill.temperature",
            "0",
        )[2:]
    )
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "error: --distill.temperature 0.0 must be above 0 (the paper: 1.0)"
