"""Image data for the flows: an offline default data set and TFDS data sets, without TensorFlow.

:func:`load` returns an :class:`ImageSource`, a random-access collection of uint8 images
of one shape (H, W, C); :func:`batches` draws an endless stream of shuffled training
batches from it in which the batch of global step k depends only on (seed, k) (for a
given source and batch size), so a run resumed from a checkpoint at step k sees exactly
the batches the uninterrupted run would have seen; :func:`eval_batches` makes one
ordered, padded pass for evaluation.

Data sets (:data:`DATASETS`, name -> :class:`Dataset`: image shape, splits, source and
licence):

- ``"default"``: 32x32x3 patches cut from colour photographs bundled with scikit-image
  (``skimage.data``); needs no download and no ``tensorflow-datasets``. See
  :func:`load` for the photographs in each split.
- ``"cifar10"``, ``"imagenet_resized/32x32"``, ``"imagenet_resized/64x64"``: read with
  ``tfds.data_source`` (random access to ArrayRecord files, no TensorFlow needed) once
  they have been prepared, which does need TensorFlow, once::

      pip install "jexpm[data]" tensorflow
      tfds build cifar10 --file_format=array_record  # optionally --data_dir=DIR

This is the only module of the project that imports ``tensorflow_datasets``, and only
inside the functions that need it.

Example:
    >>> from flows import input_pipeline
    >>> train = input_pipeline.load("default", "train")
    >>> len(train), train.image_shape
    (4727, (32, 32, 3))
    >>> stream = input_pipeline.batches(train, 64, seed=0)
    >>> batch = next(stream)
    >>> batch.shape, batch.dtype
    ((64, 32, 32, 3), dtype('uint8'))
    >>> resumed = input_pipeline.batches(train, 64, seed=0, start_step=1)
    >>> bool((next(resumed) == next(stream)).all())
    True
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import operator
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DATASETS",
    "SPLITS",
    "ArrayImageSource",
    "Dataset",
    "DatasetNotPreparedError",
    "ImageSource",
    "TfdsImageSource",
    "batches",
    "eval_batches",
    "load",
    "steps_per_epoch",
]

SPLITS = ("train", "test")
"""Splits accepted by :func:`load`."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What the project knows about one data set before reading it.

    Attributes:
      image_shape: (height, width, channels) of every image.
      splits: our split name -> the split read (``imagenet_resized`` has no test split
        and evaluates on its validation split).
      source: where the images come from, and their licence or terms of use.
    """

    image_shape: tuple[int, int, int]
    splits: Mapping[str, str]
    source: str


_SAME_SPLITS = {"train": "train", "test": "test"}
_VALIDATION_AS_TEST = {"train": "train", "test": "validation"}

#: Data set name -> its :class:`Dataset`: what :func:`load` reads for that name.
DATASETS: Mapping[str, Dataset] = {
    "default": Dataset(
        (32, 32, 3),
        _SAME_SPLITS,
        "patches of photographs bundled with scikit-image (see load(); public domain, CC0, "
        "and one Middlebury stereo view for which skimage.data states no licence)",
    ),
    "cifar10": Dataset(
        (32, 32, 3),
        _SAME_SPLITS,
        "CIFAR-10 (Krizhevsky, 'Learning Multiple Layers of Features from Tiny Images', "
        "2009) through TFDS; distributed by its authors without a stated licence",
    ),
    "imagenet_resized/32x32": Dataset(
        (32, 32, 3),
        _VALIDATION_AS_TEST,
        "ImageNet downsampled (Chrabaszcz et al., arXiv:1707.08819) through TFDS; the "
        "ImageNet terms of access (non-commercial research and education) apply",
    ),
    "imagenet_resized/64x64": Dataset(
        (64, 64, 3),
        _VALIDATION_AS_TEST,
        "ImageNet downsampled (Chrabaszcz et al., arXiv:1707.08819) through TFDS; the "
        "ImageNet terms of access (non-commercial research and education) apply",
    ),
}
"""Data set name -> :class:`Dataset`: the names accepted by :func:`load`."""

_INSTALL_TFDS = 'Reading TFDS data sets needs tensorflow-datasets: pip install "jexpm[data]"'

# The default data set: photographs from skimage.data (all bundled in the scikit-image
# wheel, so loading them never downloads), each downscaled so that its shorter side is
# _SHORT_SIDE pixels, then cut into _PATCH x _PATCH patches on a grid of stride _STRIDE.
_PATCH = 32
_STRIDE = 8
_SHORT_SIDE = 256
_DEFAULT_PHOTOS = {
    "train": ("astronaut", "coffee", "rocket", "motorcycle_left"),
    "test": ("chelsea",),
}


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS data set has not been prepared (or not in a random-access format)."""


