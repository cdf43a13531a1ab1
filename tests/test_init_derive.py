"""`init`'s depth-pruning starts against independent computations: LaCo's merged weights against a hand sum,
ReplaceMe's linear bridge against numpy's lstsq on transformers' hidden states, SLEB's removals against a brute-force
loop, and the cut rule on a hand-built analysis."""

import json

import numpy as np
import pytest
import torch
from litgpt.config import Config
from litgpt.tokenizer import Tokenizer

from conftest import make_reference, write_jsonl_corpus
from litgpt_inheritune.analyze import sample_windows
from litgpt_inheritune.init import main as init
from test_init import hand_built_analysis, load_model, reference_logits_through


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_jsonl_corpus(tmp_path_factory.mktemp("calibration"), n_documents=60)


CALIBRATION = dict(calibration_sequences=12, calibration_seq_len=24)  # 288 tokens, for 32 hidden units


@pytest.mark.parametrize(
    ("style", "options", "kept", "absorbed"),
    [
        ("llama-gqa", dict(layers="0,2,3"), [0, 2, 3], {0: [1], 2: [], 3: [4, 5]}),
        ("gpt-neox", dict(n_layers=2, merge_group=3), [0, 2], {0: [1], 2: [3, 4]}),  # LaCo's top-down groups
        ("llama-gqa", dict(n_layers=3, merge_group=2), [0, 2, 4], {0: [1], 2: [3], 4: [5]}),
    ],
)
def test_laco_merge_equals_a_hand_sum(tiny_references, tmp_path, style, options, kept, absorbed):
    reference = torch.load(tiny_references[style] / "lit_model.pth", weights_only=True)
    out_dir = init(tiny_references[style], out_dir=tmp_path / "laco", merge="laco", **options)
    target = torch.load(out_dir / "lit_model.pth", weights_only=True)
    provenance = json.loads((out_dir / "provenance.json").read_text())
    assert provenance["layers"] == kept
    assert provenance["merged"] == {str(k): v for k, v in absorbed.items() if v}
    assert provenance["start"] == {"select": "first", "keep": None, "merge": "laco", "bridge": None}
    for new, block in enumerate(kept):
        for name in [
            k.split(f"transformer.h.{block}.", 1)[1] for k in reference if k.startswith(f"transformer.h.{block}.")
        ]:
            theta = reference[f"transformer.h.{block}.{name}"]
            expected = theta + sum(reference[f"transformer.h.{k}.{name}"] - theta for k in absorbed[block])
            assert torch.allclose(target[f"transformer.h.{new}.{name}"], expected, atol=1e-6), name
    for name in ("transformer.wte.weight", "transformer.ln_f.weight", "lm_head.weight"):
        assert torch.equal(target[name], reference[name])
    load_model(out_dir)  # an ordinary checkpoint: strict load into LitGPT's GPT


