"""`litgpt inheritune init`: the target holds exactly the reference's kept tensors and computes what they compute."""

import json
import shutil

import pytest
import torch
import yaml
from litgpt.config import Config
from litgpt.model import GPT

from conftest import TINY_CONFIGS, make_reference, run_cli, run_in_process
from litgpt_inheritune.init import main as init


def load_model(checkpoint_dir) -> GPT:
    model = GPT(Config.from_file(checkpoint_dir / "model_config.yaml"))
    model.load_state_dict(torch.load(checkpoint_dir / "lit_model.pth", weights_only=True))
    return model.eval()


def reference_logits_through(model: GPT, idx: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """The reference's embedding, then its own blocks ``layers`` in order, then its final norm and head.

    Written from litgpt's GPT.forward without the kv cache, independently of `init`'s surgery.
    """
    T = idx.size(1)
    cos, sin = model.cos[:T].unsqueeze(0), model.sin[:T].unsqueeze(0)
    x = model.transformer.wte(idx)
    if model.config.scale_embeddings:
        x = x * torch.tensor(model.config.n_embd**0.5, dtype=x.dtype)
    for i in layers:
        x = model.transformer.h[i](x, cos, sin)
    x = model.lm_head(model.transformer.ln_f(x))
    if model.config.final_logit_softcapping is not None:
        x = torch.tanh(x / model.config.final_logit_softcapping) * model.config.final_logit_softcapping
    return x


CASES = [
    ("llama-gqa", dict(n_layers=3), [0, 1, 2]),
    ("llama-gqa", dict(layers="4-5,1"), [4, 5, 1]),
    ("gpt-neox", dict(n_layers=2), [0, 1]),
    ("gemma-2", dict(layers="3,0,5"), [3, 0, 5]),
    ("gemma-2", dict(n_layers=6), [0, 1, 2, 3, 4, 5]),
    ("gemma-2", dict(layers="0-2,0-2", allow_repeats=True), [0, 1, 2, 0, 1, 2]),  # stacking: two copies of three blocks
    ("llama-gqa", dict(layers="1,1,1", allow_repeats=True), [1, 1, 1]),
]


@pytest.mark.parametrize(("style", "selection", "layers"), CASES)
def test_target_tensors_and_logits_match_reference(tiny_references, tmp_path, style, selection, layers):
    reference_dir = tiny_references[style]
    out_dir = init(reference_dir, out_dir=tmp_path / "target", **selection)

    reference_sd = torch.load(reference_dir / "lit_model.pth", weights_only=True)
    target_sd = torch.load(out_dir / "lit_model.pth", weights_only=True)
    block_keys = [k for k in reference_sd if k.startswith("transformer.h.0.")]
    expected_keys = {k for k in reference_sd if not k.startswith("transformer.h.")}
    expected_keys |= {k.replace("h.0.", f"h.{j}.", 1) for j in range(len(layers)) for k in block_keys}
    assert set(target_sd) == expected_keys
    for key in ("transformer.wte.weight", "transformer.ln_f.weight", "lm_head.weight"):
        assert torch.equal(target_sd[key], reference_sd[key])
    for new, old in enumerate(layers):
        for key in block_keys:
            assert torch.equal(
                target_sd[key.replace("h.0.", f"h.{new}.", 1)], reference_sd[key.replace("h.0.", f"h.{old}.", 1)]
            )

    config = yaml.safe_load((out_dir / "model_config.yaml").read_text())
    assert config["n_layer"] == len(layers)
    reference_config = TINY_CONFIGS[style]
    assert config["name"].startswith(f"{reference_config['name']}-inheritune-{len(layers)}L")
    if "sliding_window_indices" in reference_config:
        assert config["sliding_window_indices"] == [reference_config["sliding_window_indices"][i] for i in layers]

    torch.manual_seed(1)
    idx = torch.randint(0, reference_config["vocab_size"], (2, 24))  # longer than gemma-2's sliding window of 8
    with torch.no_grad():
        expected = reference_logits_through(load_model(reference_dir), idx, layers)
        actual = load_model(out_dir)(idx)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_stacked_copies_are_separate_tensors(tiny_references, tmp_path):
    out_dir = init(tiny_references["llama-gqa"], out_dir=tmp_path / "target", layers="0-1,0-1", allow_repeats=True)
    target_sd = torch.load(out_dir / "lit_model.pth", weights_only=True)
    first, copy = target_sd["transformer.h.0.attn.qkv.weight"], target_sd["transformer.h.2.attn.qkv.weight"]
    assert torch.equal(first, copy) and first.untyped_storage().data_ptr() != copy.untyped_storage().data_ptr()
    assert json.loads((out_dir / "provenance.json").read_text())["layers"] == [0, 1, 0, 1]


def test_side_files_and_provenance(tiny_references, tmp_path):
    reference_dir = tiny_references["llama-gqa"]
    out_dir = init(reference_dir, out_dir=tmp_path / "target", layers="2,3")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out_dir / name).read_bytes() == (reference_dir / name).read_bytes()
    hf_config = json.loads((out_dir / "config.json").read_text())
    assert hf_config["num_hidden_layers"] == 2
    assert hf_config["layer_types"] == ["type2", "type3"]

    provenance = json.loads((out_dir / "provenance.json").read_text())
    assert provenance["layers"] == [2, 3]
    assert provenance["reference"]["name"] == "tiny-llama"
    assert provenance["reference"]["n_layer"] == 6
    assert provenance["reference"]["size_bytes"] == (reference_dir / "lit_model.pth").stat().st_size
    assert provenance["versions"]["litgpt"] == "0.5.13"
    # the checksum follows the reference's content: re-saving other weights changes it
    copy = tmp_path / "copy"
    shutil.copytree(reference_dir, copy)
    second = init(copy, out_dir=tmp_path / "again", layers="2,3")
    assert (
        json.loads((second / "provenance.json").read_text())["reference"]["checksum"]
        == provenance["reference"]["checksum"]
    )
    changed = make_reference(tmp_path / "changed", "llama-gqa", seed=7)
    third = init(changed, out_dir=tmp_path / "third", layers="2,3")
    assert (
        json.loads((third / "provenance.json").read_text())["reference"]["checksum"]
        != provenance["reference"]["checksum"]
    )


