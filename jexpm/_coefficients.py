"""Coefficient tables for the Taylor-type approximants of exp and phi1.

Every number here is checked by ``tests/jexpm/test_coefficients.py``, which expands
each evaluation formula with mpmath and compares it with the Taylor coefficients
1/k! (exp) and 1/(k+1)! (phi1).

Sources:
  [S18] J. Sastre, "Efficient evaluation of matrix polynomials", Linear Algebra Appl.
        539 (2018) 229-250 (formulas for degrees 8 and 15+).
  [SI21] J. Sastre and J. Ibanez, "Efficient evaluation of matrix polynomials beyond
        the Paterson-Stockmeyer method", Mathematics 9(14):1600 (2021).
  [S25] J. Sastre et al., "Improving Matrix Exponential for Generative AI Flows: A
        Taylor-Based Approach Beyond Paterson-Stockmeyer", arXiv:2512.20777 (2025),
        and the authors' reference code (hipersc/MatrixFunctions,
        src/expm/taylor_opt15), which also holds the phi1 ("series") coefficients.
"""

from __future__ import annotations

import math

# Coefficients are listed as published, c1 first (see _polynomials.py for the shapes).

# exp, order 4 (one product after A2), [S25].
EXP_4 = (1.0, 1.0, 1.0 / 2.0, 1.0 / 3.0, 1.0 / 4.0)
# phi1, order 4, [S25].
PHI1_4 = (1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 4.0, 1.0 / 5.0)

# exp, order 8 (three products including A2), [S18] eq. (35), [S25].
EXP_8 = (
    4.980119205559973e-03,
    1.992047682223989e-02,
    7.665265321119147e-02,
    8.765009801785554e-01,
    1.225521150112075e-01,
    2.974307204847627e00,
    1.0 / 2.0,
    1.0,
    1.0,
)
# phi1, order 8, [S25] reference code.
PHI1_8 = (
    1.660039735186658e-03,
    7.470178808339960e-03,
    2.709974334395560e-02,
    4.500782732024826e-01,
    5.880731295195394e-02,
    2.034592904871945e00,
    1.0 / 6.0,
    1.0 / 2.0,
    1.0,
)

# exp, order 15+ (four products including A2; degree 16 only approximate), [S18]
# Table 7, [SI21], [S25].
EXP_15 = (
    4.018761610201036e-04,
    2.945531440279683e-03,
    -8.709066576837676e-03,
    4.017568440673568e-01,
    3.230762888122312e-02,
    5.768988513026145e00,
    2.338576034271299e-02,
    2.381070373870987e-01,
    2.224209172496374e00,
    -5.792361707073261e00,
    -4.130276365929783e-02,
    1.040801735231354e01,
    -6.331712455883370e01,
    3.484665863364574e-01,
    1.0,
    1.0,
)
# phi1, order 15+, from [S25]'s reference code with one correction: the published
# c10 is +3.134311599789341, which leaves the expansion up to 157% off 1/(k+1)!;
# with the sign flipped, degrees 0..15 match to 4e-16 (see the coefficient test).
PHI1_15 = (
    1.999637069327334e-04,
    1.494400064180480e-03,
    -4.364865621286775e-03,
    2.294130909981213e-01,
    1.868111448270906e-02,
    3.650752775284885e00,
    2.113847295209054e-02,
    7.709174196270302e-02,
    1.005952341579399e00,
    -3.134311599789341e00,  # published with the wrong sign
    -6.535520701550694e-02,
    5.711871755550578e00,
    -1.928484398466562e01,
    1.116706435878065e-01,
    1.0 / 2.0,
    1.0,
)
PHI1_15_PUBLISHED_C10 = 3.134311599789341

# log2 |c16 - exact| for the 15+ approximants: the error of their degree-16 term.
# exp: [S25] (its value -45.38856141351141, c16 = 2.608368698098256e-14 against
# 1/16! = 4.779477332387385e-14); phi1: our own expansion of PHI1_15 (tested).
LOG2_B16_EXP = -45.38856141351141
LOG2_B16_PHI1 = -49.55079590390972


def log2_inverse_factorial(k: int) -> float:
    """Return log2(1/k!)."""
    return -math.lgamma(k + 1) / math.log(2.0)
