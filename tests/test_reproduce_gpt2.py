"""recipes/reproduce_gpt2.py end to end at toy size: every method trained, measured, compared and reported."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import torch
from litgpt.config import Config
from litgpt.model import GPT
from litgpt.tokenizer import Tokenizer

from conftest import MATERIALS, run_in_process

ROOT = Path(__file__).resolve().parent.parent


def held_out_loss(checkpoint: Path, data_dir: Path, val_tokens: int, seq_len: int, batch_size: int) -> float:
    """Independent: the recipe's held-out articles, a plain forward of the checkpoint and torch's cross-entropy,
    the mean over every validation batch."""
    from litgpt_inheritune.redpajama import RedPajamaSample

    data = RedPajamaSample(
        data_dir=data_dir,
        token_budget=10**9,
        val_tokens=val_tokens,
        num_workers=0,
        cache_dir=data_dir.parent / "litdata",
        seed=42,
    )
    data.connect(tokenizer=Tokenizer(checkpoint), batch_size=batch_size, max_seq_length=seq_len)
    data.prepare_data()
    data.setup()
    sequences = torch.cat(list(data.val_dataloader())).long()  # every held-out batch, in order
    model = GPT(Config.from_file(checkpoint / "model_config.yaml")).eval()
    model.load_state_dict(torch.load(checkpoint / "lit_model.pth", weights_only=True))
    with torch.no_grad():
        logits = model(sequences[:, :seq_len])
    per_sequence = torch.nn.functional.cross_entropy(logits.transpose(1, 2), sequences[:, 1:], reduction="none").mean(1)
    return torch.stack([batch.mean() for batch in per_sequence.split(batch_size)]).mean().item()


def test_reproduction_trains_and_reports_every_method(tmp_path, monkeypatch, capsys):
    import litgpt_inheritune.grow as grow

    spec = importlib.util.spec_from_file_location("reproduce_gpt2", ROOT / "recipes" / "reproduce_gpt2.py")
    monkeypatch.syspath_prepend(str(ROOT / "recipes"))  # the recipe imports common.py beside it
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    # grow trains each run in a child process; here in this one, which saves an interpreter start per run (seconds
    # each on a 2-core CPU). test_grow.py covers the child processes.
    monkeypatch.setattr(grow, "run_forwarding_stop_signals", lambda command: (run_in_process(*command[3:])[0], None))
    out = tmp_path / "reproduce"
    monkeypatch.setattr(
        sys, "argv", ["reproduce_gpt2.py", "--size", "toy", "--out_dir", str(out), "--cache_dir", str(MATERIALS)]
    )
    recipe.main()

    summary = json.loads((out / "summary.json").read_text())
    methods = summary["methods"]
    assert list(methods) == list(recipe.METHODS)
    size = recipe.SIZES["toy"]
    n, half = size["n_layer"], size["n_layer"] // 2
    for name, method in methods.items():
        assert math.isfinite(method["val_loss"]) and 0 < method["val_loss"] < 2 * math.log(size["vocab_size"]), name
    assert {name: m["n_layers"] for name, m in methods.items() if m["n_layers"] != half} == {
        "reference": n,
        "half_width": n,
    }
    at_half_depth = {m["parameters"] for name, m in methods.items() if m["n_layers"] == half}
    assert len(at_half_depth) == 1 and at_half_depth.pop() < methods["reference"]["parameters"]
    assert methods["half_width"]["parameters"] < methods["reference"]["parameters"] // 2  # a quarter of each matrix
    assert methods["random_2x"]["steps"] == 2 * methods["random"]["steps"] == 2 * size["steps"]
    # the reference's number is its validation loss on the held-out articles, computed here without the plugin
    reference = out / "runs" / "reference" / "final"
    independent = held_out_loss(
        reference, out / "data" / "lee", size["val_tokens"], size["seq_len"], size["batch_size"]
    )
    assert abs(methods["reference"]["val_loss"] - independent) < 1e-3
    # the trained reference's blocks, embedding and head are a head start no random initialisation has after as many steps
    assert methods["inheritune"]["val_loss"] < methods["random"]["val_loss"]
    assert methods["inheritune"]["val_loss"] < methods["distill_random"]["val_loss"]
    assert [r["n_layers"] for r in summary["rounds"]][0] == half and summary["rounds"][-1]["n_layers"] == methods[
        "grown"
    ]["n_layers"]
    assert len(summary["claims"]) == 10 and all(isinstance(c["holds"], bool) for c in summary["claims"])

    report = (out / "report.md").read_text()
    for name, method in methods.items():
        assert f"| {name} | {method['n_layers']} |" in report
    assert "| half_width | 4 | " in report and "| 3.04 | 3.06 | 2.77 |" in report  # the paper's Table 1 beside ours
    compared = (out / "compare.md").read_text()
    assert all(f"| {name} ({m['n_layers']}L) |" in compared for name, m in methods.items())
    assert len(json.loads((out / "compare.json").read_text())["runs"]) == len(methods)
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "=== grow at 2 of 4 blocks" in capsys.readouterr().err
