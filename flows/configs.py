"""Training configurations: the paper's settings and small ones for CPUs and tests.

A :class:`Config` is a frozen dataclass; :func:`get_config` returns a named preset and
:func:`override` changes fields from ``key=value`` strings (what ``--set`` on the
command line does), checking names and values. The model's fields are one
:class:`flows.GlowOptions`, ``Config.model``, set by the same ``key=value`` strings
(``--set expm_method=ps``) and checked where that is built.

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

from ._options import GlowOptions


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a training run.

    Attributes:
      dataset: one of ``flows.input_pipeline.DATASETS``.
      data_dir: where TFDS data were prepared (``None``: TFDS's default).
      model: the model's options (levels, steps, coupling, widths, exponential,
        ``scan_unroll``; see :class:`flows.GlowOptions`).
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
    model: GlowOptions = dataclasses.field(default_factory=GlowOptions)
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
        positive = [
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
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be non-negative, got {self.warmup_epochs!r}")


#: Preset name -> its :class:`Config` (see the module docstring).
PRESETS: Mapping[str, Config] = {
    "default": Config(
        model=GlowOptions(steps_per_level=(2, 2, 2), hidden_channels=32, residual_blocks=1),
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
        model=GlowOptions(levels=4, steps_per_level=(8, 4, 2, 2), residual_blocks=10),
        decay_epochs=(20.0, 40.0),
        ema_decay=0.9999,
    ),
    "test": Config(
        model=GlowOptions(levels=2, steps_per_level=(1, 1), hidden_channels=8, residual_blocks=1),
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

    A key is a field of :class:`Config` or of its ``model`` (:class:`flows.GlowOptions`).

    Raises:
      ValueError: an unknown key, a value of the wrong type, or an invalid result.
    """
    own = typing.get_type_hints(Config)
    model = typing.get_type_hints(GlowOptions)
    changes: dict[str, object] = {}
    model_changes: dict[str, object] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        if sep and key in model and key != "param_dtype":
            model_changes[key] = _parse(key, text, model[key])
        elif sep and key in own and key != "model":
            changes[key] = _parse(key, text, own[key])
        else:
            known = [f.name for f in dataclasses.fields(Config) if f.name != "model"]
            known += [f.name for f in dataclasses.fields(GlowOptions) if f.name != "param_dtype"]
            raise ValueError(
                f"bad override {item!r}: expected key=value with key one of {', '.join(known)}"
            )
    if model_changes:
        changes["model"] = dataclasses.replace(config.model, **model_changes)
    return dataclasses.replace(config, **changes)


def _parse(key: str, text: str, hint) -> object:
    """``text`` as a value of type ``hint``: a union, a tuple, a bool, a Literal or a scalar.

    A union takes ``none`` for ``None``, else its first member that parses ``text``;
    a Literal member (``Method | str``) ends the search: the command line names the
    built-in choices only.
    """
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = typing.get_args(hint)
        if type(None) in members and text.lower() == "none":
            return None
        for member in members:
            if member is type(None):
                continue
            try:
                return _parse(key, text, member)
            except ValueError:
                if typing.get_origin(member) is typing.Literal:
                    raise
        raise ValueError(f"bad value for {key}: {text!r} is not a {hint}")
    if typing.get_origin(hint) is typing.Literal:
        if text not in typing.get_args(hint):
            raise ValueError(f"unknown {key} {text!r}; choose one of {typing.get_args(hint)}")
        return text
    try:
        if typing.get_origin(hint) is tuple:
            (elem, *_) = typing.get_args(hint)
            return tuple(elem(v) for v in text.split(",") if v.strip())
        if hint is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        return hint(text)
    except ValueError:
        raise ValueError(f"bad value for {key}: {text!r} is not a {hint}") from None
