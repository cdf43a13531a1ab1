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
    n_seq = result["settings"]["seq_len"]

    fig, ax = plt.subplots(figsize=(7, 3.5))
    colors = ["tab:red" if layer in result["lazy_layers"] else "tab:blue" for layer in layers]
    ax.bar(layers, result["max_rank"], color=colors)
    ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"lazy below {threshold:g}")
    ax.set(xlabel="layer", ylabel="MaxRank (max over heads)", title=f"{result['name']}: attention rank per layer (T={n_seq})")
    ax.legend()
    save(fig, out_dir / "max_rank.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(layers, result["avg_mass"], marker="o")
    ax.set(xlabel="layer", ylabel="AvgMass (mean over heads)", title=f"{result['name']}: columns holding {result['settings']['eta']:.0%} of the mass")
    save(fig, out_dir / "avg_mass.png")

    rank = np.array(result["rank"]).T  # heads x layers
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * rank.shape[1] + 2), max(3, 0.3 * rank.shape[0] + 1.5)))
    image = ax.imshow(rank, aspect="auto", cmap="viridis", origin="lower")
    collapsed = np.argwhere(rank < threshold)
    ax.scatter(collapsed[:, 1], collapsed[:, 0], marker="s", s=30, facecolors="none", edgecolors="red", label=f"rank < {threshold:g}")
    fig.colorbar(image, ax=ax, label="Rank(h, l)")
    ax.set(xlabel="layer", ylabel="head", title=f"{result['name']}: {len(collapsed)} of {rank.size} heads collapsed")
    ax.legend(loc="upper right", fontsize=8)
    save(fig, out_dir / "rank_heatmap.png")

    examples = result.get("example_attention")
    if examples:
        potent = int(np.argmax(result["max_rank"]))
        lazy = int(np.argmin(result["max_rank"]))
        heads = min(4, len(result["rank"][0]))
        fig, axes = plt.subplots(2, heads, figsize=(2.6 * heads, 5.4), squeeze=False)
        for row, (label, layer) in enumerate((("potent", potent), ("lazy", lazy))):
            maps = np.array(examples[layer])
            for head in range(heads):
                axes[row][head].imshow(maps[head], cmap="magma", vmin=0, vmax=1)
                axes[row][head].set_title(f"{label} layer {layer}, head {head}", fontsize=8)
                axes[row][head].axis("off")
        fig.suptitle(f"{result['name']}: attention maps of one window")
        save(fig, out_dir / "attention_maps.png")


def plot_trajectory(results: dict, out_dir: Path) -> None:
    names = list(results)
    grid = np.array([results[name]["max_rank"] for name in names])
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * grid.shape[1] + 2), max(3, 0.4 * len(names) + 1.5)))
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    fig.colorbar(image, ax=ax, label="MaxRank")
    ax.set(xlabel="layer", title="MaxRank per layer across checkpoints")
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
        ax.plot([step * tokens_per_step for step in steps], [curves[key][step] for step in steps], style, label=label, markersize=4)
    ax.set(xlabel="training tokens", ylabel="loss (nats per token)", title=title)
    ax.legend()
    save(fig, path)


def save(fig, path: Path) -> None:
    fig.tight_layout()
    temporary = path.with_name(path.stem + ".partial.png")
    fig.savefig(temporary, dpi=110)
    plt.close(fig)
    temporary.replace(path)
