"""`litgpt inheritune grow`: Algorithm 1 (inherit, train, grow) and its baselines, on a tiny trained reference."""

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from litgpt.config import Config
from litgpt.model import GPT
from litgpt.utils import chunked_cross_entropy

from conftest import run_cli, run_in_process
from litgpt_inheritune.cluster import LOCK_FILE, PREEMPTED_EXIT_CODE
from litgpt_inheritune.compare import grow_settings_text
from litgpt_inheritune.export import main as export

RECIPE = Path(__file__).resolve().parent.parent / "config_hub" / "pretrain" / "tiny-cpu.yaml"


@pytest.fixture(scope="module")
def trained_reference(tiny_references, jsonl_corpus, tmp_path_factory) -> Path:
    """The tiny 6-block LLaMA trained for one epoch, so that a briefly trained prefix of it is worse than it."""
    out_dir = tmp_path_factory.mktemp("reference-run")
    code, _, stderr = run_in_process(
        "pretrain",
        str(tiny_references["llama-gqa"]),
        "--config",
        str(RECIPE),
        "--data.data_dir",
        str(jsonl_corpus),
        "--out_dir",
        str(out_dir),
        "--train.save_interval",
        "1000",
    )
    assert code == 0, stderr
    return out_dir / "final"


def grow(reference: Path, corpus: Path, out_dir: Path, *args: str, console_script: bool = False):
    """`litgpt inheritune grow` on the tiny recipe: in this process (an interpreter start costs seconds here), or
    through the console script; each round's pretrain is a child process either way, unless rounds_in_this_process."""
    argv = (
        str(reference),
        "--config",
        str(RECIPE),
        "--data.data_dir",
        str(corpus),
        "--out_dir",
        str(out_dir),
        "--train.max_steps",
        "2",
        "--train.save_interval",
        "1000",
        "--eval.interval",
        "1000",
        *args,
    )
    if console_script:
        return run_cli("litgpt", "inheritune", "grow", *argv)
    code, stdout, stderr = run_in_process("grow", *argv)
    return SimpleNamespace(returncode=code, stdout=stdout, stderr=stderr)


@pytest.fixture
def rounds_in_this_process(monkeypatch):
    """Grow's rounds and baselines (`python -m litgpt_inheritune pretrain --config <run>/pretrain.yaml`, a child
    process) run in this process: the same command line, without an interpreter start each. The child processes and
    the stop signals grow passes on to them are tested by test_rounds_train_on_several_processes and
    test_interrupted_grow_continues_to_the_same_result."""
    import sys

    def run(command: list[str]):
        assert command[:4] == [sys.executable, "-m", "litgpt_inheritune", "pretrain"], command
        code, _, stderr = run_in_process(*command[3:])
        if code != 0:
            print(stderr, file=sys.stderr)
        return code, None

    monkeypatch.setattr("litgpt_inheritune.grow.run_forwarding_stop_signals", run)


def held_out_loss(checkpoint: Path, corpus: Path, tmp_path: Path) -> float:
    """Independent: the first 5 validation batches of the recipe's data module, plain forward and cross-entropy."""
    from litgpt.tokenizer import Tokenizer

    from litgpt_inheritune.redpajama import RedPajamaSample

    data = RedPajamaSample(data_dir=corpus, token_budget=20000, val_tokens=2000, seed=42, num_workers=0)
    data.connect(tokenizer=Tokenizer(checkpoint), batch_size=4, max_seq_length=32)
    data.prepare_data()
    data.setup()
    model = GPT(Config.from_file(checkpoint / "model_config.yaml"))
    model.load_state_dict(torch.load(checkpoint / "lit_model.pth", weights_only=True))
    model.eval()
    losses = []
    with torch.no_grad():
        for batch, _ in zip(data.val_dataloader(), range(5)):
            losses.append(chunked_cross_entropy(model(batch[:, :32].long()), batch[:, 1:33].long()).item())
    return sum(losses) / len(losses)


