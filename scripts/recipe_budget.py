"""GPU memory and time of each pretraining recipe in config_hub/pretrain/, from arithmetic.

Time: 6 x P x T FLOPs (P = parameters that take part in matmuls: all but the input embedding; T = training
tokens), divided by the GPU's dense bf16 peak times an assumed MFU (model FLOPs utilisation). Memory: weights,
gradients and AdamW states for the recipe's precision, plus activations (about 34 bytes per token per layer per
hidden unit without recomputation, Korthikanti et al. 2022, with flash attention so no T^2 term), the logits and
their gradient in bf16, and 1.5 GB for the CUDA context and workspaces. Each recipe's header repeats the
`expected:` line this script prints for it; `--check` verifies that they agree.

    .venv/bin/python scripts/recipe_budget.py [--check]
"""

import argparse
import re
import sys
from pathlib import Path

import torch
import yaml
from litgpt.config import Config
from litgpt.model import GPT

import litgpt_inheritune  # noqa: F401  (registers the derived model names)

RECIPES = Path(__file__).resolve().parent.parent / "config_hub" / "pretrain"
# dense bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets
GPUS = {"A6000": 154.8, "A100": 312.0, "H100": 989.0}
MFU = 0.4
CONTEXT_BYTES = 1.5e9


def budget(recipe: dict, gpu: str) -> dict:
    name = Path(recipe["checkpoint_dir"]).name
    config = Config.from_name(name)
    with torch.device("meta"):
        model = GPT(config)
    params = sum(p.numel() for p in model.parameters())
    matmul_params = params - model.transformer.wte.weight.numel()

    train, data = recipe["train"], recipe["data"]["init_args"]
    seq = train.get("max_seq_length") or config.block_size
    tokens_per_step = train["global_batch_size"] * seq
    if train.get("max_tokens"):
        tokens = train["max_tokens"]
    else:
        tokens = train["epochs"] * data["token_budget"]
    steps = tokens // tokens_per_step
    flops = 6 * matmul_params * tokens
    hours = flops / (GPUS[gpu] * 1e12 * MFU) / 3600

    devices = recipe.get("devices", 1)
    state_bytes = {"bf16-true": 2 + 2 + 4, "bf16-mixed": 4 + 4 + 8, "32-true": 4 + 4 + 8}[recipe["precision"]] * params
    if recipe.get("strategy") == "fsdp":
        state_bytes /= devices
    micro_tokens = train["micro_batch_size"] * seq
    activations = 34 * micro_tokens * config.n_embd * config.n_layer
    logits = micro_tokens * config.padded_vocab_size * 2 * 2
    memory = state_bytes + activations + logits + CONTEXT_BYTES
    return {"params": params, "tokens": tokens, "steps": steps, "flops": flops, "hours": hours, "memory_gb": memory / 1e9, "gpu": gpu, "devices": devices}


def expected_line(b: dict) -> str:
    gpus = f"{b['devices']} x {b['gpu']}" if b["devices"] > 1 else f"one {b['gpu']}"
    hours = b["hours"] / b["devices"]
    return (
        f"expected: {b['params'] / 1e9:.2f}B params, {b['tokens'] / 1e9:g}B tokens, {b['steps']:,} steps,"
        f" {b['flops']:.1e} FLOPs; {hours:,.0f} h on {gpus} at {MFU:.0%} MFU; ~{b['memory_gb']:.0f} GB per GPU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a recipe's header disagrees with the arithmetic")
    args = parser.parse_args()
    mismatches = []
    print("| recipe | params | tokens | steps | FLOPs | time | GPU memory |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(RECIPES.glob("*.yaml")):
        text = path.read_text()
        gpu = re.search(r"^# gpu: (\w+)", text, re.M)
        if gpu is None:  # CPU recipes state no GPU budget
            continue
        b = budget(yaml.safe_load(text), gpu[1])
        line = expected_line(b)
        if f"# {line}" not in text:
            mismatches.append(f"{path.name}: header should say '# {line}'")
        gpus = f"{b['devices']} x {b['gpu']}" if b["devices"] > 1 else f"1 x {b['gpu']}"
        print(
            f"| `{path.name}` | {b['params'] / 1e9:.2f} B | {b['tokens'] / 1e9:g} B | {b['steps']:,} | {b['flops']:.1e} |"
            f" {b['hours'] / b['devices']:,.0f} h on {gpus} | ~{b['memory_gb']:.0f} GB |"
        )
    if args.check and mismatches:
        sys.exit("\n".join(mismatches))


if __name__ == "__main__":
    main()
