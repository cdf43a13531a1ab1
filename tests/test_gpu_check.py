"""scripts/gpu_check.sh: without CUDA it says so and exits 0; --dry-run runs every stage on the CPU at toy scale."""

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from litgpt.config import Config

from conftest import MATERIALS

ROOT = Path(__file__).resolve().parents[1]


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args], capture_output=True, text=True, env=env
    )


def numbers(pattern: str, text: str) -> list[float]:
    match = re.search(pattern, text)
    assert match, f"no match for {pattern!r} in the report"
    return [float(group.replace(",", "")) for group in match.groups()]


def number(pattern: str, text: str) -> float:
    return numbers(pattern, text)[0]


def test_without_cuda_it_says_so_and_exits_0_and_bad_flags_are_refused(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check_module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored afterwards (--dry-run sets it)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--report", str(tmp_path / "report.md")])
    gpu_check_module.main()  # returns: exit code 0
    assert "no CUDA device on this machine" in capsys.readouterr().out
    monkeypatch.setattr(
        sys, "argv", ["gpu_check.py", "--dry-run", "--steps", "3", "--report", str(tmp_path / "report.md")]
    )
    with pytest.raises(SystemExit, match="--steps 3 --repeats 1: need at least 4 steps"):
        gpu_check_module.main()
    assert not (tmp_path / "report.md").exists()


def test_dry_run_writes_every_section(tmp_path):
    report_path = tmp_path / "gpu_check" / "report.md"
    result = gpu_check("--dry-run", "--report", str(report_path), "--cache_dir", str(MATERIALS), "--peak_tflops", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = report_path.read_text()
    for section in (
        "(a) Throughput",
        "(b) Peak memory",
        "(c) bf16-true vs bf16-mixed",
        "(d) SIGKILL + --resume auto",
        "(e) evaluate on GPU vs CPU",
        "(f) Several GPUs",
    ):
        assert f"## {section}" in report

    # (a) MFU = tokens/s x FLOPs per token / peak. The toy, 2 blocks of 64 channels (4 heads, LLaMA MLP of 172) and a
    # vocabulary of 2000 padded to 2048, has 2 x (2 norms x 64 + qkv 3 x 64 x 64 + proj 64 x 64 + MLP 3 x 64 x 172)
    # + embedding and head 2 x 2048 x 64 + final norm 64 = 361,280 parameters; per token: 6 x parameters (forward
    # and backward) + attention 12 x 2 blocks x 64 channels x 64 positions = 2,265,984 FLOPs
    config = Config.from_file(tmp_path / "gpu_check" / "checkpoint" / "model_config.yaml")
    assert (config.n_layer, config.n_embd, config.n_head, config.intermediate_size) == (2, 64, 4, 172)
    assert config.padded_vocab_size == 2048
    per_token = 2_265_984
    assert number(r"x ([\d.]+) GFLOP/token", report) == float(f"{per_token / 1e9:.6g}")
    ours, stock = number(r"\| ours \| ([\d,.]+) \|", report), number(r"\| stock \| ([\d,.]+) \|", report)
    assert ours > 0 and stock > 0
    assert (
        abs(number(r"\| ours \| [\d,.]+ \| ([\d.]+)% \|", report) - 100 * ours * per_token / 1e12) <= 0.051
    )  # shown to 0.1%
    assert number(r"ratio ours/stock: \*\*([\d.]+)\*\*", report) == round(ours / stock, 3)

    # (b) a peak and an estimate for both precisions
    for precision in ("bf16-true", "bf16-mixed"):
        measured, estimate, ratio = numbers(
            rf"\| {precision} \| ([\d.]+) \| n/a \| n/a \| ([\d.]+) \| ([\d.]+) \|", report
        )
        assert (
            0.05 < measured < 5 and 0.05 < estimate < 5 and abs(ratio - measured / estimate) <= 0.011
        )  # all shown rounded

    # (c) both precisions learn from the same start and end close together
    true_loss = number(r"\| bf16-true \| 6 \| ([\d.]+) \|", report)
    mixed_loss = number(r"\| bf16-mixed \| 6 \| ([\d.]+) \|", report)
    assert all(0 < loss < math.log(config.padded_vocab_size) + 1 for loss in (true_loss, mixed_loss))
    assert abs(true_loss - mixed_loss) < 0.1

    # (d) on the CPU the resumed run replays the same batches with the same arithmetic: its final weights are bit for
    # bit those of the uninterrupted run, and the report says so
    runs = tmp_path / "gpu_check" / "runs"
    straight = torch.load(runs / "bf16-true" / "final" / "lit_model.pth", weights_only=True)
    resumed = torch.load(runs / "killed" / "final" / "lit_model.pth", weights_only=True)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert "max |weight difference| against the uninterrupted run: **0**\n" in report
    killed_at, resumed_from = numbers(r"killed once step-(\d+) was complete.*resumed from step-(\d+)", report)
    assert resumed_from >= killed_at == 2

    # (e) and (f)
    assert "same scores: **yes**" in report
    for strategy in ("ddp", "fsdp"):  # two CPU processes each; every rank's peak, the estimate, their ratio
        tokens, _, first, second, estimate, ratio = numbers(
            rf"\| {strategy} \| ([\d,.]+) \| (\d+) \| ([\d.]+), ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", report
        )
        assert tokens > 0 and 0.05 < first < 5 and 0.05 < second < 5 and estimate > 0
        assert abs(ratio - max(first, second) / estimate) <= 0.011
