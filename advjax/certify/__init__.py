"""Certified L2 radii: the lower end of each example's bracket (§4.3 onwards).

The §4.1 attack (`advjax.attack.lbfgs`) finds an adversarial example at some
distance: an upper bound on the minimal distortion. `radius` gives a lower
bound: no x + r with ‖r‖₂ below it, inside the box, changes the label.

Methods, loosest first: 'lipschitz' (global margin bound from §4.3's layer
norms, as in Tsuzuku et al. 2018, "Lipschitz-Margin Training"), 'ibp'
(interval bounds, Gowal et al. 2018), 'crown' (linear relaxations, Zhang et
al. 2018, "Efficient Neural Network Robustness Certification with General
Activation Functions"), 'alpha-crown' (optimised ReLU slopes, Xu et al. 2021,
"Fast and Complete"), and 'exact' for affine models. The model is traced to a
jaxpr and interpreted with one bound rule per primitive (`interpret`,
`rules`), as DeepMind's jax_verify does, so any JAX model built from
supported primitives is certified; the L2 ball is intersected with the input
box (`concretize`).
"""

from advjax.certify.interpret import UnsupportedPrimitiveError
from advjax.certify.lipschitz import Constants as LipschitzConstants
from advjax.certify.lipschitz import constants as lipschitz_constants
from advjax.certify.options import METHODS, CertifyOptions, CertifyResult
from advjax.certify.search import batch, radius

__all__ = ["radius", "batch", "CertifyOptions", "CertifyResult", "METHODS",
           "UnsupportedPrimitiveError", "LipschitzConstants", "lipschitz_constants"]
