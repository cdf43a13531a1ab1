"""`litgpt inheritune card`: the Hugging Face model card (README.md) of a folder written by `export`.

Everything in the card comes from files the other commands wrote: provenance.json (``init``: the reference, the
blocks kept and how they were chosen; ``pretrain``: steps, the checkpoint it trained), hyperparameters.yaml
(``pretrain``: data, budget, precision, distillation), the prepared data sample's manifest (its content key and
token count), grow.json (``grow``'s rounds), results.json (``evaluate``, with ``--reference`` the reference's too),
loss.png (``pretrain``) and max_rank.png (``analyze``). ``export`` gathers these into
``inheritune_lineage.json`` beside the weights, so the card can be written again later (after more evaluation)
from that file alone.
"""

import importlib
import json
import shutil
import sys
from pathlib import Path
from typing import Optional

import yaml
from litgpt.config import Config

from litgpt_inheritune.errors import fail
from litgpt_inheritune.evaluate import CHANCE, raw_score, results_table, task_entry
from litgpt_inheritune.files import write_text_atomic
from litgpt_inheritune.inherit import BLOCK_PARTS

LINEAGE_FILE = "inheritune_lineage.json"
LOSS_PLOT, RANK_PLOT = "loss.png", "max_rank.png"
# Licenses of reference models, by the start of their Hugging Face id, where no README on disk states one
# (the licenses their model pages state; Qwen2.5-3B and -72B have their own licenses and are left out).
KNOWN_LICENSES = {
    "HuggingFaceTB/SmolLM": "apache-2.0",
    "openlm-research/open_llama": "apache-2.0",
    "EleutherAI/pythia": "apache-2.0",
    "TinyLlama/": "apache-2.0",
    "mistralai/Mistral-7B": "apache-2.0",
    "meta-llama/Llama-2-": "llama2",
    "meta-llama/Meta-Llama-3-": "llama3",
    "meta-llama/Llama-3.1-": "llama3.1",
    "meta-llama/Llama-3.2-": "llama3.2",
    "meta-llama/Llama-3.3-": "llama3.3",
    "google/gemma-": "gemma",
    "microsoft/phi-2": "mit",
    "microsoft/Phi-3": "mit",
    "Qwen/Qwen2.5-0.5B": "apache-2.0",
    "Qwen/Qwen2.5-1.5B": "apache-2.0",
    "Qwen/Qwen2.5-7B": "apache-2.0",
    "Qwen/Qwen3-": "apache-2.0",
    "allenai/OLMo-2-": "apache-2.0",
}
# The Hugging Face datasets that the offline tasks (`evaluate --tasks offline`, winogrande_offline) read from local
# copies: (id, config)
OFFLINE_DATASETS = {
    "piqa_offline": ("ybisk/piqa", None),
    "arc_easy_offline": ("allenai/ai2_arc", "ARC-Easy"),
    "sciq_offline": ("allenai/sciq", None),
    "boolq_offline": ("google/boolq", None),
    "winogrande_offline": ("allenai/winogrande", "winogrande_xl"),
}
# Data folders whose contents are a Hugging Face dataset, by folder name
KNOWN_DATASETS = {
    "RedPajama-Data-1T-Sample": "togethercomputer/RedPajama-Data-1T-Sample",
    "RedPajama-Data-1T": "togethercomputer/RedPajama-Data-1T",
}


