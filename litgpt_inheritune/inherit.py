"""Layer surgery on LitGPT checkpoints: which blocks to keep, and the state dict and config that keep them.

A LitGPT state dict names block ``i`` ``transformer.h.{i}.*``; everything else (token embedding ``transformer.wte``,
final norm ``transformer.ln_f``, LM head ``lm_head``) lives outside the blocks and is always inherited.
"""

import json
import re
from dataclasses import asdict
from pathlib import Path

import torch
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
            raise ValueError(
                f"layer {index} is out of range; the reference has {n_reference} blocks: 0..{n_reference - 1}"
            )
        if index in seen and not allow_repeats:
            raise ValueError(
                f"layer {index} is repeated; each block can be inherited once (--allow_repeats true stacks copies)"
            )
        seen.add(index)


def first_layers(n_layers: int, n_reference: int) -> list[int]:
    if not 1 <= n_layers <= n_reference:
        raise ValueError(
            f"--n_layers {n_layers} is out of range; valid: 1..{n_reference} (the reference has {n_reference} blocks)"
        )
    return list(range(n_layers))


def cut_after(kept: list[int], n_reference: int, flag: str) -> dict[int, list[int]]:
    """Each kept block with the cut blocks that follow it, up to the next kept block (or the last block), for the
    surgery ``flag`` that puts every cut block's work into the kept block before it: so ``kept`` must be increasing
    and start at block 0."""
    if kept != sorted(set(kept)):
        raise ValueError(f"{flag} needs the kept blocks in model order without repeats; got {kept}")
    if kept[0] != 0:
        raise ValueError(
            f"{flag} puts each cut block into the kept block before it; blocks 0..{kept[0] - 1} have none (keep block 0)"
        )
    bounds = kept[1:] + [n_reference]
    return {block: list(range(block + 1, stop)) for block, stop in zip(kept, bounds)}


def count_blocks(state_dict: dict) -> int:
    indices = {int(m[1]) for key in state_dict if (m := BLOCK_KEY.match(key))}
    return max(indices) + 1 if indices else 0


def grown_state_dict(inherited: dict, trained: dict) -> dict:
    """Growing a trained model (grow --grow_from trained): ``inherited`` (the reference's first n + k blocks) with the
    trained n-block model's embedding, blocks, final norm and head in place of its own; only the k new blocks stay the
    reference's. The inherited tensors are copied, so the file they may be mapped from can be overwritten with the
    result. Raises ValueError naming a trained tensor that ``inherited`` has not, or has in another shape."""
    grown = {key: tensor.clone() for key, tensor in inherited.items()}
    for key, tensor in trained.items():
        if key not in grown or grown[key].shape != tensor.shape:
            raise ValueError(f"holds {key} {tuple(tensor.shape)}, which the next round's model has not")
        grown[key] = tensor
    return grown


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


# Sub-modules of a block, as `init --parts` names them (the paper's Table 2), by the key that follows `transformer.h.{i}.`
BLOCK_PARTS = {
    "attn": ("attn.",),
    "attn_norm": ("norm_1.", "post_attention_norm."),
    "mlp": ("mlp.",),
    "mlp_norm": ("norm_2.", "post_mlp_norm."),
}


def parse_parts(spec: str) -> list[str]:
    parts = [part.strip() for part in str(spec).split(",") if part.strip()]
    unknown = [part for part in parts if part not in BLOCK_PARTS]
    if unknown or not parts:
        problem = f"unknown part {unknown[0]!r}" if unknown else "names no part"
        raise ValueError(f"--parts {spec!r}: {problem}; valid: a comma list of {', '.join(BLOCK_PARTS)}")
    return parts


def block_part(key: str) -> str:
    """Which of BLOCK_PARTS a block tensor belongs to (``transformer.h.3.norm_1.weight`` -> ``attn_norm``)."""
    rest = BLOCK_KEY.match(key)[2]
    for part, prefixes in BLOCK_PARTS.items():
        if rest.startswith(prefixes):
            return part
    raise ValueError(f"block tensor {key} belongs to none of {', '.join(BLOCK_PARTS)}")


def replace_parts(state_dict: dict, fresh: dict, parts: list[str]) -> dict:
    """The block tensors of the parts not in ``parts`` taken from ``fresh`` (a newly initialised model's state dict);
    the embedding, final norm and head stay inherited."""
    return {
        key: tensor if BLOCK_KEY.match(key) is None or block_part(key) in parts else fresh[key].to(tensor.dtype)
        for key, tensor in state_dict.items()
    }


