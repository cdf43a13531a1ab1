"""`litgpt inheritune evaluate`: lm-evaluation-harness directly on LitGPT's model, tables beside chance level."""

import json

import pytest
import torch
from litgpt.config import Config
from litgpt.model import GPT

from conftest import run_in_process
from litgpt_inheritune.evaluate import SUITES, column_labels, main as evaluate, task_shots
from litgpt_inheritune.lm_eval_model import LitGPTLM

OFFLINE = "piqa_offline,arc_easy_offline,boolq_offline,winogrande_offline"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_scores_equal_lm_evals_hugging_face_backend(smollm2, offline_tasks, tmp_path):
    """Same model (exported to a Hugging Face folder), same items: every choice's log-likelihood agrees within 1e-4,
    and so every accuracy."""
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from litgpt_inheritune.export import main as export

    tasks = OFFLINE
    ours = evaluate(
        smollm2, tasks=tasks, include_path=offline_tasks, limit=20, out_dir=tmp_path / "ours", log_samples=True
    )
    hf_dir = export(smollm2, out_dir=tmp_path / "hf", dtype="float32", verify=False)  # the scores compare the two
    theirs = evaluator.simple_evaluate(
        model=HFLM(pretrained=str(hf_dir), device="cpu", batch_size=8, dtype="float32"),
        tasks=tasks.split(","),
        limit=20,
        task_manager=TaskManager(include_path=str(offline_tasks)),
        random_seed=1234,
        log_samples=True,
    )
    for task in tasks.split(","):
        [samples] = (tmp_path / "ours").glob(f"samples_{task}_*.jsonl")
        ours_items = {  # lm-eval's tracker writes each (log-likelihood, greedy) pair as two strings
            item["doc_id"]: [float(ll) for ((ll, _),) in item["resps"]]
            for item in map(json.loads, samples.read_text().splitlines())
        }
        theirs_items = {item["doc_id"]: [ll for ((ll, _),) in item["resps"]] for item in theirs["samples"][task]}
        assert sorted(ours_items) == sorted(theirs_items) == list(range(20))
        for doc_id, lls in theirs_items.items():
            assert ours_items[doc_id] == pytest.approx(lls, abs=1e-4), (task, doc_id)
        metrics = [m for m in ("acc,none", "acc_norm,none") if m in theirs["results"][task]]  # WinoGrande: acc
        assert metrics and set(metrics) == {m for m in ("acc,none", "acc_norm,none") if m in ours["results"][task]}
        for metric in metrics:
            assert ours["results"][task][metric] == theirs["results"][task][metric], (task, metric)
    assert ours["results"]["piqa_offline"]["acc,none"] > 0.55  # a real model beats chance on PIQA


def test_results_table_and_compare(tiny_references, offline_tasks, tmp_path):
    reference = tiny_references["llama-gqa"]
    first = tmp_path / "reference"
    evaluate(reference, tasks="piqa_offline,boolq_offline", include_path=offline_tasks, limit=4, out_dir=first)
    code, stdout, stderr = run_in_process(
        "evaluate",
        str(tiny_references["gpt-neox"]),
        "--tasks",
        "piqa_offline,boolq_offline",
        "--include_path",
        str(offline_tasks),
        "--limit",
        "4",
        "--out_dir",
        str(tmp_path / "other"),
        "--compare",
        f"[{first}]",
    )
    assert code == 0, stderr
    table = (tmp_path / "other" / "results.md").read_text()
    header, _, piqa, boolq = table.splitlines()[:4]
    assert header == (
        "| task | shots | metric | tiny-pythia (5 layers) | tiny-llama (6 layers) | chance |"
        " OpenLLaMA-3B (paper) † | Inheritune 1.5B (paper) † |"
    )
    ours = json.loads((tmp_path / "other" / "results.json").read_text())["results"]["piqa_offline"]
    theirs = json.loads((first / "results.json").read_text())["results"]["piqa_offline"]
    assert piqa == (
        f"| piqa_offline | 0 | acc | {100 * ours['acc,none']:.2f} ± {100 * ours['acc_stderr,none']:.2f}"
        f" | {100 * theirs['acc,none']:.2f} ± {100 * theirs['acc_stderr,none']:.2f} | 50.00 | 74.97 | 56.47 |"
    )
    assert boolq.split(" | ")[5] == "62.20"  # majority class: 62.2% of BoolQ's validation answers are "yes"
    assert table in stdout


