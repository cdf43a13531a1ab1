"""Runs every benchmark whose figure the README's Results table quotes and prints that table (markdown).

Each benchmark runs as its own process, one after the other; the ones that compare two programs alternate them
inside (train_throughput.py, eval_speed.py, analyze_speed.py, inherit_memory.py; the last twice, on the 1.27 GB
synthetic reference and on the 1.5B job's 6.9 GB true shape, which needs ~15 GB of free disk). Beside each figure
stand the 1-minute load average (the larger of the values before and after) and the cores that other processes kept
busy while it ran: the machine's busy CPU time (/proc/stat) less the benchmark's own (its process tree's, from
getrusage), over the wall time. The load average counts the benchmark's own threads (two on two cores), so the mark
comes from the second: a figure taken while other processes used more than --busy_cores on average is marked "busy",
since other work slows the two sides of a ratio unequally. Not run here: benchmarks/full_size.py (the 1.5B job's
true shape, which needs ~17 GB of memory and an hour) and recipes/reproduce_gpt2.py (20 minutes); their rows are
left to their commands.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only train_throughput,eval_speed] [--out results.md]

--quick runs each benchmark at a token size (a few steps, items, windows) to check that all of them work end to
end; its figures say nothing about speed.
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def last_json(stdout: str) -> dict:
    """The last JSON object a benchmark printed (they end with json.dumps(report, indent=2))."""
    start = stdout.rfind("\n{")
    return json.loads(stdout[start + 1 if start >= 0 else stdout.index("{") :])


def init_rows(out: dict) -> list[tuple[str, str]]:
    shape = (
        f"{out['reference']} reference of {out['reference_bytes'] / 1e9:.2f} GB, keep {out['n_layers']} →"
        f" {out['target_bytes'] / 1e9:.2f} GB"
    )
    return [
        (
            f"`init` peak memory above the import baseline / target bytes ({shape})",
            f"**{out['init_peak_over_target']:.2f}** (a plain `torch.load` of the reference: {out['torch_load_peak_over_target']:.2f})",
        ),
        (
            "`init` wall time / copying the kept bytes with read+write, page cache warm, each in a fresh process after the"
            f" same imports and into an output just removed ({shape})",
            f"**{out['init_time_over_copy']:.2f}** ({out['init_seconds']:.2f} s vs {out['copy_kept_bytes_seconds']:.2f} s)",
        ),
    ]


def throughput_rows(label: str):
    def rows(out: dict) -> list[tuple[str, str]]:
        return [
            (
                f"`pretrain` tokens/s / stock `litgpt pretrain` tokens/s, {label}",
                f"**{out['ratio']:.2f}** ({out['ours_tokens_per_sec']:,.0f} vs {out['stock_tokens_per_sec']:,.0f} tokens/s,"
                f" best of {out['settings']['repeats']} each; median step ratio {out['ratio_of_median_steps']:.3f},"
                f" median of the {out['settings']['repeats']} alternating pairs' ratios {out['median_pair_ratio']:.3f})",
            )
        ]

    return rows


def optimizer_rows(out: dict) -> list[tuple[str, str]]:
    return [
        (
            f"AdamW step time, fused / torch's per-tensor loop (stock `litgpt pretrain` on a CPU), {label}",
            f"**{r['fused_over_per_tensor']:.2f}** ({r['fused_ms']} ms vs {r['per_tensor_ms']} ms; weights within"
            f" {r['max_abs_weight_difference']:.1e})",
        )
        for label, r in (
            (f"tiny model ({out['tiny']['parameters'] / 1e6:.1f}M parameters)", out["tiny"]),
            (f"the demo's 10-block SmolLM2 ({out['demo']['parameters'] / 1e6:.0f}M parameters)", out["demo"]),
        )
    ]


def analyze_rows(out: dict) -> list[tuple[str, str]]:
    rows = [
        (
            "`analyze` with every measure / attention rank and mass alone, SmolLM2-135M",
            f"**{out['all_measures_over_rank_and_mass']:.2f}** (CPU time ratio {out['all_measures_over_rank_and_mass_cpu_time']:.2f};"
            f" {out['ours_seconds']} s vs {out['rank_and_mass_only_seconds']} s)",
        )
    ]
    if "ratio" in out:
        rows.insert(
            0,
            (
                "`analyze` wall time / HF `output_attentions` + per-matrix NumPy SVD, SmolLM2-135M: attention rank and"
                " mass on both sides (and `analyze` with its every measure)",
                f"**{out['rank_and_mass_ratio']:.2f}** ({out['rank_and_mass_only_seconds']} s vs"
                f" {out['straightforward_seconds']} s; every measure: {out['ratio']:.2f}, {out['ours_seconds']} s;"
                f" largest rank difference {out['max_abs_rank_difference']:g})",
            ),
        )
    return rows


def eval_rows(out: dict) -> list[tuple[str, str]]:
    rows = []
    for name in ("zero-shot", "mmlu 5-shot"):
        if name not in out:
            continue
        r = out[name]
        tasks = ", ".join(t.removesuffix("_offline").removeprefix("mmlu_offline_") for t in r["tasks"])
        rows.append(
            (
                f"`evaluate` wall time / lm-eval's HF backend, SmolLM2-135M, {r['items_per_task']} items each of {tasks}"
                f" ({r['shots']}-shot), batch {out['batch_size']}",
                f"**{r['ratio']:.2f}** ({r['ours_seconds']} s vs {r['hf_backend_seconds']} s); per-item log-likelihoods"
                f" within {r['max_abs_loglikelihood_difference']:.1e}",
            )
        )
    return rows


def data_prep_rows(stdout: str) -> list[tuple[str, str]]:
    speedup = re.search(r"speed-up with (\d+) workers: ([\d.]+)x", stdout)
    growth = re.search(r"peak RSS growth from 1x to 10x: (-?[\d.]+) MiB", stdout)
    return [
        (
            f"data preparation tokens/s with {speedup.group(1)} workers / 1 worker, SmolLM2's tokenizer, Lee news text",
            f"**{float(speedup.group(2)):.2f}**",
        ),
        (
            "data preparation peak RSS growth from a corpus to one 10 times larger",
            f"**{float(growth.group(1)):.1f} MiB**",
        ),
    ]


def busy_cpu_seconds(stat: str) -> float:
    """CPU seconds the machine has spent busy since boot, over all cores, from /proc/stat's first line: user, nice,
    system, irq, softirq and steal time (guest time is inside user); idle and iowait are not busy."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in stat.split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def other_cores(busy_before: float, own_cpu_seconds: float, seconds: float) -> float:
    """The cores other processes kept busy over the last ``seconds``: the machine's busy CPU time since
    ``busy_before`` (a ``busy_cpu_seconds`` reading) less what the measured work used itself."""
    others = busy_cpu_seconds(Path("/proc/stat").read_text()) - busy_before - own_cpu_seconds
    return max(0.0, others) / seconds


