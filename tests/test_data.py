"""The data modules (RedPajama, RedPajamaSample) and `litgpt inheritune prepare_data`, on small real files."""

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
import zstandard
from litdata.streaming import StreamingDataset, TokensLoader
from litgpt.tokenizer import Tokenizer

from conftest import run_cli, run_in_process, stray_processes, write_jsonl_corpus
from litgpt_inheritune.documents import documents
from litgpt_inheritune.redpajama import RedPajama, RedPajamaSample

SEQ = 32


def prepared(data_dir: Path, tokenizer: Tokenizer, cache_dir: Path, module=RedPajama, **options) -> RedPajama:
    data = module(data_dir=data_dir, cache_dir=cache_dir, num_workers=0, **options)
    data.connect(tokenizer=tokenizer, batch_size=2, max_seq_length=SEQ)
    data.prepare_data()
    return data


def stored_documents(data: RedPajama, split: str) -> list[tuple[int, ...]]:
    """Every token litdata stored for a split (read one token per item), cut after each EOS into documents."""
    stream = StreamingDataset(str(data.prepared_dir / split), item_loader=TokensLoader(block_size=1), shuffle=False)
    tokens = torch.cat([stream[i] for i in range(len(stream))]).tolist()
    documents, start = [], 0
    for i, token in enumerate(tokens):
        if token == data.tokenizer.eos_id:
            documents.append(tuple(tokens[start : i + 1]))
            start = i + 1
    assert start == len(tokens), "the stored tokens end with a whole document"
    return documents


def origins(stored: list[tuple[int, ...]], encoded: list[tuple[int, ...]], eos: int) -> tuple[list[int], int]:
    """The index in ``encoded`` (the tokenizer's own encoding of each document, EOS after it) of every stored document,
    which must be a whole one or a cut one (its first tokens, then EOS), and the number of cut ones."""
    indices, cut = [], 0
    for document in stored:
        whole = [i for i, full in enumerate(encoded) if full == document]
        prefix = [
            i for i, full in enumerate(encoded) if document[-1] == eos and full[: len(document) - 1] == document[:-1]
        ]
        assert whole or prefix, "a stored document is neither a whole document nor the start of one"
        indices.append((whole or prefix)[0])
        cut += not whole
    return indices, cut


def texts_of(folder: Path) -> list[str]:
    return [
        json.loads(line)["text"] for path in sorted(folder.rglob("*.jsonl")) for line in path.read_text().splitlines()
    ]


def split_corpus(tmp_path: Path, n_files: int = 4, n_documents: int = 100) -> Path:
    """A RedPajama-style folder of several jsonl files (several parts, so several workers have work)."""
    folder = tmp_path / "corpus"
    for k in range(n_files):
        write_jsonl_corpus(tmp_path / f"c{k}", n_documents=n_documents, seed=k)
        folder.mkdir(exist_ok=True)
        shutil.move(tmp_path / f"c{k}" / "sample.jsonl", folder / f"part-{k}.jsonl")
    return folder


def test_whole_documents_seeded_and_the_same_for_any_number_of_workers(tiny_target, tmp_path):
    tokenizer = Tokenizer(tiny_target)
    corpus = split_corpus(tmp_path)
    encoded = [tuple(tokenizer.encode(text, eos=True).tolist()) for text in texts_of(corpus)]
    runs = {
        workers: prepared(
            corpus,
            tokenizer,
            tmp_path / f"cache-{workers}",
            token_budget=6_000,
            val_tokens=600,
            prepare_workers=workers,
        )
        for workers in (1, 2)
    }
    one, two = runs[1], runs[2]

    # the number of workers is not part of the cache key, and the tokens are the same (chunks may come in another order)
    assert one.prepared_dir.name == two.prepared_dir.name
    chunks = [
        chunk["filename"] for chunk in json.loads((two.prepared_dir / "train" / "index.json").read_text())["chunks"]
    ]
    assert chunks == ["chunk-0-0.bin", "chunk-1-0.bin"]  # each worker wrote its slice of the parts
    for split in ("val", "train"):
        assert sorted(stored_documents(one, split)) == sorted(stored_documents(two, split))

    train, val = stored_documents(one, "train"), stored_documents(one, "val")
    # whole documents, EOS after each, except at most one per part (4 here) cut where it crosses the part's share
    (train_sources, train_cut), (val_sources, val_cut) = (
        origins(docs, encoded, tokenizer.eos_id) for docs in (train, val)
    )
    assert train_cut <= 4 and val_cut <= 4 and len(train) > train_cut
    assert not set(train_sources) & set(val_sources)  # no document in both splits, not even in part
    manifest = one.manifest()
    assert manifest["train"] == {"documents": len(train), "tokens": sum(map(len, train))}
    assert manifest["val"] == {"documents": len(val), "tokens": sum(map(len, val))}
    assert manifest["train"]["tokens"] == 6_000 and manifest["val"]["tokens"] == 600  # the budgets, exactly

    # another seed draws other documents; the same seed the same ones
    other = prepared(corpus, tokenizer, tmp_path / "cache-1", token_budget=6_000, val_tokens=600, seed=7)
    assert other.prepared_dir != one.prepared_dir and set(stored_documents(other, "train")) != set(train)


