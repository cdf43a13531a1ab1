"""`litgpt inheritune export` for every family litgpt converts back to Hugging Face.

Each case is a tiny random model built with the family's own transformers config class, converted to LitGPT by
litgpt's ``convert_hf_checkpoint`` (under a litgpt config derived from the family's real entry, sizes shrunk), cut
to a subset of blocks by ``init`` and exported; transformers loads the export, and its logits must equal those of the
ORIGINAL transformers model with the same blocks kept (layers deleted from the Hugging Face model directly).
"""

import copy

import pytest
import torch
import transformers
from litgpt.config import name_to_config

from conftest import write_tokenizer
from litgpt_inheritune.export import main as export
from litgpt_inheritune.init import main as init

VOCAB = 256
HF_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
)
LIT_SIZES = dict(
    n_embd=64,
    intermediate_size=96,
    n_head=4,
    n_query_groups=2,
    head_size=16,
    vocab_size=VOCAB,
    padded_vocab_size=VOCAB,
    block_size=64,
)
WINDOW = 4  # sliding windows shorter than the test input, so that they matter
LLAMA3_ROPE = dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0)


NORM_EPS = {
    "PhiConfig": "layer_norm_eps",
    "GPTNeoXConfig": "layer_norm_eps",
    "FalconConfig": "layer_norm_epsilon",
    "StableLmConfig": "layer_norm_eps",
}


def case(real, tiny, hf_class, hf=None, lit=None, n_layer=4, layers=("2",)):
    """A family: litgpt's real config ``real`` shrunk and registered as ``tiny`` (litgpt's converters dispatch on
    the name), transformers' ``hf_class`` with the same sizes, and the ``init`` selections to export."""
    return dict(real=real, tiny=tiny, hf_class=hf_class, hf=hf or {}, lit=lit or {}, n_layer=n_layer, layers=layers)


