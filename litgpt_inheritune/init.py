"""`litgpt inheritune init`: build a target checkpoint from the early blocks of a reference checkpoint."""

import json
import sys
from pathlib import Path
from typing import Literal, Optional

import torch
from litgpt.config import Config
from litgpt.utils import save_config

from litgpt_inheritune.checkpoint import (
    copy_tokenizer_files,
    fingerprint,
    load_lazy_state_dict,
    resolve_checkpoint_dir,
    save_state_dict,
    write_provenance,
)
from litgpt_inheritune.errors import fail
from litgpt_inheritune.files import check_out_dir, staged_dir
from litgpt_inheritune.bridge import bridge_record, check_foldable, cut_ranges, fit_bridges, fold_bridges
from litgpt_inheritune.inherit import write_hf_config
from litgpt_inheritune.inherit import (
    BLOCK_PARTS,
    block_part,
    compact_layers,
    count_blocks,
    first_layers,
    half_width_config,
    half_width_state_dict,
    inherit_config,
    inherit_state_dict,
    parse_layers,
    parse_parts,
    replace_parts,
)
from litgpt_inheritune.redundancy import iterative_removal
from litgpt_inheritune.merge import absorbed_blocks, laco_layers, merge_state_dict
from litgpt_inheritune.selection import MEASURES, Rule, select_blocks

SELECT_CHOICES = ("first", *MEASURES, "iterative")


