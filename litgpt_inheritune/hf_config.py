"""Which transformers architecture computes what a LitGPT config computes: its config (every field derived from
the LitGPT config) and litgpt's own function that renames the weights for it (``litgpt.scripts.convert_lit_checkpoint``).

A family is chosen by the blocks' structure (MLP, norms, biases, extras), not by the model's name, since a derived
model may carry any name; the name decides only where litgpt itself decides by it (Phi-3 vs LLaMA, Mistral, and
Gemma's RMSNorm and OLMo's LayerNorm, which litgpt builds from the name). A config with an extra its family's
transformers class cannot express is refused, naming the extra.
"""

from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch
import transformers
from litgpt.config import Config
from litgpt.scripts.convert_lit_checkpoint import (
    copy_weights_falcon,
    copy_weights_gemma_2,
    copy_weights_gemma_3,
    copy_weights_gpt_neox,
    copy_weights_llama,
    copy_weights_olmo2,
    copy_weights_phi,
    copy_weights_qwen_2_5,
    copy_weights_qwen_3,
)
from transformers import PretrainedConfig

from litgpt_inheritune.errors import fail

LLAMA3_ROPE = {"factor", "low_freq_factor", "high_freq_factor", "original_max_seq_len"}


def copy_llama(config: Config, hf_weights: dict, lit_weights: dict) -> None:
    copy_weights_llama(config, hf_weights, lit_weights, untie_weights=False)


def copy_gemma_2(config: Config, hf_weights: dict, lit_weights: dict) -> None:
    copy_weights_gemma_2(config, hf_weights, lit_weights, untie_weights=False)


def copy_gemma_3(config: Config, hf_weights: dict, lit_weights: dict) -> None:
    copy_weights_gemma_3(config, hf_weights, lit_weights, untie_weights=False)


def copy_olmo2(config: Config, hf_weights: dict, lit_weights: dict) -> None:
    # litgpt 0.5.13's map names OLMo-2's post-attention norm by the key ``norm_2`` (which OLMo-2 does not have);
    # its own HF -> LitGPT conversion writes ``post_attention_norm``
    renamed = {name.replace(".post_attention_norm.", ".norm_2."): tensor for name, tensor in lit_weights.items()}
    copy_weights_olmo2(config, hf_weights, renamed)


def copy_phi_2(config: Config, hf_weights: dict, lit_weights: dict) -> None:
    copy_weights_phi(replace(config, name="phi-2"), hf_weights, lit_weights)  # litgpt picks its map by the name


def copy_phi_3(config: Config, hf_weights: dict, lit_weights: dict) -> None:
    copy_weights_phi(replace(config, name="Phi-3"), hf_weights, lit_weights)  # "Phi-4" would drop the head


def copy_falcon(config: Config, hf_weights: dict, lit_weights: dict) -> None:
    # litgpt picks Falcon's map by the name: one norm per block ("7b") or two ("40b", "180B")
    name = "falcon-7b" if config.shared_attention_norm else "falcon-40b"
    copy_weights_falcon(replace(config, name=name), hf_weights, lit_weights)


def copy_gpt_neox(config: Config, hf_weights: dict, lit_weights: dict) -> None:
    copy_weights_gpt_neox(config, hf_weights, lit_weights)
    if not config.bias:  # transformers' GPT-NeoX MLP always has biases: zeros compute what none compute
        dtype = lit_weights["transformer.wte.weight"].dtype
        for i in range(config.n_layer):
            hf_weights[f"gpt_neox.layers.{i}.mlp.dense_h_to_4h.bias"] = torch.zeros(
                config.intermediate_size, dtype=dtype
            )
            hf_weights[f"gpt_neox.layers.{i}.mlp.dense_4h_to_h.bias"] = torch.zeros(config.n_embd, dtype=dtype)


@dataclass(frozen=True)
class Family:
    """A transformers architecture: the extras of a LitGPT config it can express, and those it must have."""

    name: str
    config_class: str
    copy_weights: Callable
    supports: frozenset = field(default_factory=frozenset)
    requires: frozenset = field(default_factory=frozenset)


