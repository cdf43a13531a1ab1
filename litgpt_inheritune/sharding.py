"""FSDP2 for pretrain: Lightning's ``ModelParallelStrategy`` with PyTorch's ``fully_shard`` on every LitGPT ``Block``,
then on the whole model, on CPUs (gloo) and GPUs (nccl) alike.

- One node: every parameter, gradient and AdamW moment is split across all ranks (a 1-D mesh).
- Several nodes: HSDP, a 2-D mesh of (nodes) x (devices per node): each node holds one sharded copy of the model
  and the nodes exchange only the averaged gradients, so the all-gathers of weights stay inside a node.
- Precision: ``*-true`` keeps the weights in that dtype; ``bf16-mixed`` keeps float32 weights, gathers them in
  bfloat16 for compute and reduces gradients in float32 (``MixedPrecisionPolicy``).

Full weights go in and out without a full copy per rank: a model is built on the meta device, sharded, then rank 0
reads the checkpoint (memory-mapped) and broadcasts one tensor at a time, each rank keeping its shard; the consolidated
final weights are gathered tensor by tensor onto rank 0's CPU.
"""

from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.strategies import ModelParallelStrategy
from lightning.fabric.wrappers import _unwrap_objects

from litgpt_inheritune.checkpoint import load_lazy_state_dict
from litgpt_inheritune.errors import fail

# what Lightning's ModelParallelStrategy accepts of pretrain's --precision choices (not 16-mixed)
FSDP_PRECISIONS = ("32-true", "bf16-true", "bf16-mixed")


def wants_fsdp(strategy: str, world_size: int, precision: str) -> bool:
    """Whether a run shards its model: --strategy fsdp, or auto on several GPUs with a precision FSDP2 takes. A
    precision it does not take is refused in one line."""
    sharded = strategy == "fsdp" or (
        strategy == "auto" and world_size > 1 and torch.cuda.is_available() and precision in FSDP_PRECISIONS
    )
    if sharded and precision not in FSDP_PRECISIONS:
        fail(
            f"--precision {precision} does not run with --strategy fsdp (Lightning's ModelParallelStrategy takes"
            f" {', '.join(FSDP_PRECISIONS)}); choose one of those or --strategy ddp"
        )
    return sharded


def fsdp_strategy(
    devices: int,
    num_nodes: int,
    precision: str,
    activation_checkpointing: bool = False,
    compile: bool = False,
    sharded_checkpoints: bool = True,
) -> ModelParallelStrategy:
    """Lightning's ModelParallelStrategy as FSDP2: all ranks data-parallel, no tensor parallelism. The process
    group backend is Lightning's default for the device (nccl on CUDA, gloo on a CPU). ``sharded_checkpoints``:
    ``fabric.save`` writes a torch.distributed.checkpoint folder (each rank its shard), else one file from rank 0."""
    return ModelParallelStrategy(
        parallelize_fn=partial(
            shard_model,
            num_nodes=num_nodes,
            mixed=precision == "bf16-mixed",
            activation_checkpointing=activation_checkpointing,
            compile=compile,
        ),
        data_parallel_size=devices * num_nodes,  # Lightning's "auto" would be the number of nodes
        tensor_parallel_size=1,
        save_distributed_checkpoint=sharded_checkpoints,
    )


def shard_model(
    model, device_mesh, num_nodes: int, mixed: bool, activation_checkpointing: bool = False, compile: bool = False
):
    """``fully_shard`` on every transformer block, then the root (its embedding, final norm and head), optionally
    with each block's activations recomputed in the backward pass and each block compiled (in place: the parameter
    names stay, and FSDP's hooks stay outside the compiled code). A frozen model (a distillation teacher, which
    has no backward pass) gives its root's weights back after each forward too."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = device_mesh["data_parallel"]
    if num_nodes > 1:  # HSDP: replicate across nodes, shard within a node
        mesh = init_device_mesh(
            mesh.device_type, (num_nodes, mesh.size() // num_nodes), mesh_dim_names=("replicate", "shard")
        )
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed
        else MixedPrecisionPolicy()
    )
    frozen = not any(parameter.requires_grad for parameter in model.parameters())
    if activation_checkpointing and not frozen:
        from litgpt.model import Block
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

        apply_activation_checkpointing(model, check_fn=lambda module: isinstance(module, Block))
    for block in model.transformer.h:
        if compile:
            block.compile()
        fully_shard(block, mesh=mesh, mp_policy=policy)
    # the root's default keeps its weights gathered from the forward to the backward pass
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=True if frozen else None)
    return model


def is_sharded(fabric: L.Fabric) -> bool:
    return isinstance(fabric.strategy, ModelParallelStrategy)


def load_full_weights(fabric: L.Fabric, model, path: Path) -> None:
    """Loads a plain LitGPT ``lit_model.pth`` into a sharded model: rank 0 memory-maps the file and broadcasts it
    tensor by tensor; every rank keeps its shard. No rank holds more than one full tensor besides rank 0's mapping."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    state_dict = load_lazy_state_dict(path) if fabric.global_rank == 0 else {}
    set_model_state_dict(
        _unwrap_objects(model),
        state_dict,
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=True),
    )


def full_weights(model) -> dict:
    """The whole state dict of a sharded model on rank 0's CPU (empty on the other ranks), gathered tensor by tensor."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(
        _unwrap_objects(model), options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