def main(
    hf_dir: Path,
    eval_dir: Optional[Path] = None,
    analysis: Optional[Path] = None,
    repo_id: Optional[str] = None,
) -> Path:
    """Write the model card (README.md) of a folder written by `litgpt inheritune export` again, e.g. after more
    evaluation. Only README.md, inheritune_lineage.json and the plots change; the weights, config and tokenizer are
    left alone.

    Arguments:
        hf_dir: A folder written by ``litgpt inheritune export``.
        eval_dir: An ``evaluate`` out_dir (results.json) whose scores the card shows. Default: the one the folder's
            card was written with, read again.
        analysis: An ``analyze`` out_dir of the reference, for the attention-rank plot. Default: the one recorded.
        repo_id: The Hugging Face repository (ORG/NAME) the folder is or will be on, for the loading snippets.
            Default: the one recorded (``export --push_to_hub``), else the folder's path.
    """
    hf_dir = Path(hf_dir)
    record_file = hf_dir / LINEAGE_FILE
    if not record_file.is_file():
        fail(f"{hf_dir} holds no {LINEAGE_FILE}; give a folder written by `litgpt inheritune export`")
    record = json.loads(record_file.read_text())
    check_eval_dir(eval_dir)
    check_analysis(analysis)
    if repo_id is not None:
        check_repo_id(repo_id, "--repo_id")
    lineage = record["lineage"]
    if analysis is not None:
        lineage["analysis"] = str(Path(analysis).resolve())
    evaluation = read_evaluation(eval_dir) or stored_evaluation(record)
    check_evaluated_model(evaluation, lineage, eval_dir)
    write_card(hf_dir, lineage, evaluation, repo_id or record.get("repo_id"), record.get("model_path", str(hf_dir)))
    print(f"Wrote the model card {hf_dir / 'README.md'}", file=sys.stderr)
    return hf_dir / "README.md"


def card_inputs(
    checkpoint_dir: Path, eval_dir: Optional[Path], analysis: Optional[Path], repo_id: Optional[str]
) -> dict:
    """What export's card is made from, checked and read before anything is written: the checkpoint's lineage,
    the evaluation and the repository it will be pushed to."""
    check_eval_dir(eval_dir)
    check_analysis(analysis)
    if repo_id is not None:
        check_repo_id(repo_id)
    lineage, evaluation = gather_lineage(checkpoint_dir, analysis), read_evaluation(eval_dir)
    check_evaluated_model(evaluation, lineage, eval_dir)
    return {"lineage": lineage, "evaluation": evaluation, "repo_id": repo_id}


def write_export_card(out_dir: Path, inputs: dict, config: Config, model_path: str) -> None:
    """The card, its record and plots, and LitGPT's model_config.yaml (which the card's LitGPT snippet converts the
    folder back with), into export's folder."""
    from litgpt.utils import save_config

    save_config(config, out_dir)
    write_card(out_dir, inputs["lineage"], inputs["evaluation"], inputs["repo_id"], model_path)


def check_repo_id(repo_id: str, flag: str = "--push_to_hub") -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        fail(f"{flag} {repo_id} is not a Hugging Face repository id ({error}); give ORG/NAME")
    if repo_id.count("/") != 1:
        fail(f"{flag} {repo_id} is not a Hugging Face repository id; give ORG/NAME")


def check_eval_dir(eval_dir: Optional[Path]) -> None:
    if eval_dir is not None and not (Path(eval_dir) / "results.json").is_file():
        fail(f"--eval_dir {eval_dir} holds no results.json; give the out_dir of `litgpt inheritune evaluate`")


def check_evaluated_model(evaluation: Optional[dict], lineage: dict, eval_dir: Optional[Path]) -> None:
    """Refuses scores of another model (the reference's own folder, say) for this card."""
    evaluated = ((evaluation or {}).get("results", {}).get("model") or {}).get("name")
    if evaluated is not None and evaluated != lineage["name"]:
        fail(
            f"--eval_dir {eval_dir or evaluation['eval_dir']} holds the scores of {evaluated}, not of this model"
            f" ({lineage['name']}); give the evaluate out_dir of the exported checkpoint"
        )


def check_analysis(analysis: Optional[Path]) -> None:
    if analysis is not None and not (Path(analysis) / "attention.json").is_file():
        fail(f"--analysis {analysis} holds no attention.json; give the out_dir of `litgpt inheritune analyze`")


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def parameters(config: Config) -> int:
    import torch
    from litgpt.model import GPT

    with torch.device("meta"):
        return sum(p.numel() for p in GPT(config).parameters())


# ---------------------------------------------------------------------------------------------------------------
# Lineage: what the files beside a checkpoint say about where it came from


