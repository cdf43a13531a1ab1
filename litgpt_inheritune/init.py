"""`litgpt inheritune init`: build a target checkpoint from the early blocks of a reference checkpoint."""

import json
import sys
from pathlib import Path
from typing import Literal, Optional

from litgpt.config import Config
from litgpt.utils import save_config

from litgpt_inheritune.checkpoint import (
    check_out_dir,
    copy_tokenizer_files,
    fail,
    fingerprint,
    load_lazy_state_dict,
    resolve_checkpoint_dir,
    save_state_dict,
    staged_dir,
    write_hf_config,
    write_provenance,
)
from litgpt_inheritune.inherit import count_blocks, first_layers, inherit_config, inherit_state_dict, parse_layers


def main(
    reference_dir: Path,
    out_dir: Optional[Path] = None,
    n_layers: Optional[int] = None,
    layers: Optional[str] = None,
    select: Literal["first", "rank"] = "first",
    analysis: Optional[Path] = None,
    overwrite: bool = False,
    allow_repeats: bool = False,
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
        select: With --n_layers: "first" keeps blocks 0..n-1; "rank" keeps the contiguous n blocks with the highest
            average MaxRank in the attention analysis given by --analysis.
        analysis: An out_dir of ``litgpt inheritune analyze`` run on this reference (holds attention.json).
        overwrite: Replace ``out_dir`` if it already holds files.
        allow_repeats: Let a block appear more than once in --layers, e.g. ``0-5,0-5`` stacks two copies of the
            first six (the paper's stacking baselines).
    """
    reference_dir = resolve_checkpoint_dir(reference_dir, "reference_dir")
    if (n_layers is None) == (layers is None):
        fail("give exactly one of --n_layers N or --layers i,j,k")
    if not reference_dir.is_dir():
        fail(f"reference_dir {reference_dir} is not a directory; expected a LitGPT checkpoint directory")
    try:
        reference_config = Config.from_checkpoint(reference_dir)
    except Exception as error:
        fail(f"reference_dir {reference_dir} has no usable model_config.yaml ({error})")
    try:
        if layers is not None:
            kept = parse_layers(layers, reference_config.n_layer, allow_repeats)
        else:
            kept = first_layers(n_layers, reference_config.n_layer)
            if select == "rank":
                kept = best_window_from_analysis(analysis, n_layers, reference_config.n_layer)
        config = inherit_config(reference_config, kept)
    except ValueError as error:
        fail(str(error))
    out_dir = reference_dir.parent / config.name if out_dir is None else Path(out_dir)
    check_out_dir(out_dir, overwrite, protected=(reference_dir,))

    checkpoint_path = reference_dir / "lit_model.pth"
    state_dict = load_lazy_state_dict(checkpoint_path)
    if (found := count_blocks(state_dict)) != reference_config.n_layer:
        fail(f"{checkpoint_path} holds {found} blocks but model_config.yaml says n_layer={reference_config.n_layer}")

    with staged_dir(out_dir) as staging:
        save_state_dict(inherit_state_dict(state_dict, kept), staging / "lit_model.pth")
        save_config(config, staging)
        tokenizer_files = copy_tokenizer_files(reference_dir, staging)
        wrote_hf_config = write_hf_config(reference_dir, staging, kept)
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
                "inherited": ["token embedding", "blocks (attention, MLP, norms)", "final norm", "LM head"],
            },
        )
    if not tokenizer_files:
        print(f"warning: {reference_dir} has no tokenizer files; add them before generating or training", file=sys.stderr)
    extra = " and config.json" if wrote_hf_config else ""
    print(f"Inherited blocks {kept} of {reference_config.name} ({reference_config.n_layer} blocks) into {out_dir}{extra}")
    return out_dir


def best_window_from_analysis(analysis: Optional[Path], n_layers: int, n_reference: int) -> list[int]:
    """The contiguous window of n_layers blocks with the highest average MaxRank, from analyze's attention.json."""
    path = Path(analysis) / "attention.json" if analysis is not None else None
    if path is None or not path.is_file():
        raise ValueError(f"--select rank needs --analysis DIR holding attention.json from `litgpt inheritune analyze`; got {analysis}")
    result = json.loads(path.read_text())
    if len(result["max_rank"]) != n_reference:
        raise ValueError(f"--analysis {analysis} describes {len(result['max_rank'])} layers but the reference has {n_reference}")
    return result["suggested_layers"]["best_window"][str(n_layers)]
