"""A derived model is an ordinary LitGPT checkpoint: litgpt's own commands run on it unchanged."""

import json
from functools import partial

import pytest
import torch
from litgpt.config import Config
from litgpt.model import GPT

from conftest import run_cli
from litgpt_inheritune.init import main as init


def test_litgpt_chat_answers_and_quits(tiny_target):
    result = run_cli(
        "litgpt",
        "chat",
        str(tiny_target),
        "--max_new_tokens",
        "4",
        "--temperature",
        "0",
        input="the early layers\n!quit\n",
        check=True,
    )
    assert "Now chatting with tiny-llama-inheritune-3L" in result.stdout
    assert ">> Reply:" in result.stdout


@pytest.mark.parametrize("method", ["lora", "full"])
def test_litgpt_finetune_trains_the_target(tiny_target, tmp_path, monkeypatch, method):
    examples = [
        {"instruction": f"repeat the word {word}", "input": "", "output": word}
        for word in "early layers carry most knowledge while deeper ones are lazy".split()
    ]
    (tmp_path / "data.json").write_text(json.dumps(examples))
    out_dir = tmp_path / "out"
    # litgpt's own main with this command line, in this process (an interpreter start costs seconds on 2 cores; chat and
    # convert_from_litgpt below run the console script)
    import sys

    from litgpt.__main__ import main as litgpt

    monkeypatch.setattr(
        sys,
        "argv",
        [
            "litgpt",
            f"finetune_{method}",
            str(tiny_target),
            "--out_dir",
            str(out_dir),
            "--precision",
            "32-true",
            "--data",
            "JSON",
            "--data.json_path",
            str(tmp_path / "data.json"),
            "--data.val_split_fraction",
            "0.2",
            "--train.max_steps",
            "2",
            "--train.global_batch_size",
            "2",
            "--train.micro_batch_size",
            "1",
            "--train.lr_warmup_steps",
            "1",
            "--train.max_seq_length",
            "48",
            "--eval.interval",
            "100",
            "--eval.max_iters",
            "1",
            "--eval.max_new_tokens",
            "2",
            "--eval.final_validation",
            "false",
        ],
    )
    litgpt()
    final = out_dir / "final"
    state = torch.load(final / "lit_model.pth", weights_only=True, mmap=True)
    state = state.get("model", state)  # finetune_full saves {"model": ...}
    before = torch.load(tiny_target / "lit_model.pth", weights_only=True)
    config = Config.from_file(final / "model_config.yaml")
    assert config.n_layer == 3
    GPT(config).load_state_dict(state)  # strict: a plain 3-block LitGPT model (LoRA merged in)
    changed = [name for name, tensor in before.items() if not torch.equal(tensor, state[name])]
    assert changed, "finetuning changed no weight of the derived model"


@pytest.fixture(scope="module")
def smollm2_4l(smollm2, module_tmp):
    """The first 4 of SmolLM2-135M's 30 blocks: a real derived model with a real Hugging Face config.json."""
    return init(smollm2, out_dir=module_tmp / "smollm2-4L", n_layers=4)


def test_litgpt_convert_from_litgpt_loads_in_transformers(smollm2_4l, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    out_dir = tmp_path / "hf"
    run_cli("litgpt", "convert_from_litgpt", str(smollm2_4l), str(out_dir), check=True)
    (out_dir / "config.json").write_text(
        (smollm2_4l / "config.json").read_text()
    )  # the derived config.json, as litgpt's docs say
    hf = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out_dir), torch_dtype=torch.float32)
    hf.load_state_dict(torch.load(out_dir / "model.pth", weights_only=True))
    assert hf.config.num_hidden_layers == 4

    lit = GPT(Config.from_file(smollm2_4l / "model_config.yaml"))
    lit.load_state_dict(torch.load(smollm2_4l / "lit_model.pth", weights_only=True))
    tokens = torch.tensor([[1, 504, 3458, 282, 4649, 314, 7042, 30]])
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, lit.eval()(tokens), atol=1e-4, rtol=1e-4)


def test_litgpt_evaluate_agrees_with_ours(smollm2_4l, offline_tasks, tmp_path, monkeypatch):
    """litgpt's evaluate (convert, then lm-eval's HF backend) on the derived model; task folders through lm-eval's
    default TaskManager, since litgpt's evaluate takes no --include_path."""
    import lm_eval.evaluator
    from lm_eval.tasks import TaskManager
    from litgpt.eval.evaluate import convert_and_evaluate

    from litgpt_inheritune.evaluate import main as evaluate

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(lm_eval.evaluator, "TaskManager", partial(TaskManager, include_path=str(offline_tasks)))
    convert_and_evaluate(
        smollm2_4l,
        tasks="piqa_offline,boolq_offline",
        out_dir=tmp_path / "litgpt",
        limit=10,
        batch_size=4,
        device="cpu",
        dtype="float32",
    )
    theirs = json.loads((tmp_path / "litgpt" / "results.json").read_text())["results"]
    ours = evaluate(
        smollm2_4l,
        tasks="piqa_offline,boolq_offline",
        include_path=offline_tasks,
        limit=10,
        out_dir=tmp_path / "ours",
        paper=False,
    )["results"]
    for task in ("piqa_offline", "boolq_offline"):
        assert abs(ours[task]["acc,none"] - theirs[task]["acc,none"]) <= 0.1 + 1e-9, task
