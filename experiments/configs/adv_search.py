"""Config: the budgeted search over adversarial-training settings (§4.2).

Paper: §4.2 trains FC100-100-10 with a continuously refreshed pool of
adversarial examples and reports < 1.2% test error (weight decay 1.6%) but
gives no pool size, refresh rate, mixing ratio or attack strength. This
one-seed screen varies one setting at a time around a centre (input pool of
2,000, a quarter refreshed every epoch, equal weight, the cheap attack, 60
epochs) and covers every dimension the issue names: pool size, refresh
fraction and rate, mixing ratio, space (input, each hidden layer, all layers
at once with one pool per layer), the pool attack's strength (the cheap
setting vs the full c search) and training length. The best few then go to
adv_training.py over ≥ 3 seeds beside the baselines.

Each finished cell writes <runs>/adv_search/seed<s>/<cell>/row.json and the
results table at once; a rerun skips finished cells (and resumes a cell's
training from its last epoch, pools included). `--only CELL...` runs some.

Command (full):  python -m experiments.adv_search        (run in parts; resumable)
Command (quick): python -m experiments.adv_search --quick
Budget, CPU minutes per cell at 60k and 60 epochs, from a measurement on
this 2-core machine (load ≈ 7; BUILD_NOTES "Issue 10"): a plain epoch of
FC100-100-10 ≈ 1.1 s, a pool minibatch per step +50%; 500 input-space
attacks 1.3 s cheap / 5.1 s medium / 8.9 s full, hidden-layer ones ≈ 0.2 s;
the evaluation (500 full attacks) ≈ 0.3 min. Per cell: baseline, dropout ≈ 1.5;
centre ≈ 3; sigmoid1/sigmoid2 ≈ 2; all layers ≈ 4; size 500 ≈ 2.5, 8000 ≈ 7;
refresh 0.1 ≈ 2.5, 0.5 ≈ 4.5; every 5 ≈ 2; weight 0.3/3 ≈ 3; attack medium
≈ 7, full ≈ 11, fast ≈ 3 (not measured); 30 epochs ≈ 2, 120 ≈ 6, baseline 120 ≈ 2.5; sigmoid2
medium ≈ 2.5; dropout + centre ≈ 3. The 21 cells ≈ 80 CPU-minutes; then
adv_training's 3 seeds × 6 variants ≈ 40: about 2 of the issue's 4
CPU-hours, leaving room for a second screen round around the best cell.
Measured: round 1's last 4 cells and round 2's 8 took 30 min wall (one
process beside another job); round 3 took 3.5 min; all 32 cells ≈ 80 min.
Expected (measured, one seed): no cell beats weight decay alone beyond the
seed spread; the best, an input pool refreshed every 10th epoch at weight
0.1, 1.64% against the baseline's 1.73% (over 3 seeds in adv_training.py:
1.75 ± 0.11% against 1.72 ± 0.03%).
"""

from __future__ import annotations

import dataclasses


from advjax.advtrain import PoolConfig, Variant
from advjax.train import TrainConfig
from advjax.attack import AttackOptions
from experiments import common
from experiments.configs import PAPER_ATTACK, QUICK_ATTACK

TITLE = "Adversarial training: the budgeted search (one seed; §4.2)"

CHEAP = PAPER_ATTACK._replace(bisect_steps=2, maxiter=10)
MEDIUM = PAPER_ATTACK._replace(bisect_steps=6, maxiter=50)  # the 10k run's setting
FULL = PAPER_ATTACK  # Table 1's c search
# The schedule of every net in the search (the 10k run's, BUILD_NOTES §3).
TRAIN = TrainConfig(lr=1e-2, epochs=60, batch_size=64, schedule="cosine")
CENTRE = PoolConfig(size=2000, refresh=0.25, every=1, weight=1.0, batch_size=250,
                    attack=CHEAP)


