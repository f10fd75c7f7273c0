"""Batched, seeded augmentations for vision SSL: uint8 batch in, normalised float views out.

The whole batch is augmented as tensors on the training device with
``kornia.augmentation``, which samples one set of random parameters *per
sample* in a single call. ``torchvision.transforms.v2`` draws one set of
parameters per call, so per-sample randomness there needs a Python loop over
images; here each view is one kornia call over the batch. One difference
remains: kornia's ColorJitter draws the order of its four colour steps once
per call (per view), torchvision once per image; the factors are per image.

Determinism: :meth:`BatchViews.forward` takes an integer seed (the training
loop derives one per micro-step and process, so a resumed run replays the
same views). kornia draws its parameters from the default CPU generator, which
we fork and seed; the global RNG is left as it was.

Presets (the papers' parameters, written out in the ``*_VIEW`` constants):

* ``simclr``: Chen et al. 2020, "A Simple Framework for Contrastive Learning
  of Visual Representations", Appendix A (CIFAR-10 settings: no blur at 32 px).
* ``byol``: Grill et al. 2020, "Bootstrap Your Own Latent", Table 6
  (asymmetric views: blur always on view 1, solarize only on view 2).
* ``mae``: He et al. 2022, "Masked Autoencoders Are Scalable Vision
  Learners": random resized crop and flip only.
* ``none``: conversion to float and normalisation only.

Grayscale inputs (``channels=1``) skip saturation, hue and random grayscale,
which need colour; brightness and contrast still apply.

Shapes: B batch, C channels, H/W input height/width, S output image size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import kornia.augmentation as K
import torch
import torch.nn.functional as F

from nlpssl.errors import UserError

PRESETS = ("simclr", "byol", "mae", "none")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

CIFAR_IMAGE_SIZE = 32
SMALL_IMAGE_BLUR_KERNEL = 3  # BYOL keeps blur at CIFAR size; a 10% kernel would be 3 px anyway
BLUR_KERNEL_FRACTION = 0.1  # SimCLR / BYOL: kernel side is 10% of the image side (23 px at 224)


@dataclass(frozen=True)
class ViewRecipe:
    """The random operations of one view, applied in this order: crop, flip, jitter, grayscale, blur, solarize."""

    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale_prob: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_at_cifar_size: bool = True  # SimCLR drops blur on 32 px CIFAR images; BYOL keeps it
    solarize_prob: float = 0.0
    solarize_threshold: float = 0.5  # on [0, 1] pixels: values at or above it become 1 - value


SIMCLR_VIEW = ViewRecipe(
    crop_scale=(0.08, 1.0),
    jitter_prob=0.8,
    brightness=0.4,
    contrast=0.4,
    saturation=0.4,
    hue=0.1,
    grayscale_prob=0.2,
    blur_prob=0.5,
    blur_at_cifar_size=False,
)
BYOL_VIEW_1 = ViewRecipe(
    crop_scale=(0.08, 1.0),
    jitter_prob=0.8,
    brightness=0.4,
    contrast=0.4,
    saturation=0.2,
    hue=0.1,
    grayscale_prob=0.2,
    blur_prob=1.0,
    solarize_prob=0.0,
)
BYOL_VIEW_2 = replace(BYOL_VIEW_1, blur_prob=0.1, solarize_prob=0.2)
MAE_VIEW = ViewRecipe(crop_scale=(0.2, 1.0))

# Recipes per view; views beyond the listed ones reuse the last recipe. `none` has no random view.
PRESET_VIEWS: dict[str, tuple[ViewRecipe, ...]] = {
    "simclr": (SIMCLR_VIEW,),
    "byol": (BYOL_VIEW_1, BYOL_VIEW_2),
    "mae": (MAE_VIEW,),
    "none": (),
}


def to_float(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float32, no augmentation (evaluation, pretext tasks).

    Example::

        pixels = to_float(batch["images"].to(device))  # (B, 3, 32, 32) float32
        features = backbone(pixels)
    """
    return normalise(images.float() / 255.0, mean, std)