BASE = {"grouped-query attention", "RoPE scaling"}
HEAD_DIM = {"head size other than n_embd / n_head"}  # classes with a head_dim field
WINDOWS = {"sliding windows on every layer"}
PATTERNS = WINDOWS | {"sliding windows on some layers"}
GEMMA_NORM = "Gemma's RMSNorm (1 + weight; litgpt gives it to names containing 'Gemma')"
GEMMA = {"scaled embeddings", GEMMA_NORM}
POST_NORMS = {"post-attention and post-MLP norms"}
SOFTCAPS = {"attention logit soft-capping", "final logit soft-capping", "attention scale other than 1/sqrt(head size)"}

FAMILIES = {
    "llama": Family("LLaMA", "LlamaConfig", copy_llama, frozenset(BASE | HEAD_DIM)),
    "mistral": Family("Mistral", "MistralConfig", copy_llama, frozenset(BASE | HEAD_DIM | WINDOWS)),
    "mixtral": Family(
        "Mixtral", "MixtralConfig", copy_llama, frozenset(BASE | HEAD_DIM | WINDOWS), frozenset({"mixture of experts"})
    ),
    "qwen2": Family(
        "Qwen2.5", "Qwen2Config", copy_weights_qwen_2_5, frozenset(BASE), frozenset({"query/key/value biases only"})
    ),
    "qwen3": Family(
        "Qwen3", "Qwen3Config", copy_weights_qwen_3, frozenset(BASE | HEAD_DIM), frozenset({"query/key norms"})
    ),
    "qwen3_moe": Family(
        "Qwen3-MoE",
        "Qwen3MoeConfig",
        copy_weights_qwen_3,
        frozenset(BASE | HEAD_DIM),
        frozenset({"query/key norms", "mixture of experts"}),
    ),
    "gemma": Family("Gemma", "GemmaConfig", copy_llama, frozenset(BASE | HEAD_DIM), frozenset(GEMMA)),
    "gemma2": Family(
        "Gemma-2",
        "Gemma2Config",
        copy_gemma_2,
        frozenset(BASE | HEAD_DIM | PATTERNS | SOFTCAPS),
        frozenset(GEMMA | POST_NORMS),
    ),
    "gemma3": Family(
        "Gemma-3",
        "Gemma3TextConfig",
        copy_gemma_3,
        frozenset(BASE | HEAD_DIM | PATTERNS | SOFTCAPS | {"a local RoPE base"}),
        frozenset(GEMMA | POST_NORMS | {"query/key norms"}),
    ),
    "phi3": Family(
        "Phi-3/Phi-4",
        "Phi3Config",
        copy_phi_3,
        frozenset({"grouped-query attention", "partial rotary embedding"} | WINDOWS),
    ),
    "olmo2": Family(
        "OLMo-2",
        "Olmo2Config",
        copy_olmo2,
        frozenset({"grouped-query attention"}),  # transformers' OLMo configs take only legacy RoPE scaling
        frozenset({"OLMo-2 query/key norms", "post-attention and post-MLP norms", "no pre-norms"}),
    ),
    "olmo": Family(
        "OLMo",
        "OlmoConfig",
        copy_llama,
        frozenset({"grouped-query attention"}),
        frozenset({"LayerNorm without weights (OLMo)"}),
    ),
    "stablelm": Family(
        "StableLM",
        "StableLmConfig",
        copy_llama,
        frozenset(BASE | {"partial rotary embedding", "query/key/value biases only"}),
    ),
    "phi": Family(
        "Phi-1.5/Phi-2",
        "PhiConfig",
        copy_phi_2,
        frozenset(BASE | {"partial rotary embedding"}),
        frozenset({"parallel residual", "one norm shared by attention and MLP", "biases", "LM head bias"}),
    ),
    "falcon": Family(
        "Falcon",
        "FalconConfig",
        copy_falcon,
        frozenset(BASE | {"one norm shared by attention and MLP"}),
        frozenset({"parallel residual"}),
    ),
    "gpt_neox": Family(
        "GPT-NeoX/Pythia",
        "GPTNeoXConfig",
        copy_gpt_neox,
        frozenset({"RoPE scaling", "partial rotary embedding", "parallel residual", "biases"}),
    ),
}


def sliding_layers(config: Config) -> list[bool]:
    """Per block: whether its attention is limited to a sliding window shorter than the context."""
    if config.sliding_window_size is None or config.sliding_window_size >= config.block_size:
        return [False] * config.n_layer
    return [bool(flag) for flag in config.sliding_window_indices]


