"""Logit distillation (Hinton et al., 2015) for `pretrain --distill.teacher_dir`: the paper's distillation baselines
(Figure 7, Appendix B) and Inheritune with distillation.

loss = alpha * CE(student, data) + (1 - alpha) * T^2 * KL(teacher || student), both distributions softened by the
temperature T. The teacher is frozen, in eval mode, and runs on the same batch under the same precision and strategy
as the student. Validation loss stays the student's cross-entropy.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F
from litgpt.config import Config
from litgpt.model import GPT
from litgpt.utils import chunked_cross_entropy

from litgpt_inheritune.checkpoint import check_checkpoint, load_lazy_state_dict
from litgpt_inheritune.errors import fail
from litgpt_inheritune.sharding import is_sharded, load_full_weights


@dataclass
class DistillArgs:
    """Logit distillation from a frozen teacher (off unless --distill.teacher_dir is given)."""

    teacher_dir: Optional[Path] = None
    """LitGPT checkpoint of the teacher (the reference); it must share the student's vocabulary."""
    alpha: float = 0.6
    """Weight of the cross-entropy on the data; 1 - alpha weights the KL term (the paper: 0.6)."""
    temperature: float = 1.0
    """Softmax temperature of teacher and student in the KL term, which is scaled by T^2 (the paper: 1)."""


def check_distill_args(distill: DistillArgs, student: Config) -> Optional[Config]:
    """The teacher's config, or None when not distilling; one line and exit 1 on bad values."""
    if distill.teacher_dir is None:
        return None
    if not 0 <= distill.alpha <= 1:
        fail(
            f"--distill.alpha {distill.alpha} is outside [0, 1]; it weighs the cross-entropy against the KL term (the paper: 0.6)"
        )
    if not distill.temperature > 0:
        fail(f"--distill.temperature {distill.temperature} must be above 0 (the paper: 1.0)")
    teacher_dir = Path(distill.teacher_dir)
    check_checkpoint(teacher_dir, "--distill.teacher_dir")
    teacher = Config.from_file(teacher_dir / "model_config.yaml")
    if (teacher.vocab_size, teacher.padded_vocab_size) != (student.vocab_size, student.padded_vocab_size):
        fail(
            f"--distill.teacher_dir {teacher_dir} has another vocabulary ({teacher.vocab_size} tokens, padded"
            f" {teacher.padded_vocab_size}) than the student ({student.vocab_size}, padded {student.padded_vocab_size});"
            " the teacher must use the student's tokenizer"
        )
    return teacher


def load_teacher(fabric: L.Fabric, teacher_dir: Path, config: Config, seq_len: int):
    """The frozen teacher in eval mode, on the student's devices and precision (sharded like the student under FSDP:
    built on the meta device, its weights broadcast from rank 0 shard by shard)."""
    sharded = is_sharded(fabric)
    with fabric.init_module(empty_init=sharded):
        teacher = GPT(config)
    if not sharded:
        teacher.load_state_dict(load_lazy_state_dict(Path(teacher_dir) / "lit_model.pth"))
    teacher.requires_grad_(False)
    teacher.max_seq_length = seq_len
    if sharded:
        teacher = fabric.setup_module(teacher)
        load_full_weights(fabric, teacher, Path(teacher_dir) / "lit_model.pth")
    else:  # no DDP wrapper: it has nothing to synchronise
        teacher = fabric.to_device(fabric.strategy.precision.convert_module(teacher))
    return teacher.eval()


def distillation_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, alpha: float, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, cross-entropy, KL) averaged over the predicted tokens (targets other than -100)."""
    ce = chunked_cross_entropy(logits, targets)
    student = F.log_softmax(logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_token = F.kl_div(student, teacher, log_target=True, reduction="none").sum(-1)  # KL(teacher || student)
    kl = per_token[targets != -100].mean() * temperature**2
    return alpha * ce + (1 - alpha) * kl, ce, kl


def training_loss(
    fabric: L.Fabric,
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    teacher,
    distill: Optional[DistillArgs],
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The loss to back-propagate and, when distilling, the detached (cross-entropy, KL) pair to log."""
    if teacher is None:
        return chunked_cross_entropy(logits, targets), None
    with torch.no_grad(), fabric.autocast():
        teacher_logits = teacher(input_ids)
    loss, ce, kl = distillation_loss(logits, teacher_logits, targets, distill.alpha, distill.temperature)
    return loss, torch.stack((ce.detach(), kl.detach()))
