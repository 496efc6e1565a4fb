"""A catalogue of hard test matrices for the matrix exponential.

Every matrix comes from a public test suite and is written out here from its published
numbers (the code is ours). Sources, cited per entry:

  [AH09]  A. H. Al-Mohy and N. J. Higham, "A new scaling and squaring algorithm for the
          matrix exponential", SIAM J. Matrix Anal. Appl. 31(3) (2009); its test set
          ``expm_testmats.m`` (32 matrices; "AH09 #k" is case k there).
  [BUR]   J. Burkardt, test_matrix_exponential (14 matrices, from Moler & Van Loan,
          Ward, Laub, NAG), as used in scipy/sparse/linalg/tests/test_matfuncs.py
          (``test_burkardt_k``).
  [SPS]   scipy/sparse/linalg/tests/test_matfuncs.py (TestExpM, other tests).
  [SLA]   scipy/linalg/tests/test_matfuncs.py (TestExpM).
  [MVL]   C. Moler and C. Van Loan, "Nineteen dubious ways to compute the exponential of
          a matrix", SIAM Rev. 20 (1978); "... twenty-five years later", SIAM Rev. 45
          (2003).
  [W77]   R. C. Ward, "Numerical computation of the matrix exponential with accuracy
          estimate", SIAM J. Numer. Anal. 14(4) (1977).
  [KL]    C. Kenney and A. J. Laub, "Condition estimates for matrix functions", SIAM J.
          Matrix Anal. Appl. 10 (1989); "A Schur-Frechet algorithm for computing the
          logarithm and exponential of a matrix", SIAM J. Matrix Anal. Appl. 19 (1998).

Each case carries the mpmath working precision (``dps``) its reference needs (more
digits for matrices with huge entries or an ill-conditioned exponential) and, where
the exponential has a closed form, that form (``exact``) so the oracle itself can be
checked. All matrices are small (n <= 12) so that mpmath references stay quick.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.special import binom


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    """One test matrix.

    Attributes:
      name: identifier used in test ids.
      a: the matrix (float64 or complex128), read-only.
      source: where it comes from.
      dps: mpmath decimal digits for the reference exponential.
      exact: closed-form exponential in float64/complex128 (None if there is none).
      published: (values, rtol): the exponential as printed by the source, to the
        relative accuracy its digits allow (None if not published).
    """

    name: str
    a: np.ndarray
    source: str
    dps: int = 60
    exact: np.ndarray | None = None
    published: tuple[np.ndarray, float] | None = None


def _frozen(x) -> np.ndarray:
    x = np.array(x, dtype=np.complex128 if np.iscomplexobj(x) else np.float64)
    x.flags.writeable = False
    return x


CASES: dict[str, Case] = {}


def _add(name, a, source, dps=60, exact=None, published=None):
    assert name not in CASES, name
    a = _frozen(a)
    assert a.ndim == 2 and a.shape[0] == a.shape[1] <= 12, (name, a.shape)
    exact = None if exact is None else _frozen(exact)
    published = None if published is None else (_frozen(published[0]), published[1])
    CASES[name] = Case(name, a, source, dps, exact, published)


e1, e2, e4, e16 = (math.exp(k) for k in (1, 2, 4, 16))

# --- Burkardt's 14 [BUR], in the order of scipy's test_burkardt_1 .. 14 -------------
_add(
    "burkardt1_diagonal",
    [[1, 0], [0, 2]],
    "[BUR] 1 (Laub; Moler-Van Loan)",
    exact=[[e1, 0], [0, e2]],
)
_add(
    "burkardt2_symmetric",
    [[1, 3], [3, 2]],
    "[BUR] 2",
    published=(
        [[39.322809708033859, 46.166301438885753], [46.166301438885768, 54.711576854329110]],
        1e-14,
    ),
)
_add(
    "laub",
    [[0, 1], [-39, -40]],
    "[BUR] 3, due to Laub: Taylor-series powers blow up",
    exact=[
        [39 / (38 * e1) - 1 / (38 * math.exp(39)), -math.expm1(-38) / (38 * e1)],
        [39 * math.expm1(-38) / (38 * e1), -1 / (38 * e1) + 39 / (38 * math.exp(39))],
    ],
)
_add(
    "moler_van_loan",
    [[-49, 24], [-64, 31]],
    "[BUR] 4; [MVL] 1978 example: hard for series and diagonal Pade",
    exact=np.array([[3.0, 1], [4, 2]]) * np.exp([-17.0, -1]) @ np.array([[1, -0.5], [-2, 1.5]]),
)
_add(
    "mvl_nilpotent",
    [[0, 6, 0, 0], [0, 0, 6, 0], [0, 0, 0, 6], [0, 0, 0, 0]],
    "[BUR] 5; [MVL]: strictly upper triangular (nilpotent)",
    exact=[[1, 6, 18, 36], [0, 1, 6, 18], [0, 0, 1, 6], [0, 0, 0, 1]],
)
_add(
    "mvl_defective",
    [[1, 1], [0, 1]],
    "[BUR] 6; [MVL]: no complete eigenvector set",
    exact=[[e1, e1], [0, e1]],
)
_eps = float(np.spacing(1.0))
_add("mvl_near_defective", [[1 + _eps, 1], [0, 1 - _eps]], "[BUR] 7; [MVL]")
_add(
    "wikipedia_3x3",
    [[21, 17, 6], [-5, -1, -6], [4, 4, 16]],
    "[BUR] 8 (Wikipedia example)",
    exact=0.25
    * np.array(
        [
            [13 * e16 - e4, 13 * e16 - 5 * e4, 2 * e16 - 2 * e4],
            [-9 * e16 + e4, -9 * e16 + 5 * e4, -2 * e16 + 2 * e4],
            [16 * e16, 16 * e16, 4 * e16],
        ]
    ),
)
_add(
    "nag_f01ecf",
    [[1, 2, 2, 2], [3, 1, 1, 2], [3, 2, 1, 2], [3, 3, 3, 1]],
    "[BUR] 9 (NAG F01ECF example)",
    published=(
        [
            [740.7038, 610.8500, 542.2743, 549.1753],
            [731.2510, 603.5524, 535.0884, 542.2743],
            [823.7630, 679.4257, 603.5524, 610.8500],
            [998.4355, 823.7630, 731.2510, 740.7038],
        ],
        1e-7,
    ),
)
_add(
    "ward1",
    [[4, 2, 0], [1, 4, 1], [1, 1, 4]],
    "[W77] test 1; [BUR] 10; [AH09] #1: defective, nonderogatory",
    published=(
        [
            [147.8666224463699, 183.7651386463682, 71.79703239999647],
            [127.7810855231823, 183.7651386463682, 91.88256932318415],
            [127.7810855231824, 163.6796017231806, 111.9681062463718],
        ],
        1e-13,
    ),
)
_add(
    "ward2",
    [
        [29.87942128909879, 0.7815750847907159, -2.289519314033932],
        [0.7815750847907159, 25.72656945571064, 8.680737820540137],
        [-2.289519314033932, 8.680737820540137, 34.39400925519054],
    ],
    "[W77] test 2; [BUR] 11; [AH09] #2: symmetric, eigenvalues 20, 30, 40",
    published=(
        [
            [5.496313853692378e15, -1.823188097200898e16, -3.047577080858001e16],
            [-1.823188097200899e16, 6.060522870222108e16, 1.012918429302482e17],
            [-3.047577080858001e16, 1.012918429302482e17, 1.692944112408493e17],
        ],
        1e-13,
    ),
)
_add(
    "ward3",
    [[-131, 19, 18], [-390, 56, 54], [-387, 57, 52]],
    "[W77] test 3; [BUR] 12; [AH09] #3: eigenvalues -20, -2, -1",
    published=(
        [
            [-1.509644158793135, 0.3678794391096522, 0.1353352811751005],
            [-5.632570799891469, 1.471517758499875, 0.4060058435250609],
            [-4.934938326088363, 1.103638317328798, 0.5413411267617766],
        ],
        1e-11,  # the printed values are good to about 12 digits only
    ),
)
_forsythe = np.diag(np.ones(9), 1)
_forsythe[9, 0] = 1e-10
_add(
    "ward4_forsythe",
    _forsythe,
    "[W77] test 4; [BUR] 13 (n=10); [AH09] #4 gallery('forsythe',10,1e-10,0)",
)
_add(
    "moler_badly_scaled",
    [[0, 1e-8, 0], [-(2e10 + 4e8 / 6.0), -3, 2e10], [200.0 / 3.0, 0, -200.0 / 3.0]],
    "[BUR] 14; Moler, 'A balancing act for the matrix exponential' (2012)",
    dps=80,
    published=(
        [
            [0.446849468283175, 1.54044157383952e-09, 0.462811453558774],
            [-5743067.77947947, -0.0152830038686819, -4526542.71278401],
            [0.447722977849494, 1.54270484519591e-09, 0.463480648837651],
        ],
        1e-13,
    ),
)

# --- Al-Mohy & Higham 2009 test set [AH09] (the cases not already above) -------------
_T = np.array([[1.0, 10, 100], [1, 9, 100], [1, 11, 99]])
_add(
    "naha95",
    np.linalg.solve(_T.T, (_T @ np.diag([-0.001, -1, -100])).T).T,
    "[AH09] #5 (Najfeld & Havel 1995, p. 370): T diag(-1e-3, -1, -100) T^-1",
)
_add(
    "kenney_laub_ex2",
    [[0.1, 1e6], [0, 0.1]],
    "[AH09] #6; [KL] 1998 Ex. 2",
    dps=80,
    exact=[[math.exp(0.1), 1e6 * math.exp(0.1)], [0, math.exp(0.1)]],
)
_add(
    "kenney_laub_5x5",
    [
        [0, 3.8e3, 0, 0, 0],
        [0, -3.8e3, 1, 0, 0],
        [0, 0, -1, 5.5e6, 0],
        [0, 0, 0, -5.5e6, 2.7e7],
        [0, 0, 0, 0, -2.7e7],
    ],
    "[AH09] #7; [KL] 1998 p. 655",
    dps=100,
)
_w, _x = 1.3, 1e6
_add(
    "dieci_papini",
    np.block(
        [[_w * np.ones((4, 4)), _x * np.ones((4, 4))], [np.zeros((4, 4)), -_w * np.ones((4, 4))]]
    )
    / 8,
    "[AH09] #8 (Dieci & Papini 2000, Ex. 3.10), n=8",
    dps=80,
)
_rosser = np.array(
    [
        [611, 196, -192, 407, -8, -52, -49, 29],
        [196, 899, 113, -192, -71, -43, -8, -44],
        [-192, 113, 899, 196, 61, 49, 8, 52],
        [407, -192, 196, 611, 8, 44, 59, -23],
        [-8, -71, 61, 8, 411, -599, 208, 208],
        [-52, -43, 49, 44, -599, 411, 208, 208],
        [-49, -8, 8, 59, 208, 208, 99, -911],
        [29, -44, 52, -23, 208, 208, -911, 99],
    ],
    dtype=float,
)
_add(
    "rosser_scaled",
    2.05 * _rosser / np.abs(_rosser).sum(0).max(),
    "[AH09] #9: Rosser matrix scaled to 1-norm 2.05 (a bad case for expm's cost)",
)
_add(
    "rotation_1e4",
    [[0, 1e4], [-1e4, 0]],
    "[AH09] #10: exp = [[cos x, sin x], [-sin x, cos x]], x = 1e4 (jax.scipy: err 1.9e-6)",
    exact=[[math.cos(1e4), math.sin(1e4)], [-math.sin(1e4), math.cos(1e4)]],
)
_add(
    "nilpotent_random",
    1e2 * np.triu(np.random.default_rng(11).standard_normal((8, 8)), 1),
    "[AH09] #11: 1e2*triu(randn(8),1), nilpotent",
    dps=80,
)
for _n in (6, 8, 10):
    _add(
        f"pascal_log_{_n}",
        np.diag(np.arange(1.0, _n), -1),
        "[AH09] #12 (log of the Pascal Cholesky factor, Edelman & Strang 2003); "
        "[SPS] test_pascal (gh-8029)",
        exact=binom(np.arange(_n)[:, None], np.arange(_n)[None, :]),
    )
_add(
    "kenney_laub_1989",
    [[48, -49, 50, 49], [0, -2, 100, 0], [0, -1, -2, 1], [-50, 50, 50, -52]],
    "[AH09] #13; [KL] 1989 p. 206",
)
_add(
    "parks_ex1",
    [
        [0, 30, 1, 1, 1, 1],
        [-100, 0, 1, 1, 1, 1],
        [0, 0, 0, -6, 1, 1],
        [0, 0, 500, 0, 1, 1],
        [0, 0, 0, 0, 0, 200],
        [0, 0, 0, 0, -15, 0],
    ],
    "[AH09] #14 (Pang 1985, p. 7, Ex. I)",
)
_pang3 = np.diag(np.arange(8) - 3.5) + np.diag(np.ones(7), 1)
_add("pang_ex3", _pang3, "[AH09] #16 (Pang 1985, p. 10, Ex. III), n=8")
_add(
    "kenney_laub_nilpotent",
    [[0, 1e6], [0, 0]],
    "[AH09] #17; [KL] 1989 Ex. 5",
    exact=[[1, 1e6], [0, 1]],
)
_g, _b = (0.6, 0.6, 4.0), (2.0, 0.75)
_add(
    "jemc05_3x3",
    [
        [-_g[0], 0, _g[0] * _b[0]],
        [0, -_g[1], _g[1] * _b[1]],
        [-_g[0] * _g[2], _g[2], -_g[2] * (1 - _g[0] * _b[0])],
    ],
    "[AH09] #18 (Jemcov et al. 2005, (52))",
)
_g, _b = (1.5, 0.5, 3.0, 2.0, 0.4, 0.03), (0.6, 7.0)
_a1 = [[-_g[4], 0, 0], [0, -_g[0], 0], [_g[3], _g[3], -_g[2]]]
_a2 = [[-_g[5], 0, _g[5] * _b[1]], [0, -_g[1], _g[1] * _b[0]], [0, _g[3], -_g[3]]]
_add(
    "jemc05_6x6",
    np.block([[np.zeros((3, 3)), np.eye(3)], [np.array(_a2), np.array(_a1)]]),
    "[AH09] #19 (Jemcov et al. 2005, (55))",
)
_add("kenney_laub_ex3", [[-1, 1e7], [0, -1e7]], "[AH09] #20; [KL] 1998 Ex. 3", dps=80)
_decay = math.log(2) / (np.array([3.8235 * 60 * 24, 3.10, 26.8, 19.9]) / 60)
_add(
    "radon_decay",
    np.diag(-_decay) + np.diag(_decay[:-1], -1),
    "[AH09] #21 (Moler & Van Loan 2003, (21)): radioactive decay chain",
)
_a1, _a2 = 0.01145, 0.2270
_add(
    "mvl_decay_3x3",
    [[-_a1, 0, 0], [0.3594 * _a1, -_a2, 0], [0.6406 * _a1, _a2, 0]],
    "[AH09] #22 (Moler & Van Loan 2003, (26))",
)
_rates = np.array(
    [
        4.916e-18,
        3.329e-7,
        8.983e-14,
        2.852e-13,
        1.373e-11,
        2.098e-6,
        9.850e-10,
        1.601e-6,
        5.796e-8,
        0.0,
    ]
)
_add(
    "kase99_decay",
    np.diag(-_rates) + np.diag(_rates[:-1], -1),
    "[AH09] #23 (Kase 1999, Table 1): rates from 5e-18 to 2e-6",
)
_add(
    "awad_1e17",
    [[1, 1e17], [0, 1]],
    "[AH09] #25 (jax.scipy.linalg.expm gives NaN)",
    dps=100,
    exact=[[e1, 1e17 * e1], [0, e1]],
)
_bb, _xx = 1e3, 1e10
_a0 = np.array([[1 - _bb / 2, _bb / 2], [-_bb / 2, 1 + _bb / 2]])
_add(
    "awad_26",
    np.block([[_a0, _xx * np.ones((2, 2))], [np.zeros((2, 2)), -_a0]]),
    "[AH09] #26",
    dps=100,
)
_bb = 1e5
_add("awad_27", [[1 - _bb / 2, _bb / 2], [-_bb / 2, 1 + _bb / 2]], "[AH09] #27", dps=80)
_bb = 1e3
_add("awad_28", [[1 - _bb / 2, _bb / 2], [-(_bb**4) / 2, 1 + _bb / 2]], "[AH09] #28", dps=80)
_add(
    "godunov",
    np.array(
        [
            [289, 2064, 336, 128, 80, 32, 16],
            [1152, 30, 1312, 512, 288, 128, 32],
            [-29, -2000, 756, 384, 1008, 224, 48],
            [512, 128, 640, 0, 640, 512, 128],
            [1053, 2256, -504, -384, -756, 800, 208],
            [-287, -16, 1712, -128, 1968, -30, 2032],
            [-2176, -287, -1565, -512, -541, -1152, -289],
        ]
    )
    / 10,
    "[AH09] #29 (EigTool godunov_demo / 10): eigenvalues 0, +-0.1, +-0.2, +-0.4, "
    "eigenvalue condition ~1e16",
    dps=100,
)
_add(
    "trefethen_embree",
    10 * np.array([[0, 1, 2], [-0.01, 0, 3], [0, 0, 0]]),
    "[AH09] #30 (Trefethen & Embree 2005, (14.17))",
)
_kuda = -np.eye(8) + 0.5 * (np.diag(np.ones(7), 1) + np.diag(np.ones(7), -1))
_kuda[0, 1] = _kuda[7, 6] = 1.0
_add("kuda10", _kuda, "[AH09] #32 (alpha = beta = 1), n=8")

# --- scipy's own cases [SPS], [SLA] ---------------------------------------------------
_A_tri = [
    [3.2346e-1, 3e4, 3e4, 3e4],
    [0, 3.0089e-1, 3e4, 3e4],
    [0, 0, 3.221e-1, 3e4],
    [0, 0, 0, 3.0744e-1],
]
_add(
    "triu_huge_offdiag",
    _A_tri,
    "[SPS] test_triangularity_perturbation: Al-Mohy & Higham 2012, experiment 1",
    dps=100,
)
_add(
    "triu_expm_logm",
    [
        [
            -1.12867982029050462e00,
            9.61418377142025565e04,
            -4.52485573953179264e09,
            2.92496941103871812e14,
        ],
        [0, -1.20101052953082288e00, 9.63469687211303099e04, -4.68104828911105442e09],
        [0, 0, -1.13289322264498393e00, 9.53249183094775653e04],
        [0, 0, 0, -1.17947533272554850e00],
    ],
    "[SPS] test_triangularity_perturbation: logm of triu_huge_offdiag, expm(logm(A)) = A "
    "(condition > 1e36, scipy's expm_cond test)",
    dps=140,
)
_lap = np.zeros((7, 7))
_lap[[0, 1, 2], [0, 1, 2]] = 1.0
_lap[[0, 0, 1, 1, 2, 2], [1, 2, 3, 4, 5, 6]] = -0.5
_add(
    "sinh_overflow",
    -(2.0**11) * _lap,
    "[SPS] test_exp_sinch_overflow (gh-11839): -2**11 L, L a tree Laplacian",
    dps=80,
)
_add(
    "integer_generator",
    [[-500, 500, 0, 0], [0, -550, 360, 190], [0, 630, -630, 0], [0, 0, 0, 0]],
    "[SPS] test_integer_matrix_2 (Markov generator)",
)
_add(
    "scipy_2x2",
    [[1, 4], [1, 1]],
    "[SLA] TestExpM.test_2x2_input",
    exact=[[(e4 + 1) / (2 * e1), (e4 - 1) / e1], [(e4 - 1) / (4 * e1), (e4 + 1) / (2 * e1)]],
)
_add(
    "scipy_nx2x2_5",
    [[4, 5], [-3, -4]],
    "[SLA] TestExpM.test_nx2x2_input, 5th matrix",
    exact=[
        [-3 / (2 * e1) + 5 * e1 / 2, -5 / (2 * e1) + 5 * e1 / 2],
        [3 / (2 * e1) - 3 * e1 / 2, 5 / (2 * e1) - 3 * e1 / 2],
    ],
)

# --- structured cases with closed forms ----------------------------------------------
_lam, _n = 2.0, 8
_N = np.diag(np.ones(_n - 1), 1)
_add(
    "jordan_block_8",
    _lam * np.eye(_n) + _N,
    "Jordan block, eigenvalue 2, n=8 [MVL]",
    exact=math.exp(_lam)
    * sum(np.linalg.matrix_power(_N, k) / math.factorial(k) for k in range(_n)),
)
_add(
    "jordan_block_scaled",
    -10 * np.eye(6) + 10 * np.diag(np.ones(5), 1),
    "Jordan-type block -10 I + 10 N, n=6 [MVL]",
    exact=math.exp(-10)
    * sum(
        np.linalg.matrix_power(10 * np.diag(np.ones(5), 1), k) / math.factorial(k) for k in range(6)
    ),
)
_add("zero_3x3", np.zeros((3, 3)), "exp(0) = I", exact=np.eye(3))

# --- complex cases ---------------------------------------------------------------------
_n = 8
_m = (_n - 1) / 2
_pang2 = np.triu(np.ones((_n, _n)), 1).astype(complex) + np.diag(1j * np.arange(-_m, _m + 1))
for _i in range(_n - 1):
    _pang2[_i, _i + 1] = -2 * (_n - 1) - 2 + 4 * (_i + 1)
_add("pang_ex2_complex", _pang2, "[AH09] #15 (Pang 1985, p. 9, Ex. II), n=8")
_lamc = 1e6j
_mu = 0.5 * (-1 + np.sqrt(1 + 4 * _lamc))
_add(
    "niesen_complex",
    np.array([[0, 1], [_lamc, -1]]) - _mu * np.eye(2),
    "[AH09] #24 (Jitse Niesen): lambda = 1e6 i",
    dps=80,
)
_add(
    "burkardt_c8_imag",
    np.diag([3j, -4j]),
    "Burkardt c8mat_exp test 2 (pure imaginary)",
    exact=np.diag(np.exp([3j, -4j])),
)
_add(
    "burkardt_c8_complex",
    np.diag([5 + 6j, 7 - 8j]),
    "Burkardt c8mat_exp test 3",
    exact=np.diag(np.exp([5 + 6j, 7 - 8j])),
)
_add("mpmath_doc_complex", [[1 + 1j, 0], [1 + 1j, 1]], "mpmath expm docstring example")
_rng = np.random.default_rng(5)
_zc = _rng.standard_normal((8, 8)) + 1j * _rng.standard_normal((8, 8))
_add(
    "random_complex_8",
    4 * _zc / np.abs(_zc).sum(0).max(),
    "random complex Gaussian 8x8, 1-norm 4 (seed 5)",
)


REAL = [name for name, c in CASES.items() if not np.iscomplexobj(c.a)]
COMPLEX = [name for name, c in CASES.items() if np.iscomplexobj(c.a)]


def gh25924_batch() -> np.ndarray:
    """The gh-25924 situation: a batch whose slices need different scalings.

    scipy 1.18.0's batched ``expm`` kept the Pade order and scaling of the first slice
    for the later ones (scipy issue 25924, fixed by PR 25934): a batch of symmetric 6x6
    matrices with 1-norms near 5.7 and 2.6 gave relative error 3 on the second slice.
    Here: three symmetric 6x6 matrices (seeded), the middle one scaled by 8, so the
    slices need different numbers of squarings.
    """
    rng = np.random.default_rng(25924)
    out = []
    for norm in (5.71, 2.55, 2.55):
        x = rng.standard_normal((6, 6))
        x = (x + x.T) / 2
        out.append(norm * x / np.abs(x).sum(0).max())
    out[1] = 8 * out[1]
    return np.stack(out)