def run_measured(command: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Runs a benchmark; returns its result, wall seconds and the cores other processes kept busy meanwhile."""
    busy, own, start = busy_cpu_seconds(Path("/proc/stat").read_text()), children_cpu_seconds(), time.perf_counter()
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    seconds = time.perf_counter() - start
    return result, seconds, other_cores(busy, children_cpu_seconds() - own, seconds)


# name: (arguments, arguments for --quick, rows from the parsed output, whether it parses JSON)
BENCHMARKS = {
    "inherit_memory": (["benchmarks/inherit_memory.py"], ["--repeats", "1"], init_rows, True),
    "inherit_memory_true_shape": (
        ["benchmarks/inherit_memory.py", "--reference", "open_llama_3b", "--n_layers", "13"],
        ["--reference", "pythia-14m", "--n_layers", "2", "--repeats", "1"],
        init_rows,
        True,
    ),
    "train_throughput": (
        ["benchmarks/train_throughput.py", "--repeats", "5"],
        ["--steps", "6", "--warmup", "2", "--repeats", "1"],
        throughput_rows("same tiny model, data, settings, eager"),
        True,
    ),
    "train_throughput_loops": (
        ["benchmarks/train_throughput.py", "--per_tensor_optimizer", "--repeats", "5"],
        ["--steps", "6", "--warmup", "2", "--repeats", "1"],
        throughput_rows("same tiny model, data, settings, eager, ours with stock's per-tensor AdamW: the loops alone"),
        True,
    ),
    "optimizer_step": (["benchmarks/optimizer_step.py"], ["--steps", "2", "--repeats", "1"], optimizer_rows, True),
    "train_throughput_compiled": (
        ["benchmarks/train_throughput.py", "--compile", "--repeats", "5"],
        ["--steps", "6", "--warmup", "2", "--repeats", "1"],
        throughput_rows("same tiny model, data, settings, both compiled"),
        True,
    ),
    "train_throughput_demo": (
        ["benchmarks/train_throughput.py", "--model", "demo"],
        ["--steps", "4", "--warmup", "1", "--repeats", "1"],
        throughput_rows("the demo's 10-block SmolLM2, Lee news, eager"),
        True,
    ),
    "analyze_speed": (
        ["benchmarks/analyze_speed.py"],
        ["--num_sequences", "4", "--seq_len", "32", "--repeats", "1"],
        analyze_rows,
        True,
    ),
    "eval_speed": (["benchmarks/eval_speed.py"], ["--limit", "4"], eval_rows, True),
    "data_prep": (["benchmarks/data_prep.py"], ["--copies", "1"], data_prep_rows, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="token sizes: checks that every benchmark runs")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--busy_cores",
        type=float,
        default=0.25,
        help="cores kept busy by other processes above which a figure is marked",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    for name in names:
        if name not in BENCHMARKS:
            parser.error(f"--only {name}: unknown benchmark; choose from {', '.join(BENCHMARKS)}")

    lines = ["| what | figure | load average, other processes' cores | command |", "|---|---|---|---|"]
    failures = []
    for name in names:
        arguments, quick, rows, parses_json = BENCHMARKS[name]
        command = [sys.executable, *arguments, *(quick if args.quick else [])]
        print(f"=== {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        load_before = os.getloadavg()[0]
        result, seconds, others = run_measured(command)
        load = max(load_before, os.getloadavg()[0])
        shown = "`.venv/bin/python " + " ".join(command[1:]) + "`"
        if result.returncode != 0:
            failures.append(name)
            print(result.stderr[-3000:], file=sys.stderr)
            lines.append(f"| {name} | failed (exit code {result.returncode}) | {load:.1f}, {others:.2f} | {shown} |")
            continue
        parsed = last_json(result.stdout) if parses_json else result.stdout
        mark = " (busy)" if others > args.busy_cores else ""
        for what, figure in rows(parsed):
            lines.append(f"| {what} | {figure} | {load:.1f}, {others:.2f}{mark} | {shown} |")
        print(f"    {seconds:.0f} s, load average {load:.1f}, other processes {others:.2f} cores", file=sys.stderr)
    table = "\n".join(lines) + "\n"
    if args.quick:
        table += "\n(--quick: token sizes; these figures check that the benchmarks run, not how fast.)\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    if failures:
        sys.exit(f"failed: {', '.join(failures)}")


if __name__ == "__main__":
    main()
