"""`inheritune` inside litgpt's own CLI, next to every stock command."""

from conftest import run_cli

OURS = ("init", "pretrain", "prepare_data", "analyze", "grow", "compare", "convert_gguf", "evaluate", "export", "card")


def test_litgpt_help_lists_inheritune_and_the_stock_commands():
    result = run_cli("litgpt", "--help", check=True)
    listed = result.stdout.split("Available subcommands:")[1]
    for command in (
        "inheritune",
        "download",
        "pretrain",
        "generate",
        "finetune_full",
        "evaluate",
        "convert_from_litgpt",
    ):
        assert f"\n    {command} " in listed or f"\n    {command}\n" in listed, command


def test_inheritune_help_lists_our_commands():
    for entry in (("litgpt", "inheritune"), ("litgpt-inheritune",)):
        listed = run_cli(*entry, "--help", check=True).stdout.split("Available subcommands:")[1]
        assert [
            line.split()[0] for line in listed.splitlines() if line.startswith("    ") and not line.startswith("     ")
        ] == list(OURS)


def test_the_three_entry_points_run_a_command_identically(tiny_references, tmp_path, monkeypatch):
    """`litgpt inheritune`, `litgpt-inheritune` and `python -m litgpt_inheritune`: the same float32 matmul precision
    (litgpt's main sets "high") and the same files. A sitecustomize reports the precision as each process exits."""
    import os

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import atexit\n"
        "def report():\n"
        "    import torch\n"
        "    print('matmul precision:', torch.get_float32_matmul_precision())\n"
        "atexit.register(report)\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path / 'site'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    outputs = []
    for i, entry in enumerate(
        (("litgpt", "inheritune"), ("litgpt-inheritune",), ("python", "-m", "litgpt_inheritune"))
    ):
        result = run_cli(
            *entry, "export", str(tiny_references["llama-gqa"]), "--out_dir", str(tmp_path / f"hf{i}"), check=True
        )
        assert "matmul precision: high" in result.stdout, entry
        outputs.append((tmp_path / f"hf{i}" / "model.safetensors").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
