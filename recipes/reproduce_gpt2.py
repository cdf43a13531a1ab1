"""The paper's GPT-2 comparisons (Tables 1-3, Figure 7) at CPU scale, on real text that ships in a PyPI package.

Train a small GPT-2-shaped reference (LayerNorm, GELU MLP, rotary positions: litgpt's gpt2-rope family) from scratch
on the Lee news corpus (gensim) with a byte-level BPE tokenizer trained on it → `grow` at half its depth, the same
steps for every run: Inheritune and the baselines (random init, stacking, hybrid stacking, half width, the sub-module
ablations, logit distillation from random and DistilBERT-style initialisations, Inheritune with distillation) → random
init again with twice the steps → `grow` on until the inherited model matches the reference → `compare` of every run
→ out_dir/report.md (our table beside the paper's numbers and which of the paper's orderings hold here),
out_dir/summary.json, out_dir/compare.{md,json,png}.

    .venv/bin/python recipes/reproduce_gpt2.py [--size full|toy] [--out_dir out/reproduce_gpt2]
"""

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from common import DEFAULT_CACHE, lee_corpus, step, write_corpus
from litgpt.args import EvalArgs, TrainArgs
from litgpt.config import Config
from litgpt.model import GPT
from litgpt.utils import save_config

from litgpt_inheritune.errors import fail
from litgpt_inheritune.compare import main as compare
from litgpt_inheritune.configs import gpt2_rope_config
from litgpt_inheritune.grow import main as grow
from litgpt_inheritune.compare import LossMeter
from litgpt_inheritune.pretrain import setup as pretrain
from litgpt_inheritune.redpajama import RedPajamaSample


# full: about 20 minutes on a 2-core x86-64 CPU shared with other jobs; toy: every step at the test suite's size
# (about 2 minutes on that CPU)
SIZES = {
    "full": dict(
        n_layer=8,
        n_embd=96,
        n_head=4,
        vocab_size=2048,
        seq_len=64,
        batch_size=8,
        steps=120,
        eval_interval=30,
        val_tokens=4096,
    ),
    "toy": dict(
        n_layer=4,
        n_embd=32,
        n_head=2,
        vocab_size=384,
        seq_len=32,
        batch_size=4,
        steps=16,
        eval_interval=8,
        val_tokens=2000,
    ),
}
# grow's baselines at half depth, in the order of the paper's tables
BASELINES = "random,stacking,hybrid_stacking,half_width,attn,mlp,attn_mlp_no_norm,distill_random,distill_alternate,inherit_distill"
OPTIMIZER = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 2e-3, "weight_decay": 0.1, "betas": [0.9, 0.95]}}

