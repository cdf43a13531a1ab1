"""`litgpt inheritune export` for every family litgpt converts back to Hugging Face.

Each case is a tiny random model built with the family's own transformers config class, converted to LitGPT by
litgpt's ``convert_hf_checkpoint`` (under a litgpt config derived from the family's real entry, sizes shrunk), cut
to a subset of blocks by ``init`` and exported; transformers loads the export, and its logits must equal those of the
ORIGINAL transformers model with the same blocks kept (layers deleted from the Hugging Face model directly).
"""

import copy
import dataclasses
import re

import pytest
import torch
import transformers
from litgpt.config import Config, name_to_config

from conftest import run_in_process, write_tokenizer
from litgpt_inheritune import hf_config
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
        hf=dict(rotary_pct=0.25, use_parallel_residual=True),
        lit=dict(n_query_groups=4),
    ),
}


def transformers_config(family: dict, n_layer: int):
    values = {**HF_SIZES, "num_hidden_layers": n_layer, **family["hf"]}
    # the norm epsilon litgpt's config gives the family (for some, e.g. Gemma, not transformers' default)
    values[NORM_EPS.get(family["hf_class"], "rms_norm_eps")] = name_to_config[family["real"]].get("norm_eps", 1e-5)
    if family["hf_class"] == "FalconConfig":
        values.pop("intermediate_size")
        values.pop("num_key_value_heads")
    if family["hf_class"] == "GPTNeoXConfig":
        values.pop("num_key_value_heads")
    return getattr(transformers, family["hf_class"])(**values)


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
def converted(tmp_path_factory):
    """Per family: the transformers model and its LitGPT conversion by litgpt's own convert_hf_checkpoint."""
    import litgpt.config
    from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

    cache = {}

    def make(key: str):
        if key in cache:
            return cache[key]
        family = FAMILIES[key]
        folder = tmp_path_factory.mktemp("hf") / family["tiny"]
        model = transformers.AutoModelForCausalLM.from_config(
            transformers_config(family, family["n_layer"]), attn_implementation="eager", dtype=torch.float32
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


def test_evaluate_scores_an_export_as_lm_evals_hugging_face_backend(converted, tmp_path):
    """Per item, the log-likelihoods (and greedy flags) that `evaluate`'s model gives the derived checkpoint equal
    those lm-eval's own Hugging Face backend gives its export: Gemma-2 (soft-capping, sliding windows, a global
    block first)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from litgpt_inheritune.lm_eval_model import LitGPTLM

    _, checkpoint = converted("gemma-2")
    target = init(checkpoint, out_dir=tmp_path / "target", layers="1,2")
    out_dir = export(target, out_dir=tmp_path / "hf")
    pairs = [
        ("the early layers of a deep model carry most", " of its knowledge"),
        ("while many deeper layers are lazy their attention collapses onto", " a single column"),
        ("a small model can inherit", " the potent blocks"),
        ("train briefly on a subset of the data and grow until it", " matches the reference"),
    ]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    ours = LitGPTLM(target, batch_size=2).loglikelihood(requests)
    # transformers computes Gemma-2's attention soft-capping only in its eager attention (SDPA skips it)
    hf = HFLM(pretrained=str(out_dir), device="cpu", batch_size=2, dtype="float32", attn_implementation="eager")
    theirs = hf.loglikelihood(requests)
    assert len(ours) == len(theirs) == len(pairs)
    for (score, greedy), (expected, expected_greedy) in zip(ours, theirs):
        assert score == pytest.approx(expected, abs=1e-4) and greedy == expected_greedy
    assert len({round(score, 3) for score, _ in ours}) == len(pairs)  # distinct items, not one repeated number


def change_llama_weights(change):
    """A monkeypatch: the LLaMA family's weights are renamed by litgpt's map, then ``change``d."""

    def copy(config, hf_weights, lit_weights):
        hf_config.copy_llama(config, hf_weights, lit_weights)
        change(hf_weights)

    def patch(monkeypatch):
        llama = dataclasses.replace(hf_config.FAMILIES["llama"], copy_weights=copy)
        monkeypatch.setitem(hf_config.FAMILIES, "llama", llama)

    return patch


@pytest.mark.parametrize(
    ("family", "break_it", "message"),
    [
        # the config forgets the RoPE condensation (LLaMA-2-7B-32K's rope_condense_ratio)
        (
            "llama-2-32k-condensed",
            lambda monkeypatch: monkeypatch.setattr("litgpt_inheritune.hf_config.rope_scaling", lambda config: None),
            r"transformers' LlamaForCausalLM logits differ from LitGPT's by (\S+) \(max abs over 32 tokens; "
            r"tolerance (\S+)\)",
        ),
        # a weight 1% off
        (
            "llama-2",
            change_llama_weights(lambda w: w.update({"model.norm.weight": w["model.norm.weight"] * 1.01})),
            r"transformers' LlamaForCausalLM logits differ from LitGPT's by (\S+) \(max abs over 32 tokens; "
            r"tolerance (\S+)\)",
        ),
        # a weight missing: transformers would initialise it at random
        (
            "llama-2",
            change_llama_weights(lambda w: w.pop("model.norm.weight")),
            r"transformers' LlamaForCausalLM found missing_keys \['model.norm.weight'\]",
        ),
    ],
    ids=["config-forgets-rope-condensation", "weight-1%-off", "weight-missing"],
)
def test_a_wrong_export_stops_in_one_line_and_writes_nothing(
    converted, tmp_path, monkeypatch, family, break_it, message
):
    _, checkpoint = converted(family)
    out_dir = tmp_path / "exports" / "hf"
    out_dir.mkdir(parents=True)
    (out_dir / "earlier.txt").write_text("an earlier export")
    break_it(monkeypatch)
    code, _, stderr = run_in_process("export", str(checkpoint), "--out_dir", str(out_dir), "--overwrite", "true")
    assert code == 1
    last = stderr.strip().splitlines()[-1]
    match = re.fullmatch(f"error: export check failed: {message}; {re.escape(str(out_dir))} was not written", last)
    assert match, last
    if match.groups():
        difference, tolerance = map(float, match.groups())
        assert difference > 10 * tolerance and tolerance < 1e-2
    # the earlier folder is untouched and no half-written folder is left beside it
    assert [p.name for p in out_dir.parent.iterdir()] == ["hf"]
    assert [p.name for p in out_dir.iterdir()] == ["earlier.txt"]

    # --verify false skips the check (for models too big to load twice) and says so
    code, _, stderr = run_in_process(
        "export", str(checkpoint), "--out_dir", str(tmp_path / "unchecked"), "--verify", "false"
    )
    assert code == 0, stderr
    assert "Not verified (--verify false): transformers did not load the folder" in stderr
    assert (tmp_path / "unchecked" / "config.json").is_file() and "Checking" not in stderr


@pytest.mark.parametrize(
    ("real", "overrides", "message"),
    [
        (
            "Gemma-2-2b",
            dict(name="my-model"),  # litgpt's RMSNorm adds Gemma's 1 only for names containing "Gemma"
            "my-model cannot be exported: the Gemma-2 export (transformers' Gemma2) always has Gemma's RMSNorm (1 + weight; "
            "litgpt gives it to names containing 'Gemma'), which it lacks",
        ),
        (
            "Qwen3-0.6B",
            dict(sliding_window_size=8, sliding_window_indices=[1, 0] * 14),
            "Qwen3-0.6B cannot be exported: the Qwen3 export (transformers' Qwen3) has no sliding windows on some layers",
        ),
        (
            "Phi-3-mini-4k-instruct",
            dict(rope_condense_ratio=4),
            "Phi-3-mini-4k-instruct cannot be exported: the Phi-3/Phi-4 export (transformers' Phi3) has no RoPE scaling",
        ),
        (
            "Llama-3.2-1B",
            dict(rope_condense_ratio=2),
            "Llama-3.2-1B cannot be exported: transformers has no RoPE with both llama3 scaling and condensed positions",
        ),
        (
            "Llama-3.2-1B",
            dict(rope_adjustments=dict(factor=4.0, beta_fast=32, beta_slow=1, original_max_seq_len=8192)),
            "Llama-3.2-1B cannot be exported: rope_adjustments {'factor': 4.0, 'beta_fast': 32, 'beta_slow': 1, "
            "'original_max_seq_len': 8192} are not linear or llama3 scaling (factor, high_freq_factor, "
            "low_freq_factor, original_max_seq_len), the two kinds exported",
        ),
        (
            "Llama-2-7b-hf",
            dict(post_attention_norm=True),
            "Llama-2-7b-hf cannot be exported: the LLaMA export (transformers' Llama) has no lone post-attention or "
            "post-MLP norm",
        ),
        (
            "Llama-2-7b-hf",
            dict(bias=True),  # litgpt's LLaMA weight map has no biases
            "Llama-2-7b-hf cannot be exported: the LLaMA export (transformers' Llama) has no biases",
        ),
        (
            "OLMo-2-1124-7B",
            dict(rope_condense_ratio=2),  # transformers' Olmo2Config takes only the legacy {"type": ...} scaling
            "OLMo-2-1124-7B cannot be exported: the OLMo-2 export (transformers' Olmo2) has no RoPE scaling",
        ),
    ],
)
def test_configs_no_transformers_class_computes_are_refused_in_one_line(real, overrides, message):
    config = Config(**{**name_to_config[real], **overrides})
    with pytest.raises(SystemExit) as refusal:
        hf_config.hf_config_for(config, 1, 2, "float32")
    assert str(refusal.value) == f"error: {message}"


def test_every_litgpt_config_has_a_transformers_architecture():
    """All of litgpt 0.5.13's configs (and this package's) map to a transformers class, by structure: e.g.
    Gemma-2b is Gemma (1), not Gemma-2 as its name would make litgpt's own converter assume."""
    from litgpt.config import configs

    architectures = {
        c["name"]: hf_config.hf_config_for(Config(**c), 1, 2, "float32")[0].architectures[0] for c in configs
    }
    assert architectures["Gemma-2b"] == "GemmaForCausalLM"
    assert architectures["Gemma-2-2b"] == "Gemma2ForCausalLM"
    assert architectures["phi-4"] == architectures["Phi-4-mini-instruct"] == "Phi3ForCausalLM"
    assert architectures["Mistral-7B-v0.3"] == "MistralForCausalLM"
    assert architectures["Falcon3-7B-Base"] == architectures["SmolLM2-135M"] == "LlamaForCausalLM"
    assert architectures["falcon-180B"] == "FalconForCausalLM"
    assert architectures["stablelm-base-alpha-3b"] == architectures["pythia-14m"] == "GPTNeoXForCausalLM"
    assert len(architectures) == len(configs) > 200


def test_bias_free_gpt_neox_blocks_export_with_zero_mlp_biases(tmp_path):
    """This package's GPT-2-shaped RoPE models (reproduce_gpt2) have no biases; transformers' GPT-NeoX MLP always
    has them, so they are written as zeros: transformers' logits equal LitGPT's."""
    from litgpt.model import GPT
    from litgpt.utils import save_config

    from litgpt_inheritune.configs import gpt2_rope_config

    config = Config(**{**gpt2_rope_config("gpt2-rope-tiny", n_layer=2, n_embd=32, n_head=4), "vocab_size": VOCAB})
    config.padded_vocab_size = VOCAB
    checkpoint = tmp_path / "gpt2-rope-tiny"
    checkpoint.mkdir()
    model = GPT(config)
    randomize(model)
    torch.save(model.state_dict(), checkpoint / "lit_model.pth")
    save_config(config, checkpoint)
    write_tokenizer(checkpoint, VOCAB)
    out_dir = export(checkpoint, out_dir=tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager").eval()
    assert type(hf).__name__ == "GPTNeoXForCausalLM" and not hf.config.attention_bias
    with torch.no_grad():
        torch.testing.assert_close(hf(IDX).logits, model.eval()(IDX), rtol=0, atol=1e-5)
