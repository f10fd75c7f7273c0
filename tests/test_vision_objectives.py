"""Behaviour of the image objectives on tiny models: teachers, queues, masks, puzzles, resume, export.

Shapes: B images, C channels, S image side, D width, E key width, K queue length,
N patches, P values per patch, G tiles, W processes.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nlpssl.losses
import nlpssl.train
from nlpssl.data.augment import to_float
from nlpssl.data.images import load_image_splits
from nlpssl.models.momentum import EMATeacher, KeyQueue, cosine_momentum
from nlpssl.models.vision import BackboneSpec, load_backbone
from nlpssl.objectives import byol, colorization, jigsaw, mae, moco, rotation, simclr, simcse, simsiam
from nlpssl.objectives.jigsaw import GRID, hamming_permutations, shuffle_tiles
from nlpssl.objectives.rotation import rotate_all
from nlpssl.objectives.vision_base import ImageCollator
from nlpssl.recipes.vision import METHODS, VisionRecipe, build_objective
from nlpssl.train import TrainConfig, train
from tests.helpers import gloo_group, run_gloo_ranks, train_losses

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORLD = 2
TIMEOUT_S = 60


def tiny_recipe(method: str, image_size: int = 16, **method_options) -> VisionRecipe:
    """A recipe for ``method`` small enough to train in milliseconds on a CPU."""
    cfg = VisionRecipe()
    cfg.method.name = method
    cfg.data.image_size = image_size
    cfg.model.width = 8
    cfg.method.projection_dim, cfg.method.hidden_dim, cfg.method.queue_size = 16, 32, 64
    if method == "mae":
        cfg.model.architecture = "vit"
        cfg.model.hidden_size, cfg.model.num_layers, cfg.model.num_heads = 32, 1, 2
        cfg.model.decoder_hidden_size, cfg.model.decoder_num_heads, cfg.model.decoder_num_layers = 32, 2, 1
    for key, value in method_options.items():
        setattr(cfg.model if hasattr(cfg.model, key) else cfg.method, key, value)
    return cfg


def random_images(count: int, side: int = 16, seed: int = 0) -> torch.Tensor:
    """(count, 3, side, side) uint8 noise images."""
    return torch.randint(0, 256, (count, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def image_batch(count: int, side: int = 16, seed: int = 0) -> dict:
    """A collated uint8 batch of noise images with its augmentation seed."""
    return ImageCollator()({"images": random_images(count, side, seed)}, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def digits():
    """The built-in digits at 16 px: the labelled train split."""
    return load_image_splits("digits", image_size=16)["train"]


def run_train(objective, images, output_dir: Path, max_steps: int, **options):
    defaults = dict(batch_size=4, log_every=1, save_every=max_steps, eval_every=1000, warmup_steps=2, lr=1e-3, cpu_threads=1)
    cfg = TrainConfig(output_dir=str(output_dir), max_steps=max_steps, **(defaults | options))
    return train(objective, images, ImageCollator(), cfg)


# ---- momentum: BYOL's schedule and teacher, once per optimizer step ----


def test_cosine_momentum_rises_from_base_to_one_on_a_cosine():
    assert cosine_momentum(0.0) == pytest.approx(0.996)
    assert cosine_momentum(1.0) == pytest.approx(1.0)
    values = [cosine_momentum(k / 50) for k in range(51)]
    assert all(a < b for a, b in zip(values, values[1:]))
    # Grill et al. 2020: tau = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2, at k / K = 1/3.
    assert cosine_momentum(1 / 3, base=0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 3) + 1) / 2)
    assert cosine_momentum(0.5, base=0.99) == pytest.approx(0.995)


def test_byol_teacher_is_a_lerp_towards_the_student_after_each_step():
    torch.manual_seed(0)
    objective = build_objective(tiny_recipe("byol"))
    optimizer = torch.optim.SGD([p for p in objective.parameters() if p.requires_grad], lr=0.5)
    teacher_conv = objective.teacher.module[0].stem[0].weight  # a parameter of the teacher's backbone
    for step, progress in enumerate([0.25, 0.75]):
        objective(image_batch(4, seed=step))["loss"].backward()
        optimizer.step()
        before = teacher_conv.detach().clone()
        student = objective.backbone.stem[0].weight.detach().clone()
        assert not torch.equal(before, student), "the student must have moved, or the lerp is not tested"
        objective.on_optimizer_step(progress)
        expected = torch.lerp(before, student, 1.0 - cosine_momentum(progress, objective.base_momentum))
        assert torch.equal(teacher_conv, expected)
    student_bn, teacher_bn = objective.backbone.stem[1], objective.teacher.module[0].stem[1]
    assert torch.equal(teacher_bn.running_mean, student_bn.running_mean)  # buffers are copied, not averaged
    assert not any(p.requires_grad for p in objective.teacher.parameters())


def test_moco_queue_advances_once_per_optimizer_step_with_accumulation(monkeypatch, digits, tmp_path):
    batch, accum, steps, queue_size = 4, 2, 3, 32
    queue_at_forward, keys, updates = [], [], []  # per micro-batch: (position, queue copy); (B, E) view-2 keys
    forward, compute_keys, on_step = moco.MoCo.forward, moco.MoCo._keys, moco.MoCo.on_optimizer_step

    def recording_forward(self, batch_):
        queue_at_forward.append((int(self.queue.position), self.queue.queue.clone()))
        return forward(self, batch_)

    def recording_keys(self, views, seed):
        out = compute_keys(self, views, seed)  # (2B, E): keys of view 2, then of view 1
        keys.append(out[: views.shape[0] // 2].clone())
        return out

    def recording_step(self, progress):
        updates.append(progress)
        on_step(self, progress)

    monkeypatch.setattr(moco.MoCo, "forward", recording_forward)
    monkeypatch.setattr(moco.MoCo, "_keys", recording_keys)
    monkeypatch.setattr(moco.MoCo, "on_optimizer_step", recording_step)
    torch.manual_seed(0)
    objective = build_objective(tiny_recipe("moco", queue_size=queue_size))
    initial = objective.queue.queue.clone()  # (K, E)
    trained = run_train(objective, digits, tmp_path, steps, batch_size=batch, grad_accum_steps=accum)

    assert updates == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [position for position, _ in queue_at_forward] == [0, 0, 8, 8, 16, 16]  # global batch x accum per step
    for micro in range(0, len(queue_at_forward), accum):  # the queue does not move between micro-batches of one step
        assert torch.equal(queue_at_forward[micro][1], queue_at_forward[micro + 1][1])
    filled = steps * accum * batch
    assert int(trained.queue.position) == filled
    torch.testing.assert_close(trained.queue.queue[:filled], F.normalize(torch.cat(keys), dim=-1))  # enqueue order
    assert torch.equal(trained.queue.queue[filled:], initial[filled:])
    assert trained.pending == []


def test_byol_teacher_updates_once_per_optimizer_step_with_accumulation(monkeypatch, digits, tmp_path):
    accum, steps = 3, 3
    momenta, teacher_at_forward = [], []
    update, forward = EMATeacher.update, byol.BYOL.forward

    def counting_update(self, student, momentum):
        momenta.append(momentum)
        update(self, student, momentum)

    def recording_forward(self, batch_):
        teacher_at_forward.append(self.teacher.module[0].stem[0].weight.clone())  # the teacher's first convolution
        return forward(self, batch_)

    monkeypatch.setattr(EMATeacher, "update", counting_update)
    monkeypatch.setattr(byol.BYOL, "forward", recording_forward)
    torch.manual_seed(0)
    objective = build_objective(tiny_recipe("byol"))
    run_train(objective, digits, tmp_path, steps, grad_accum_steps=accum)

    base = objective.base_momentum
    assert momenta == pytest.approx([cosine_momentum(k / steps, base) for k in (1, 2, 3)])
    assert len(teacher_at_forward) == steps * accum
    for step in range(steps):
        first, *rest = teacher_at_forward[step * accum : (step + 1) * accum]
        assert all(torch.equal(first, other) for other in rest), "the teacher moved between micro-batches"
    assert not torch.equal(teacher_at_forward[0], teacher_at_forward[accum])


# ---- the key queue, alone and over two processes ----


def test_key_queue_is_fifo_wraps_around_and_keeps_its_size():
    queue = KeyQueue(size=5, dim=3, seed=0)
    start = queue.queue.clone()  # (K, D)
    torch.testing.assert_close(start.norm(dim=-1), torch.ones(5))
    first, second = torch.randn(3, 3), torch.randn(4, 3)
    queue.enqueue(first)
    assert int(queue.position) == 3
    torch.testing.assert_close(queue.keys[:3], F.normalize(first, dim=-1))
    assert torch.equal(queue.keys[3:], start[3:])
    queue.enqueue(second)  # rows 3, 4, then wraps to 0, 1
    assert queue.keys.shape == (5, 3) and int(queue.position) == 2
    torch.testing.assert_close(queue.keys[3:], F.normalize(second[:2], dim=-1))
    torch.testing.assert_close(queue.keys[:2], F.normalize(second[2:], dim=-1))
    torch.testing.assert_close(queue.keys[2], F.normalize(first[2], dim=-1))  # the oldest survivor
    assert {"queue", "position"} <= set(queue.state_dict())  # checkpoints hold both


def _moco_worker(rank: int, port: int, out_dir: str) -> None:
    """One gloo rank: a MoCo step of two micro-batches, and MoCo's shuffled key forward on row ids."""
    from nlpssl.objectives.moco import _shuffled_forward

    with gloo_group(rank, WORLD, port, TIMEOUT_S):
        torch.manual_seed(0)  # same weights on both ranks
        objective = build_objective(tiny_recipe("moco", queue_size=32))
        local_keys = []
        compute_keys = objective._keys

        def recording_keys(views, seed):
            keys = compute_keys(views, seed)  # (2B, E): view-2 keys first
            local_keys.append(keys[: views.shape[0] // 2].clone())
            return keys

        objective._keys = recording_keys
        for micro in range(2):
            objective(image_batch(4, seed=10 * micro + rank))  # each rank its own images and seed
        objective.on_optimizer_step(0.5)

        rows_per_rank = 8
        ids = (torch.arange(rows_per_rank) + rank * rows_per_rank).float().unsqueeze(1)  # (N, 1) global row ids
        encoded = []

        def affine(rows):
            encoded.append(rows.clone())
            return 2 * rows + 1

        restored = _shuffled_forward(affine, ids, seed=100 + rank)  # seeds differ: rank 0's must win
        result = {
            "queue": objective.queue.queue, "position": objective.queue.position, "local_keys": local_keys,
            "ids": ids, "encoded": encoded[0], "restored": restored,
        }
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def moco_ranks(tmp_path_factory) -> list[dict]:
    """Run WORLD gloo ranks of :func:`_moco_worker` once; the tests below read their saved results.

    Forked, not spawned: a spawned child spends seconds importing torch and
    nlpssl again; :func:`gloo_group` sets one torch thread first, so the parent's
    OpenMP pool is never entered after the fork (as DataLoader workers do).
    """
    return run_gloo_ranks(_moco_worker, WORLD, tmp_path_factory.mktemp("moco_gloo"), "fork", TIMEOUT_S)


def test_two_processes_hold_one_queue_with_every_rank_keys_in_rank_order(moco_ranks):
    first, second = moco_ranks
    assert torch.equal(first["queue"], second["queue"]) and int(first["position"]) == int(second["position"]) == 16
    expected = torch.cat([moco_ranks[rank]["local_keys"][micro] for micro in range(2) for rank in range(WORLD)])  # (16, E)
    torch.testing.assert_close(first["queue"][:16], F.normalize(expected, dim=-1))
    assert not torch.allclose(first["local_keys"][0], second["local_keys"][0]), "ranks must see different images"
    assert torch.equal(first["queue"][16:], KeyQueue(32, first["queue"].shape[1]).queue[16:])


def test_shuffled_key_forward_mixes_ranks_on_rank_zero_permutation_and_restores_order(moco_ranks):
    order = torch.randperm(2 * 8, generator=torch.Generator().manual_seed(100))  # rank 0's seed
    for rank, result in enumerate(moco_ranks):
        torch.testing.assert_close(result["restored"], 2 * result["ids"] + 1)  # our rows back, in our order
        encoded = result["encoded"].squeeze(1).long()  # (N,) global ids this rank ran through the module
        assert torch.equal(encoded, order[rank * 8 : (rank + 1) * 8])
        assert (encoded // 8 != rank).any(), "the key encoder must see the other rank's images"


# ---- MAE: masks from the seed, the un-shuffle, the loss on hidden patches ----


@pytest.fixture(scope="module")
def mae_objective():
    torch.manual_seed(0)
    return build_objective(tiny_recipe("mae")).eval()  # 16 px, patch 4: N = 16


@pytest.mark.parametrize("mask_ratio", [0.75, 0.6])
def test_mae_mask_hides_all_but_floor_of_the_kept_share_from_the_seed(mask_ratio):
    objective = build_objective(tiny_recipe("mae", mask_ratio=mask_ratio))
    pixels = torch.randn(6, 3, 16, 16)
    noise = objective.noise(6, seed=7, device=torch.device("cpu"))  # (B, N)
    _, _, mask = objective.reconstruct(pixels, noise)  # (B, N), 1 where hidden
    visible = math.floor(16 * (1 - mask_ratio))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert ((mask == 0).sum(dim=1) == visible).all()
    assert len({tuple(row.tolist()) for row in mask}) == 6, "each image gets its own mask"
    rank_of_noise = noise.argsort(dim=1).argsort(dim=1)  # (B, N)
    assert torch.equal(mask.bool(), rank_of_noise >= visible)  # the smallest noise stays visible
    _, _, again = objective.reconstruct(pixels, objective.noise(6, seed=7, device=torch.device("cpu")))
    _, _, other = objective.reconstruct(pixels, objective.noise(6, seed=8, device=torch.device("cpu")))
    assert torch.equal(mask, again) and not torch.equal(mask, other)


def test_mae_ids_restore_puts_visible_tokens_back_in_place(mae_objective):
    vit = mae_objective.mae.vit
    pixels = torch.randn(3, 3, 16, 16)
    noise = mae_objective.noise(3, seed=1, device=torch.device("cpu"))
    with torch.no_grad():
        tokens, mask, ids_restore = vit.embeddings(pixels, noise=noise)  # (B, 1 + keep, D), (B, N), (B, N)
        every_patch = vit.embeddings.patch_embeddings(pixels) + vit.embeddings.position_embeddings[:, 1:]  # (B, N, D)
        encoded = vit(pixel_values=pixels, noise=noise)
    assert torch.equal(encoded.ids_restore, ids_restore) and torch.equal(encoded.mask, mask)
    shuffle = noise.argsort(dim=1)  # (B, N)
    assert torch.equal(shuffle.gather(1, ids_restore), torch.arange(16).expand(3, -1))  # ids_restore inverts it
    visible = tokens[:, 1:]  # (B, keep, D) in shuffled order
    placeholders = torch.zeros(3, 16 - visible.shape[1], visible.shape[2])  # MAE's mask tokens
    unshuffled = torch.cat([visible, placeholders], dim=1).gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, visible.shape[2]))
    kept = mask == 0  # (B, N)
    torch.testing.assert_close(unshuffled[kept], every_patch[kept])
    assert torch.equal(unshuffled[~kept], torch.zeros_like(unshuffled[~kept]))


def test_mae_loss_counts_only_hidden_patches(mae_objective):
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        predicted, patches, mask = mae_objective.reconstruct(pixels, mae_objective.noise(2, 3, torch.device("cpu")))
    target = mae.normalise_patches(patches)  # (B, N, P)
    loss = nlpssl.losses.masked_mse(predicted, target, mask)
    visible, hidden = mask == 0, mask == 1
    changed_visible = predicted.clone()
    changed_visible[visible] += 5.0
    changed_hidden = predicted.clone()
    changed_hidden[hidden] += 5.0
    assert nlpssl.losses.masked_mse(changed_visible, target, mask) == loss
    assert nlpssl.losses.masked_mse(changed_hidden, target, mask) > loss + 1.0
    by_hand = (predicted - target).pow(2).mean(dim=-1)[hidden].mean()
    torch.testing.assert_close(loss, by_hand)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_mae_target_is_normalised_patches_or_the_pixels_by_option(norm_pix_loss):
    torch.manual_seed(0)
    objective = build_objective(tiny_recipe("mae", norm_pix_loss=norm_pix_loss)).eval()
    batch = image_batch(4)
    with torch.no_grad():
        loss = objective(batch)["loss"]
        (view,) = objective.make_views(batch)
        predicted, patches, mask = objective.reconstruct(view, objective.noise(4, batch["seed"], view.device))
    target = mae.normalise_patches(patches) if norm_pix_loss else patches
    torch.testing.assert_close(loss, nlpssl.losses.masked_mse(predicted, target, mask))
    other = patches if norm_pix_loss else mae.normalise_patches(patches)
    assert not torch.allclose(loss, nlpssl.losses.masked_mse(predicted, other, mask))


# ---- jigsaw and rotation ----


def _min_pairwise_hamming(permutations: torch.Tensor) -> int:
    distances = (permutations.unsqueeze(0) != permutations.unsqueeze(1)).sum(dim=-1)  # (P, P)
    distances.fill_diagonal_(permutations.shape[1] + 1)
    return int(distances.min())


def test_hamming_permutations_are_distinct_permutations_far_apart():
    chosen = hamming_permutations(100)  # (P, G)
    assert chosen.shape == (100, 9)
    assert torch.equal(chosen.sort(dim=1).values, torch.arange(9).expand(100, -1))
    assert len({tuple(row.tolist()) for row in chosen}) == 100
    assert torch.equal(chosen[0], torch.arange(9)) and (chosen[1] != chosen[0]).all()
    generator = torch.Generator().manual_seed(0)
    random_set = torch.stack([torch.randperm(9, generator=generator) for _ in range(100)])  # (P, G)
    assert _min_pairwise_hamming(chosen) > _min_pairwise_hamming(random_set)
    assert torch.equal(hamming_permutations(100), chosen)  # the same set everywhere


def test_shuffle_tiles_identity_and_a_known_permutation():
    images = torch.randn(2, 3, 25, 25)  # 25 = 3 x 8 + 1: the last row and column are cut off
    tile = 25 // GRID

    def tile_at(image, g):
        row, column = divmod(g, GRID)
        return image[:, row * tile : (row + 1) * tile, column * tile : (column + 1) * tile]

    reverse, rotate_rows = [8, 7, 6, 5, 4, 3, 2, 1, 0], [1, 2, 0, 4, 5, 3, 7, 8, 6]
    permutations = torch.tensor([list(range(9)), reverse, rotate_rows])  # (3, G)
    same = shuffle_tiles(images, permutations, torch.tensor([0, 0]))  # (B, G, C, T, T)
    assert same.shape == (2, 9, 3, tile, tile)
    for b in range(2):
        for g in range(9):
            assert torch.equal(same[b, g], tile_at(images[b], g))
    moved = shuffle_tiles(images, permutations, torch.tensor([1, 2]))
    for g in range(9):
        assert torch.equal(moved[0, g], tile_at(images[0], 8 - g))  # reversed
        assert torch.equal(moved[1, g], tile_at(images[1], int(permutations[2, g])))  # tile g comes from perm[g]
    assert torch.equal(moved[1, 0], tile_at(images[1], 1)) and torch.equal(moved[1, 2], tile_at(images[1], 0))


def test_rotate_all_labels_each_quarter_turn_and_four_make_a_full_turn():
    images = torch.randn(3, 1, 8, 8)
    rotated, labels = rotate_all(images)  # (4B, C, S, S), (4B,)
    assert torch.equal(labels, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]))
    assert torch.equal(rotated[:3], images)
    assert torch.equal(rotated[3:6], torch.rot90(images, 1, dims=(2, 3)))
    assert not torch.equal(rotated[3:6], rotated[9:12])  # 90 and 270 degrees differ
    for quarter in range(4):  # turning label q's images by label (4 - q) mod 4 gives the originals back
        block = rotated[3 * quarter : 3 * (quarter + 1)]
        back = rotate_all(block)[0][3 * ((4 - quarter) % 4) : 3 * ((4 - quarter) % 4 + 1)]
        assert torch.equal(back, images)
    full = images
    for _ in range(4):
        full = rotate_all(full)[0][3:6]
    assert torch.equal(full, images)