def gather_lineage(checkpoint_dir: Path, analysis: Optional[Path] = None) -> dict:
    """The lineage of a LitGPT checkpoint, from the provenance.json chain (pretrain -> ... -> init -> reference),
    the hyperparameters.yaml of every training run, the prepared data's manifest and grow's report."""
    checkpoint_dir = Path(checkpoint_dir).resolve()
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    lineage = {
        "checkpoint": str(checkpoint_dir),
        "name": config.name,
        "n_layer": config.n_layer,
        "parameters": parameters(config),
        "training": [],
        "inherited": None,
        "reference": None,
        "grow": grow_rounds(checkpoint_dir),
        "analysis": None if analysis is None else str(Path(analysis).resolve()),
        "versions": None,
    }
    current, seen = checkpoint_dir, set()
    provenance = read_json(current / "provenance.json")
    lineage["versions"] = (provenance or {}).get("versions")
    while provenance and provenance.get("command") == "litgpt inheritune pretrain" and current not in seen:
        seen.add(current)
        lineage["training"].insert(0, training_run(current, provenance))
        current = Path(provenance["checkpoint_dir"])
        provenance = read_json(current / "provenance.json")
    if provenance and provenance.get("command") == "litgpt inheritune init":
        lineage["inherited"] = {
            "checkpoint": str(current),
            **{
                key: provenance.get(key)
                for key in ("layers", "inherited", "selection", "parts", "half_width", "grown_from")
            },
        }
        lineage["reference"] = reference_record(provenance["reference"])
        selection = provenance.get("selection") or {}
        if lineage["analysis"] is None and selection.get("analysis"):
            lineage["analysis"] = str(Path(selection["analysis"]).parent)
    if lineage["analysis"] is None and lineage["grow"] and lineage["grow"].get("analysis"):
        lineage["analysis"] = lineage["grow"]["analysis"]
    return lineage


def training_run(checkpoint: Path, provenance: dict) -> dict:
    """One `pretrain` run, from its checkpoint's provenance.json and hyperparameters.yaml."""
    settings_file = checkpoint / "hyperparameters.yaml"
    settings = yaml.safe_load(settings_file.read_text()) if settings_file.is_file() else {}
    train = settings.get("train") or {}
    config = Config.from_file(checkpoint / "model_config.yaml")
    seq_len = min(config.block_size, train.get("max_seq_length") or config.block_size)
    tokens_per_step = train["global_batch_size"] * seq_len if train.get("global_batch_size") else None
    steps = provenance["step"]
    run = {
        "checkpoint": str(checkpoint),
        "steps": steps,
        "tokens": None if tokens_per_step is None else steps * tokens_per_step,
        "global_batch_size": train.get("global_batch_size"),
        "seq_len": seq_len,
        "initialize": settings.get("initialize", "checkpoint"),
        "precision": settings.get("precision"),
        "optimizer": settings.get("optimizer"),
        "devices": settings.get("devices"),
        "data": settings.get("data"),
        "sample": data_sample(settings.get("data"), checkpoint),
        "distill": (settings.get("distill") or {}) if (settings.get("distill") or {}).get("teacher_dir") else None,
        "hyperparameters": settings_file.read_text() if settings_file.is_file() else None,
        "val_loss": last_val_loss(checkpoint.parent, steps),
        "loss_plot": str(checkpoint.parent / LOSS_PLOT) if (checkpoint.parent / LOSS_PLOT).is_file() else None,
    }
    return run


def last_val_loss(run_dir: Path, steps: int) -> Optional[float]:
    """The last validation loss in a pretrain run's CSV logs up to optimizer step ``steps`` (a step checkpoint's)."""
    import csv

    losses = []
    for log in sorted((run_dir / "logs" / "csv").glob("version_*/metrics.csv")):
        with open(log) as f:
            losses += [
                (float(r["step"]), float(r["val_loss"]))
                for r in csv.DictReader(f)
                if r.get("val_loss") and float(r["step"]) <= steps
            ]
    return max(losses)[1] if losses else None


