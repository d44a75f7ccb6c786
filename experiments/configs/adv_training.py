"""Config: adversarial training of FC100-100-10 with a pool of examples (§4.2).

Paper: §4.2 reports a 100-100-10 net trained with a continuously refreshed pool
of adversarial examples reaching < 1.2% test error, against 1.6% with weight
decay alone and ~1.3% with dropout (60k training images); its gains came from
examples made for hidden layers' outputs training the layers above.

Variants, all FC100-100-10 on the same 10k images with the same optimiser,
epochs and seed: weight decay only; dropout; a pool of input-space adversarial
examples; a pool at the output of sigmoid1; a pool at the output of sigmoid2.
Each trained net is measured by test error and the average minimum distortion
of adversarial examples on `n_eval` test images (random targets).

Command (full):  python experiments/adv_training.py
Command (quick): python experiments/adv_training.py --quick --out /tmp/advtrain
Runtime: full ≈ 5 min on 2 shared CPU cores (309 s measured); quick ≈ 25 s.
Expected (measured, 10k images): weight decay 3.93%, dropout 3.52%, input
pool 4.60% (min distortion 0.067 → 0.098), sigmoid1 pool 5.07%, sigmoid2
pool 4.51%: the paper's error reduction (1.6% → < 1.2%) is NOT reproduced.
"""

from advjax.advtrain import PoolConfig
from advjax.train import TrainConfig

PAPER = {"weight decay": 1.6, "dropout": 1.3, "adversarial pool": 1.2}


def get_config(quick: bool = False) -> dict:
  """Training schedule, pool settings per variant, evaluation size."""
  tc = TrainConfig(lr=1e-2, epochs=2 if quick else 60, batch_size=64,
                   schedule="cosine")
  attack = {"bisect_steps": 2 if quick else 6, "maxiter": 20 if quick else 50}
  pool = PoolConfig(size=100 if quick else 2000, refresh=50 if quick else 500,
                    batch_size=50 if quick else 250, attack=attack)
  variants = {
      "weight decay": {"dropout": 0.0, "pool": None},
      "dropout": {"dropout": 0.3, "pool": None},
      "adversarial pool (input)": {"dropout": 0.0, "pool": pool},
      "adversarial pool (sigmoid1)": {"dropout": 0.0,
                                      "pool": pool._replace(layer="sigmoid1")},
      "adversarial pool (sigmoid2)": {"dropout": 0.0,
                                      "pool": pool._replace(layer="sigmoid2")},
  }
  return {"model": "FC100-100-10", "train": tc, "variants": variants,
          "n_train": 600 if quick else None, "n_eval": 20 if quick else 500,
          "eval_attack": {"bisect_steps": 3 if quick else 10,
                          "maxiter": 30 if quick else 100}, "seed": 0}