def main(
    reference_dir: Path,
    out_dir: Optional[Path] = None,
    n_layers: Optional[int] = None,
    layers: Optional[str] = None,
    select: str = "first",
    keep: Rule = "window",
    analysis: Optional[Path] = None,
    overwrite: bool = False,
    allow_repeats: bool = False,
    half_width: bool = False,
    parts: str = ",".join(BLOCK_PARTS),
    seed: int = 42,
    merge: Optional[Literal["laco"]] = None,
    merge_group: int = 4,
    bridge: Optional[Literal["linear"]] = None,
    data_path: Optional[Path] = None,
    calibration_sequences: int = 64,
    calibration_seq_len: Optional[int] = None,
) -> Path:
    """Inherit the token embedding, chosen transformer blocks, final norm and LM head of a reference model.

    The result is an ordinary LitGPT checkpoint (lit_model.pth, model_config.yaml, tokenizer files, config.json
    when the reference has one) plus provenance.json. Only the kept tensors are read, so memory and time scale
    with the target, not the reference.

    Arguments:
        reference_dir: A LitGPT checkpoint directory (as written by ``litgpt download`` or ``convert_to_litgpt``).
        out_dir: Where to write the target checkpoint (written to a temporary folder first, then renamed).
            Default: next to the reference, named after the target, e.g. ``open_llama_3b-inheritune-13L``.
        n_layers: Keep the first ``n_layers`` blocks (the paper: half of the reference, e.g. 13 of OpenLLaMA-3B's 26).
        layers: Keep these blocks instead, in this order: 0-based indices or inclusive ranges, e.g. ``0,1,2`` or ``4-7``.
        select: With --n_layers: "first" keeps blocks 0..n-1; a measure of the analysis given by --analysis chooses
            them instead (see --keep): rank (MaxRank), mass (AvgMass), block_influence, angular_distance, skip_loss,
            entropy, sink_mass (lower is better for sink_mass, higher for the others); "iterative" removes one block
            at a time, the one whose removal raises the loss on calibration windows from --data_path least, until n
            remain (SLEB). ``--select block_influence --keep best`` is ShortGPT: it removes the blocks of lowest
            block influence.
        keep: With --select MEASURE: "window" keeps the contiguous n blocks with the best mean score (for
            angular_distance: the largest distance between the window's input and output); "best" keeps the n
            best-scored blocks in model order; "prefix" keeps blocks 0..n-1 and records their scores; "cut" removes
            the contiguous L - n blocks with the worst score (for angular_distance: the smallest distance between
            their input and output, the blocks ReplaceMe and Gromov et al. remove), never block 0.
        analysis: An out_dir of ``litgpt inheritune analyze`` run on this reference (holds attention.json).
        overwrite: Replace ``out_dir`` if it already holds files.
        allow_repeats: Let a block appear more than once in --layers, e.g. ``0-5,0-5`` stacks two copies of the
            first six (the paper's stacking baselines).
        half_width: Keep every block (or the chosen ones) at half the width: the first half of the embedding
            channels, of the attention heads (with grouped-query attention: the first half of the query groups with
            their key/value heads) and of the MLP channels; the config is halved to match (the paper's half-width
            baseline, Table 1). Without --n_layers/--layers all blocks are kept.
        parts: Which sub-modules of each kept block are inherited, a comma list of attn, attn_norm, mlp, mlp_norm
            (the paper's Table 2 ablation); the others are initialised as ``litgpt pretrain`` initialises a model.
            The embedding, final norm and head are always inherited.
        seed: Random seed for the sub-modules that --parts leaves out (and for drawing calibration windows).
        merge: "laco": every cut block is merged into the kept block before it by LaCo's RDSC layer merge (the kept
            block's tensors become theta_l + sum_k (theta_k - theta_l) over the blocks k it absorbs). With
            --n_layers and --select first, the kept blocks follow LaCo's schedule: groups of --merge_group
            consecutive blocks collapse from the top down until n remain. Block 0 must be kept.
        merge_group: Blocks per collapsed group for --merge laco with --n_layers (LaCo's C, 4 in its paper).
        bridge: "linear": each run of cut blocks is replaced by a linear map fitted by least squares on calibration
            windows from --data_path and folded into the MLP output projection of the kept block before it
            (ReplaceMe). Block 0 must be kept.
        data_path: Calibration text for --bridge linear and --select iterative: a text file, a .jsonl file or a folder
            of them, read as ``analyze`` reads it.
        calibration_sequences: Calibration windows (one per document, at a random offset).
        calibration_seq_len: Tokens per calibration window. Default: 128, or the reference's context if shorter.
    """
    reference_dir = resolve_checkpoint_dir(reference_dir, "reference_dir")
    selection = None
    if select not in SELECT_CHOICES:
        fail(f"--select {select} is not a measure; valid: {', '.join(SELECT_CHOICES)}")
    check_derivation(select, merge, bridge, data_path, half_width, parts, calibration_sequences, calibration_seq_len)
    if (n_layers is None) == (layers is None) and not (half_width and n_layers is None):
        fail(
            "give exactly one of --n_layers N or --layers i,j,k"
            + (" (or neither with --half_width true)" if half_width else "")
        )
    if layers is not None and select != "first":
        fail(
            f"--select {select} chooses --n_layers blocks from an analysis; it cannot be combined with --layers {layers}"
        )
    if not reference_dir.is_dir():
        fail(f"reference_dir {reference_dir} is not a directory; expected a LitGPT checkpoint directory")
    try:
        reference_config = Config.from_checkpoint(reference_dir)
    except Exception as error:
        fail(f"reference_dir {reference_dir} has no usable model_config.yaml ({error})")
    try:
        if layers is not None:
            kept = parse_layers(layers, reference_config.n_layer, allow_repeats)
        elif n_layers is None:  # --half_width alone: every block
            kept = list(range(reference_config.n_layer))
        else:
            kept = first_layers(n_layers, reference_config.n_layer)
            if select == "first" and merge == "laco":
                kept = laco_layers(n_layers, reference_config.n_layer, merge_group)
            elif select not in ("first", "iterative"):
                selection = selection_from_analysis(analysis, select, keep, n_layers, reference_config.n_layer)
                kept = selection["layers"]
        if bridge is not None:  # before the calibration passes, which take a while
            check_foldable(reference_config)
            if select != "iterative":
                cut_ranges(kept, reference_config.n_layer)
        if merge is not None and select != "iterative":
            absorbed_blocks(kept, reference_config.n_layer)
        if out_dir is not None:
            check_out_dir(Path(out_dir), overwrite, protected=(reference_dir,))
        calibration = None
        if select == "iterative" or bridge is not None:
            calibration = calibration_model(reference_dir, data_path, calibration_sequences, calibration_seq_len, seed)
        if select == "iterative":
            print(f"Removing blocks one at a time by calibration loss until {n_layers} remain ...", file=sys.stderr)
            selection = iterative_removal(*calibration, n_layers)
            kept = selection["layers"]
        absorbed = absorbed_blocks(kept, reference_config.n_layer) if merge == "laco" else None
        fits = fit_bridges(*calibration, kept) if bridge == "linear" else None
        config = inherit_config(reference_config, kept)
        inherited_parts = parse_parts(parts)
        if half_width:
            depth_config, config = config, half_width_config(config)
    except ValueError as error:
        fail(str(error))
    out_dir = reference_dir.parent / config.name if out_dir is None else Path(out_dir)
    check_out_dir(out_dir, overwrite, protected=(reference_dir,))

    checkpoint_path = reference_dir / "lit_model.pth"
    state_dict = load_lazy_state_dict(checkpoint_path)
    if (found := count_blocks(state_dict)) != reference_config.n_layer:
        fail(f"{checkpoint_path} holds {found} blocks but model_config.yaml says n_layer={reference_config.n_layer}")

    if absorbed is not None:
        state_dict = merge_state_dict(state_dict, absorbed)
    target_sd = inherit_state_dict(state_dict, kept)
    if fits is not None:
        target_sd = fold_bridges(target_sd, fits, kept)
    try:
        if half_width:
            target_sd = half_width_state_dict(target_sd, depth_config, config)
        if inherited_parts != list(BLOCK_PARTS):
            target_sd = replace_parts(target_sd, fresh_state_dict(config, seed, inherited_parts), inherited_parts)
    except ValueError as error:
        fail(str(error))
    with staged_dir(out_dir) as staging:
        save_state_dict(target_sd, staging / "lit_model.pth")
        save_config(config, staging)
        tokenizer_files = copy_tokenizer_files(reference_dir, staging)
        # the reference's config.json describes its width; `export` writes one from model_config.yaml instead
        wrote_hf_config = not half_width and write_hf_config(reference_dir, staging, kept)
        write_provenance(
            staging,
            {
                "command": "litgpt inheritune init",
                "reference": {
                    "path": str(reference_dir.resolve()),
                    "name": reference_config.name,
                    "n_layer": reference_config.n_layer,
                    "file": checkpoint_path.name,
                    **fingerprint(checkpoint_path),
                },
                "layers": kept,
                "n_layer": len(kept),
                "name": config.name,
                "inherited": ["token embedding", f"blocks ({', '.join(inherited_parts)})", "final norm", "LM head"],
                **({"selection": selection} if selection else {}),
                "parts": inherited_parts,
                "half_width": half_width,
                "start": {
                    "select": select,
                    "keep": keep if select in MEASURES else None,
                    "merge": merge,
                    "bridge": bridge,
                },
                **(
                    {"merged": {str(block): others for block, others in absorbed.items() if others}} if absorbed else {}
                ),
                **({"bridges": bridge_record(fits)} if fits is not None else {}),
                **(
                    {
                        "calibration": {
                            "data_path": str(data_path),
                            "sequences": calibration_sequences,
                            "seq_len": calibration[1].size(1),
                            "seed": seed,
                        }
                    }
                    if calibration is not None
                    else {}
                ),
            },
        )
    if not tokenizer_files:
        print(
            f"warning: {reference_dir} has no tokenizer files; add them before generating or training", file=sys.stderr
        )
    extra = " and config.json" if wrote_hf_config else ""
    extra += " at half width" if half_width else ""
    extra += (
        f" (block parts inherited: {', '.join(inherited_parts)}; the rest freshly initialised)"
        if inherited_parts != list(BLOCK_PARTS)
        else ""
    )
    print(
        f"Inherited blocks {kept} of {reference_config.name} ({reference_config.n_layer} blocks) into {out_dir}{extra}"
    )
    for block, others in (absorbed or {}).items():
        if others:
            print(f"LaCo merge: block {block} absorbed blocks {compact_layers(others)}")
    for fit in fits or []:
        print(
            f"Linear bridge for blocks {fit['cut'][0]}-{fit['cut'][1] - 1}, folded into block {fit['block']}: relative"
            f" residual of the fit {fit['relative_residual']:.4f}; error of the hidden state handed on"
            f" {fit['hidden_state_error']:.4f} (without the bridge {fit['hidden_state_error_without_bridge']:.4f})"
        )
    return out_dir