def data_sample(data: Optional[dict], checkpoint: Path) -> Optional[dict]:
    """The prepared sample a RedPajama-style data module trained on: its content key (the hash of the files' names
    and sizes, the tokenizer, the budgets, seed and mixture) and its manifest's token counts. None when the data
    module is another kind or its files are gone."""
    if not isinstance(data, dict) or "class_path" not in data:
        return None
    from litgpt.tokenizer import Tokenizer

    from litgpt_inheritune.redpajama import RedPajama

    module_name, _, class_name = data["class_path"].rpartition(".")
    try:
        data_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        return None
    if not (isinstance(data_class, type) and issubclass(data_class, RedPajama)):
        return None
    module = data_class(**data.get("init_args", {}))
    if not module.data_dir.is_dir():  # never download: RedPajamaSample fetches a missing folder
        return None
    module.connect(tokenizer=Tokenizer(checkpoint))
    if not module.is_prepared():
        return None
    manifest = module.manifest()
    return {
        "content_key": module.prepared_dir.name,
        "prepared_dir": str(module.prepared_dir.resolve()),
        "data_dir": str(module.data_dir.resolve()),
        "files": manifest["files"],
        "train_tokens": manifest["train"]["tokens"],
        "train_documents": manifest["train"].get("documents"),
        "val_tokens": manifest["val"]["tokens"],
    }


def reference_record(reference: dict) -> dict:
    """The reference named in init's provenance: its size, Hugging Face id and license where the disk tells them."""
    path = Path(reference["path"])
    config = None
    if (path / "model_config.yaml").is_file():
        config = Config.from_file(path / "model_config.yaml")
    else:
        try:
            config = Config.from_name(reference["name"])
        except ValueError:
            pass
    hub_id = hub_id_of(path, config)
    license, license_source = reference_license(path, hub_id)
    return {
        "name": reference["name"],
        "path": str(path),
        "n_layer": reference["n_layer"],
        "checksum": reference.get("checksum"),
        "parameters": None if config is None else parameters(config),
        "hub_id": hub_id,
        "license": license,
        "license_source": license_source,
    }


def hub_id_of(path: Path, config: Optional[Config]) -> Optional[str]:
    """ORG/NAME from litgpt's checkpoint layout (checkpoints/ORG/NAME, as `litgpt download` writes it), else from
    the litgpt config's hf_config."""
    if len(path.parts) >= 3 and path.parts[-3] == "checkpoints":
        return f"{path.parts[-2]}/{path.parts[-1]}"
    hf = (config.hf_config if config is not None else None) or {}
    if hf.get("org") and hf.get("name") and hf["org"] != "litgpt-inheritune":  # ours: trained here, not on the Hub
        return f"{hf['org']}/{hf['name']}"
    return None


