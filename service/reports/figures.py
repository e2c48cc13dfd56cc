"""The report's plots as inline SVG: accuracy vs iteration, LR schedules, the range test, and
the step size that Prodigy, D-Adaptation and DoG estimate.

Figures are drawn with matplotlib's object API (no pyplot state, safe in a server thread) and
saved as SVG with text kept as text, so a page stays small and works offline. Every line is
thinned to at most `MAX_POINTS` points, keeping each bucket's extremes so spikes survive.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

from clr.policies import make_schedule
from service.reports.comparison import trial_curve
from workers.states import FINISHED_TRIAL_STATES

# matplotlib's tab10, fixed so an arm keeps its colour in every plot of every report.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
MAX_POINTS = 500  # per line in an SVG
SCHEDULE_SAMPLES = 1000  # iterations at which a schedule is evaluated
CURVE_STATES = (*FINISHED_TRIAL_STATES, "running")  # a partial report shows running curves
_RC: dict[Any, Any] = {"svg.fonttype": "none", "svg.hashsalt": "clrstudy", "font.size": 9}
_FIGSIZE = (9.0, 3.4)  # inches


def arm_colors(arms: Sequence[str]) -> dict[str, str]:
    """Each arm's colour, by its position among the study's arms."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(arms)}


def thin(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most `max_points` of `values`: first, last, each bucket's min and max."""
    n = values.size
    if n <= max_points:
        return np.arange(n)
    buckets = (max_points - 2) // 2
    size = -(-n // buckets)
    rows = np.pad(values, (0, buckets * size - n), mode="edge").reshape(buckets, size)
    starts = np.arange(buckets) * size
    picked = np.concatenate(([0, n - 1], starts + rows.argmin(1), starts + rows.argmax(1)))
    return np.unique(np.minimum(picked, n - 1))


def _label(text: str) -> str:
    # "$" starts mathtext and a leading "_" hides a legend entry; arm names are user text.
    text = text.replace("$", r"\$")
    return "\N{ZERO WIDTH SPACE}" + text if text.startswith("_") else text


def to_svg(figure: Figure) -> str:
    """The figure as an SVG element, text kept as text, without a date (stable output)."""
    out = io.StringIO()
    with matplotlib.rc_context(_RC):
        figure.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    return text[text.index("<svg") :]


def new_figure(panels: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure of `panels` axes side by side, with room on the right for the legend.

    Fixed margins rather than a layout engine: constrained layout draws every figure twice.
    """
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=_FIGSIZE)
        figure.subplots_adjust(left=0.07, right=0.83, bottom=0.14, top=0.9, wspace=0.25)
        return figure, list(figure.subplots(1, panels, squeeze=False)[0])


def place_legend(figure: Figure) -> None:
    """The legend of every labelled line, in the room `new_figure` leaves on the right."""
    figure.legend(loc="upper left", bbox_to_anchor=(0.84, 0.9), fontsize=8, frameon=False)


Curve = Callable[[Mapping[str, Any]], tuple[np.ndarray, np.ndarray]]


def step_size_curve(trial: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A trial's evaluation iterations and estimated step sizes `d` (NaN where there is none)."""
    points: Sequence[Mapping[str, Any]] = trial.get("points") or ()
    its = np.fromiter((p["iteration"] for p in points), dtype=float, count=len(points))
    d = np.array([np.nan if p.get("d") is None else p["d"] for p in points], dtype=float)
    return its, d


def _arm_band(
    trials: Sequence[Mapping[str, Any]], curve: Curve = trial_curve
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Iterations, and the mean, min and max of `curve` (default: accuracy) over seeds there;
    None without finite points."""
    curves = []
    for trial in trials:
        its, acc = curve(trial)
        keep = np.isfinite(acc)
        if keep.any():
            curves.append((its[keep], acc[keep]))
    if not curves:
        return None
    grid = np.unique(np.concatenate([its for its, _ in curves]))
    stack = np.full((len(curves), grid.size), np.nan)
    for row, (its, acc) in zip(stack, curves, strict=True):
        inside = (grid >= its[0]) & (grid <= its[-1])  # a diverged seed ends early
        row[inside] = np.interp(grid[inside], its, acc)
    return grid, np.nanmean(stack, 0), np.nanmin(stack, 0), np.nanmax(stack, 0)


def _plot_bands(
    axes: Sequence[Axes],
    bands: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    colors: Mapping[str, str],
) -> None:
    for name, (grid, mean, low, high) in bands.items():
        keep = thin(mean)
        for ax in axes:
            ax.fill_between(grid[keep], low[keep], high[keep], color=colors[name], alpha=0.18, lw=0)
            label = _label(name) if ax is axes[0] else None  # one legend entry per arm
            ax.plot(grid[keep], mean[keep], color=colors[name], lw=1.3, label=label)


def accuracy_figure(results: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    """Held-out accuracy vs iteration per arm (mean line, min-max band over seeds), as SVG.

    With a target, a second panel zooms in near it and marks each arm's iterations to target.
    """
    arms = list(results.get("arms") or {})
    colors = arm_colors(arms)
    trials = [t for t in results.get("trials") or () if t.get("state") in CURVE_STATES]
    bands = {}
    for name in arms:
        band = _arm_band([t for t in trials if t["arm"] == name])
        if band is not None:
            bands[name] = band
    target = report["target"]["accuracy"]
    figure, axes = new_figure(2 if target is not None and bands else 1)
    _plot_bands(axes, bands, colors)
    axes[0].set_title("held-out accuracy (mean, min-max over seeds)")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    if len(axes) == 2:
        zoom = axes[1]
        top = max(float(high.max()) for _, _, _, high in bands.values())
        zoom.set_ylim(target - 0.05, max(top, target) + 0.005)
        zoom.set_title("near the target")
        for ax in axes:
            ax.axhline(target, color="black", ls="--", lw=0.8)
        for row in report["arms"]:
            crossing = row["iterations_to_target"]["mean"]
            if crossing is not None:
                zoom.axvline(crossing, color=colors[row["arm"]], ls=":", lw=1.2)
    if bands:
        place_legend(figure)
    else:
        axes[0].text(0.5, 0.5, "no evaluation yet", ha="center", transform=axes[0].transAxes)
    return to_svg(figure)


def schedule_figure(results: Mapping[str, Any]) -> str:
    """The LR schedule of every arm over its iterations, as SVG (log scale over wide ranges).

    Arms not resolved yet (bounds still "auto", step sizes in epochs, no budget: the
    range test has not ended; parameters still "tuned": the arm's search has not ended) are
    left out.
    """
    arms: Mapping[str, Mapping[str, Any]] = results.get("arms") or {}
    colors = arm_colors(list(arms))
    figure, (ax,) = new_figure()
    lows, highs = [], []
    for name, arm in arms.items():
        policy = arm["policy"]
        params = policy.get("params") or {}
        unresolved = any(v in ("auto", "tuned") or isinstance(v, Mapping) for v in params.values())
        if unresolved or not arm.get("iterations"):
            continue
        schedule = make_schedule(policy["name"], params)
        budget = int(arm["iterations"])
        its = np.unique(np.linspace(0, budget - 1, min(budget, SCHEDULE_SAMPLES)).round())
        lrs = np.fromiter((schedule(int(i)) for i in its), dtype=float, count=its.size)
        keep = thin(lrs)
        ax.plot(its[keep], lrs[keep], color=colors[name], lw=1.2, label=_label(name))
        lows.append(lrs.min())
        highs.append(lrs.max())
    if lows and min(lows) > 0 and max(highs) / min(lows) > 50:
        ax.set_yscale("log")
        # Plain labels: the default ones are mathtext, whose parser dominates the render time.
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
    ax.set_title("learning rate schedule of each arm")
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    if lows:
        place_legend(figure)
    else:
        ax.text(0.5, 0.5, "bounds not known yet", ha="center", transform=ax.transAxes)
    return to_svg(figure)


def step_size_figure(results: Mapping[str, Any]) -> str | None:
    """The step size d each parameter-free arm estimated, against iteration (log scale), as
    SVG: with the policy's lr, which multiplies it, the effective LR these methods chose.
    None when no arm recorded one."""
    arms = list(results.get("arms") or {})
    colors = arm_colors(arms)
    trials = [t for t in results.get("trials") or () if t.get("state") in CURVE_STATES]
    bands = {}
    for name in arms:
        band = _arm_band([t for t in trials if t["arm"] == name], step_size_curve)
        if band is not None:
            bands[name] = band
    if not bands:
        return None
    figure, axes = new_figure()
    _plot_bands(axes, bands, colors)
    ax = axes[0]
    if all(float(low.min()) > 0 for _, _, low, _ in bands.values()):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
    ax.set_title("estimated step size d (mean, min-max over seeds)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("d")
    ax.grid(alpha=0.3)
    place_legend(figure)
    return to_svg(figure)


def range_test_figure(results: Mapping[str, Any]) -> str | None:
    """Accuracy and loss vs LR of the range test with the chosen bounds shaded; None if no test."""
    test = results.get("range_test")
    if not test or not test.get("points"):
        return None
    points = test["points"]

    def column(key: str) -> np.ndarray:
        return np.array([np.nan if p.get(key) is None else p[key] for p in points], dtype=float)

    lr, loss, smoothed, acc = (column(k) for k in ("lr", "loss", "smoothed_loss", "accuracy"))
    figure, (ax,) = new_figure()
    loss_ax = ax.twinx()
    finite = np.isfinite(loss) & np.isfinite(smoothed)
    keep = np.flatnonzero(finite)[thin(smoothed[finite])]
    loss_ax.plot(lr[keep], loss[keep], color="0.75", lw=0.6)
    loss_ax.plot(lr[keep], smoothed[keep], color="0.35", lw=1.2, label="loss (smoothed)")
    if finite.any() and smoothed[finite][0] > 0:
        # A diverging run's last losses would flatten the interesting part of the curve.
        loss_ax.set_ylim(0, min(float(loss[finite].max()), 2 * float(smoothed[finite][0])) * 1.05)
    evaluated = np.flatnonzero(np.isfinite(acc))
    keep = evaluated[thin(acc[evaluated])]
    ax.plot(lr[keep], acc[keep], color="black", lw=1.4, marker=".", ms=3, label="accuracy")
    bounds = results.get("bounds")
    if bounds:
        ax.axvspan(bounds["base_lr"], bounds["max_lr"], color="#2ca02c", alpha=0.15, lw=0)
        for key in ("base_lr", "max_lr"):
            ax.axvline(bounds[key], color="#2ca02c", lw=1)
            ax.annotate(
                f"{key} {bounds[key]:.3g}",
                (bounds[key], 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
            )
    if test.get("ramp") not in (None, "linear"):
        ax.set_xscale("log")
    ax.set_title("LR range test")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("held-out accuracy")
    loss_ax.set_ylabel("training loss")
    place_legend(figure)
    return to_svg(figure)
