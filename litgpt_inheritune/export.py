"""`litgpt inheritune export`: a LitGPT checkpoint → a complete Hugging Face folder, checked by transformers.

litgpt's ``convert_from_litgpt`` renames the weights but writes no config.json; this command also writes the
config (derived from model_config.yaml for every family litgpt converts back: see ``hf_config``), model.safetensors,
the tokenizer files and generation_config.json, so ``transformers.AutoModelForCausalLM.from_pretrained(out_dir)``
loads it directly. Before the folder appears under its name, transformers loads it and its logits are compared with
LitGPT's own forward pass. It also writes a model card (README.md, see card.py);
``--push_to_hub`` then uploads the finished folder.
"""

import json
import sys
from pathlib import Path
from typing import Literal, Optional

import torch
from litgpt.config import Config
from litgpt.scripts.convert_lit_checkpoint import check_conversion_supported
from litgpt.tokenizer import Tokenizer
from huggingface_hub import save_torch_state_dict

from litgpt_inheritune.checkpoint import (
    check_checkpoint,
    copy_tokenizer_files,
    load_gpt,
    load_lazy_state_dict,
    resolve_checkpoint_dir,
)
from litgpt_inheritune.card import card_inputs, write_export_card
from litgpt_inheritune.errors import fail
from litgpt_inheritune.files import check_out_dir, staged_dir
from litgpt_inheritune.hf_config import hf_config_for, sliding_layers
from litgpt_inheritune.hub import push_folder

CHECK_TOKENS = 32  # the check's input length, longer when a sliding window is short enough to be crossed
CHECK_TOLERANCE = 1e-4  # relative to the largest |logit| (at least 1); both sides run in float32