def reference_license(path: Path, hub_id: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """The reference's license and where it was read: its README.md's metadata, else the table of known models."""
    if (path / "README.md").is_file():
        from huggingface_hub import ModelCard

        try:
            license = ModelCard.load(path / "README.md").data.license
        except Exception:
            license = None
        if license:
            return license, f"the reference's README.md ({path / 'README.md'})"
    for prefix, license in KNOWN_LICENSES.items():
        if hub_id and hub_id.startswith(prefix):
            return license, f"the license of {hub_id} on its model page"
    return None, None


def grow_rounds(checkpoint_dir: Path) -> Optional[dict]:
    """grow's report when the checkpoint is one of its rounds (out_dir/<n>L/train/final)."""
    for parent in list(checkpoint_dir.parents)[:4]:
        report = read_json(parent / "grow.json")
        if not report:
            continue
        rounds = report.get("rounds", [])
        if any(Path(entry["checkpoint"]).resolve() == checkpoint_dir for entry in rounds):
            analysis = (report.get("settings") or {}).get("analysis") or {}
            return {
                "report": str(parent / "grow.json"),
                "reference_val_loss": report["reference"]["val_loss"],
                "tolerance": report.get("tolerance"),
                "rounds": [
                    {key: entry.get(key) for key in ("n_layers", "val_loss", "matched", "steps", "tokens")}
                    for entry in rounds
                ],
                "analysis": analysis.get("path"),
            }
    return None


# ---------------------------------------------------------------------------------------------------------------
# Evaluation: evaluate's results.json, and the reference's on the same items


def read_evaluation(eval_dir: Optional[Path]) -> Optional[dict]:
    """results.json of an evaluate out_dir and, where it was run with --reference, the reference's."""
    if eval_dir is None or not (Path(eval_dir) / "results.json").is_file():
        return None
    eval_dir = Path(eval_dir)
    results = json.loads((eval_dir / "results.json").read_text())
    reference_dir = results.get("reference_eval_dir")
    reference = read_json(Path(reference_dir) / "results.json") if reference_dir else None
    return {"eval_dir": str(eval_dir.resolve()), "results": results, "reference": reference}


def stored_evaluation(record: dict) -> Optional[dict]:
    """The evaluation a card was written with: read again from its folder, or as stored when that folder is gone."""
    stored = record.get("evaluation")
    if not stored:
        return None
    return read_evaluation(Path(stored["eval_dir"])) or stored


def eval_tasks(results: dict) -> list[str]:
    """The tasks evaluate was asked for (its results also list the subtasks of groups such as MMLU)."""
    return results.get("tasks") or list(results.get("n-shot") or results.get("results", {}))


def stderr_args(results: dict, task: str, metric: str) -> Optional[dict]:
    """lm-eval's standard error of a score, as the metric's arguments: the Hub's model-index has no field of its own
    for it."""
    stderr = (task_entry(results, task) or {}).get(f"{metric}_stderr,none")
    return {"stderr": stderr} if isinstance(stderr, (int, float)) else None


def eval_results(evaluation: dict) -> list:
    """huggingface_hub's EvalResult per task: the model-index the Hub shows as an evaluation table."""
    from huggingface_hub import EvalResult

    results = evaluation["results"]
    entries = []
    for task in eval_tasks(results):
        metric, value = raw_score(results, task)
        if metric is None:
            continue
        config = (results.get("configs") or {}).get(task, {})
        dataset, dataset_config = OFFLINE_DATASETS.get(task, (config.get("dataset_path"), config.get("dataset_name")))
        samples = (results.get("n-samples") or {}).get(task) or {}
        entries.append(
            EvalResult(
                task_type="text-generation",
                task_name="Text Generation",
                dataset_type=dataset or task,
                dataset_name=task,
                dataset_config=dataset_config,
                dataset_split=config.get("test_split") or config.get("validation_split"),
                dataset_args={
                    "num_few_shot": (results.get("n-shot") or {}).get(task),
                    "items": samples.get("effective"),
                    "items_in_split": samples.get("original"),
                },
                metric_type=metric,
                metric_value=value,
                metric_name=f"{metric} (lm-evaluation-harness)",
                metric_args=stderr_args(results, task, metric),
            )
        )
    return entries


# ---------------------------------------------------------------------------------------------------------------
# The card


def write_card(
    out_dir: Path, lineage: dict, evaluation: Optional[dict], repo_id: Optional[str], model_path: str
) -> None:
    """README.md (the card), inheritune_lineage.json (what it was made from) and the plots, into out_dir."""
    from huggingface_hub import ModelCard, ModelCardData

    hf_config = read_json(out_dir / "config.json") or {}
    family = hf_config.get("model_type")
    plots = copy_plots(out_dir, lineage)
    reference = lineage["reference"] or {}
    inherited_weights = lineage["inherited"] is not None and all(
        run["initialize"] == "checkpoint" for run in lineage["training"]
    )
    license = reference.get("license") or "other"
    datasets = sorted({d for run in lineage["training"] if (d := known_dataset(run["data"]))})
    name = repo_id.split("/")[-1] if repo_id else lineage["name"]
    data = ModelCardData(
        base_model=reference.get("hub_id") if inherited_weights else None,
        license=license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=[tag for tag in ("inheritune", "litgpt", family) if tag],
        datasets=datasets or None,
        model_name=name,
        eval_results=(eval_results(evaluation) or None) if evaluation else None,
    )
    body = card_body(name, lineage, evaluation, repo_id, model_path, plots, license, family)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    write_text_atomic(out_dir / "README.md", str(card))
    record = {"lineage": lineage, "evaluation": evaluation, "repo_id": repo_id, "model_path": model_path}
    write_text_atomic(out_dir / LINEAGE_FILE, json.dumps(record, indent=2) + "\n")


def copy_plots(out_dir: Path, lineage: dict) -> dict:
    """The loss curve of the last training run and the reference's attention-rank plot, copied beside the card
    (kept from an earlier card when their sources are gone)."""
    sources = {
        LOSS_PLOT: lineage["training"][-1]["loss_plot"] if lineage["training"] else None,
        RANK_PLOT: str(Path(lineage["analysis"]) / RANK_PLOT) if lineage["analysis"] else None,
    }
    for name, source in sources.items():
        if source and Path(source).is_file() and Path(source).resolve() != (out_dir / name).resolve():
            shutil.copyfile(source, out_dir / name)
    return {name: (out_dir / name).is_file() for name in sources}


def known_dataset(data) -> Optional[str]:
    """A Hugging Face dataset id for a data module whose folder is one (RedPajama-Data-1T and its sample)."""
    if not isinstance(data, dict):
        return None
    data_dir = (data.get("init_args") or {}).get("data_dir")
    return KNOWN_DATASETS.get(Path(data_dir).name) if data_dir else None


def millions(n: Optional[int]) -> str:
    if n is None:
        return "unknown"
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"


def card_body(
    name: str,
    lineage: dict,
    evaluation: Optional[dict],
    repo_id: Optional[str],
    model_path: str,
    plots: dict,
    license: str,
    family: Optional[str],
) -> str:
    reference = lineage["reference"]
    tokens = sum(run["tokens"] or 0 for run in lineage["training"])
    lines = [f"# {name}", ""]
    if reference:
        lines.append(
            f"A {lineage['n_layer']}-block base language model ({millions(lineage['parameters'])} parameters) derived"
            f" with [Inheritune](https://github.com/sanyalsunny111/LLM-Inheritune) from {reference['name']}"
            f" ({reference['n_layer']} blocks, {millions(reference['parameters'])} parameters): it inherits"
            f" {len(lineage['inherited']['layers'])} of the reference's blocks and "
            + (f"was trained on {tokens:,} tokens." if lineage["training"] else "was not trained after that.")
        )
    else:
        lines.append(
            f"A {lineage['n_layer']}-block language model ({millions(lineage['parameters'])} parameters); its"
            " checkpoint records no `litgpt inheritune init`, so the card names no reference."
        )
    lines += [
        "This card was written by `litgpt inheritune export` / `card` from the files the commands wrote"
        " (provenance.json, hyperparameters.yaml, results.json); the full record is in"
        f" [{LINEAGE_FILE}]({LINEAGE_FILE}).",
        "",
        "## Lineage",
        "",
        *lineage_table(lineage, family),
        "",
    ]
    for index, run in enumerate(lineage["training"]):
        if run["hyperparameters"]:
            lines += [
                f"<details><summary>Training settings{f' (run {index + 1})' if len(lineage['training']) > 1 else ''}:"
                f" hyperparameters.yaml, usable as <code>litgpt inheritune pretrain --config</code></summary>",
                "",
                "```yaml",
                run["hyperparameters"].rstrip(),
                "```",
                "",
                "</details>",
                "",
            ]
    lines += results_section(evaluation)
    if plots[LOSS_PLOT]:
        lines += ["## Training loss", "", f"![training and validation loss]({LOSS_PLOT})", ""]
    if plots[RANK_PLOT]:
        lines += [
            "## Attention rank of the reference",
            "",
            f"The largest attention rank per layer of the reference (`litgpt inheritune analyze` on"
            f" {lineage['analysis']}): layers whose attention has collapsed to rank ~1 are lazy.",
            "",
            f"![MaxRank per layer]({RANK_PLOT})",
            "",
        ]
    lines += usage_section(repo_id, model_path, lineage["name"])
    lines += limits_section(lineage, evaluation, license, tokens)
    return "\n".join(lines) + "\n"


def lineage_table(lineage: dict, family: Optional[str]) -> list[str]:
    rows = []
    reference, inherited = lineage["reference"], lineage["inherited"]
    if reference:
        hub = f" ([{reference['hub_id']}](https://huggingface.co/{reference['hub_id']}))" if reference["hub_id"] else ""
        rows.append(
            (
                "reference",
                f"{reference['name']}{hub}: {reference['n_layer']} blocks,"
                f" {millions(reference['parameters'])} parameters (checkpoint {reference['path']},"
                f" {reference['checksum']})",
            )
        )
    share = (
        f" ({lineage['parameters'] / reference['parameters']:.0%} of the reference)"
        if reference and reference["parameters"]
        else ""
    )
    rows.append(
        (
            "this model",
            f"{lineage['name']}: {lineage['n_layer']} blocks, {millions(lineage['parameters'])} parameters{share}"
            + (f", `{family}` architecture in transformers" if family else ""),
        )
    )
    if inherited:
        rows.append(("blocks kept", f"{inherited['layers']} of the reference: {how_chosen(inherited)}"))
        rows.append(("inherited", ", ".join(inherited.get("inherited") or [])))
        if inherited.get("grown_from"):
            rows.append(("grown from", f"the trained model {inherited['grown_from']} plus the reference's next blocks"))
    for index, run in enumerate(lineage["training"]):
        prefix = f"run {index + 1}: " if len(lineage["training"]) > 1 else ""
        rows += [
            (
                f"{prefix}training",
                f"{run['steps']:,} optimizer steps of {run['global_batch_size']} sequences x {run['seq_len']} tokens ="
                f" {run['tokens']:,} tokens"
                + (
                    " from a random initialisation (the architecture only; no inherited weights)"
                    if run["initialize"] == "random"
                    else ", starting from the inherited weights"
                )
                if run["tokens"] is not None
                else f"{run['steps']:,} optimizer steps",
            ),
            (f"{prefix}data", data_text(run)),
            (
                f"{prefix}precision",
                run["precision"] or "pretrain's default for the device (32-true on a CPU, litgpt's choice on a GPU)",
            ),
            (f"{prefix}optimizer", optimizer_text(run["optimizer"])),
        ]
        if run["distill"]:
            distill = run["distill"]
            rows.append(
                (
                    f"{prefix}distillation",
                    f"teacher {distill['teacher_dir']}, alpha {distill.get('alpha')}, temperature"
                    f" {distill.get('temperature')}",
                )
            )
        if run["val_loss"] is not None:
            rows.append((f"{prefix}final validation loss", f"{run['val_loss']:.4f}"))
    if lineage["grow"]:
        grow = lineage["grow"]
        rounds = "; ".join(
            f"{entry['n_layers']} blocks: {entry['val_loss']:.4f}{' (matched)' if entry['matched'] else ''}"
            for entry in grow["rounds"]
        )
        rows.append(
            (
                "grow rounds",
                f"validation loss per round (reference {grow['reference_val_loss']:.4f}, tolerance"
                f" {grow['tolerance']}): {rounds} ({grow['report']})",
            )
        )
    if lineage["versions"]:
        rows.append(("made with", ", ".join(f"{k} {v}" for k, v in lineage["versions"].items())))
    return ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)]