def half_width_config(config: Config) -> Config:
    """The reference's config at half width: half the embedding width and MLP channels, half the attention heads
    (for grouped-query attention, half the query groups with all of their query heads), the head size kept."""
    if config.n_expert or config.latent_attention is not None:
        raise ValueError(
            f"--half_width supports dense models with standard attention; {config.name} has"
            f" {'experts' if config.n_expert else 'latent attention'}"
        )
    if config.n_query_groups == 1:  # one shared key/value head: keep it, halve the query heads
        groups, heads = 1, config.n_head // 2
    else:
        groups = config.n_query_groups // 2
        heads = groups * (config.n_head // config.n_query_groups)
    if heads < 1 or config.n_embd < 2 or config.intermediate_size < 2:
        raise ValueError(
            f"--half_width: {config.name} ({config.n_head} heads, n_embd {config.n_embd}) is too narrow to halve"
        )
    values = asdict(config)
    values.update(
        name=f"{config.name}-half-width",
        n_embd=config.n_embd // 2,
        n_head=heads,
        n_query_groups=groups,
        head_size=config.head_size,
        intermediate_size=config.intermediate_size // 2,
    )
    return Config(**values)


def half_width_state_dict(state_dict: dict, reference: Config, target: Config) -> dict:
    """Each tensor cut to ``target``'s width (from half_width_config): the first embedding channels, the first query
    heads and key/value groups, the first MLP channels. Slices of the reference's tensors, cloned."""
    width, channels, size = target.n_embd, target.intermediate_size, reference.head_size
    q_rows = torch.arange(target.n_head * size)
    k_rows = reference.n_head * size + torch.arange(target.n_query_groups * size)
    v_rows = k_rows + reference.n_query_groups * size
    qkv_rows = torch.cat((q_rows, k_rows, v_rows))
    target_sd = {}
    for key, tensor in state_dict.items():
        match = BLOCK_KEY.match(key)
        name = key if match is None else match[2]
        if name in ("transformer.wte.weight", "lm_head.weight"):
            cut = tensor[:, :width]
        elif name == "lm_head.bias":
            cut = tensor
        elif name.startswith(("transformer.ln_f.", "norm_1.", "norm_2.", "post_attention_norm.", "post_mlp_norm.")):
            cut = tensor[:width]
        elif name.startswith("attn.qkv."):
            cut = tensor[qkv_rows, :width] if tensor.dim() == 2 else tensor[qkv_rows]
        elif name.startswith("attn.proj."):
            cut = tensor[:width, : target.n_head * size] if tensor.dim() == 2 else tensor[:width]
        elif name.startswith("attn.norm_q."):  # per head (default) or over all query heads (OLMo-2)
            cut = tensor[: target.n_head * size]
        elif name.startswith("attn.norm_k."):
            cut = tensor[: target.n_query_groups * size]
        elif name.startswith(("mlp.fc.", "mlp.fc_1.", "mlp.fc_2.")):
            cut = tensor[:channels, :width] if tensor.dim() == 2 else tensor[:channels]
        elif name.startswith("mlp.proj."):
            cut = tensor[:width, :channels] if tensor.dim() == 2 else tensor[:width]
        else:
            raise ValueError(f"--half_width does not know how to halve {key} (shape {tuple(tensor.shape)})")
        target_sd[key] = cut.clone()
    return target_sd


# Keys of a Hugging Face config.json that hold the number of blocks.
HF_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def write_hf_config(source_dir: Path, out_dir: Path, layers: list[int]) -> bool:
    """Copies the reference's Hugging Face config.json with the block count (and per-layer lists) cut to ``layers``.

    ``litgpt evaluate`` and ``convert_from_litgpt`` users load the converted weights with this file, so it must
    describe the derived model, not the reference.
    """
    if not (source_dir / "config.json").is_file():
        return False
    hf_config = json.loads((source_dir / "config.json").read_text())
    n_reference = next((hf_config[k] for k in HF_LAYER_COUNT_KEYS if isinstance(hf_config.get(k), int)), None)
    for key in HF_LAYER_COUNT_KEYS:
        if key in hf_config:
            hf_config[key] = len(layers)
    for key, value in hf_config.items():
        if "layer" in key and isinstance(value, list) and len(value) == n_reference:
            hf_config[key] = [value[i] for i in layers]
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return True
