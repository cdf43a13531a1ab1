"""`litgpt inheritune pretrain`: continue training an inherited checkpoint with Lightning Fabric.

setup() checks the arguments and launches Fabric; main() builds the model, optimizer and data; fit() is the loop;
validate() the held-out loss. Every stop condition (epochs, tokens, steps, time, a preemption signal) is honoured.
Elsewhere: the checks of the arguments and hyperparameters.yaml in settings.py, the step and final checkpoints and
resuming in train_state.py, signals, locks and the data on several ranks in cluster.py, the progress display in
progress.py. Longer than litgpt's own pretrain.py (~530 lines) by what it adds: FSDP2, distillation and preemption.
"""

import math
import sys
import time
from copy import deepcopy
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Union

import lightning as L
import torch
from lightning.fabric.connector import _is_using_cli
from lightning.fabric.strategies import DDPStrategy
from lightning.fabric.utilities.distributed import _set_num_threads_if_needed
from lightning.fabric.utilities.throughput import ThroughputMonitor, measure_flops
from litgpt.args import EvalArgs, LogArgs, TrainArgs
from litgpt.config import Config
from litgpt.data import DataModule
from litgpt.model import GPT, Block
from litgpt.pretrain import get_lr, initialize_weights
from litgpt.tokenizer import Tokenizer
from litgpt.types import LoggerChoice
from litgpt.utils import (
    choose_logger,
    chunked_cross_entropy,
    instantiate_torch_optimizer,
    num_parameters,
)

from litgpt_inheritune.checkpoint import load_lazy_state_dict
from litgpt_inheritune.cluster import (
    StopRequest,
    agreed_batches_per_epoch,
    launched_as_rank_zero,
    lock_out_dir,
    one_failure_stops_every_rank,
    prepare_on_ranks,
    unlock_out_dir,
)
from litgpt_inheritune.distill import DistillArgs, check_distill_args, load_teacher, training_loss
from litgpt_inheritune.errors import fail
from litgpt_inheritune.plots import plot_loss
from litgpt_inheritune.progress import Progress
from litgpt_inheritune.redpajama import DEFAULT_DATA, data_or_default
from litgpt_inheritune.sharding import fsdp_strategy, is_sharded, load_full_weights, wants_fsdp
from litgpt_inheritune.settings import (
    Devices,
    Optimizer,
    Precision,
    Strategy,
    check_launch_args,
    check_optimizer,
    check_one_step,
    check_resumed_settings,
    check_train_args,
    default_precision,
    hyperparameters,
    refuse_unused_args,
    stock_checkpoint_dir,
)
from litgpt_inheritune.train_state import (
    StreamingCheckpointIO,
    find_resume_path,
    load_training_state,
    save_final,
    save_on_stop,
    save_step,
)

PAPER_OPTIMIZER = {
    "class_path": "torch.optim.AdamW",
    "init_args": {"lr": 3e-4, "weight_decay": 0.1, "betas": [0.9, 0.95]},
}
TRAIN_DEFAULTS = TrainArgs(
    save_interval=1000,
    log_interval=10,
    global_batch_size=64,
    micro_batch_size=4,
    lr_warmup_steps=1000,
    max_norm=1.0,
    min_lr=3e-5,
)
EVAL_DEFAULTS = EvalArgs(interval=1000, max_iters=100)


