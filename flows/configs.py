"""Training configurations: the paper's settings and small ones for CPUs and tests.

A :class:`Config` is a frozen dataclass; :func:`get_config` returns a named preset and
:func:`override` changes fields from ``key=value`` strings (what ``--set`` on the
command line does), checking names and values.

Presets (:data:`PRESETS`):

- ``"default"``: a small Glow on the offline default data (32x32 patches of photographs
  bundled with scikit-image) that trains in a few minutes on two CPU cores.
- ``"cifar10"``, ``"imagenet32"``, ``"imagenet64"``: Xiao & Liu (2020), section 5 and
  appendix: 3 levels of 8/4/2 steps, 128 hidden channels, 8 residual blocks (10 for
  ImageNet 64x64), Adamax with learning rate 0.01, a one-epoch linear warm-up, the
  rate halved at epoch 40 (ImageNet: 20 and 40), Polyak averaging 0.999 (ImageNet
  0.9999), batch 64, 50 epochs. ImageNet 64x64 uses a fourth level of 2 steps here, so
  that its top level is 4x4 as for 32x32 inputs; its 96-channel top level then takes
  the rank-3 coupling form.
- ``"test"``: a tiny model and a few steps, for tests.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping

from . import _matexp
from ._couplings import COUPLINGS


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a training run.

    Attributes:
      dataset: one of ``flows.input_pipeline.DATASETS``.
      data_dir: where TFDS data were prepared (``None``: TFDS's default).
      levels: Glow levels.
      steps_per_level: flow steps per level (one int per level).
      hidden_channels: width of the coupling networks.
      residual_blocks: residual blocks per coupling network.
      coupling: "matrix_exp", "affine" or "additive".
      low_rank: low-rank matrix-exp couplings (``None``: when more than 24 channels).
      rank: rank of the low-rank couplings.
      coupling_action: matrix-exp couplings apply the exponential without forming it
        (``None``: the faster per size, see ``flows.MatrixExpCoupling``).
      expm_method: the matrix exponential: "opt15", "ps", "baseline" or "jax.scipy".
      expm_tol: tolerance of the jexpm methods (``None``: float32 unit roundoff).
      scan_unroll: flow steps and residual blocks per iteration of their scans
        (``True``: unrolled; faster steps, compile time growing with depth).
      batch_size: training batch size (global, split over the devices).
      eval_batch_size: evaluation batch size.
      num_epochs: training length in epochs, used when ``num_train_steps`` is ``None``.
      num_train_steps: training length in steps (overrides ``num_epochs``).
      learning_rate: peak Adamax learning rate.
      b1: Adamax first-moment decay.
      b2: Adamax infinity-norm decay.
      warmup_epochs: linear warm-up from 0 to the peak rate, in epochs.
      decay_epochs: epochs at which the rate is multiplied by ``decay_factor``.
      decay_factor: the step-decay factor.
      ema_decay: Polyak averaging of the parameters, used for evaluation and samples.
      init_batch_size: images for the data-dependent ActNorm initialisation.
      log_every_steps: steps between training-metric lines and (m, s) statistics.
      eval_every_steps: steps between evaluations (and at the end).
      num_eval_batches: evaluation batches (``None``: the whole test split).
      checkpoint_every_steps: steps between checkpoints (and at the end).
      num_samples: images in the PNG sample grid written at each evaluation.
      sample_temperature: temperature of those samples.
      seed: seed of the initialisation, the data order and the dequantisation noise.
    """

    dataset: str = "default"
    data_dir: str | None = None
    levels: int = 3
    steps_per_level: tuple[int, ...] = (8, 4, 2)
    hidden_channels: int = 128
    residual_blocks: int = 8
    coupling: str = "matrix_exp"
    low_rank: bool | None = None
    rank: int = 3
    coupling_action: bool | None = None
    expm_method: str = "opt15"
    expm_tol: float | None = None
    scan_unroll: int | bool = 1
    batch_size: int = 64
    eval_batch_size: int = 256
    num_epochs: float = 50.0
    num_train_steps: int | None = None
    learning_rate: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    warmup_epochs: float = 1.0
    decay_epochs: tuple[float, ...] = (40.0,)
    decay_factor: float = 0.5
    ema_decay: float = 0.999
    init_batch_size: int = 512
    log_every_steps: int = 100
    eval_every_steps: int = 2000
    num_eval_batches: int | None = None
    checkpoint_every_steps: int = 1000
    num_samples: int = 64
    sample_temperature: float = 0.7
    seed: int = 0

    def __post_init__(self):
        from . import input_pipeline

        if self.dataset not in input_pipeline.DATASETS:
            raise ValueError(
                f"unknown dataset {self.dataset!r}; choose one of {tuple(input_pipeline.DATASETS)}"
            )
        if self.coupling not in COUPLINGS:
            raise ValueError(
                f"unknown coupling {self.coupling!r}; choose one of {tuple(COUPLINGS)}"
            )
        if self.expm_method not in _matexp.METHODS:
            raise ValueError(
                f"unknown expm_method {self.expm_method!r}; choose one of {_matexp.METHODS}"
            )
        _matexp.check_method(self.expm_method, self.expm_tol, "Config.expm_tol")
        if len(self.steps_per_level) != self.levels:
            raise ValueError(
                f"steps_per_level {self.steps_per_level} must have one entry per level "
                f"(levels={self.levels})"
            )
        positive = [
            "levels",
            "hidden_channels",
            "batch_size",
            "eval_batch_size",
            "learning_rate",
            "init_batch_size",
            "log_every_steps",
            "eval_every_steps",
            "checkpoint_every_steps",
            "num_samples",
            "sample_temperature",
        ]
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.num_train_steps is not None and self.num_train_steps < 1:
            raise ValueError(f"num_train_steps must be >= 1 or None, got {self.num_train_steps}")
        if self.num_train_steps is None and not self.num_epochs > 0:
            raise ValueError(f"num_epochs must be positive, got {self.num_epochs!r}")
        for name in ("b1", "b2", "ema_decay", "decay_factor"):
            if not 0 <= getattr(self, name) < 1 + (name == "decay_factor"):
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.residual_blocks < 0 or self.warmup_epochs < 0:
            raise ValueError("residual_blocks and warmup_epochs must be non-negative")