def hf_llama(checkpoint) -> "torch.nn.Module":
    """The same weights in transformers' LlamaForCausalLM (eager attention), converted by litgpt's script."""
    from litgpt.scripts.convert_lit_checkpoint import copy_weights_llama
    from transformers import LlamaConfig, LlamaForCausalLM

    config = Config.from_file(checkpoint / "model_config.yaml")
    state_dict = {}
    copy_weights_llama(config, state_dict, torch.load(checkpoint / "lit_model.pth", weights_only=True))
    hf_config = LlamaConfig(
        vocab_size=config.padded_vocab_size,
        hidden_size=config.n_embd,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        num_key_value_heads=config.n_query_groups,
        max_position_embeddings=config.block_size,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_base,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(hf_config)
    model.load_state_dict(state_dict)
    return model.double().eval()


def hf_hidden_states(model, idx: torch.Tensor, block: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """transformers' input of every block plus the final norm's input, and the MLP output of ``block``."""
    mlp_out, norm_in = [], []
    hooks = [
        model.model.layers[block].mlp.register_forward_hook(lambda m, args, out: mlp_out.append(out)),
        model.model.norm.register_forward_pre_hook(lambda m, args: norm_in.append(args[0])),
    ]
    with torch.no_grad():
        out = model(idx, output_hidden_states=True)
    for hook in hooks:
        hook.remove()
    return list(out.hidden_states[:-1]) + [norm_in[0]], mlp_out[0]


@pytest.mark.parametrize(
    ("options", "block", "cut"), [(dict(n_layers=3), 2, (3, 6)), (dict(layers="0-1,5"), 1, (2, 5))]
)
def test_linear_bridge_equals_lstsq_and_the_folded_model_equals_the_two_step_computation(
    tiny_references, corpus, tmp_path, options, block, cut
):
    reference_dir = tiny_references["llama-gqa"]
    out_dir = init(
        reference_dir, out_dir=tmp_path / "bridge", bridge="linear", data_path=corpus, **options, **CALIBRATION
    )
    provenance = json.loads((out_dir / "provenance.json").read_text())
    kept = provenance["layers"]
    (fit,) = provenance["bridges"]
    assert fit["block"] == block and fit["cut"] == list(cut)

    # the same calibration windows, hidden states from transformers, the map from numpy
    windows = sample_windows(Tokenizer(reference_dir), corpus, 12, 24, 42)
    hf = hf_llama(reference_dir)
    hidden, m = hf_hidden_states(hf, windows, block)
    start, stop = cut
    m = m.flatten(0, 1).numpy()
    y = hidden[start].flatten(0, 1).numpy() - m
    target = hidden[stop].flatten(0, 1).numpy()
    transform, *_ = np.linalg.lstsq(m, target - y, rcond=None)
    residual = np.linalg.norm(m @ transform - (target - y))
    assert fit["relative_residual"] == pytest.approx(residual / np.linalg.norm(target - y), rel=1e-3)
    assert fit["hidden_state_error"] == pytest.approx(residual / np.linalg.norm(target), rel=1e-3)
    assert fit["hidden_state_error_without_bridge"] == pytest.approx(
        np.linalg.norm(hidden[start].numpy() - hidden[stop].numpy()) / np.linalg.norm(target), rel=1e-4
    )
    assert fit["hidden_state_error"] < fit["hidden_state_error_without_bridge"]

    reference = torch.load(reference_dir / "lit_model.pth", weights_only=True)
    target_sd = torch.load(out_dir / "lit_model.pth", weights_only=True)
    new = kept.index(block)
    down = reference[f"transformer.h.{block}.mlp.proj.weight"].double().numpy()
    assert np.allclose(target_sd[f"transformer.h.{new}.mlp.proj.weight"].numpy(), transform.T @ down, atol=1e-4)

    # the folded model's logits = reference's kept blocks, with y + m T out of the last one, then its norm and head
    idx = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(1))
    transform = torch.from_numpy(transform).float()
    model = load_model(reference_dir)
    mlp = model.transformer.h[block].mlp
    hook = mlp.register_forward_hook(lambda module, args, output: output @ transform)
    with torch.no_grad():
        two_step = reference_logits_through(model, idx, kept)
    hook.remove()
    with torch.no_grad():
        folded = load_model(out_dir)(idx)
    assert torch.allclose(folded, two_step, atol=1e-4)


def test_linear_bridge_folds_the_bias_of_a_gpt_neox_block(tiny_references, corpus, tmp_path):
    """GPT-NeoX (parallel residual, biases): y = x + attn(norm_1(x)) and m = mlp(norm_2(x)); the map folds into the
    MLP output projection's weight and bias, and the folded model equals the two-step computation."""
    reference_dir = tiny_references["gpt-neox"]
    out_dir = init(
        reference_dir, out_dir=tmp_path / "bridge", bridge="linear", data_path=corpus, n_layers=2, **CALIBRATION
    )
    reference, target = (torch.load(d / "lit_model.pth", weights_only=True) for d in (reference_dir, out_dir))
    w, b = (reference[f"transformer.h.1.mlp.proj.{n}"].double() for n in ("weight", "bias"))
    w2, b2 = (target[f"transformer.h.1.mlp.proj.{n}"].double() for n in ("weight", "bias"))
    transform = torch.linalg.lstsq(w.T, w2.T).solution  # W' = T^T W, so W^T T = W'^T
    assert torch.allclose(b2, transform.T @ b, atol=1e-4)
    idx = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(2))
    model = load_model(reference_dir)
    hook = model.transformer.h[1].mlp.register_forward_hook(lambda module, args, output: output @ transform.float())
    with torch.no_grad():
        two_step = reference_logits_through(model, idx, [0, 1])
    hook.remove()
    with torch.no_grad():
        assert torch.allclose(load_model(out_dir)(idx), two_step, atol=1e-4)