def test_grows_until_the_reference_is_matched(trained_reference, jsonl_corpus, tmp_path, rounds_in_this_process):
    result = grow(
        trained_reference, jsonl_corpus, tmp_path / "grow", "--n_layers", "2", "--grow_by", "2", "--baselines", ""
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "grow" / "grow.json").read_text())
    reference = report["reference"]["val_loss"]
    assert reference == pytest.approx(held_out_loss(trained_reference, jsonl_corpus, tmp_path), abs=1e-4)
    rounds = report["rounds"]
    assert [r["n_layers"] for r in rounds] == [2, 4, 6][: len(rounds)]
    # Algorithm 1: stop at the first round that matches; every earlier round is worse than the reference
    assert [r["matched"] for r in rounds] == [r["val_loss"] <= reference for r in rounds]
    assert not any(r["matched"] for r in rounds[:-1])
    assert rounds[-1]["matched"] or rounds[-1]["n_layers"] == 6
    assert rounds[0]["val_loss"] > reference  # two blocks after two steps are far from the trained six
    for entry in rounds:
        checkpoint = Path(entry["checkpoint"])
        assert Config.from_file(checkpoint / "model_config.yaml").n_layer == entry["n_layers"]
        assert json.loads((checkpoint.parent.parent / "init" / "provenance.json").read_text())["layers"] == list(
            range(entry["n_layers"])
        )
        assert entry["val_loss"] == pytest.approx(held_out_loss(checkpoint, jsonl_corpus, tmp_path), abs=1e-4)
    table = (tmp_path / "grow" / "grow.md").read_text()
    assert f"| reference | 6 | all | {reference:.4f} | |" in table
    if rounds[-1]["matched"]:
        assert report["result"] == rounds[-1]["checkpoint"] and f"Grown model: {report['result']}." in table
    else:
        assert report["result"] is None and "Grown model: none: no round matched the reference." in table
    # the model card of the exported last round lists every round with grow.json's losses
    card = ModelCard.load(export(Path(rounds[-1]["checkpoint"]), out_dir=tmp_path / "hf") / "README.md")
    grown = "; ".join(
        f"{r['n_layers']} blocks: {r['val_loss']:.4f}{' (matched)' if r['matched'] else ''}" for r in rounds
    )
    assert (
        f"| grow rounds | validation loss per round (reference {reference:.4f}, tolerance 0.0): {grown} (" in card.text
    )

    again = grow(
        trained_reference, jsonl_corpus, tmp_path / "grow", "--n_layers", "2", "--grow_by", "2", "--baselines", ""
    )
    assert again.returncode == 0 and again.stdout.count("grow: reusing") == len(
        rounds
    )  # finished rounds are not retrained
    assert json.loads((tmp_path / "grow" / "grow.json").read_text())["rounds"] == rounds

    other = grow(
        trained_reference,
        jsonl_corpus,
        tmp_path / "grow",
        "--n_layers",
        "2",
        "--baselines",
        "",
        "--train.max_steps",
        "3",
    )
    assert other.returncode == 1 and "was trained with --train.max_steps 2 but this run asks for 3" in other.stderr
    assert "validation loss" not in other.stdout  # refused before measuring the reference
    assert json.loads((tmp_path / "grow" / "grow.json").read_text())["rounds"] == rounds  # nothing changed on disk