class ImageSource(abc.ABC):
    """Random-access collection of uint8 images of one shape (H, W, C).

    Index it with a 1-D array of integer indices to get a uint8 array of shape
    (len(indices), H, W, C); a single integer gives one (H, W, C) image. Negative
    indices count from the end, as for Python sequences.
    """

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @property
    @abc.abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """Shape (H, W, C) of every image."""

    @abc.abstractmethod
    def _gather(self, indices: np.ndarray) -> np.ndarray:
        """Images at ``indices`` (non-negative, in range), uint8 (len(indices), H, W, C)."""

    def __getitem__(self, indices: npt.ArrayLike) -> np.ndarray:
        """Images at ``indices``.

        Args:
          indices: an integer, or a 1-D array (or sequence) of integers in
            [-len(self), len(self)).

        Returns:
          uint8 array of shape (len(indices), H, W, C), or (H, W, C) for an integer.

        Raises:
          IndexError: if an index is out of range.
          TypeError: if ``indices`` are not integers or have more than one dimension.
        """
        idx = np.asarray(indices)
        if idx.ndim > 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(
                f"indices must be an integer or a 1-D array of integers, got {idx.dtype} "
                f"of shape {idx.shape}"
            )
        idx = idx.astype(np.int64)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for an image source of length {n}")
        idx = np.where(idx < 0, idx + n, idx)
        if idx.ndim == 0:
            return self._gather(idx[None])[0]
        return self._gather(idx)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(len={len(self)}, image_shape={self.image_shape})"


