"""The attack's options (§4.1): composed records, every default written once.

`AttackOptions` is made of five parts, each a hashable record (static under
jit): the c search (`Search`), the inner L-BFGS solves (`Solve`), the steps
that end on the decision boundary (`Boundary`), the optional first-order pass
(`FirstOrder`, None for none) and the untargeted strategy (`Untargeted`).
`AttackOptions()` is the fast setting; `PAPER` the paper's procedure.

The flat keywords of earlier advjax still work and mean the same thing:
`AttackOptions(bisect_steps=6)`, `AttackOptions(first_order_steps=0)` (no
pass), `opts.first_order_alpha`; `FLAT` lists them (the CLI's flags).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple, Optional

import numpy as np

from advjax import criteria


class Search(NamedTuple):
  """The c search (per example, all lanes advancing together).

  Attributes:
    c_init: first c of the search (c weighs ‖r‖²).
    c_factor: bracket factor: c times it after a success, divided after a failure.
    bisect_steps: bisections in log c once a success and a failure are known.
    max_bracket: most bracket steps before a lane gives up.
    warm_start: start each solve from the best point so far, not from x.
    scale: how the loss and the success margin read the logits
      (`advjax.criteria`): 'spread' (in units of their spread at x: the
      attack is the same on f and on 1e-4·f or 1e4·f) or 'raw' (as they are:
      the paper's loss, `PAPER`, and advjax before session 7).
  """
  c_init: float = 1.0
  c_factor: float = 10.0
  bisect_steps: int = 1
  max_bracket: int = 8
  warm_start: bool = True
  scale: str = "spread"


class Solve(NamedTuple):
  """One box-constrained L-BFGS solve of the penalty at one c.

  Attributes:
    solver: 'pqn' (batched projected L-BFGS) or 'jaxopt' (jaxopt.LBFGSB per
      example, needs the jaxopt extra).
    maxiter: L-BFGS iterations per solve (warm starts carry progress across
      the c search).
    history: L-BFGS memory m.
    gtol: a solve stops when its projected gradient's max-norm is below this.
    ftol: a solve stops when its relative decrease of f is below this.
    maxls: line-search trials per iteration.
    linesearch: jaxopt only: 'backtracking' or 'zoom'.
  """
  solver: str = "pqn"
  maxiter: int = 5
  history: int = 5
  gtol: float = 1e-5
  ftol: float = 1e-6
  maxls: int = 20
  linesearch: str = "backtracking"


class Boundary(NamedTuple):
  """The steps after the search that end on the decision boundary.

  Attributes:
    polish_steps: root steps on α in x + α·r that shrink the c search's
      successful r back to the decision boundary (0: the paper's procedure,
      the penalty's minimiser as it is).
    refine_steps: then steps along the decision boundary towards x (each one
      margin gradient and a root along the ray), solving min ‖r‖ s.t.
      f(x+r) = l more closely than the penalty (0: none).
    root_steps: root steps of every other boundary step: each refine step,
      and the shrinking of the first-order pass's point.
  """
  polish_steps: int = 8
  refine_steps: int = 10
  root_steps: int = 8


class FirstOrder(NamedTuple):
  """The first-order pass (DDN, `advjax.attack.ddn`) from x beside the search.

  Its point and the search's, each shrunk to the boundary, compete; the closer
  is walked along the boundary. On the conv net the c search's minimiser lies
  ~2% farther than DDN's point and the walk cannot close that gap alone
  (BUILD_NOTES.md, "The attack"). Untargeted (joint), it is targeted DDN
  towards the label nearest by the linearised distance.

  Attributes:
    steps: DDN steps.
    alpha: the first step size (cosine down to 0.01), like the first radius in
      units of the box's RMS width (1 for [0, 1], 255 for [0, 255]); foolbox
      uses 1 in input units. Steps several times ‖r‖ make each step nearly
      r = ε·∇/‖∇‖, which explores the boundary like a long DDN run.
    gamma: the radius factor per step (foolbox: 0.05).
    unit: 'box' (step sizes and first radius in units of the box's RMS width)
      or 'input' (in input units, as foolbox).
  """
  steps: int = 100
  alpha: float = 6.0
  gamma: float = 0.15
  unit: str = "box"


class Untargeted(NamedTuple):
  """How an untargeted 'all' attack picks its labels.

  Attributes:
    joint: one search on 'any label but l' (the not-l cross-entropy, then the
      not-l boundary): about twice as fast as `screen` targeted searches, ~1–3%
      larger distortion; False: the `screen` nearest labels.
    screen: with joint=False: attack the `screen` other labels nearest to x by
      the linearised distance, not all K−1 (0: all).
  """
  joint: bool = True
  screen: int = 2


PARTS = {"search": Search, "solve": Solve, "boundary": Boundary,
         "first_order": FirstOrder, "untargeted": Untargeted}
# Flat keyword -> (part, field): the keywords of earlier advjax and the CLI's flags.
FLAT = {**{f: (p, f) for p in ("search", "solve", "boundary", "untargeted")
           for f in PARTS[p]._fields},
        **{f"first_order_{f}": ("first_order", f) for f in FirstOrder._fields}}


class _Options(NamedTuple):
  search: Search = Search()
  solve: Solve = Solve()
  boundary: Boundary = Boundary()
  first_order: Optional[FirstOrder] = FirstOrder()
  untargeted: Untargeted = Untargeted()


class AttackOptions(_Options):
  """The attack's options: five parts (hashable: static under jit).

  The defaults are the fast setting (BUILD_NOTES.md, "The attack"): a short c
  search (1 bisection, 5 iterations per solve), its minimiser shrunk back to
  the decision boundary (8 root steps); 100 first-order steps from x, shrunk
  the same way; the closer walked along the boundary towards x (10 steps).
  Untargeted 'all' is one joint search on 'any label but l'. `PAPER` is the
  paper's procedure, which Tables 1–4 use.

  Build from parts (`AttackOptions(search=Search(bisect_steps=6))`,
  `first_order=None`) or from flat keywords (`bisect_steps=6`,
  `first_order_steps=0` for no pass); read flat names as attributes too.
  """
  __slots__ = ()

  def __new__(cls, search=Search(), solve=Solve(), boundary=Boundary(),
              first_order=FirstOrder(), untargeted=Untargeted(), **flat):
    parts = dict(search=search, solve=solve, boundary=boundary,
                 first_order=first_order, untargeted=untargeted)
    fo = {}
    for k, v in flat.items():
      if k not in FLAT:
        raise TypeError(f"AttackOptions got an unknown option {k!r}; the options are "
                        f"{', '.join(list(PARTS) + list(FLAT))}.")
      part, field = FLAT[k]
      if part == "first_order":
        fo[field] = v
      else:
        parts[part] = parts[part]._replace(**{field: v})
    if fo and (parts["first_order"] is not None or "steps" in fo):
      rec = (parts["first_order"] or FirstOrder())._replace(**fo)
      parts["first_order"] = None if rec.steps == 0 else rec  # 0 steps: no pass
    return super().__new__(cls, **parts)

  def __getattr__(self, name):
    if name in FLAT:  # flat reads: opts.bisect_steps, opts.first_order_steps
      part, field = FLAT[name]
      rec = getattr(self, part)
      return (0 if field == "steps" else FirstOrder()._asdict()[field]) if rec is None \
          else getattr(rec, field)
    raise AttributeError(name)

  def _replace(self, **kw):
    parts = {k: kw.pop(k) for k in list(kw) if k in PARTS}
    return AttackOptions(**{**self._asdict(), **parts}, **kw)

  def flat(self) -> dict:
    """Every option under its flat name (first_order_steps 0: no pass)."""
    return {k: getattr(self, k) for k in FLAT}

  def check(self) -> "AttackOptions":
    """These options with their types coerced; ValueError naming a bad field."""
    d = AttackOptions().flat()
    v = self.flat()
    for f in FLAT:
      d0, x = d[f], v[f]
      if isinstance(d0, bool) and not isinstance(x, (bool, np.bool_)):
        raise ValueError(f"{f}={x!r}: must be True or False.")
      if isinstance(d0, int) and not isinstance(d0, bool) and (
          isinstance(x, bool) or not isinstance(x, (int, float, np.number))
          or not float(x).is_integer()):
        raise ValueError(f"{f}={x!r}: must be an integer.")
      if isinstance(d0, float) and (isinstance(x, bool) or not isinstance(
          x, (int, float, np.number)) or not np.isfinite(x)):
        raise ValueError(f"{f}={x!r}: must be a finite number.")
    o = AttackOptions(**{f: type(d[f])(v[f]) for f in FLAT})
    _check_ranges(o)
    return o


_RULES = (("c_init", lambda v: v > 0, "> 0"), ("c_factor", lambda v: v > 1, "> 1"),
          ("bisect_steps", lambda v: v >= 0, ">= 0"), ("max_bracket", lambda v: v >= 1, ">= 1"),
          ("maxiter", lambda v: v >= 1, ">= 1"), ("history", lambda v: v >= 1, ">= 1"),
          ("maxls", lambda v: v >= 1, ">= 1"), ("gtol", lambda v: v >= 0, ">= 0"),
          ("ftol", lambda v: v >= 0, ">= 0"), ("polish_steps", lambda v: v >= 0, ">= 0"),
          ("refine_steps", lambda v: v >= 0, ">= 0"), ("root_steps", lambda v: v >= 1, ">= 1"),
          ("screen", lambda v: v >= 0, ">= 0"), ("first_order_steps", lambda v: v >= 0, ">= 0"),
          ("first_order_alpha", lambda v: v > 0, "> 0"),
          ("first_order_gamma", lambda v: 0 < v < 1, "in (0, 1)"))
_CHOICES = {"solver": ("pqn", "jaxopt"), "linesearch": ("backtracking", "zoom"),
            "first_order_unit": ("box", "input"), "scale": criteria.SCALES}


def _check_ranges(o: AttackOptions) -> None:
  """Raises ValueError naming the first option out of its range."""
  v = o.flat()
  for f, ok, need in _RULES:
    if not ok(v[f]):
      raise ValueError(f"{f}={v[f]!r}: must be {need}.")
  for f, choices in _CHOICES.items():
    if v[f] not in choices:
      raise ValueError(f"{f}={v[f]!r}; choose one of {', '.join(map(repr, choices))}.")
  if o.solve.solver == "jaxopt":
    try:
      with warnings.catch_warnings():  # jaxopt warns that it is unmaintained
        warnings.simplefilter("ignore", DeprecationWarning)
        import jaxopt  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError as e:
      raise ValueError("solver='jaxopt' needs jaxopt: pip install 'advjax[jaxopt]' "
                       "(or use the default solver 'pqn').") from e


# The paper's procedure (§4.1): the penalty's minimiser at the largest successful
# c of a fine search, solves run to (near) convergence, no boundary step; every
# untargeted label tried. The committed tables use it.
PAPER = AttackOptions(search=Search(bisect_steps=10, scale="raw"), solve=Solve(maxiter=100),
                      boundary=Boundary(polish_steps=0, refine_steps=0),
                      first_order=None, untargeted=Untargeted(joint=False, screen=0))
