"""`litgpt inheritune export`: transformers loads the folder and computes the LitGPT model's logits."""

import json

import pytest
import torch
from litgpt.config import Config
from litgpt.model import GPT
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_cli
from litgpt_inheritune.export import main as export
from litgpt_inheritune.init import main as init


def litgpt_logits(checkpoint_dir, idx):
    model = GPT(Config.from_file(checkpoint_dir / "model_config.yaml"))
    model.load_state_dict(torch.load(checkpoint_dir / "lit_model.pth", weights_only=True))
    with torch.no_grad():
        return model.eval()(idx)


@pytest.mark.parametrize(("style", "layers"), [("llama-gqa", None), ("llama-gqa", "4,1"), ("gpt-neox", None)])
def test_transformers_reproduces_litgpt_logits(tiny_references, tmp_path, style, layers):
    checkpoint = tiny_references[style] if layers is None else init(tiny_references[style], out_dir=tmp_path / "t", layers=layers)
    out_dir = export(checkpoint, out_dir=tmp_path / "hf", dtype="float32")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= {p.name for p in out_dir.iterdir()}
    hf = AutoModelForCausalLM.from_pretrained(out_dir).eval()
    assert hf.config.num_hidden_layers == (2 if layers else Config.from_file(checkpoint / "model_config.yaml").n_layer)
    idx = torch.randint(0, 320, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, litgpt_logits(checkpoint, idx), rtol=0, atol=1e-4)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    assert tokenizer("the early layers").input_ids


def test_real_inherited_model_exports_in_bfloat16(smollm2, tmp_path):
    """SmolLM2's first 6 blocks, exported in bf16 through the CLI, loaded by transformers: same greedy tokens."""
    target = init(smollm2, out_dir=tmp_path / "smol-6L", n_layers=6)
    run_cli("litgpt", "inheritune", "export", str(target), "--out_dir", str(tmp_path / "hf"), check=True)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["num_hidden_layers"] == 6 and config["num_key_value_heads"] == 3 and config["torch_dtype"] == "bfloat16"
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    idx = AutoTokenizer.from_pretrained(tmp_path / "hf")("The capital of France is Paris, and the capital", return_tensors="pt").input_ids
    expected = litgpt_logits(target, idx)
    with torch.no_grad():
        actual = hf(idx).logits
    assert (actual - expected).abs().max() < 0.5  # bf16 rounding of the weights
    assert (actual.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9


def test_bad_inputs(tiny_references, tmp_path):
    with pytest.raises(SystemExit, match="cannot be exported to a Hugging Face architecture yet \\(it uses scale_embeddings"):
        export(tiny_references["gemma-2"], out_dir=tmp_path / "g")
    with pytest.raises(SystemExit, match="is missing lit_model.pth or model_config.yaml"):
        export(tmp_path, out_dir=tmp_path / "x")
    assert not (tmp_path / "g").exists() and not (tmp_path / "x").exists()
