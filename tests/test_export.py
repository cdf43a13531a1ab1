"""`litgpt inheritune export`: transformers loads the folder and computes the LitGPT model's logits."""

import json

from litgpt.utils import save_config
from safetensors.torch import load_file

import pytest
import torch
from litgpt.config import Config
from litgpt.model import GPT
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import make_reference, run_in_process, write_tokenizer
from litgpt_inheritune.export import main as export
from litgpt_inheritune.init import main as init


def litgpt_logits(checkpoint_dir, idx):
    model = GPT(Config.from_file(checkpoint_dir / "model_config.yaml"))
    model.load_state_dict(torch.load(checkpoint_dir / "lit_model.pth", weights_only=True))
    with torch.no_grad():
        return model.eval()(idx)


@pytest.mark.parametrize(("style", "layers"), [("llama-gqa", None), ("llama-gqa", "4,1"), ("gpt-neox", None)])
def test_transformers_reproduces_litgpt_logits(tiny_references, tmp_path, style, layers):
    checkpoint = (
        tiny_references[style]
        if layers is None
        else init(tiny_references[style], out_dir=tmp_path / "t", layers=layers)
    )
    out_dir = export(checkpoint, out_dir=tmp_path / "hf", dtype="float32")
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    } <= {p.name for p in out_dir.iterdir()}
    hf = AutoModelForCausalLM.from_pretrained(out_dir).eval()
    assert hf.config.num_hidden_layers == (2 if layers else Config.from_file(checkpoint / "model_config.yaml").n_layer)
    idx = torch.randint(0, 320, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, litgpt_logits(checkpoint, idx), rtol=0, atol=1e-4)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    assert tokenizer("the early layers").input_ids


def test_real_inherited_model_exports_in_bfloat16(smollm2, tmp_path):
    """SmolLM2's first 6 blocks, exported in bf16 through the CLI (in this process; test_cli runs the console
    scripts), loaded by transformers: same greedy tokens."""
    target = init(smollm2, out_dir=tmp_path / "smol-6L", n_layers=6)
    code, _, stderr = run_in_process("export", str(target), "--out_dir", str(tmp_path / "hf"), "--dtype", "bfloat16")
    assert code == 0, stderr
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["num_hidden_layers"] == 6 and config["num_key_value_heads"] == 3 and config["dtype"] == "bfloat16"
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    idx = AutoTokenizer.from_pretrained(tmp_path / "hf")(
        "The capital of France is Paris, and the capital", return_tensors="pt"
    ).input_ids
    expected = litgpt_logits(target, idx)
    with torch.no_grad():
        actual = hf(idx).logits
    assert (actual - expected).abs().max() < 0.5  # bf16 rounding of the weights
    assert (actual.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9


def test_bad_inputs(tiny_references, tmp_path):
    # litgpt gives Gemma's RMSNorm (1 + weight) only to names containing "Gemma": "tiny-gemma-2" computes without it
    with pytest.raises(SystemExit, match="tiny-gemma-2 cannot be exported: the Gemma-2 export .* always has Gemma's"):
        export(tiny_references["gemma-2"], out_dir=tmp_path / "g")
    with pytest.raises(SystemExit, match=r"is missing the files: \['lit_model.pth', 'model_config.yaml'\]"):
        export(tmp_path, out_dir=tmp_path / "x")
    assert not (tmp_path / "g").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_default_export_keeps_the_checkpoint_dtype(tmp_path, dtype):
    """By default the weights are written in the checkpoint's own dtype, bit for bit (no bf16 rounding)."""
    checkpoint = make_reference(tmp_path / "ref")
    weights = {k: v.to(dtype) for k, v in torch.load(checkpoint / "lit_model.pth", weights_only=True).items()}
    torch.save(weights, checkpoint / "lit_model.pth")
    out_dir = export(checkpoint, out_dir=tmp_path / "hf")
    assert json.loads((out_dir / "config.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")
    saved = load_file(out_dir / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {dtype}
    assert torch.equal(saved["model.embed_tokens.weight"], weights["transformer.wte.weight"])
    assert torch.equal(saved["model.layers.3.mlp.down_proj.weight"], weights["transformer.h.3.mlp.proj.weight"])
    assert torch.equal(saved["lm_head.weight"], weights["lm_head.weight"])


def test_llama_3_rope_scaling_exports(tmp_path):
    """A Llama-3.2-shaped model (llama3 RoPE frequency scaling, GQA), scaled down: transformers reads
    the rope_scaling it is given and its logits equal LitGPT's."""
    config = Config.from_name(
        "Llama-3.2-1B",
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_query_groups=2,
        head_size=16,
        intermediate_size=96,
        vocab_size=320,
        padded_vocab_size=320,
        block_size=256,
    )
    assert config.rope_adjustments["original_max_seq_len"] == 8192 and config.rope_base == 500000
    checkpoint = tmp_path / "llama-3.2"
    checkpoint.mkdir()
    torch.manual_seed(0)
    torch.save(GPT(config).state_dict(), checkpoint / "lit_model.pth")
    save_config(config, checkpoint)
    write_tokenizer(checkpoint, config.vocab_size)
    out_dir = export(checkpoint, out_dir=tmp_path / "hf")
    assert json.loads((out_dir / "config.json").read_text())["rope_scaling"] == {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    hf = AutoModelForCausalLM.from_pretrained(out_dir).eval()
    idx = torch.randint(0, 320, (2, 200), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, litgpt_logits(checkpoint, idx), rtol=0, atol=1e-4)
