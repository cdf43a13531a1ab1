"""`litgpt inheritune analyze`: attention probabilities, k* and m*, lazy layers, tables and plots."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from litgpt.config import Config
from litgpt.model import GPT

from conftest import TINY_CONFIGS, run_cli
from litgpt_inheritune.analyze import main as analyze
from litgpt_inheritune.attention import (
    approximate_rank,
    best_windows,
    capture_attention,
    column_mass_count,
    lazy_layers,
    potent_prefix,
)


def rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary embedding over the whole head (rotate-half form), written out from the RoFormer paper."""
    T, d = x.size(-2), x.size(-1)
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq).repeat(1, 2)
    rotated = torch.cat((-x[..., d // 2 :], x[..., : d // 2]), dim=-1)
    return x * angles.cos() + rotated * angles.sin()


def eager_attention(block, x: torch.Tensor, config: Config) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) [soft-capped] + causal [+ sliding window] mask), heads expanded from their KV groups."""
    B, T, _ = x.shape
    q, k, _ = block.attn.qkv(block.norm_1(x)).split(
        (
            config.n_head * config.head_size,
            config.n_query_groups * config.head_size,
            config.n_query_groups * config.head_size,
        ),
        dim=-1,
    )
    q = rope(q.view(B, T, config.n_head, config.head_size).transpose(1, 2))
    k = rope(k.view(B, T, config.n_query_groups, config.head_size).transpose(1, 2))
    k = k.repeat_interleave(config.n_head // config.n_query_groups, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(config.head_size)
    if config.attention_logit_softcapping:
        scores = torch.tanh(scores / config.attention_logit_softcapping) * config.attention_logit_softcapping
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    if block.attn.apply_sliding_window_attention:
        allowed &= ~torch.ones(T, T, dtype=torch.bool).tril(-config.sliding_window_size)
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)


@pytest.mark.parametrize("style", ["llama-gqa", "gemma-2"])
def test_captured_probabilities_equal_an_eager_computation(style):
    config = Config(**TINY_CONFIGS[style])
    torch.manual_seed(0)
    model = GPT(config).eval()
    idx = torch.randint(0, config.vocab_size, (2, 20))  # longer than gemma-2's sliding window of 8
    captured = {}
    with torch.no_grad(), capture_attention(model, lambda layer, p: captured.setdefault(layer, p)):
        logits = model(idx)
    with torch.no_grad():
        assert torch.equal(logits, model(idx))  # capturing does not change the forward pass, and is undone
        x = model.transformer.wte(idx)
        if config.scale_embeddings:
            x = x * torch.tensor(config.n_embd**0.5)
        for layer, block in enumerate(model.transformer.h):
            torch.testing.assert_close(captured[layer], eager_attention(block, x, config), rtol=0, atol=1e-5)
            x = block(x, model.cos[:20].unsqueeze(0), model.sin[:20].unsqueeze(0))
    assert captured[0].shape == (2, config.n_head, 20, 20)
    if style == "gemma-2":  # the sliding window really is applied on layer 0 (indices 1, 0, 1, ...)
        assert captured[0][0, 0, 15, :7].abs().max() == 0 and captured[1][0, 0, 15, :7].sum() > 0


def test_rank_and_mass_of_hand_built_matrices():
    T = 100
    single_column = torch.zeros(T, T)
    single_column[:, 0] = 1  # every token attends to the first
    permutation = torch.eye(T)[torch.randperm(T)]
    seven = torch.eye(7)
    stack = torch.stack([single_column, permutation])
    assert approximate_rank(stack).tolist() == [1, 90]  # ceil(0.9 T)
    assert column_mass_count(stack).tolist() == [1, 90]
    assert approximate_rank(seven).item() == 7 and column_mass_count(seven).item() == 7  # ceil(6.3)
    two_columns = torch.zeros(4, 4)
    two_columns[:, 0], two_columns[:, 1] = 0.5, 0.5
    assert approximate_rank(two_columns).item() == 1  # rank one, yet two columns carry the mass
    assert column_mass_count(two_columns).item() == 2


def test_rank_agrees_with_float64_svd_on_attention_like_matrices():
    torch.manual_seed(0)
    scores = torch.randn(300, 50, 50) * torch.rand(300, 1, 1) * 6
    matrices = scores.masked_fill(~torch.ones(50, 50, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
    singular = np.linalg.svd(matrices.double().numpy(), compute_uv=False) ** 2
    energy = np.cumsum(singular, axis=-1) / singular.sum(axis=-1, keepdims=True)
    expected = (energy < 0.9).sum(axis=-1) + 1
    assert (approximate_rank(matrices).numpy() == expected).mean() >= 0.99


def test_lazy_layers_and_suggestions():
    max_rank = [5.0, 4.0, 1.2, 3.0, 1.0, 6.0]
    assert lazy_layers(max_rank, 2) == [2, 4]
    assert potent_prefix(max_rank, 2) == [0, 1]
    assert potent_prefix([3.0, 4.0], 2) == [0, 1]
    windows = best_windows(max_rank)
    assert windows[1] == [5] and windows[2] == [0, 1] and windows[3] == [0, 1, 2] and windows[6] == list(range(6))
    assert best_windows([2.0, 2.0, 2.0])[1] == [0]  # earliest on ties


def test_cli_writes_tables_and_plots(tiny_references, jsonl_corpus, tmp_path):
    out_dir = tmp_path / "analysis"
    run_cli(
        "litgpt",
        "inheritune",
        "analyze",
        str(tiny_references["gemma-2"]),
        "--data_path",
        str(jsonl_corpus),
        "--num_sequences",
        "12",
        "--seq_len",
        "24",
        "--batch_size",
        "5",
        "--out_dir",
        str(out_dir),
        check=True,
    )
    result = json.loads((out_dir / "attention.json").read_text())
    assert len(result["max_rank"]) == len(result["avg_mass"]) == len(result["rank"]) == 6
    assert all(len(heads) == 4 for heads in result["rank"])
    assert result["max_rank"] == [max(heads) for heads in result["rank"]]
    assert result["avg_mass"] == pytest.approx([sum(h) / 4 for h in result["mass"]])
    assert all(1 <= r <= 24 for heads in result["rank"] for r in heads)
    assert result["settings"]["num_sequences"] == 12 and result["settings"]["tau"] == 0.9
    assert result["suggested_layers"]["best_window"]["6"] == list(range(6))
    with open(out_dir / "layers.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["max_rank"]) for r in rows] == pytest.approx(result["max_rank"], abs=1e-4)
    with open(out_dir / "heads.csv") as f:
        assert len(list(csv.DictReader(f))) == 24
    assert [float(r["block_influence"]) for r in rows] == pytest.approx(result["block_influence"], rel=1e-5)
    assert [float(r["sink_mass"]) for r in rows] == pytest.approx([sum(h) / 4 for h in result["sink_mass"]], rel=1e-5)
    with open(out_dir / "windows.csv") as f:
        windows = list(csv.DictReader(f))
    assert len(windows) == 6 + 5 + 4 + 3 + 2 + 1 and all(
        int(w["stop"]) - int(w["start"]) == int(w["n"]) for w in windows
    )
    assert [float(w["angular_distance"]) for w in windows if w["n"] == "2"] == pytest.approx(
        result["angular_distance"]["2"], rel=1e-5
    )
    assert {k: result["settings"][k] for k in ("device", "precision", "dtype", "seed", "skip_sequences")} == dict(
        device="cpu", precision="32-true", dtype="float32", seed=42, skip_sequences=1
    )  # one window in 32 by default
    for name in ("max_rank", "avg_mass", "rank_heatmap", "attention_maps", "measures"):
        assert (out_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_numbers_as_a_direct_computation(tiny_references, jsonl_corpus, tmp_path):
    """Rank(h, l) from the command equals k* averaged by hand over the same windows."""
    from litgpt_inheritune.analyze import load_model, sample_windows
    from litgpt.tokenizer import Tokenizer

    reference = tiny_references["llama-gqa"]
    result = analyze(
        reference,
        data_path=jsonl_corpus,
        out_dir=tmp_path / "a",
        num_sequences=6,
        seq_len=16,
        batch_size=4,
        plots=False,
    )
    windows = sample_windows(Tokenizer(reference), jsonl_corpus, 6, 16, 42)
    model = load_model(reference)
    per_layer = {}
    with torch.no_grad(), capture_attention(model, lambda layer, p: per_layer.setdefault(layer, []).append(p)):
        model(windows)
    for layer, (probabilities,) in per_layer.items():
        by_hand = []
        for head in range(4):
            ks = []
            for seq in range(6):
                s = np.linalg.svd(probabilities[seq, head].double().numpy(), compute_uv=False) ** 2
                ks.append(int(np.searchsorted(np.cumsum(s) / s.sum(), 0.9 - 1e-9) + 1))
            by_hand.append(sum(ks) / 6)
        assert result["rank"][layer] == pytest.approx(by_hand)


def test_checkpoints_across_training(tiny_target, jsonl_corpus, tmp_path, capsys):
    from litgpt.args import EvalArgs, TrainArgs

    from litgpt_inheritune.pretrain import setup as pretrain
    from litgpt_inheritune.redpajama import RedPajamaSample

    run = tmp_path / "run"
    pretrain(
        tiny_target,
        out_dir=run,
        data=RedPajamaSample(data_dir=jsonl_corpus, token_budget=20_000, val_tokens=2_000, num_workers=0),
        train=TrainArgs(
            save_interval=2, global_batch_size=8, micro_batch_size=4, max_steps=4, max_norm=1.0, max_seq_length=32
        ),
        eval=EvalArgs(final_validation=False),
    )
    capsys.readouterr()
    results = analyze(
        run, data_path=jsonl_corpus, out_dir=tmp_path / "a", num_sequences=4, seq_len=16, checkpoints=[tiny_target]
    )
    assert list(results) == ["llama-3L", "step-00000002", "step-00000004", "final"]  # the starting point first
    lines = [line for line in capsys.readouterr().err.splitlines() if "layers, MaxRank" in line]
    assert [line.split(":")[0] for line in lines] == list(results)  # each console line names its checkpoint
    with open(tmp_path / "a" / "trajectory.csv") as f:
        assert len(list(csv.DictReader(f))) == 4 * 3
    assert (tmp_path / "a" / "trajectory.png").is_file() and (tmp_path / "a" / "final" / "attention.json").is_file()


def test_bad_inputs(tiny_references, jsonl_corpus, tmp_path):
    reference = tiny_references["llama-gqa"]
    for kwargs, message in [
        (dict(data_path=tmp_path / "none"), "does not exist"),
        (dict(), "--data_path is required"),
        (dict(data_path=jsonl_corpus, window_sizes=[0, 2]), "--window_sizes 0 is out of range; valid: 1..6"),
        (dict(data_path=jsonl_corpus, device="cuda:7"), "--device cuda:7 is not usable here"),
        (dict(data_path=jsonl_corpus, seq_len=1), "--seq_len 1 must be at least 2"),
        (dict(data_path=jsonl_corpus, tau=1.5), "--tau 1.5 must be in (0, 1]"),
        (dict(data_path=jsonl_corpus, num_sequences=0), "--num_sequences 0 must be at least 1"),
        (dict(data_path=jsonl_corpus, seq_len=100), "--seq_len 100 exceeds the model's context of 64 tokens"),
    ]:
        with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            analyze(reference, out_dir=tmp_path / "o", **kwargs)
    with pytest.raises(SystemExit, match=r"is missing the files: \['lit_model.pth', 'model_config.yaml'\]"):
        analyze(tmp_path, data_path=jsonl_corpus, out_dir=tmp_path / "o")


def test_real_model_has_lazy_layers(smollm2, lee_text, tmp_path):
    """SmolLM2-135M on real news text: the early layers are potent, some deep layers have collapsed."""
    result = analyze(
        smollm2,
        data_path=lee_text,
        out_dir=tmp_path / "smol",
        num_sequences=10,
        seq_len=100,
        plots=False,
        window_sizes=[1],
    )
    assert len(result["max_rank"]) == 30 and len(result["rank"][0]) == 9
    assert min(result["max_rank"][:3]) > 10
    assert result["lazy_layers"] and min(result["lazy_layers"]) >= 15


def transformers_copy(checkpoint):
    """The same weights in transformers' own LLaMA implementation (eager attention), converted by litgpt's script."""
    from litgpt.scripts.convert_lit_checkpoint import copy_weights_llama
    from transformers import LlamaConfig, LlamaForCausalLM

    state_dict = {}
    copy_weights_llama(
        Config.from_file(checkpoint / "model_config.yaml"),
        state_dict,
        torch.load(checkpoint / "lit_model.pth", weights_only=True, mmap=True),
    )
    model = LlamaForCausalLM(
        LlamaConfig.from_pretrained(checkpoint, attn_implementation="eager", torch_dtype=torch.float32)
    )
    model.load_state_dict(state_dict, strict=False)  # lm_head is tied to the embedding
    return model.float().eval()


def test_measures_equal_transformers_on_a_real_gqa_model(smollm2, lee_text, tmp_path):
    """SmolLM2-135M (9 heads, 3 KV groups): every new measure against transformers' hidden states and attentions,
    and the skip loss against transformers with the block removed from its layer list."""
    from litgpt.tokenizer import Tokenizer

    from litgpt_inheritune.analyze import sample_windows

    result = analyze(
        smollm2,
        data_path=lee_text,
        out_dir=tmp_path / "a",
        num_sequences=3,
        seq_len=32,
        batch_size=2,
        window_sizes=[1, 3, 30],
        skip_sequences=2,
        plots=False,
    )
    windows = sample_windows(Tokenizer(smollm2), lee_text, 3, 32, 42)
    hf = transformers_copy(smollm2)
    norm_input = []
    hook = hf.model.norm.register_forward_pre_hook(lambda module, args: norm_input.append(args[0]))
    with torch.no_grad():
        out = hf(windows, output_hidden_states=True, output_attentions=True)
    hook.remove()
    hidden = [h.double() for h in out.hidden_states[:30]] + [norm_input[0].double()]  # input of block l; ln_f's input

    def cosine(a, b):
        return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))

    influence = [(1 - cosine(hidden[l], hidden[l + 1])).mean().item() for l in range(30)]
    assert result["block_influence"] == pytest.approx(influence, abs=2e-4)
    for n in (1, 3, 30):
        angles = [
            (torch.arccos(cosine(hidden[l][:, -1], hidden[l + n][:, -1]).clamp(-1, 1)) / math.pi).mean().item()
            for l in range(31 - n)
        ]
        assert result["angular_distance"][str(n)] == pytest.approx(angles, abs=2e-4)
    attentions = torch.stack(out.attentions).double()  # (L, B, H, T, T)
    entropy = -(attentions * attentions.clamp(min=1e-300).log()).sum(-1).mean(-1).mean(1)
    assert np.allclose(result["entropy"], entropy.numpy(), atol=1e-4)
    assert np.allclose(result["sink_mass"], attentions[..., 0].mean(-1).mean(1).numpy(), atol=1e-5)
    assert np.array(result["sink_mass"]).shape == np.array(result["entropy"]).shape == (30, 9)

    with torch.no_grad():
        full = hf(windows[:2], labels=windows[:2]).loss.item()
        layers = hf.model.layers
        skipped = []
        for l in range(30):
            hf.model.layers = torch.nn.ModuleList([block for i, block in enumerate(layers) if i != l])
            skipped.append(hf(windows[:2], labels=windows[:2]).loss.item() - full)
    assert result["loss"] == pytest.approx(full, abs=1e-3)
    assert result["skip_loss"] == pytest.approx(skipped, abs=2e-3)
    assert max(skipped) > 1.0 and min(skipped) < 0.1  # some blocks matter, some hardly: the test can tell them apart


def test_windows_lie_inside_one_document_and_only_needed_documents_are_read(tiny_references, tmp_path):
    from litgpt.tokenizer import Tokenizer

    from litgpt_inheritune.analyze import sample_windows

    tokenizer = Tokenizer(tiny_references["llama-gqa"])
    words = "the early layers of a deep model carry most of its knowledge while many deeper layers are lazy".split()
    documents = [" ".join(words[i % 7 :] + words[: i % 7]) for i in range(12)]
    data = tmp_path / "sample.jsonl"
    # a broken last line: reading every document (as before) fails, reading only what the windows need does not
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents) + "{not json\n")
    encoded = [tokenizer.encode(d).tolist() for d in documents]

    def inside_a_document(window):
        return any(doc[i : i + len(window)] == window for doc in encoded for i in range(len(doc) - len(window) + 1))

    windows = sample_windows(tokenizer, data, 5, 12, seed=3)
    assert windows.shape == (5, 12) and all(inside_a_document(w) for w in windows.tolist())
    assert tokenizer.eos_id not in windows and len({tuple(w) for w in windows.tolist()}) > 1
    with pytest.raises(SystemExit, match="sample.jsonl line 13 is not a JSON object"):
        sample_windows(tokenizer, data, 20, 12, seed=3)  # more windows than documents: reads to the end
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    windows = sample_windows(tokenizer, data, 20, 12, seed=3)  # 12 documents, 20 windows: several per document
    assert windows.shape == (20, 12) and all(inside_a_document(w) for w in windows.tolist())
    longest = max(len(doc) for doc in encoded)
    with pytest.raises(SystemExit, match=f"holds no document of at least --seq_len {longest + 1} tokens"):
        sample_windows(tokenizer, data, 5, longest + 1, seed=3)


def test_out_dir_is_refused_unless_overwrite_and_then_replaced_whole(tiny_references, jsonl_corpus, tmp_path):
    out_dir = tmp_path / "a"
    options = dict(data_path=jsonl_corpus, out_dir=out_dir, num_sequences=2, seq_len=8, plots=False)
    analyze(tiny_references["llama-gqa"], **options)
    (out_dir / "final").mkdir()
    (out_dir / "trajectory.json").write_text("{}")  # left by an earlier multi-checkpoint analysis
    before = (out_dir / "attention.json").read_text()
    with pytest.raises(SystemExit, match="exists and is not empty; pass --overwrite true"):
        analyze(tiny_references["gpt-neox"], **options)
    assert (out_dir / "attention.json").read_text() == before and (out_dir / "final").is_dir()
    analyze(tiny_references["gpt-neox"], overwrite=True, **options)
    assert sorted(p.name for p in out_dir.iterdir()) == ["attention.json", "heads.csv", "layers.csv", "windows.csv"]
    assert json.loads((out_dir / "attention.json").read_text())["name"] == "tiny-pythia"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no staging folder left behind


def test_precisions_and_devices_agree_on_a_real_model(smollm2, lee_text, tmp_path):
    """bfloat16 against float32 on the CPU (and on CUDA when there is one): same windows, measures within the stated
    tolerances (bf16 keeps 8 bits of mantissa, so k* of a window can move by one and losses by a few hundredths)."""
    options = dict(data_path=lee_text, num_sequences=2, seq_len=24, window_sizes=[1, 4], skip_sequences=1, plots=False)
    runs = [("cpu", "32-true"), ("cpu", "bf16-true")] + (
        [("cuda", "32-true"), ("cuda", "bf16-true")] if torch.cuda.is_available() else []
    )
    results = [analyze(smollm2, out_dir=tmp_path / f"{d}-{p}", device=d, precision=p, **options) for d, p in runs]
    reference = results[0]
    assert reference["settings"]["dtype"] == "float32" and results[1]["settings"]["dtype"] == "bfloat16"
    for result in results[1:]:
        assert np.allclose(result["max_rank"], reference["max_rank"], rtol=0.15, atol=1.0)
        assert np.allclose(result["avg_mass"], reference["avg_mass"], rtol=0.15, atol=1.0)
        assert np.allclose(result["block_influence"], reference["block_influence"], rtol=0.1, atol=0.02)
        assert np.allclose(result["angular_distance"]["4"], reference["angular_distance"]["4"], atol=0.02)
        assert np.allclose(result["entropy"], reference["entropy"], atol=0.1)
        assert np.allclose(result["sink_mass"], reference["sink_mass"], atol=0.04)
        assert np.allclose(result["skip_loss"], reference["skip_loss"], rtol=0.1, atol=0.3)
