"""The report's statistics: mean ± sd over seeds, and paired differences (same task and
seed) with their 95 % t-intervals."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import TypeVar

K = TypeVar("K")


def t_interval(diffs: list[float]) -> tuple[float, float, float] | None:
    """(mean, low, high) of a 95 % t-interval, None for fewer than 2 values."""
    if len(diffs) < 2:
        return None
    from scipy.stats import t

    m, sd = statistics.mean(diffs), statistics.stdev(diffs)
    h = float(t.ppf(0.975, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    return m, m - h, m + h


def paired(values: Iterable[tuple[K, float]], base: Mapping[K, float]) -> list[float]:
    """Each value minus ``base``'s value of the same pair (the same task and seed), in
    ``values``' order; a value whose pair ``base`` lacks is left out."""
    return [v - base[k] for k, v in values if k in base]


def per_seed_means(values: Iterable[tuple[tuple[str, int], float]], base: Mapping[tuple[str, int], float],
                   tasks: tuple[str, ...], seeds: Iterable[int]) -> list[float]:
    """Per seed: the mean over ``tasks`` of the paired difference (value - base, keyed by
    (task, seed)), for the seeds where the pairs cover every task."""
    rows = list(values)
    out = []
    for s in seeds:
        d = paired(((k, v) for k, v in rows if k[1] == s and k[0] in tasks), base)
        if len(d) == len(tasks):
            out.append(statistics.mean(d))
    return out


def cell(vals: list[float]) -> str:
    """mean ± sd (one decimal), the one value, or — for none."""
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"


def diff_cell(d: list[float], unit: str = "seed") -> str:
    """mean [95 % t-interval] of paired differences, the one difference, or — for none."""
    if not d:
        return "—"
    ci = t_interval(d)
    if ci is None:
        return f"{d[0]:+.1f} (1 {unit})"
    return f"{ci[0]:+.1f} [{ci[1]:+.1f}, {ci[2]:+.1f}]"
