"""Layer surgery on LitGPT checkpoints: which blocks to keep, and the state dict and config that keep them.

A LitGPT state dict names block ``i`` ``transformer.h.{i}.*``; everything else (token embedding ``transformer.wte``,
final norm ``transformer.ln_f``, LM head ``lm_head``) lives outside the blocks and is always inherited.
"""

import re
from dataclasses import asdict

from litgpt.config import Config

from litgpt_inheritune.configs import derived_name

BLOCK_KEY = re.compile(r"^transformer\.h\.(\d+)\.(.+)$")


def parse_layers(spec: str, n_reference: int, allow_repeats: bool = False) -> list[int]:
    """Parses ``"0,1,2"`` or ``"4-7"`` or ``"0-3,6"`` (0-based, ranges inclusive) into a list of block indices."""
    layers = []
    for item in str(spec).replace(" ", "").split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if match is None:
            raise ValueError(
                f"--layers {spec!r} is not a list of block indices; valid: comma-separated 0-based indices or"
                f" inclusive ranges in 0..{n_reference - 1}, e.g. '0,1,2' or '4-7'"
            )
        start, stop = int(match[1]), int(match[2] or match[1])
        if stop < start:
            raise ValueError(f"--layers range {item!r} runs backwards; write it as '{stop}-{start}'")
        layers.extend(range(start, stop + 1))
    check_layers(layers, n_reference, allow_repeats)
    return layers


def check_layers(layers: list[int], n_reference: int, allow_repeats: bool = False) -> None:
    """Raises ValueError naming the first bad index: out of range, or repeated unless ``allow_repeats``."""
    if not layers:
        raise ValueError(f"no layers selected; valid: indices in 0..{n_reference - 1}")
    seen = set()
    for index in layers:
        if not 0 <= index < n_reference:
            raise ValueError(f"layer {index} is out of range; the reference has {n_reference} blocks: 0..{n_reference - 1}")
        if index in seen and not allow_repeats:
            raise ValueError(f"layer {index} is repeated; each block can be inherited once (--allow_repeats true stacks copies)")
        seen.add(index)


def first_layers(n_layers: int, n_reference: int) -> list[int]:
    if not 1 <= n_layers <= n_reference:
        raise ValueError(f"--n_layers {n_layers} is out of range; valid: 1..{n_reference} (the reference has {n_reference} blocks)")
    return list(range(n_layers))


def count_blocks(state_dict: dict) -> int:
    indices = {int(m[1]) for key in state_dict if (m := BLOCK_KEY.match(key))}
    return max(indices) + 1 if indices else 0


def inherit_state_dict(state_dict: dict, layers: list[int]) -> dict:
    """The target's state dict: all non-block tensors, then the blocks in ``layers`` renumbered 0..n-1.

    Tensors are not copied, so a lazily loaded (mmap) reference is read only where a kept tensor is used; a block
    that appears more than once (stacking) is cloned for its later places, so no two blocks share storage.
    """
    new_indices: dict[int, list[int]] = {}
    for new, old in enumerate(layers):
        new_indices.setdefault(old, []).append(new)
    target = {}
    for key, tensor in state_dict.items():
        match = BLOCK_KEY.match(key)
        if match is None:
            target[key] = tensor
            continue
        for copy, new in enumerate(new_indices.get(int(match[1]), [])):
            target[f"transformer.h.{new}.{match[2]}"] = tensor if copy == 0 else tensor.clone()
    # order the blocks as selected, so the file reads like a model built from scratch
    return dict(sorted(target.items(), key=lambda item: _block_order(item[0])))


def _block_order(key: str) -> tuple:
    match = BLOCK_KEY.match(key)
    return (1, int(match[1])) if match else (0 if key.startswith("transformer.wte") else 2, 0)


def inherit_config(reference: Config, layers: list[int]) -> Config:
    """The target's config: the reference's with ``n_layer`` and the per-layer settings cut to ``layers``."""
    values = asdict(reference)
    values["n_layer"] = len(layers)
    values["name"] = derived_name(reference.name, len(layers))
    if layers != list(range(len(layers))):
        values["name"] += "-layers-" + compact_layers(layers)
    for per_layer in ("sliding_window_indices", "rope_indices"):
        if values.get(per_layer) is not None:
            values[per_layer] = [values[per_layer][i] for i in layers]
    if reference.first_k_dense_replace is not None:
        dense = [i < reference.first_k_dense_replace for i in layers]
        if dense != sorted(dense, reverse=True):
            raise ValueError(
                f"layers {layers} put a MoE block before a dense one; the reference's first"
                f" {reference.first_k_dense_replace} blocks are dense, so keep those first"
            )
        values["first_k_dense_replace"] = sum(dense)
    return Config(**values)


def compact_layers(layers: list[int]) -> str:
    """``[4, 5, 6, 7, 10]`` -> ``"4-7_10"`` (for names and file names)."""
    runs = []
    for index in layers:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return "_".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)