def how_chosen(inherited: dict) -> str:
    layers, selection = inherited["layers"], inherited.get("selection")
    parts = []
    if selection:
        parts.append(
            f"chosen by `init --select {selection.get('measure')} --keep {selection.get('rule')}` from the"
            f" analysis {selection.get('analysis')}"
        )
    elif layers == list(range(len(layers))):
        parts.append(f"the first {len(layers)} (a prefix, as in the paper)")
    else:
        parts.append("given with `init --layers`")
    if inherited.get("half_width"):
        parts.append("at half width (half the embedding channels, attention heads and MLP channels)")
    if inherited.get("parts") and list(inherited["parts"]) != list(BLOCK_PARTS):
        parts.append(f"only {', '.join(inherited['parts'])} inherited, the rest freshly initialised")
    return "; ".join(parts)


def data_text(run: dict) -> str:
    data = run["data"]
    if not isinstance(data, dict):
        return str(data)
    args = data.get("init_args") or {}
    shown = ", ".join(
        f"{key} {value}"
        for key, value in args.items()
        if key in ("data_dir", "token_budget", "val_tokens", "seed", "mixture", "text_field") and value is not None
    )
    text = f"`{data['class_path'].rpartition('.')[2]}` ({shown})"
    sample = run["sample"]
    if sample:
        passes = f"; {run['tokens'] / sample['train_tokens']:.2f} passes over it" if run["tokens"] else ""
        text += (
            f": a sample of {sample['train_tokens']:,} training tokens"
            + (f" in {sample['train_documents']:,} documents" if sample.get("train_documents") else "")
            + f" and {sample['val_tokens']:,} validation tokens from {sample['files']} file(s), content key"
            f" `{sample['content_key']}`{passes}"
        )
    return text