def test_baselines_at_the_final_size(trained_reference, jsonl_corpus, tmp_path, rounds_in_this_process):
    """A generous tolerance ends growth after the first round; the baselines are trained at its size."""
    result = grow(
        trained_reference,
        jsonl_corpus,
        tmp_path / "grow",
        "--n_layers",
        "3",
        "--tolerance",
        "100",
        "--baselines",
        "random,lazy,hybrid_stacking,stacking",
    )  # lazy: the old name of last_n
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "grow" / "grow.json").read_text())
    assert [r["n_layers"] for r in report["rounds"]] == [3] and report["rounds"][0]["matched"]
    assert report["result"] == report["rounds"][0]["checkpoint"]
    assert f"Grown model: {report['result']}." in (tmp_path / "grow" / "grow.md").read_text()
    lazy = tmp_path / "grow" / "baselines" / "last_n-3L"
    assert json.loads((lazy / "init" / "provenance.json").read_text())["layers"] == [3, 4, 5]
    random_run = yaml_of(tmp_path / "grow" / "baselines" / "random-3L" / "pretrain.yaml")
    assert random_run["initialize"] == "random" and random_run["train"]["max_steps"] == 2
    inherited = torch.load(Path(report["rounds"][0]["checkpoint"]) / "lit_model.pth", weights_only=True)
    random_final = torch.load(
        tmp_path / "grow" / "baselines" / "random-3L" / "train" / "final" / "lit_model.pth", weights_only=True
    )
    assert not torch.allclose(inherited["transformer.wte.weight"], random_final["transformer.wte.weight"])
    random_dir = tmp_path / "grow" / "baselines" / "random-3L" / "train" / "final"
    random_card = ModelCard.load(export(random_dir, out_dir=tmp_path / "hf") / "README.md")
    assert random_card.data.base_model is None  # trained from a random initialisation: nothing inherited
    assert "from a random initialisation (the architecture only; no inherited weights)" in random_card.text
    hybrid = tmp_path / "grow" / "baselines" / "hybrid_stacking-3L"
    assert json.loads((hybrid / "init" / "provenance.json").read_text())["layers"] == [0, 1, 0]
    stacking = tmp_path / "grow" / "baselines" / "stacking-3L"
    assert yaml_of(stacking / "half" / "pretrain.yaml")["initialize"] == "random"
    stacked = json.loads((stacking / "init" / "provenance.json").read_text())
    assert stacked["layers"] == [0, 1, 0] and stacked["reference"]["path"] == str(
        (stacking / "half" / "train" / "final").resolve()
    )
    half = torch.load(stacking / "half" / "train" / "final" / "lit_model.pth", weights_only=True)
    start = torch.load(stacking / "init" / "lit_model.pth", weights_only=True)
    assert torch.equal(start["transformer.h.2.attn.qkv.weight"], half["transformer.h.0.attn.qkv.weight"])
    for name in ("random", "last_n", "hybrid_stacking", "stacking"):
        entry = report["baselines"][name]
        assert entry["n_layers"] == 3
        assert entry["val_loss"] == pytest.approx(
            held_out_loss(Path(entry["checkpoint"]), jsonl_corpus, tmp_path), abs=1e-4
        )
        assert f"| baseline: {name} | 3 |" in (tmp_path / "grow" / "grow.md").read_text()


def yaml_of(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n_layers", "9"], "--n_layers 9 is out of range; valid: 1..6"),
        (["--n_layers", "4", "--max_layers", "3"], "--max_layers 3 is out of range; valid: 4..6"),
        (["--grow_by", "0"], "--grow_by 0 must be 1 or more"),
        (
            ["--baselines", "random,distillation"],
            "unknown baseline 'distillation'; valid: random, last_n, hybrid_stacking, stacking, half_width",
        ),
    ],
)
def test_bad_inputs(tiny_references, jsonl_corpus, tmp_path, args, message):
    result = grow(tiny_references["llama-gqa"], jsonl_corpus, tmp_path / "grow", *args)
    assert result.returncode == 1 and message in result.stderr
    assert not (tmp_path / "grow").exists()


def test_an_error_while_growing_leaves_no_lock(tiny_references, jsonl_corpus, tmp_path, monkeypatch):
    """grow releases the lock of its out_dir however it ends: an exception in a round leaves no lock file behind,
    nor the folder that taking the lock made."""

    def failing_round(*args, **kwargs):
        raise RuntimeError("the round failed")

    monkeypatch.setattr("litgpt_inheritune.grow.train_run", failing_round)
    with pytest.raises(RuntimeError, match="the round failed"):
        grow(tiny_references["llama-gqa"], jsonl_corpus, tmp_path / "grow", "--n_layers", "2", "--baselines", "")
    assert not (tmp_path / "grow" / LOCK_FILE).exists()
    assert not (tmp_path / "grow").exists()


