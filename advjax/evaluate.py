"""Measures of §4.2: distortion, noise baselines, amplified perturbations, transfer.

Pure functions on arrays; the experiment scripts in `experiments/` compose them
into Tables 1–4.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from advjax import criteria


def distortion(r) -> np.ndarray:
  """The paper's per-pixel RMS sqrt(Σ r² / n) per example (Tables 1–4)."""
  return criteria.rms(np.asarray(r, np.float64))


def gaussian_noise(key: jax.Array, x, sigma: float) -> np.ndarray:
  """x + σ·N(0, I), clipped to the box [0,1] (Table 2's noise rows)."""
  if sigma < 0:
    raise ValueError(f"sigma must be >= 0, got {sigma}.")
  x = np.asarray(x, np.float32)
  z = np.asarray(jax.random.normal(key, x.shape, jnp.float32))
  return np.clip(x + sigma * z, 0.0, 1.0)


def amplify(x, r, rms: float) -> np.ndarray:
  """x + r rescaled to per-pixel RMS `rms`, clipped to [0,1] (Table 4).

  Examples with r = 0 stay unchanged (there is no direction to amplify).
  """
  x, r = np.asarray(x, np.float32), np.asarray(r, np.float32)
  d = distortion(r).reshape((-1,) + (1,) * (r.ndim - 1))
  scale = np.where(d > 0, rms / np.maximum(d, 1e-12), 0.0)
  return np.clip(x + r * scale, 0.0, 1.0).astype(np.float32)


def error_rate(predict: Callable[[np.ndarray], np.ndarray], x, y) -> float:
  """Share of `x` that `predict` (inputs → labels) gets wrong against labels y."""
  if len(x) == 0:
    return float("nan")
  return float(np.mean(np.asarray(predict(x)) != np.asarray(y)))


def error_matrix(predictors: dict[str, Callable], sets: dict[str, tuple]
                 ) -> dict[str, dict[str, float]]:
  """Error of every column predictor on every row set (x, y): Tables 2 and 4."""
  return {row: {col: error_rate(p, x, y) for col, p in predictors.items()}
          for row, (x, y) in sets.items()}


def check_bracket(rho, d, where: str) -> None:
  """Refuses certified radii above a known adversarial distance (a bug, never
  a result): AssertionError naming the first examples."""
  rho, d = np.asarray(rho), np.asarray(d)
  bad = np.flatnonzero(rho > d)
  if len(bad):
    raise AssertionError(f"{where}: certified radius above the attack's distance at examples "
                         f"{bad[:5].tolist()} (ρ {rho[bad[:5]]}, d {d[bad[:5]]})")


def median_ratio(rho, d, correct) -> float | None:
  """The median per-example ρ/d over correctly classified examples the attack
  broke (d finite and > 0): where the bracket's lower end lies; None if none."""
  rho, d = np.asarray(rho, np.float64), np.asarray(d, np.float64)
  ok = np.asarray(correct) & np.isfinite(d) & (d > 0)
  return float(np.median(rho[ok] / d[ok])) if ok.any() else None


def certified_accuracy(rho, correct, eps: float) -> float:
  """The fraction of examples classified correctly with a radius ≥ ε."""
  return float(np.mean(np.asarray(correct) & (np.asarray(rho) >= eps)))


def attacked_accuracy(d, correct, eps: float) -> float:
  """The fraction classified correctly that the attack did not break within ε
  (d > ε; d = inf where it failed): an upper bound on robust accuracy."""
  return float(np.mean(np.asarray(correct) & (np.asarray(d) > eps)))
