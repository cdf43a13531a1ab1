"""The paper's derived model configs are registered in litgpt's own table, for every litgpt entry point."""

import json
import textwrap

import pytest
from litgpt.config import Config, configs, name_to_config

import litgpt_inheritune  # noqa: F401  (registers)
from conftest import run_cli
from litgpt_inheritune.configs import register_configs

EXPECTED = {
    **{f"open_llama_3b-inheritune-{n}L": ("open_llama_3b", n) for n in (4, 6, 8, 10, 13, 16, 18, 20)},
    "open_llama_7b-inheritune-7L": ("open_llama_7b", 7),
    "Llama-2-7b-hf-inheritune-7L": ("Llama-2-7b-hf", 7),
}
GPT2_SHAPES = {"medium": (24, 1024, 16), "large": (36, 1280, 20), "large32": (32, 1280, 20), "xlarge": (48, 1600, 25)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_llama_derived_configs_equal_reference_but_depth(name):
    reference_name, n_layer = EXPECTED[name]
    derived, reference = Config.from_name(name), Config.from_name(reference_name)
    assert derived.n_layer == n_layer
    assert {k: v for k, v in vars(derived).items() if k not in ("name", "n_layer")} == {
        k: v for k, v in vars(reference).items() if k not in ("name", "n_layer")
    }


@pytest.mark.parametrize("family", sorted(GPT2_SHAPES))
def test_gpt2_rope_families(family):
    n_layer, n_embd, n_head = GPT2_SHAPES[family]
    reference = Config.from_name(f"gpt2-rope-{family}")
    assert (reference.n_layer, reference.n_embd, reference.n_head) == (n_layer, n_embd, n_head)
    assert reference.norm_class_name == "LayerNorm" and reference.mlp_class_name == "GptNeoxMLP"
    assert reference.intermediate_size == 4 * n_embd and reference.bias is False
    assert reference.rope_n_elem == reference.head_size  # RoPE over the whole head (no learned positions in LitGPT)
    assert reference.padded_vocab_size == 50304 and reference.block_size == 1024
    derived = sorted(
        int(n.rsplit("-", 1)[1][:-1]) for n in name_to_config if n.startswith(f"gpt2-rope-{family}-inheritune-")
    )
    assert derived == [n for n in (12, 14, 16, 18, 24) if n < n_layer]


# every name the package adds to litgpt's table, written out
REGISTERED = {
    *(f"open_llama_3b-inheritune-{n}L" for n in (4, 6, 8, 10, 13, 16, 18, 20)),
    "open_llama_7b-inheritune-7L",
    "Llama-2-7b-hf-inheritune-7L",
    "gpt2-rope-medium",
    *(f"gpt2-rope-medium-inheritune-{n}L" for n in (12, 14, 16, 18)),
    "gpt2-rope-large",
    *(f"gpt2-rope-large-inheritune-{n}L" for n in (12, 14, 16, 18, 24)),
    "gpt2-rope-large32",
    *(f"gpt2-rope-large32-inheritune-{n}L" for n in (12, 14, 16, 18, 24)),
    "gpt2-rope-xlarge",
    *(f"gpt2-rope-xlarge-inheritune-{n}L" for n in (12, 14, 16, 18, 24)),
}


def test_registered_names_and_register_is_idempotent():
    """A fresh interpreter that imports litgpt holds exactly these names (in this process other tests may have added
    models of their own); each is one entry of litgpt's list, and registering again adds nothing."""
    code = (
        "import json; from litgpt.config import name_to_config;"
        " print(json.dumps([n for n in name_to_config if 'inheritune' in n or n.startswith('gpt2-rope')]))"
    )
    fresh = json.loads(run_cli("python", "-c", code, check=True).stdout.strip().splitlines()[-1])
    assert sorted(fresh) == sorted(REGISTERED) and len(REGISTERED) == 33
    assert all(configs.count(name_to_config[name]) == 1 for name in REGISTERED)  # one entry each in litgpt's list
    before = len(name_to_config), len(configs)
    register_configs()
    assert (len(name_to_config), len(configs)) == before


def test_plain_litgpt_import_sees_configs_without_importing_the_package():
    """The .pth hook registers the configs when litgpt.config is imported, so litgpt's Python API sees them too."""
    code = textwrap.dedent(
        """
        import json, sys
        from litgpt import Config
        c = Config.from_name("open_llama_3b-inheritune-13L")
        print(json.dumps({"n_layer": c.n_layer, "n_embd": c.n_embd, "imported": "litgpt_inheritune" in sys.modules}))
        """
    )
    result = run_cli("python", "-c", code, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"n_layer": 13, "n_embd": 3200, "imported": True}


def test_litgpt_pretrain_resolves_a_registered_name(tmp_path):
    """`litgpt pretrain <name>` builds the registered model; it stops later only because the data folder is empty."""
    (tmp_path / "data").mkdir()
    result = run_cli(
        "litgpt",
        "pretrain",
        "gpt2-rope-medium-inheritune-12L",
        "--out_dir",
        str(tmp_path / "out"),
        "--data",
        "TextFiles",
        "--data.train_data_path",
        str(tmp_path / "data"),
        "--logger_name",
        "csv",
        "--train.max_tokens",
        "1",
        "--precision",
        "32-true",
    )
    # parameters counted by hand: 12 blocks of (2 LayerNorms with bias, qkv, proj, 4x GELU MLP), wte, lm_head, ln_f
    n_embd, vocab = 1024, 50304
    block = 2 * 2 * n_embd + 3 * n_embd * n_embd + n_embd * n_embd + 2 * 4 * n_embd * n_embd
    expected = 12 * block + 2 * vocab * n_embd + 2 * n_embd
    assert f"Total parameters: {expected:,}" in result.stdout + result.stderr
    assert "is not a supported config name" not in result.stderr