def test_a_grown_model_keeps_the_trained_tensors_and_adds_the_references_next_blocks():
    """--grow_from trained's surgery: the trained model's tensors replace the inherited ones they match; a trained
    tensor that the next round's model has not, or has in another shape, is refused by name."""
    from litgpt_inheritune.inherit import grown_state_dict

    qkv = "transformer.h.{}.attn.qkv.weight"
    inherited = {
        "transformer.wte.weight": torch.zeros(4, 2),
        qkv.format(0): torch.zeros(6, 2),
        qkv.format(1): torch.ones(6, 2),
    }
    trained = {"transformer.wte.weight": torch.full((4, 2), 3.0), qkv.format(0): torch.full((6, 2), 3.0)}
    grown = grown_state_dict(inherited, trained)
    assert grown.keys() == inherited.keys()
    assert all(torch.equal(grown[key], tensor) for key, tensor in trained.items())
    assert torch.equal(grown[qkv.format(1)], inherited[qkv.format(1)])
    assert grown[qkv.format(1)].data_ptr() != inherited[qkv.format(1)].data_ptr()  # a copy: init's file is rewritten
    with pytest.raises(
        ValueError, match=r"holds transformer\.h\.2\.attn\.qkv\.weight \(6, 2\), which the next round's"
    ):
        grown_state_dict(inherited, {**trained, qkv.format(2): torch.zeros(6, 2)})
    with pytest.raises(ValueError, match=r"holds transformer\.wte\.weight \(5, 2\)"):
        grown_state_dict(inherited, {"transformer.wte.weight": torch.zeros(5, 2)})


def test_rounds_train_on_several_processes(trained_reference, jsonl_corpus, tmp_path):
    """--devices 2 --strategy fsdp reach each round's pretrain, which Fabric's launcher runs as two FSDP processes
    (gloo on a CPU); the round's final/ is one plain checkpoint that grow measures."""
    result = grow(
        trained_reference,
        jsonl_corpus,
        tmp_path / "grow",
        "--n_layers",
        "6",
        "--baselines",
        "",
        "--devices",
        "2",
        "--strategy",
        "fsdp",
        "--train.micro_batch_size",
        "2",
        console_script=True,
    )
    assert result.returncode == 0, result.stderr
    assert "2 micro-batches of 2 per rank on 2 ranks" in result.stdout
    rounds = json.loads((tmp_path / "grow" / "grow.json").read_text())["rounds"]
    assert rounds[0]["n_layers"] == 6 and math.isfinite(rounds[0]["val_loss"])
    final = tmp_path / "grow" / "6L" / "train" / "final"
    assert json.loads((final / "provenance.json").read_text())["fsdp"] is True
    assert (final / "lit_model.pth").is_file()


def test_interrupted_grow_continues_to_the_same_result(trained_reference, tiny_references, jsonl_corpus, tmp_path):
    """SIGTERM (a preemption notice) during a round and during a baseline reaches the training run, which saves and
    stops; grow exits 75 and the same command continues. A kill after the baseline, before its measurement, loses
    nothing either. Each run ends with the weights an uninterrupted pretrain of the same settings gives."""
    out_dir = tmp_path / "grow"
    args = (
        str(trained_reference),
        "--config",
        str(RECIPE),
        "--data.data_dir",
        str(jsonl_corpus),
        "--out_dir",
        str(out_dir),
        "--train.max_steps",
        "2",
        "--train.save_interval",
        "1",
        "--eval.interval",
        "1000",
        "--n_layers",
        "2",
        "--max_layers",
        "2",
        "--baselines",
        "random",
    )

    def grow_stopped_at(marker: Path) -> tuple[int, str]:
        """Runs grow in this process and sends this process SIGTERM once ``marker`` exists (grow passes it on)."""
        noted = []
        previous = signal.signal(
            signal.SIGTERM, lambda number, frame: noted.append(number)
        )  # in case grow has no handler then

        def watch() -> None:
            while not marker.exists():
                time.sleep(0.005)
            os.kill(os.getpid(), signal.SIGTERM)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            code, _, stderr = run_in_process("grow", *args)
        finally:
            watcher.join()
            signal.signal(signal.SIGTERM, previous)
        assert not noted, "the signal came while grow was not running a training"
        return code, stderr

    code, stderr = grow_stopped_at(out_dir / "2L" / "train" / "step-00000001")
    assert code == PREEMPTED_EXIT_CODE, stderr
    assert (
        f"grow: stopped by SIGTERM while training {out_dir / '2L'}; run the same grow command again to continue"
        in stderr
    )
    assert not (out_dir / "grow.json").exists()
    code, stderr = grow_stopped_at(out_dir / "baselines" / "random-2L" / "train" / "step-00000001")
    assert code == PREEMPTED_EXIT_CODE, stderr
    assert json.loads((out_dir / "grow.json").read_text())["baselines"] == {}
    assert run_in_process("grow", *args)[0] == 0
    report = json.loads((out_dir / "grow.json").read_text())
    (out_dir / "grow.json").unlink()  # as if killed between the last training and its measurement
    assert run_in_process("grow", *args)[0] == 0
    assert json.loads((out_dir / "grow.json").read_text()) == report

    for run_dir in (out_dir / "2L", out_dir / "baselines" / "random-2L"):
        straight = tmp_path / "straight" / run_dir.name
        code, _, stderr = run_in_process(
            "pretrain", "--config", str(run_dir / "pretrain.yaml"), "--out_dir", str(straight), "--resume", "false"
        )
        assert code == 0, stderr
        interrupted = torch.load(run_dir / "train" / "final" / "lit_model.pth", weights_only=True)
        uninterrupted = torch.load(straight / "final" / "lit_model.pth", weights_only=True)
        assert all(torch.equal(interrupted[k], uninterrupted[k]) for k in interrupted)

    # the same out_dir with another reference is refused, naming both references, and nothing on disk changes
    other = tiny_references["llama-gqa"]
    code, _, stderr = run_in_process("grow", str(other), *args[1:])
    assert code == 1 and "Traceback" not in stderr
    assert (
        f"error: {out_dir / '2L'} was inherited from reference {trained_reference.resolve()} (sha256-zipdir:" in stderr
    )
    assert f"not from {other.resolve()} (sha256-zipdir:" in stderr
    assert json.loads((out_dir / "grow.json").read_text()) == report