def check_derivation(
    select: str,
    merge: Optional[str],
    bridge: Optional[str],
    data_path: Optional[Path],
    half_width: bool,
    parts: str,
    calibration_sequences: int,
    calibration_seq_len: int,
) -> None:
    """Refuses combinations of --select, --merge and --bridge that have no meaning, naming the flags."""
    if merge not in (None, "laco"):
        fail(f"--merge {merge} is not a merge; valid: laco")
    if bridge not in (None, "linear"):
        fail(f"--bridge {bridge} is not a bridge; valid: linear")
    if merge and bridge:
        fail("--merge laco and --bridge linear cannot be combined: the bridge is fitted on the reference's own blocks")
    if (merge or bridge) and (half_width or parts != ",".join(BLOCK_PARTS)):
        fail(f"--{'merge' if merge else 'bridge'} works on whole blocks at full width; leave --half_width and --parts")
    if (select == "iterative" or bridge) and data_path is None:
        fail(f"--{'bridge linear' if bridge else 'select iterative'} needs --data_path: the calibration text")
    if data_path is not None and not Path(data_path).exists():
        fail(f"--data_path {data_path} does not exist; give a text file, a .jsonl file or a folder of them")
    if calibration_sequences < 1 or (calibration_seq_len is not None and calibration_seq_len < 2):
        fail(
            f"--calibration_sequences {calibration_sequences} must be at least 1 and --calibration_seq_len"
            f" {calibration_seq_len} at least 2"
        )


