"""jexpm: fast, accurate matrix exponentials for JAX.

Taylor approximants of order 1, 2, 4, 8 and 15+ evaluated with Sastre's formulas,
order and scaling chosen on device, exact derivatives of the computed approximant in
forward and reverse mode, and batching rules; and the action e^(tA) B without
forming e^(tA) (``expm_multiply``); the phi-functions of exponential integrators and
their action (``phi``, ``phi_multiply``).
"""

from importlib import metadata as _metadata

from ._expm import ExpmInfo as ExpmInfo
from ._expm import expm as expm
from ._expm import expm_frechet as expm_frechet
from ._expm import expm_lowrank as expm_lowrank
from ._expm import phi1 as phi1
from ._multiply import MULTIPLY_METHODS as MULTIPLY_METHODS
from ._multiply import ActionInfo as ActionInfo
from ._multiply import MultiplyMethod as MultiplyMethod
from ._multiply import expm_multiply as expm_multiply
from ._options import METHODS as METHODS
from ._options import Method as Method
from ._orthogonal import orthogonal as orthogonal
from ._phi import PHI_METHODS as PHI_METHODS
from ._phi import PhiMethod as PhiMethod
from ._phi import phi as phi
from ._phi import phi_multiply as phi_multiply

__all__ = [
    "METHODS",
    "MULTIPLY_METHODS",
    "PHI_METHODS",
    "ActionInfo",
    "ExpmInfo",
    "Method",
    "MultiplyMethod",
    "PhiMethod",
    "expm",
    "expm_frechet",
    "expm_lowrank",
    "expm_multiply",
    "orthogonal",
    "phi",
    "phi1",
    "phi_multiply",
]

try:  # the version is written once, in pyproject.toml
    __version__ = _metadata.version("jexpm")
except _metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"