def test_new_baselines_are_built_as_the_paper_describes(tiny_references, monkeypatch, tmp_path):
    """Which blocks, init options, initialisation and loss each baseline's run gets (training itself replaced)."""
    from litgpt_inheritune import grow as grow_module
    from litgpt_inheritune.distill import DistillArgs

    with pytest.raises(SystemExit, match="--distill.teacher_dir x: grow distils from the reference; leave it unset"):
        grow_module.main(tiny_references["llama-gqa"], out_dir=tmp_path / "g", distill=DistillArgs(teacher_dir="x"))

    calls = {}
    monkeypatch.setattr(
        grow_module,
        "train_run",
        lambda ref, layers, run_dir, args, initialize, init_options=None, previous=None: (
            calls.setdefault(run_dir.name, (layers, init_options, initialize, args.get("distill"))) and run_dir
        ),
    )
    distill = {"teacher_dir": "REF", "alpha": 0.6, "temperature": 1.0}
    for name in (
        "half_width",
        "attn",
        "mlp",
        "attn_mlp_no_norm",
        "distill_random",
        "distill_alternate",
        "inherit_distill",
    ):
        grow_module.train_baseline(name, Path("REF"), 16, 24, tmp_path / name, {"seed": 1}, distill)
    assert calls["half_width"] == (list(range(24)), {"half_width": True}, "checkpoint", None)
    assert calls["attn"] == (list(range(16)), {"parts": "attn,attn_norm"}, "checkpoint", None)
    assert calls["mlp"] == (list(range(16)), {"parts": "mlp,mlp_norm"}, "checkpoint", None)
    assert calls["attn_mlp_no_norm"] == (list(range(16)), {"parts": "attn,mlp"}, "checkpoint", None)
    assert calls["distill_random"] == (list(range(16)), None, "random", distill)
    # Appendix B: a 16-block student of the 24-block GPT-2 medium: blocks 0, 2, ..., 22, then 18, 19, 20, 21
    assert calls["distill_alternate"] == (
        [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 18, 19, 20, 21],
        None,
        "checkpoint",
        distill,
    )
    assert calls["inherit_distill"] == (list(range(16)), None, "checkpoint", distill)
    assert grow_module.alternate_layers(12, 24) == list(range(0, 24, 2))  # the 12-block DistilBERT student (Figure 16)
    assert grow_module.alternate_layers(6, 6) == [0, 2, 4, 1, 2, 3] and grow_module.alternate_layers(3, 3) == [0, 2, 0]


