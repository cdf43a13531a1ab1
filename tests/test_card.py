"""The model card that `export` writes (and `card` writes again), `export --push_to_hub` up to the network, and
`evaluate --reference`: on a tiny inherited model trained for two steps and scored on real benchmark items."""

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from litgpt.args import EvalArgs

from conftest import make_reference, run_cli, run_in_process, write_jsonl_corpus
from litgpt_inheritune.evaluate import main as evaluate
from litgpt_inheritune.export import main as export
from litgpt_inheritune.init import main as init
from litgpt_inheritune.pretrain import setup as pretrain
from test_pretrain import data_module, train_args

TASKS = "piqa_offline,boolq_offline"
LIMIT = 4


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def derived(tmp_path_factory, offline_tasks) -> dict:
    """A reference laid out as `litgpt download` writes one (checkpoints/ORG/NAME), its first 3 of 6 blocks, two
    optimizer steps of pretrain, and evaluate with --reference on 4 PIQA and BoolQ items each."""
    root = tmp_path_factory.mktemp("card")
    reference = make_reference(root / "checkpoints" / "HuggingFaceTB" / "SmolLM2-tiny")
    target = init(reference, out_dir=root / "init", n_layers=3)
    data = data_module(
        write_jsonl_corpus(root / "corpus", n_documents=100),
        token_budget=5_000,
        val_tokens=1_000,
        cache_dir=root / "litdata",
    )
    train = train_args(lr_warmup_steps=1, max_steps=2)
    pretrain(target, out_dir=root / "train", data=data, train=train, eval=EvalArgs(interval=1, max_iters=2))
    final = root / "train" / "final"
    evaluate(
        final,
        tasks=TASKS,
        include_path=offline_tasks,
        limit=LIMIT,
        out_dir=root / "eval",
        reference=reference,
        log_samples=True,
    )
    return {"root": root, "reference": reference, "init": target, "final": final, "eval": root / "eval"}


def card_of(folder: Path) -> ModelCard:
    return ModelCard.load(folder / "README.md")


def python_blocks(card: ModelCard) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card.text, re.S)


def file_hashes(folder: Path) -> dict:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.iterdir()
        if path.name not in ("README.md", "inheritune_lineage.json", "loss.png", "max_rank.png")
    }


