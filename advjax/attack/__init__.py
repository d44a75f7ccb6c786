"""The §4.1 attack, readable top to bottom.

* `box_lbfgs.py`: the public attack `lbfgs`, its stages in order (`attack`);
* `search.py`: the c search (init / step / done);
* `_lbfgsb.py`: the box-constrained L-BFGS solves;
* `boundary.py`: the steps that end on the decision boundary;
* `ddn.py`: the first-order pass (DDN), also public;
* `targets.py`: random targets and the untargeted strategies;
* `options.py`: the composed options and `PAPER`.

The criteria (loss, success, distortion) are `advjax.criteria`; the input
checks `advjax.inputs`.
"""

from advjax.attack.ddn import DDNOptions, DDNResult  # the function: advjax.attack.ddn.ddn
from advjax.attack.box_lbfgs import AttackResult, lbfgs, solve_batch
from advjax.attack.options import (PAPER, AttackOptions, Boundary, FirstOrder, Search,
                                   Solve, Untargeted)
from advjax.attack.search import penalty
from advjax.attack.targets import random_targets, seeded_targets

__all__ = ["AttackOptions", "AttackResult", "Boundary", "DDNOptions", "DDNResult",
           "FirstOrder", "PAPER", "Search", "Solve", "Untargeted", "lbfgs",
           "penalty", "random_targets", "seeded_targets", "solve_batch"]
