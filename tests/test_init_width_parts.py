"""`init --half_width` and `init --parts`: the paper's half-width baseline (Table 1) and sub-module ablation (Table 2)."""

import json
import math

import pytest
import torch
import yaml

from conftest import TINY_CONFIGS, run_in_process
from litgpt_inheritune.init import main as init


def load(directory) -> dict:
    return torch.load(directory / "lit_model.pth", weights_only=True)


def expected_half(reference: dict, key: str, cfg: dict) -> torch.Tensor:
    """The half-width tensor, written from the shapes by heads (independent of init's row indices)."""
    d, d2 = cfg["n_embd"], cfg["n_embd"] // 2
    H, G = cfg["n_head"], cfg.get("n_query_groups") or cfg["n_head"]
    hs = cfg.get("head_size") or d // H
    G2 = 1 if G == 1 else G // 2
    H2 = H // 2 if G == 1 else G2 * (H // G)
    I = cfg.get("intermediate_size") or 4 * d
    t = reference[key]
    if key.endswith("attn.qkv.weight") or key.endswith("attn.qkv.bias"):
        q, k, v = t.split((H * hs, G * hs, G * hs))
        heads = lambda x, n: x.reshape(-1, hs, *x.shape[1:])[:n].reshape(n * hs, *x.shape[1:])  # noqa: E731
        cut = torch.cat((heads(q, H2), heads(k, G2), heads(v, G2)))
        return cut[:, :d2] if t.dim() == 2 else cut
    if key.endswith("attn.proj.weight"):
        return t[:d2].reshape(d2, H, hs)[:, :H2].reshape(d2, H2 * hs)
    if ".mlp.proj.weight" in key:
        return t[:d2, : I // 2]
    if ".mlp.fc" in key:
        return t[: I // 2, :d2] if t.dim() == 2 else t[: I // 2]
    if key in ("transformer.wte.weight", "lm_head.weight"):
        return t[:, :d2]
    return t if key == "lm_head.bias" else t[:d2]  # norms, attn.proj.bias, mlp.proj.bias


@pytest.mark.parametrize("style", ["llama-gqa", "gpt-neox", "gemma-2"])
def test_half_width_copies_the_first_heads_groups_and_channels(tiny_references, tmp_path, style):
    reference_dir = tiny_references[style]
    out_dir = init(reference_dir, out_dir=tmp_path / "half", half_width=True)
    reference, target = load(reference_dir), load(out_dir)
    cfg = TINY_CONFIGS[style]
    assert set(target) == set(reference)  # every block kept
    for key in reference:
        assert torch.equal(target[key], expected_half(reference, key, cfg)), key
    config = yaml.safe_load((out_dir / "model_config.yaml").read_text())
    halved = {"llama-gqa": (16, 2, 1, 8, 24), "gpt-neox": (16, 2, 2, 8, 64), "gemma-2": (16, 2, 1, 16, 24)}[style]
    assert (
        config["n_embd"],
        config["n_head"],
        config["n_query_groups"],
        config["head_size"],
        config["intermediate_size"],
    ) == halved
    assert config["n_layer"] == cfg["n_layer"]
    provenance = json.loads((out_dir / "provenance.json").read_text())
    assert provenance["half_width"] is True and provenance["layers"] == list(range(cfg["n_layer"]))
    assert not (out_dir / "config.json").exists()  # the reference's describes the full width


def test_half_width_forward_equals_transformers_on_the_narrow_weights(tiny_references, tmp_path):
    """The half-width LLaMA (GQA) computes what transformers' Llama computes with the reference's narrow slices."""
    from litgpt.config import Config
    from litgpt.model import GPT
    from transformers import LlamaConfig, LlamaForCausalLM

    reference_dir = tiny_references["llama-gqa"]
    out_dir = init(reference_dir, out_dir=tmp_path / "half", layers="0,1,2", half_width=True)
    cfg = TINY_CONFIGS["llama-gqa"]
    reference = load(reference_dir)
    hs, d2 = 8, 16  # 4 heads of 8 in 32 channels, 2 groups -> 2 heads (1 group) in 16 channels
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=320,
            hidden_size=d2,
            intermediate_size=24,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=hs,
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
            rope_theta=10000,
            tie_word_embeddings=False,
            attention_bias=False,
            mlp_bias=False,
        )
    ).eval()
    sd = {
        "model.embed_tokens.weight": reference["transformer.wte.weight"][:, :d2],
        "model.norm.weight": reference["transformer.ln_f.weight"][:d2],
        "lm_head.weight": reference["lm_head.weight"][:, :d2],
    }
    for i in range(3):
        qkv = reference[f"transformer.h.{i}.attn.qkv.weight"]  # rows: 4 query heads, 2 key heads, 2 value heads
        sd |= {
            f"model.layers.{i}.self_attn.q_proj.weight": qkv[0:16, :d2],
            f"model.layers.{i}.self_attn.k_proj.weight": qkv[32:40, :d2],
            f"model.layers.{i}.self_attn.v_proj.weight": qkv[48:56, :d2],
            f"model.layers.{i}.self_attn.o_proj.weight": reference[f"transformer.h.{i}.attn.proj.weight"][:d2, :16],
            f"model.layers.{i}.mlp.gate_proj.weight": reference[f"transformer.h.{i}.mlp.fc_1.weight"][:24, :d2],
            f"model.layers.{i}.mlp.up_proj.weight": reference[f"transformer.h.{i}.mlp.fc_2.weight"][:24, :d2],
            f"model.layers.{i}.mlp.down_proj.weight": reference[f"transformer.h.{i}.mlp.proj.weight"][:d2, :24],
            f"model.layers.{i}.input_layernorm.weight": reference[f"transformer.h.{i}.norm_1.weight"][:d2],
            f"model.layers.{i}.post_attention_layernorm.weight": reference[f"transformer.h.{i}.norm_2.weight"][:d2],
        }
    hf.load_state_dict(sd, strict=True)
    model = GPT(Config.from_file(out_dir / "model_config.yaml"))
    model.load_state_dict(load(out_dir))
    idx = torch.randint(0, cfg["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(idx)[..., :320], hf(idx).logits, rtol=0, atol=1e-5)


def test_half_width_of_smollm2_keeps_whole_query_groups(smollm2, tmp_path):
    """SmolLM2-135M: 9 query heads in 3 groups of 3 -> 1 group with its 3 query heads; 576 -> 288 channels."""
    out_dir = init(smollm2, out_dir=tmp_path / "half", layers="0,1", half_width=True)
    config = yaml.safe_load((out_dir / "model_config.yaml").read_text())
    assert (
        config["n_embd"],
        config["n_head"],
        config["n_query_groups"],
        config["head_size"],
        config["intermediate_size"],
    ) == (288, 3, 1, 64, 768)
    reference, target = load(smollm2), load(out_dir)
    qkv = reference["transformer.h.1.attn.qkv.weight"]  # 9 query heads, 3 key heads, 3 value heads of 64
    expected = torch.cat((qkv[: 3 * 64], qkv[9 * 64 : 10 * 64], qkv[12 * 64 : 13 * 64]))[:, :288]
    assert torch.equal(target["transformer.h.1.attn.qkv.weight"], expected)
    from litgpt_inheritune.checkpoint import load_gpt

    with torch.no_grad():
        assert torch.isfinite(load_gpt(out_dir)(torch.tensor([[1, 2, 3]]))).all()


PARTS = {
    "attn,attn_norm": ("attn", "norm_1"),
    "mlp,mlp_norm": ("mlp", "norm_2"),
    "attn,mlp": ("attn", "mlp"),
    "attn": ("attn",),
}


@pytest.mark.parametrize("parts", list(PARTS))
def test_parts_inherit_only_the_named_sub_modules(tiny_references, tmp_path, parts):
    reference_dir = tiny_references["llama-gqa"]
    out_dir = init(reference_dir, out_dir=tmp_path / "parts", n_layers=4, parts=parts)
    reference, target = load(reference_dir), load(out_dir)
    n_embd, n_layer = 32, 4
    for key, tensor in target.items():
        if not key.startswith("transformer.h."):
            assert torch.equal(tensor, reference[key]), key  # embedding, final norm, head
            continue
        sub = key.split(".")[3]
        if sub in PARTS[parts]:
            assert torch.equal(tensor, reference[key]), key
        elif sub.startswith("norm"):
            assert torch.equal(tensor, torch.ones_like(tensor)), key  # litgpt's fresh RMSNorm
        else:
            assert not torch.allclose(tensor, reference[key]), key
            # litgpt pretrain's initialisation (GPT-NeoX): std sqrt(2 / 5 / n_embd), output projections 1 / sqrt(n_embd) / n_layer
            std = 1 / math.sqrt(n_embd) / n_layer if key.endswith("proj.weight") else math.sqrt(2 / 5 / n_embd)
            assert tensor.std().item() == pytest.approx(std, rel=0.25), key
    assert json.loads((out_dir / "provenance.json").read_text())["parts"] == parts.split(",")


def test_bad_parts_are_one_line(tiny_references, tmp_path):
    code, _, stderr = run_in_process(
        "init",
        str(tiny_references["llama-gqa"]),
        "--out_dir",
        str(tmp_path / "t"),
        "--n_layers",
        "2",
        "--parts",
        "attn,ffn",
    )
    assert code == 1 and "Traceback" not in stderr
    assert (
        stderr.strip().splitlines()[-1]
        == "error: --parts 'attn,ffn': unknown part 'ffn'; valid: a comma list of attn, attn_norm, mlp, mlp_norm"
    )
    with pytest.raises(SystemExit, match="--parts '': names no part"):
        init(tiny_references["llama-gqa"], out_dir=tmp_path / "t", n_layers=2, parts="")
    assert not (tmp_path / "t").exists()
