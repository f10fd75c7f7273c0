"""Images decoded once into cached uint8 arrays: digits, folders, tar archives, bad files, errors."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nlpssl.data import images as images_module
from nlpssl.data.images import IMAGE_EXTENSIONS, ImageSet, default_cache_dir, load_image_splits
from nlpssl.errors import UserError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (20, 20), colour=RED) -> Path:
    """One flat-coloured image in ``mode``; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":  # palette with a transparent entry
        image = Image.new("P", size, 1)
        image.putpalette([0, 0, 0, *colour] + [0] * 762)
        image.save(path, transparency=0)
        return path
    fill = {"L": 128, "RGBA": (*colour, 100), "CMYK": (0, 255, 255, 0)}.get(mode, colour)
    Image.new(mode, size, fill).save(path)
    return path


def noise_jpeg(size: int = 64) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """Three classes (named out of order) of images in many formats, modes and sizes."""
    root = tmp_path / "pets"
    write_image(root / "zebra" / "a.png", "RGB", (40, 30))
    write_image(root / "zebra" / "b.jpg", "L", (17, 50))
    write_image(root / "zebra" / "c.gif", "P", (32, 32), GREEN)
    write_image(root / "ant" / "a.png", "RGBA", (8, 8), BLUE)
    write_image(root / "ant" / "b.JPEG", "CMYK", (64, 48))
    write_image(root / "ant" / "c.bmp", "RGB", (9, 13))
    write_image(root / "cat" / "a.webp", "RGB", (33, 33))
    write_image(root / "cat" / "b.tiff", "L", (16, 16))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".hidden.jpg").write_bytes(b"ignored: hidden")
    return root


def test_digits_shapes_labels_and_split_sizes():
    splits = load_image_splits("digits", image_size=32, test_fraction=0.2)
    train, test = splits["train"], splits["test"]
    assert len(train) + len(test) == 1797 and len(test) == round(1797 * 0.2)
    assert train.images.shape == (len(train), 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and set(train.labels.tolist()) == set(range(10))
    assert train.class_names == [str(digit) for digit in range(10)]
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # gray replicated to RGB


def test_digits_split_is_deterministic_per_seed():
    first, again = load_image_splits("digits", seed=3), load_image_splits("digits", seed=3)
    other = load_image_splits("digits", seed=4)
    assert torch.equal(first["test"].images, again["test"].images)
    assert torch.equal(first["test"].labels, again["test"].labels)
    assert not torch.equal(first["test"].images, other["test"].images)


def test_digits_one_channel_and_no_test():
    splits = load_image_splits("digits", image_size=8, channels=1, test_fraction=0)
    assert list(splits) == ["train"] and splits["train"].images.shape == (1797, 1, 8, 8)


def test_class_folder_converts_every_format_and_orders_classes(class_folder, tmp_path):
    splits = load_image_splits(str(class_folder), image_size=16, cache_dir=tmp_path / "cache", test_fraction=0)
    train = splits["train"]
    assert train.class_names == ["ant", "cat", "zebra"] and train.skipped == 0
    assert train.images.shape == (8, 3, 16, 16) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]  # sorted by class, then file
    centre = train.images[:, :, 8, 8].tolist()  # (N, C)
    assert centre[0] == [0, 0, 255]  # RGBA: alpha dropped
    assert centre[4] == [128, 128, 128]  # grayscale replicated
    assert centre[7] == [0, 255, 0]  # palette with transparency
    gray = load_image_splits(str(class_folder), image_size=16, channels=1, cache_dir=tmp_path / "cache")
    assert gray["train"].images.shape[1:] == (1, 16, 16) and len(gray["train"]) + len(gray["test"]) == 8


def test_short_side_is_resized_then_centre_cropped(tmp_path):
    image = Image.new("RGB", (96, 32), RED)
    image.paste(Image.new("RGB", (32, 32), GREEN), (32, 0))
    image.paste(Image.new("RGB", (32, 32), BLUE), (64, 0))
    (tmp_path / "wide").mkdir()
    image.save(tmp_path / "wide" / "x.png")
    train = load_image_splits(str(tmp_path / "wide"), image_size=8, cache_dir=tmp_path / "cache")["train"]
    inner = train.images[0, :, 1:7, 1:7].reshape(3, -1)  # (C, 36): the border pixels blend across the crop edge
    assert (inner == torch.tensor(GREEN, dtype=torch.uint8)[:, None]).all()  # only the middle third remains


