"""Images for vision pretraining, decoded once into a cached uint8 array.

Sources:

* ``"digits"``: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes,
  offline), scaled to 0..255 and upsampled; always the built-in (a folder of
  that name is ``./digits``);
* a folder, or a ``.tar``/``.tar.gz``/``.tgz`` archive, in one of these layouts
  (an archive's wrapper folders are found and skipped):

      train/<class>/<file>  [test/<class>/<file>]   explicit splits ("val/" counts as "test/")
      <class>/<file>                                 labelled; "test" held out by test_fraction
      <file>                                         unlabelled; only "train"

  Class ids follow the sorted class folder names. A single folder holding
  everything is a wrapper, not a class. Hidden files and folders are ignored.

Each image is converted to RGB (``channels=3``) or grayscale (``channels=1``),
its short side resized to ``image_size`` (bilinear, antialiased) and the centre
cropped square. Folders and archives are read straight from disk (archives are
streamed, never unpacked), decoded once and saved as ``.npy`` under
``default_cache_dir()``; later loads memory-map that cache.

Shapes: N images, B batch, C channels, S = image_size (H = W = S).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import lzma
import os
import shutil
import sys
import tarfile
import time
import uuid
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageFile
from tqdm.auto import tqdm

from nlpssl.data import cache
from nlpssl.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
BAD_IMAGE_CHOICES = ("skip", "error")
TEST_FOLDERS = ("test", "val")  # the first one present is the "test" split
_CACHE_VERSION = 1  # bump when the decoded pixels or the cache files change
_Placed = list[tuple[tuple[str, ...], tuple[str, ...]]]  # [(path parts, parts below the split folder)]


@dataclass
class ImageSet:
    """Decoded images of one split.

    ``images`` may wrap a read-only memory map; rows are copied on access.

    Example::

        splits = load_image_splits("digits", image_size=32)
        batch = splits["train"].__getitems__([0, 5, 9])
        batch["images"].shape  # (3, 3, 32, 32) uint8
    """

    images: torch.Tensor  # (N, C, S, S) uint8
    labels: torch.Tensor | None  # (N,) int64, None without classes
    class_names: list[str]  # sorted class folder names; [] without labels
    skipped: int = 0  # unreadable files skipped while decoding

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitems__(self, indices: list[int]) -> dict:
        rows = torch.as_tensor(indices, dtype=torch.long)  # (B,)
        batch = {"images": self.images[rows]}  # (B, C, S, S), advanced indexing copies
        if self.labels is not None:
            batch["labels"] = self.labels[rows]  # (B,)
        return batch

    def select(self, rows: torch.Tensor) -> ImageSet:
        """The images at ``rows`` (R,) as a new set (copied out of any memory map), classes kept."""
        labels = self.labels[rows] if self.labels is not None else None
        return ImageSet(self.images[rows], labels, self.class_names, self.skipped)

    def __getitem__(self, index: int) -> dict:
        item = {"images": self.images[index].clone()}  # (C, S, S)
        if self.labels is not None:
            item["labels"] = self.labels[index].clone()  # ()
        return item


def default_cache_dir() -> Path:
    """Where decoded images are cached: ``$NLPSSL_CACHE`` (or ``~/.cache/nlpssl``) ``/images``."""
    return cache.cache_dir() / "images"


def load_image_splits(
    source: str, image_size: int = 32, channels: int = 3, cache_dir: str | Path | None = None,
    bad_images: str = "skip", test_fraction: float = 0.2, seed: int = 0,
) -> dict[str, ImageSet]:
    """Load ``{"train": ImageSet, "test": ImageSet}`` from digits, a folder or a tar archive.

    "test" is absent for unlabelled sources and when ``test_fraction`` is 0
    without an explicit test folder. Unreadable images are skipped and counted
    (``bad_images="skip"``) or raise a :class:`UserError` (``"error"``).

    Example::

        splits = load_image_splits("data/cifar10-images.tar.gz", image_size=32)
        train, test = splits["train"], splits["test"]
        batch = train.__getitems__(list(range(256)))  # {"images": (256, 3, 32, 32) uint8, "labels": (256,)}
    """
    _check_arguments(image_size, channels, bad_images, test_fraction)
    if str(source) == "digits":
        splits = {"train": _load_digits(image_size, channels)}
    else:
        splits = _load_cached(_resolve_source(source), image_size, channels, cache_dir, bad_images)
    if "test" not in splits and splits["train"].labels is not None and test_fraction > 0:
        splits = _hold_out(splits["train"], test_fraction, seed)
    return splits


def _check_arguments(image_size: int, channels: int, bad_images: str, test_fraction: float) -> None:
    if image_size < 8:
        raise UserError(f"image_size must be at least 8, got {image_size}; set --data.image_size=32 (or larger)")
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}; set --data.channels=3")
    if bad_images not in BAD_IMAGE_CHOICES:
        raise UserError(f"bad_images must be one of {', '.join(BAD_IMAGE_CHOICES)}, got {bad_images!r}; set --data.bad_images=skip")
    if not 0 <= test_fraction < 1:
        raise UserError(f"test_fraction must be in [0, 1), got {test_fraction}; set --data.test_fraction=0.2")


def _resolve_source(source: str | Path) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(
            f"image source {str(source)!r} not found; set --data.source to an existing folder or .tar/.tar.gz/.tgz archive, "
            "or to 'digits' for the built-in scikit-learn digits"
        )
    if path.is_file() and not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise UserError(f"image source {path} is a file but not a {'/'.join(ARCHIVE_SUFFIXES)} archive; pass a folder or an archive")
    return path.resolve()


def _load_digits(image_size: int, channels: int) -> ImageSet:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.from_numpy(digits.images).float().unsqueeze(1) * (255.0 / 16.0)  # (N, 1, 8, 8), 0..255
    if image_size != 8:
        pixels = torch.nn.functional.interpolate(pixels, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = pixels.round().clamp(0, 255).to(torch.uint8).repeat(1, channels, 1, 1)  # (N, C, S, S)
    labels = torch.from_numpy(digits.target).long()  # (N,)
    return ImageSet(images, labels, [str(digit) for digit in range(10)])


def _hold_out(train: ImageSet, test_fraction: float, seed: int) -> dict[str, ImageSet]:
    """Split one labelled set into train and test with a seeded permutation (both keep the stored order)."""
    count = len(train)
    test_count = min(max(round(count * test_fraction), 1), count - 1)
    if test_count <= 0:
        return {"train": train}
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))  # (N,)
    test_rows, train_rows = order[:test_count].sort().values, order[test_count:].sort().values
    return {"train": train.select(train_rows), "test": train.select(test_rows)}


# ---- planning: which file goes to which split and class ----


@dataclass
class _Plan:
    """Where each image file of a source goes."""

    entries: dict[str, list[tuple[str, int]]]  # split -> sorted [(file key, class id or -1)]
    class_names: list[str]

    @property
    def labelled(self) -> bool:
        return bool(self.class_names)


def _list_folder(root: Path) -> list[str]:
    """Relative posix paths of the non-hidden files under ``root``."""
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative = Path(folder).relative_to(root)
        files += [(relative / name).as_posix() for name in names if not name.startswith(".")]
    return files


def _list_archive(path: Path) -> list[str]:
    with _archive_errors(path), _open_archive(path) as archive:
        return [name for member in archive if member.isfile() and (name := _member_key(member.name))]


def _member_key(name: str) -> str:
    """``./train/cat/1.jpg`` -> ``train/cat/1.jpg``; "" for hidden files (macOS ``._*`` resource forks)."""
    parts = [part for part in PurePosixPath(name).parts if part not in (".", "/")]
    return "" if any(part.startswith(".") for part in parts) else "/".join(parts)


def _plan(files: list[str], where: Path) -> _Plan:
    if not files:
        raise UserError(f"image source {where} is empty; put images in it as <class>/<image>.jpg or train/<class>/<image>.jpg")
    images = [PurePosixPath(key).parts for key in files if key.lower().endswith(IMAGE_EXTENSIONS)]
    if not images:
        raise UserError(f"no images ({' '.join(IMAGE_EXTENSIONS)}) found in {where}; add image files or pass another source")
    split_root = _split_root(images)
    if split_root is None:
        relative = {"train": _strip_wrappers(images)}
    else:
        relative = _split_under(images, split_root)
    return _assign_classes(relative)


def _split_root(images: list[tuple[str, ...]]) -> tuple[str, ...] | None:
    """The shallowest folder holding a ``train/`` folder, or None."""
    roots = [parts[:depth] for parts in images for depth in range(len(parts) - 1) if parts[depth] == "train"]
    return min(roots, key=len) if roots else None


def _split_under(images: list[tuple[str, ...]], root: tuple[str, ...]) -> dict[str, _Placed]:
    """The images below ``root/train/`` and the first test folder present, by split."""
    below = {}
    for parts in images:
        if parts[: len(root)] == root and len(parts) > len(root) + 1:
            below.setdefault(parts[len(root)], []).append((parts, parts[len(root) + 1:]))
    relative = {"train": below["train"]}
    test_folder = next((name for name in TEST_FOLDERS if name in below), None)
    if test_folder is not None:
        relative["test"] = below[test_folder]
    return relative


def _strip_wrappers(images: list[tuple[str, ...]]) -> _Placed:
    """Drop leading folders that every image shares: ``data/cat/1.jpg``, ``data/dog/2.jpg`` -> ``cat/1.jpg``, ..."""
    depth = 0
    while all(len(parts) > depth + 1 for parts in images) and len({parts[depth] for parts in images}) == 1:
        depth += 1
    return [(parts, parts[depth:]) for parts in images]


def _assign_classes(relative: dict[str, _Placed]) -> _Plan:
    """Labelled when every image sits in a class folder; the class is the first folder below the split."""
    labelled = all(len(below) >= 2 for pairs in relative.values() for _, below in pairs)
    class_names = sorted({below[0] for pairs in relative.values() for _, below in pairs}) if labelled else []
    class_ids = {name: index for index, name in enumerate(class_names)}
    entries = {
        split: sorted(("/".join(parts), class_ids[below[0]] if labelled else -1) for parts, below in pairs)
        for split, pairs in relative.items()
    }
    return _Plan(entries, class_names)


# ---- decoding ----


def _decode_image(data: bytes, image_size: int, channels: int) -> np.ndarray:
    """Encoded bytes -> (S, S, C) uint8: convert, resize the short side to S, crop the centre square."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            image.draft("RGB" if channels == 3 else "L", (image_size, image_size))  # DCT downscaling: fast for big photos
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")  # the palette's transparency, then dropped like any alpha
        image = image.convert("RGB" if channels == 3 else "L")  # decodes, so truncated files fail here
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        if (width, height) != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
        pixels = np.asarray(image, dtype=np.uint8)  # (S, S, C) or (S, S)
    return pixels.reshape(image_size, image_size, channels)