def test_iterative_removal_equals_a_brute_force_loop(tiny_references, corpus, tmp_path):
    reference_dir = tiny_references["llama-gqa"]
    out_dir = init(
        reference_dir, out_dir=tmp_path / "sleb", n_layers=3, select="iterative", data_path=corpus, **CALIBRATION
    )
    provenance = json.loads((out_dir / "provenance.json").read_text())
    windows = sample_windows(Tokenizer(reference_dir), corpus, 12, 24, 42)
    model = load_model(reference_dir)

    def loss(layers):
        with torch.no_grad():
            logits = reference_logits_through(model, windows, layers)[:, :-1]
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()).item()

    remaining, order = list(range(6)), []
    while len(remaining) > 3:
        losses = {j: loss([i for i in remaining if i != j]) for j in remaining}
        order.append(min(remaining, key=lambda j: (losses[j], j)))
        step = provenance["selection"]["steps"][len(order) - 1]
        assert step["candidate_losses"] == pytest.approx({str(j): v for j, v in losses.items()}, rel=1e-4)
        remaining.remove(order[-1])
    assert provenance["selection"]["removal_order"] == order
    assert provenance["layers"] == remaining
    assert provenance["start"]["select"] == "iterative"


@pytest.mark.parametrize(
    ("measure", "expected"),
    [
        ("angular_distance", [0, 4, 5]),  # d(l, 3) smallest from block 1 on: 0.3 at 1 (block 0 always stays)
        ("block_influence", [0, 4, 5]),  # window means from 1: 0.27, 0.43, 0.52: blocks 1-3 are cut
    ],
)
def test_keep_cut_removes_the_worst_window_after_block_0(tiny_references, tmp_path, measure, expected):
    analysis = hand_built_analysis(
        tmp_path / "analysis",
        block_influence=[0.05, 0.1, 0.2, 0.5, 0.6, 0.45],
        angular_distance={"1": [0.9, 0.8, 0.1, 0.1, 0.1, 0.7], "3": [0.2, 0.3, 0.6, 0.5]},
    )
    out_dir = init(
        tiny_references["llama-gqa"], out_dir=tmp_path / "t", n_layers=3, select=measure, keep="cut", analysis=analysis
    )
    selection = json.loads((out_dir / "provenance.json").read_text())["selection"]
    assert selection["layers"] == expected and (selection["cut_start"], selection["cut_stop"]) == (1, 4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(n_layers=3, bridge="linear"), "--bridge linear needs --data_path"),
        (dict(n_layers=3, select="iterative"), "--select iterative needs --data_path"),
        (dict(n_layers=3, merge="laco", bridge="linear", data_path="DATA"), "cannot be combined"),
        (dict(layers="1-3", merge="laco"), "blocks 0..0 have none"),
        (dict(layers="2,4", bridge="linear", data_path="DATA"), "blocks 0..1 have none"),
        (dict(n_layers=1, merge="laco"), "--n_layers 1 is too few for --merge_group 4"),
        (dict(n_layers=3, merge="lacco"), "--merge lacco is not a merge; valid: laco"),
        (dict(n_layers=3, merge="laco", half_width=True), "leave --half_width and --parts"),
        (dict(n_layers=3, bridge="linear", data_path="nowhere"), "--data_path nowhere does not exist"),
    ],
)
def test_bad_derivations_fail_cleanly_and_write_nothing(tiny_references, corpus, tmp_path, options, message):
    options = {k: corpus if v == "DATA" else v for k, v in options.items()}
    with pytest.raises(SystemExit, match=message):
        init(tiny_references["llama-gqa"], out_dir=tmp_path / "t", **options)
    assert not (tmp_path / "t").exists()


def test_bridge_refuses_a_normalised_mlp_output(tmp_path, corpus):
    reference = make_reference(tmp_path / "gemma", "gemma-2")
    with pytest.raises(SystemExit, match="post_mlp_norm"):
        init(reference, out_dir=tmp_path / "t", n_layers=3, bridge="linear", data_path=corpus)
    assert not (tmp_path / "t").exists()