def optimizer_text(optimizer) -> str:
    if isinstance(optimizer, dict):
        args = ", ".join(f"{key} {value}" for key, value in (optimizer.get("init_args") or {}).items())
        return f"{optimizer.get('class_path', '').rpartition('.')[2]} ({args})"
    return str(optimizer)


def results_section(evaluation: Optional[dict]) -> list[str]:
    if not evaluation:
        return [
            "## Results",
            "",
            "Not evaluated yet: run `litgpt inheritune evaluate` (with `--reference` for the reference's scores on the"
            " same items), then `litgpt inheritune card` on this folder with `--eval_dir`.",
            "",
        ]
    results, reference = evaluation["results"], evaluation.get("reference")
    table = results_table(results, eval_tasks(results), [reference] if reference else [], paper=False)
    model = results.get("model", {})
    return [
        "## Results",
        "",
        f"`litgpt inheritune evaluate` (lm-evaluation-harness {lm_eval_version()}) on this model"
        + (" and, on the same items, the reference" if reference else "")
        + f"; device {model.get('device')}, {model.get('dtype')}.",
        "",
        table.rstrip(),
        "",
    ]


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm-eval")


def usage_section(repo_id: Optional[str], model_path: str, config_name: str) -> list[str]:
    model_id = repo_id or model_path
    transformers_snippet = f'''from transformers import AutoModelForCausalLM, AutoTokenizer

model_id = "{model_id}"
tokenizer = AutoTokenizer.from_pretrained(model_id)
model = AutoModelForCausalLM.from_pretrained(model_id)
inputs = tokenizer("The capital of France is", return_tensors="pt", return_token_type_ids=False)
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=20, do_sample=False)[0]))'''
    hub = repo_id is not None
    fetch = (
        f'''from huggingface_hub import snapshot_download

model_dir = Path(snapshot_download("{model_id}", local_dir="checkpoints/{model_id}"))'''
        if hub
        else f'model_dir = Path("{model_id}")'
    )
    litgpt_snippet = f"""from pathlib import Path

import yaml
from litgpt.config import configs, name_to_config
from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

{fetch}
config = yaml.safe_load((model_dir / "model_config.yaml").read_text())  # LitGPT's config of this model
configs.append(config)
name_to_config[config["name"]] = config  # litgpt converts by config name
convert_hf_checkpoint(checkpoint_dir=model_dir, model_name=config["name"])"""
    return [
        "## How to use",
        "",
        "With transformers:",
        "",
        "```python",
        transformers_snippet,
        "```",
        "",
        f"With LitGPT: the folder carries LitGPT's config (`model_config.yaml`, {config_name}); register it and"
        " convert the weights with litgpt's own converter, then every litgpt command runs on the folder"
        " (`litgpt generate`, `litgpt finetune_lora`, `litgpt inheritune pretrain`, ...):",
        "",
        "```python",
        litgpt_snippet,
        "```",
        "",
        "```bash",
        f'litgpt generate {"checkpoints/" + model_id if hub else model_id} --prompt "The capital of France is"',
        "```",
        "",
    ]


