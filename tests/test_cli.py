"""`inheritune` inside litgpt's own CLI, next to every stock command."""

from conftest import run_cli

OURS = ("init", "pretrain", "analyze", "grow", "compare", "convert_gguf", "evaluate", "export")


def test_litgpt_help_lists_inheritune_and_the_stock_commands():
    result = run_cli("litgpt", "--help", check=True)
    listed = result.stdout.split("Available subcommands:")[1]
    for command in ("inheritune", "download", "pretrain", "generate", "finetune_full", "evaluate", "convert_from_litgpt"):
        assert f"\n    {command} " in listed or f"\n    {command}\n" in listed, command


def test_inheritune_help_lists_our_commands():
    for entry in (("litgpt", "inheritune"), ("litgpt-inheritune",)):
        listed = run_cli(*entry, "--help", check=True).stdout.split("Available subcommands:")[1]
        assert [line.split()[0] for line in listed.splitlines() if line.startswith("    ") and not line.startswith("     ")] == list(OURS)
