"""`litgpt inheritune convert_gguf`: a GGUF model file → a LitGPT checkpoint directory.

transformers reads (and dequantizes) the GGUF file with the `gguf` package and writes a Hugging Face folder;
litgpt's own ``convert_hf_checkpoint`` turns that into lit_model.pth and model_config.yaml. The Hugging Face
config.json, tokenizer files and generation config stay beside them, so every litgpt command works on the result.
"""

import contextlib
import io
import re
import sys
from pathlib import Path
from typing import Literal, Optional

from litgpt.config import name_to_config

from litgpt_inheritune.errors import fail
from litgpt_inheritune.files import check_out_dir, staged_dir


def main(
    gguf_file: Path,
    out_dir: Optional[Path] = None,
    model_name: Optional[str] = None,
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
    overwrite: bool = False,
) -> Path:
    """Convert a GGUF model file (e.g. from llama.cpp or a model hub) into a LitGPT checkpoint directory.

    Arguments:
        gguf_file: The .gguf file.
        out_dir: Output directory. Default: ``checkpoints/<model_name>``.
        model_name: The litgpt config name of the architecture (e.g. ``SmolLM2-135M-Instruct``). Default: the file
            name without its quantization suffix (``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``SmolLM2-135M-Instruct``).
        dtype: Data type of the written weights (GGUF's quantized tensors are dequantized to it).
        overwrite: Replace ``out_dir`` if it already holds files.
    """
    gguf_file = Path(gguf_file)
    if not gguf_file.is_file() or gguf_file.suffix != ".gguf":
        fail(f"gguf_file {gguf_file} is not a .gguf file")
    model_name = model_name or re.sub(r"\.(Q\d.*|F16|F32|BF16|IQ.*)$", "", gguf_file.stem, flags=re.I)
    if model_name not in name_to_config:
        close = [name for name in name_to_config if name.lower().startswith(model_name.lower()[:8])][:5]
        fail(f"--model_name {model_name!r} is not a litgpt config name; pass one with --model_name (close: {close})")
    out_dir = Path("checkpoints") / model_name if out_dir is None else Path(out_dir)
    check_out_dir(out_dir, overwrite)

    import torch
    from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, torch_dtype=getattr(torch, dtype)
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    except Exception as error:
        fail(f"transformers could not read {gguf_file} ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    # the GGUF metadata's special-token ids (kept in the generation config) are right where the converted
    # tokenizer's names may not be (SmolLM2's eos comes out as <|im_start|> instead of <|im_end|>)
    for role in ("bos", "eos"):
        token_id = getattr(model.generation_config, f"{role}_token_id", None)
        if isinstance(token_id, int):
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
    with staged_dir(out_dir) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if (staging / "tokenizer.model").is_file() and (staging / "tokenizer.model").read_bytes()[:4] == b"GGUF":
            (staging / "tokenizer.model").unlink()  # transformers saves the GGUF file itself as the "vocab file"
        del model
        with contextlib.redirect_stdout(io.StringIO()):  # litgpt prints its arguments, with the staging folder's path
            convert_hf_checkpoint(checkpoint_dir=staging, model_name=model_name, dtype=dtype)
        for weights in staging.glob("model*.safetensors*"):
            weights.unlink()  # the Hugging Face copy of the weights: lit_model.pth holds them now
    print(f"Converted {gguf_file} to a LitGPT checkpoint ({model_name}, {dtype}) in {out_dir}", file=sys.stderr)
    return out_dir
