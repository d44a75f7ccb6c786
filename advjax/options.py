"""The attack's options (§4.1): one hashable value, every default written once.

`AttackOptions()` is the fast setting; `PAPER` the paper's procedure. Both are
re-exported by `advjax.attacks`, where they are used.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from advjax import _lbfgsb


class AttackOptions(NamedTuple):
  """The attack's options (hashable: static under jit). Defaults live here only.

  The defaults are the fast setting (BUILD_NOTES.md, issue 12): a short c search
  (1 bisection, 5 iterations per solve), its minimiser shrunk back to the
  decision boundary (8 root steps); 100 first-order (DDN, large steps) steps
  from x, shrunk the same way; the closer of the two walked along the boundary
  towards x (10 steps). Untargeted 'all' is one joint search on 'any label but l'.
  `PAPER` is the paper's procedure, which Tables 1–4 use.

  Attributes:
    solver: 'pqn' (batched projected L-BFGS) or 'jaxopt' (jaxopt.LBFGSB per
      example, needs the jaxopt extra).
    c_init: first c of the search (c weighs ‖r‖²).
    c_factor: bracket factor: c times it after a success, divided after a failure.
    bisect_steps: bisections in log c once a success and a failure are known.
    max_bracket: most bracket steps before a lane gives up.
    warm_start: start each solve from the best point so far, not from x.
    maxiter: L-BFGS iterations per solve (warm starts carry progress across
      the c search).
    history: L-BFGS memory m.
    gtol: a solve stops when its projected gradient's max-norm is below this.
    ftol: a solve stops when its relative decrease of f is below this.
    maxls: line-search trials per iteration.
    linesearch: jaxopt only: 'backtracking' or 'zoom'.
    polish_steps: after the search, root-finding steps on α in x + α·r that
      shrink each successful r back to the decision boundary (0: the paper's
      procedure, the penalty's minimiser as it is); also the root steps of
      each refine step.
    refine_steps: then steps along the decision boundary towards x (each one
      margin gradient and a root along the ray), solving min ‖r‖ s.t.
      f(x+r) = l more closely than the penalty (0: none).
    joint: untargeted 'all' only: one search on 'any label but l' (the
      not-l cross-entropy, then the not-l boundary) instead of `screen`
      targeted ones: about twice as fast, but it settles on a label that is
      not always the nearest, so its distortion is ~1–3% larger (BUILD_NOTES,
      issue 12); False: the `screen` nearest labels, the smallest distortion.
    screen: untargeted 'all' with joint=False: attack just the `screen` other
      labels nearest to x by the linearised distance, not all K−1 (0: all).
    first_order_steps: also run this many steps of the first-order DDN attack
      (`advjax.ddn`) from x (joint untargeted: targeted DDN towards the label
      nearest by the linearised distance); after both are shrunk to the
      boundary, the closer of its point and the c search's is walked along
      the boundary (0: none, the paper's procedure). On the conv net the c
      search's minimiser lies ~2% farther than DDN's point and the boundary
      walk cannot close that gap alone (BUILD_NOTES.md, session 4).
    first_order_alpha: the pass's first step size (cosine down to 0.01),
      like its first radius in units of the box's RMS width (1 for [0, 1],
      255 for [0, 255]: the pass does not depend on how x is scaled). foolbox's
      DDN uses 1 in input units; steps several times ‖r‖ make each
      step nearly r = ε·∇/‖∇‖, which explores the boundary like a long DDN
      run: on the conv net, with 50 steps, the attack ended 0.5% closer at
      alpha 6 and gamma 0.1 than at foolbox's 1 and 0.05 (BUILD_NOTES.md,
      session 5).
    first_order_gamma: the pass's radius factor per step (foolbox: 0.05).
    first_order_unit: 'box' (the pass's step sizes and first radius in units
      of the box's RMS width) or 'input' (in input units, as foolbox and
      advjax before session 5).
  """
  solver: str = "pqn"
  c_init: float = 1.0
  c_factor: float = 10.0
  bisect_steps: int = 1
  max_bracket: int = 8
  warm_start: bool = True
  maxiter: int = 5
  history: int = 5
  gtol: float = 1e-5
  ftol: float = 1e-6
  maxls: int = 20
  linesearch: str = "backtracking"
  polish_steps: int = 8
  refine_steps: int = 10
  joint: bool = True
  screen: int = 2
  first_order_steps: int = 100
  first_order_alpha: float = 6.0
  first_order_gamma: float = 0.15
  first_order_unit: str = "box"

  @property
  def solve(self) -> _lbfgsb.SolveOptions:
    """The inner solver's share of the options."""
    return _lbfgsb.SolveOptions(self.maxiter, self.history, self.gtol,
                                self.ftol, self.maxls, self.linesearch)

  def check(self) -> "AttackOptions":
    """These options with their types coerced; raises ValueError if out of range."""
    for f, d, v in zip(self._fields, AttackOptions(), self):
      if isinstance(d, bool) and not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{f}={v!r}: must be True or False.")
      if isinstance(d, int) and not isinstance(d, bool) and (
          isinstance(v, bool) or not float(v).is_integer()):
        raise ValueError(f"{f}={v!r}: must be an integer.")
    o = AttackOptions(*(type(d)(v) for d, v in zip(AttackOptions(), self)))
    if o.solver not in _lbfgsb.SOLVERS:
      raise ValueError(f"solver={o.solver!r}; choose one of {sorted(_lbfgsb.SOLVERS)}.")
    if o.first_order_unit not in ("box", "input"):
      raise ValueError(f"first_order_unit={o.first_order_unit!r}; choose 'box' or 'input'.")
    if o.linesearch not in ("backtracking", "zoom"):
      raise ValueError(f"linesearch={o.linesearch!r}; choose 'backtracking' or 'zoom'.")
    if not (o.c_init > 0 and o.c_factor > 1 and o.bisect_steps >= 0
            and o.max_bracket >= 1 and o.maxiter >= 1 and o.history >= 1
            and o.maxls >= 1 and o.polish_steps >= 0 and o.refine_steps >= 0
            and o.screen >= 0 and o.first_order_steps >= 0
            and o.first_order_alpha > 0 and 0 < o.first_order_gamma < 1):
      raise ValueError(f"{o}: need c_init > 0, c_factor > 1, bisect_steps, "
                       "polish_steps, refine_steps, screen, first_order_steps >= 0, "
                       "max_bracket, maxiter, history, maxls >= 1, first_order_alpha > 0 "
                       "and 0 < first_order_gamma < 1.")
    if o.solver == "jaxopt":
      try:
        with warnings.catch_warnings():  # jaxopt warns that it is unmaintained
          warnings.simplefilter("ignore", DeprecationWarning)
          import jaxopt  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
      except ImportError as e:
        raise ValueError("solver='jaxopt' needs jaxopt: pip install 'advjax[jaxopt]' "
                         "(or use the default solver 'pqn').") from e
    return o