# ---- the one loss core and every method on a tiny batch ----


def test_objectives_share_the_loss_core():
    assert simclr.nt_xent is nlpssl.losses.nt_xent
    assert moco.info_nce is nlpssl.losses.info_nce is simcse.info_nce
    assert byol.negative_cosine is simsiam.negative_cosine is nlpssl.losses.negative_cosine
    assert mae.masked_mse is colorization.masked_mse is nlpssl.losses.masked_mse
    assert rotation.token_cross_entropy is jigsaw.token_cross_entropy is nlpssl.losses.token_cross_entropy


@pytest.mark.parametrize("method", METHODS)
def test_every_method_loss_is_finite_and_reaches_the_encoder(method):
    torch.manual_seed(0)
    side = 24 if method == "jigsaw" else 16
    objective = build_objective(tiny_recipe(method, image_size=side)).train()
    out = objective(image_batch(4, side))
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    encoder = objective.mae.vit if method == "mae" else objective.backbone
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    teacher = getattr(objective, "teacher", None)
    assert teacher is None or all(p.grad is None for p in teacher.parameters())


def test_colorization_features_see_only_lightness_as_in_training():
    torch.manual_seed(0)
    objective = build_objective(tiny_recipe("colorization")).eval()
    images = random_images(4)  # (4, 3, 16, 16)
    swapped = images[:, [2, 0, 1]]  # other colours; lightness differs too
    grey = images.float().mean(dim=1, keepdim=True).round().to(torch.uint8).expand(-1, 3, -1, -1)  # no colour at all
    with torch.no_grad():
        grey_features = objective.features(grey)
        lightness_only = objective.backbone(objective.split_lab(objective.as_float(grey))[0])
        assert torch.allclose(grey_features, lightness_only)
        assert not torch.allclose(objective.features(images), objective.backbone(objective.as_float(images)))
        assert not torch.allclose(objective.features(images), objective.features(swapped))