def features(config: Config) -> set[str]:
    """What a config uses beyond a plain pre-norm block with full attention and full RoPE."""
    windows = sliding_layers(config)
    checks = {
        "grouped-query attention": config.n_query_groups != config.n_head,
        "head size other than n_embd / n_head": config.head_size * config.n_head != config.n_embd,
        "partial rotary embedding": config.rotary_percentage != 1.0,
        "RoPE scaling": config.rope_condense_ratio != 1 or bool(config.rope_adjustments),
        "sliding windows on every layer": all(windows),
        "sliding windows on some layers": any(windows) and not all(windows),
        "biases": config.bias,
        "query/key/value biases only": config.attn_bias and not config.bias,
        "LM head bias": config.lm_head_bias,
        "parallel residual": config.parallel_residual,
        "one norm shared by attention and MLP": config.shared_attention_norm,
        "scaled embeddings": config.scale_embeddings,
        GEMMA_NORM: config.norm_class_name == "RMSNorm" and "Gemma" in config.name,
        "LayerNorm without weights (OLMo)": config.norm_class_name == "LayerNorm" and "OLMo" in config.name,
        "query/key norms": config.norm_qk and config.norm_qk_type == "default",
        "OLMo-2 query/key norms": config.norm_qk and config.norm_qk_type == "olmo2",
        "post-attention and post-MLP norms": config.post_attention_norm and config.post_mlp_norm,
        "lone post-attention or post-MLP norm": config.post_attention_norm != config.post_mlp_norm,
        "no pre-norms": not config.norm_1 or not config.norm_2,
        "attention logit soft-capping": config.attention_logit_softcapping is not None,
        "final logit soft-capping": config.final_logit_softcapping is not None,
        "attention scale other than 1/sqrt(head size)": config.attention_scores_scalar not in (None, config.head_size),
        "a local RoPE base": config.rope_local_base_freq is not None,
        "mixture of experts": config.mlp_class_name == "LLaMAMoE",
        "shared experts": bool(config.n_shared_expert),
        "grouped expert routing": config.n_expert_groups is not None,
        "dense first blocks": config.first_k_dense_replace is not None,
        "routed scaling": config.routed_scaling_factor != 1.0,
        "latent attention": config.latent_attention is not None,
        "interleaved RoPE": config.rope_interleave,
    }
    return {name for name, used in checks.items() if used}


def family_of(config: Config) -> Family:
    """The transformers architecture for a LitGPT config, by structure (see the module's docstring)."""
    name = config.name.lower()
    if config.mlp_class_name == "GptNeoxMLP":
        if config.norm_class_name != "LayerNorm":
            fail(f"{config.name} cannot be exported: no transformers architecture has GPT-NeoX's MLP with RMSNorm")
        if config.shared_attention_norm and config.lm_head_bias:
            return FAMILIES["phi"]
        if config.parallel_residual and (
            not config.bias or config.shared_attention_norm or config.n_query_groups != config.n_head
        ):
            return FAMILIES["falcon"]
        return FAMILIES["gpt_neox"]
    if config.mlp_class_name == "GemmaMLP":
        if config.norm_qk:
            return FAMILIES["gemma3"]
        return FAMILIES["gemma2" if config.post_attention_norm or config.post_mlp_norm else "gemma"]
    if config.norm_qk and config.norm_qk_type == "olmo2":
        return FAMILIES["olmo2"]
    if config.norm_qk:
        return FAMILIES["qwen3_moe" if config.mlp_class_name == "LLaMAMoE" else "qwen3"]
    if config.norm_class_name == "LayerNorm":
        return FAMILIES["olmo" if "OLMo" in config.name else "stablelm"]
    if name.startswith("phi"):
        return FAMILIES["phi3"]
    if config.mlp_class_name == "LLaMAMoE":
        return FAMILIES["mixtral"]
    if config.attn_bias and not config.bias:
        return FAMILIES["qwen2"]
    if name.startswith(("mistral", "mathstral")) or any(sliding_layers(config)):
        return FAMILIES["mistral"]
    return FAMILIES["llama"]