def test_card_metadata_results_and_lineage(derived, tmp_path):
    out_dir = tmp_path / "hf"
    code, _, stderr = run_in_process(
        "export", str(derived["final"]), "--out_dir", str(out_dir), "--eval_dir", str(derived["eval"])
    )
    assert code == 0, stderr
    card = card_of(out_dir)
    data = card.data
    assert data.base_model == "HuggingFaceTB/SmolLM2-tiny"  # checkpoints/ORG/NAME
    assert data.license == "apache-2.0"  # SmolLM2's, from the table of known references
    assert (data.library_name, data.pipeline_tag) == ("transformers", "text-generation")
    assert data.tags == ["inheritune", "litgpt", "llama"]

    # model-index: every task with the value, shots and items of evaluate's results.json
    results = json.loads((derived["eval"] / "results.json").read_text())
    assert [r.dataset_name for r in data.eval_results] == TASKS.split(",")
    for entry in data.eval_results:
        assert entry.metric_type == "acc"
        assert entry.metric_value == results["results"][entry.dataset_name]["acc,none"]
        assert entry.metric_args["stderr"] == results["results"][entry.dataset_name]["acc_stderr,none"] > 0
        assert entry.dataset_args["num_few_shot"] == results["n-shot"][entry.dataset_name] == 0
        assert entry.dataset_args["items"] == LIMIT
    assert {r.dataset_type for r in data.eval_results} == {"ybisk/piqa", "google/boolq"}

    # lineage: the blocks, reference and checksum init recorded; steps and tokens counted by hand (2 x 8 x 32)
    provenance = json.loads((derived["init"] / "provenance.json").read_text())
    lineage = json.loads((out_dir / "inheritune_lineage.json").read_text())["lineage"]
    assert lineage["inherited"]["layers"] == provenance["layers"] == [0, 1, 2]
    assert lineage["reference"]["checksum"] == provenance["reference"]["checksum"]
    assert lineage["reference"]["n_layer"] == provenance["reference"]["n_layer"] == 6
    assert (lineage["training"][0]["steps"], lineage["training"][0]["tokens"]) == (2, 2 * 8 * 32)
    manifest = json.loads(next((derived["root"] / "litdata").glob("*/manifest.json")).read_text())
    sample = lineage["training"][0]["sample"]
    assert sample["train_tokens"] == manifest["train"]["tokens"]
    assert (derived["root"] / "litdata" / sample["content_key"] / "manifest.json").is_file()
    text = card.text
    assert "| blocks kept | [0, 1, 2] of the reference: the first 3 (a prefix, as in the paper) |" in text
    assert "2 optimizer steps of 8 sequences x 32 tokens = 512 tokens" in text
    assert provenance["reference"]["checksum"] in text
    with open(derived["root"] / "train" / "logs" / "csv" / "version_0" / "metrics.csv") as f:
        last = [float(row["val_loss"]) for row in csv.DictReader(f) if row["val_loss"]][-1]
    assert lineage["training"][0]["val_loss"] == last and f"| final validation loss | {last:.4f} |" in text

    # results beside the reference's (scored on the same items) and chance
    reference = json.loads((derived["eval"] / "reference" / "results.json").read_text())
    for task in TASKS.split(","):
        ours, theirs = results["results"][task], reference["results"][task]
        chance = {"piqa_offline": "50.00", "boolq_offline": "62.20"}[task]
        assert (
            f"| {task} | 0 | acc | {100 * ours['acc,none']:.2f} ± {100 * ours['acc_stderr,none']:.2f}"
            f" | {100 * theirs['acc,none']:.2f} ± {100 * theirs['acc_stderr,none']:.2f} | {chance} |"
        ) in text
    assert "![training and validation loss](loss.png)" in text
    assert (out_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "Scores come from 4 items per task" in text


def test_the_cards_snippets_load_the_model(derived, tmp_path):
    """The card's transformers snippet, run as written, loads the export; its LitGPT snippet converts the folder
    back into the very tensors of the checkpoint."""
    out_dir = export(derived["final"], out_dir=tmp_path / "hf")
    transformers_snippet, litgpt_snippet = python_blocks(card_of(out_dir))
    namespace = {}
    exec(transformers_snippet, namespace)
    assert namespace["model_id"] == str(out_dir)
    assert namespace["model"].config.num_hidden_layers == 3

    copy = shutil.copytree(out_dir, tmp_path / "copy")
    exec(litgpt_snippet.replace(str(out_dir), str(copy)), {})
    converted = torch.load(copy / "lit_model.pth", weights_only=True)
    original = torch.load(derived["final"] / "lit_model.pth", weights_only=True)
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[key], original[key]) for key in original)
    assert yaml.safe_load((copy / "model_config.yaml").read_text())["n_layer"] == 3


def test_push_to_hub_up_to_the_network(derived, tmp_path, monkeypatch):
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])  # complete before the upload starts
        calls.append(("upload_folder", kwargs, sorted(p.name for p in folder.iterdir())))
        return "https://huggingface.co/me/tiny/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 30)
    out_dir = tmp_path / "hf"
    code, _, stderr = run_in_process(
        "export",
        str(derived["final"]),
        "--out_dir",
        str(out_dir),
        "--push_to_hub",
        "me/tiny",
        "--private",
        "true",
        "--revision",
        "v1",
        "--commit_message",
        "first upload",
    )
    assert code == 0, stderr
    assert calls[0] == ("create_repo", "me/tiny", {"repo_type": "model", "private": True, "exist_ok": True})
    assert calls[1] == ("create_branch", "me/tiny", {"branch": "v1", "repo_type": "model", "exist_ok": True})
    name, arguments, files = calls[2]
    assert arguments == {
        "repo_id": "me/tiny",
        "folder_path": out_dir,
        "repo_type": "model",
        "revision": "v1",
        "commit_message": "first upload",
    }
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "model_config.yaml"} <= set(files)
    card = card_of(out_dir)
    assert card.data.model_name == "tiny"
    assert 'model_id = "me/tiny"' in python_blocks(card)[0]


