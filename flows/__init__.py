"""Flax NNX layers built on jexpm.

Matrix-exponential normalizing flows (a multi-scale Glow whose 1x1 convolutions and
couplings are matrix exponentials) and orthogonal fine-tuning.

Direction convention for every bijector: ``forward_and_log_det`` maps data to latent,
``inverse_and_log_det`` maps latent to data.
"""

from jexpm import __version__ as __version__  # one distribution, one version

from ._glow import FlowStep as FlowStep
from ._glow import Glow as Glow
from ._glow import dequantize as dequantize
from ._glow import to_uint8 as to_uint8
from ._layers import COUPLINGS as COUPLINGS
from ._layers import ActNorm as ActNorm
from ._layers import AdditiveCoupling as AdditiveCoupling
from ._layers import AffineCoupling as AffineCoupling
from ._layers import ConvNet as ConvNet
from ._layers import MatrixExp1x1Conv as MatrixExp1x1Conv
from ._layers import MatrixExpCoupling as MatrixExpCoupling
from ._layers import Split as Split
from ._layers import Squeeze as Squeeze
from ._layers import random_rotation_log as random_rotation_log
from ._matexp import METHODS as EXPM_METHODS
from ._matexp import register_exponential as register_exponential
from ._oft import OrthogonalLinear as OrthogonalLinear

__all__ = [
    "COUPLINGS",
    "EXPM_METHODS",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "ConvNet",
    "FlowStep",
    "Glow",
    "MatrixExp1x1Conv",
    "MatrixExpCoupling",
    "OrthogonalLinear",
    "Split",
    "Squeeze",
    "dequantize",
    "random_rotation_log",
    "register_exponential",
    "to_uint8",
]
