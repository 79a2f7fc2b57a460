"""Warm start of a new study: uniform configurations along the budget's feasible stretch.

A budgeted search is asked for the most accurate configurations that meet the budget, and the
uniform configurations (every layer pruned alike, as a baseline sweep would) are the bar it must
clear. Spreading the first trials evenly along the whole uniform line wastes most of them on
points that miss the budget, so with a budget the warm start spends them on the line's feasible
stretch instead:

1. the first trial is the most pruned uniform point (``t = 1``);
2. **aim**: each next one is placed by safeguarded regula falsi on the trial's worst constraint
   value ``c(t)`` (``<= 0`` is feasible) between the least pruned feasible point and the most
   pruned infeasible one, starting from the dense network (``t = 0``, measured before the
   trials); the guess is kept at least 10 % of the bracket away from its ends and moved to an
   untried point of the step grid. The aim ends when the bracket is one grid step wide or after
   half of the ``n`` trials;
3. **fill**: the remaining trials go to the untried grid points of the feasible stretch
   ``[edge, 1]``, each the one farthest from every point tried so far (ties: the less pruned),
   so the warm points cover the in-budget latency range evenly, from the budget's edge to the
   fastest network;
4. it stops after ``n`` trials, when no untried grid point is left, or when even the most pruned
   point is infeasible (no uniform point meets the budget).

The sampler then explores per-layer differences around those points. Without budgets (or when
the dense network already meets them) the ``n`` points are spread evenly instead
(:func:`prunebench.search.space.warm_start_params`). The trials carry the user attribute
``prunebench_warm_start_t``; only the process that created the study steers the line (a trial
another worker ran ends it early, which costs nothing but the aim).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from prunebench.search.space import SearchSpace, uniform_line_params, warm_start_params

T_ATTR = "prunebench_warm_start_t"


class BudgetLineStart:
    """Enqueues the warm-start trials; pass :meth:`callback` to ``study.optimize``."""

    def __init__(self, space: SearchSpace, n: int, dense_violation: float | None) -> None:
        self.space, self.n = space, int(n)
        # t -> worst constraint value; the dense network is t = 0
        self.seen: dict[float, float] = {}
        self.aimed = dense_violation is not None and dense_violation > 0
        if self.aimed:
            self.seen[0.0] = float(dense_violation)
        self.tried: list[float] = []  # fractions t enqueued so far
        self.ran = 0
        self.aim_left = max(1, (self.n + 1) // 2)  # aimed trials, the first (t = 1) included
        self.done = False

    def start(self, study: optuna.Study) -> None:
        """Enqueue the first trial (aimed) or all ``n`` evenly spread ones."""
        if self.n <= 0:
            self.done = True
            return
        if not self.aimed:
            for i, params in enumerate(warm_start_params(self.space, self.n), 1):
                study.enqueue_trial(params, user_attrs={T_ATTR: i / self.n})
            self.done = True
            return
        self._enqueue(study, 1.0)

    def _enqueue(self, study: optuna.Study, t: float) -> None:
        self.tried.append(t)
        study.enqueue_trial(uniform_line_params(self.space, t), user_attrs={T_ATTR: t})

    def callback(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """After each trial: record an aimed trial's result and enqueue the next point."""
        t = trial.user_attrs.get(T_ATTR)
        if self.done or t is None:
            return
        self.ran += 1
        if trial.state == TrialState.COMPLETE and trial.constraints:
            self.seen[float(t)] = max(trial.constraints.values())
        nxt = self.next_t() if self.ran < self.n else None
        if nxt is None:
            self.done = True
            return
        self._enqueue(study, nxt)

    def next_t(self) -> float | None:
        """The next fraction along the uniform line, or None when the warm start is done."""
        feasible = [t for t, c in self.seen.items() if c <= 0]
        if not feasible:
            return None  # even the most pruned uniform point misses the budget
        edge = min(feasible)
        if self.aim_left > 1:
            self.aim_left -= 1
            guess = self._aim(edge)
            if guess is not None:
                return guess
            self.aim_left = 0  # the bracket is one grid step wide
        return self._fill(edge)

    def _aim(self, hi: float) -> float | None:
        """Regula falsi between the most pruned infeasible point below ``hi`` and ``hi``."""
        below = [t for t, c in self.seen.items() if c > 0 and t < hi]
        lo = max(below) if below else 0.0
        c_lo, c_hi = self.seen.get(lo), self.seen[hi]
        width = hi - lo
        if c_lo is None or c_lo == c_hi:
            guess = lo + width / 2
        else:
            guess = lo + width * c_lo / (c_lo - c_hi)
        guess = min(max(guess, lo + 0.1 * width), hi - 0.1 * width)
        # the closest untried grid point strictly inside the bracket
        candidates = sorted((abs(g - guess), g) for g in self._grid() if lo < g < hi)
        for _, g in candidates:
            if self._untried(g):
                return g
        return None

    def _fill(self, edge: float) -> float | None:
        """The untried grid point of ``[edge, 1]`` farthest from every tried point (``edge`` and
        ``1`` among them)."""
        candidates = [g for g in self._grid() if edge < g < 1.0 and self._untried(g)]
        if not candidates:
            return None
        return max(candidates, key=lambda g: (min(abs(g - t) for t in self.tried), -g))

    def _untried(self, t: float) -> bool:
        """No tried fraction gives the same grid configuration as ``t``."""
        key = _key(uniform_line_params(self.space, t))
        return all(_key(uniform_line_params(self.space, u)) != key for u in self.tried)

    def _grid(self) -> list[float]:
        s = self.space.spec
        steps = []
        if self.space.groups:
            steps.append(s.ratio_step / s.max_ratio)
        if self.space.gated:
            steps.append(s.keep_step / (1.0 - s.keep_min))
        step = min(steps) if steps else 1.0
        n = max(1, round(1.0 / step))
        return [i / n for i in range(1, n + 1)]


def _key(params: dict[str, Any]) -> str:
    return repr(sorted(params.items()))