def test_cache_key_survives_copying_and_sequence_length(tiny_target, tmp_path):
    tokenizer = Tokenizer(tiny_target)
    corpus = split_corpus(tmp_path, n_files=2, n_documents=50)
    data = prepared(corpus, tokenizer, tmp_path / "cache", token_budget=3_000, val_tokens=300)
    stamp = (data.prepared_dir / "manifest.json").stat().st_mtime_ns

    copy = tmp_path / "node2" / "corpus"
    shutil.copytree(corpus, copy, copy_function=shutil.copy)  # new modification times
    os.utime(copy / "part-0.jsonl", (1, 1))
    longer = RedPajama(data_dir=copy, cache_dir=tmp_path / "cache", token_budget=3_000, val_tokens=300, num_workers=0)
    longer.connect(tokenizer=tokenizer, batch_size=2, max_seq_length=2 * SEQ)
    assert longer.is_prepared() and longer.prepared_dir == data.prepared_dir
    longer.prepare_data()
    assert (data.prepared_dir / "manifest.json").stat().st_mtime_ns == stamp  # not tokenized again
    longer.setup()
    assert next(iter(longer.val_dataloader())).shape == (2, 2 * SEQ + 1)  # the block size chosen at load time
    assert next(iter(data.val_dataloader())).shape == (2, SEQ + 1)
    # a node that prepares its own copy (at another path) writes the same documents under the same key
    own = prepared(copy, tokenizer, tmp_path / "node2" / "cache", token_budget=3_000, val_tokens=300)
    assert own.prepared_dir.name == data.prepared_dir.name
    assert sorted(stored_documents(own, "train")) == sorted(stored_documents(data, "train"))

    with open(copy / "part-1.jsonl", "a") as f:
        f.write(json.dumps({"text": "one more document"}) + "\n")
    changed = RedPajama(data_dir=copy, cache_dir=tmp_path / "cache", token_budget=3_000, val_tokens=300)
    changed.connect(tokenizer=tokenizer, batch_size=2, max_seq_length=SEQ)
    assert not changed.is_prepared()


def test_every_format_and_txt_documents(tiny_target, tmp_path):
    """jsonl, jsonl.zst, parquet and .txt in one folder; .txt as one document per file or per line."""
    tokenizer = Tokenizer(tiny_target)
    texts = texts_of(write_jsonl_corpus(tmp_path / "source", n_documents=40))
    folder = tmp_path / "mixed"
    (folder / "deep").mkdir(parents=True)
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": t, "meta": {}}) + "\n" for t in texts[:10]))
    (folder / "b.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress("".join(json.dumps({"text": t}) + "\n" for t in texts[10:20]).encode())
    )
    pq.write_table(
        pa.table({"text": texts[20:30], "id": list(range(10))}), folder / "deep" / "c.parquet", row_group_size=4
    )
    for i, text in enumerate(texts[30:40]):
        (folder / "deep" / f"{i}.txt").write_text(text)
    data = prepared(folder, tokenizer, tmp_path / "cache", module=RedPajamaSample, token_budget=10**9, val_tokens=1_000)
    everything = stored_documents(data, "val") + stored_documents(data, "train")
    assert sorted(everything) == sorted(tuple(tokenizer.encode(t, eos=True).tolist()) for t in texts)
    # parts: the jsonl, the zst, one per parquet row group (3), and one for the 10 one-document .txt files together
    assert data.manifest()["files"] == 13 and data.manifest()["parts"] == 6

    lines = tmp_path / "lines"
    lines.mkdir()
    (lines / "news.txt").write_text("\n".join(texts[:20]) + "\n\n")
    by_line = prepared(lines, tokenizer, tmp_path / "cache", txt_documents="line", token_budget=10**9, val_tokens=200)
    stored = stored_documents(by_line, "val") + stored_documents(by_line, "train")
    # every line is a document; the one that crosses the validation share is cut there, the rest whole
    sources, cut = origins(
        stored, [tuple(tokenizer.encode(t, eos=True).tolist()) for t in texts[:20]], tokenizer.eos_id
    )
    assert sorted(sources) == list(range(20)) and cut <= 1 and by_line.manifest()["val"]["tokens"] == 200
    for i, text in enumerate(texts[20:23]):
        (lines / f"article-{i}.txt").write_text(text)
    by_file = RedPajama(data_dir=lines)  # the default: one document per .txt file, the file with 20 lines too
    read = [text for part in by_file.parts() for _, text in documents(part, seed=42, text_field="text")]
    assert sorted(read) == sorted([(lines / "news.txt").read_text(), *texts[20:23]])


