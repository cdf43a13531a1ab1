"""litgpt's checkpoint conventions: `org/model` for `checkpoints/org/model`, a missing hub model downloaded by litgpt's
own function, and stock `litgpt pretrain <registered name> --initial_checkpoint_dir <derived checkpoint>`."""

import json
import shutil

import pytest
import torch
import yaml

from conftest import make_reference, write_jsonl_corpus
from litgpt_inheritune.analyze import main as analyze
from litgpt_inheritune.evaluate import main as evaluate
from litgpt_inheritune.export import main as export
from litgpt_inheritune.grow import main as grow
from litgpt_inheritune.init import main as init


def test_org_model_names_and_downloads_as_in_litgpt(tmp_path, monkeypatch):
    """Every command that reads a checkpoint takes `org/model` for checkpoints/org/model, and downloads a missing one
    with litgpt's download_from_hub (replaced here by a local copy: nothing is downloaded in tests)."""
    import litgpt.scripts.download

    monkeypatch.chdir(tmp_path)
    make_reference(tmp_path / "checkpoints" / "org" / "ref")
    downloads = []

    def fake_download(repo_id, access_token=None, **kwargs):
        downloads.append(repo_id)
        if repo_id == "org/gated":
            raise ValueError("gated repository")
        shutil.copytree(tmp_path / "checkpoints" / "org" / "ref", tmp_path / "checkpoints" / repo_id)

    monkeypatch.setattr(litgpt.scripts.download, "download_from_hub", fake_download)
    target = init("org/ref", n_layers=2, out_dir=tmp_path / "target")
    assert yaml.safe_load((target / "model_config.yaml").read_text())["n_layer"] == 2
    assert str((tmp_path / "checkpoints" / "org" / "ref").resolve()) in (target / "provenance.json").read_text()
    assert export("org/ref", out_dir=tmp_path / "hf").joinpath("model.safetensors").is_file()
    with pytest.raises(SystemExit, match="unknown task 'piqq'"):  # past the checkpoint checks: the folder was found
        evaluate("org/ref", tasks="piqq")
    with pytest.raises(SystemExit, match="unknown baseline 'nope'"):
        grow("org/ref", baselines="nope")
    text = tmp_path / "text.txt"
    text.write_text(" ".join(["the early layers carry most of the knowledge"] * 40))
    result = analyze("org/ref", data_path=text, out_dir=tmp_path / "analysis", num_sequences=2, seq_len=8, plots=False)
    assert len(result["max_rank"]) == 6
    assert downloads == []

    assert export("org/new", out_dir=tmp_path / "hf-new").joinpath("config.json").is_file()
    assert downloads == ["org/new"] and (tmp_path / "checkpoints" / "org" / "new" / "lit_model.pth").is_file()
    with pytest.raises(
        SystemExit,
        match=r"org/gated is neither a folder nor checkpoints/org/gated, and downloading it .* \(gated repository\)",
    ):
        init("org/gated", n_layers=2)
    assert downloads == ["org/new", "org/gated"]


def test_stock_litgpt_pretrain_takes_a_derived_checkpoint_by_its_registered_name(tmp_path, monkeypatch):
    """`litgpt pretrain <name>-inheritune-<n>L --initial_checkpoint_dir <init output>`: the registered config has the
    derived shape, so litgpt loads the weights strictly (at learning rate 0 they come out unchanged). The test
    registers a tiny config the way the package registers open_llama_3b-inheritune-13L (too large for a CPU test) and
    runs litgpt's own CLI in this process: stock pretrain saves its hyperparameters by re-parsing sys.argv, so it must
    be called as the command line it is (a Python call of its setup() from pytest fails there)."""
    import litgpt.config
    from litgpt.__main__ import main as litgpt_main

    target = init(make_reference(tmp_path / "tiny-llama"), n_layers=3, out_dir=tmp_path / "tiny-llama-inheritune-3L")
    registered = yaml.safe_load((target / "model_config.yaml").read_text())
    assert registered["name"] == "tiny-llama-inheritune-3L"
    monkeypatch.setitem(litgpt.config.name_to_config, registered["name"], registered)
    monkeypatch.setattr(litgpt.config, "configs", [*litgpt.config.configs, registered])
    # stock pretrain always compiles the model; on a CPU that costs a minute and changes no number
    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda precision: None)  # litgpt's main sets it globally

    texts = tmp_path / "texts"
    texts.mkdir()
    corpus = write_jsonl_corpus(tmp_path / "corpus", n_documents=40)
    for i, line in enumerate((corpus / "sample.jsonl").read_text().splitlines()):
        (texts / f"{i:03d}.txt").write_text(json.loads(line)["text"])
    monkeypatch.setattr(
        "sys.argv",
        [
            "litgpt",
            "pretrain",
            "tiny-llama-inheritune-3L",
            "--initial_checkpoint_dir",
            str(target),
            "--tokenizer_dir",
            str(target),
            "--out_dir",
            str(tmp_path / "stock"),
            "--data",
            "TextFiles",
            "--data.train_data_path",
            str(texts),
            "--data.num_workers",
            "1",
            "--devices",
            "1",
            "--logger_name",
            "csv",
            "--precision",
            "32-true",
            "--optimizer",
            '{"class_path": "torch.optim.SGD", "init_args": {"lr": 0.0}}',
            "--train.save_interval",
            "null",
            "--train.log_interval",
            "1",
            "--train.global_batch_size",
            "2",
            "--train.micro_batch_size",
            "2",
            "--train.max_tokens",
            "200",
            "--train.max_seq_length",
            "32",
            "--train.lr_warmup_steps",
            "1",
            "--train.max_norm",
            "1.0",
            "--train.min_lr",
            "0.0",
            "--eval.interval",
            "1000",
            "--eval.max_iters",
            "1",
            "--eval.final_validation",
            "false",
        ],
    )
    litgpt_main()
    trained = torch.load(tmp_path / "stock" / "final" / "lit_model.pth", weights_only=True)
    trained = trained.get("model", trained)
    derived = torch.load(target / "lit_model.pth", weights_only=True)
    assert set(trained) == set(derived)
    assert all(torch.equal(trained[name], derived[name]) for name in derived)