class BatchViews(torch.nn.Module):
    """Makes `num_views` augmented float views of a uint8 batch.

    Args:
        preset: one of ``PRESETS`` (see the module docstring for the papers).
        image_size: side S of the square output views; the crop resizes to it (`none` only resizes).
        num_views: how many views to return.
        mean, std: per-channel normalisation applied after the [0, 1] photometric ops.
        channels: 3 for RGB, 1 for grayscale (skips saturation, hue and grayscale).

    Example::

        views = BatchViews("simclr", image_size=32)
        view1, view2 = views(images, seed=step_seed)  # images: (B, 3, H, W) uint8
        loss = nt_xent(model(view1), model(view2), temperature=0.5)
    """

    def __init__(
        self,
        preset: str,
        image_size: int,
        num_views: int = 2,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        channels: int = 3,
    ):
        super().__init__()
        if preset not in PRESET_VIEWS:
            raise UserError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if len(mean) != channels or len(std) != channels:
            raise UserError(f"mean and std need {channels} values (one per channel), got {len(mean)} and {len(std)}")
        self.preset, self.image_size, self.num_views, self.channels = preset, image_size, num_views, channels
        self.mean, self.std = tuple(mean), tuple(std)
        recipes = PRESET_VIEWS[preset]
        # A plain tuple, not submodules: `.to(device)` would move kornia's samplers off the CPU generator
        # and the same seed would give different crops on different devices.
        self._pipelines = tuple(
            _view_pipeline(recipes[min(view, len(recipes) - 1)], image_size, channels) if recipes else None
            for view in range(num_views)
        )

    def extra_repr(self) -> str:
        sizes = f"image_size={self.image_size}, num_views={self.num_views}, channels={self.channels}"
        return f"preset={self.preset!r}, {sizes}"

    def forward(self, images: torch.Tensor, seed: int) -> list[torch.Tensor]:
        """images: (B, C, H, W) uint8 -> `num_views` tensors (B, C, S, S) float32, normalised."""
        self._check(images)
        pixels = images.float() / 255.0  # (B, C, H, W) in [0, 1]
        if self.preset == "none":
            return [normalise(_resize(pixels, self.image_size), self.mean, self.std)] * self.num_views
        devices = [images.device] if images.is_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.random.default_generator.manual_seed(seed)
            if images.is_cuda:  # only this process's device, not every GPU as torch.manual_seed would
                with torch.cuda.device(images.device):
                    torch.cuda.manual_seed(seed)
            views = [pipeline(pixels) for pipeline in self._pipelines]  # each (B, C, S, S)
        return [normalise(view, self.mean, self.std) for view in views]

    def _check(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != self.channels:
            raise UserError(
                f"augmentation expects uint8 images of shape (B, {self.channels}, H, W), "
                f"got {images.dtype} {tuple(images.shape)}; set channels to match the dataset"
            )


def _view_pipeline(recipe: ViewRecipe, image_size: int, channels: int) -> K.ImageSequential:
    """One kornia pipeline: all of a view's random ops over the whole batch in one call."""
    colour = channels == 3
    ops: list[torch.nn.Module] = [
        # "resample" crops and resizes the whole batch with one affine warp; "slice" loops over images.
        K.RandomResizedCrop(
            (image_size, image_size), scale=recipe.crop_scale, ratio=recipe.crop_ratio, cropping_mode="resample"
        ),
        K.RandomHorizontalFlip(p=recipe.flip_prob),
    ]
    if recipe.jitter_prob > 0:
        saturation, hue = (recipe.saturation, recipe.hue) if colour else (0.0, 0.0)
        ops.append(K.ColorJitter(recipe.brightness, recipe.contrast, saturation, hue, p=recipe.jitter_prob))
    if recipe.grayscale_prob > 0 and colour:
        ops.append(K.RandomGrayscale(p=recipe.grayscale_prob))
    blur_kernel = _blur_kernel_size(image_size)
    if recipe.blur_prob > 0 and (image_size > CIFAR_IMAGE_SIZE or recipe.blur_at_cifar_size):
        ops.append(K.RandomGaussianBlur((blur_kernel, blur_kernel), recipe.blur_sigma, p=recipe.blur_prob))
    if recipe.solarize_prob > 0:
        threshold = (recipe.solarize_threshold, recipe.solarize_threshold)
        ops.append(K.RandomSolarize(thresholds=threshold, additions=(0.0, 0.0), p=recipe.solarize_prob))
    return K.ImageSequential(*ops)


def _blur_kernel_size(image_size: int) -> int:
    """Odd kernel side of about 10% of the image (23 at 224 px, 9 at 96 px), 3 at CIFAR size."""
    if image_size <= CIFAR_IMAGE_SIZE:
        return SMALL_IMAGE_BLUR_KERNEL
    side = max(int(BLUR_KERNEL_FRACTION * image_size), SMALL_IMAGE_BLUR_KERNEL)
    return side if side % 2 == 1 else side + 1


def _resize(pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, S, S); a no-op when the images already have the output size."""
    if pixels.shape[-2:] == (image_size, image_size):
        return pixels
    return F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)


def normalise(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> (pixels - mean) / std per channel."""
    mean_column, std_column = _channel_columns(pixels, mean, std)
    return (pixels - mean_column) / std_column


def denormalise(normalised: torch.Tensor, mean, std) -> torch.Tensor:
    """The inverse of :func:`normalise`, clamped to [0, 1]: pixels to look at or convert (e.g. to Lab)."""
    mean_column, std_column = _channel_columns(normalised, mean, std)
    return (normalised * std_column + mean_column).clamp(0.0, 1.0)


def _channel_columns(pixels: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as (1, C, 1, 1) tensors on the pixels' device and dtype."""
    if len(mean) != pixels.shape[1] or len(std) != pixels.shape[1]:
        raise UserError(f"mean and std need {pixels.shape[1]} values (one per channel), got {len(mean)} and {len(std)}")
    mean_column = torch.tensor(mean, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    std_column = torch.tensor(std, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    return mean_column, std_column