class _BatchNormOnly(torch.nn.Module):
    """A backbone of one BatchNorm and a mean: blind to a per-channel affine change of its whole batch."""

    feature_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(images).pow(2).mean(dim=(2, 3))  # (B, 3)


def test_simclr_normalises_each_view_with_its_own_batch_statistics(monkeypatch):
    torch.manual_seed(0)
    objective = simclr.SimCLR(_BatchNormOnly(), BackboneSpec(), views=None).train()
    view = torch.randn(8, 3, 4, 4)
    monkeypatch.setattr(objective, "make_views", lambda batch: [view, 3.0 * view + 5.0])  # view 2: rescaled and shifted
    projections = []
    objective.projector.register_forward_hook(lambda module, inputs, output: projections.append(output))
    objective(image_batch(8))
    z1, z2 = projections  # one projector call per view; in one joint batch the shift would set the views apart
    assert torch.allclose(z1, z2, atol=1e-4)


def test_simclr_loss_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    objective = build_objective(tiny_recipe("simclr")).train()
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    batch = image_batch(8)  # the same images and the same views every step
    losses = []
    for _ in range(20):
        loss = objective(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# ---- resume and export through train() ----


class _Crash(Exception):
    pass


def _objective(method: str, init_seed: int):
    torch.manual_seed(init_seed)
    return build_objective(tiny_recipe(method))


@pytest.fixture(scope="module")
def straight_runs(digits, tmp_path_factory):
    """4 steps of SimCLR, BYOL and MoCo in one go: the reference of the resume and export tests."""
    runs = {}
    for method in ("simclr", "byol", "moco"):
        output_dir = tmp_path_factory.mktemp(f"{method}_straight")
        runs[method] = (run_train(_objective(method, 0), digits, output_dir, 4, save_every=2), output_dir)
    return runs


@pytest.mark.parametrize("method", ["simclr", "byol", "moco"])
def test_resume_after_a_crash_reproduces_every_step(method, straight_runs, digits, monkeypatch, tmp_path):
    straight, straight_dir = straight_runs[method]
    save = nlpssl.train.save_checkpoint

    def save_then_crash(accelerator, model, output_dir, step, *args, **kwargs):
        path = save(accelerator, model, output_dir, step, *args, **kwargs)
        if step == 2:
            raise _Crash
        return path

    with monkeypatch.context() as patch:
        patch.setattr(nlpssl.train, "save_checkpoint", save_then_crash)
        with pytest.raises(_Crash):
            run_train(_objective(method, 0), digits, tmp_path / "resumed", 4, save_every=2)
    # Another init and another global RNG state: only a real restore can match.
    torch.manual_seed(999)
    resumed = run_train(_objective(method, 123), digits, tmp_path / "resumed", 4, save_every=2, resume="auto")
    expected = train_losses(straight_dir)
    assert [step for step, _ in expected] == [1, 2, 3, 4]
    assert train_losses(tmp_path / "resumed") == expected
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # teacher, queue and BatchNorm statistics included
    run_train(_objective(method, 123), digits, tmp_path / "fresh", 1)
    assert train_losses(tmp_path / "fresh")[0] != expected[0], "the control run must differ, or the test proves nothing"


def test_final_resnet_folder_reloads_with_the_same_features(straight_runs, digits):
    trained, output_dir = straight_runs["simclr"]
    backbone, spec = load_backbone(output_dir / "final")
    images = digits.__getitems__(list(range(8)))["images"]  # (B, C, S, S) uint8
    trained.eval()
    with torch.no_grad():
        expected = trained.features(images)  # (B, D)
        reloaded = backbone(to_float(images, spec.mean, spec.std))
    assert expected.shape == (8, 64)
    torch.testing.assert_close(reloaded, expected)
    assert (spec.architecture, spec.width, spec.image_size) == ("resnet18", 8, 16)


def test_final_mae_folder_reloads_with_the_same_features_and_in_transformers(digits, tmp_path):
    from transformers import AutoModel

    trained = run_train(_objective("mae", 0), digits, tmp_path, 2).eval()
    images = digits.__getitems__(list(range(4)))["images"]
    backbone, spec = load_backbone(tmp_path / "final")
    with torch.no_grad():
        expected = trained.features(images)  # (B, D)
        reloaded = backbone(to_float(images, spec.mean, spec.std))
    torch.testing.assert_close(reloaded, expected)
    assert spec.architecture == "vit" and spec.mask_ratio == 0.75
    model = AutoModel.from_pretrained(tmp_path / "final")
    assert type(model).__name__ == "ViTMAEModel"
    for name, tensor in trained.mae.vit.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_mae_linear_layers_start_xavier_uniform_with_zero_bias():
    from nlpssl.models.vision import BackboneSpec, build_mae

    torch.manual_seed(0)
    mae = build_mae(BackboneSpec(architecture="vit", image_size=16, patch_size=4, hidden_size=32, num_layers=2, num_heads=2))
    linears = [module for module in mae.modules() if isinstance(module, torch.nn.Linear)]
    assert len(linears) > 10  # encoder and decoder blocks, decoder embed and prediction
    for linear in linears:
        fan_out, fan_in = linear.weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert linear.weight.abs().max() <= bound
        assert linear.weight.std() > 0.8 * bound / math.sqrt(3)  # uniform(-b, b) has std b / sqrt(3); N(0, 0.02) is far below
        assert linear.bias is None or not linear.bias.any()
