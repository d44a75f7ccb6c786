"""Config: the paper's suggested regulariser and LMT, measured by both ends of the bracket (§4.3).

Paper: §4.3 ends with a suggestion it never tried: penalise each layer's
upper Lipschitz bound. Here FC100-100-10 (trained as experiments.train_models
trains it: Adam lr 1e-2 cosine, 60 epochs, batch 64, weight decay 1e-5,
1e-5, 1e-6) with: weight decay alone, dropout, the penalty λ Σ_k L_k at
several λ, the log-product λ Σ_k log L_k, Lipschitz-margin training (LMT,
Tsuzuku et al. 2018) at ε ∈ {0.5, 1.0, 1.58}, and the best adversarial pool of
configs/adv_training.py. L_k = σ_k (power iteration kept between steps,
advjax.norms.regulariser) × ¼ per sigmoid. Each cell (variant, seed) is trained and
measured: clean test error; on the first `n_images` test images the
untargeted attack's mean minimal distortion (the upper end), CROWN's mean
certified radius (the lower end), certified and attacked accuracy at L2
ε ∈ {0.5, 1.0, 1.58}; Table 5's product of layer bounds and the empirical
lower bound (Jacobian norms and attack pairs). A figure: test error against
certified accuracy at ε = 1.58, with the published anchors (CERTIFY.md).

Cells: every variant at `seeds` (the screen), then `finalists` at
`finalist_seeds`, and the conv net for the `conv` variants at all seeds (set
both after the screen). Each cell trains into
<runs>/lipschitz_training/seed<s>/<variant>/ (resumable per epoch, the power
iteration's vectors included) and writes row.json there when measured; a
rerun reads finished cells back.

Command (full):  python -m experiments.lipschitz_training
Command (quick): python -m experiments.lipschitz_training --quick
Runtime: quick ≈ 30–60 s on 2 shared CPU cores (3 cells, 1 epoch on 600
images, 8 images). Full, estimated from measured steps (FC100-100-10, batch
64: plain 1.7 ms/step, penalty ≈ 1.3×, LMT ≈ 1.6×; 56k steps per cell):
training ≈ 1.5–3 min per FC cell (the pool ≈ 3 min, adv_search), plus the
attack and CROWN on 500 images (≈ 1–2 min): the 9-cell screen ≈ 30–40 min,
each finalist seed ≈ 3–5 min; a conv cell ≈ 35–40 min training (train_models:
2,058 s) plus its CROWN, the dominant cost (configs/certify.py).
Expected: unknown (the experiment settles it); anchors at ε = 1.58, clean /
certified accuracy: LMT 86.48% / 40.55%, CAP 88.39% / 43.95%, BCP 92.54% /
48.20%, GloRo ≈ 97.0% / 62.8%.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from advjax.advtrain import PoolConfig
from advjax.attack import AttackOptions
from advjax.certify.options import CertifyOptions
from advjax.norms.regulariser import RegConfig
from advjax.train import TrainConfig
from experiments import common
from experiments.configs import QUICK_ATTACK, adv_search, adv_training, certified_training

TITLE = "Penalising the layer bounds (§4.3's suggestion) and LMT: both ends of the bracket"

ANCHORS = certified_training.ANCHORS  # the published MNIST figures at L2 ε = 1.58
anchors_text = certified_training.anchors_text


class Variant(NamedTuple):
  """One way to train (hashable).

  Attributes:
    name: the variant's name (also its folder).
    reg: the bounds' terms (advjax.norms.regulariser.RegConfig).
    dropout: dropout rate before each dense layer.
    pools: adversarial pools (advjax.advtrain), instead of `reg`.
    model: the network ('FC100-100-10' or 'conv').
    note: what it varies.
  """
  name: str
  reg: RegConfig = RegConfig()
  dropout: float = 0.0
  pools: tuple[PoolConfig, ...] = ()
  model: str = "FC100-100-10"
  note: str = ""


def _best_pool() -> tuple[PoolConfig, ...]:
  """The adversarial search's best pool (configs/adv_training.py's finalist)."""
  return adv_training.pick(adv_search.cells(adv_search.CENTRE), ("every 10 weight 0.1",))[0].pools


def variants() -> tuple[Variant, ...]:
  """The baselines, the penalties at three strengths, the product, LMT at three ε."""
  pen = lambda lam: Variant(f"penalty {lam:g}", RegConfig("sum", lam),
                            note="λ Σ L_k (§4.3)")
  return (Variant("weight decay", note="train_models' FC100-100-10"),
          Variant("dropout", dropout=0.3, note="0.3, as adv_search's baseline"),
          pen(1e-4), pen(1e-3), pen(1e-2),
          Variant("log-product 1e-2", RegConfig("log", 1e-2), note="λ Σ log L_k"),
          Variant("LMT 0.5", RegConfig(lmt_eps=0.5), note="non-true logits + √2·L·ε"),
          Variant("LMT 1.0", RegConfig(lmt_eps=1.0), note="added in session 7: between "
                  "0.5 (trained) and 1.58 (collapsed)"),
          Variant("LMT 1.58", RegConfig(lmt_eps=1.58), note="non-true logits + √2·L·ε"),
          Variant("adversarial pool", pools=_best_pool(), note="adv_training's best"))


@dataclasses.dataclass(frozen=True)
class Config(common.ExperimentConfig):
  """Variants, seeds, training schedule and the measurement.

  Attributes:
    variants: the screened variants (at `seeds`).
    finalists: variant names trained again at `finalist_seeds`.
    finalist_seeds: the finalists' extra seeds.
    conv: variant names also trained as the conv net, at `conv_seeds`.
    conv_seeds: the conv cells' seeds (one: a conv cell trains ≈ 20–30 min here).
    train: the schedule (train_models' FC100-100-10); seed s adds 100·s.
    conv_train: the conv net's (train_models' conv).
    n_images: first test images attacked and certified.
    n_lipschitz: images of the empirical lower bound.
    method: the certificate (advjax.certify; 'crown').
    conv_certify: the conv cells' certificate: CROWN falls back to intervals
      through the wide convs (configs/certify.py), so the larger of CROWN's and
      the global Lipschitz radius (both sound), the search stopped within 1%.
    eps: L2 radii of the accuracy columns.
    batch_size: the engine's batch (attack and certificate).
    attack: the untargeted attack's options.
  """
  variants: tuple[Variant, ...] = variants()
  # after the one-seed screen (session 6): the baseline, the two penalties that cut
  # the bound product most at equal error, and the LMT that trained
  finalists: tuple[str, ...] = ("weight decay", "penalty 0.01", "log-product 1e-2", "LMT 0.5")
  finalist_seeds: tuple[int, ...] = (1, 2)
  # after the finalists (session 7): the baseline, the best penalty, LMT
  conv: tuple[str, ...] = ("weight decay", "log-product 1e-2", "LMT 0.5")
  conv_seeds: tuple[int, ...] = (0,)
  train: TrainConfig = adv_search.TRAIN
  conv_train: TrainConfig = TrainConfig(epochs=12, batch_size=64, schedule="cosine")
  n_images: int = 500
  n_lipschitz: int = 100
  method: str = "crown"
  conv_certify: CertifyOptions = CertifyOptions(lipschitz_floor=True, rtol=0.01)
  eps: tuple[float, ...] = (0.5, 1.0, 1.58)
  batch_size: int = 100
  attack: AttackOptions = AttackOptions(scale="raw")  # as its committed results ran (before session 7)


def get_config(quick: bool = False) -> Config:
  """The one-seed screen on 60k images; quick: 3 cells, 1 epoch, 8 images."""
  if not quick:
    return Config(**common.base(quick))
  keep = ("weight decay", "penalty 0.001", "LMT 1.58")
  return Config(**common.base(quick), n_train=600, n_test=200,
                variants=tuple(v for v in variants() if v.name in keep),
                train=dataclasses.replace(adv_search.TRAIN, epochs=1),
                n_images=8, n_lipschitz=8, batch_size=8, attack=QUICK_ATTACK, finalists=(),
                conv=())