def _read_folder(root: Path, keys: list[str]) -> Iterator[tuple[str, bytes]]:
    for key in keys:
        yield key, (root / key).read_bytes()


def _read_archive(path: Path, keys: set[str]) -> Iterator[tuple[str, bytes]]:
    """Stream the archive once, in its own order, yielding the wanted members."""
    with _archive_errors(path), _open_archive(path, stream=True) as archive:
        for member in archive:
            key = _member_key(member.name)
            if member.isfile() and key in keys:
                yield key, archive.extractfile(member).read()


def _open_archive(path: Path, stream: bool = False) -> tarfile.TarFile:
    with _archive_errors(path):
        return tarfile.open(path, "r|*" if stream else "r:*")


@contextlib.contextmanager
def _archive_errors(path: Path) -> Iterator[None]:
    """A damaged archive fails while it is opened or later, while its members are read: one line either way."""
    try:
        yield
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as error:
        raise UserError(f"cannot read archive {path} ({error}); pass a complete .tar, .tar.gz or .tgz file") from None


@contextlib.contextmanager
def _truncated_images_fail() -> Iterator[None]:
    """Another library may have set PIL's global LOAD_TRUNCATED_IMAGES; truncated files must still fail here."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _decode_plan(source: Path, plan: _Plan, image_size: int, channels: int, bad_images: str) -> dict[str, tuple]:
    """Decode every planned file into preallocated arrays: {split: (images (N, C, S, S), labels (N,) or None, skipped keys)}."""
    slots = {key: (split, row) for split, entries in plan.entries.items() for row, (key, _) in enumerate(entries)}
    arrays = {split: np.empty((len(entries), channels, image_size, image_size), np.uint8) for split, entries in plan.entries.items()}
    decoded = {split: np.zeros(len(entries), bool) for split, entries in plan.entries.items()}
    if source.is_dir():
        files = _read_folder(source, list(slots))
    else:
        files = _read_archive(source, set(slots))
    print(f"nlpssl: decoding {len(slots)} images from {source} (once; later loads use the cache)", file=sys.stderr)
    with _truncated_images_fail(), tqdm(total=len(slots), unit="img", file=sys.stderr, disable=None) as progress:
        for key, data in files:
            split, row = slots[key]
            try:
                arrays[split][row] = _decode_image(data, image_size, channels).transpose(2, 0, 1)  # (C, S, S)
                decoded[split][row] = True
            except Exception as error:  # PIL raises many types on corrupt data; all mean "unreadable"
                if bad_images == "error":
                    raise UserError(f"cannot decode image {key} in {source} ({error}); fix or delete it, or pass --data.bad_images=skip") from None
            progress.update()
    splits = {}
    for split, entries in plan.entries.items():
        keep = decoded[split]  # (N,) bool
        images = arrays[split] if keep.all() else arrays[split][keep]
        labels = np.array([class_id for _, class_id in entries], np.int64)[keep] if plan.labelled else None
        splits[split] = (images, labels, [key for (key, _), ok in zip(entries, keep) if not ok])
    return splits


# ---- the cache ----


def _fingerprint(source: Path, files: list[str] | None, image_size: int, channels: int) -> str:
    """Hash of what the decoded arrays depend on: the path, its (image) files' sizes and mtimes, the output shape."""
    digest = hashlib.sha256(f"{_CACHE_VERSION}|{source}|{image_size}|{channels}".encode())
    for key in files if files is not None else [""]:
        stat = (source / key).stat()
        digest.update(f"|{key}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _load_cached(source: Path, image_size: int, channels: int, cache_dir: str | Path | None, bad_images: str) -> dict[str, ImageSet]:
    files = sorted(_list_folder(source)) if source.is_dir() else None
    image_files = [key for key in files if key.lower().endswith(IMAGE_EXTENSIONS)] if files is not None else None
    name = source.name.split(".")[0] or "images"
    fingerprint = _fingerprint(source, image_files, image_size, channels)  # a folder: one stat per image, no decoding
    folder = Path(cache_dir or default_cache_dir()) / f"{name}-{image_size}px-{channels}c-{fingerprint}"
    if not (folder / "meta.json").is_file():
        plan = _plan(files if files is not None else _list_archive(source), source)
        started = time.perf_counter()
        splits = _decode_plan(source, plan, image_size, channels, bad_images)
        if not any(len(images) for images, _, _ in splits.values()):
            raise UserError(f"every image in {source} is unreadable; check the files, or pass another source")
        _write_cache(folder, splits, plan.class_names)
        print(f"nlpssl: decoded {source} in {time.perf_counter() - started:.1f}s, cached in {folder}", file=sys.stderr)
    return _read_cache(folder, source, bad_images)


def _write_cache(folder: Path, splits: dict[str, tuple], class_names: list[str]) -> None:
    """Write into a temporary folder, then rename it: a crash never leaves a cache that looks complete."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        for split, (images, labels, _) in splits.items():
            np.save(temporary / f"{split}_images.npy", images)
            if labels is not None:
                np.save(temporary / f"{split}_labels.npy", labels)
        skipped_files = [key for _, _, skipped in splits.values() for key in skipped]
        meta = {
            "version": _CACHE_VERSION, "class_names": class_names,
            "skipped": {split: len(skipped) for split, (_, _, skipped) in splits.items()},
            "skipped_files": skipped_files[:20],  # enough to name one in an error
        }
        (temporary / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            temporary.rename(folder)
        except OSError:
            if not (folder / "meta.json").is_file():  # a concurrent writer that finished first is fine
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _read_cache(folder: Path, source: Path, bad_images: str) -> dict[str, ImageSet]:
    meta = json.loads((folder / "meta.json").read_text())
    skipped = sum(meta["skipped"].values())
    if skipped and bad_images == "error":
        raise UserError(
            f"cannot decode image {meta['skipped_files'][0]} in {source} ({skipped} unreadable, cached in {folder}); "
            "fix or delete it, or pass --data.bad_images=skip"
        )
    if skipped:
        print(f"nlpssl: skipped {skipped} unreadable images in {source} (first: {meta['skipped_files'][0]})", file=sys.stderr)
    splits = {}
    for split, split_skipped in meta["skipped"].items():
        with warnings.catch_warnings():  # the tensor shares the read-only map; ImageSet copies rows on access
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            images = torch.from_numpy(np.load(folder / f"{split}_images.npy", mmap_mode="r"))  # (N, C, S, S)
        labels_file = folder / f"{split}_labels.npy"
        labels = torch.from_numpy(np.load(labels_file)) if labels_file.is_file() else None  # (N,)
        splits[split] = ImageSet(images, labels, meta["class_names"] if labels is not None else [], split_skipped)
    return splits
