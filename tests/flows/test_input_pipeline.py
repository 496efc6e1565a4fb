"""Input pipeline: the offline default data set, batching and resume, evaluation, TFDS."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from flows import input_pipeline as ip

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _hashes(images: np.ndarray) -> list[bytes]:
    return [hashlib.sha256(image.tobytes()).digest() for image in images]


def _labelled(n: int, shape=(4, 4, 3)) -> ip.ArrayImageSource:
    """n images, image i filled with the value i, so a batch tells which images it holds."""
    return ip.ArrayImageSource(
        np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, *shape))
    )


def _ids(batch: np.ndarray) -> list[int]:
    assert (batch == batch[:, :1, :1, :1]).all()  # every image constant
    return batch[:, 0, 0, 0].tolist()


def _default(split: str) -> ip.ArrayImageSource:
    source = ip.load("default", split)
    assert isinstance(source, ip.ArrayImageSource)
    return source


@pytest.fixture(scope="module")
def train() -> ip.ArrayImageSource:
    return _default("train")


@pytest.fixture(scope="module")
def held_out() -> ip.ArrayImageSource:
    return _default("test")


# --- the default data set -------------------------------------------------------------


def test_default_shapes_and_sizes(train, held_out):
    assert (len(train), len(held_out)) == (4727, 1305)
    for source in (train, held_out):
        assert source.image_shape == (32, 32, 3)
        assert source.images.shape == (len(source), 32, 32, 3)
        assert source.images.dtype == np.uint8
        batch = source[np.array([0, 5, len(source) - 1])]
        assert batch.shape == (3, 32, 32, 3) and batch.dtype == np.uint8


def test_default_is_deterministic_and_cached(train, held_out):
    assert _default("train").images is train.images  # lru_cache: no rebuild
    before = [hashlib.sha256(s.images.tobytes()).hexdigest() for s in (train, held_out)]
    ip._default_images.cache_clear()
    rebuilt = [_default(split) for split in ("train", "test")]
    assert rebuilt[0].images is not train.images
    assert [hashlib.sha256(s.images.tobytes()).hexdigest() for s in rebuilt] == before


def test_default_train_and_test_share_no_patch(train, held_out):
    train_hashes, test_hashes = set(_hashes(train.images)), set(_hashes(held_out.images))
    assert not train_hashes & test_hashes

    # Near-duplicates would also leak: no test patch is within a few grey levels of a
    # training patch (compared on 8x8 block means, which is cheap and tolerant).
    def blocks(x):
        return x.reshape(len(x), 4, 8, 4, 8, 3).mean(axis=(2, 4)).reshape(len(x), -1)

    a, b = blocks(train.images), blocks(held_out.images)
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    assert np.sqrt(np.maximum(d2.min(), 0) / a.shape[1]) > 3.0


def test_default_pixels_look_like_photographs(train, held_out):
    for source in (train, held_out):
        x = source.images.astype(np.float64)
        assert 60 < x.mean() < 190
        assert x.std() > 30
        per_patch_std = x.reshape(len(x), -1).std(axis=1)
        assert np.mean(per_patch_std < 2) < 0.01  # hardly any flat patches
        assert np.median(per_patch_std) > 15
        # Colour, not grey replicated to three channels.
        assert np.abs(x[..., 0] - x[..., 1]).mean() > 5
        assert len(np.unique(source.images)) > 200
        # Most patches are distinct from one another.
        assert len(set(_hashes(source.images))) > 0.99 * len(source)


def test_default_cache_cannot_be_modified(train):
    with pytest.raises(ValueError):
        train.images[0, 0, 0, 0] = 1
    batch = train[np.arange(4)]
    batch[...] = 0  # a copy: the cached data is untouched
    assert train.images[:4].any()


def test_indexing():
    source = _labelled(10)
    assert source[3].shape == (4, 4, 3) and source[3][0, 0, 0] == 3
    assert _ids(source[[-1, 0, -10]]) == [9, 0, 0]
    assert source[np.array([], dtype=np.int64)].shape == (0, 4, 4, 3)
    assert source[[]].shape == (0, 4, 4, 3)
    with pytest.raises(IndexError):
        source[[0, 10]]
    with pytest.raises(IndexError):
        source[-11]
    with pytest.raises(TypeError):
        source[np.array([0.5])]
    with pytest.raises(TypeError):
        source[np.zeros((2, 2), np.int64)]
    with pytest.raises(ValueError, match="uint8"):
        ip.ArrayImageSource(np.zeros((2, 4, 4, 3), np.float32))


# --- training batches -----------------------------------------------------------------


def test_batches_shapes_and_determinism(train):
    def take(n, **kwargs):
        stream = ip.batches(train, 32, **kwargs)
        return [next(stream) for _ in range(n)]

    first = take(3, seed=7)
    for batch in first:
        assert batch.shape == (32, 32, 32, 3) and batch.dtype == np.uint8
    assert all(np.array_equal(a, b) for a, b in zip(first, take(3, seed=7), strict=True))
    assert not np.array_equal(first[0], take(1, seed=8)[0])
    unshuffled = take(2, seed=7, shuffle=False)
    np.testing.assert_array_equal(unshuffled[1], train.images[32:64])


@pytest.mark.parametrize("start_step", [1, 2, 3, 4, 7, 8, 11])
def test_batches_resume_equals_uninterrupted_stream(start_step):
    source = _labelled(10)  # batch_size 3: 3 steps per epoch, one image dropped per epoch
    stream = ip.batches(source, 3, seed=123)
    full = [_ids(next(stream)) for _ in range(15)]
    resumed = ip.batches(source, 3, seed=123, start_step=start_step)
    assert [_ids(next(resumed)) for _ in range(15 - start_step)] == full[start_step:]


def test_batches_resume_on_the_default_data_across_an_epoch_boundary(train):
    spe = ip.steps_per_epoch(train, 500)
    assert spe == 9
    stream = ip.batches(train, 500, seed=3)
    full = [next(stream) for _ in range(spe + 3)]
    for start in (spe - 1, spe, spe + 1):
        resumed = ip.batches(train, 500, seed=3, start_step=start)
        for k in range(start, spe + 3):
            np.testing.assert_array_equal(next(resumed), full[k])


def test_each_epoch_is_a_permutation():
    source = _labelled(10)
    stream = ip.batches(source, 3, seed=0)
    epochs = [[i for _ in range(3) for i in _ids(next(stream))] for _ in range(8)]
    for epoch in epochs:
        assert len(epoch) == 9 and len(set(epoch)) == 9  # no repeats within an epoch
    assert len({tuple(e) for e in epochs}) == 8  # a fresh permutation every epoch
    assert len({next(iter(set(range(10)) - set(e))) for e in epochs}) > 1  # dropped image varies
    # The order of epoch e is np.random.default_rng((seed, e)).permutation(n).
    for e, epoch in enumerate(epochs):
        assert epoch == np.random.default_rng((0, e)).permutation(10)[:9].tolist()
    ordered = ip.batches(source, 3, seed=0, shuffle=False)
    assert [_ids(next(ordered)) for _ in range(4)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 1, 2]]


# --- evaluation batches ---------------------------------------------------------------


@pytest.mark.parametrize(("n", "batch_size"), [(10, 4), (10, 5), (10, 16), (1, 3)])
def test_eval_batches_cover_every_image_once(n, batch_size):
    seen = []
    for images, n_valid in ip.eval_batches(_labelled(n), batch_size):
        assert images.shape == (batch_size, 4, 4, 3) and images.dtype == np.uint8
        assert 1 <= n_valid <= batch_size
        ids = _ids(images)
        seen += ids[:n_valid]
        assert ids[n_valid:] == [ids[n_valid - 1]] * (batch_size - n_valid)  # padding
    assert seen == list(range(n))


def test_eval_batches_on_the_default_test_split(held_out):
    got = list(ip.eval_batches(held_out, 500))
    assert [n_valid for _, n_valid in got] == [500, 500, 305]
    np.testing.assert_array_equal(np.concatenate([x[:v] for x, v in got]), held_out.images)


# --- errors ---------------------------------------------------------------------------


def test_errors(train):
    with pytest.raises(ValueError, match=r"'mnist'.*default, cifar10, imagenet_resized/32x32"):
        ip.load("mnist", "train")
    with pytest.raises(ValueError, match=r"'validation'.*train, test"):
        ip.load("default", "validation")
    with pytest.raises(ValueError, match=r"'validation'.*train, test"):
        ip.load("cifar10", "validation")
    for bad in (0, -4, len(train) + 1):
        with pytest.raises(ValueError, match="batch_size"):
            ip.batches(train, bad, seed=0)  # raised at the call, not at the first next()
        with pytest.raises(ValueError, match="batch_size"):
            ip.steps_per_epoch(train, bad)
    with pytest.raises(ValueError, match="batch_size"):
        ip.eval_batches(train, 0)
    with pytest.raises(ValueError, match="seed"):
        ip.batches(train, 8, seed=-1)
    with pytest.raises(ValueError, match="start_step"):
        ip.batches(train, 8, seed=0, start_step=-1)
    with pytest.raises(TypeError):
        ip.batches(train, 8.0, seed=0)  # pyright: ignore[reportArgumentType]
    assert ip.steps_per_epoch(train, len(train)) == 1
    assert ip.steps_per_epoch(train, 1000) == 4


def test_works_without_tensorflow_datasets():
    """Imports and the default data set need no tfds; a TFDS name says what to install."""
    code = (
        "import sys\n"
        "sys.modules['tensorflow_datasets'] = None  # as if not installed\n"
        "from flows import input_pipeline as ip\n"
        "assert len(ip.load('default', 'test')) == 1305\n"
        "try:\n"
        "    ip.load('cifar10', 'train')\n"
        "except ImportError as err:\n"
        "    assert 'pip install \"jexpm[data]\"' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


# --- TFDS data sets -------------------------------------------------------------------


@pytest.fixture
def tfds(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.testing import mocking

    # tfds 4.9.10 bug: mock_data sets `__getitems__ = functools.partial(_getitems,
    # generator=...)` on a MagicMock instance; MagicMock does not treat __getitems__ as a
    # magic method, so it is not bound and the keys land in `self` (TypeError: missing
    # 'record_keys'). Accept both calling conventions.
    original = mocking._getitems

    def getitems(*args, generator, serialized=False):
        self = args[0] if len(args) == 2 else None
        return original(self, args[-1], generator, serialized=serialized)

    monkeypatch.setattr(mocking, "_getitems", getitems)
    return tfds


@pytest.mark.parametrize(
    ("name", "split", "tfds_split", "shape"),
    [
        ("cifar10", "train", "train", (32, 32, 3)),
        ("cifar10", "test", "test", (32, 32, 3)),
        ("imagenet_resized/64x64", "test", "validation", (64, 64, 3)),
    ],
)
def test_tfds_under_mock_data(tfds, name, split, tfds_split, shape):
    with (
        tfds.testing.mock_data(num_examples=11, policy=tfds.testing.MockPolicy.USE_CODE),
        mock.patch.object(tfds, "data_source", wraps=tfds.data_source) as data_source,
    ):
        source = ip.load(name, split)
        assert data_source.call_args.kwargs["split"] == tfds_split
        assert isinstance(source, ip.TfdsImageSource)
        assert len(source) == 11 and source.image_shape == shape
        batch = next(ip.batches(source, 4, seed=0))
        assert batch.shape == (4, *shape) and batch.dtype == np.uint8
        assert batch.std() > 10  # mock_data's random pixels, not zeros
        # The batched read (__getitems__) agrees with reading example by example.
        raw = tfds.data_source(name, split=tfds_split)
        idx = np.array([3, 0, 10])
        expected = np.stack([raw[int(i)]["image"] for i in idx])
        np.testing.assert_array_equal(source[idx], expected)
        got = list(ip.eval_batches(source, 4))
        assert [v for _, v in got] == [4, 4, 3]


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _prepare(tfds, name, data_dir, images_by_split, extra):
    """Writes a tiny real ArrayRecord data set with tfds's own builder and writer.

    Only the download and parsing step (``_split_generators``) is replaced: it yields
    PNG-encoded images (tfds would encode NumPy arrays with TensorFlow).
    """

    def split_generators(self, dl_manager):
        del self, dl_manager

        def examples(split):
            for i, image in enumerate(images_by_split[split]):
                yield f"{split}{i}", {"image": _png(image), **extra(split, i)}

        return {split: examples(split) for split in images_by_split}

    builder = tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
    with mock.patch.object(type(builder), "_split_generators", split_generators):
        builder.download_and_prepare()


@pytest.mark.parametrize(
    ("name", "splits", "extra"),
    [
        ("cifar10", ("train", "test"), lambda s, i: {"id": f"{s}_{i:05d}", "label": i % 10}),
        ("imagenet_resized/32x32", ("train", "validation"), lambda s, i: {"label": i}),
    ],
)
def test_tfds_reads_real_array_record_files(tfds, tmp_path, name, splits, extra):
    rng = np.random.default_rng(0)
    images = {
        s: rng.integers(0, 256, (n, 32, 32, 3), np.uint8)
        for s, n in zip(splits, (7, 5), strict=True)
    }
    _prepare(tfds, name, tmp_path, images, extra)
    for split, tfds_split in (("train", splits[0]), ("test", splits[1])):
        source = ip.load(name, split, data_dir=str(tmp_path))
        assert isinstance(source, ip.TfdsImageSource)
        assert len(source) == len(images[tfds_split]) and source.image_shape == (32, 32, 3)
        everything = source[np.arange(len(source))]
        assert everything.dtype == np.uint8
        # tfds shuffles examples while writing; the decoded pixels are exactly those written.
        assert sorted(_hashes(everything)) == sorted(_hashes(images[tfds_split]))
        batch = next(ip.batches(source, 2, seed=1, start_step=5))
        assert batch.shape == (2, 32, 32, 3)
        assert sum(v for _, v in ip.eval_batches(source, 4)) == len(source)


def test_tfds_not_prepared_says_how_to_prepare(tfds, tmp_path):
    for name in ("cifar10", "imagenet_resized/64x64"):
        with pytest.raises(ip.DatasetNotPreparedError) as info:
            ip.load(name, "test", data_dir=str(tmp_path))
        message = str(info.value)
        assert f"tfds build {name} --file_format=array_record --data_dir={tmp_path}" in message
        assert 'pip install "jexpm[data]" tensorflow' in message
        assert "download_and_prepare()" in message
        assert info.value.__cause__ is not None  # the tfds error stays attached
    assert not any(tmp_path.iterdir())  # nothing was downloaded or written
