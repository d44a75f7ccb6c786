"""One config per experiment: `configs/<name>.py` for `experiments/<name>.py`.

Each module defines TITLE, a frozen `Config` (a subclass of
`common.ExperimentConfig`) and `get_config(quick)`; its docstring names the
paper's result, the command (`python -m experiments.<name>`), the runtime and
the expected numbers.
"""

from advjax.attack import PAPER

# The paper's §4.1 procedure, the attack of every committed table.
PAPER_ATTACK = PAPER

# The weaker attack of every quick run (seconds-sized; its distortions are
# larger than the paper's c search gives): 3 bisections of c, 30 L-BFGS-B steps.
QUICK_ATTACK = PAPER._replace(bisect_steps=3, maxiter=30)