# The paper's validation losses on OpenWebText after 100K steps (Table 1: initialisations; Table 2: sub-module
# ablation, GPT-2 medium 24 -> 16 blocks; Table 3: from scratch and Inheritune). Keys: our method names.
PAPER = {
    "GPT-2 medium (24 -> 16)": {
        "reference": 2.81,
        "random": 2.86,
        "inheritune": 2.81,
        "stacking": 2.84,
        "hybrid_stacking": 2.83,
        "half_width": 3.04,
        "attn": 2.84,
        "mlp": 2.85,
        "attn_mlp_no_norm": 2.80,
    },
    "GPT-2 large (36 -> 18)": {
        "reference": 2.85,
        "random": 2.97,
        "inheritune": 2.80,
        "stacking": 2.87,
        "hybrid_stacking": 2.89,
        "half_width": 3.06,
    },
    "GPT-2 xlarge (48 -> 24)": {
        "reference": 2.65,
        "random": 2.69,
        "inheritune": 2.64,
        "stacking": 2.65,
        "hybrid_stacking": 2.64,
        "half_width": 2.77,
    },
}
METHODS = {  # name -> what it is, in the report's order
    "reference": "the reference, trained from scratch (full depth)",
    "inheritune": "Inheritune: its first half of the blocks, trained (grow's first round)",
    "grown": "Inheritune grown until it matches the reference (grow's last round)",
    "random": "random init, half depth",
    "random_2x": "random init, half depth, twice the steps",
    "stacking": "stacking: a quarter-depth model from random init trained, stacked twice, trained again",
    "hybrid_stacking": "hybrid stacking: the reference's first quarter of the blocks stacked twice",
    "half_width": "half width: every block, half the heads, MLP and embedding channels",
    "attn": "only attention (with its norm) inherited",
    "mlp": "only the MLP (with its norm) inherited",
    "attn_mlp_no_norm": "attention and MLP inherited, norms fresh",
    "distill_random": "random init, logit distillation from the reference",
    "distill_alternate": "DistilBERT-style: every other block of the reference, logit distillation",
    "inherit_distill": "Inheritune with logit distillation (beyond the paper)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", type=Path, default=Path("out/reproduce_gpt2"))
    parser.add_argument("--size", choices=tuple(SIZES), default="full", help="full: ~20 min on 2 cores; toy: ~2 min")
    parser.add_argument("--cache_dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    size, out = SIZES[args.size], args.out_dir
    settings = {"size": args.size, **size, "optimizer": OPTIMIZER, "seed": args.seed}
    if (out / "settings.json").is_file() and json.loads((out / "settings.json").read_text()) != settings:
        fail(
            f"--out_dir {out} holds a run with other settings (its settings.json); give another --out_dir or delete it"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")  # a re-run reuses finished runs
    started = time.perf_counter()

    step("materials: the Lee news corpus (gensim); a byte-level BPE tokenizer trained on it (GPT-2's kind)")
    data_dir = write_corpus(lee_corpus(args.cache_dir), out / "data" / "lee")
    reference_init = write_reference_init(
        out / "checkpoints" / "reference-init", data_dir / "lee.jsonl", size, args.seed
    )

    def data() -> RedPajamaSample:  # whole articles: val_tokens held out for validation, the rest for training
        return RedPajamaSample(
            data_dir=data_dir,
            token_budget=10**9,
            val_tokens=size["val_tokens"],
            num_workers=0,
            cache_dir=out / "data" / "litdata",
            seed=args.seed,
        )

    steps = size["steps"]
    train = TrainArgs(
        save_interval=None,
        log_interval=1,
        global_batch_size=size["batch_size"],
        micro_batch_size=size["batch_size"],
        lr_warmup_steps=max(1, steps // 10),
        max_steps=steps,
        max_seq_length=size["seq_len"],
        max_norm=1.0,
        min_lr=2e-4,
    )
    eval = EvalArgs(interval=size["eval_interval"], max_iters=10**6, initial_validation=True)  # every held-out batch
    common = dict(
        train=train, eval=eval, optimizer=OPTIMIZER, precision="32-true", seed=args.seed
    )  # and a fresh data()
    n, half = size["n_layer"], size["n_layer"] // 2

    step(f"reference: {n} blocks x {size['n_embd']} from scratch, {steps} steps")
    reference_run = out / "runs" / "reference"
    train_once(reference_init, reference_run, data=data(), **common)
    reference = reference_run / "final"

    step(f"grow at {half} of {n} blocks: Inheritune and the baselines {BASELINES}")
    first = grow(
        reference, out_dir=out / "grow", n_layers=half, max_layers=half, baselines=BASELINES, data=data(), **common
    )

    step(f"random init at {half} blocks, {2 * steps} steps")
    random_2x = out / "runs" / "random_2x"
    train_once(
        out / "grow" / f"{half}L" / "init",
        random_2x,
        data=data(),
        **{**common, "train": replace(train, max_steps=2 * steps)},
    )
    random_2x_loss = LossMeter(reference, data(), train, eval, "32-true")(random_2x / "final")

    step(f"grow on from {half} blocks by 2 until the reference is matched")
    grown = grow(reference, out_dir=out / "grow", n_layers=half, baselines="", data=data(), **common)

    step("compare every run")
    runs = {
        "reference": {
            "n_layers": n,
            "checkpoint": str(reference),
            "val_loss": first["reference"]["val_loss"],
            "steps": steps,
        },
        "inheritune": first["rounds"][0],
        "grown": grown["rounds"][-1],
        "random": first["baselines"]["random"],
        "random_2x": {
            "n_layers": half,
            "checkpoint": str(random_2x / "final"),
            "val_loss": random_2x_loss,
            "steps": 2 * steps,
        },
    }
    runs.update({name: entry for name, entry in first["baselines"].items() if name != "random"})
    run_dirs = {name: Path(entry["checkpoint"]).parent for name, entry in runs.items()}
    compared = compare(
        [run_dirs[name] for name in METHODS],
        out_dir=out,
        labels=[f"{name} ({runs[name]['n_layers']}L)" for name in METHODS],
        reference_loss=runs["reference"]["val_loss"],
    )
    parameters = {name: run["parameters"] for name, run in zip(METHODS, compared["runs"])}
    summary = {
        "methods": {
            name: {
                "description": METHODS[name],
                "n_layers": runs[name]["n_layers"],
                "parameters": parameters[name],
                "steps": runs[name]["steps"],
                "val_loss": round(runs[name]["val_loss"], 4),
            }
            for name in METHODS
        },
        "rounds": [{key: entry[key] for key in ("n_layers", "val_loss", "matched")} for entry in grown["rounds"]],
        "claims": claims({name: runs[name]["val_loss"] for name in METHODS}, grown),
        "settings": {**settings, "minutes": round((time.perf_counter() - started) / 60, 1)},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report(summary))
    print((out / "report.md").read_text())


def write_reference_init(out_dir: Path, corpus: Path, size: dict, seed: int) -> Path:
    """A GPT-2-shaped LitGPT checkpoint folder to train from scratch: config, random weights and a byte-level BPE
    tokenizer (GPT-2's kind, <|endoftext|> between documents) trained on the corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        (json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines()),
        trainers.BpeTrainer(
            vocab_size=size["vocab_size"],
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<|endoftext|>",
                "eos_token": "<|endoftext|>",
                "add_bos_token": False,
                "tokenizer_class": "GPT2Tokenizer",
            }
        )
    )
    name = f"gpt2-rope-{size['n_layer']}L-{size['n_embd']}"
    config = Config(
        **{
            **gpt2_rope_config(name, size["n_layer"], size["n_embd"], size["n_head"]),
            "block_size": size["seq_len"],
            "vocab_size": tokenizer.get_vocab_size(),
            "padded_vocab_size": None,
            "padding_multiple": 64,
        }
    )
    torch.manual_seed(seed)
    torch.save(GPT(config).state_dict(), out_dir / "lit_model.pth")  # pretrain --initialize random replaces these
    save_config(config, out_dir)
    return out_dir


def train_once(checkpoint_dir: Path, run_dir: Path, **settings) -> None:
    """pretrain from a random initialisation, unless a previous run of this recipe finished it (as grow reuses rounds)."""
    if (run_dir / "final" / "lit_model.pth").is_file():
        print(f"reusing {run_dir / 'final'}", file=sys.stderr)
        return
    if run_dir.exists():
        shutil.rmtree(run_dir)
    pretrain(checkpoint_dir, out_dir=run_dir, initialize="random", **settings)


def claims(loss: dict, grown: dict) -> list[dict]:
    """The paper's orderings, each checked on this run's validation losses."""

    def below(a: str, *others: str) -> bool:
        return all(loss[a] < loss[b] for b in others)

    rounds = [entry["n_layers"] for entry in grown["rounds"]]
    return [
        {
            "claim": "Inheritune beats random init at the same depth and steps",
            "source": "Table 3, Fig. 5",
            "holds": below("inheritune", "random"),
        },
        {
            "claim": "Inheritune at half depth matches the full-depth reference",
            "source": "Table 3 (large, xlarge: one round)",
            "holds": loss["inheritune"] <= loss["reference"],
        },
        {
            "claim": f"grow reaches the reference (rounds of {', '.join(map(str, rounds))} blocks)",
            "source": "Table 3 (medium: 12, 14, 16)",
            "holds": bool(grown["rounds"][-1]["matched"]),
        },
        {
            "claim": "Inheritune beats stacking, hybrid stacking and half width",
            "source": "Table 1",
            "holds": below("inheritune", "stacking", "hybrid_stacking", "half_width"),
        },
        {
            "claim": "half width is the worst of Table 1's initialisations",
            "source": "Table 1",
            "holds": all(loss["half_width"] > loss[b] for b in ("inheritune", "stacking", "hybrid_stacking")),
        },
        {
            "claim": "attention + MLP (with or without norms) beat attention alone and MLP alone",
            "source": "Table 2",
            "holds": below("inheritune", "attn", "mlp") and below("attn_mlp_no_norm", "attn", "mlp"),
        },
        {
            "claim": "norms matter little: attn+mlp without norms within 0.03 of Inheritune",
            "source": "Table 2 (2.80 vs 2.81)",
            "holds": abs(loss["attn_mlp_no_norm"] - loss["inheritune"]) <= 0.03,
        },
        {
            "claim": "Inheritune beats logit distillation from random and DistilBERT-style students",
            "source": "Fig. 7, Fig. 16",
            "holds": below("inheritune", "distill_random", "distill_alternate"),
        },
        {
            "claim": "distillation improves Inheritune",
            "source": "not in the paper (Minitron-style)",
            "holds": below("inherit_distill", "inheritune"),
        },
        {
            "claim": "Inheritune beats random init given twice the steps",
            "source": "not in the paper",
            "holds": below("inheritune", "random_2x"),
        },
    ]


def report(summary: dict) -> str:
    methods, settings = summary["methods"], summary["settings"]
    reference = methods["reference"]["val_loss"]
    columns = list(PAPER)
    lines = [
        f"# Inheritune's GPT-2 comparisons at CPU scale ({settings['size']})",
        "",
        f"Settings: {json.dumps(settings)}",
        "",
        "| method | blocks | parameters | steps | validation loss | vs reference | "
        + " | ".join(f"paper: {c}" for c in columns)
        + " |",
        "|" + "---|" * (6 + len(columns)),
    ]
    for name, m in methods.items():
        paper = [PAPER[c].get(name) for c in columns]
        lines.append(
            f"| {name} | {m['n_layers']} | {m['parameters'] / 1e6:.3f} M | {m['steps']} | {m['val_loss']:.4f} |"
            f" {m['val_loss'] - reference:+.4f} | " + " | ".join("" if p is None else f"{p:.2f}" for p in paper) + " |"
        )
    lines += [
        "",
        "Methods: " + "; ".join(f"**{name}**: {m['description']}" for name, m in methods.items()) + ".",
        "",
        "Rounds of grow: " + ", ".join(f"{r['n_layers']} blocks {r['val_loss']:.4f}" for r in summary["rounds"]) + ".",
        "",
        "| the paper's ordering | where | holds here |",
        "|---|---|---|",
    ]
    lines += [f"| {c['claim']} | {c['source']} | {'yes' if c['holds'] else '**no**'} |" for c in summary["claims"]]
    return "\n".join(lines + ["", "![validation loss of every run](compare.png)", ""])


if __name__ == "__main__":
    main()
