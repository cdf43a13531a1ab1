"""GPU memory and time of each pretraining recipe in config_hub/pretrain/, from arithmetic.

Time: litgpt's own FLOP count (``litgpt.utils.flops_per_param`` x 3 for training: 6 FLOPs per parameter per token
plus the attention scores' 12 x layers x hidden x sequence length per token) times the training tokens, divided by the GPU's dense bf16 peak times an assumed MFU (model FLOPs utilisation). Memory: weights,
gradients and AdamW states for the recipe's precision; activations measured, not assumed: what autograd saves for
the backward pass of a model of the recipe's width (one and two blocks, on this CPU, at the recipe's precision),
scaled to its blocks and micro-batch tokens (the rule of thumb of 34 bytes per token per layer per hidden unit,
Korthikanti et al. 2022, misses LitGPT's fp32 RMSNorm upcasts, RoPE temporaries, the SwiGLU MLP's three wide
tensors and the fp32 log-softmax of the full logits); the fp32 and bf16 gradient of the logits; and 1.5 GB for the
CUDA context and workspaces. Disk: a step checkpoint holds the weights and both AdamW moments, final/ the weights;
a run keeps `keep_checkpoints` step checkpoints (one more while the next is written). Each recipe's header repeats the
`expected:` line this script prints for it; `--check` verifies that they agree.

    .venv/bin/python scripts/recipe_budget.py [--check]
"""

import argparse
import re
from dataclasses import replace
import sys
from pathlib import Path
from typing import Optional

import torch
import yaml
from litgpt.config import Config
from litgpt.model import GPT
from litgpt.utils import chunked_cross_entropy, flops_per_param

import litgpt_inheritune  # noqa: F401  (registers the derived model names)

RECIPES = Path(__file__).resolve().parent.parent / "config_hub" / "pretrain"
# dense bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets
GPUS = {"A6000": 154.8, "A100": 312.0, "H100": 989.0}
MFU = 0.4
CONTEXT_BYTES = 1.5e9


def saved_bytes(model: GPT, precision: str, tokens: int) -> int:
    """Bytes of the distinct tensors autograd saves for the backward pass of one sequence of ``tokens`` (weights and
    their casts under autocast count; the parameters themselves do not), on this CPU, as the training step runs it."""
    model.max_seq_length = tokens
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    x = torch.randint(0, model.config.vocab_size, (1, tokens))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            chunked_cross_entropy(model(x), x)
    return sum(storages.values())


