"""LaCo's layer collapse (Yang et al. 2024, "LaCo: Large Language Model Pruning via Layer Collapse") on a LitGPT
state dict: a kept block absorbs the parameter differences of the cut blocks that follow it.

Reserving-Differences-while-Seeking-Common (RDSC): for a kept block l and the blocks K merged into it, every tensor of
the block becomes theta_l + sum over k in K of (theta_k - theta_l). LaCo merges C consecutive blocks at a time (C = 4
in its experiments), from the top of the model down, and stops when the merged model's representations drift too far
from the original's; here the target depth is given, so the schedule runs until that many blocks remain.
"""

from litgpt_inheritune.inherit import BLOCK_KEY, cut_after


def absorbed_blocks(kept: list[int], n_reference: int) -> dict[int, list[int]]:
    """Each kept block with the cut blocks it absorbs: those after it up to the next kept block (or the last block).

    ``kept`` must be increasing and start at block 0, so that every cut block has a kept block before it.
    """
    return cut_after(kept, n_reference, "--merge laco")


def laco_layers(n_layers: int, n_reference: int, group_size: int = 4) -> list[int]:
    """The blocks that stay when groups of ``group_size`` consecutive blocks are collapsed from the top down until
    ``n_layers`` remain: the first block of each group absorbs the others; the last group collapsed (the lowest) holds
    only as many blocks as are still to be removed plus one; the blocks below it stay as they are.

    30 blocks to 10 with groups of 4: blocks 26-29, 22-25, ..., 6-9 collapse into 26, 22, ..., 6; blocks 3-5 into 3;
    blocks 0, 1, 2 stay: [0, 1, 2, 3, 6, 10, 14, 18, 22, 26].
    """
    if group_size < 2:
        raise ValueError(f"--merge_group {group_size} must be at least 2 (a group collapses into one block)")
    if not 1 <= n_layers <= n_reference:
        raise ValueError(f"--n_layers {n_layers} is out of range; valid: 1..{n_reference}")
    to_remove, top, kept = n_reference - n_layers, n_reference, []
    while to_remove > 0:
        size = min(group_size, to_remove + 1)
        start = top - size
        if start < 0:
            raise ValueError(
                f"--n_layers {n_layers} is too few for --merge_group {group_size}: groups of {group_size} collapse"
                f" {n_reference} blocks to at least {-(-n_reference // group_size)}; give more layers or a larger group"
            )
        kept.insert(0, start)
        to_remove -= size - 1
        top = start
    return list(range(top)) + kept


def merge_state_dict(state_dict: dict, absorbed: dict[int, list[int]]) -> dict:
    """``state_dict`` with each kept block's tensors replaced by RDSC's theta_l + sum_k (theta_k - theta_l) over the
    blocks it absorbs (summed in float32, stored in the tensor's dtype); other tensors are left as they are."""
    blocks: dict[int, dict[str, object]] = {}
    for key, tensor in state_dict.items():
        if (match := BLOCK_KEY.match(key)) is not None:
            blocks.setdefault(int(match[1]), {})[match[2]] = tensor
    merged = dict(state_dict)
    for block, others in absorbed.items():
        for name, tensor in blocks[block].items():
            if not others:
                continue
            total = tensor.float().clone()
            for other in others:
                theta = blocks[other].get(name)
                if theta is None or theta.shape != tensor.shape:
                    raise ValueError(
                        f"--merge laco: block {other} has no {name} of shape {tuple(tensor.shape)} like block {block}"
                    )
                total += theta.float() - tensor.float()
            merged[f"transformer.h.{block}.{name}"] = total.to(tensor.dtype)
    return merged