def calibration_model(reference_dir: Path, data_path: Path, sequences: int, seq_len: Optional[int], seed: int) -> tuple:
    """The reference model (float32, CPU) and its calibration windows, read as ``analyze`` reads its windows."""
    from litgpt.tokenizer import Tokenizer

    from litgpt_inheritune.analyze import load_model, sample_windows

    model = load_model(reference_dir)
    seq_len = min(128, model.config.block_size) if seq_len is None else seq_len
    if seq_len > model.config.block_size:
        fail(f"--calibration_seq_len {seq_len} exceeds the reference's context of {model.config.block_size} tokens")
    model.max_seq_length = seq_len
    return model, sample_windows(Tokenizer(reference_dir), Path(data_path), sequences, seq_len, seed)


def fresh_state_dict(config: Config, seed: int, inherited_parts: list[str]) -> dict:
    """The block tensors outside ``inherited_parts``, initialised as ``litgpt pretrain`` initialises a model from
    scratch (its ``initialize_weights``), built one block at a time so that memory holds one block beyond them."""
    import lightning as L
    from litgpt.model import Block
    from litgpt.pretrain import initialize_weights

    fabric = L.Fabric(accelerator="cpu", devices=1)
    torch.manual_seed(seed)
    fresh = {}
    for index in range(config.n_layer):
        block = Block(config, index)
        initialize_weights(fabric, block, n_layer=config.n_layer, n_embd=config.n_embd)
        for key, tensor in block.state_dict().items():
            if block_part(name := f"transformer.h.{index}.{key}") not in inherited_parts:
                fresh[name] = tensor
    return fresh


def selection_from_analysis(analysis: Optional[Path], measure: str, rule: str, n_layers: int, n_reference: int) -> dict:
    """The blocks that ``measure`` chooses by ``rule`` in analyze's attention.json, with their scores."""
    if measure not in MEASURES:
        raise ValueError(f"--select {measure} is not a measure; valid: first, {', '.join(MEASURES)}")
    path = Path(analysis) / "attention.json" if analysis is not None else None
    if path is None or not path.is_file():
        raise ValueError(
            f"--select {measure} needs --analysis DIR holding attention.json from `litgpt inheritune analyze`; got {analysis}"
        )
    result = json.loads(path.read_text())
    if len(result["max_rank"]) != n_reference:
        raise ValueError(
            f"--analysis {analysis} describes {len(result['max_rank'])} layers but the reference has {n_reference}"
        )
    return dict(select_blocks(result, measure, rule, n_layers), analysis=str(path.resolve()))
