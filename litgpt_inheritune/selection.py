"""Which blocks to inherit, by a measure from `analyze`'s attention.json: a prefix, a contiguous window, or the best set.

Every measure gives one score per block (0-based) and a direction; the N kept blocks always stay in model order.
"""

from typing import Literal

# measure -> (what it reads from attention.json, whether a high score marks a block worth keeping)
MEASURES = {
    "rank": ("max_rank: MaxRank, max over heads of the mean approximate rank", True),
    "mass": ("avg_mass: AvgMass, mean over heads of the columns holding eta of the mass", True),
    "block_influence": ("block_influence: 1 - cos(input, output) of the block (ShortGPT)", True),
    "angular_distance": ("angular_distance: arccos(cos)/pi between a window's input and output (Gromov et al.)", True),
    "skip_loss": ("skip_loss: loss increase when the block alone is skipped", True),
    "entropy": ("entropy: attention entropy, mean over heads", True),
    "sink_mass": ("sink_mass: attention on the first token, mean over heads (a high share marks a lazy block)", False),
}
Rule = Literal["prefix", "window", "best", "cut"]


def layer_scores(analysis: dict, measure: str) -> list[float]:
    """One score per block: per-head measures are averaged over heads; angular_distance is each block's own (n = 1)."""
    if measure == "angular_distance":
        values = analysis.get("angular_distance", {}).get("1")
    else:
        values = analysis.get({"rank": "max_rank", "mass": "avg_mass"}.get(measure, measure))
    if values is None:
        raise ValueError(
            f"the analysis has no {MEASURES[measure][0].split(':')[0]!r}; rerun `litgpt inheritune analyze`"
            + (" with 1 in --window_sizes" if measure == "angular_distance" else "")
        )
    return [sum(v) / len(v) if isinstance(v, list) else v for v in values]


def window_scores(analysis: dict, measure: str, n: int) -> list[float]:
    """The score of every window [start, start + n): the mean of its blocks' scores, or for angular_distance the
    distance between the window's input and output, d(start, n)."""
    if measure == "angular_distance":
        distances = analysis.get("angular_distance", {}).get(str(n))
        if distances is None:
            raise ValueError(
                f"the analysis has no angular distance for windows of {n} blocks; rerun `litgpt inheritune"
                f" analyze` with {n} in --window_sizes"
            )
        return distances
    scores = layer_scores(analysis, measure)
    return [sum(scores[start : start + n]) / n for start in range(len(scores) - n + 1)]


def select_blocks(analysis: dict, measure: str, rule: Rule, n: int) -> dict:
    """The n blocks chosen by ``rule`` on ``measure``, with the scores that chose them (for provenance.json).

    prefix: blocks 0..n-1 (the paper's default; the scores are only recorded). window: the contiguous n blocks with
    the best window score, earliest on ties. best: the n blocks with the best scores, earliest on ties, in model order.
    cut: every block but the contiguous L - n blocks with the worst window score (for angular_distance the smallest
    d(start, L - n): Gromov et al.'s and ReplaceMe's choice of blocks to remove), earliest on ties; block 0 always
    stays, so that the cut has a block before it (where `init --bridge linear` folds its map).
    """
    if measure not in MEASURES:
        raise ValueError(f"--select {measure} is not a measure; valid: first, {', '.join(MEASURES)}")
    higher_is_better = MEASURES[measure][1]
    scores = layer_scores(analysis, measure)
    if not 1 <= n <= len(scores):
        raise ValueError(f"--n_layers {n} is out of range; valid: 1..{len(scores)}")
    sign = 1 if higher_is_better else -1
    record = {"measure": measure, "rule": rule, "higher_is_better": higher_is_better, "layer_scores": scores}
    if rule == "prefix":
        layers = list(range(n))
    elif rule == "window":
        windows = window_scores(analysis, measure, n)
        start = max(range(len(windows)), key=lambda i: (sign * windows[i], -i))
        layers = list(range(start, start + n))
        record.update(window_start=start, window_stop=start + n, window_score=windows[start])  # [start, stop)
    elif rule == "best":
        layers = sorted(sorted(range(len(scores)), key=lambda i: (-sign * scores[i], i))[:n])
    elif rule == "cut":
        cut = len(scores) - n
        if cut == 0:
            layers = list(range(n))
        else:
            windows = window_scores(analysis, measure, cut)
            start = min(range(1, len(windows)), key=lambda i: (sign * windows[i], i))
            layers = [i for i in range(len(scores)) if not start <= i < start + cut]
            record.update(cut_start=start, cut_stop=start + cut, cut_score=windows[start])  # [start, stop)
    else:
        raise ValueError(f"--keep {rule} is not a rule; valid: prefix, window, best, cut")
    return dict(record, layers=layers, kept_scores=[scores[i] for i in layers])
