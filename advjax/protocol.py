"""The §4.2 protocol of Szegedy et al., once: images, targets, sets, noise, transfer.

Every experiment (Tables 1–4, the figures, adversarial training) builds its
adversarial examples the same way:

1. base images: the first n images of a seeded permutation that the model (or
   every model of a table) classifies correctly (`correct`);
2. targets: one uniformly random wrong label per image (`targets`);
3. the §4.1 attack on them, through `advjax.runs.driver` (resumable cache folder)
   or `attack` for one in-memory batch;
4. baselines: Gaussian noise on images every model gets right (`noise_rows`),
   and noise of the same per-pixel RMS as each adversarial example
   (`noise_like`); amplified perturbations (`amplified`);
5. the transfer error matrix (`transfer`): Tables 2 and 4.

Every call of `advjax.attack` and `advjax.runs.driver` from the experiments goes
through this module, with the model as the pair (apply_fn, params).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from advjax import evaluate, models
from advjax import data as data_lib
from advjax.attack import AttackOptions, lbfgs, seeded_targets
from advjax.runs import driver

Pair = tuple  # (models.Model, params)


def attack(apply_fn: Callable, params: Any, x, target, opts: AttackOptions):
  """The targeted §4.1 attack on one batch of `apply_fn(params, x)` logits.

  Parameters are jit arguments, so new values (adversarial training) reuse
  the compiled attack; pass the same `apply_fn` object every call.
  """
  return lbfgs((apply_fn, params), x, target, options=opts)


def correct(pairs: Sequence[Pair], ds: data_lib.Dataset, n: int, seed: int) -> np.ndarray:
  """Sorted indices of the first n images of a seeded permutation that every
  model of `pairs` classifies correctly (§4.2's base images)."""
  if n <= 0:
    raise ValueError(f"n must be positive, got {n}.")
  order = np.random.default_rng(seed).permutation(len(ds.x))
  ok = np.ones(len(ds.x), bool)
  for model, params in pairs:  # predict in place: no permuted copy of 60k images
    ok &= models.predict(model, params, ds.x) == ds.y
  return np.sort(order[ok[order]][:n])


targets = seeded_targets  # one uniformly random wrong label per image (the paper's protocol)


def adversarial_set(model: models.Model, params, ds: data_lib.Dataset, n: int,
                    seed: int, cache: str, opts: AttackOptions,
                    batch_size: int = driver.BATCH_SIZE, progress: bool = True) -> dict:
  """Adversarial examples of `model` on n correctly classified images of `ds`.

  Runs `advjax.runs.driver` into `cache` (an interrupted run resumes there).
  Returns the driver's arrays: x_adv, r, success, target, label, distortion,
  l2, c, iterations, solves, index (into `ds`).
  """
  idx = correct([(model, params)], ds, n, seed)
  if not len(idx):
    raise ValueError(f"{model.name} classifies none of the {len(ds.x)} images "
                     "correctly; there is nothing to attack (train it first).")
  t = targets(seed, ds.y[idx], model.num_classes)
  return driver.run((model.apply, params), ds.x[idx], t, cache, options=opts,
                    label=ds.y[idx], index=idx, batch_size=min(batch_size, len(idx)),
                    progress=progress)


def succeeded(s: dict) -> tuple[np.ndarray, np.ndarray]:
  """(x_adv, true label) of the successful examples of a set."""
  ok = s["success"].astype(bool)
  return s["x_adv"][ok], s["label"][ok]


def mean_distortion(s: dict) -> float:
  """Average minimum distortion (per-pixel RMS) over successful examples."""
  ok = s["success"].astype(bool)
  return float(s["distortion"][ok].mean()) if ok.any() else float("nan")


def noise_rows(pairs: Sequence[Pair], ds: data_lib.Dataset, sigmas: Sequence[float],
               n: int, seed: int) -> tuple[dict, dict]:
  """Gaussian-noise rows (Tables 2 and 4): x + σ·N(0, I), clipped to [0,1].

  On n images every model classifies correctly (a cell is noise-induced error
  only). Returns ({row name: (x, y)}, {row name: measured RMS after clipping}).
  """
  idx = correct(pairs, ds, n, seed + 1)
  sets, dist = {}, {}
  for i, s in enumerate(sigmas):
    xn = evaluate.gaussian_noise(jax.random.PRNGKey(100 + i), ds.x[idx], s)
    name = f"Gaussian noise σ={s:g}"
    sets[name] = (xn, ds.y[idx])
    dist[name] = float(evaluate.distortion(xn - ds.x[idx]).mean())
  return sets, dist


def noise_like(key: jax.Array, x, target_rms) -> np.ndarray:
  """Gaussian noise whose per-pixel RMS after clipping matches `target_rms`.

  The noise-at-equal-distortion baseline of §4.2 (Figure 7's noisy digits).
  """
  x = np.asarray(x, np.float32)
  target_rms = np.asarray(target_rms, np.float64)
  if target_rms.shape != (len(x),):
    raise ValueError(f"target_rms has shape {target_rms.shape}; need ({len(x)},).")
  z = np.asarray(jax.random.normal(key, x.shape))
  lo, hi = np.zeros(len(x)), np.full(len(x), 2.0)
  shape = (-1,) + (1,) * (x.ndim - 1)
  for _ in range(30):  # bisection on σ: clipping makes RMS(σ) sublinear
    mid = (lo + hi) / 2
    d = evaluate.distortion(np.clip(x + mid.reshape(shape) * z, 0, 1) - x)
    lo, hi = np.where(d < target_rms, mid, lo), np.where(d < target_rms, hi, mid)
  return np.clip(x + hi.reshape(shape) * z, 0, 1).astype(np.float32)


def amplified(ds: data_lib.Dataset, s: dict, rms: float) -> tuple[tuple, float]:
  """A set's successful perturbations rescaled to RMS `rms` (Table 4).

  Returns ((x + r', label), measured mean RMS after clipping).
  """
  ok = s["success"].astype(bool)
  x0 = ds.x[s["index"][ok]]
  xa = evaluate.amplify(x0, s["r"][ok], rms)
  return (xa, s["label"][ok]), float(evaluate.distortion(xa - x0).mean())


def transfer(pairs: dict[str, Pair], sets: dict[str, tuple]) -> dict[str, dict[str, float]]:
  """Error of every column model on every row set (x, y): Tables 2 and 4."""
  preds = {n: (lambda m, p: lambda x: models.predict(m, p, x))(m, p)
           for n, (m, p) in pairs.items()}
  return evaluate.error_matrix(preds, sets)