# The paper's procedure (§4.1): the penalty's minimiser at the largest successful
# c of a fine search, solves run to (near) convergence, no boundary step; every
# untargeted label tried. The committed tables use it.
PAPER = AttackOptions(bisect_steps=10, maxiter=100, polish_steps=0,
                      refine_steps=0, joint=False, screen=0, first_order_steps=0)


# Fields added after results were first cached, at the value that behaves as
# advjax did before they existed: a job or cache recorded without them is the
# same job, so it resumes instead of being refused or recomputed.
LEGACY = {"joint": False, "first_order_steps": 0, "first_order_alpha": 1.0,
          "first_order_gamma": 0.05, "first_order_unit": "input"}
# Fields that have no effect while another is 0: left out of the identity then.
INERT = {"first_order_steps": ("first_order_alpha", "first_order_gamma", "first_order_unit")}


def identity(options) -> dict:
  """`AttackOptions` (or its recorded dict) as a dict that is equal across
  advjax versions for the same behaviour: fields at their `LEGACY` value are
  left out, and so are fields `INERT` makes of no effect."""
  d = options._asdict() if hasattr(options, "_asdict") else dict(options)
  inert = {f for k, fs in INERT.items() if d.get(k, LEGACY.get(k)) == 0 for f in fs}
  return {k: v for k, v in d.items()
          if k not in inert and not (k in LEGACY and v == LEGACY[k])}