def setup(
    checkpoint_dir: Optional[Path] = None,
    out_dir: Path = Path("out/inheritune/pretrain"),
    precision: Precision = None,
    initialize: Literal["checkpoint", "random"] = "checkpoint",
    resume: Union[bool, Literal["auto"], Path] = False,
    keep_checkpoints: Optional[int] = None,
    data: Optional[DataModule] = DEFAULT_DATA,
    train: TrainArgs = TRAIN_DEFAULTS,
    eval: EvalArgs = EVAL_DEFAULTS,
    log: LogArgs = LogArgs(),
    optimizer: Optimizer = PAPER_OPTIMIZER,
    devices: Devices = "auto",
    num_nodes: int = 1,
    strategy: Strategy = "auto",
    fsdp_state_dict: Literal["full", "sharded"] = "sharded",
    activation_checkpointing: bool = False,
    compile: bool = False,
    logger_name: LoggerChoice = "csv",
    seed: int = 42,
    distill: DistillArgs = DistillArgs(),
    initial_checkpoint_dir: Optional[Path] = None,
    model_name: Optional[str] = None,
    model_config: Optional[Config] = None,
    tokenizer_dir: Optional[Path] = None,
) -> None:
    """Continue pretraining an inherited checkpoint (or train its architecture from scratch) with Lightning Fabric.

    Stops at the first of --train.epochs (passes over the data module's training tokens), --train.max_tokens,
    --train.max_steps (optimizer steps) and --train.max_time (seconds). Checkpoints go to out_dir/step-XXXXXXXX/
    (model, optimizer, data-loader position, RNG states, counters; written to a temporary folder, then renamed), the
    result to out_dir/final/, a plain LitGPT checkpoint. SIGTERM or SIGUSR1 (a cluster's preemption notice) writes a
    step checkpoint at the next optimizer step and exits with code 75; run the same command with --resume auto to continue.

    Arguments:
        checkpoint_dir: LitGPT checkpoint to train: lit_model.pth, model_config.yaml and tokenizer files
            (e.g. the output of ``litgpt inheritune init``). The architecture comes from its model_config.yaml.
        out_dir: Directory for checkpoints, logs and the final model.
        precision: "bf16-true", "bf16-mixed" or "32-true". Default: litgpt's choice on a GPU (bf16-mixed, or
            16-mixed where bf16 is unsupported), 32-true on a CPU.
        initialize: "checkpoint" starts from the checkpoint's weights; "random" trains the same architecture from a
            random initialisation (the paper's baseline).
        resume: "auto" continues from the newest complete checkpoint in out_dir (or starts fresh if there is none),
            True requires one, a path names one.
        keep_checkpoints: Keep only the newest N step checkpoints (step-*/) in out_dir: an older one is deleted once a
            newer one is complete, so the one a run resumed from stays until it is superseded. Default: keep all.
        data: Data module. Default: ``RedPajamaSample`` (``--data.data_dir DIR`` alone applies to it). ``RedPajama``
            reads the full RedPajama-Data-1T or any folder of .jsonl, .jsonl.zst, .parquet or .txt files; litgpt's
            own modules (TextFiles, LitData, ...) work too.
        train: Training arguments (litgpt's TrainArgs). lr_warmup_steps and save_interval count optimizer steps.
        eval: Validation arguments (litgpt's EvalArgs): interval in optimizer steps, max_iters batches per pass.
        log: Logger arguments (litgpt's LogArgs).
        optimizer: Optimizer class path and arguments, e.g. "AdamW" or
            {"class_path": "bitsandbytes.optim.AdamW8bit", "init_args": {"lr": 3e-4}}. Default: the paper's AdamW
            (lr 3e-4, weight decay 0.1, betas 0.9/0.95).
        devices: Devices per node ("auto": all GPUs, or 1 on a CPU). On a CPU, N > 1 runs N processes over gloo.
        num_nodes: Number of nodes (launch one process per device with torchrun, SLURM's srun or ``fabric run``).
        strategy: "auto" (one device: none; several GPUs: FSDP; several CPU processes: DDP), "ddp" or "fsdp"
            (FSDP2: PyTorch's fully_shard on every transformer block, then the whole model; across several nodes
            HSDP: sharded within a node, replicated across nodes). FSDP runs on CPUs (gloo) and GPUs (nccl).
        fsdp_state_dict: With FSDP, how step checkpoints are written: "sharded" (torch.distributed.checkpoint, a
            folder lit_model.pth/ with one file per rank; resumable with any number of processes) or "full" (one
            file gathered on rank 0: the whole model and optimizer state in its CPU memory). final/ is always one
            plain file. A resumed run may change it.
        activation_checkpointing: Recompute each block's activations in the backward pass to save memory.
        compile: Compile the model with torch.compile (off by default; useful on GPUs).
        logger_name: "csv", "tensorboard", "wandb", "mlflow" or "litlogger".
        seed: Random seed.
        distill: Logit distillation from a frozen teacher: --distill.teacher_dir DIR (the reference), --distill.alpha
            (weight of the cross-entropy, 0.6) and --distill.temperature (1.0); loss = alpha * CE + (1 - alpha) * T^2 *
            KL(teacher || student). Validation loss stays the student's cross-entropy; CE and KL are logged apart.
        initial_checkpoint_dir: ``litgpt pretrain``'s name for the checkpoint to start from: the same as
            checkpoint_dir, so that a LitGPT pretrain recipe (--config R.yaml) runs unchanged.
        model_name: As in ``litgpt pretrain``; the architecture is the checkpoint's, so this must name it.
        model_config: As in ``litgpt pretrain``; must equal the checkpoint's model_config.yaml.
        tokenizer_dir: As in ``litgpt pretrain``; the checkpoint's tokenizer is used, so this must hold the same one.
    """
    checkpoint_dir = stock_checkpoint_dir(
        checkpoint_dir, initial_checkpoint_dir, model_name, model_config, tokenizer_dir
    )
    initial_checkpoint_dir = model_name = model_config = tokenizer_dir = (
        None  # hyperparameters.yaml: checkpoint_dir alone
    )
    out_dir = Path(out_dir)
    data = data_or_default(data)
    hparams = hyperparameters(locals())
    config = Config.from_file(checkpoint_dir / "model_config.yaml")  # checked by stock_checkpoint_dir
    devices = check_launch_args(devices, num_nodes, keep_checkpoints)
    check_train_args(train, eval, devices * num_nodes)
    check_optimizer(optimizer)
    refuse_unused_args(train, eval, log, logger_name)
    teacher_config = check_distill_args(distill, config)
    resume_path = find_resume_path(resume, out_dir, checkpoint_dir, config)
    precision = default_precision(precision)
    sharded = wants_fsdp(strategy, devices * num_nodes, precision)
    check_resumed_settings(resume_path, hparams, sharded)
    if launched_as_rank_zero():
        lock_out_dir(out_dir)  # before anything is written: a second run on this out_dir stops here

    if sharded:
        fabric_strategy = fsdp_strategy(
            devices, num_nodes, precision, activation_checkpointing, compile, fsdp_state_dict == "sharded"
        )
    elif strategy == "ddp" or devices * num_nodes > 1:
        fabric_strategy = DDPStrategy(process_group_backend=None if torch.cuda.is_available() else "gloo")
    else:
        fabric_strategy = "auto"
    logger = choose_logger(
        logger_name,
        out_dir,
        name=f"inheritune-pretrain-{config.name}",
        resume=bool(resume_path),
        log_interval=train.log_interval,
        log_args={k: v for k, v in asdict(log).items() if v is not None},
    )
    loggers = (
        [logger]
        if logger_name == "csv"
        else [logger, choose_logger("csv", out_dir, name="", log_interval=train.log_interval)]
    )
    fabric = L.Fabric(
        accelerator="auto",
        devices=devices,
        num_nodes=num_nodes,
        strategy=fabric_strategy,
        precision=precision,
        loggers=loggers,
        # FSDP writes its own files; others stream into the file (see StreamingCheckpointIO)
        plugins=[] if sharded else [StreamingCheckpointIO()],
    )
    if not _is_using_cli():  # `fabric run` has started the processes and set them up already
        fabric.launch()
    if fabric.device.type == "cpu" and fabric.world_size > 1:
        # Lightning's launcher gives each CPU process its share of the cores (OMP_NUM_THREADS) only in the process
        # it was started in, after starting the others: oversubscribed, every collective waits (FSDP's, one per
        # block, most of all)
        _set_num_threads_if_needed(num_processes=fabric.strategy.num_processes)
    if logger_name in ("tensorboard", "wandb", "mlflow"):
        fabric.logger.log_hyperparams(hparams)
    with one_failure_stops_every_rank(fabric):  # an error on one rank ends all of them, with its message
        try:
            main(
                fabric,
                checkpoint_dir,
                out_dir,
                config,
                initialize,
                resume_path,
                data,
                train,
                eval,
                optimizer,
                activation_checkpointing,
                compile,
                seed,
                hparams,
                keep_checkpoints,
                distill,
                teacher_config,
            )
        finally:
            unlock_out_dir(out_dir)