def spy_on_memory_maps(monkeypatch) -> list[str | None]:
    """Record the ``mmap_mode`` of every ``np.load`` the image module makes."""
    modes, real_load = [], np.load

    def load(*args, **kwargs):
        modes.append(kwargs.get("mmap_mode"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(images_module.np, "load", load)
    return modes


def test_cache_is_reused_and_memory_mapped(class_folder, tmp_path, monkeypatch):
    first = load_image_splits(str(class_folder), cache_dir=tmp_path / "cache")

    decoded, real_decode = [], images_module._decode_image

    def counting_decode(*args, **kwargs):
        decoded.append(args)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(images_module, "_decode_image", counting_decode)
    modes = spy_on_memory_maps(monkeypatch)
    again = load_image_splits(str(class_folder), cache_dir=tmp_path / "cache", test_fraction=0)["train"]
    assert decoded == [] and modes[0] == "r"  # images memory-mapped (labels are loaded whole)
    assert torch.equal(again.images, torch.cat([first["train"].images, first["test"].images]).index_select(0, _order(first)))
    write_image(class_folder / "cat" / "c.png")  # a new file means a new cache
    assert len(load_image_splits(str(class_folder), cache_dir=tmp_path / "cache")["train"]) > 0 and len(decoded) == 9


def _order(splits: dict[str, ImageSet]) -> torch.Tensor:
    """Rows of train+test back in stored order (the hold-out keeps each part's order)."""
    seen = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    test_rows, train_rows = seen[: len(splits["test"])].sort().values, seen[len(splits["test"]):].sort().values
    return torch.cat([train_rows, test_rows]).argsort()


def test_getitems_copies_rows_and_leaves_the_set_unchanged(class_folder, tmp_path):
    train = load_image_splits(str(class_folder), image_size=8, cache_dir=tmp_path / "cache", test_fraction=0)["train"]
    batch = train.__getitems__([2, 0, 2])
    assert batch["images"].shape == (3, 3, 8, 8) and batch["labels"].tolist() == [0, 0, 0]
    before = train.images.clone()
    batch["images"].zero_()
    train[0]["images"].zero_()
    assert torch.equal(train.images, before)
    assert train[5]["images"].shape == (3, 8, 8) and int(train[5]["labels"]) == 2


def test_truncated_jpeg_is_skipped_and_counted_or_raises(tmp_path, capsys):
    folder = tmp_path / "shapes"
    write_image(folder / "round" / "good.png")
    write_image(folder / "square" / "good.png")
    data = noise_jpeg()
    (folder / "square" / "broken.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"broken\.jpg.*--data\.bad_images=skip"):
        load_image_splits(str(folder), cache_dir=tmp_path / "cache", bad_images="error")
    train = load_image_splits(str(folder), image_size=8, cache_dir=tmp_path / "cache", test_fraction=0)["train"]
    assert len(train) == 2 and train.skipped == 1 and train.labels.tolist() == [0, 1]
    assert "nlpssl: skipped 1 unreadable images in" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"broken\.jpg"):  # the cached skip still fails in "error" mode
        load_image_splits(str(folder), image_size=8, cache_dir=tmp_path / "cache", bad_images="error")


def test_truncated_jpeg_fails_even_if_pil_was_told_to_load_them(tmp_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = noise_jpeg()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cut.jpg").write_bytes(data[: len(data) // 2])
    write_image(tmp_path / "bad" / "fine.png")
    assert load_image_splits(str(tmp_path / "bad"), cache_dir=tmp_path / "cache")["train"].skipped == 1
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_tar_gz_with_wrapper_folder_and_splits(tmp_path):
    for split, count in (("train", 3), ("test", 2)):
        for name in ("dog", "cat"):
            for index in range(count):
                write_image(tmp_path / "src" / "cifar-mini" / split / name / f"{index:04d}.jpg", colour=GREEN)
    archive = tmp_path / "mini.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-mini", arcname="./cifar-mini")
    splits = load_image_splits(str(archive), image_size=8, cache_dir=tmp_path / "cache")
    assert {split: len(images) for split, images in splits.items()} == {"train": 6, "test": 4}
    assert splits["train"].class_names == ["cat", "dog"] and splits["test"].labels.tolist() == [0, 0, 1, 1]
    assert splits["test"].images.shape == (4, 3, 8, 8)


def test_unlabelled_folder_gives_only_train(tmp_path):
    for index in range(3):
        write_image(tmp_path / "photos" / f"{index}.png", size=(10 + index, 12))
    splits = load_image_splits(str(tmp_path / "photos"), image_size=8, cache_dir=tmp_path / "cache")
    assert list(splits) == ["train"]
    train = splits["train"]
    assert train.labels is None and train.class_names == [] and len(train) == 3
    assert set(train.__getitems__([0, 1])) == {"images"}


def test_train_folder_without_test_holds_out_a_seeded_test(tmp_path):
    for name in ("a", "b"):
        for index in range(5):
            write_image(tmp_path / "data" / "train" / name / f"{index}.png")
    splits = load_image_splits(str(tmp_path / "data"), image_size=8, cache_dir=tmp_path / "cache", test_fraction=0.3)
    assert (len(splits["train"]), len(splits["test"])) == (7, 3)
    assert splits["test"].class_names == ["a", "b"]


def test_a_crash_while_writing_leaves_no_complete_cache(class_folder, tmp_path, monkeypatch):
    real_save = np.save
    calls = []

    def crash_on_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt("power cut")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(images_module.np, "save", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        load_image_splits(str(class_folder), cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(images_module.np, "save", real_save)
    assert len(load_image_splits(str(class_folder), cache_dir=tmp_path / "cache")["train"]) > 0


@pytest.mark.parametrize(
    ("make_source", "options", "message"),
    [
        (lambda root: str(root / "nowhere"), {}, "not found.*'digits'"),
        (lambda root: str((root / "empty").mkdir() or root / "empty"), {}, "is empty"),
        (lambda root: str(_text_only(root)), {}, r"no images \(\.jpg .*\.tiff\) found"),
        (lambda root: str(_text_only(root) / "notes.txt"), {}, "not a .tar"),
        (lambda root: "digits", {"image_size": 4}, "image_size must be at least 8"),
        (lambda root: "digits", {"channels": 2}, "channels must be 1"),
        (lambda root: "digits", {"test_fraction": 1.0}, r"test_fraction must be in \[0, 1\)"),
        (lambda root: "digits", {"bad_images": "ignore"}, "bad_images must be one of skip, error"),
    ],
)
def test_errors_are_one_line_with_what_to_do(tmp_path, make_source, options, message):
    with pytest.raises(UserError, match=message) as caught:
        load_image_splits(make_source(tmp_path), cache_dir=tmp_path / "cache", **options)
    assert "\n" not in str(caught.value) and ";" in str(caught.value)


def _text_only(root: Path) -> Path:
    (root / "texts").mkdir()
    (root / "texts" / "notes.txt").write_text("hello")
    return root / "texts"


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NLPSSL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "images"
    assert ".jpg" in IMAGE_EXTENSIONS and ".webp" in IMAGE_EXTENSIONS


def cut_of_archive(archive: Path, out: Path, per_folder: int) -> Path:
    """``archive`` with only the first ``per_folder`` files of each folder (its folders and top-level files all kept)."""
    files_kept: dict[str, int] = {}
    with tarfile.open(archive, "r|gz") as source, tarfile.open(out, "w:gz") as cut:
        for member in source:  # streamed: decompressing all of it takes seconds, decoding its 60,000 JPEGs a minute
            if not member.isfile():
                cut.addfile(member)
                continue
            folder = member.name.rpartition("/")[0]
            if folder and files_kept.get(folder, 0) >= per_folder:
                continue
            files_kept[folder] = files_kept.get(folder, 0) + 1
            cut.addfile(member, source.extractfile(member))
    return out


def test_cifar10_archive_decodes_once_then_loads_memory_mapped(shared_data, tmp_path, monkeypatch):
    """The shared CIFAR-10 archive as it is laid out (train/ and test/, a folder per class, a README beside them), cut to
    three images per class and split; the full archive decodes the same way in the vision benchmarks."""
    archive = shared_data / "cifar10_jpg" / "cifar10-images.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} not found")
    cut = cut_of_archive(archive, tmp_path / "cifar10-cut.tar.gz", per_folder=3)
    splits = load_image_splits(str(cut), image_size=32, cache_dir=tmp_path / "cache")
    assert {split: len(images) for split, images in splits.items()} == {"train": 30, "test": 30}
    assert splits["train"].class_names[:2] == ["airplane", "automobile"] and len(splits["train"].class_names) == 10
    assert torch.equal(splits["test"].labels.bincount(), torch.full((10,), 3))
    assert splits["test"].images.shape[1:] == (3, 32, 32) and splits["test"].images.float().std() > 20  # real pictures
    modes = spy_on_memory_maps(monkeypatch)
    started = time.perf_counter()
    again = load_image_splits(str(cut), image_size=32, cache_dir=tmp_path / "cache")
    assert time.perf_counter() - started < 1.0 and modes.count("r") == 2  # train and test images memory-mapped
    assert again["train"].__getitems__([0, 29])["labels"].tolist() == [0, 9]
