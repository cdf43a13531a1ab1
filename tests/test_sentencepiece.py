"""The SentencePiece path, as OpenLLaMA and LLaMA-2 ship it (tokenizer.model, no tokenizer.json), end to end:
init -> pretrain on RedPajama-style jsonl of real text -> analyze -> evaluate -> export. sentencepiece itself,
transformers and lm-eval's Hugging Face backend are the independent references for ids, logits and scores."""

import json
import shutil

import pytest
import sentencepiece
import torch
from litgpt.tokenizer import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_cli, run_in_process, write_jsonl_corpus
from litgpt_inheritune.analyze import analyze_model, load_model
from litgpt_inheritune.checkpoint import load_gpt
from litgpt_inheritune.export import main as export
from litgpt_inheritune.init import main as init
from litgpt_inheritune.redpajama import tokenizer_fingerprint

SP_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
SEQ = 64
ODD = [
    "Hello  world",
    " a leading space",
    "Question: What is 2+2?\nAnswer:",
    "émigré naïve 日本語 🙂",
    "tabs\tand\n\nnewlines  ",
]


@pytest.fixture(scope="module")
def documents(lee_text) -> list[str]:
    return [line for line in lee_text.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run(sentencepiece_reference, documents, tmp_path_factory) -> dict:
    """init (2 of 4 blocks), then a few pretraining steps on the Lee articles as RedPajama jsonl through the CLI (in
    this process: an interpreter start costs seconds on 2 cores)."""
    root = tmp_path_factory.mktemp("sentencepiece")
    corpus = write_jsonl_corpus(root / "redpajama", documents=documents)
    target = root / "open_llama_tiny-2L"
    init(sentencepiece_reference, n_layers=2, out_dir=target)
    out_dir = root / "pretrain"
    code, _, stderr = run_in_process(
        "pretrain",
        str(target),
        "--out_dir",
        str(out_dir),
        "--data",
        "RedPajamaSample",
        "--data.data_dir",
        str(corpus),
        "--data.token_budget",
        "10000000",
        "--data.val_tokens",
        "2000",
        "--data.num_workers",
        "0",
        "--train.max_seq_length",
        str(SEQ),
        "--train.global_batch_size",
        "4",
        "--train.micro_batch_size",
        "2",
        "--train.max_steps",
        "3",
        "--train.lr_warmup_steps",
        "1",
        "--train.save_interval",
        "null",
        "--eval.interval",
        "1000",
        "--eval.max_iters",
        "2",
    )
    assert code == 0, stderr
    return {"root": root, "corpus": corpus, "target": target, "out_dir": out_dir, "stderr": stderr}


def test_init_and_pretrain_carry_the_sentencepiece_files(sentencepiece_reference, run):
    assert not (sentencepiece_reference / "tokenizer.json").exists()
    for checkpoint in (run["target"], run["out_dir"] / "final"):
        assert {name: (checkpoint / name).read_bytes() for name in SP_FILES} == {
            name: (sentencepiece_reference / name).read_bytes() for name in SP_FILES
        }
        assert not (checkpoint / "tokenizer.json").exists()
    assert json.loads((run["target"] / "config.json").read_text())["num_hidden_layers"] == 2


def test_redpajama_documents_are_bos_text_eos(sentencepiece_reference, run, documents):
    """The budget exceeds the corpus, so every article is used: <s> + sentencepiece's ids + </s> each (the one that
    crosses the validation share cut there: its rest is in neither split)."""
    processor = sentencepiece.SentencePieceProcessor(model_file=str(sentencepiece_reference / "tokenizer.model"))
    manifests = list((run["corpus"].with_name("redpajama-litdata")).glob("*/manifest.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["val"]["documents"] + manifest["train"]["documents"] == len(documents)
    expected = sum(len(processor.encode(text, add_bos=True, add_eos=True)) for text in documents)
    longest = max(len(processor.encode(text, add_bos=True, add_eos=True)) for text in documents)
    assert expected - longest < manifest["val"]["tokens"] + manifest["train"]["tokens"] <= expected
    assert "the budget exceeds what the data hold (all of it is used)" in run["stderr"]


def test_cache_key_follows_the_sentencepiece_model(sentencepiece_reference, lee_text, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in SP_FILES:
        shutil.copy(sentencepiece_reference / name, copy / name)
    fingerprint = tokenizer_fingerprint(Tokenizer(sentencepiece_reference))
    assert tokenizer_fingerprint(Tokenizer(copy)) == fingerprint
    config = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": False}))
    assert tokenizer_fingerprint(Tokenizer(copy)) != fingerprint  # the documents would lose their <s>

    from materials import sentencepiece_tokenizer

    sentencepiece_tokenizer(tmp_path / "small", lee_text, vocab_size=1000)
    assert tokenizer_fingerprint(Tokenizer(tmp_path / "small")) != fingerprint


def test_analyze_reads_windows_of_bos_and_text_inside_one_document(sentencepiece_reference, run):
    """`analyze` on the pretrain out_dir equals the measures on windows cut from sentencepiece's own ids: each
    document is <s> + its text (LLaMA's add_bos, no </s>), and each window lies inside one document."""
    out_dir = run["root"] / "analyze"
    sample = run["corpus"] / "sample.jsonl"
    run_cli(
        "litgpt",
        "inheritune",
        "analyze",
        str(run["out_dir"]),
        "--data_path",
        str(sample),
        "--num_sequences",
        "4",
        "--seq_len",
        "32",
        "--seed",
        "3",
        "--plots",
        "false",
        "--out_dir",
        str(out_dir),
        check=True,
    )
    processor = sentencepiece.SentencePieceProcessor(model_file=str(sentencepiece_reference / "tokenizer.model"))
    texts = [json.loads(line)["text"] for line in sample.read_text(encoding="utf-8").splitlines() if line.strip()]
    documents = [ids for ids in (processor.encode(text, add_bos=True) for text in texts) if len(ids) >= 32][:4]
    assert len(documents) == 4 and all(ids[0] == 1 and 1 not in ids[1:] and 2 not in ids for ids in documents)
    generator = torch.Generator().manual_seed(3)
    starts = [torch.randint(0, len(ids) - 32 + 1, (1,), generator=generator).item() for ids in documents]
    windows = torch.tensor([ids[start : start + 32] for ids, start in zip(documents, starts)])
    expected = analyze_model(load_model(run["out_dir"] / "final"), windows, 0.9, 0.9, 2.0, 10)
    ours = json.loads((out_dir / "attention.json").read_text())
    for measure in ("rank", "mass"):
        torch.testing.assert_close(torch.tensor(ours[measure]), torch.tensor(expected[measure]))


@pytest.fixture(scope="module")
def exported(run):
    return export(run["out_dir"] / "final", out_dir=run["root"] / "hf", dtype="float32")


def test_export_gives_transformers_the_same_ids_and_logits(run, exported, documents):
    final = run["out_dir"] / "final"
    assert set(SP_FILES) <= {p.name for p in exported.iterdir()} and not (exported / "tokenizer.json").exists()
    assert json.loads((exported / "generation_config.json").read_text()) == {"bos_token_id": 1, "eos_token_id": 2}
    processor = sentencepiece.SentencePieceProcessor(model_file=str(exported / "tokenizer.model"))
    hf_tokenizer, lit_tokenizer = AutoTokenizer.from_pretrained(exported), Tokenizer(final)
    for text in documents[:40] + ODD:
        ids = processor.encode(text)
        assert (
            hf_tokenizer(text, add_special_tokens=False).input_ids
            == lit_tokenizer.encode(text, bos=False).tolist()
            == ids
        )
        # both libraries' default for a LlamaTokenizer with add_bos_token: <s> first, no </s>
        assert (
            hf_tokenizer(text).input_ids == lit_tokenizer.encode(text).tolist() == processor.encode(text, add_bos=True)
        )
        assert hf_tokenizer.decode(ids) == processor.decode(ids) == text

    idx = torch.stack([lit_tokenizer.encode(text)[:48] for text in documents[:3]]).long()
    model = load_gpt(final).eval()
    hf_model = AutoModelForCausalLM.from_pretrained(exported).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf_model(idx).logits, model(idx), rtol=0, atol=1e-4)


def test_evaluate_scores_as_lm_evals_hugging_face_backend(run, exported, documents, offline_tasks):
    """`evaluate` runs on the checkpoint; its model's log-likelihoods (contexts, continuations, rolling windows
    that start from <s>) equal HFLM's on the exported folder, which tokenizes with transformers."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from litgpt_inheritune.lm_eval_model import LitGPTLM

    final = run["out_dir"] / "final"
    code, _, stderr = run_in_process(
        "evaluate",
        str(final),
        "--tasks",
        "piqa_offline,arc_easy_offline",
        "--include_path",
        str(offline_tasks),
        "--limit",
        "3",
        "--device",
        "cpu",
        "--out_dir",
        str(run["root"] / "evaluate"),
    )
    assert code == 0, stderr
    results = json.loads((run["root"] / "evaluate" / "results.json").read_text())["results"]
    assert 0 <= results["piqa_offline"]["acc,none"] <= 1 and 0 <= results["arc_easy_offline"]["acc,none"] <= 1

    pairs = [(" ".join(text.split()[:12]), " " + " ".join(text.split()[12:16])) for text in documents[:6]]
    pairs += [("Question: What is 2+2?\nAnswer:", " 4"), ("", "The first word")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    rolling = [Instance("loglikelihood_rolling", {}, (text[:600],), i) for i, text in enumerate(documents[:3])]
    ours, theirs = (
        LitGPTLM(final, batch_size=4),
        HFLM(pretrained=str(exported), device="cpu", dtype="float32", batch_size=4),
    )
    assert ours.prefix_token_id == theirs.prefix_token_id == 1
    assert [ll for ll, _ in ours.loglikelihood(requests)] == pytest.approx(
        [ll for ll, _ in theirs.loglikelihood(requests)], abs=1e-3
    )
    assert ours.loglikelihood_rolling(rolling) == pytest.approx(theirs.loglikelihood_rolling(rolling), abs=1e-3)
