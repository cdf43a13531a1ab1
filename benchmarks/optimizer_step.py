"""Time of one AdamW step on a CPU: torch's per-tensor loop (what stock `litgpt pretrain` runs on a CPU) against the
fused kernel (what `litgpt inheritune pretrain` runs there), on the parameters of train_throughput.py's two models.

Builds each model (random weights, random gradients), then alternates the two optimizers --repeats times; each
figure is the best of its repeats of --steps steps (other load on the machine only slows a run down). Also reports
the largest difference between the weights the two updated from the same start over those steps (float rounding).

    .venv/bin/python benchmarks/optimizer_step.py [--steps 20] [--repeats 3]
"""

import argparse
import json
import os
import time

import torch
from litgpt.config import Config
from litgpt.model import GPT

from train_throughput import TINY_MODEL  # benchmarks/ is on the path when this runs as a script

# train_throughput.py's tiny model and the demo's 10 inherited blocks of SmolLM2-135M(-Instruct: the same shapes)
MODELS = {"tiny": TINY_MODEL, "demo": dict(name="SmolLM2-135M", n_layer=10)}


def seconds_per_step(params: list, fused: bool, steps: int) -> float:
    optimizer = torch.optim.AdamW(params, fused=fused)
    optimizer.step()  # allocates the state
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def measure(model: str, steps: int, repeats: int) -> dict:
    torch.manual_seed(0)
    config = Config(**MODELS[model]) if model == "tiny" else Config.from_name(**MODELS[model])
    weights = [p.detach() for p in GPT(config).parameters()]
    grads = [torch.randn_like(w) for w in weights]

    def fresh() -> list:
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        for param, grad in zip(params, grads):
            param.grad = grad
        return params

    times = {"per_tensor": [], "fused": []}
    for _ in range(repeats):
        for which in times:
            times[which].append(seconds_per_step(fresh(), which == "fused", steps))
    per_tensor, fused = fresh(), fresh()
    for params, use_fused in ((per_tensor, False), (fused, True)):
        seconds_per_step(params, use_fused, steps)
    return {
        "parameters": sum(w.numel() for w in weights),
        "tensors": len(weights),
        "per_tensor_ms": round(min(times["per_tensor"]) * 1000, 2),
        "fused_ms": round(min(times["fused"]) * 1000, 2),
        "fused_over_per_tensor": round(min(times["fused"]) / min(times["per_tensor"]), 3),
        "max_abs_weight_difference": max((a - b).abs().max().item() for a, b in zip(per_tensor, fused)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each optimizer, alternating")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")
    report = {model: measure(model, args.steps, args.repeats) for model in MODELS}
    report["threads"] = torch.get_num_threads()
    report["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