def test_reads_pretrain_style_checkpoint_and_defaults_out_dir(tmp_path):
    """`litgpt pretrain` saves {"model": state_dict, ...}; without --out_dir the target lands beside the reference."""
    reference_dir = make_reference(tmp_path / "ref", "gpt-neox", hf_config=False)
    state_dict = torch.load(reference_dir / "lit_model.pth", weights_only=True)
    torch.save({"model": state_dict, "iter_num": 3}, reference_dir / "lit_model.pth")
    out_dir = init(reference_dir, n_layers=1)
    assert out_dir == tmp_path / "tiny-pythia-inheritune-1L"
    assert not (out_dir / "config.json").exists()
    target = torch.load(out_dir / "lit_model.pth", weights_only=True)
    assert torch.equal(target["transformer.h.0.attn.qkv.weight"], state_dict["transformer.h.0.attn.qkv.weight"])


def test_overwrite_replaces_and_nothing_else_is_left(tiny_references, tmp_path):
    out_dir = tmp_path / "target"
    init(tiny_references["llama-gqa"], out_dir=out_dir, n_layers=2)
    init(tiny_references["llama-gqa"], out_dir=out_dir, n_layers=4, overwrite=True)
    assert yaml.safe_load((out_dir / "model_config.yaml").read_text())["n_layer"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]  # no staging or retired folders


BAD_INPUTS = [
    (dict(n_layers=0), "--n_layers 0 is out of range; valid: 1..6"),
    (dict(n_layers=7), "--n_layers 7 is out of range; valid: 1..6"),
    (dict(layers="1,6"), "layer 6 is out of range; the reference has 6 blocks: 0..5"),
    (dict(layers="2,2"), "layer 2 is repeated; each block can be inherited once (--allow_repeats true stacks copies)"),
    (dict(layers="a,b"), "--layers 'a,b' is not a list of block indices"),
    (dict(layers="5-3"), "runs backwards"),
    (dict(), "give exactly one of --n_layers N or --layers i,j,k"),
    (dict(n_layers=2, layers="0,1"), "give exactly one of --n_layers N or --layers i,j,k"),
    (
        dict(layers="0,1", select="rank"),
        "--select rank chooses --n_layers blocks from an analysis; it cannot be combined with --layers 0,1",
    ),
    (dict(n_layers=2, select="rnak"), "--select rnak is not a measure; valid: first, rank, mass, block_influence"),
]