def test_source_mixture(tiny_target, tmp_path):
    """Shares of the budget per source folder, whatever the sizes of the sources."""
    tokenizer = Tokenizer(tiny_target)
    folder = tmp_path / "sources"
    encoded, source_of = [], []
    for name, seeds in (("small", [1]), ("large", [2, 3, 4])):
        for k, seed in enumerate(seeds):
            corpus = write_jsonl_corpus(tmp_path / f"{name}{k}", n_documents=150, seed=seed)
            (folder / name).mkdir(parents=True, exist_ok=True)
            shutil.move(corpus / "sample.jsonl", folder / name / f"{k}.jsonl")
            for line in (folder / name / f"{k}.jsonl").read_text().splitlines():
                text = json.loads(line)["text"]
                encoded.append(tuple(tokenizer.encode(text, eos=True).tolist()))
                source_of.append(name)
    data = prepared(
        folder, tokenizer, tmp_path / "cache", token_budget=8_000, val_tokens=400, mixture={"small": 3, "large": 1}
    )
    stored = stored_documents(data, "train")
    tokens = Counter()
    for document, index in zip(stored, origins(stored, encoded, tokenizer.eos_id)[0]):
        tokens[source_of[index]] += len(document)
    assert tokens == {"small": 6_000, "large": 2_000}  # 3 : 1 of the budget, exactly

    with pytest.raises(SystemExit, match="--data.mixture names sources that --data.data_dir .* lacks: arxiv, book"):
        prepared(folder, tokenizer, tmp_path / "cache", mixture="redpajama")


