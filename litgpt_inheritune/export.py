"""`litgpt inheritune export`: a LitGPT checkpoint → a complete Hugging Face folder.

litgpt's ``convert_from_litgpt`` renames the weights but writes no config.json; this command also writes the
config (derived from model_config.yaml), model.safetensors, the tokenizer files and generation_config.json, so
``transformers.AutoModelForCausalLM.from_pretrained(out_dir)`` loads it directly, and a model card (README.md, see
card.py); ``--push_to_hub`` then uploads the finished folder.
"""

import json
import sys
from pathlib import Path
from typing import Literal, Optional

import torch
from litgpt.config import Config
from litgpt.scripts.convert_lit_checkpoint import copy_weights_gpt_neox, copy_weights_llama
from litgpt.tokenizer import Tokenizer
from huggingface_hub import save_torch_state_dict
from transformers import GPTNeoXConfig, LlamaConfig, PretrainedConfig

from litgpt_inheritune.checkpoint import (
    check_checkpoint,
    copy_tokenizer_files,
    load_lazy_state_dict,
    resolve_checkpoint_dir,
)
from litgpt_inheritune.card import card_inputs, write_export_card
from litgpt_inheritune.cli import fail
from litgpt_inheritune.files import check_out_dir, staged_dir
from litgpt_inheritune.hub import push_folder

SUPPORTED = (
    "LLaMA-family models (LLaMAMLP, RMSNorm: LLaMA, OpenLLaMA, Mistral, SmolLM2, TinyLlama, ...) and GPT-NeoX/Pythia"
)