@pytest.mark.parametrize(("selection", "message"), BAD_INPUTS)
def test_bad_selection_fails_cleanly_and_writes_nothing(tiny_references, tmp_path, selection, message):
    out_dir = tmp_path / "target"
    with pytest.raises(SystemExit) as error:
        init(tiny_references["llama-gqa"], out_dir=out_dir, **selection)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_existing_out_dir_is_kept_without_overwrite(tiny_references, tmp_path):
    out_dir = tmp_path / "target"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="exists and is not empty; pass --overwrite true"):
        init(tiny_references["llama-gqa"], out_dir=out_dir, n_layers=2)
    assert [p.name for p in out_dir.iterdir()] == ["notes.txt"]
    with pytest.raises(SystemExit, match="would replace the input"):
        init(tiny_references["llama-gqa"], out_dir=tiny_references["llama-gqa"], n_layers=2, overwrite=True)


def test_missing_or_corrupt_reference(tmp_path):
    with pytest.raises(SystemExit, match="is not a directory"):
        init(tmp_path / "nowhere", out_dir=tmp_path / "t", n_layers=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="has no usable model_config.yaml"):
        init(empty, out_dir=tmp_path / "t", n_layers=1)

    reference_dir = make_reference(tmp_path / "ref", "llama-gqa")
    weights = reference_dir / "lit_model.pth"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated download
    with pytest.raises(SystemExit, match="is not a readable PyTorch checkpoint"):
        init(reference_dir, out_dir=tmp_path / "t", n_layers=1)
    weights.unlink()
    with pytest.raises(SystemExit, match="lit_model.pth does not exist"):
        init(reference_dir, out_dir=tmp_path / "t", n_layers=1)
    assert not (tmp_path / "t").exists()

    mismatched = make_reference(tmp_path / "mismatched", "llama-gqa")
    config = yaml.safe_load((mismatched / "model_config.yaml").read_text())
    config["n_layer"] = 8
    (mismatched / "model_config.yaml").write_text(yaml.dump(config))
    with pytest.raises(SystemExit, match="holds 6 blocks but model_config.yaml says n_layer=8"):
        init(mismatched, out_dir=tmp_path / "t", n_layers=1)


def test_refuses_to_unpickle_objects(tmp_path):
    reference_dir = make_reference(tmp_path / "ref", "llama-gqa")
    torch.save({"payload": object.__new__(Config)}, reference_dir / "lit_model.pth")
    with pytest.raises(SystemExit, match="is not a readable PyTorch checkpoint"):
        init(reference_dir, out_dir=tmp_path / "t", n_layers=1)


@pytest.mark.parametrize(
    "entry",
    [("litgpt", "inheritune", "init"), ("litgpt-inheritune", "init"), ("python", "-m", "litgpt_inheritune", "init")],
)
def test_cli_entry_points(tiny_references, tmp_path, entry):
    out_dir = tmp_path / "target"
    result = run_cli(
        *entry, str(tiny_references["llama-gqa"]), "--out_dir", str(out_dir), "--n_layers", "3", check=True
    )
    assert f"Inherited blocks [0, 1, 2] of tiny-llama (6 blocks) into {out_dir}" in result.stdout
    assert yaml.safe_load((out_dir / "model_config.yaml").read_text())["n_layer"] == 3


def test_cli_bad_input_is_one_line_and_nonzero(tiny_references, tmp_path):
    code, _, stderr = run_in_process(
        "init", str(tiny_references["llama-gqa"]), "--out_dir", str(tmp_path / "t"), "--layers", "0,9"
    )
    assert code != 0
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "error: layer 9 is out of range; the reference has 6 blocks: 0..5"
    assert not (tmp_path / "t").exists()


def test_litgpt_generate_runs_on_target(tiny_references, tmp_path):
    out_dir = init(tiny_references["gemma-2"], out_dir=tmp_path / "target", layers="1,4")
    result = run_cli("litgpt", "generate", str(out_dir), "--prompt", "the early", "--max_new_tokens", "6", check=True)
    assert result.stdout.strip().splitlines()[-1].startswith("the early")
    assert "Time for inference 1" in result.stderr + result.stdout


