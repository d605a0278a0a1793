"""A picture of the per-channel, per-model credit: one grouped bar per channel."""

from __future__ import annotations

from pathlib import Path

from creditflow.config import MODELS
from creditflow.summary import credit_by_channel


def plot_credit_by_channel(client: object, out: Path) -> Path:
    """Write a PNG of revenue credited per channel under each model; returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = credit_by_channel(client)
    channels = sorted(table, key=lambda c: -max(v[1] for v in table[c].values()))
    models = [m for m in MODELS if any(m in by_model for by_model in table.values())]
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(12, 5.5))
    for i, model in enumerate(models):
        xs = [c + i * width for c in range(len(channels))]
        ax.bar(xs, [table[ch].get(model, (0.0, 0.0))[1] for ch in channels], width, label=model)
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(channels))], channels, rotation=20, ha="right")
    ax.set_ylabel("revenue credited")
    ax.set_title("Revenue credited per channel, by attribution model")
    ax.legend(ncols=3, fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