def hf_config_for(
    config: Config, bos_id: Optional[int], eos_id: Optional[int], dtype: str
) -> tuple[PretrainedConfig, Callable]:
    """transformers' config for a LitGPT config, and the function that renames LitGPT's weights for it."""
    family = family_of(config)
    used = features(config)
    missing, extra = family.requires - used, used - family.supports - family.requires
    architecture = f"the {family.name} export (transformers' {family.config_class.removesuffix('Config')})"
    if extra:
        fail(f"{config.name} cannot be exported: {architecture} has no {', '.join(sorted(extra))}")
    if missing:
        fail(
            f"{config.name} cannot be exported: {architecture} always has {', '.join(sorted(missing))}, which it lacks"
        )
    values = {
        "architectures": [family.config_class.replace("TextConfig", "ForCausalLM").replace("Config", "ForCausalLM")],
        "vocab_size": config.padded_vocab_size,  # the embedding and head keep LitGPT's padded rows
        "hidden_size": config.n_embd,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "max_position_embeddings": config.block_size,
        "tie_word_embeddings": False,  # LitGPT stores the embedding and the head separately
        "dtype": dtype,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "rope_theta": float(config.rope_base),
    }
    if (scaling := rope_scaling(config)) is not None:
        values["rope_scaling"] = scaling
    values.update(FIELDS[family.config_class](config))
    try:
        hf_config = getattr(transformers, family.config_class)(**values)
    except (ValueError, TypeError) as error:  # a config class's own validation
        fail(f"{config.name} cannot be exported: transformers' {family.config_class} refuses its values ({error})")
    return hf_config, family.copy_weights


def rope_scaling(config: Config) -> Optional[dict]:
    """litgpt's ``rope_condense_ratio`` and ``rope_adjustments`` as transformers' ``rope_scaling``.

    Condensing positions by r equals dividing the frequencies by r (transformers' "linear" type); litgpt's linear
    ``factor`` divides them too, so the two multiply. Llama 3's frequency-dependent scaling is the "llama3" type."""
    adjustments = config.rope_adjustments or {}
    if set(adjustments) == LLAMA3_ROPE:
        if config.rope_condense_ratio != 1:
            fail(
                f"{config.name} cannot be exported: transformers has no RoPE with both llama3 scaling and condensed positions"
            )
        return {
            "rope_type": "llama3",
            "factor": float(adjustments["factor"]),
            "low_freq_factor": float(adjustments["low_freq_factor"]),
            "high_freq_factor": float(adjustments["high_freq_factor"]),
            "original_max_position_embeddings": adjustments["original_max_seq_len"],
        }
    if adjustments and set(adjustments) != {"factor"}:
        fail(
            f"{config.name} cannot be exported: rope_adjustments {adjustments} are not linear or llama3 scaling"
            f" ({', '.join(sorted(LLAMA3_ROPE))}), the two kinds exported"
        )
    factor = float(adjustments.get("factor", 1.0)) * config.rope_condense_ratio
    return None if factor == 1.0 else {"rope_type": "linear", "factor": factor}


def activation(config: Config) -> str:
    if config.mlp_class_name in ("LLaMAMLP", "LLaMAMoE"):
        return "silu"
    return {"none": "gelu", "tanh": "gelu_pytorch_tanh"}[config.gelu_approximate]


def attention_and_mlp(config: Config) -> dict:
    return {
        "intermediate_size": config.intermediate_size,
        "num_key_value_heads": config.n_query_groups,
        "hidden_act": activation(config),
    }


def llama_fields(config: Config) -> dict:
    return {**attention_and_mlp(config), "head_dim": config.head_size, "rms_norm_eps": config.norm_eps}


def window_fields(config: Config) -> dict:
    """``sliding_window`` (every layer or none) for Mistral, Mixtral and Phi-3."""
    return {"sliding_window": config.sliding_window_size if any(sliding_layers(config)) else None}


def gemma_fields(config: Config) -> dict:
    windows = sliding_layers(config)
    values = {
        **llama_fields(config),
        "hidden_activation": activation(config),
        "query_pre_attn_scalar": config.attention_scores_scalar or config.head_size,
        "attn_logit_softcapping": config.attention_logit_softcapping,
        "final_logit_softcapping": config.final_logit_softcapping,
        "sliding_window": config.sliding_window_size,
        "layer_types": ["sliding_attention" if sliding else "full_attention" for sliding in windows],
    }
    return values