def cells(c: PoolConfig) -> tuple[Variant, ...]:
  """The screen: baselines, the centre, then one setting changed at a time."""
  h1, h2 = c._replace(layer="sigmoid1", seed=1), c._replace(layer="sigmoid2", seed=2)
  V = Variant
  return (
      V("baseline", note="weight decay only"),
      V("dropout", dropout=0.3, note="dropout 0.3"),
      V("centre", pools=(c,), note="input pool, the centre"),
      V("space sigmoid1", pools=(h1,), note="space: sigmoid1 output"),
      V("space sigmoid2", pools=(h2,), note="space: sigmoid2 output"),
      V("space all", pools=(c, h1, h2), note="space: all layers, one pool each"),
      V("size 500", pools=(c._replace(size=500),), note="pool size 500"),
      V("size 8000", pools=(c._replace(size=8000),), note="pool size 8000"),
      V("refresh 0.1", pools=(c._replace(refresh=0.1),), note="refresh fraction 0.1"),
      V("refresh 0.5", pools=(c._replace(refresh=0.5),), note="refresh fraction 0.5"),
      V("every 5", pools=(c._replace(every=5),), note="refresh rate: every 5 epochs"),
      V("weight 0.3", pools=(c._replace(weight=0.3),), note="mixing ratio 0.3"),
      V("weight 3", pools=(c._replace(weight=3.0),), note="mixing ratio 3"),
      V("attack medium", pools=(c._replace(attack=MEDIUM),), note="attack bisect 6, maxiter 50"),
      V("attack full", pools=(c._replace(attack=FULL),), note="attack: full c search"),
      # the fast default as the search ran it (session 3): no first-order pass,
      # 2 bisections, 5 root steps
      V("attack fast", pools=(c._replace(attack=AttackOptions(
          first_order_steps=0, bisect_steps=2, polish_steps=5)),),
        note="attack: the fast default (2 bisections, 5 iterations, boundary polish)"),
      V("epochs 30", pools=(c,), epochs=30, note="training length 30 epochs"),
      V("epochs 120", pools=(c,), epochs=120, note="training length 120 epochs"),
      V("baseline 120", epochs=120, note="weight decay only, 120 epochs"),
      V("sigmoid2 medium", pools=(h2._replace(attack=MEDIUM),),
        note="sigmoid2 pool, attack bisect 6 / maxiter 50"),
      V("dropout + centre", dropout=0.3, pools=(c,), note="dropout 0.3 and the centre pool"),
  ) + round2(c, h1, h2) + round3(c)


def round2(c: PoolConfig, h1: PoolConfig, h2: PoolConfig) -> tuple[Variant, ...]:
  """The second round, around round 1's best cells (sigmoid2 1.95%, every 5
  2.19%, weight 0.3 2.43%; BUILD_NOTES "Issue 10"): combine what helped and
  push each further (lighter mixing, rarer refresh, longer training)."""
  V, light = Variant, dict(weight=0.3)
  return (
      V("sigmoid2 weight 0.3", pools=(h2._replace(**light),), note="sigmoid2 pool, weight 0.3"),
      V("sigmoid2 every 5", pools=(h2._replace(every=5),), note="sigmoid2 pool, refresh every 5 epochs"),
      V("sigmoid2 size 8000", pools=(h2._replace(size=8000),), note="sigmoid2 pool of 8000"),
      V("sigmoid2 120", pools=(h2,), epochs=120, note="sigmoid2 pool, 120 epochs"),
      V("hidden both 0.3", pools=(h1._replace(**light), h2._replace(**light)),
        note="sigmoid1 and sigmoid2 pools, weight 0.3 each"),
      V("weight 0.1", pools=(c._replace(weight=0.1),), note="input pool, mixing ratio 0.1"),
      V("every 5 weight 0.3", pools=(c._replace(every=5, **light),),
        note="input pool, every 5 epochs, weight 0.3"),
      V("every 10 weight 0.1", pools=(c._replace(every=10, weight=0.1),),
        note="input pool, every 10 epochs, weight 0.1"),
  )


def round3(c: PoolConfig) -> tuple[Variant, ...]:
  """The third round, around round 2's best cell (every 10 weight 0.1: 1.64%
  on seed 0, 1.75 ± 0.11% over 3 seeds): rarer still, lighter still, longer."""
  V, base = Variant, c._replace(every=10, weight=0.1)
  return (
      V("every 20 weight 0.1", pools=(base._replace(every=20),),
        note="input pool, every 20 epochs, weight 0.1"),
      V("every 10 weight 0.03", pools=(base._replace(weight=0.03),),
        note="input pool, every 10 epochs, weight 0.03"),
      V("every 10 weight 0.1 120", pools=(base,), epochs=120,
        note="input pool, every 10 epochs, weight 0.1, 120 epochs"),
  )


@dataclasses.dataclass(frozen=True)
class Config(common.ExperimentConfig):
  """Model, shared schedule, the cells, evaluation size and attack."""
  model: str = "FC100-100-10"
  train: TrainConfig = TRAIN
  cells: tuple[Variant, ...] = cells(CENTRE)
  n_eval: int = 500
  seed: int = 0
  eval_attack: AttackOptions = FULL


def centre(quick: bool = False) -> PoolConfig:
  """The centre pool; quick: 50 examples and a weaker attack."""
  if not quick:
    return CENTRE
  return CENTRE._replace(size=50, batch_size=50,
                         attack=PAPER_ATTACK._replace(bisect_steps=2, maxiter=20))


def get_config(quick: bool = False) -> Config:
  """All 32 cells (21 of round 1, 8 of round 2, 3 of round 3) at 60k; quick: 5 cells on 600 images, 2 epochs."""
  if quick:
    pick = ("baseline", "centre", "space sigmoid2", "space all", "refresh 0.5")
    return Config(**common.base(quick), n_train=600, n_test=500,
                  train=TrainConfig(lr=1e-2, epochs=2, batch_size=64, schedule="cosine"),
                  cells=tuple(v for v in cells(centre(True)) if v.name in pick), n_eval=20,
                  eval_attack=QUICK_ATTACK)
  return Config(**common.base(quick))
