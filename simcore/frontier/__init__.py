"""Accuracy against throughput in one command (``simcore frontier``): a sweep of replays for tokens/s, the
evals it needs for perplexity (each run once and reused wherever the masks do not depend on the cache,
resumable), and the DIP paper's comparisons at equal accuracy: the best tokens/s within perplexity budgets
(its Table 2), Pareto plots, the best γ and the DRAM saved at equal throughput.

budget.py holds the arithmetic (budgets, interpolation between densities); evals.py the reuse rule, the eval
log and the eval processes; run.py the whole run; summary.py and plots.py the outputs; command.py the CLI.
"""

from simcore.frontier.budget import DEFAULT_RELATIVE, Best, Budget, best_within, parse_budgets, reach
from simcore.frontier.run import FrontierPlan, FrontierResult, plan_frontier, run_frontier

__all__ = [
    "DEFAULT_RELATIVE",
    "Best",
    "Budget",
    "FrontierPlan",
    "FrontierResult",
    "best_within",
    "parse_budgets",
    "plan_frontier",
    "reach",
    "run_frontier",
]