def test_bad_documents_name_file_and_line_and_leave_no_cache(tiny_target, tmp_path):
    """A bad document stops the preparation with one line naming it, and leaves no folder and no process behind (the
    litdata workers end normally: a worker that raised was killed by litdata, orphaning the process it had started)."""
    tokenizer = Tokenizer(tiny_target)
    started = time.time() - 1  # psutil's create_time has a coarser clock
    corpus = write_jsonl_corpus(tmp_path / "bad", n_documents=30)
    lines = (corpus / "sample.jsonl").read_text().splitlines()
    lines[16] = lines[16][:-5]
    (corpus / "sample.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as error:
        prepared(corpus, tokenizer, tmp_path / "cache", token_budget=10**9, val_tokens=100)
    assert str(error.value).startswith(
        f"error: {corpus / 'sample.jsonl'} line 17: not a JSON object"
    ) and "\n" not in str(error.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing half-written

    lines[16] = json.dumps({"content": "the text under another name"})
    (corpus / "sample.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit, match=r"line 17: no text field 'text' \(found: content\); set --data.text_field"):
        prepared(corpus, tokenizer, tmp_path / "cache", token_budget=10**9, val_tokens=100)
    with pytest.raises(SystemExit, match="does not exist; download RedPajama-Data-1T into it"):
        prepared(tmp_path / "absent", tokenizer, tmp_path / "cache")
    assert stray_processes(started) == []


def test_prepare_data_takes_pretrains_flags_then_pretrain_starts_at_once(
    tiny_target, jsonl_corpus, tmp_path, monkeypatch
):
    """`prepare_data` with a pretrain recipe and `--data.data_dir` alone (the default module); pretrain then reuses it."""
    recipe = Path(__file__).resolve().parent.parent / "config_hub" / "pretrain" / "tiny-cpu.yaml"
    flags = [
        str(tiny_target),
        "--config",
        str(recipe),
        "--data.data_dir",
        str(jsonl_corpus),
        "--data.cache_dir",
        str(tmp_path / "cache"),
        "--out_dir",
        str(tmp_path / "run"),
    ]
    result = run_cli("litgpt", "inheritune", "prepare_data", *flags, check=True)
    assert "tokenizing train" in result.stderr and "documents" in result.stderr and "Data prepared in" in result.stdout
    assert not (tmp_path / "run").exists()
    (prepared_dir,) = (tmp_path / "cache").iterdir()
    manifest = json.loads((prepared_dir / "manifest.json").read_text())
    assert manifest["budgets"] == {"train": 20_000, "val": 2_000}  # the recipe's data settings

    started = time.time() - 1
    # in this process (no interpreter start), with 2 litdata loader processes per split: none outlives the run
    code, _, stderr = run_in_process("pretrain", *flags, "--train.max_steps", "2", "--data.num_workers", "2")
    assert code == 0, stderr
    assert "Preparing" not in stderr and "tokenizing" not in stderr
    assert stray_processes(started) == []
    saved = yaml.safe_load((tmp_path / "run" / "final" / "hyperparameters.yaml").read_text())
    assert saved["data"]["class_path"] == "litgpt_inheritune.redpajama.RedPajamaSample"
    assert saved["data"]["init_args"]["data_dir"] == str(jsonl_corpus)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no download in tests: the attempt fails at once
    code, _, stderr = run_in_process(
        "prepare_data",
        str(tiny_target),
        "--data.data_dir",
        str(tmp_path / "nowhere"),
        "--data.repo_id",
        "nobody/nothing",
    )
    assert code == 1 and "Traceback" not in stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: --data.data_dir {tmp_path / 'nowhere'} does not exist and nobody/nothing could not be downloaded"
        )
    )


@pytest.fixture(scope="module")
def wikipedia(tmp_path_factory) -> Path:
    """92 English Wikipedia articles of 6-22K characters (5-20K tokens here), one .txt file each."""
    from materials import wikipedia_articles

    return wikipedia_articles(tmp_path_factory.mktemp("wikipedia") / "articles", min_chars=6_000, max_chars=22_000)


def test_budgets_met_and_no_split_empty_on_wikipedia_articles(tiny_target, wikipedia, tmp_path, capsys):
    """Documents larger than the budgets' shares: each split gets its budget exactly (counted here by tokenizing the
    articles), whole articles plus one cut where the share ends, never one article in both splits; without
    --data.val_tokens validation takes one sequence (2,049 tokens), more than 0.1 % of the budget, and says so."""
    tokenizer = Tokenizer(tiny_target)
    articles = sorted(wikipedia.iterdir())
    encoded = [tuple(tokenizer.encode(path.read_text(), eos=True).tolist()) for path in articles]
    assert len(articles) > 80 and 4_000 < min(map(len, encoded)) and max(map(len, encoded)) < 21_000
    seen_val = set()
    for budget, val_tokens, seed in [(60_000, None, 42), (60_000, 3_000, 1), (60_000, 3_000, 2), (30_000, None, 42)]:
        data = RedPajama(
            data_dir=wikipedia,
            cache_dir=tmp_path / "cache",
            token_budget=budget,
            val_tokens=val_tokens,
            seed=seed,
            num_workers=0,
        )
        data.connect(tokenizer=tokenizer, batch_size=2, max_seq_length=2048)
        data.prepare_data()
        expected = {"train": budget, "val": val_tokens or 2049}
        sources = {}
        for split in ("val", "train"):
            stored = stored_documents(data, split)
            sources[split], cut = origins(stored, encoded, tokenizer.eos_id)
            assert sum(map(len, stored)) == expected[split] == data.manifest()[split]["tokens"]
            assert stored and cut <= 1  # whole articles, and one cut at most (all the articles are one part)
        assert not set(sources["val"]) & set(sources["train"])
        seen_val.add(tuple(sources["val"]))
        if val_tokens is None:
            assert "2,049 validation tokens (--data.val_fraction 0.001 of the budget, and at least one sequence" in (
                capsys.readouterr().err
            )
        data.setup()  # enough tokens for a sequence in each split
    assert len(seen_val) > 1  # seeds draw other articles
