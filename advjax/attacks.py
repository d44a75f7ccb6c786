"""The §4.1 attack's public names where earlier advjax had them (`advjax.attack`)."""

from advjax.attack import (PAPER, AttackOptions, AttackResult, Boundary,  # noqa: F401
                           FirstOrder, Search, Solve, Untargeted, lbfgs, penalty,
                           random_targets, solve_batch)