#: Preset name -> its :class:`Config` (see the module docstring).
PRESETS: Mapping[str, Config] = {
    "default": Config(
        levels=3,
        steps_per_level=(2, 2, 2),
        hidden_channels=32,
        residual_blocks=1,
        batch_size=32,
        num_epochs=4.0,
        learning_rate=2e-3,
        warmup_epochs=0.25,
        decay_epochs=(3.0,),
        ema_decay=0.99,
        init_batch_size=256,
        log_every_steps=25,
        eval_every_steps=148,
        checkpoint_every_steps=148,
        num_samples=36,
    ),
    "cifar10": Config(dataset="cifar10"),
    "imagenet32": Config(
        dataset="imagenet_resized/32x32", decay_epochs=(20.0, 40.0), ema_decay=0.9999
    ),
    "imagenet64": Config(
        dataset="imagenet_resized/64x64",
        levels=4,
        steps_per_level=(8, 4, 2, 2),
        residual_blocks=10,
        decay_epochs=(20.0, 40.0),
        ema_decay=0.9999,
    ),
    "test": Config(
        levels=2,
        steps_per_level=(1, 1),
        hidden_channels=8,
        residual_blocks=1,
        batch_size=8,
        eval_batch_size=64,
        num_train_steps=6,
        learning_rate=2e-3,
        warmup_epochs=0.0,
        ema_decay=0.5,
        init_batch_size=32,
        log_every_steps=2,
        eval_every_steps=3,
        num_eval_batches=1,
        checkpoint_every_steps=2,
        num_samples=4,
    ),
}


def get_config(name: str = "default") -> Config:
    """The named preset (see the module docstring)."""
    if name not in PRESETS:
        raise ValueError(f"unknown config {name!r}; choose one of {tuple(PRESETS)}")
    return PRESETS[name]


def override(config: Config, assignments: list[str]) -> Config:
    """Apply ``key=value`` strings, parsing each value as the field's type.

    Raises:
      ValueError: an unknown key, a value of the wrong type, or an invalid result.
    """
    hints = typing.get_type_hints(Config)
    changes = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or key not in hints:
            known = ", ".join(f.name for f in dataclasses.fields(Config))
            raise ValueError(f"bad override {item!r}: expected key=value with key one of {known}")
        changes[key] = _parse(key, text, hints[key])
    return dataclasses.replace(config, **changes)


def _parse(key: str, text: str, hint) -> object:
    base = hint
    if isinstance(hint, types.UnionType):  # X | None
        if text.lower() == "none":
            return None
        base = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if typing.get_origin(base) is tuple:
            (elem, *_) = typing.get_args(base)
            return tuple(elem(v) for v in text.split(",") if v.strip())
        if base is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        return base(text)
    except ValueError:
        raise ValueError(f"bad value for {key}: {text!r} is not a {hint}") from None