def test_models_sharing_a_name_are_told_apart_by_their_paths():
    models = [
        {"name": "m-10L", "n_layer": 10, "checkpoint_dir": "/runs/inherited/final"},
        {"name": "m-10L", "n_layer": 10, "checkpoint_dir": "/runs/random/final"},
        {"name": "m", "n_layer": 30, "checkpoint_dir": "/checkpoints/m"},
    ]
    assert column_labels(models) == [
        "m-10L (10 layers) inherited/final",
        "m-10L (10 layers) random/final",
        "m (30 layers)",
    ]


def test_winogrande_offline_is_lm_evals_winogrande(offline_tasks):
    """Our Jinja task renders every WinoGrande item as lm-eval's own winogrande (its preprocess_winogrande.py):
    the same two contexts, the same scored rest of the sentence, the same right option; lm-eval sees it as a
    multiple-input task, as it sees its own."""
    import importlib.util
    from pathlib import Path

    import lm_eval
    from lm_eval.tasks import TaskManager, get_task_dict

    path = Path(lm_eval.__file__).parent / "tasks" / "winogrande" / "preprocess_winogrande.py"
    spec = importlib.util.spec_from_file_location("preprocess_winogrande", path)
    theirs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(theirs)
    task = get_task_dict(["winogrande_offline"], TaskManager(include_path=str(offline_tasks)))["winogrande_offline"]
    docs = list(task.validation_docs())
    assert len(docs) == 1267 and task.multiple_input == 2
    for doc in docs:
        assert task.doc_to_text(doc) == theirs.doc_to_text(doc)
        assert task.doc_to_choice(doc) == theirs.doc_to_choice(doc)
        assert task.doc_to_target(doc) == theirs.doc_to_target(doc)


def test_low_data_suite_and_shots():
    shots = task_shots("low_data", None)
    assert shots == SUITES["low_data"] and len(shots) == 10 and shots["mmlu"] == 5 and shots["wsc"] == 0
    assert task_shots("low_data", 3) == {task: 3 for task in SUITES["low_data"]}
    assert task_shots("piqa,arc_easy", None) == {"piqa": None, "arc_easy": None}


def test_loglikelihoods_equal_a_direct_computation(tiny_references):
    """Continuation scores and rolling (perplexity) scores against a plain forward pass and log-softmax."""
    from lm_eval.api.instance import Instance

    reference = tiny_references["gemma-2"]  # soft-capped logits: the head must be applied as litgpt does
    lm = LitGPTLM(reference, batch_size=3)
    model = GPT(Config.from_file(reference / "model_config.yaml"))
    model.load_state_dict(torch.load(reference / "lit_model.pth", weights_only=True))
    model.eval()

    def direct(tokens: list[int], start: int) -> float:
        with torch.no_grad():
            log_probs = model(torch.tensor([tokens[:-1]])).log_softmax(-1)[0]
        return sum(log_probs[p - 1, tokens[p]].item() for p in range(start, len(tokens)))

    pairs = [("the early layers", " carry"), ("a small model can", " inherit the potent blocks"), ("lazy", " layers")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    for (context, continuation), (score, _) in zip(pairs, lm.loglikelihood(requests)):
        context_tokens = lm.tok_encode(context)
        whole = lm.tok_encode(context + continuation)
        assert score == pytest.approx(direct(whole, len(context_tokens)), abs=1e-4)

    text = "the early layers of a deep model carry most of its knowledge"
    [rolling] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert rolling == pytest.approx(direct([lm.prefix_token_id] + lm.tok_encode(text), 1), abs=1e-4)

    # several texts in one call (windows batched together) score as each text alone; a short window makes several
    short = LitGPTLM(reference, batch_size=4, max_length=6)
    texts = [text, "lazy layers", "a small model can inherit the potent blocks of a large one and train briefly"]
    together = short.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    )
    for t, score in zip(texts, together):
        assert score == pytest.approx(
            short.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), 0)])[0], abs=1e-5
        )
    assert together[0] != pytest.approx(rolling, abs=1e-3)  # 6-token windows see less context than one whole window


