"""`litgpt inheritune prepare_data`: tokenize what a pretrain run will read, ahead of a multi-GPU or multi-node launch.

It takes exactly pretrain's flags (the same function signature), so `--config <pretrain recipe>` and a pretrain
command line both work: the run started afterwards with the same flags finds its data prepared and trains at once.
"""

import functools
import inspect

from litgpt.tokenizer import Tokenizer

from litgpt_inheritune.pretrain import train_seq_length
from litgpt_inheritune.settings import check_checkpoint_dir, stock_checkpoint_dir
from litgpt_inheritune.pretrain import setup as pretrain
from litgpt_inheritune.redpajama import data_or_default


@functools.wraps(pretrain)
def main(*args, **kwargs) -> None:
    arguments = inspect.signature(pretrain).bind(*args, **kwargs)
    arguments.apply_defaults()
    given = {
        name: arguments.arguments[name]
        for name in ("checkpoint_dir", "initial_checkpoint_dir", "model_name", "model_config", "tokenizer_dir")
    }
    checkpoint_dir, train = stock_checkpoint_dir(**given), arguments.arguments["train"]  # a LitGPT recipe's keys too
    config = check_checkpoint_dir(checkpoint_dir)
    data = data_or_default(arguments.arguments["data"])
    data.connect(
        tokenizer=Tokenizer(checkpoint_dir),
        batch_size=train.micro_batch_size,
        max_seq_length=train_seq_length(config, train),
    )
    data.prepare_data()
    data.setup()  # the same checks pretrain makes (enough tokens for a sequence in each split)
    where = f" in {data.prepared_dir}" if hasattr(data, "prepared_dir") else ""
    print(f"Data prepared{where}; `litgpt inheritune pretrain` with the same flags will use it")


main.__doc__ = """Tokenize the data a `litgpt inheritune pretrain` run with the same flags will read (its data module's
    prepare step, with a progress bar), so that a multi-GPU or multi-node launch starts training at once. Takes
    exactly pretrain's flags; only checkpoint_dir (its tokenizer), data and --train.max_seq_length matter here.
""" + pretrain.__doc__[pretrain.__doc__.index("    Arguments:") :]