def test_grow_from_trained_with_baselines_report_plot_and_compare(
    trained_reference, jsonl_corpus, tmp_path, rounds_in_this_process
):
    from litgpt_inheritune import grow as grow_module

    analysis = tmp_path / "analysis"
    analysis.mkdir()
    (analysis / "attention.json").write_text(json.dumps({"max_rank": [9, 9, 9, 1, 9, 1], "lazy_layers": [3, 5]}))
    out = tmp_path / "grow"
    result = grow(
        trained_reference,
        jsonl_corpus,
        out,
        "--n_layers",
        "2",
        "--max_layers",
        "4",
        "--grow_from",
        "trained",
        "--baselines",
        "half_width,inherit_distill",
        "--analysis",
        str(analysis),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "grow.json").read_text())
    assert [r["n_layers"] for r in report["rounds"]] == [2, 4]
    # round 4 starts from round 2's trained model plus the reference's blocks 2 and 3
    start = torch.load(out / "4L" / "init" / "lit_model.pth", weights_only=True)
    trained = torch.load(out / "2L" / "train" / "final" / "lit_model.pth", weights_only=True)
    reference = torch.load(trained_reference / "lit_model.pth", weights_only=True)
    for key, tensor in trained.items():
        assert torch.equal(start[key], tensor), key
    for key in [k for k in reference if k.startswith(("transformer.h.2.", "transformer.h.3."))]:
        assert torch.equal(start[key], reference[key]), key
    assert not torch.equal(trained["transformer.h.0.attn.qkv.weight"], reference["transformer.h.0.attn.qkv.weight"])
    assert json.loads((out / "4L" / "init" / "provenance.json").read_text())["grown_from"] == str(
        out / "2L" / "train" / "final"
    )

    half = Config.from_file(out / "baselines" / "half_width-4L" / "train" / "final" / "model_config.yaml")
    assert (half.n_layer, half.n_embd, half.n_head, half.n_query_groups) == (6, 16, 2, 1)
    assert report["baselines"]["half_width"]["n_layers"] == 6
    distilled = yaml_of(out / "baselines" / "inherit_distill-4L" / "pretrain.yaml")["distill"]
    assert distilled == {"teacher_dir": str(trained_reference), "alpha": 0.6, "temperature": 1.0}
    log = (
        out / "baselines" / "inherit_distill-4L" / "train" / "logs" / "csv" / "version_0" / "metrics.csv"
    ).read_text()
    assert "kl_loss" in log.splitlines()[0]

    table = (out / "grow.md").read_text()
    assert "| round | 2 | 0-1 |" in table and "| 2 | 512 |" in table  # 2 steps of 8 x 32 tokens
    assert "Budget of every run: --train.epochs 1, --train.max_steps 2, --train.global_batch_size 8" in table
    assert "Validation loss: the first 5 held-out batches (640 tokens)" in table
    assert "litgpt_inheritune.redpajama.RedPajamaSample" in table and str(jsonl_corpus) in table
    assert f"Lazy layers of the reference by the analysis in {analysis}: [3, 5]." in table
    report["baselines"]["last_n"] = {"layers": "2-5"}
    assert "The last_n baseline holds blocks 2-5; lazy among them: [3, 5]." in grow_settings_text(
        report, grow_module.STARTS
    )
    assert report["settings"]["validation"] == {"batches": 5, "tokens": 640}
    assert (out / "grow.png").stat().st_size > 10_000

    runs = [out / "2L" / "train", out / "baselines" / "half_width-4L" / "train"]
    result = run_cli(
        "litgpt",
        "inheritune",
        "compare",
        f"[{runs[0]},{runs[1]}]",
        "--labels",
        "[inherited,half width]",
        "--reference_loss",
        str(report["reference"]["val_loss"]),
        "--out_dir",
        str(tmp_path / "compare"),
    )
    assert result.returncode == 0, result.stderr
    compared = json.loads((tmp_path / "compare" / "compare.json").read_text())
    for run, run_dir in zip(compared["runs"], runs):
        weights = torch.load(run_dir / "final" / "lit_model.pth", weights_only=True)
        assert run["parameters"] == sum(t.numel() for t in weights.values())
        rows = [r for r in (run_dir / "logs" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[1:]]
        assert run["steps"] == 2 and run["tokens"] == 512 and run["wall_time_s"] > 0
        assert run["curve"][-1][0] == 512 and len(rows) > 0
    assert compared["runs"][0]["val_loss"] == pytest.approx(report["rounds"][0]["val_loss"], abs=1e-4)  # same batches
    md = (tmp_path / "compare" / "compare.md").read_text()
    assert "| inherited |" in md and "| half width |" in md and (tmp_path / "compare" / "compare.png").is_file()
    code, _, stderr = run_in_process("compare", f"[{tmp_path}]", "--out_dir", str(tmp_path / "c2"))
    assert code == 1 and "is not a pretrain out_dir with csv logs" in stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("start", "init_options", "layers"),
    [
        ("laco", dict(merge="laco"), "0-2 (laco)"),  # 6 to 3 blocks: 2 absorbs 3-5 (one group of 4)
        ("bridge", dict(bridge="linear", calibration_sequences=64), "0-2 (bridge)"),
    ],
)
def test_grow_starts_each_round_from_a_depth_pruning_start(
    trained_reference, jsonl_corpus, tmp_path, rounds_in_this_process, start, init_options, layers
):
    """Each round's init checkpoint is the one `init` builds with the start's options, and is trained like any round."""
    from litgpt_inheritune.init import main as init

    result = grow(
        trained_reference,
        jsonl_corpus,
        tmp_path / "grow",
        "--n_layers",
        "3",
        "--tolerance",
        "100",
        "--baselines",
        "",
        "--start",
        start,
        "--calibration_data",
        str(jsonl_corpus),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "grow" / "grow.json").read_text())
    assert report["settings"]["start"] == start
    (entry,) = report["rounds"]
    round_init = tmp_path / "grow" / "3L" / "init"
    by_hand = init(trained_reference, out_dir=tmp_path / "by_hand", n_layers=3, data_path=jsonl_corpus, **init_options)
    expected = torch.load(by_hand / "lit_model.pth", weights_only=True)
    made = torch.load(round_init / "lit_model.pth", weights_only=True)
    assert made.keys() == expected.keys() and all(torch.equal(made[k], expected[k]) for k in made)
    assert not torch.equal(
        made["transformer.h.2.mlp.proj.weight"],
        torch.load(trained_reference / "lit_model.pth", weights_only=True)["transformer.h.2.mlp.proj.weight"],
    )  # merged or bridged, not the plain block
    assert json.loads((round_init / "provenance.json").read_text())["start"][
        "merge" if start == "laco" else "bridge"
    ] == init_options.get("merge", init_options.get("bridge"))
    table = (tmp_path / "grow" / "grow.md").read_text()
    assert f"| round | 3 | {layers} |" in table
    assert "Start of every round: " in table

    other = grow(trained_reference, jsonl_corpus, tmp_path / "grow", "--n_layers", "3", "--baselines", "")
    assert other.returncode == 1 and f"started with --start {start} but this run asks for first" in other.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--start", "shortgpt"], "--start shortgpt is not a start; valid: first, rank, block_influence, laco"),
        (["--start", "rank"], "--start rank chooses blocks by an analysis; give --analysis DIR"),
        (["--start", "bridge"], "--start bridge needs calibration text; give --calibration_data"),
        (["--start", "laco", "--grow_from", "trained"], "it needs --start first, not laco"),
    ],
)
def test_bad_starts(tiny_references, jsonl_corpus, tmp_path, args, message):
    result = grow(tiny_references["llama-gqa"], jsonl_corpus, tmp_path / "grow", *args)
    assert result.returncode == 1 and message in result.stderr
    assert not (tmp_path / "grow").exists()


def test_loss_curves_give_the_seeds_of_one_start_one_colour(tmp_path, monkeypatch):
    from litgpt_inheritune import plots

    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path, tight=True: figures.append(fig))
    runs = [
        {"label": label, "curve": [[0, 10.0 - i], [1024, 5.0 - i]]}
        for i, label in enumerate(["first (seed 42)", "first (seed 43)", "laco (seed 42)", "random"])
    ]
    plots.plot_loss_curves(runs, 3.8, tmp_path / "compare.png", "validation loss")
    lines = figures[0].axes[0].get_lines()[:4]
    assert [line.get_label() for line in lines] == [run["label"] for run in runs]
    assert lines[0].get_color() == lines[1].get_color()
    assert len({lines[0].get_color(), lines[2].get_color(), lines[3].get_color()}) == 3
    assert (lines[0].get_linestyle(), lines[1].get_linestyle(), lines[2].get_linestyle()) == ("-", "--", "-")