def test_push_without_a_token_or_network_keeps_the_folder(derived, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    out_dir = tmp_path / "hf"
    code, _, stderr = run_in_process(
        "export", str(derived["final"]), "--out_dir", str(out_dir), "--push_to_hub", "me/x"
    )
    assert code == 1
    exported, error = stderr.strip().splitlines()[-2:]  # the export's own line, then one line about the push
    assert exported.startswith(f"Exported tiny-llama-inheritune-3L to {out_dir}")
    assert error == (
        f"error: --push_to_hub me/x: no Hugging Face token (run `hf auth login` or set HF_TOKEN); the folder"
        f" {out_dir} is complete; upload it later with `hf upload me/x {out_dir}`"
    )
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out_dir).config.num_hidden_layers == 3
    assert (out_dir / "README.md").is_file()

    # a token but the Hub unreachable (an endpoint where nothing listens: a real failed connection): one line
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 30)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    before = file_hashes(out_dir)
    code, _, stderr = run_in_process(
        "export", str(derived["final"]), "--out_dir", str(out_dir), "--overwrite", "true", "--push_to_hub", "me/x"
    )
    exported, error = stderr.strip().splitlines()[-2:]
    assert code == 1 and exported.startswith(f"Exported tiny-llama-inheritune-3L to {out_dir}")
    assert error.startswith("error: --push_to_hub me/x failed (ConnectionError: ") and str(out_dir) in error
    assert file_hashes(out_dir) == before


def test_bad_inputs_write_nothing(derived, tmp_path):
    for flags, message in (
        (["--eval_dir", str(tmp_path)], f"--eval_dir {tmp_path} holds no results.json"),
        (["--push_to_hub", "not a repo"], "--push_to_hub not a repo is not a Hugging Face repository id"),
        (["--push_to_hub", "name-only"], "--push_to_hub name-only is not a Hugging Face repository id"),
        (["--analysis", str(tmp_path)], f"--analysis {tmp_path} holds no attention.json"),
        (
            ["--eval_dir", str(derived["eval"] / "reference")],
            "holds the scores of tiny-llama, not of this model (tiny-llama-inheritune-3L)",
        ),
    ):
        code, _, stderr = run_in_process("export", str(derived["final"]), "--out_dir", str(tmp_path / "hf"), *flags)
        assert code == 1 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert not (tmp_path / "hf").exists()
    code, _, stderr = run_in_process("card", str(derived["final"]))
    assert (
        code == 1 and "holds no inheritune_lineage.json; give a folder written by `litgpt inheritune export`" in stderr
    )


def test_card_command_adds_evaluation_and_leaves_the_weights(derived, tmp_path):
    """`litgpt inheritune card` (the console script) writes the card again with an evaluation done after export."""
    out_dir = export(derived["final"], out_dir=tmp_path / "hf")
    assert card_of(out_dir).data.eval_results is None
    assert "Not evaluated yet" in card_of(out_dir).text
    before = file_hashes(out_dir)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir() if p.name in before}
    run_cli("litgpt", "inheritune", "card", str(out_dir), "--eval_dir", str(derived["eval"]), check=True)
    card = card_of(out_dir)
    results = json.loads((derived["eval"] / "results.json").read_text())
    assert [r.metric_value for r in card.data.eval_results] == [
        results["results"][task]["acc,none"] for task in TASKS.split(",")
    ]
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-tiny"
    assert file_hashes(out_dir) == before
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir() if p.name in before} == mtimes

    # without --eval_dir the recorded one is read again, so a later evaluate into it reaches the card
    code, _, stderr = run_in_process("card", str(out_dir), "--repo_id", "me/tiny")
    assert code == 0, stderr
    assert card_of(out_dir).data.eval_results == card.data.eval_results
    assert 'model_id = "me/tiny"' in python_blocks(card_of(out_dir))[0]


