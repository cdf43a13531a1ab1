"""The throughput pretrain logs: per-device FLOP/s and token rates as Lightning's monitor defines them."""

import pytest
import torch
from litgpt.config import Config
from litgpt.model import GPT

from conftest import run_cli
from test_pretrain import SEQ, cli_args, metrics

WINDOW = 5  # pretrain's ThroughputMonitor window (updates)


def flops_per_micro_batch(checkpoint_dir, micro_batch_size: int) -> int:
    """Forward and backward FLOPs of one micro-batch by hand: 2 per multiply-add of every weight matrix but the
    embedding (the backward pass doubles it), plus the two T x T attention products per head and layer."""
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    with torch.device("meta"):
        model = GPT(config)
    matmul_weights = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "wte" not in name)
    tokens = micro_batch_size * SEQ
    attention = 2 * 2 * micro_batch_size * config.n_layer * config.n_head * SEQ * SEQ * config.head_size
    return 3 * (2 * matmul_weights * tokens + attention)


def test_flops_and_token_rates_are_per_device_over_the_window(tiny_target, jsonl_corpus, tmp_path):
    """Two ranks, 2 micro-batches of 2 per rank per step: each logged rate equals the work done per device between the
    first and last update of the window, divided by the training time between them (not a running total)."""
    out_dir = tmp_path / "ddp"
    run_cli(
        *cli_args(
            tiny_target,
            jsonl_corpus,
            out_dir,
            "--devices",
            "2",
            "--train.micro_batch_size",
            "2",
            "--train.max_steps",
            "9",
            "--train.log_interval",
            "1",
        ),
        check=True,
    )
    rows = [r for r in metrics(out_dir) if r["loss"]]
    assert [int(float(r["step"])) for r in rows] == list(range(1, 10))
    flops_per_step = 2 * flops_per_micro_batch(tiny_target, micro_batch_size=2)  # per device: 2 micro-batches
    tokens_per_step = 2 * 2 * SEQ  # per device
    checked = 0
    for first, last in zip(rows, rows[WINDOW - 1 :]):
        seconds = float(last["throughput/time"]) - float(first["throughput/time"])
        steps = int(float(last["step"])) - int(float(first["step"]))
        assert float(last["throughput/device/flops_per_sec"]) == pytest_approx(flops_per_step * steps / seconds)
        assert float(last["throughput/flops_per_sec"]) == pytest_approx(2 * flops_per_step * steps / seconds)
        assert float(last["throughput/device/items_per_sec"]) == pytest_approx(tokens_per_step * steps / seconds)
        assert float(last["throughput/items_per_sec"]) == pytest_approx(2 * tokens_per_step * steps / seconds)
        assert float(last["throughput/device/samples_per_sec"]) == pytest_approx(4 * steps / seconds)
        assert int(float(last["throughput/samples"])) == 4 * int(float(last["step"]))  # running total per device
        checked += 1
    assert checked == 9 - WINDOW + 1
    assert not any(r.get("throughput/device/mfu") for r in rows)  # Lightning knows no CPU's peak: no MFU


def pytest_approx(value):
    return pytest.approx(value, rel=1e-6)