def test_select_by_rank_takes_the_best_window_of_an_analysis(tiny_references, tmp_path):
    analysis = tmp_path / "analysis"
    analysis.mkdir()
    max_rank = [2.0, 3.0, 9.0, 8.0, 1.0, 1.0]
    windows = {"2": [2, 3], "3": [1, 2, 3]}
    (analysis / "attention.json").write_text(
        json.dumps({"max_rank": max_rank, "suggested_layers": {"best_window": windows}})
    )
    out_dir = init(tiny_references["llama-gqa"], out_dir=tmp_path / "t", n_layers=2, select="rank", analysis=analysis)
    assert json.loads((out_dir / "provenance.json").read_text())["layers"] == [2, 3]
    with pytest.raises(SystemExit, match="--select rank needs --analysis DIR"):
        init(tiny_references["llama-gqa"], out_dir=tmp_path / "u", n_layers=2, select="rank")
    (analysis / "attention.json").write_text(
        json.dumps({"max_rank": [1.0] * 4, "suggested_layers": {"best_window": windows}})
    )
    with pytest.raises(SystemExit, match="describes 4 layers but the reference has 6"):
        init(tiny_references["llama-gqa"], out_dir=tmp_path / "u", n_layers=2, select="rank", analysis=analysis)


def hand_built_analysis(folder, **measures):
    folder.mkdir()
    (folder / "attention.json").write_text(json.dumps({"max_rank": [3.0] * 6, **measures}))
    return folder


@pytest.mark.parametrize(
    ("measure", "keep", "expected"),
    [
        ("block_influence", "window", [3, 4, 5]),  # best mean 0.5 + 0.6 + 0.45
        ("block_influence", "best", [0, 3, 4]),  # 0.7, 0.6, 0.5, in model order
        ("block_influence", "prefix", [0, 1, 2]),
        ("sink_mass", "best", [1, 2, 5]),  # lowest sink share is best
        ("sink_mass", "window", [1, 2, 3]),  # means 0.2, 0.2, 0.8 beat 0.9, 0.2, 0.2
        ("entropy", "best", [0, 1, 2]),  # mean over heads: 2.0, 1.5, 1.5 (tie broken by the earlier)
        ("angular_distance", "window", [2, 3, 4]),  # d(l, 3) of the window itself, not its blocks' d(l, 1)
        ("angular_distance", "best", [0, 1, 5]),
        ("skip_loss", "window", [1, 2, 3]),
    ],
)
def test_select_by_a_measure_on_a_hand_built_analysis(tiny_references, tmp_path, measure, keep, expected):
    analysis = hand_built_analysis(
        tmp_path / "analysis",
        block_influence=[0.7, 0.1, 0.2, 0.5, 0.6, 0.45],
        sink_mass=[[0.9, 0.9], [0.1, 0.3], [0.2, 0.2], [0.8, 0.8], [0.5, 0.5], [0.1, 0.1]],
        entropy=[[2.0, 2.0], [1.0, 2.0], [1.5, 1.5], [1.5, 1.5], [0.1, 0.1], [1.0, 1.0]],
        angular_distance={"1": [0.9, 0.8, 0.1, 0.1, 0.1, 0.7], "3": [0.2, 0.3, 0.6, 0.5]},
        skip_loss=[0.3, 0.3, 0.4, 5.0, 0.1, 0.2],
    )
    out_dir = init(
        tiny_references["llama-gqa"], out_dir=tmp_path / "t", n_layers=3, select=measure, keep=keep, analysis=analysis
    )
    provenance = json.loads((out_dir / "provenance.json").read_text())
    assert provenance["layers"] == expected
    selection = provenance["selection"]
    assert selection["measure"] == measure and selection["rule"] == keep and selection["layers"] == expected
    assert len(selection["layer_scores"]) == 6 and len(selection["kept_scores"]) == 3


def test_select_refuses_a_measure_the_analysis_lacks(tiny_references, tmp_path):
    analysis = hand_built_analysis(tmp_path / "analysis", angular_distance={"1": [0.1] * 6})
    with pytest.raises(
        SystemExit, match="no angular distance for windows of 3 blocks; rerun .* with 3 in --window_sizes"
    ):
        init(
            tiny_references["llama-gqa"],
            out_dir=tmp_path / "t",
            n_layers=3,
            select="angular_distance",
            analysis=analysis,
        )
    with pytest.raises(SystemExit, match="the analysis has no 'skip_loss'"):
        init(
            tiny_references["llama-gqa"],
            out_dir=tmp_path / "t",
            n_layers=3,
            select="skip_loss",
            keep="best",
            analysis=analysis,
        )
    assert not (tmp_path / "t").exists()