def test_evaluate_reference_scores_the_same_items_as_a_separate_run(derived, offline_tasks, tmp_path):
    """The reference's scores and per-item log-likelihoods from `evaluate --reference` equal those of evaluating
    the reference on its own."""
    alone = evaluate(
        derived["reference"], tasks=TASKS, include_path=offline_tasks, limit=LIMIT, out_dir=tmp_path, log_samples=True
    )
    together = json.loads((derived["eval"] / "reference" / "results.json").read_text())
    for task in TASKS.split(","):
        assert together["results"][task] == alone["results"][task]
        assert (
            together["n-samples"][task]
            == alone["n-samples"][task]
            == {"original": together["n-samples"][task]["original"], "effective": LIMIT}
        )

        def loglikelihoods(folder):
            (samples,) = folder.glob(f"samples_{task}_*.jsonl")
            return [json.loads(line)["resps"] for line in samples.read_text().splitlines()]

        assert loglikelihoods(derived["eval"] / "reference") == loglikelihoods(tmp_path)
    ours = json.loads((derived["eval"] / "results.json").read_text())
    assert ours["reference_eval_dir"] == str((derived["eval"] / "reference").resolve())
    header = (derived["eval"] / "results.md").read_text().splitlines()[0]
    assert "tiny-llama-inheritune-3L (3 layers) | tiny-llama (6 layers) | chance" in header


def test_the_readme_shows_the_card_export_wrote_for_the_demo():
    """The README's example is the card file written by the demo's export (docs/demo_card/), byte for byte; it
    loads, and its model-index holds the scores of the evaluation it records."""
    root = Path(__file__).resolve().parent.parent
    card_file = root / "docs" / "demo_card" / "README.md"
    assert f"````markdown\n{card_file.read_text()}````" in (root / "README.md").read_text()
    card = ModelCard.load(card_file)
    assert (card.data.base_model, card.data.license) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")
    record = json.loads((root / "docs" / "demo_card" / "inheritune_lineage.json").read_text())
    results = record["evaluation"]["results"]
    assert [(r.dataset_name, r.metric_value) for r in card.data.eval_results] == [
        (task, results["results"][task]["acc,none"]) for task in results["tasks"]
    ]
    assert record["lineage"]["inherited"]["layers"] == [0, 1, 2, 3]
    for picture in ("loss.png", "max_rank.png"):
        assert f"]({picture})" in card.text and (card_file.parent / picture).read_bytes()[:4] == b"\x89PNG"


def test_blocks_chosen_by_an_analysis_without_training(tiny_references, jsonl_corpus, tmp_path):
    """init --select rank from an analysis, exported untrained: the card names the measure and rule, copies the
    analysis' rank plot, and, for a reference with no known license or Hub id, says so."""
    from litgpt_inheritune.analyze import main as analyze

    reference = tiny_references["llama-gqa"]
    analysis = tmp_path / "analysis"
    analyze(reference, data_path=jsonl_corpus / "sample.jsonl", out_dir=analysis, num_sequences=2, seq_len=8)
    target = init(reference, out_dir=tmp_path / "init", n_layers=2, select="rank", keep="window", analysis=analysis)
    chosen = json.loads((target / "provenance.json").read_text())["selection"]["layers"]
    card = card_of(export(target, out_dir=tmp_path / "hf"))
    assert card.data.base_model is None and card.data.license == "other"
    assert card.data.eval_results is None
    assert (
        f"| blocks kept | {chosen} of the reference: chosen by `init --select rank --keep window` from the analysis"
        f" {(analysis / 'attention.json').resolve()} |"
    ) in card.text
    assert "inherits 2 of the reference's blocks and was not trained after that." in card.text
    assert "the reference's license was not found on disk" in card.text
    assert (tmp_path / "hf" / "max_rank.png").read_bytes() == (analysis / "max_rank.png").read_bytes()
    assert "## Training loss" not in card.text and "Not evaluated yet" in card.text
