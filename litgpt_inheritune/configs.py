"""Named model configs for the paper's derived models, registered in litgpt's own config table.

After registration ``Config.from_name("open_llama_3b-inheritune-13L")`` and
``litgpt pretrain --model_name open_llama_3b-inheritune-13L`` work like any stock litgpt name.

GPT-2-shaped families (``gpt2-rope-*``): the paper trains GPT-2 medium/large/xlarge references from scratch.
LitGPT has no learned absolute position embeddings, so these configs use rotary embeddings over the whole head
(``rotary_percentage=1.0``) instead. Everything else follows GPT-2: LayerNorm, GELU MLP with 4x width, no bias,
50257-token vocabulary, 1024-token context.
"""

from copy import deepcopy

# The paper's sub-model sweep on OpenLLaMA-3B (Fig. 20); 13 layers is the "1.5B" model.
OPEN_LLAMA_3B_DEPTHS = (4, 6, 8, 10, 13, 16, 18, 20)
# The "1.6B" models keep 7 blocks of a 7B reference.
SEVEN_B_REFERENCES = {"open_llama_7b": 7, "Llama-2-7b-hf": 7}
# Section 4: GPT-2 references trained from scratch and the depths derived from them.
GPT2_FAMILIES = {
    "gpt2-rope-medium": dict(n_layer=24, n_embd=1024, n_head=16),
    "gpt2-rope-large": dict(n_layer=36, n_embd=1280, n_head=20),
    "gpt2-rope-large32": dict(n_layer=32, n_embd=1280, n_head=20),  # the paper's GPT-2 large†
    "gpt2-rope-xlarge": dict(n_layer=48, n_embd=1600, n_head=25),
}
GPT2_DERIVED_DEPTHS = (12, 14, 16, 18, 24)


def derived_name(reference_name: str, n_layer: int) -> str:
    """The name of a model that keeps ``n_layer`` blocks of ``reference_name``."""
    return f"{reference_name}-inheritune-{n_layer}L"


def gpt2_rope_config(name: str, n_layer: int, n_embd: int, n_head: int) -> dict:
    return dict(
        name=name,
        hf_config=dict(org="litgpt-inheritune", name=name),
        block_size=1024,
        vocab_size=50257,
        padded_vocab_size=50304,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        rotary_percentage=1.0,
        parallel_residual=False,
        bias=False,
        norm_class_name="LayerNorm",
        mlp_class_name="GptNeoxMLP",
        intermediate_size=4 * n_embd,
        gelu_approximate="tanh",
    )


def derive(reference: dict, n_layer: int) -> dict:
    """A copy of a litgpt config dict that keeps the first ``n_layer`` blocks."""
    config = deepcopy(reference)
    config["name"] = derived_name(reference["name"], n_layer)
    config["n_layer"] = n_layer
    return config


def inheritune_configs(name_to_config: dict) -> list[dict]:
    """Every config this package adds, derived from litgpt's own entries in ``name_to_config``."""
    added = [derive(name_to_config["open_llama_3b"], n) for n in OPEN_LLAMA_3B_DEPTHS]
    added += [derive(name_to_config[name], n) for name, n in SEVEN_B_REFERENCES.items()]
    for name, shape in GPT2_FAMILIES.items():
        reference = gpt2_rope_config(name, **shape)
        added.append(reference)
        added += [derive(reference, n) for n in GPT2_DERIVED_DEPTHS if n < shape["n_layer"]]
    return added


def register_configs(config_module=None) -> None:
    """Adds our configs in place to ``litgpt.config.configs`` and ``name_to_config``. Safe to call repeatedly."""
    if config_module is None:
        import litgpt.config as config_module

    for config in inheritune_configs(config_module.name_to_config):
        if config["name"] not in config_module.name_to_config:
            config_module.configs.append(config)
            config_module.name_to_config[config["name"]] = config