class ArrayImageSource(ImageSource):
    """An :class:`ImageSource` held in memory as one uint8 array.

    Args:
      images: uint8 array of shape (N, H, W, C). It is kept without a copy, through a
        read-only view.
    """

    def __init__(self, images: np.ndarray) -> None:
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(
                f"images must be a uint8 array of shape (N, H, W, C), got {images.dtype} "
                f"of shape {images.shape}"
            )
        if images.flags.writeable:
            images = images.view()
            images.flags.writeable = False
        self._images = images

    @property
    def images(self) -> np.ndarray:
        """All images, a read-only uint8 array of shape (N, H, W, C)."""
        return self._images

    def __len__(self) -> int:
        """Number of images."""
        return self._images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape (H, W, C) of every image."""
        h, w, c = self._images.shape[1:]
        return (h, w, c)

    def _gather(self, indices: np.ndarray) -> np.ndarray:
        return self._images[indices]


class TfdsImageSource(ImageSource):
    """The ``"image"`` feature of a ``tfds.data_source``.

    Args:
      data_source: a TFDS random-access data source (``tfds.data_source(name,
        split=...)``) whose examples are dicts with an ``"image"`` entry.
      image_shape: shape (H, W, C) of the images; by default read from the data
        source's ``dataset_info.features["image"].shape``.
    """

    def __init__(self, data_source: Any, image_shape: tuple[int, int, int] | None = None) -> None:
        shape = tuple(
            data_source.dataset_info.features["image"].shape if image_shape is None else image_shape
        )
        if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"images must have a fixed (H, W, C) shape, got {shape}")
        self._source = data_source
        self._shape = (shape[0], shape[1], shape[2])

    def __len__(self) -> int:
        """Number of images."""
        return len(self._source)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape (H, W, C) of every image."""
        return self._shape

    def _gather(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((indices.size, *self._shape), np.uint8)
        if not indices.size:
            return out
        keys = indices.tolist()
        if hasattr(self._source, "__getitems__"):
            # One batched read for the whole batch (ArrayRecord groups it by shard).
            examples = self._source.__getitems__(keys)
        else:
            examples = [self._source[k] for k in keys]
        for i, example in enumerate(examples):
            image = np.asarray(example["image"])
            if image.shape != self._shape:
                raise ValueError(f"expected an image of shape {self._shape}, got {image.shape}")
            out[i] = image
        return out

    def __repr__(self) -> str:
        return f"TfdsImageSource({self._source!r}, image_shape={self._shape})"


def load(name: str, split: str, *, data_dir: str | None = None) -> ImageSource:
    """Loads one split of an image data set.

    ``"default"`` is built in memory (well under a second, then cached) from photographs
    that ship inside scikit-image (``skimage.data``; no download): each is downscaled
    with box (area) resampling so that its shorter side is 256 pixels and cut into
    32x32 patches on a grid of stride 8, photograph after photograph, row-major. The
    split is by photograph, so no test patch overlaps any training photograph (sizes are
    width x height before downscaling; sources and licences as the docstrings of the
    ``skimage.data`` functions, scikit-image 0.26, state them):

    ===== ================================= =========== =================================
    split ``skimage.data`` photograph       patches     source; licence
    ===== ================================= =========== =================================
    train ``astronaut()`` (512x512)         841         Eileen Collins, NASA Great Images
                                                        database; public domain
    train ``coffee()`` (600x400)            1305        Pikolo Espresso Bar; CC0 by the
                                                        photographer, Rachel Michetti
    train ``rocket()`` (640x427)            1305        DSCOVR launch on Falcon 9, SpaceX;
                                                        released into the public domain
    train ``stereo_motorcycle()[0]``        1276        Middlebury 2014 stereo data set
          (left view, 741x500)                          (Scharstein et al., GCPR 2014);
                                                        skimage.data states no licence
    test  ``chelsea()`` (451x300)           1305        Chelsea the cat; CC0 by the
                                                        photographer, Stefan van der Walt
    ===== ================================= =========== =================================

    That is 4727 training and 1305 test patches, all colour (no grayscale photographs,
    no flipped copies), identical bytes on every call.

    Args:
      name: one of :data:`DATASETS`.
      split: ``"train"`` or ``"test"``. For ``imagenet_resized``, which has no test
        split, ``"test"`` reads its ``"validation"`` split.
      data_dir: TFDS data directory (default: ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``); ignored for ``"default"``.

    Returns:
      The images of that split (the ``"image"`` feature for TFDS data sets).

    Raises:
      ValueError: for an unknown name or split.
      ImportError: for a TFDS data set when ``tensorflow-datasets`` (or
        ``array_record``) is not installed, or for ``"default"`` without scikit-image.
      DatasetNotPreparedError: when the TFDS data set has not been prepared in
        ``data_dir`` in the ArrayRecord format; the message says how to prepare it.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if name == "default":
        return ArrayImageSource(_default_images(split))
    return _load_tfds(name, split, data_dir)


def steps_per_epoch(source: ImageSource, batch_size: int) -> int:
    """Number of full batches in one epoch (the remainder is dropped).

    Args:
      source: the images.
      batch_size: images per batch, between 1 and ``len(source)``.

    Returns:
      ``len(source) // batch_size``.

    Raises:
      ValueError: if ``batch_size`` is not positive or larger than ``len(source)``.
    """
    batch_size = _check_batch_size(batch_size)
    if batch_size > len(source):
        raise ValueError(
            f"batch_size {batch_size} is larger than the data set ({len(source)} images)"
        )
    return len(source) // batch_size


def batches(
    source: ImageSource,
    batch_size: int,
    *,
    seed: int,
    start_step: int = 0,
    shuffle: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[np.ndarray]:
    """Endless stream of training batches, epoch after epoch.

    Epoch e visits the images in the order of ``np.random.default_rng((seed, e))
    .permutation(len(source))`` (in index order if ``shuffle`` is false) and drops
    the last ``len(source) % batch_size`` of them. Global step k is batch
    ``k % steps_per_epoch`` of epoch ``k // steps_per_epoch``, so for a given source and
    batch size it depends only on (seed, k): ``batches(..., start_step=k)`` yields
    exactly what the uninterrupted stream yields from step k on, which makes a resumed
    run bit-identical.

    With ``shard=(i, n)`` (process i of n in multi-process training) only rows
    ``i * batch_size // n`` to ``(i + 1) * batch_size // n`` of every batch are read and
    yielded: the n processes together read each global batch exactly once.

    Arguments are checked when this function is called, not at the first ``next``.

    Args:
      source: the images.
      batch_size: images per (global) batch, between 1 and ``len(source)``.
      seed: non-negative integer seed of the shuffling.
      start_step: global step of the first batch yielded (default 0).
      shuffle: whether to shuffle each epoch (default true).
      shard: (index, count) of this process's share of each batch (default all).

    Returns:
      An iterator of uint8 arrays of shape (batch_size // count, H, W, C).

    Raises:
      ValueError: if ``batch_size`` is not positive or larger than ``len(source)``, or
        ``seed`` or ``start_step`` is negative, or ``shard`` does not split the batch.
    """
    spe = steps_per_epoch(source, batch_size)
    seed = operator.index(seed)
    start_step = operator.index(start_step)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if start_step < 0:
        raise ValueError(f"start_step must be non-negative, got {start_step}")
    rows = _shard_rows(int(batch_size), shard)
    return _batches(source, int(batch_size), spe, seed, start_step, shuffle, rows)


def _shard_rows(batch_size: int, shard: tuple[int, int]) -> slice:
    """The rows of a batch that process ``index`` of ``count`` reads."""
    index, count = (operator.index(v) for v in shard)
    if not (count >= 1 and 0 <= index < count and batch_size % count == 0):
        raise ValueError(
            f"shard {shard} must be (index, count) with 0 <= index < count and count "
            f"dividing the batch size {batch_size}"
        )
    local = batch_size // count
    return slice(index * local, (index + 1) * local)


def _batches(
    source: ImageSource,
    batch_size: int,
    spe: int,
    seed: int,
    step: int,
    shuffle: bool,
    rows: slice,
) -> Iterator[np.ndarray]:
    epoch, order = -1, np.arange(len(source))
    while True:
        step_epoch, i = divmod(step, spe)
        if shuffle and step_epoch != epoch:
            epoch = step_epoch
            order = np.random.default_rng((seed, epoch)).permutation(len(source))
        yield source[order[i * batch_size : (i + 1) * batch_size][rows]]
        step += 1


def eval_batches(
    source: ImageSource, batch_size: int, *, shard: tuple[int, int] = (0, 1)
) -> Iterator[tuple[np.ndarray, int]]:
    """One ordered pass over every image, in batches of a fixed size.

    Every batch has exactly ``batch_size`` rows, so a jitted evaluation compiles once:
    the last batch is padded by repeating its last real image. Weight per-image results
    by the first ``n_valid`` rows only. With ``shard=(i, n)`` only this process's rows
    of each batch are read and yielded, as in :func:`batches`; ``n_valid`` still counts
    the whole batch. Arguments are checked when this function is called.

    Args:
      source: the images.
      batch_size: rows per (global) batch, positive (it may exceed ``len(source)``).
      shard: (index, count) of this process's share of each batch (default all).

    Returns:
      An iterator of ``(images, n_valid)``: uint8 images of shape
      (batch_size // count, H, W, C); the global batch's first ``n_valid`` rows are
      images ``start .. start + n_valid - 1`` of ``source``, in order.

    Raises:
      ValueError: if ``batch_size`` is not positive or ``shard`` does not split it.
    """
    batch_size = _check_batch_size(batch_size)
    return _eval_batches(source, batch_size, _shard_rows(batch_size, shard))


def _eval_batches(
    source: ImageSource, batch_size: int, rows: slice
) -> Iterator[tuple[np.ndarray, int]]:
    n = len(source)
    for start in range(0, n, batch_size):
        n_valid = min(batch_size, n - start)
        # the padding repeats the last real image
        indices = np.minimum(np.arange(start, start + batch_size), start + n_valid - 1)
        yield source[indices[rows]], n_valid


def _check_batch_size(batch_size: int) -> int:
    batch_size = operator.index(batch_size)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return batch_size


# --- the default data set -------------------------------------------------------------


@functools.lru_cache(maxsize=len(SPLITS))
def _default_images(split: str) -> np.ndarray:
    """All patches of one split of the default data set, read-only (cached)."""
    patches = [_grid_patches(_downscale(_photo(name))) for name in _DEFAULT_PHOTOS[split]]
    images = np.concatenate(patches)
    images.flags.writeable = False
    return images


def _photo(name: str) -> np.ndarray:
    """A photograph bundled with scikit-image, uint8 (H, W, 3)."""
    try:
        from skimage import data
    except ImportError as err:
        raise ImportError(
            'the "default" data set needs scikit-image: pip install "jexpm[flows]"'
        ) from err
    if name == "motorcycle_left":
        image = data.stereo_motorcycle()[0]
    else:
        image = getattr(data, name)()
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def _downscale(image: np.ndarray) -> np.ndarray:
    """Box-resamples ``image`` so that its shorter side is ``_SHORT_SIDE`` pixels."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = _SHORT_SIDE / min(h, w)
    size = (round(w * scale), round(h * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


def _grid_patches(image: np.ndarray) -> np.ndarray:
    """All ``_PATCH``-square patches at multiples of ``_STRIDE``, row-major, (N, P, P, C)."""
    windows = np.lib.stride_tricks.sliding_window_view(image, (_PATCH, _PATCH), axis=(0, 1))
    windows = windows[::_STRIDE, ::_STRIDE]  # (rows, cols, C, P, P)
    return np.ascontiguousarray(windows.transpose(0, 1, 3, 4, 2)).reshape(
        -1, _PATCH, _PATCH, image.shape[2]
    )


# --- TFDS data sets -------------------------------------------------------------------


def _import_tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(_INSTALL_TFDS) from err
    return tfds


def _load_tfds(name: str, split: str, data_dir: str | None) -> TfdsImageSource:
    tfds = _import_tfds()
    tfds_split = DATASETS[name].splits[split]
    try:
        # download=False: preparing needs TensorFlow and a download; say how instead.
        source = tfds.data_source(name, split=tfds_split, data_dir=data_dir, download=False)
    except ImportError as err:
        raise ImportError(f"{_INSTALL_TFDS} ({err})") from err
    except Exception as err:
        problem = _why_unavailable(tfds, name, data_dir)
        if problem is None:
            raise
        raise DatasetNotPreparedError(problem) from err
    return TfdsImageSource(source)


def _why_unavailable(tfds: Any, name: str, data_dir: str | None) -> str | None:
    """Why ``tfds.data_source(name)`` cannot read the data set, or None if unknown."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        where = str(builder.data_dir)
        prepared = builder.is_prepared()
        formats = sorted(f.value for f in builder.info.available_file_formats()) if prepared else []
    except Exception:  # the diagnosis itself failed: report the original error
        return None
    if "array_record" in formats:
        return None  # prepared as it should be: some other failure
    if prepared:
        return (
            f"TFDS data set {name!r} is prepared at {where} as {formats}, but "
            "tfds.data_source reads only random-access ArrayRecord files. Convert it once "
            "(needs TensorFlow):\n"
            f'    pip install "jexpm[data]" tensorflow\n'
            f"    tfds convert_format --dataset_version_dir={where} "
            "--out_file_format=array_record"
        )
    dir_flag = f" --data_dir={data_dir}" if data_dir else ""
    dir_arg = f", data_dir={data_dir!r}" if data_dir else ""
    return (
        f"TFDS data set {name!r} has not been prepared (no prepared data at {where}). Prepare it "
        "once in the ArrayRecord format (downloads the data and needs TensorFlow, which "
        "reading it afterwards does not):\n"
        f'    pip install "jexpm[data]" tensorflow\n'
        f"    tfds build {name} --file_format=array_record{dir_flag}\n"
        "or in Python:\n"
        f"    tfds.builder({name!r}, file_format='array_record'{dir_arg})"
        ".download_and_prepare()\n"
        'The "default" data set needs no download.'
    )
