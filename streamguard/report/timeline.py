"""timeline.png: each identity's scores over the video, against the threshold.

One panel per identity, sharing the time axis: P(fake) of each sample as dots, the
window score as a line (drawn only where the window holds `min_samples`, i.e. where
the scorer could alert), the threshold as a dashed line, and alert spans shaded.
Matplotlib's object API (no pyplot), so nothing global changes and no display is
needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from streamguard.config import ScoringConfig
from streamguard.report.verdicts import IdentityScores, IdentityVerdict

MAX_PANELS = 12  # beyond this the PNG is unreadable; the rest are in scores.csv
PANEL_HEIGHT_IN = 1.5
WIDTH_IN = 11.0
ALERT_COLOUR = "#d62728"


def panels_to_show(verdicts: list[IdentityVerdict], limit: int = MAX_PANELS) -> list[int]:
    """The identities to draw: all of them, or the `limit` most suspicious, in id order."""
    if len(verdicts) <= limit:
        return [v.identity for v in verdicts]
    ranked = sorted(
        verdicts,
        key=lambda v: (v.alerted, v.max_window_score if v.max_window_score is not None else -1.0, v.samples),
        reverse=True,
    )
    return sorted(v.identity for v in ranked[:limit])


def window_line(scores: IdentityScores, cfg: ScoringConfig) -> np.ndarray:
    """Window score [N], NaN where the window is short of min_samples or after a gap.

    NaN breaks the line, so the plot never joins two sightings of an identity with a
    straight line across the time it was not seen.
    """
    line = np.where(scores.window_n >= cfg.min_samples, scores.window, np.nan)
    gap = np.diff(scores.t, prepend=scores.t[:1]) > cfg.window_s
    return np.where(gap, np.nan, line)


def plot_timeline(
    path: Path,
    scores: dict[int, IdentityScores],
    verdicts: list[IdentityVerdict],
    cfg: ScoringConfig,
    threshold: float,
    title: str,
    duration_s: float | None,
    untrained: bool,
) -> list[int]:
    """Write the PNG at `path`; return the identities drawn."""
    shown = panels_to_show(verdicts)
    by_id = {v.identity: v for v in verdicts}
    n = max(1, len(shown))
    fig = Figure(figsize=(WIDTH_IN, 1.3 + PANEL_HEIGHT_IN * n), layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    heading = title
    if len(shown) < len(verdicts):
        heading += f"  (the {len(shown)} most suspicious of {len(verdicts)} identities; all are in scores.csv)"
    fig.suptitle(heading, fontsize=11, x=0.01, ha="left")
    if untrained:
        fig.text(0.99, 0.995, "UNTRAINED MODEL: these scores mean nothing", color=ALERT_COLOUR,
                 fontsize=11, fontweight="bold", ha="right", va="top")
    if not shown:
        axes[0].text(0.5, 0.5, "no faces found", ha="center", va="center", transform=axes[0].transAxes)
    for ax, identity in zip(axes, shown):
        _draw_identity(ax, scores[identity], by_id[identity], cfg, threshold)
    if duration_s:
        axes[-1].set_xlim(0.0, duration_s)
    axes[-1].set_xlabel("seconds into the video")
    if shown:  # one legend for all panels (an alert span may appear only in a later one)
        entries = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
        axes[0].legend(entries.values(), entries.keys(), loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4,
                       fontsize=8, frameon=False)
    fig.savefig(path, dpi=100)
    return shown


def _draw_identity(ax: Axes, scores: IdentityScores, verdict: IdentityVerdict, cfg: ScoringConfig, threshold: float) -> None:
    for i, span in enumerate(verdict.alerts):
        ax.axvspan(span.start_s, span.end_s, color=ALERT_COLOUR, alpha=0.12, lw=0, label="alert open" if i == 0 else None)
    ax.scatter(scores.t, scores.p_fake, s=9, color="#1f77b4", alpha=0.45, lw=0, label="P(fake) per face")
    ax.plot(scores.t, window_line(scores, cfg), color="#1f77b4", lw=1.8, label=f"window score ({cfg.policy}, {cfg.window_s:g} s)")
    ax.axhline(threshold, color=ALERT_COLOUR, ls="--", lw=1.0, label=f"threshold {threshold:g}")
    ax.set_ylim(-0.03, 1.03)
    ax.set_yticks([0.0, 0.5, 1.0])
    ax.set_ylabel(f"identity {verdict.identity}", rotation=0, ha="right", va="center", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    window = "n/a" if verdict.max_window_score is None else f"{verdict.max_window_score:.2f}"
    summary = f"{verdict.verdict}  ·  mean {verdict.video_score:.2f}  ·  max window {window}  ·  {verdict.samples} samples"
    colour = ALERT_COLOUR if verdict.verdict == "fake" else "black"
    ax.text(0.995, 0.94, summary, transform=ax.transAxes, ha="right", va="top", fontsize=8, color=colour,
            bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1.5})