def limits_section(lineage: dict, evaluation: Optional[dict], license: str, tokens: int) -> list[str]:
    lines = ["## Limits", ""]
    if lineage["training"]:
        lines.append(
            f"- Trained on {tokens:,} tokens after inheriting its blocks: a base model (no instruction tuning, no"
            " safety tuning) that has seen far less text than its reference; it continues text, it does not follow"
            " instructions."
        )
    else:
        lines.append("- Not trained after inheriting its blocks: the kept head expects the reference's last features.")
    if evaluation:
        results = evaluation["results"]
        counts = sorted(
            {
                samples["effective"]
                for task in eval_tasks(results)
                if isinstance(samples := (results.get("n-samples") or {}).get(task), dict)
            }
        )
        if counts:
            chance = ", ".join(
                f"{task} {CHANCE[task.removesuffix('_offline')]:g}%"
                for task in eval_tasks(results)
                if CHANCE.get(task.removesuffix("_offline")) is not None
            )
            items = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
            lines.append(
                f"- Scores come from {items} items per task; read them with their standard errors"
                + (f" and beside chance ({chance})." if chance else ".")
            )
    if license == "other":
        lines.append(
            "- License: the reference's license was not found on disk (no README.md metadata, not a known model);"
            " the weights are derived from the reference, so its license applies: check it before use."
        )
    else:
        lines.append(f"- License: {license}, the reference's; the weights are derived from it.")
    return lines + [""]