def main(
    fabric: L.Fabric,
    checkpoint_dir: Path,
    out_dir: Path,
    config: Config,
    initialize: str,
    resume_path: Optional[Path],
    data: DataModule,
    train: TrainArgs,
    eval: EvalArgs,
    optimizer: Union[str, dict],
    activation_checkpointing: bool,
    compile: bool,
    seed: int,
    hparams: dict,
    keep_checkpoints: Optional[int] = None,
    distill: Optional[DistillArgs] = None,
    teacher_config: Optional[Config] = None,
) -> None:
    fabric.seed_everything(seed)
    sharded = is_sharded(fabric)
    with fabric.init_module(empty_init=sharded):  # FSDP: on the meta device, materialised shard by shard
        model = GPT(config)
    model.max_seq_length = train_seq_length(config, train)
    if initialize == "random":  # under FSDP this sets the initialisation that materialising the shards runs
        initialize_weights(fabric, model, n_layer=config.n_layer, n_embd=config.n_embd)
    elif not sharded:
        model.load_state_dict(load_lazy_state_dict(checkpoint_dir / "lit_model.pth"))
    if activation_checkpointing and not sharded:  # FSDP wraps the blocks itself (sharding.shard_model)
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

        apply_activation_checkpointing(model, check_fn=lambda module: isinstance(module, Block))
    fabric.print(f"{config.name}: {num_parameters(model):,} parameters, {config.n_layer} blocks, {initialize} weights")
    if compile and not sharded:  # FSDP compiles each block before sharding it (sharding.shard_model)
        model = torch.compile(model)
    model = fabric.setup(model)
    if initialize == "checkpoint" and sharded:
        load_full_weights(fabric, model, checkpoint_dir / "lit_model.pth")

    # litgpt's helper writes into the dict's init_args (which it needs): a copy, not the caller's (or our default)
    whole, init_args = optimizer, {}
    if isinstance(optimizer, dict):  # checked by check_optimizer: a class_path and init_args, perhaps none
        init_args = deepcopy(optimizer.get("init_args") or {})
        whole = {"class_path": optimizer["class_path"], "init_args": init_args}
    optimizer = instantiate_torch_optimizer(whole, model.parameters(), **fused(init_args, fabric.device))
    optimizer = fabric.setup_optimizers(optimizer)

    tokenizer = Tokenizer(checkpoint_dir)
    data.connect(tokenizer=tokenizer, batch_size=train.micro_batch_size, max_seq_length=model.max_seq_length)
    prepare_on_ranks(fabric, data)
    data.setup()
    train_dataloader, val_dataloader = fabric.setup_dataloaders(data.train_dataloader(), data.val_dataloader())

    state = {
        "model": model,
        "optimizer": optimizer,
        "train_dataloader": train_dataloader,
        "iter_num": 0,
        "step_count": 0,
        "epoch": 0,
        "rng": {},
    }
    if resume_path is not None:
        fabric.print(f"Resuming from {resume_path}")
        load_training_state(fabric, resume_path / "lit_model.pth", state)

    teacher = (
        None
        if teacher_config is None
        else load_teacher(fabric, distill.teacher_dir, teacher_config, model.max_seq_length)
    )
    with StopRequest(fabric, train.max_time) as stop:  # SIGTERM/SIGUSR1 and max_time: a checkpoint, then stop
        fit(
            fabric,
            state,
            train_dataloader,
            val_dataloader,
            out_dir,
            checkpoint_dir,
            train,
            eval,
            hparams,
            stop,
            keep_checkpoints,
            teacher,
            distill,
        )
        save_final(fabric, state, out_dir, checkpoint_dir, hparams)
    fabric.print(peak_memory(fabric))
    for logger in fabric.loggers:
        logger.finalize("success")  # flushes the metrics logged since the last periodic write
    if fabric.global_rank == 0:
        plot_loss(
            sorted(
                (out_dir / "logs" / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])
            ),
            train.global_batch_size * model.max_seq_length,
            out_dir / "loss.png",
            f"{config.name}: pretrain loss",
        )


