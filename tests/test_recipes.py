"""Recipes in config_hub/ are saved command lines: every key must be a flag of the command, and stated budgets hold."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import run_cli, run_in_process

ROOT = Path(__file__).resolve().parent.parent
GPU_RECIPES = sorted(p for p in (ROOT / "config_hub" / "pretrain").glob("*.yaml") if "# gpu:" in p.read_text())


def test_there_are_paper_recipes():
    assert {p.name for p in GPU_RECIPES} == {
        "open_llama_3b-13L-1B-8ep.yaml",
        "open_llama_3b-13L-50B.yaml",
        "open_llama_7b-7L-50B.yaml",
        "Llama-2-7b-hf-7L-50B.yaml",
    }


@pytest.mark.parametrize("recipe", GPU_RECIPES, ids=lambda p: p.name)
def test_gpu_recipe_parses_as_a_command_line(recipe):
    code, stdout, stderr = run_in_process("pretrain", "--config", str(recipe), "--print_config")  # no interpreter start
    assert code == 0, stderr
    assert yaml.safe_load(stdout)["train"] == {
        **yaml.safe_load(stdout)["train"],
        **yaml.safe_load(recipe.read_text())["train"],
    }


def test_paper_settings_in_the_1_5b_recipe():
    recipe = yaml.safe_load((ROOT / "config_hub" / "pretrain" / "open_llama_3b-13L-1B-8ep.yaml").read_text())
    assert recipe["train"]["global_batch_size"] * recipe["train"]["max_seq_length"] == 131_072
    assert recipe["train"]["epochs"] == 8 and recipe["data"]["init_args"]["token_budget"] == 10**9
    assert recipe["optimizer"]["init_args"] == {"lr": 3e-4, "weight_decay": 0.1, "betas": [0.9, 0.95]}
    assert recipe["train"]["lr_warmup_steps"] == 1000 and recipe["precision"] == "bf16-true"


def test_stated_budgets_match_the_arithmetic():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "recipe_budget.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    params = (
        3200 * 32000 * 2 + 13 * (4 * 3200 * 3200 + 3 * 3200 * 8640 + 2 * 3200) + 3200
    )  # embedding, head, blocks, norm
    flops = (6 * params + 12 * 13 * 3200 * 2048) * 8 * 10**9  # per token: 6 per parameter + the attention scores
    hours = flops / (154.8e12 * 0.4) / 3600  # an A6000's dense bf16 peak at 40% MFU
    assert (
        f"| `open_llama_3b-13L-1B-8ep.yaml` | 1.82 B | 8 B | 61,035 | {flops:.1e} | {hours:,.0f} h on 1 x A6000 |"
        in result.stdout
    )


def test_tiny_cpu_recipe_runs(tiny_target, jsonl_corpus, tmp_path):
    result = run_cli(
        "litgpt",
        "inheritune",
        "pretrain",
        str(tiny_target),
        "--config",
        str(ROOT / "config_hub" / "pretrain" / "tiny-cpu.yaml"),
        "--data.data_dir",
        str(jsonl_corpus),
        "--out_dir",
        str(tmp_path / "run"),
        check=True,
    )
    assert "Training 75 optimizer steps" in result.stdout  # one epoch of the 20K-token budget
    assert (tmp_path / "run" / "final" / "lit_model.pth").is_file()


def test_grow_recipe_parses_as_a_command_line():
    recipe = ROOT / "config_hub" / "grow" / "open_llama_3b-from-13L.yaml"
    code, stdout, stderr = run_in_process("grow", "--config", str(recipe), "--print_config")
    assert code == 0, stderr
    parsed = yaml.safe_load(stdout)
    assert (parsed["n_layers"], parsed["grow_by"], parsed["baselines"]) == (13, 2, "random,last_n")
    assert parsed["train"]["epochs"] == 1 and parsed["data"]["init_args"]["token_budget"] == 10**9


def test_50b_recipes_read_the_full_redpajama_and_never_download_the_sample(tiny_target, tmp_path):
    """The 50B recipes name RedPajama (no download) in RedPajama's mixture; a missing folder is an error, not a download."""
    for recipe in (p for p in GPU_RECIPES if "50B" in p.name):
        data = yaml.safe_load(recipe.read_text())["data"]
        assert (
            data["class_path"] == "litgpt_inheritune.redpajama.RedPajama"
            and data["init_args"]["mixture"] == "redpajama"
        )
        assert data["init_args"]["data_dir"] == "data/RedPajama-Data-1T"
    code, _, stderr = run_in_process(
        "prepare_data",
        "--config",
        str(ROOT / "config_hub" / "pretrain" / "open_llama_3b-13L-50B.yaml"),
        str(tiny_target),
        "--data.data_dir",
        str(tmp_path / "RedPajama-Data-1T"),
    )
    assert code == 1 and "Traceback" not in stderr and "Downloading" not in stderr
    assert (
        f"error: --data.data_dir {tmp_path / 'RedPajama-Data-1T'} does not exist; download RedPajama-Data-1T into it"
        in stderr
    )
    assert not (tmp_path / "RedPajama-Data-1T").exists()
