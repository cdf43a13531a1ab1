"""ReplaceMe's linear bridge (Shopkhoev et al. 2025, "ReplaceMe: Network Simplification via Depth Pruning and
Transformer Block Linearization"), least-squares variant, on a LitGPT model: the cut blocks are replaced by one linear
map folded into the MLP output projection of the kept block before them. Nothing is added to the architecture.

A block computes y = x + attn(...) (its residual stream after attention) and returns y + m, m = mlp(...) the MLP's
output. For a cut of blocks start..stop-1 after kept block b = start - 1, ReplaceMe fits T by least squares on
calibration tokens so that y + m T is as close as possible to x_stop, the hidden state the first block after the cut
(or, when the cut runs to the end, the final norm and head) reads: T = argmin ||m T - (x_stop - y)||. Since m is
linear in the MLP's output projection (m = h W^T + c), m T = h (T^T W)^T + T^T c: the block with W' = T^T W and
c' = T^T c computes y + m T exactly. What is approximated is the cut blocks' whole contribution x_stop - x_start by a
linear function of block b's MLP output alone; the residual y passes unchanged. Each cut's map is fitted on the
reference's own hidden states, as ReplaceMe fits all of its maps from one pass of the unpruned model.
"""

import torch

from litgpt_inheritune.inherit import cut_after
from litgpt_inheritune.redundancy import capture_block_inputs


def cut_ranges(kept: list[int], n_reference: int) -> list[tuple[int, int, int]]:
    """(b, start, stop) for every run of cut blocks start..stop-1 with kept block b = start - 1 before it."""
    cuts = cut_after(kept, n_reference, "--bridge linear")
    return [(block, block + 1, block + 1 + len(cut)) for block, cut in cuts.items() if cut]


def check_foldable(config) -> None:
    """The map folds into the MLP's output projection only when the MLP's output enters the residual stream as is."""
    if config.post_mlp_norm:
        raise ValueError(
            f"--bridge linear: {config.name} normalises the MLP's output before the residual (post_mlp_norm), so a"
            " map cannot be folded into the MLP's output projection"
        )
    if config.n_expert or config.mlp_class_name == "LLaMAMoE":
        raise ValueError(f"--bridge linear supports dense MLPs; {config.name} has experts")


@torch.no_grad()
def fit_bridges(model, windows: torch.Tensor, kept: list[int], batch_size: int = 8) -> list[dict]:
    """One least-squares map per cut, from the normal equations accumulated in float64 over every calibration token.

    Returns for each cut: the kept block b, the cut [start, stop), T (n_embd x n_embd, float64), the fit's relative
    residual ||m T - (x_stop - y)|| / ||x_stop - y||, and the relative error of the hidden state handed on with the
    map, ||y + m T - x_stop|| / ||x_stop||, and without it (plain cutting), ||x_start - x_stop|| / ||x_stop||.
    """
    n_layer, width = model.config.n_layer, model.config.n_embd
    check_foldable(model.config)
    cuts = cut_ranges(kept, n_layer)
    sums = [
        {
            "mtm": torch.zeros(width, width, dtype=torch.float64),
            "mtr": torch.zeros(width, width, dtype=torch.float64),
            **{name: torch.zeros((), dtype=torch.float64) for name in ("rr", "target", "plain")},
        }
        for _ in cuts
    ]
    inputs, mlp_outputs = {}, {}
    blocks = model.transformer.h
    hooks = [
        blocks[b].mlp.register_forward_hook(lambda module, args, output, b=b: mlp_outputs.__setitem__(b, output))
        for b, _, _ in cuts
    ]
    head, model.lm_head = model.lm_head, torch.nn.Identity()  # hidden states are needed, not logits
    device = next(model.parameters()).device
    try:
        with capture_block_inputs(model, inputs.__setitem__):
            for first in range(0, len(windows), batch_size):
                model(windows[first : first + batch_size].to(device))
                for (b, start, stop), total in zip(cuts, sums):
                    m = mlp_outputs[b].flatten(0, 1).double().cpu()
                    x_start, x_stop = (inputs[i].flatten(0, 1).double().cpu() for i in (start, stop))
                    r = x_stop - (x_start - m)  # what the map has to produce: x_stop - y
                    total["mtm"] += m.T @ m
                    total["mtr"] += m.T @ r
                    total["rr"] += (r * r).sum()
                    total["target"] += (x_stop * x_stop).sum()
                    total["plain"] += ((x_start - x_stop) ** 2).sum()
    finally:
        model.lm_head = head
        for hook in hooks:
            hook.remove()
    fits = []
    for (b, start, stop), total in zip(cuts, sums):
        # min-norm least squares through the normal equations: pinv(M^T M) M^T R = pinv(M) R, also when rank-deficient
        transform = torch.linalg.lstsq(total["mtm"], total["mtr"], driver="gelsd").solution
        error = total["rr"] - 2 * (transform * total["mtr"]).sum() + (transform * (total["mtm"] @ transform)).sum()
        error = error.clamp(min=0)
        fits.append(
            {
                "block": b,
                "cut": [start, stop],
                "transform": transform,
                "relative_residual": (error / total["rr"]).sqrt().item(),
                "hidden_state_error": (error / total["target"]).sqrt().item(),
                "hidden_state_error_without_bridge": (total["plain"] / total["target"]).sqrt().item(),
            }
        )
    return fits


def fold_bridges(target_sd: dict, fits: list[dict], kept: list[int]) -> dict:
    """The target's state dict with each map folded into its block's MLP output projection: W' = T^T W, c' = T^T c
    (computed in float64, stored in the weights' dtype)."""
    folded = dict(target_sd)
    for fit in fits:
        prefix = f"transformer.h.{kept.index(fit['block'])}.mlp.proj."
        t = fit["transform"].T
        for name in ("weight", "bias"):
            if (key := prefix + name) in folded:
                tensor = folded[key]
                folded[key] = (t @ tensor.double()).to(tensor.dtype)
    return folded


def bridge_record(fits: list[dict]) -> list[dict]:
    """The fits without their matrices, for provenance.json."""
    return [{key: value for key, value in fit.items() if key != "transform"} for fit in fits]
