"""The certificate's options and result (defaults written once, here)."""

from __future__ import annotations

from typing import NamedTuple

import jax

METHODS = ("lipschitz", "ibp", "crown", "alpha-crown", "exact")
# the methods whose radius is the ε search's (`search.search`); the others have closed forms
SEARCHED = ("ibp", "crown", "alpha-crown")
DTYPES = ("float64", "float32")
ALPHA_SCOPES = ("all", "output")
# Outward rounding slack relative to the magnitude of every bound's terms:
# float64 unit roundoff is 1.1e-16, so 1e-7 leaves a factor of 10⁹ for the
# length of sums and for cancellation; float32 (6e-8) gets only ~10³.
TOL = {"float64": 1e-7, "float32": 1e-4}


class CertifyOptions(NamedTuple):
  """Options of `advjax.certify.radius` (hashable: static under jit).

  Attributes:
    method: 'lipschitz' (global margin bound from §4.3's layer norms), 'ibp'
      (interval bounds), 'crown' (linear relaxations), 'alpha-crown'
      (CROWN with optimised ReLU slopes), 'exact' (affine models only).
    box: intersect the L2 ball with the input box (False: the ball alone, as
      auto_LiRPA does for L2; looser, for comparison).
    steps: most ε trials per example: ×8 up from a first guess until one
      fails, then the margin bound's root by safeguarded interpolation
      (`search.search`; ~7 trials to rtol 0.01 on trained nets, 11-12 by the
      bisection before); the result is the last certified ε.
    dtype: 'float64' (default: bounds computed with 64-bit JAX, enabled only
      inside the call) or 'float32' (faster, e.g. on GPUs; the slack `tol`
      is then 1e-4 and the margin for rounding is thin).
    tol: relative outward slack of every bound (None: `TOL[dtype]`).
    concretize_steps: active-set steps of the ball∩box dual for the logits'
      margins (any number gives a valid bound; more is tighter).
    intermediate_steps: the same for the intermediate layers' rows.
    crown_budget: the largest Λ (rows × elements of the widest layer below) a
      backward pass started at an intermediate layer may build per example;
      larger layers (wide convolutions) get interval bounds instead, and
      'crown'/'alpha-crown' then read '...+intervals' (a looser bound). The
      paper's conv net: 2²³ lets fc1 (256 rows × 25,088) take the dense pass
      (~51 MB per example in float64).
    alpha_steps: Adam steps on the ReLU slopes and the max-pool upper lines
      ('alpha-crown').
    alpha_lr: their learning rate.
    alpha_scope: 'all' (the slopes enter every backward pass, so the
      intermediate layers' bounds are optimised with them, as α-CROWN does;
      a whole forward pass per step) or 'output' (the output's pass only,
      the intermediate bounds CROWN's; one backward pass per step).
    exact_steps: most active-set steps of 'exact' (it stops when converged).
    chunk: examples vmapped together; chunks run in sequence (`lax.map`).
      None: 1 on the CPU backend (vmapped batches ran ~2x slower there: the
      per-example Λ matrices no longer fit in cache; FC100-100-10 crown, 14.6
      img/s at 1, 8.9 at 8, 7.8 at 256), the whole batch on accelerators;
      0: the whole batch.
    rtol: the ε search stops early once its bracket hi/lo is within 1 + rtol
      (0: until trials stop moving, ~1e-5); the radius is the last certified ε.
    lipschitz_floor: for 'ibp', 'crown', 'alpha-crown': also compute the
      global Lipschitz radius (when the model is an `advjax.models.Model`, see
      `lipschitz.constants`) and report the larger of the two (both are sound
      lower bounds, so their max is one); the search then starts from it as a
      certified lower end. `CertifyResult.method` reads e.g. 'crown+lipschitz'
      when the constants were available, else the method alone.
    lipschitz_units: for 'ibp', 'crown', 'alpha-crown' on an advjax Model:
      also cut every pre-activation's interval at radius ε to its clean value
      ± ε·(its per-unit Lipschitz bound from the certified layer norms,
      `lipschitz.unit_bounds`); sound, and tighter than intervals through
      wide layers (the conv net); the method reads '...+lipschitz' as above.
    patches: for 'crown', 'alpha-crown' (and 'ibp' on layers affine in x):
      a pre-activation too wide for `crown_budget` whose path down to x is a
      chain of NHWC convolutions, poolings, paddings, activations and
      constant adds/scales gets its own backward pass in patches
      (`advjax.certify.patches`: the same bounds as the dense pass, Λ kept
      on receptive fields; `compose` where the layer below is separable);
      other wide ones keep their intervals. Off by default: on the paper's
      conv net it certifies 2.2x the radius at ~15x the time (BUILD_NOTES §5b).
    patch_budget: the most patch elements (rows × window × channels) one
      chunk of positions may hold per example; positions run in sequence
      beyond it (about 8 bytes each in float64, a few live copies).
  """
  method: str = "crown"
  box: bool = True
  steps: int = 20
  dtype: str = "float64"
  tol: float | None = None
  concretize_steps: int = 8
  intermediate_steps: int = 3
  crown_budget: int = 1 << 20
  alpha_steps: int = 10
  alpha_lr: float = 0.1
  alpha_scope: str = "all"
  exact_steps: int = 256
  chunk: int | None = None
  rtol: float = 0.0
  lipschitz_floor: bool = False
  lipschitz_units: bool = False
  patches: bool = False
  patch_budget: int = 1 << 22

  @property
  def slack(self) -> float:
    return TOL[self.dtype] if self.tol is None else float(self.tol)

  def resolved(self) -> "CertifyOptions":
    """These options with chunk=None replaced for the default backend."""
    if self.chunk is not None:
      return self
    return self._replace(chunk=1 if jax.default_backend() == "cpu" else 0)

  @property
  def jnp_dtype(self):
    return jax.numpy.float64 if self.dtype == "float64" else jax.numpy.float32

  def check(self) -> "CertifyOptions":
    """These options, validated; raises ValueError naming the bad field."""
    if self.method not in METHODS:
      raise ValueError(f"method={self.method!r}; choose one of {METHODS}.")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype={self.dtype!r}; choose one of {DTYPES}.")
    if self.alpha_scope not in ALPHA_SCOPES:
      raise ValueError(f"alpha_scope={self.alpha_scope!r}; choose one of {ALPHA_SCOPES}.")
    for f in ("steps", "concretize_steps", "intermediate_steps", "crown_budget",
              "alpha_steps", "exact_steps", "chunk", "patch_budget"):
      v = getattr(self, f)
      if v is None and f == "chunk":
        continue
      if isinstance(v, bool) or int(v) != v or v < 0:
        raise ValueError(f"{f}={v!r}: must be an integer >= 0.")
    if self.steps < 1 or self.exact_steps < 1 or self.patch_budget < 1:
      raise ValueError("steps, exact_steps and patch_budget must be >= 1.")
    if not self.rtol >= 0:
      raise ValueError(f"rtol={self.rtol!r}: must be >= 0.")
    if not self.alpha_lr > 0 or (self.tol is not None and not 0 <= self.tol < 1):
      raise ValueError(f"need alpha_lr > 0 and 0 <= tol < 1, got {self.alpha_lr}, {self.tol}.")
    return self


class CertifyResult(NamedTuple):
  """Per-example certified radii; every array field has leading dimension B.

  Attributes:
    l2: certified L2 radius: no x + r with ‖r‖₂ < l2 inside the box (the
      ball alone with box=False) changes the label; 0 when x is misclassified
      or nothing is certified. Capped at the farthest point of the box (then
      the whole box is certified). float32, rounded down.
    distortion: l2 / sqrt(m), the paper's per-pixel RMS unit (§4.1).
    margin: the certified lower bound of min_{j≠l} z_l − z_j over the set at
      radius l2 (≥ 0 when l2 > 0; the clean margin when l2 = 0).
    label: the label certified (given, or the model's prediction).
    evaluations: bound computations spent on the example (ε trials; active-set
      steps for 'exact'; 0 for 'lipschitz').
    method: the method used.
  """
  l2: jax.Array
  distortion: jax.Array
  margin: jax.Array
  label: jax.Array
  evaluations: jax.Array
  method: str
