"""Batched seeded augmentations: determinism, per-sample randomness, the presets' statistics."""

from __future__ import annotations

import pytest
import torch

from nlpssl.data.augment import PRESETS, BatchViews, _blur_kernel_size, to_float
from nlpssl.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small batches; a second thread only spins on 2 cores
RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # views stay [0, 1] pixels, easy to inspect


def random_images(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)  # (B, 3, H, W)


def gray_left_to_right_ramp(count: int, size: int = 32) -> torch.Tensor:
    """Gray images that brighten from left to right; a horizontal flip reverses the ramp."""
    ramp = torch.linspace(64, 191, size).round().to(torch.uint8)  # (W,)
    return ramp.expand(count, 3, size, size).clone()  # (B, 3, H, W)


def is_grayscale(views: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B,) True where R == G == B everywhere."""
    return (views[:, 0] == views[:, 1]).flatten(1).all(1) & (views[:, 1] == views[:, 2]).flatten(1).all(1)


@pytest.mark.parametrize("preset", ["simclr", "byol", "mae"])
def test_same_seed_gives_identical_views_and_another_seed_different_ones(preset):
    augment, images = BatchViews(preset, image_size=32, num_views=3), random_images(16)
    first, again, other = augment(images, seed=7), augment(images, seed=7), augment(images, seed=8)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(not torch.equal(a, b) for a, b in zip(first, other))
    assert not torch.equal(first[0], first[1])  # views of one call differ too


def test_global_rng_is_left_untouched():
    state = torch.get_rng_state()
    BatchViews("byol", image_size=32)(random_images(8), seed=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_identical_images_in_one_batch_get_their_own_crops_and_colours():
    twins = random_images(1).repeat(2, 1, 1, 1)  # (2, 3, 32, 32)
    for view in BatchViews("simclr", image_size=32)(twins, seed=0):
        assert not torch.equal(view[0], view[1])


@pytest.mark.parametrize("preset", PRESETS)
def test_views_are_float32_of_the_requested_size_even_from_larger_inputs(preset):
    views = BatchViews(preset, image_size=32, num_views=3)(random_images(4, size=40), seed=0)
    assert len(views) == 3
    assert all(view.shape == (4, 3, 32, 32) and view.dtype == torch.float32 for view in views)


def test_none_is_to_float_for_every_view():
    images = random_images(4)
    expected = to_float(images)
    assert all(torch.equal(view, expected) for view in BatchViews("none", image_size=32)(images, seed=5))
    assert torch.allclose(expected[:, 0], (images[:, 0] / 255.0 - 0.485) / 0.229)


def test_simclr_flips_half_and_grays_a_fifth_of_the_views():
    augment = BatchViews("simclr", image_size=32, **RAW)
    flipped, tied = [], 0
    for view in augment(gray_left_to_right_ramp(1536), seed=1):
        slope = view[..., -1].mean(dim=(1, 2)) - view[..., 0].mean(dim=(1, 2))  # (B,) right minus left edge
        tied += int((slope == 0).sum())  # brightness clamping can flatten a ramp; rare
        flipped.append(slope[slope != 0] < 0)
    flipped = torch.cat(flipped).float()
    assert tied < 0.01 * 3072
    assert abs(flipped.mean().item() - 0.5) < 0.04

    gray = torch.cat([is_grayscale(view) for view in augment(random_images(1536), seed=2)]).float()  # (2 * 1536,)
    assert abs(gray.mean().item() - 0.2) < 0.03


def test_byol_solarizes_the_second_view_only_and_later_views_copy_it():
    # Bright gray images stay above 0.5 through jitter and blur; solarizing maps them all below it.
    generator = torch.Generator().manual_seed(3)
    bright = torch.randint(230, 256, (1536, 1, 32, 32), dtype=torch.uint8, generator=generator)  # (B, 1, 32, 32)
    bright = bright.expand(-1, 3, -1, -1).contiguous()  # (B, 3, 32, 32)
    views = BatchViews("byol", image_size=32, num_views=3, **RAW)(bright, seed=4)
    solarized = [(view.flatten(1).amax(1) <= 0.5).float().mean().item() for view in views]
    assert solarized[0] == 0.0
    assert abs(solarized[1] - 0.2) < 0.04 and abs(solarized[2] - 0.2) < 0.04


def test_blur_kernel_is_about_a_tenth_of_the_image_and_odd():
    assert [_blur_kernel_size(size) for size in (32, 64, 96, 224)] == [3, 7, 9, 23]


@pytest.mark.parametrize("preset", PRESETS)
def test_grayscale_inputs_keep_one_channel(preset):
    images = random_images(8)[:, :1]  # (8, 1, 32, 32)
    augment = BatchViews(preset, image_size=32, mean=(0.5,), std=(0.5,), channels=1)
    views = augment(images, seed=0)
    assert all(view.shape == (8, 1, 32, 32) for view in views)
    assert all(torch.equal(a, b) for a, b in zip(views, augment(images, seed=0)))


def test_grayscale_inputs_need_one_channel_statistics():
    with pytest.raises(UserError, match="one per channel"):
        BatchViews("simclr", image_size=32, channels=1)
    with pytest.raises(UserError, match="one per channel"):
        to_float(random_images(2)[:, :1])


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(UserError, match="simclr, byol, mae, none"):
        BatchViews("simclr2", image_size=32)


def test_images_that_do_not_match_channels_are_rejected():
    with pytest.raises(UserError, match=r"uint8 images of shape \(B, 3, H, W\)"):
        BatchViews("mae", image_size=32)(random_images(2).float(), seed=0)