@pytest.mark.parametrize("style", ["llama-gqa", "gpt-neox", "gemma-2"])
def test_choices_sharing_a_context_share_one_row(tiny_references, style):
    """The choices of an item go into one row, a token tree (gemma-2, with sliding-window layers: one plain row per
    distinct input); every score and greedy flag equals a plain forward pass over the request's own input."""
    reference = tiny_references[style]
    lm = LitGPTLM(reference, batch_size=2, max_length=12)
    model = GPT(Config.from_file(reference / "model_config.yaml"))
    model.load_state_dict(torch.load(reference / "lit_model.pth", weights_only=True))
    model.eval()
    requests = [
        (None, [5, 6, 7], [8]),  # one-token choices of one context: one input
        (None, [5, 6, 7], [11]),
        (None, [5, 6, 7], [8, 4, 9]),  # a longer choice of the same context
        (None, [5, 6, 7], [12, 4]),
        (None, [5, 6], [7, 12]),  # another context
        (None, [9], [10, 2]),
        (None, list(range(20, 30)), [3, 4, 5, 6]),  # cut to the last 13 tokens: input [21..29, 3, 4, 5]
        (None, [], list(range(40, 56))),  # a continuation longer than the window: its last 12 tokens are scored
        (None, [*range(60, 68), 1], [4]),  # two items after the same eight tokens (as after the same few shots)
        (None, [*range(60, 68), 2], [5, 6]),
    ]
    rows = []
    handle = lm.model.transformer.wte.register_forward_hook(lambda module, args, out: rows.append(out.shape[0]))
    scores = lm._loglikelihood_tokens(requests)
    handle.remove()
    trees = style != "gemma-2"
    # trees: the four choices of [5, 6, 7] and the input [5, 6, 7] of another context in one tree (6 tokens), the two
    # items after [60..67] in another (11); with the two 12-token inputs, batches of 2 rows 12 and 11 wide, where the
    # 2-token tree of [9, 10] fills the room beside the 6-token one: 4 rows. Plain rows: one per distinct input
    assert sum(rows) == (4 if trees else 8)
    for (_, context, continuation), (score, greedy) in zip(requests, scores):
        tokens = (context + continuation)[-13:]
        n = min(len(continuation), len(tokens) - 1)
        with torch.no_grad():
            log_probs = model(torch.tensor([tokens[:-1]])).log_softmax(-1)[0, -n:]
        target = torch.tensor(tokens[-n:])
        assert score == pytest.approx(log_probs.gather(1, target[:, None]).sum().item(), abs=1e-5)
        assert greedy == bool((log_probs.argmax(-1) == target).all())


def test_batches_fill_the_padding_with_whole_trees():
    """Longest trees first; beside a row shorter than its batch's first, the longest trees that fit the room."""
    from litgpt_inheritune.lm_eval_model import TokenTree, batches

    lengths = [3, 10, 9, 1, 4, 9, 3]
    trees = [TokenTree(tokens=[7] * n) for n in lengths]

    def shape(result):  # each row as the lengths of its trees, checking that each tree starts where the last ended
        rows = []
        for batch in result:
            rows.append([])
            for row in batch:
                assert [offset for _, offset in row] == [sum(lengths[t] for t, _ in row[:k]) for k in range(len(row))]
                rows[-1].append([lengths[t] for t, _ in row])
        return rows

    filled = batches(trees, batch_size=2)
    assert shape(filled) == [[[10], [9, 1]], [[9], [4, 3]], [[3]]]
    assert sorted(t for batch in filled for row in batch for t, _ in row) == list(range(len(lengths)))
    assert shape(batches(trees, batch_size=2, fill=False)) == [[[10], [9]], [[9], [4]], [[3], [3]], [[1]]]


def test_tasks_in_the_include_path_skip_lm_evals_own_index(offline_tasks):
    """lm-eval's ~10,000 task YAMLs are indexed only when a task asked for is not in the given folders."""
    from litgpt_inheritune.evaluate import indexed_tasks

    local = indexed_tasks((str(offline_tasks),), (), ("piqa_offline", "boolq_offline"))
    assert "piqa_offline" in local.all_tasks and "hellaswag" not in local.all_tasks
    both = indexed_tasks((str(offline_tasks),), (), ("piqa_offline", "hellaswag"))
    assert {"piqa_offline", "hellaswag"} <= set(both.all_tasks)


