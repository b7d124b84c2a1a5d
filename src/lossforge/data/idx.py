"""The IDX file format (MNIST, Fashion-MNIST) and the loaders that read it from a data directory.

IDX: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), the number of dimensions, one big-endian uint32 per dimension, then the values,
big-endian, row-major. Files may be gzip-compressed (detected from their first bytes, not from
their name).

Data directory (``default_data_dir()``): ``$LOSSFORGE_DATA`` if set; else ``data/`` at the root of
the source checkout when lossforge runs from one (an editable install: ``make data`` fills it);
else ``~/.cache/lossforge``. A data set lives in ``<data dir>/<name>/`` (``mnist``,
``fashion_mnist``) as the four standard files ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each raw or
with ``.gz`` — whatever put them there. torchvision's layout (``<dir>/MNIST/raw``,
``<dir>/FashionMNIST/raw``) and a ``data_dir`` that holds the four files directly work too. After
the first read the arrays are cached as ``<name>.npz`` beside the files (plain arrays, no pickle).
"""
from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from lossforge.data._common import DataMissingError, DataSplits, as_split

_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {dt.newbyteorder("=").str[1:]: code for code, dt in _TYPES.items()}

#: The four standard file names, by array name.
IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}

#: Sub-folder names tried under the data directory, by data set.
_FOLDERS = {"mnist": ("mnist", "MNIST/raw", "mnist-data"),
            "fashion_mnist": ("fashion_mnist", "FashionMNIST/raw", "fashion-mnist")}


# ---------------------------------------------------------------- format

def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes (uncompressed) into a native-endian array; ``ValueError`` if malformed."""
    if len(data) < 4:
        raise ValueError(f"{source}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise ValueError(f"{source}: not an IDX file (bad magic number 0x{data[:4].hex()}; "
                         "expected 0x0000 then a type code 08/09/0B/0C/0D/0E)")
    ndim = data[3]
    if ndim == 0:
        raise ValueError(f"{source}: corrupt IDX file (zero dimensions)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: corrupt IDX file (truncated header)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _TYPES[data[2]]
    count = int(np.prod(dims, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{source}: corrupt or truncated IDX file: header says shape {dims} of "
                         f"{dtype.newbyteorder('=').name} ({expected} bytes), file holds {len(data)}")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed. Corrupt files raise ``ValueError`` naming them."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt gzip stream ({err})") from err
    return parse_idx(data, source=str(path))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file; gzip-compressed if ``compress`` (default: name ends .gz)."""
    path = Path(path)
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=").str[1:]
    if key not in _CODES or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX cannot hold a {array.ndim}-d array of {array.dtype}")
    code = _CODES[key]
    body = (struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
            + np.ascontiguousarray(array, dtype=_TYPES[code]).tobytes())
    if compress if compress is not None else path.suffix == ".gz":
        body = gzip.compress(body, mtime=0)
    path.write_bytes(body)
    return path


# ---------------------------------------------------------------- data directory

def default_data_dir() -> Path:
    """``$LOSSFORGE_DATA``, else the source checkout's ``data/``, else ``~/.cache/lossforge``."""
    env = os.environ.get("LOSSFORGE_DATA")
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve()
    repo = here.parents[3]  # <repo>/src/lossforge/data/idx.py
    if here.parents[2].name == "src" and (repo / "pyproject.toml").is_file():
        return repo / "data"
    return Path.home() / ".cache" / "lossforge"


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate(name: str, root: Path) -> tuple[Path, dict[str, Path]]:
    """The folder holding ``name``'s files (or its .npz cache) and the IDX files found there."""
    best: tuple[Path, dict[str, Path]] | None = None
    for folder in [root / sub for sub in _FOLDERS[name]] + [root]:
        files = {k: p for k, stem in IDX_FILES.items() if (p := _find(folder, stem))}
        if len(files) == len(IDX_FILES) or (folder / f"{name}.npz").is_file():
            return folder, files
        if files and best is None:
            best = (folder, files)
    if best is not None:
        folder, files = best
        missing = [IDX_FILES[k] for k in IDX_FILES if k not in files]
        raise DataMissingError(f"{name}: {folder} is incomplete, missing {', '.join(missing)} "
                               f"(raw or .gz). {_how_to(name, root)}")
    raise DataMissingError(f"{name} not found in {root}. {_how_to(name, root)}")


def _how_to(name: str, root: Path) -> str:
    return (f"Run `make data` (or `python -m lossforge.data.fetch --data-dir {root}`), or put the "
            f"four standard {name} IDX files ({', '.join(IDX_FILES.values())}; raw or .gz) in "
            f"{root / _FOLDERS[name][0]}. Set LOSSFORGE_DATA or pass data_dir= to use another "
            "directory.")


@functools.lru_cache(maxsize=4)
def _load_arrays(name: str, root: str) -> dict[str, np.ndarray]:
    folder, files = _locate(name, Path(root))
    cache = folder / f"{name}.npz"
    fresh = cache.is_file() and all(cache.stat().st_mtime >= p.stat().st_mtime
                                    for p in files.values())
    if fresh:
        with np.load(cache, allow_pickle=False) as z:
            arrays = {k: z[k] for k in IDX_FILES}
    else:
        arrays = {k: read_idx(p) for k, p in files.items()}
        _check(name, arrays, folder)
        try:  # cache for the next read; a read-only directory only costs speed
            tmp = folder / f".{name}.npz.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, cache)
        except OSError:
            pass
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


def _check(name: str, arrays: dict[str, np.ndarray], folder: Path) -> None:
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{name} in {folder}: {part} images {images.shape} and labels "
                             f"{labels.shape} do not match (expected (N, H, W) and (N,))")


def load_idx_set(name: str, data_dir: str | os.PathLike | None = None, seed: int = 0,
                 val_size: int = 5000) -> DataSplits:
    """Train / val / test splits of an IDX image set (``"mnist"`` or ``"fashion_mnist"``).

    ``val_size`` training images, drawn at random for ``seed``, form the validation split; the
    official test set is the test split. Images ``(N, 1, H, W)`` float32 in [0, 1], labels int64.
    """
    if name not in _FOLDERS:
        raise ValueError(f"unknown IDX data set {name!r}; known: {', '.join(_FOLDERS)}")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    a = _load_arrays(name, str(root.resolve()))
    n = len(a["train_labels"])
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
    perm = np.random.default_rng(seed).permutation(n)
    tr, va = np.sort(perm[val_size:]), np.sort(perm[:val_size])

    def images(x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float32) / 255.0)[:, None, :, :]

    return DataSplits(train=as_split(images(a["train_images"][tr]), a["train_labels"][tr]),
                      val=as_split(images(a["train_images"][va]), a["train_labels"][va]),
                      test=as_split(images(a["test_images"]), a["test_labels"]),
                      num_classes=10, name=name)


def mnist(data_dir: str | os.PathLike | None = None, seed: int = 0,
          val_size: int = 5000) -> DataSplits:
    """MNIST from the data directory: 55,000 / 5,000 / 10,000 images ``(N, 1, 28, 28)`` in [0, 1].

    Raises :class:`DataMissingError` (message: how to get the files) when they are not there.
    """
    return load_idx_set("mnist", data_dir, seed, val_size)


def fashion_mnist(data_dir: str | os.PathLike | None = None, seed: int = 0,
                  val_size: int = 5000) -> DataSplits:
    """Fashion-MNIST from the data directory; same layout and splits as :func:`mnist`."""
    return load_idx_set("fashion_mnist", data_dir, seed, val_size)
