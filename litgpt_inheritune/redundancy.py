"""Layer-redundancy measures from hidden states: block influence, angular distance, skip-one-block loss increase.

x_l is the input of block l (0-based) and x_L, after the last of L blocks, the final norm's input.
- Block influence (ShortGPT, Men et al. 2024): BI_l = 1 - cos(x_l, x_{l+1}), averaged over tokens and windows.
- Angular distance (Gromov et al. 2024, PruneMe's layer_distances.csv): d(l, n) = arccos(cos(x_l, x_{l+n})) / pi on
  each window's last token, averaged over windows; small d means blocks l..l+n-1 change little.
- Skip loss: the increase of the next-token loss (nats per token) when block l alone is replaced by the identity.
  The inputs of every block are kept from the full pass, so skipping block l runs only blocks l+1..L-1 and the head.
"""

import math
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F


@contextmanager
def capture_block_inputs(model, sink: Callable[[int, torch.Tensor], None]):
    """While active, every forward pass calls ``sink(l, x_l)`` for l = 0..L, x_L being the final norm's input."""
    blocks = model.transformer.h
    hooks = [
        block.register_forward_pre_hook(lambda module, args, layer=layer: sink(layer, args[0]))
        for layer, block in enumerate(blocks)
    ]
    hooks.append(model.transformer.ln_f.register_forward_pre_hook(lambda module, args: sink(len(blocks), args[0])))
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def block_influence(inputs: list[torch.Tensor]) -> torch.Tensor:
    """[L] sums over windows of 1 - cos(x_l, x_{l+1}) averaged over a window's tokens, for inputs x_0..x_L of (B, T, C)."""
    return torch.stack(
        [(1 - F.cosine_similarity(a.float(), b.float(), dim=-1)).mean(dim=-1).sum() for a, b in zip(inputs, inputs[1:])]
    )


def angular_distance(inputs: list[torch.Tensor], n: int) -> torch.Tensor:
    """[L - n + 1] sums over windows of arccos(cos(x_l, x_{l+n})) / pi on the last token, for inputs x_0..x_L."""
    last = [x[:, -1].float() for x in inputs]
    return torch.stack(
        [torch.arccos(F.cosine_similarity(a, b, dim=-1).clamp(-1, 1)).sum() / math.pi for a, b in zip(last, last[n:])]
    )


class _Resume(torch.nn.Module):
    """Stands in for a block: the first returns the kept hidden state, the others pass theirs through."""

    def __init__(self, hidden: torch.Tensor | None) -> None:
        super().__init__()
        self.hidden = hidden

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x if self.hidden is None else self.hidden


@contextmanager
def resumed_at(model, start: int, hidden: torch.Tensor):
    """While active, the model's forward pass starts at block ``start`` from ``hidden`` (blocks before it do nothing)."""
    blocks = model.transformer.h
    kept = [blocks[i] for i in range(start)]
    for i in range(start):
        blocks[i] = _Resume(hidden if i == 0 else None)
    try:
        yield
    finally:
        for i, block in enumerate(kept):
            blocks[i] = block


def next_token_loss_sum(model, idx: torch.Tensor) -> torch.Tensor:
    logits = model(idx)[:, :-1].float()
    return F.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten(), reduction="sum")


@torch.no_grad()
def skip_loss_sums(model, idx: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token losses of the full model (from x_L) and [L] with block l skipped (blocks l+1.. on x_l)."""
    n_layer = len(inputs) - 1
    with resumed_at(model, n_layer, inputs[n_layer]):
        full = next_token_loss_sum(model, idx)
    skipped = []
    for layer in range(n_layer):
        with resumed_at(model, layer + 1, inputs[layer]):
            skipped.append(next_token_loss_sum(model, idx))
    return full, torch.stack(skipped)


@contextmanager
def skipping(model, blocks: list[int]):
    """While active, the given blocks pass their input through: the model runs without them."""
    layers = model.transformer.h
    saved = {i: layers[i] for i in blocks}
    for i in saved:
        layers[i] = _Resume(None)
    try:
        yield
    finally:
        for i, block in saved.items():
            layers[i] = block


@torch.no_grad()
def iterative_removal(model, windows: torch.Tensor, n_keep: int, batch_size: int = 8) -> dict:
    """SLEB (Song et al. 2024, "SLEB: Streamlining LLMs through Redundancy Verification and Elimination of Transformer
    Blocks"): remove one block at a time, the one whose removal raises the next-token loss on the calibration windows
    least (lowest perplexity), and measure again on the model without it, until ``n_keep`` blocks remain.

    Each candidate's loss re-runs only the blocks after it: its input is the same as in the current model's pass.
    Returns the kept blocks, the removal order and, per removal, every candidate's loss (nats per token).
    """
    n_layer = model.config.n_layer
    if not 1 <= n_keep <= n_layer:
        raise ValueError(f"--n_layers {n_keep} is out of range; valid: 1..{n_layer}")
    device = next(model.parameters()).device
    tokens = windows.size(0) * (windows.size(1) - 1)
    removed, steps = [], []
    while n_layer - len(removed) > n_keep:
        remaining = [i for i in range(n_layer) if i not in removed]
        sums = dict.fromkeys(remaining, 0.0)
        for first in range(0, len(windows), batch_size):
            batch, inputs = windows[first : first + batch_size].to(device), {}
            with skipping(model, removed), capture_block_inputs(model, inputs.__setitem__):
                model(batch)
            for j in remaining:
                with skipping(model, removed + [j]), resumed_at(model, j + 1, inputs[j]):
                    sums[j] += next_token_loss_sum(model, batch).item()
        losses = {j: total / tokens for j, total in sums.items()}
        choice = min(remaining, key=lambda j: (losses[j], j))
        removed.append(choice)
        steps.append(
            {"removed": choice, "loss": losses[choice], "candidate_losses": {str(j): losses[j] for j in remaining}}
        )
    kept = [i for i in range(n_layer) if i not in removed]
    return {"measure": "iterative", "layers": kept, "removal_order": removed, "steps": steps}