FAMILIES = {
    "llama-2": case("Llama-2-7b-hf", "Llama-2-tiny", "LlamaConfig"),
    "llama-2-32k-condensed": case(
        "LLaMA-2-7B-32K",
        "LLaMA-2-tiny-32K",
        "LlamaConfig",
        hf=dict(rope_scaling={"rope_type": "linear", "factor": 8.0}),
    ),
    "llama-3.2": case(
        "Llama-3.2-1B",
        "Llama-3.2-tiny",
        "LlamaConfig",
        # llama3 frequency scaling, with an original context short enough to change a 16-token input
        hf=dict(
            rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", **LLAMA3_ROPE, "original_max_position_embeddings": 16},
        ),
        lit=dict(rope_adjustments={**LLAMA3_ROPE, "original_max_seq_len": 16}),
    ),
    "smollm2": case(
        "SmolLM2-135M", "SmolLM2-tiny", "LlamaConfig", hf=dict(rope_theta=100000.0, tie_word_embeddings=True)
    ),
    "mistral-v0.1": case(
        "Mistral-7B-v0.1",
        "Mistral-tiny-v0.1",
        "MistralConfig",
        hf=dict(sliding_window=WINDOW, head_dim=16),
        lit=dict(sliding_window_size=WINDOW),
        layers=("2", "3,1"),
    ),
    "mistral-v0.3": case(
        "Mistral-7B-v0.3",
        "Mistral-tiny-v0.3",
        "MistralConfig",
        hf=dict(sliding_window=None, head_dim=16, rope_theta=1000000.0),
    ),
    "mixtral": case(
        "Mixtral-8x7B-v0.1",
        "Mixtral-tiny",
        "MixtralConfig",
        hf=dict(num_local_experts=4, num_experts_per_tok=2, head_dim=16, rope_theta=1000000.0),
        lit=dict(n_expert=4, n_expert_per_token=2),
    ),
    "qwen2.5": case(
        "Qwen2.5-0.5B",
        "Qwen2.5-tiny",
        "Qwen2Config",
        hf=dict(rope_theta=1000000.0, tie_word_embeddings=True),
    ),
    "qwen3": case(
        "Qwen3-0.6B",
        "Qwen3-tiny",
        "Qwen3Config",
        # head_dim 32 with hidden 64 and 4 heads: the attention is wider than the residual stream, as in Qwen3
        hf=dict(head_dim=32, rope_theta=1000000.0, tie_word_embeddings=True),
        lit=dict(head_size=32),
    ),
    "qwen3-moe": case(
        "Qwen3-30B-A3B",
        "Qwen3-tiny-A3B",
        "Qwen3MoeConfig",
        hf=dict(
            head_dim=32,
            rope_theta=1000000.0,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            norm_topk_prob=True,
        ),
        lit=dict(head_size=32, n_expert=4, n_expert_per_token=2, moe_intermediate_size=32),
    ),
    "gemma": case(
        "Gemma-7b",
        "Gemma-tiny",
        "GemmaConfig",
        hf=dict(head_dim=32),
        lit=dict(head_size=32),
    ),
    "gemma-2": case(
        "Gemma-2-2b",
        "Gemma-2-tiny",
        "Gemma2Config",
        hf=dict(
            head_dim=16,
            query_pre_attn_scalar=24,
            sliding_window=WINDOW,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
        ),
        lit=dict(
            attention_scores_scalar=24,
            sliding_window_size=WINDOW,
            attention_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
        ),
        layers=("2", "1,2"),  # blocks 1 and 2: a global block first, then a sliding one (the reverse of the prefix)
    ),
    "gemma-3": case(
        "Gemma-3-4b-it",
        "Gemma-3-tiny",
        "Gemma3TextConfig",
        hf=dict(
            head_dim=16,
            query_pre_attn_scalar=24,
            sliding_window=WINDOW,
            rope_scaling={"rope_type": "linear", "factor": 8.0},
            rope_theta=1000000.0,
            rope_local_base_freq=10000.0,
        ),
        lit=dict(attention_scores_scalar=24, sliding_window_size=WINDOW),
        n_layer=6,
        layers=("3", "4,5"),  # sliding-sliding-sliding; a sliding block then the global one
    ),
    "phi-2": case(
        "phi-2",
        "phi-2-tiny",
        "PhiConfig",
        hf=dict(partial_rotary_factor=0.4, num_key_value_heads=4),
        lit=dict(n_query_groups=4),
    ),
    "phi-3": case(
        "Phi-3-mini-4k-instruct",
        "Phi-3-tiny-4k-instruct",
        "Phi3Config",
        hf=dict(sliding_window=WINDOW, num_key_value_heads=4),
        lit=dict(sliding_window_size=WINDOW, n_query_groups=4),
    ),
    "phi-4-mini": case(
        "Phi-4-mini-instruct",
        "Phi-4-mini-tiny",
        "Phi3Config",
        hf=dict(partial_rotary_factor=0.75, tie_word_embeddings=True, sliding_window=None),
        lit=dict(sliding_window_size=None),
    ),
    "olmo-2": case("OLMo-2-1124-7B", "OLMo-2-1124-tiny", "Olmo2Config", hf=dict(rope_theta=500000.0)),
    "falcon-7b": case(
        "falcon-7b",
        "falcon-7b-tiny",
        "FalconConfig",
        hf=dict(
            tie_word_embeddings=False,
            num_kv_heads=1,
            multi_query=True,
            new_decoder_architecture=False,
            parallel_attn=True,
            bias=False,
        ),
        lit=dict(n_query_groups=1, intermediate_size=None),
    ),
    "falcon-40b": case(
        "falcon-40b",
        "falcon-40b-tiny",
        "FalconConfig",
        hf=dict(
            tie_word_embeddings=False, num_kv_heads=2, new_decoder_architecture=True, parallel_attn=True, bias=False
        ),
        lit=dict(intermediate_size=None),
    ),
    "stablelm-3b": case(
        "stablelm-3b-4e1t",
        "stablelm-3b-tiny",
        "StableLmConfig",
        hf=dict(partial_rotary_factor=0.25, num_key_value_heads=4),
        lit=dict(n_query_groups=4),
    ),
    "olmo-1": case(
        "OLMo-1B-hf", "OLMo-1B-tiny", "OlmoConfig", hf=dict(num_key_value_heads=4), lit=dict(n_query_groups=4)
    ),
    "pythia": case(
        "pythia-14m",
        "pythia-tiny",
        "GPTNeoXConfig",
        hf=dict(rotary_pct=0.25, use_parallel_residual=True, num_key_value_heads=None),
        lit=dict(n_query_groups=4),
    ),
}