def main(
    checkpoint_dir: Path,
    out_dir: Optional[Path] = None,
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto",
    overwrite: bool = False,
    eval_dir: Optional[Path] = None,
    analysis: Optional[Path] = None,
    push_to_hub: Optional[str] = None,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    commit_message: str = "Upload a model derived with litgpt inheritune",
) -> Path:
    """Export a LitGPT checkpoint as a Hugging Face folder that transformers loads with from_pretrained.

    Arguments:
        checkpoint_dir: A LitGPT checkpoint directory (lit_model.pth, model_config.yaml, tokenizer files).
        out_dir: Output folder. Default: ``<checkpoint_dir>/hf``.
        dtype: Data type of the saved weights. "auto" keeps the checkpoint's own (lossless, as litgpt's
            ``convert_from_litgpt`` and transformers' ``save_pretrained`` do); the others cast.
        overwrite: Replace ``out_dir`` if it already holds files.
        eval_dir: An ``evaluate`` out_dir of this checkpoint (with ``--reference``: the reference's scores too) for
            the model card's results and model-index.
        analysis: An ``analyze`` out_dir of the reference, whose attention-rank plot goes into the card. Default: the
            one that chose the blocks (``init --select``) or grow's, where recorded.
        push_to_hub: Upload the folder to this Hugging Face model repository (ORG/NAME), created if missing, with the
            token of ``hf auth login`` or HF_TOKEN. The local folder is complete before the upload starts.
        private: Create the repository as private (true) or public (false); an existing one keeps its visibility.
            Default: the Hub's (public, unless an organization's settings make new repositories private).
        revision: Upload to this branch (created from main if missing). Default: main.
        commit_message: The upload's commit message.
    """
    checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
    check_checkpoint(checkpoint_dir)
    out_dir = checkpoint_dir / "hf" if out_dir is None else Path(out_dir)
    check_out_dir(out_dir, overwrite, protected=(checkpoint_dir,))
    card = card_inputs(checkpoint_dir, eval_dir, analysis, push_to_hub)
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    try:
        tokenizer = Tokenizer(checkpoint_dir)
    except Exception:
        fail(f"checkpoint_dir {checkpoint_dir} has no tokenizer (tokenizer.json or tokenizer.model)")
    lit_weights = load_lazy_state_dict(checkpoint_dir / "lit_model.pth")
    if dtype == "auto":
        dtype = str(lit_weights["transformer.wte.weight"].dtype).removeprefix("torch.")
    hf_config, copy_weights = hf_config_for(config, tokenizer, dtype)

    hf_weights = {}
    copy_weights(config, hf_weights, lit_weights)
    seen = set()
    for name, tensor in hf_weights.items():
        tensor = tensor.to(getattr(torch, dtype)).contiguous()
        # safetensors stores whole storages: copy a tied head (LitGPT keeps two names) and views into a fused qkv
        if tensor.untyped_storage().data_ptr() in seen or tensor.untyped_storage().nbytes() != tensor.nbytes:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        hf_weights[name] = tensor

    with staged_dir(out_dir) as staging:
        # shards above 5 GB and writes the index, as save_pretrained does
        save_torch_state_dict(hf_weights, staging, safe_serialization=True)
        hf_config.save_pretrained(staging)
        copy_tokenizer_files(checkpoint_dir, staging)
        if not (staging / "generation_config.json").is_file():
            generation = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}
            (staging / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        write_export_card(staging, card, config, str(out_dir))
    print(f"Exported {config.name} to {out_dir} ({hf_config.architectures[0]}, {dtype})", file=sys.stderr)
    if push_to_hub is not None:
        push_folder(out_dir, push_to_hub, private, revision, commit_message)
    return out_dir


def hf_config_for(config: Config, tokenizer: Tokenizer, dtype: str) -> tuple[PretrainedConfig, callable]:
    """transformers' config for a LitGPT config, and litgpt's function that renames the weights."""
    common = {
        "vocab_size": config.padded_vocab_size,  # the embedding and head keep LitGPT's padded rows
        "hidden_size": config.n_embd,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "max_position_embeddings": config.block_size,
        "tie_word_embeddings": False,  # LitGPT stores the embedding and the head separately
        "dtype": dtype,
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
    }
    unsupported = [
        name
        for name, value in (
            ("scale_embeddings", config.scale_embeddings),
            ("norm_qk", config.norm_qk),
            ("post_attention_norm", config.post_attention_norm),
            ("post_mlp_norm", config.post_mlp_norm),
            ("attention_logit_softcapping", config.attention_logit_softcapping),
            ("final_logit_softcapping", config.final_logit_softcapping),
            ("sliding_window_size", config.sliding_window_size),
            ("n_expert", config.n_expert),
            ("latent_attention", config.latent_attention),
            ("lm_head_bias", config.lm_head_bias),
        )
        if value
    ]
    if (
        config.mlp_class_name == "LLaMAMLP"
        and config.norm_class_name == "RMSNorm"
        and not config.parallel_residual
        and not unsupported
    ):
        hf = {
            "architectures": ["LlamaForCausalLM"],
            **common,
            "num_key_value_heads": config.n_query_groups,
            "head_dim": config.head_size,
            "hidden_act": "silu",
            "rms_norm_eps": config.norm_eps,
            "rope_theta": config.rope_base,
            "attention_bias": config.bias or config.attn_bias,
            "mlp_bias": config.bias,
        }
        if config.rope_adjustments:
            hf["rope_scaling"] = rope_scaling(config)
        if config.rotary_percentage != 1.0:
            fail(
                f"{config.name}: rotary_percentage {config.rotary_percentage} has no LLaMA equivalent; supported: {SUPPORTED}"
            )
        return LlamaConfig(**hf), lambda c, sd, lw: copy_weights_llama(c, sd, lw, untie_weights=False)
    if (
        config.mlp_class_name == "GptNeoxMLP"
        and config.norm_class_name == "LayerNorm"
        and config.bias
        and not unsupported
        and config.n_query_groups == config.n_head
    ):
        hf = {
            "architectures": ["GPTNeoXForCausalLM"],
            **common,
            "rotary_pct": config.rotary_percentage,
            "rotary_emb_base": config.rope_base,
            "layer_norm_eps": config.norm_eps,
            "use_parallel_residual": config.parallel_residual,
            "hidden_act": {"none": "gelu", "tanh": "gelu_pytorch_tanh"}[config.gelu_approximate],
            "attention_bias": True,
        }
        return GPTNeoXConfig(**hf), copy_weights_gpt_neox
    reason = f" (it uses {', '.join(unsupported)})" if unsupported else ""
    fail(f"{config.name} cannot be exported to a Hugging Face architecture yet{reason}; supported: {SUPPORTED}")


def rope_scaling(config: Config) -> dict:
    """litgpt's ``rope_adjustments`` as transformers' ``rope_scaling`` (Llama 3.1/3.2's "llama3" frequency scaling)."""
    adjustments = config.rope_adjustments
    llama3 = ("factor", "low_freq_factor", "high_freq_factor", "original_max_seq_len")
    if set(adjustments) != set(llama3):
        fail(
            f"{config.name}: rope_adjustments {adjustments} cannot be exported yet; supported: Llama-3 style ({', '.join(llama3)})"
        )
    return {
        "rope_type": "llama3",
        "factor": adjustments["factor"],
        "low_freq_factor": adjustments["low_freq_factor"],
        "high_freq_factor": adjustments["high_freq_factor"],
        "original_max_position_embeddings": adjustments["original_max_seq_len"],
    }
