"""The result of `kerasmtl.evaluation.compare_with_single_task`: one row per
task (the multi-task and single-task models' primary metric and the relative
improvement), Δm, the reports and the budget, as a plain-text table or JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from kerasmtl.model import MultiTaskModel


@dataclass(frozen=True)
class ComparisonRow:
    """One task's primary metric for the multi-task and single-task model."""

    task: str
    metric: str
    higher_is_better: bool
    mtl: float
    stl: float
    improvement: float  # relative, positive = MTL better; NaN when stl == 0


@dataclass
class Comparison:
    """Multi-task vs single-task results on the same data and budget.

    `delta_m` is a fraction (NaN when a single-task value is 0); `stl_reports`
    holds each baseline's `task_report` entry for its task; `budget` the epochs,
    batch size, optimizer config and seed.
    """

    rows: list[ComparisonRow]
    delta_m: float
    mtl_report: dict[str, dict[str, float]]
    stl_reports: dict[str, dict[str, float]]
    budget: dict = field(default_factory=dict)
    multi_task_model: MultiTaskModel | None = field(default=None, repr=False)
    single_task_models: dict[str, MultiTaskModel] = field(default_factory=dict, repr=False)

    def table(self) -> str:
        """One aligned plain-text table: task | metric | MTL | STL | Δ, then Δm."""
        header = ("task", "metric", "MTL", "STL", "Δ")
        lines = [
            (r.task, f"{r.metric} ({'↑' if r.higher_is_better else '↓'})",
             f"{r.mtl:.4f}", f"{r.stl:.4f}", _percent(r.improvement))
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in [header, *lines]) for i in range(5)]
        # Text columns left-aligned, numbers right-aligned.
        fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
        out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        out += [fmt.format(*line) for line in lines]
        out.append(f"Δm = {_percent(self.delta_m)} (mean relative improvement of "
                   "multi-task over single-task; positive = multi-task better)")
        return "\n".join(out)

    def to_dict(self) -> dict:
        """The numbers (not the models), as plain JSON-serializable Python."""
        return {"rows": [asdict(r) for r in self.rows], "delta_m": self.delta_m,
                "mtl_report": self.mtl_report, "stl_reports": self.stl_reports,
                "budget": self.budget}


def _percent(fraction: float) -> str:
    return "n/a" if math.isnan(fraction) else f"{100 * fraction:+.2f}%"