def test_generate_until_is_greedy_and_stops(tiny_references):
    from lm_eval.api.instance import Instance

    reference = tiny_references["llama-gqa"]
    lm = LitGPTLM(reference)
    prompt = lm.tok_encode("the early layers")
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(6):
            tokens.append(int(lm.model(torch.tensor([tokens]))[0, -1].argmax()))
    expected = lm.tok_decode(tokens[len(prompt) :])
    [text] = lm.generate_until(
        [Instance("generate_until", {}, ("the early layers", {"until": [], "max_gen_toks": 6}), 0)]
    )
    assert text == expected
    stop = expected[2:4]
    [cut] = lm.generate_until(
        [Instance("generate_until", {}, ("the early layers", {"until": [stop], "max_gen_toks": 6}), 0)]
    )
    assert cut == expected.split(stop)[0]


def test_bad_inputs(tiny_references, tmp_path):
    with pytest.raises(SystemExit, match="unknown task 'piqq'; closest: .*piqa"):
        evaluate(tiny_references["llama-gqa"], tasks="piqq", out_dir=tmp_path / "e")
    with pytest.raises(SystemExit, match=r"is missing the files: \['lit_model.pth'"):
        evaluate(tmp_path, tasks="piqa", out_dir=tmp_path / "e")
    code, _, stderr = run_in_process("evaluate", str(tmp_path / "nowhere"), "--tasks", "piqa")
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: checkpoint_dir")
    assert not (tmp_path / "e").exists()


def test_bf16_checkpoint_on_cpu_scores_in_float32_and_logs_samples(tmp_path, offline_tasks):
    """A bf16 checkpoint on a CPU is scored in float32 by default (the same per-item log-likelihoods as --dtype
    float32, not those of bf16); --log_samples writes lm-eval's per-item records; --batch_size auto finds a size."""
    from conftest import make_reference

    checkpoint = make_reference(tmp_path / "bf16")
    weights = torch.load(checkpoint / "lit_model.pth", weights_only=True)
    torch.save({k: v.bfloat16() for k, v in weights.items()}, checkpoint / "lit_model.pth")

    def item_loglikelihoods(out_dir, **kwargs):
        results = evaluate(
            checkpoint,
            tasks="piqa_offline",
            include_path=offline_tasks,
            limit=3,
            out_dir=out_dir,
            paper=False,
            log_samples=True,
            device="cpu",
            **kwargs,
        )
        (samples,) = out_dir.glob("samples_piqa_offline_*.jsonl")
        records = [json.loads(line) for line in samples.read_text().splitlines()]
        assert [r["doc_id"] for r in records] == [0, 1, 2] and {"arguments", "resps", "acc"} <= set(records[0])
        return results["model"], [float(resp[0][0]) for r in records for resp in r["resps"]]

    default_model, default = item_loglikelihoods(tmp_path / "default", batch_size="auto")
    assert default_model["dtype"] == "float32" and default_model["batch_size"] == 64
    assert default == item_loglikelihoods(tmp_path / "float32", dtype="float32")[1]
    assert default != item_loglikelihoods(tmp_path / "bfloat16", dtype="bfloat16")[1]
    with pytest.raises(SystemExit, match="--batch_size 0 must be a positive number or auto"):
        evaluate(checkpoint, tasks="piqa_offline", include_path=offline_tasks, batch_size=0, out_dir=tmp_path / "bad")


def test_the_installed_package_carries_evaluates_data_files_and_no_test_material():
    """The offline task YAMLs, suites, chance levels and the paper's table go into the wheel (package data that
    `evaluate` reads); materials.py, the demo's and tests' fetching of models and text, does not."""
    from importlib.metadata import files
    from pathlib import Path

    installed = {str(path) for path in files("litgpt-inheritune")}
    tasks = Path(__file__).resolve().parents[1] / "litgpt_inheritune" / "tasks"
    shipped = {f"litgpt_inheritune/tasks/{path.name}" for path in tasks.glob("*.yaml")}
    assert len(shipped) == 8 and shipped <= installed
    assert not [path for path in installed if "materials" in path]
