"""The two pictures of a run: ``loss.png`` (training and validation loss per epoch) and ``forecast.png`` (the test
split against the streaming one-step-ahead forecast). Matplotlib with the Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def loss_plot(path: Path, history: list[dict[str, float]], best_epoch: int) -> None:
    """Loss and val_loss per epoch (log scale), the restored best epoch marked."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [h["loss"] for h in history], marker=".", label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], marker=".", label="validation")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best (epoch {best_epoch})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted MSE (model units)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def forecast_plot(path: Path, series, rows: np.ndarray, forecast: np.ndarray, first_scored: int, title: str) -> None:
    """Actual targets on the test split against the horizon-1 streaming forecast made at each row.

    ``forecast[i]`` is the forecast, made at ``rows[i]``, of the targets at ``rows[i] + 1``; it is drawn there.
    """
    plt = _pyplot()
    width = series.targets.shape[1]
    fig, axes = plt.subplots(width, 1, figsize=(9, 3 * width), dpi=100, squeeze=False)
    shown = np.arange(rows[0], rows[-1] + 2)
    for j, ax in enumerate(axes[:, 0]):
        ax.plot(shown, series.targets[shown, j], color="black", linewidth=1, label="actual")
        ax.plot(rows + 1, forecast[:, j], color="tab:orange", linewidth=1, label="streaming forecast, horizon 1")
        ax.axvline(first_scored, color="grey", linestyle=":", label="first scored position")
        ax.set_ylabel(series.target_names[j])
        ax.legend(loc="best", fontsize="small")
    bottom = axes[-1, 0]
    if series.time is not None:
        ticks = np.linspace(shown[0], shown[-1], 6).astype(int)
        bottom.set_xticks(ticks, [str(series.time[i]) for i in ticks])
        bottom.set_xlabel(series.time_column)
    else:
        bottom.set_xlabel("row")
    axes[0, 0].set_title(f"test split: {title}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