def activation_bytes(config: Config, precision: str, micro_batch_size: int, seq: int, probe: int = 64) -> int:
    """Activation memory of one micro-batch, measured rather than taken from a rule of thumb: what autograd saves for
    a model of this width with one and with two blocks (the difference is one block; the rest is the embedding, final
    norm, head and loss) at ``probe`` and ``2 * probe`` tokens (the difference is the part that grows with tokens;
    what does not, such as bf16 casts of fp32 weights under autocast, is counted once), scaled to the model's blocks
    and the micro-batch's tokens. Linear in tokens because scaled-dot-product attention keeps no T x T matrix."""
    probe = max(1, min(probe, config.block_size // 2))  # both probes within the model's context
    key = (repr(config), precision, micro_batch_size, seq)
    if key not in MEASURED:  # recipes share shapes: measure each once
        with torch.device("meta"):
            model = GPT(replace(config, n_layer=2))
        model = model.to_empty(device="cpu").to(torch.bfloat16 if precision == "bf16-true" else torch.float32)
        for tensor in model.parameters():
            tensor.data.fill_(0.02)  # the values do not matter here, only what is kept
        blocks = model.transformer.h
        sizes = {}
        for n in (1, 2):
            model.transformer.h = blocks[:n]
            for t in (probe, 2 * probe):
                sizes[n, t] = saved_bytes(model, precision, t)
        block = {t: sizes[2, t] - sizes[1, t] for t in (probe, 2 * probe)}
        rest = {t: sizes[1, t] - block[t] for t in (probe, 2 * probe)}

        def scaled(part: dict) -> float:
            per_token = (part[2 * probe] - part[probe]) / probe
            return part[probe] - per_token * probe + per_token * micro_batch_size * seq

        MEASURED[key] = round(scaled(block) * config.n_layer + scaled(rest))
    return MEASURED[key]


MEASURED: dict = {}


def budget(recipe: dict, gpu: str, config: Optional[Config] = None) -> dict:
    """The recipe's parameters, tokens, steps, FLOPs, hours, GPU memory and disk; ``config``: the model's, for a model
    that is not a registered name (default: the registered config the recipe's checkpoint_dir names)."""
    if config is None:
        config = Config.from_name(Path(recipe["checkpoint_dir"]).name)
    with torch.device("meta"):
        model = GPT(config)
    params = sum(p.numel() for p in model.parameters())

    train, data = recipe["train"], recipe["data"]["init_args"]
    seq = train.get("max_seq_length") or config.block_size
    tokens_per_step = train["global_batch_size"] * seq
    if train.get("max_tokens"):
        tokens = train["max_tokens"]
    else:
        tokens = train["epochs"] * data["token_budget"]
    steps = tokens // tokens_per_step
    # litgpt's per-sequence count, x3 for forward and backward; not estimate_flops itself, which adds the attention
    # term a second time (twice) for "frozen" parameters even when there are none
    flops = 3 * flops_per_param(seq, config.n_layer, config.n_embd, params) * tokens // seq
    hours = flops / (GPUS[gpu] * 1e12 * MFU) / 3600

    devices = recipe.get("devices", 1)
    state_bytes = {"bf16-true": 2 + 2 + 4, "bf16-mixed": 4 + 4 + 8, "32-true": 4 + 4 + 8}[recipe["precision"]] * params
    if recipe.get("strategy") == "fsdp":
        state_bytes /= devices
    micro_tokens = train["micro_batch_size"] * seq
    activations = activation_bytes(config, recipe["precision"], train["micro_batch_size"], seq)
    logits_grad = micro_tokens * config.padded_vocab_size * (4 + 2)  # fp32 and bf16 gradient of the logits, transient
    memory = state_bytes + activations + logits_grad + CONTEXT_BYTES

    # a step checkpoint holds the weights and both AdamW moments (in the weights' dtype); final/ the weights alone
    weight_bytes = 2 if recipe["precision"] == "bf16-true" else 4
    step_bytes = params * 3 * weight_bytes
    saves = steps // train["save_interval"] if train.get("save_interval") else 0
    kept = min(saves, recipe["keep_checkpoints"]) if recipe.get("keep_checkpoints") else saves
    disk = max(
        min(saves, kept + 1) * step_bytes, kept * step_bytes + params * weight_bytes
    )  # +1 while the next is written
    return {
        "params": params,
        "tokens": tokens,
        "steps": steps,
        "flops": flops,
        "hours": hours,
        "memory_gb": memory / 1e9,
        "gpu": gpu,
        "devices": devices,
        "step_gb": step_bytes / 1e9,
        "disk_gb": disk / 1e9,
    }


def expected_line(b: dict) -> str:
    gpus = f"{b['devices']} x {b['gpu']}" if b["devices"] > 1 else f"one {b['gpu']}"
    hours = b["hours"] / b["devices"]
    return (
        f"expected: {b['params'] / 1e9:.2f}B params, {b['tokens'] / 1e9:g}B tokens, {b['steps']:,} steps,"
        f" {b['flops']:.1e} FLOPs; {hours:,.0f} h on {gpus} at {MFU:.0%} MFU; ~{b['memory_gb']:.0f} GB per GPU;"
        f" disk {b['step_gb']:.1f} GB per step checkpoint, at most {b['disk_gb']:.0f} GB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a recipe's header disagrees with the arithmetic")
    args = parser.parse_args()
    mismatches = []
    print("| recipe | params | tokens | steps | FLOPs | time | GPU memory | disk |")
    print("|---|---|---|---|---|---|---|---|")
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
            f" {b['step_gb']:.1f} GB per step checkpoint, at most {b['disk_gb']:.0f} GB |"
        )
    if args.check and mismatches:
        sys.exit("\n".join(mismatches))


if __name__ == "__main__":
    main()
