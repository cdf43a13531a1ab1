"""`litgpt inheritune pretrain --config R.yaml` where R.yaml is written for stock `litgpt pretrain`, laid out as
litgpt's config_hub/pretrain/*.yaml are, scaled down by flags."""

from pathlib import Path

import torch
import yaml

from conftest import run_in_process
from test_pretrain import SEQ

# litgpt's config_hub/pretrain/debug.yaml, key for key (comments shortened), with this test's paths.
STOCK_RECIPE = """
# The name of the model to pretrain. Choose from names in ``litgpt.config``. Mutually exclusive with ``model_config``.
model_name: {model_name}

# A ``litgpt.Config`` object to define the model architecture. Mutually exclusive with ``model_name``.
model_config:

# Directory in which to save checkpoints and logs.
out_dir: {out_dir}

# The precision to use for pretraining. Possible choices: "bf16-true", "bf16-mixed", "32-true".
precision: 32-true

# Optional path to a checkpoint directory to initialize the model from.
initial_checkpoint_dir: {checkpoint}

# Path to a checkpoint directory to resume from, or ``True`` to resume from the latest checkpoint in ``out_dir``.
resume: false

# Data-related arguments. If not provided, the default is ``litgpt.data.TinyLlama``.
data:
  class_path: litgpt_inheritune.redpajama.RedPajamaSample
  init_args:
    data_dir: {corpus}
    token_budget: 20000
    val_tokens: 2000
    num_workers: 0

# Training-related arguments. See ``litgpt.args.TrainArgs`` for details
train:
  save_interval: 1000
  log_interval: 1
  global_batch_size: 125
  micro_batch_size: 5
  lr_warmup_steps: 100
  epochs:
  max_tokens: 100000000
  max_steps:
  max_seq_length:
  tie_embeddings:
  max_norm: 1.0
  min_lr: 6.0e-05

# Evaluation-related arguments. See ``litgpt.args.EvalArgs`` for details
eval:
  interval: 1000
  max_new_tokens:
  max_iters: 100
  initial_validation: false
  final_validation: true

# Optimizer-related arguments
optimizer:
  class_path: torch.optim.AdamW
  init_args:
    lr: 0.0006
    weight_decay: 0.1
    betas:
      - 0.9
      - 0.95

# How many devices/GPUs to use. Uses all GPUs by default.
devices: auto

# How many nodes to use.
num_nodes: 1

# Optional path to the tokenizer dir that was used for preprocessing the dataset.
tokenizer_dir: {checkpoint}

# The name of the logger to send metrics to.
logger_name: csv

# The random seed to use for reproducibility.
seed: 42
"""
SCALED_DOWN = [
    "--train.global_batch_size",
    "4",
    "--train.micro_batch_size",
    "2",
    "--train.max_seq_length",
    str(SEQ),
    "--train.max_tokens",
    str(3 * 4 * SEQ),
    "--train.lr_warmup_steps",
    "1",
    "--eval.max_iters",
    "2",
]


def write_recipe(path: Path, **values) -> Path:
    path.write_text(STOCK_RECIPE.format(**values))
    return path


def test_a_stock_pretrain_recipe_runs_on_the_inherited_checkpoint(tiny_target, jsonl_corpus, tmp_path):
    name = yaml.safe_load((tiny_target / "model_config.yaml").read_text())["name"]
    out_dir = tmp_path / "out"
    recipe = write_recipe(
        tmp_path / "R.yaml", model_name=name, out_dir=out_dir, checkpoint=tiny_target, corpus=jsonl_corpus
    )
    code, _, stderr = run_in_process("pretrain", "--config", str(recipe), *SCALED_DOWN)
    assert code == 0, stderr
    hparams = yaml.safe_load((out_dir / "final" / "hyperparameters.yaml").read_text())
    assert hparams["checkpoint_dir"] == str(tiny_target)  # initial_checkpoint_dir names the inherited checkpoint
    assert hparams["precision"] == "32-true" and hparams["seed"] == 42 and hparams["logger_name"] == "csv"
    assert hparams["optimizer"]["init_args"]["lr"] == 0.0006 and hparams["train"]["max_tokens"] == 3 * 4 * SEQ
    assert (out_dir / "logs" / "csv" / "version_0" / "metrics.csv").is_file()  # logger_name: csv
    trained = torch.load(out_dir / "final" / "lit_model.pth", weights_only=True)
    inherited = torch.load(tiny_target / "lit_model.pth", weights_only=True)
    assert set(trained) == set(inherited)
    # started from the inherited weights: 3 AdamW steps at lr <= 6e-4 move each weight by at most 3 * 6e-4 (plus decay)
    assert all(
        (trained[k] - inherited[k]).abs().max() < 3 * 6e-4 * 1.01 + 1e-3 * inherited[k].abs().max() for k in inherited
    )
    assert any(not torch.equal(trained[k], inherited[k]) for k in inherited)


def test_recipe_keys_it_cannot_honour_are_refused_by_name(tiny_target, jsonl_corpus, tmp_path):
    other_tokenizer = tmp_path / "other-tokenizer"
    other_tokenizer.mkdir()
    (other_tokenizer / "tokenizer.json").write_text(
        (tiny_target / "tokenizer.json").read_text().replace("<unk>", "<UNK>")
    )
    recipe = write_recipe(
        tmp_path / "R.yaml",
        model_name="pythia-14m",
        out_dir=tmp_path / "out",
        checkpoint=tiny_target,
        corpus=jsonl_corpus,
    )
    code, _, stderr = run_in_process("pretrain", "--config", str(recipe), *SCALED_DOWN)
    assert code == 1 and stderr.count("\n") == 1
    assert stderr.startswith("error: --model_name pythia-14m is not the architecture of") and "Traceback" not in stderr
    code, _, stderr = run_in_process(
        "pretrain",
        "--config",
        str(recipe),
        "--model_name",
        "null",
        "--tokenizer_dir",
        str(other_tokenizer),
        *SCALED_DOWN,
    )
    assert code == 1 and stderr.startswith(f"error: --tokenizer_dir {other_tokenizer} holds another tokenizer")
    code, _, stderr = run_in_process(
        "pretrain", "--config", str(recipe), "--model_name", "null", "--initial_checkpoint_dir", "null", *SCALED_DOWN
    )
    assert code == 1 and stderr.startswith("error: give the inherited checkpoint to train")
    assert not (tmp_path / "out").exists()