def fit(
    fabric: L.Fabric,
    state: dict,
    train_dataloader,
    val_dataloader,
    out_dir: Path,
    checkpoint_dir: Path,
    train: TrainArgs,
    eval: EvalArgs,
    hparams: dict,
    stop: StopRequest,
    keep_checkpoints: Optional[int] = None,
    teacher=None,
    distill: Optional[DistillArgs] = None,
) -> None:
    model, optimizer = state["model"], state["optimizer"]
    config: Config = model.config
    seq_len = model.max_seq_length
    accumulation = train.gradient_accumulation_iters(fabric.world_size)
    tokens_per_step = train.global_batch_size * seq_len
    lr_max = optimizer.defaults["lr"]  # param_groups hold the scheduled lr, restored on resume
    check_one_step(train, train_dataloader, accumulation, fabric.world_size, seq_len, config)
    epoch_batches = agreed_batches_per_epoch(fabric, len(train_dataloader))
    max_steps = total_steps(train, epoch_batches // accumulation, tokens_per_step)
    warmup_steps = min(max_steps, train.lr_warmup_steps or 0)
    if train.lr_warmup_fraction:  # litgpt's meaning: a fraction of an epoch (of the training data loader)
        warmup_steps = min(max_steps, math.ceil(train.lr_warmup_fraction * epoch_batches / accumulation))
    if not train.lr_warmup_fraction and fabric.global_rank == 0 and (train.lr_warmup_steps or 0) >= max_steps:
        print(
            f"warning: --train.lr_warmup_steps {train.lr_warmup_steps} is not below the run's {max_steps} optimizer"
            f" steps, so the warm-up is cut to {max_steps} (as litgpt pretrain does): the learning rate rises for the"
            f" whole run, ends at {scheduled_lr(lr_max, max_steps, warmup_steps, max_steps, train.min_lr):.2e} and never"
            f" decays; give --train.lr_warmup_steps below {max_steps} for a warm-up and a cosine decay",
            file=sys.stderr,
        )
    fabric.print(
        f"Training {max_steps:,} optimizer steps of {tokens_per_step:,} tokens ({train.global_batch_size} x"
        f" {seq_len}, {accumulation} micro-batches of {train.micro_batch_size} per rank on"
        f" {fabric.world_size} ranks); {epoch_batches // accumulation:,} steps per epoch"
    )

    with torch.device("meta"):
        meta_model = GPT(config)
        x = torch.randint(0, 1, (train.micro_batch_size, seq_len))
        flops_per_iter = measure_flops(
            meta_model, lambda: meta_model(x), lambda y: chunked_cross_entropy(y, x, chunk_size=0)
        )
    throughput = ThroughputMonitor(fabric, window_size=5)
    progress = Progress(fabric, total=max_steps, initial=state["step_count"])

    if eval.initial_validation and state["step_count"] == 0:
        log_validation(fabric, model, val_dataloader, eval, state, progress)
    start_time, start_step = time.perf_counter(), state["step_count"]
    paused, logged_step = 0.0, state["step_count"]
    train_iterator = epochs_of(train_dataloader, epoch_batches // accumulation * accumulation, state["iter_num"])
    stopped = None
    while state["step_count"] < max_steps:
        if (stopped := stop.check()) is not None:
            break
        # step k of the schedule (1-based, as litgpt passes iter_num after counting the iteration): the first step
        # runs at lr_max / warmup_steps, not at 0, and the last at min_lr
        lr = scheduled_lr(lr_max, state["step_count"] + 1, warmup_steps, max_steps, train.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr

        step_loss = torch.zeros((), device=fabric.device)
        step_parts = torch.zeros(2, device=fabric.device)  # cross-entropy and KL when distilling
        for micro_step in range(accumulation):
            epoch, batch = next(train_iterator)
            input_ids = batch[:, :seq_len].contiguous().long()
            targets = batch[:, 1 : seq_len + 1].contiguous().long()
            with fabric.no_backward_sync(model, enabled=micro_step < accumulation - 1):
                loss, parts = training_loss(fabric, model(input_ids), input_ids, targets, teacher, distill)
                fabric.backward(loss / accumulation)
            step_loss += loss.detach() / accumulation
            if parts is not None:
                step_parts += parts / accumulation
        fabric.clip_gradients(model, optimizer, max_norm=train.max_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step_count"] += 1
        state["iter_num"] += accumulation
        state["epoch"] = epoch

        step = state["step_count"]
        if step % train.log_interval == 0 or step == max_steps:
            loss_value = fabric.all_reduce(step_loss, reduce_op="mean").item()  # .item() waits for the GPU
            elapsed = time.perf_counter() - start_time - paused
            # Lightning's monitor takes running totals per device, except flops: those since the previous update
            throughput.update(
                time=elapsed,
                batches=state["iter_num"],
                samples=state["iter_num"] * train.micro_batch_size,
                lengths=state["iter_num"] * train.micro_batch_size * seq_len,
                flops=flops_per_iter * accumulation * (step - logged_step),
            )
            logged_step = step
            metrics = {
                "loss": loss_value,
                "learning_rate": lr,
                "step": step,
                "epoch": state["epoch"],
                "tokens": step * tokens_per_step,
                **{f"throughput/{key}": value for key, value in throughput.compute().items()},
            }
            metrics["tokens_per_sec"] = (step - start_step) * tokens_per_step / elapsed  # all ranks together
            if teacher is not None:
                metrics["ce_loss"], metrics["kl_loss"] = fabric.all_reduce(step_parts, reduce_op="mean").tolist()
            fabric.log_dict(metrics, step=step)
            progress.update(
                step,
                loss=loss_value,
                lr=lr,
                tokens_per_sec=metrics["tokens_per_sec"],
                mfu=metrics.get("throughput/device/mfu"),
            )
        t0 = time.perf_counter()  # validation and saving do not count as training time in the throughput
        if eval.interval and step % eval.interval == 0 and step < max_steps:
            log_validation(fabric, model, val_dataloader, eval, state, progress)
        if train.save_interval and step % train.save_interval == 0:
            save_step(fabric, state, out_dir, checkpoint_dir, hparams, keep_checkpoints)
        paused += time.perf_counter() - t0
    progress.close()
    if stopped is not None:
        save_on_stop(fabric, stopped, state, out_dir, checkpoint_dir, train, hparams, keep_checkpoints)
    if eval.final_validation:
        log_validation(fabric, model, val_dataloader, eval, state, progress)


def fused(init_args: dict, device: torch.device) -> dict:
    """fused=True on CUDA (as stock litgpt pretrain passes) and on CPUs, where torch has fused Adam, AdamW, SGD and
    Adagrad kernels too: one kernel per parameter and the same update up to float rounding, several times faster than
    the per-tensor loop torch runs on a CPU by default (benchmarks/optimizer_step.py). Optimizers without a fused
    argument do not get one (litgpt's helper drops it); init_args that choose fused or foreach themselves are kept."""
    if "fused" in init_args or "foreach" in init_args:
        return {}
    return {"fused": device.type in ("cuda", "cpu")}


@torch.no_grad()
def validate(fabric: L.Fabric, model, val_dataloader, max_iters: int) -> float:
    """Mean next-token loss over up to max_iters batches per rank, averaged over ranks. The ranks agree before each
    batch that all of them have one, so ranks holding uneven validation data run the same number of batches (none
    waits for a collective the others never reach) and the mean weighs every batch alike."""
    model.eval()
    total, count = torch.zeros((), device=fabric.device), 0
    batches = iter(val_dataloader)
    for _ in range(max_iters):
        batch = next(batches, None)
        if fabric.world_size > 1:
            every_rank_has_one = fabric.all_reduce(
                torch.tensor(int(batch is not None), device=fabric.device), reduce_op="min"
            )
            batch = batch if int(every_rank_has_one) else None
        if batch is None:
            break
        input_ids = batch[:, : model.max_seq_length].contiguous().long()
        targets = batch[:, 1 : model.max_seq_length + 1].contiguous().long()
        total += chunked_cross_entropy(model(input_ids), targets)
        count += 1
    model.train()
    if count == 0:
        ranks = f" on at least one of the {fabric.world_size} ranks" if fabric.world_size > 1 else ""
        fail(
            f"the validation data holds less than one batch{ranks}; raise --data.val_tokens or lower --train.micro_batch_size"
        )
    return fabric.all_reduce(total / count, reduce_op="mean").item()


def log_validation(fabric, model, val_dataloader, eval: EvalArgs, state: dict, progress: Progress) -> None:
    t0 = time.perf_counter()
    val_loss = validate(fabric, model, val_dataloader, eval.max_iters)
    metrics = {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50))}
    fabric.log_dict(metrics, step=state["step_count"])
    progress.write(
        f"step {state['step_count']}: val loss {val_loss:.4f}, val ppl {metrics['val_ppl']:.2f}"
        f" ({time.perf_counter() - t0:.1f} s)"
    )


def epochs_of(loader, batches_per_epoch: int, start: int) -> Iterator[tuple[int, Any]]:
    """(epoch, batch) without end: the first ``batches_per_epoch`` batches of each pass over ``loader``, from batch
    ``start`` of the run (where a resumed loader continues). The rest of a pass is read and dropped, so that a
    resumable loader (litdata's) ends its epoch and begins the next instead of replaying the resumed one."""
    epoch, taken = divmod(start, batches_per_epoch)
    while True:
        for batch in loader:
            if taken < batches_per_epoch:
                yield epoch, batch
                taken += 1
        if taken < batches_per_epoch:
            raise RuntimeError(
                f"the training data loader ended after {taken} batches of epoch {epoch}, fewer than the"
                f" {batches_per_epoch} its length promised"
            )
        epoch, taken = epoch + 1, 0


def peak_memory(fabric: L.Fabric) -> str:
    """Each rank's peak memory: torch.cuda.max_memory_allocated on a GPU, the process's peak RSS on a CPU."""
    if fabric.device.type == "cuda":
        peak, what = torch.cuda.max_memory_allocated(fabric.device), "torch.cuda.max_memory_allocated"
    else:
        import resource

        peak, what = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS"
    peaks = fabric.all_gather(torch.tensor(peak, device=fabric.device)).reshape(-1).tolist()
    return f"Peak memory per rank ({what}): {', '.join(f'{p / 1e9:.2f}' for p in peaks)} GB"


def scheduled_lr(lr_max: float, step: int, warmup_steps: int, max_steps: int, min_lr: float) -> float:
    """litgpt's schedule (linear warm-up, then cosine to min_lr) at 1-based optimizer step ``step``. A warm-up as long
    as the run only rises: litgpt's ``get_lr`` would divide by zero at its last step."""
    if warmup_steps >= max_steps:
        return lr_max * min(step, warmup_steps) / warmup_steps
    return get_lr(lr_max, step, warmup_steps, max_steps, min_lr)


def train_seq_length(config: Config, train: TrainArgs) -> int:
    """Tokens per training sequence: --train.max_seq_length, at most the model's block size."""
    return min(config.block_size, train.max_seq_length or config.block_size)


def total_steps(train: TrainArgs, steps_per_epoch: int, tokens_per_step: int) -> int:
    """Optimizer steps until the first of epochs, max_tokens and max_steps."""
    limits = []
    if train.epochs is not None:
        limits.append(train.epochs * steps_per_epoch)
    if train.max_tokens is not None:
        limits.append(train.max_tokens // tokens_per_step)
    if train.max_steps is not None:
        limits.append(train.max_steps)
    if not limits:
        limits.append(steps_per_epoch)  # only max_time given: the schedule spans one epoch
    if steps_per_epoch < 1:
        fail("the training data holds less than one optimizer step; lower --train.global_batch_size or add data")
    return max(1, min(limits))
