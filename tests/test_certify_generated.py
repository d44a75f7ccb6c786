"""Soundness over generated nets (issue 27): random programs of every primitive
with a bound rule (`tests/netgen.py`), random weights at several scales,
points near and far from the boundary, every method and option; no radius is
above a misclassified point of a dense grid (2-D inputs) or of PGD-L2 inside
0.999·ρ ∩ box, none is NaN, α-CROWN ≥ CROWN ≥ IBP.

The CI run is seeded and small; the long run is the same test with
ADVJAX_SOUNDNESS_PROGRAMS (programs per input kind) and
ADVJAX_SOUNDNESS_DRAWS (weight draws per program; ADVJAX_SOUNDNESS_FIRST_DRAW
the first, so that runs add new nets) set, e.g.

  ADVJAX_SOUNDNESS_PROGRAMS=200 ADVJAX_SOUNDNESS_DRAWS=6 python -m pytest -q \
      tests/test_certify_generated.py -p no:cacheprovider

(its count is in BUILD_NOTES.md, "Soundness").
"""

import collections
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import netgen
from advjax import certify
from advjax.certify import CertifyOptions, search

PROGRAMS = int(os.environ.get("ADVJAX_SOUNDNESS_PROGRAMS", "3"))
DRAWS = int(os.environ.get("ADVJAX_SOUNDNESS_DRAWS", "2"))
FIRST_DRAW = int(os.environ.get("ADVJAX_SOUNDNESS_FIRST_DRAW", "0"))  # runs that add nets
SCALES = (0.5, 1.0, 3.0)
BASE = CertifyOptions(alpha_steps=4, steps=12)
# method, options: every method and option a plain function can take
RUNS = (("ibp", BASE), ("crown", BASE), ("alpha-crown", BASE),
        ("crown", BASE._replace(box=False)), ("alpha-crown", BASE._replace(box=False)),
        ("crown", BASE._replace(dtype="float32", rtol=0.05)))
CI_RUNS = (RUNS[1], RUNS[4])  # each run is a compile: the CI run keeps two
GRID = np.stack(np.meshgrid(*[np.linspace(0, 1, 301, dtype=np.float32)] * 2),
                -1).reshape(-1, 2)
NOISE = 1e-5  # of the logits' scale: what float32 evaluation order may flip
TALLY = collections.Counter()


def _programs(image: bool, n: int, depth: int = 5):
  out, seed = [], 1000 * image
  while len(out) < n:
    prog = netgen.program(seed, image, depth)
    seed += 1
    if netgen.valid(prog):
      out.append(prog)
  return out


def _covering(image: bool):
  """The valid program of this kind (depth 7, among the first 40) that uses the
  most blocks and activations: the CI run's."""
  blocks = lambda p: {b[0] for b in p[1:]} | {f"act:{b[1]}" for b in p[1:] if b[0] == "act"}
  return max(_programs(image, 40, depth=7), key=lambda p: len(blocks(p)))


def _grid_distance(apply, p, x, label):
  z = np.asarray(jax.jit(apply)(p, jnp.asarray(GRID)), np.float64)
  scale = 1e-6 + np.abs(z).max(1)
  out = []
  for i, l in enumerate(label):
    other = (np.max(np.delete(z, l, 1), 1) - z[:, l]) / scale
    d = np.linalg.norm(GRID[other > NOISE] - x[i], axis=1)
    out.append(d.min() if len(d) else np.inf)
  return np.array(out)


def _check(prog, draw, runs):
  apply = netgen.net(prog)
  p = netgen.params(prog, draw, SCALES[draw % len(SCALES)])
  x = netgen.points(apply, p, prog, 4, draw)
  label = np.asarray(jnp.argmax(apply(p, jnp.asarray(x)), 1), np.int32)
  radii, done = {}, {}  # done: the search converged (not stopped by `steps`)
  for method, opts in runs:
    r = certify.radius((apply, p), x, label, method=method, options=opts)
    l2 = np.asarray(r.l2)
    assert np.all(np.isfinite(l2)) and np.all(l2 >= 0), (prog, method, l2)
    assert np.all(np.isfinite(np.asarray(r.margin))), (prog, method, r.margin)
    radii[(method, opts.box, opts.dtype)] = l2
    done[(method, opts.box, opts.dtype)] = np.asarray(r.evaluations) < opts.steps
  best = np.max(np.stack(list(radii.values())), 0)
  if prog[0] == "2d":
    d = _grid_distance(apply, p, x, label)
    for k, l2 in radii.items():
      assert np.all(l2 <= d), (prog, draw, k, l2, d)
  gap = np.asarray(netgen.pgd(apply, p, jnp.asarray(x), jnp.asarray(label),
                              jnp.asarray(0.999 * best), 40, 4, jax.random.PRNGKey(draw)))
  assert np.all(gap <= NOISE), (prog, draw, best, gap)
  pairs = [(("alpha-crown", box, "float64"), ("crown", box, "float64")) for box in (True, False)]
  for hi, low in pairs + [(("crown", True, "float64"), ("ibp", True, "float64"))]:
    if hi in radii and low in radii:  # a tighter bound, a larger radius, where both converged
      both = done[hi] & done[low]     # (`steps` trials may stop two searches apart)
      assert np.all((radii[hi] >= radii[low] * search.TIE) | ~both), (
          prog, draw, hi, radii[hi], low, radii[low])
      TALLY.update(compared=int(both.sum()))
  TALLY.update(nets=1, examples=len(x), radii=len(x) * len(runs),
               certified=int(np.sum(best > 0)))
  return {b[0] for b in prog[1:]} | {f"act:{b[1]}" for b in prog[1:] if b[0] == "act"}


def _run(progs, draws, runs, label):
  seen = set()
  TALLY.clear()
  for prog in progs:
    for draw in range(FIRST_DRAW, FIRST_DRAW + draws):
      seen |= _check(prog, draw, runs)
    jax.clear_caches()  # each program's executables hold ~1,000 memory maps (conftest)
  assert TALLY["certified"] > 0  # not vacuous: some radii are positive
  print(f"\n{label}: {dict(TALLY)}; blocks seen: {sorted(seen)}")
  return seen


@pytest.mark.slow
def test_generated_nets_ci():
  """One deep program per input kind, one weight draw, CROWN with the box and
  α-CROWN without (the long run below has every method and option)."""
  seen = set()
  for image in (False, True):
    seen |= _run([_covering(image)], 1, CI_RUNS, "image" if image else "2-D")
  assert len(seen & set(netgen.BLOCKS)) >= 10, seen  # most blocks, even in CI


@pytest.mark.slow
@pytest.mark.skipif("ADVJAX_SOUNDNESS_PROGRAMS" not in os.environ,
                    reason="the long run: set ADVJAX_SOUNDNESS_PROGRAMS (see the module doc)")
@pytest.mark.parametrize("image", [False, True], ids=["2d-grid", "image-pgd"])
def test_generated_nets_long(image):
  """PROGRAMS random programs × DRAWS weight draws × every run in RUNS."""
  _run(_programs(image, PROGRAMS), DRAWS, RUNS, "image" if image else "2-D")