def gemma3_fields(config: Config) -> dict:
    """Gemma-3: sliding blocks use a local RoPE (base ``rope_local_base_freq``, unscaled), the others the global."""
    values = gemma_fields(config)
    windows = sliding_layers(config)
    if config.rope_local_base_freq is None:
        if rope_scaling(config) is not None and any(windows):
            fail(
                f"{config.name} cannot be exported: Gemma-3's sliding blocks use an unscaled RoPE, its config scales every block's"
            )
        values["rope_local_base_freq"] = float(config.rope_base)
    else:
        if [bool(i) for i in config.rope_indices] != windows:
            fail(
                f"{config.name} cannot be exported: Gemma-3 gives the local RoPE to the sliding-window blocks"
                f" {windows}, its config to the blocks {config.rope_indices}"
            )
        if config.rope_condense_ratio != 1:
            fail(f"{config.name} cannot be exported: Gemma-3's local RoPE cannot condense positions")
        values["rope_local_base_freq"] = float(config.rope_local_base_freq)
    return values


def olmo_fields(config: Config) -> dict:
    if config.norm_eps != 1e-5:
        fail(
            f"{config.name} cannot be exported: OLMo's LayerNorm in transformers has eps 1e-5, its config {config.norm_eps}"
        )
    return {**attention_and_mlp(config), "attention_bias": False, "clip_qkv": None}  # LayerNorm without weights


def moe_fields(config: Config) -> dict:
    return {"num_experts_per_tok": config.n_expert_per_token}


FIELDS = {
    "LlamaConfig": lambda c: {**llama_fields(c), "attention_bias": c.bias, "mlp_bias": c.bias},
    "MistralConfig": lambda c: {**llama_fields(c), **window_fields(c)},
    "MixtralConfig": lambda c: {
        **llama_fields(c),
        **window_fields(c),
        **moe_fields(c),
        "intermediate_size": c.moe_intermediate_size or c.intermediate_size,  # litgpt's experts' width
        "num_local_experts": c.n_expert,
    },
    "Qwen2Config": lambda c: {**llama_fields(c), "use_sliding_window": False},
    "Qwen3Config": lambda c: {**llama_fields(c), "attention_bias": False, "use_sliding_window": False},
    "Qwen3MoeConfig": lambda c: {
        **llama_fields(c),
        **moe_fields(c),
        "attention_bias": False,
        "use_sliding_window": False,
        "num_experts": c.n_expert,
        "moe_intermediate_size": c.moe_intermediate_size or c.intermediate_size,
        "norm_topk_prob": True,  # litgpt's router takes the softmax over the chosen experts' logits only
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
    },
    "GemmaConfig": lambda c: {**llama_fields(c), "hidden_activation": activation(c)},
    "Gemma2Config": gemma_fields,
    "Gemma3TextConfig": gemma3_fields,
    "Phi3Config": lambda c: {
        **llama_fields(c),
        **window_fields(c),
        "partial_rotary_factor": c.rotary_percentage,
        "original_max_position_embeddings": c.block_size,
    },
    "Olmo2Config": lambda c: {**llama_fields(c), "attention_bias": False},
    "OlmoConfig": olmo_fields,
    "StableLmConfig": lambda c: {
        **attention_and_mlp(c),
        "layer_norm_eps": c.norm_eps,
        "partial_rotary_factor": c.rotary_percentage,
        "use_qkv_bias": c.attn_bias,
        "qk_layernorm": False,
        "use_parallel_residual": False,
    },
    "PhiConfig": lambda c: {
        "intermediate_size": c.intermediate_size,
        "num_key_value_heads": c.n_query_groups,
        "hidden_act": activation(c),
        "layer_norm_eps": c.norm_eps,
        "partial_rotary_factor": c.rotary_percentage,
        "qk_layernorm": False,
    },
    "FalconConfig": lambda c: {
        "ffn_hidden_size": c.intermediate_size,
        "activation": activation(c),
        "layer_norm_epsilon": c.norm_eps,
        "bias": c.bias,
        "alibi": False,
        "parallel_attn": True,
        "num_kv_heads": c.n_query_groups,
        "multi_query": c.n_query_groups == 1,
        # Falcon-7B's layout (one norm, multi-query) or Falcon-40B's "new decoder architecture" (grouped queries)
        "new_decoder_architecture": not c.shared_attention_norm or 1 < c.n_query_groups < c.n_head,
        "num_ln_in_parallel_attn": 1 if c.shared_attention_norm else 2,
    },
    "GPTNeoXConfig": lambda c: {
        "intermediate_size": c.intermediate_size,
        "rotary_pct": c.rotary_percentage,
        "rotary_emb_base": c.rope_base,
        "layer_norm_eps": c.norm_eps,
        "use_parallel_residual": c.parallel_residual,
        "hidden_act": activation(c),
        "attention_bias": c.bias,
    },
}