def main(
    checkpoint_dir: Path,
    out_dir: Optional[Path] = None,
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto",
    overwrite: bool = False,
    verify: bool = True,
    eval_dir: Optional[Path] = None,
    analysis: Optional[Path] = None,
    push_to_hub: Optional[str] = None,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    commit_message: str = "Upload a model derived with litgpt inheritune",
) -> Path:
    """Export a LitGPT checkpoint as a Hugging Face folder that transformers loads with from_pretrained.

    Arguments:
        checkpoint_dir: A LitGPT checkpoint directory (lit_model.pth, model_config.yaml, tokenizer files).
        out_dir: Output folder. Default: ``<checkpoint_dir>/hf``.
        dtype: Data type of the saved weights. "auto" keeps the checkpoint's own (lossless, as litgpt's
            ``convert_from_litgpt`` and transformers' ``save_pretrained`` do); the others cast.
        overwrite: Replace ``out_dir`` if it already holds files.
        verify: Before the folder appears under ``out_dir``, load it with transformers and compare its logits with
            LitGPT's on a short input (both in float32, from the weights as written; needs memory for the model in
            float32); a difference above 1e-4 of the largest logit stops the export and writes nothing. ``false``
            skips the check, for models too big to load again.
        eval_dir: An ``evaluate`` out_dir of this checkpoint (with ``--reference``: the reference's scores too) for
            the model card's results and model-index.
        analysis: An ``analyze`` out_dir of the reference, whose attention-rank plot goes into the card. Default: the
            one that chose the blocks (``init --select``) or grow's, where recorded.
        push_to_hub: Upload the folder to this Hugging Face model repository (ORG/NAME), created if missing, with the
            token of ``hf auth login`` or HF_TOKEN. The local folder is complete before the upload starts.
        private: Create the repository as private (true) or public (false); an existing one keeps its visibility.
            Default: the Hub's (public, unless an organization's settings make new repositories private).
        revision: Upload to this branch (created from main if missing). Default: main.
        commit_message: The upload's commit message.
    """
    checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
    check_checkpoint(checkpoint_dir)
    out_dir = checkpoint_dir / "hf" if out_dir is None else Path(out_dir)
    check_out_dir(out_dir, overwrite, protected=(checkpoint_dir,))
    card = card_inputs(checkpoint_dir, eval_dir, analysis, push_to_hub)
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    try:
        tokenizer = Tokenizer(checkpoint_dir)
    except Exception:
        fail(f"checkpoint_dir {checkpoint_dir} has no tokenizer (tokenizer.json or tokenizer.model)")
    lit_weights = load_lazy_state_dict(checkpoint_dir / "lit_model.pth")
    if dtype == "auto":
        dtype = str(lit_weights["transformer.wte.weight"].dtype).removeprefix("torch.")
    hf_config, copy_weights = hf_config_for(config, tokenizer.bos_id, tokenizer.eos_id, dtype)

    try:
        check_conversion_supported(lit_weights)
    except (ValueError, NotImplementedError) as error:
        fail(f"checkpoint_dir {checkpoint_dir}: {error}")
    hf_weights = {}
    try:
        copy_weights(config, hf_weights, lit_weights)
    except KeyError as error:
        fail(f"{config.name} cannot be exported: litgpt's weight map for {hf_config.architectures[0]} has no {error}")
    seen = set()
    for name, tensor in hf_weights.items():
        tensor = tensor.to(getattr(torch, dtype)).contiguous()
        # safetensors stores whole storages: copy a tied head (LitGPT keeps two names) and views into a fused qkv
        if tensor.untyped_storage().data_ptr() in seen or tensor.untyped_storage().nbytes() != tensor.nbytes:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        hf_weights[name] = tensor

    with staged_dir(out_dir) as staging:
        # shards above 5 GB and writes the index, as save_pretrained does
        save_torch_state_dict(hf_weights, staging, safe_serialization=True)
        hf_config.save_pretrained(staging)
        copy_tokenizer_files(checkpoint_dir, staging)
        if not (staging / "generation_config.json").is_file():
            generation = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}
            (staging / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        del hf_weights
        if verify:
            check_export(checkpoint_dir, config, staging, dtype, hf_config.architectures[0], out_dir)
        else:
            print("Not verified (--verify false): transformers did not load the folder", file=sys.stderr)
        write_export_card(staging, card, config, str(out_dir))
    print(f"Exported {config.name} to {out_dir} ({hf_config.architectures[0]}, {dtype})", file=sys.stderr)
    if push_to_hub is not None:
        push_folder(out_dir, push_to_hub, private, revision, commit_message)
    return out_dir


def check_export(
    checkpoint_dir: Path, config: Config, folder: Path, dtype: str, architecture: str, out_dir: Path
) -> None:
    """transformers' logits for the written ``folder`` against LitGPT's forward pass on the same weights.

    Both run in float32 from the weights as written (rounded to ``dtype``), one model in memory at a time, so the
    only differences left are the order of floating-point operations; a wrong config field or weight is orders of
    magnitude above the tolerance. The input is random tokens, long enough to cross a sliding window of up to
    ``CHECK_TOKENS * 8`` tokens."""
    from transformers import AutoModelForCausalLM

    length = CHECK_TOKENS
    if any(sliding_layers(config)) and config.sliding_window_size < 8 * CHECK_TOKENS:
        length = config.sliding_window_size + CHECK_TOKENS // 2
    length = min(length, config.block_size)
    idx = torch.randint(0, config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
    print(f"Checking the export: transformers' logits against LitGPT's on {length} tokens", file=sys.stderr)

    model = load_gpt(checkpoint_dir)
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.to(getattr(torch, dtype)).float()  # as written, then float32
        model.max_seq_length = length
        expected = model.eval()(idx)
    del model

    try:
        hf, info = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
        )
    except Exception as error:
        fail(
            f"export check failed: transformers cannot load the {architecture} folder ({first_line(error)}); {out_dir} was not written"
        )
    unmatched = [f"{kind} {sorted(keys)}" for kind, keys in info.items() if keys]
    if unmatched:
        fail(
            f"export check failed: transformers' {architecture} found {'; '.join(unmatched)}; {out_dir} was not written"
        )
    with torch.no_grad():
        actual = hf.eval()(idx).logits
    del hf
    difference = (actual - expected).abs().max().item()
    tolerance = CHECK_TOLERANCE * max(1.0, expected.abs().max().item())
    if not difference <= tolerance:  # also catches NaN
        fail(
            f"export check failed: transformers' {architecture} logits differ from LitGPT's by {difference:.3g}"
            f" (max abs over {length} tokens; tolerance {tolerance:.3g}); {out_dir} was not written"
        )
    print(f"Checked: max abs difference {difference:.2g} (tolerance {tolerance:.2g})", file=sys.stderr)


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