def hf_config(family: dict, n_layer: int):
    values = {**HF_SIZES, "num_hidden_layers": n_layer, **family["hf"]}
    # the norm epsilon litgpt's config gives the family (for some, e.g. Gemma, not transformers' default)
    values[NORM_EPS.get(family["hf_class"], "rms_norm_eps")] = name_to_config[family["real"]].get("norm_eps", 1e-5)
    if family["hf_class"] == "FalconConfig":
        values.pop("intermediate_size")
        values.pop("num_key_value_heads")
    if family["hf_class"] == "GPTNeoXConfig":
        values.pop("num_key_value_heads")
    return getattr(transformers, family["hf_class"])(
        **{k: v for k, v in values.items() if v is not None or k in family["hf"] or k == "pad_token_id"}
    )


def lit_config(family: dict) -> dict:
    values = {**copy.deepcopy(name_to_config[family["real"]]), **LIT_SIZES, **family["lit"]}
    values.update(name=family["tiny"], hf_config={"org": "tiny", "name": family["tiny"]}, n_layer=family["n_layer"])
    if values.get("intermediate_size") is None:
        values.pop("intermediate_size")
    for per_layer in ("sliding_window_indices", "rope_indices"):
        if values.get(per_layer):
            values[per_layer] = values[per_layer][: family["n_layer"]]
    return values


def randomize(model: torch.nn.Module) -> None:
    """Weights large enough that every tensor moves the logits, norms away from their initial 1 (or 0)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(noise * 0.15 if param.ndim > 1 else param + noise * 0.1)


def restricted(model, layers: list[int]):
    """The transformers model with only ``layers`` (in this order): decoder layers deleted from the model itself."""
    model = copy.deepcopy(model)
    base = next(getattr(model, name) for name in ("model", "transformer", "gpt_neox") if hasattr(model, name))
    name = "layers" if hasattr(base, "layers") else "h"
    setattr(base, name, torch.nn.ModuleList(getattr(base, name)[i] for i in layers))
    model.config.num_hidden_layers = len(layers)
    if getattr(model.config, "layer_types", None) is not None:
        model.config.layer_types = [model.config.layer_types[i] for i in layers]
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory, request):
    """Per family: the transformers model and its LitGPT conversion by litgpt's own convert_hf_checkpoint."""
    import litgpt.config
    from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

    cache = {}

    def make(key: str):
        if key in cache:
            return cache[key]
        family = FAMILIES[key]
        folder = tmp_path_factory.mktemp("hf") / family["tiny"]
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(
            hf_config(family, family["n_layer"]), attn_implementation="eager", dtype=torch.float32
        ).eval()
        randomize(model)
        model.save_pretrained(folder)
        write_tokenizer(folder, VOCAB)
        entry = lit_config(family)
        litgpt.config.name_to_config[entry["name"]] = entry
        try:
            convert_hf_checkpoint(checkpoint_dir=folder, model_name=entry["name"])
        finally:
            del litgpt.config.name_to_config[entry["name"]]
        cache[key] = model, folder
        return cache[key]

    return make


IDX = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("family", "layers"), [(key, layers) for key, family in FAMILIES.items() for layers in family["layers"]]
)
def test_export_equals_transformers_model_with_the_same_blocks(converted, tmp_path, family, layers):
    model, checkpoint = converted(family)
    kept = list(range(int(layers))) if "," not in layers else [int(i) for i in layers.split(",")]
    target = init(
        checkpoint, out_dir=tmp_path / "target", **({"layers": layers} if "," in layers else {"n_layers": int(layers)})
    )
    out_dir = export(target, out_dir=tmp_path / "hf")
    exported = transformers.AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager").eval()
    assert type(exported) is type(model)
    with torch.no_grad():
        expected = restricted(model, kept)(IDX, use_cache=False).logits  # a cache would index the old layers
        actual = exported(IDX).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
