"""PNG plots of the attention analysis, after the paper's figures (Fig. 1, 8, 11 and 13)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_analysis(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = np.arange(len(result["max_rank"]))
    threshold = result["settings"]["lazy_threshold"]
    sample = f"N={result['settings']['num_sequences']}, T={result['settings']['seq_len']}"

    fig, ax = plt.subplots(figsize=(7, 3.5))
    colors = ["tab:red" if layer in result["lazy_layers"] else "tab:blue" for layer in layers]
    ax.bar(layers, result["max_rank"], color=colors)
    ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"lazy below {threshold:g}")
    ax.set(
        xlabel="layer",
        ylabel="MaxRank (max over heads)",
        title=f"{result['label']}: attention rank per layer ({sample})",
    )
    ax.legend()
    save(fig, out_dir / "max_rank.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(layers, result["avg_mass"], marker="o")
    ax.set(
        xlabel="layer",
        ylabel="AvgMass (mean over heads)",
        title=f"{result['label']}: columns holding {result['settings']['eta']:.0%} of the mass ({sample})",
    )
    save(fig, out_dir / "avg_mass.png")

    rank = np.array(result["rank"]).T  # heads x layers
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * rank.shape[1] + 2), max(3, 0.3 * rank.shape[0] + 1.5)))
    image = ax.imshow(rank, aspect="auto", cmap="viridis", origin="lower")
    collapsed = np.argwhere(rank < threshold)
    ax.scatter(
        collapsed[:, 1],
        collapsed[:, 0],
        marker="s",
        s=30,
        facecolors="none",
        edgecolors="red",
        label=f"rank < {threshold:g}",
    )
    fig.colorbar(image, ax=ax, label="Rank(h, l)")
    ax.set(
        xlabel="layer",
        ylabel="head",
        title=f"{result['label']}: {len(collapsed)} of {rank.size} heads collapsed ({sample})",
    )
    ax.legend(loc="upper right", fontsize=8)
    save(fig, out_dir / "rank_heatmap.png")

    examples = result.get("example_attention")
    if examples:
        potent = int(np.argmax(result["max_rank"]))
        lazy = int(np.argmin(result["max_rank"]))
        heads = len(result["rank"][0])
        fig, axes = plt.subplots(2, heads, figsize=(1.9 * heads + 1, 4.4), squeeze=False)
        for row, (label, layer) in enumerate((("potent", potent), ("lazy", lazy))):
            maps = np.array(examples[layer])
            for head in range(heads):
                image = axes[row][head].imshow(maps[head], cmap="magma", vmin=0, vmax=1)
                axes[row][head].set_title(f"{label} layer {layer}, head {head}", fontsize=7)
                axes[row][head].axis("off")
        fig.colorbar(image, ax=axes, label="attention probability", shrink=0.8)
        fig.suptitle(
            f"{result['label']}: attention maps of the first of N={result['settings']['num_sequences']} windows (T={result['settings']['seq_len']})"
        )
        save(fig, out_dir / "attention_maps.png", tight=False)

    plot_measures(result, out_dir)


def plot_measures(result: dict, out_dir: Path) -> None:
    """Every per-layer measure side by side, each scaled to [0, 1] over the layers, lazy layers marked."""
    measures = {
        "MaxRank": result["max_rank"],
        "AvgMass": result["avg_mass"],
        "block influence": result["block_influence"],
        "angular distance (n=1)": result["angular_distance"].get("1"),
        "skip loss increase": result["skip_loss"],
        "attention entropy": np.mean(result["entropy"], axis=1),
        "first-token mass": np.mean(result["sink_mass"], axis=1),
    }
    measures = {name: np.asarray(values, dtype=float) for name, values in measures.items() if values is not None}
    grid = np.array(
        [(v - v.min()) / (v.max() - v.min()) if v.max() > v.min() else np.zeros_like(v) for v in measures.values()]
    )
    n_layer = grid.shape[1]
    fig, ax = plt.subplots(figsize=(max(7, 0.28 * n_layer + 3), 3.6))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(measures)), list(measures), fontsize=8)
    ax.set_xticks(range(n_layer), [str(layer) for layer in range(n_layer)], fontsize=7)
    for layer in result["lazy_layers"]:
        ax.add_patch(plt.Rectangle((layer - 0.5, -0.5), 1, len(measures), fill=False, edgecolor="red", linewidth=1.5))
        ax.get_xticklabels()[layer].set_color("red")
    fig.colorbar(image, ax=ax, label="scaled to [0, 1] per measure")
    settings = result["settings"]
    ax.set(
        xlabel="layer (lazy in red)",
        title=f"{result['label']}: layer measures side by side (N={settings['num_sequences']},"
        f" T={settings['seq_len']}; skip loss on {settings['skip_sequences']} windows)",
    )
    save(fig, out_dir / "measures.png")


def plot_trajectory(results: dict, out_dir: Path) -> None:
    names = list(results)
    grid = np.array([results[name]["max_rank"] for name in names])
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * grid.shape[1] + 2), max(3, 0.4 * len(names) + 1.5)))
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xticks(range(grid.shape[1]), [str(layer) for layer in range(grid.shape[1])], fontsize=7)
    fig.colorbar(image, ax=ax, label="MaxRank")
    settings = next(iter(results.values()))["settings"]
    ax.set(
        xlabel="layer",
        title=f"MaxRank per layer across checkpoints (N={settings['num_sequences']}, T={settings['seq_len']})",
    )
    save(fig, out_dir / "trajectory.png")


def plot_loss(metrics_files: list[Path], tokens_per_step: int, path: Path, title: str) -> None:
    """Train and validation loss against training tokens, from CSV logs written in order (a resumed run's log
    repeats the steps after its checkpoint: the later value wins)."""
    import csv

    curves = {"loss": {}, "val_loss": {}}
    for metrics_file in metrics_files:
        with open(metrics_file, newline="") as f:
            for row in csv.DictReader(f):
                for key, curve in curves.items():
                    if row.get(key) and row.get("step"):
                        curve[int(float(row["step"]))] = float(row[key])
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label, style in (("loss", "train", ".-"), ("val_loss", "validation", "o-")):
        steps = sorted(curves[key])
        ax.plot(
            [step * tokens_per_step for step in steps],
            [curves[key][step] for step in steps],
            style,
            label=label,
            markersize=4,
        )
    ax.set(xlabel="training tokens", ylabel="loss (nats per token)", title=title)
    ax.legend()
    save(fig, path)


def save(fig, path: Path, tight: bool = True) -> None:
    if tight:
        fig.tight_layout()
    temporary = path.with_name(path.stem + ".partial.png")
    fig.savefig(temporary, dpi=110)
    plt.close(fig)
    temporary.replace(path)


def plot_loss_curves(runs: list[dict], reference_loss, path: Path, title: str) -> None:
    """Validation loss against training tokens, one line per run (``label`` and ``curve``: [tokens, loss] pairs),
    with the reference's level as a dashed line. Runs whose labels differ only in a trailing "(...)" (the seeds of
    one start) share a colour and differ in line style."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    group_of = [run["label"].split(" (")[0] for run in runs]
    groups = list(dict.fromkeys(group_of))
    palette = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20").colors
    styles = ["-", "--", ":", "-."]
    for i, (run, group) in enumerate(zip(runs, group_of)):
        if run["curve"]:
            tokens, losses = zip(*run["curve"])
            color = palette[groups.index(group) % len(palette)]
            style = styles[group_of[:i].count(group) % len(styles)]
            ax.plot(tokens, losses, marker="o", markersize=3, color=color, linestyle=style, label=run["label"])
    if reference_loss is not None:
        ax.axhline(reference_loss, color="black", linestyle="--", linewidth=1, label=f"reference {reference_loss:.3f}")
    ax.set(xlabel="training tokens", ylabel="validation loss", title=title)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(fig, path)
