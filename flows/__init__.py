"""Flax NNX layers built on jexpm.

Matrix-exponential normalizing flows (a multi-scale Glow whose 1x1 convolutions and
couplings are matrix exponentials) and orthogonal fine-tuning.

Every flow layer is a :class:`Bijector`: ``forward_and_log_det`` maps data to latent,
``inverse_and_log_det`` maps latent to data.
"""

from jexpm import __version__ as __version__  # one distribution, one version

from ._actnorm import ActNorm as ActNorm
from ._bijector import Bijector as Bijector
from ._bijector import Chain as Chain
from ._bijector import Scan as Scan
from ._conv1x1 import MatrixExp1x1Conv as MatrixExp1x1Conv
from ._conv1x1 import random_rotation_log as random_rotation_log
from ._couplings import COUPLINGS as COUPLINGS
from ._couplings import AdditiveCoupling as AdditiveCoupling
from ._couplings import AffineCoupling as AffineCoupling
from ._couplings import ConvNet as ConvNet
from ._couplings import Coupling as Coupling
from ._couplings import MatrixExpCoupling as MatrixExpCoupling
from ._glow import FlowStep as FlowStep
from ._glow import Glow as Glow
from ._glow import Level as Level
from ._glow import dequantize as dequantize
from ._glow import to_uint8 as to_uint8
from ._matexp import METHODS as EXPM_METHODS
from ._matexp import register_exponential as register_exponential
from ._oft import OrthogonalLinear as OrthogonalLinear
from ._options import GlowOptions as GlowOptions
from ._reshaping import Split as Split
from ._reshaping import Squeeze as Squeeze
from ._statistics import expm_statistics as expm_statistics

__all__ = [
    "COUPLINGS",
    "EXPM_METHODS",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Bijector",
    "Chain",
    "ConvNet",
    "Coupling",
    "FlowStep",
    "Glow",
    "GlowOptions",
    "Level",
    "MatrixExp1x1Conv",
    "MatrixExpCoupling",
    "OrthogonalLinear",
    "Scan",
    "Split",
    "Squeeze",
    "dequantize",
    "expm_statistics",
    "random_rotation_log",
    "register_exponential",
    "to_uint8",
]
