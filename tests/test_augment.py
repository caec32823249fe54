import pytest
import torch

from cifar.augment import CIFAR10_MEAN, augment, cutout, denormalize, normalize, random_crop, random_flip
from cifar.config import AugmentConfig


@pytest.fixture
def images():
    return torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def crop_offset(original, cropped, padding):
    """The (row, col) window of the zero-padded original that cropped equals, or None."""
    padded = torch.nn.functional.pad(original, (0, 0, padding, padding, padding, padding))
    for row in range(2 * padding + 1):
        for col in range(2 * padding + 1):
            if torch.equal(padded[row : row + 32, col : col + 32], cropped):
                return row, col
    return None


def test_each_crop_is_a_window_within_the_padding(images):
    padding = 4
    cropped = random_crop(images, padding, generator())
    assert cropped.shape == images.shape and cropped.dtype == torch.uint8
    offsets = [crop_offset(original, crop, padding) for original, crop in zip(images, cropped)]
    assert all(offset is not None for offset in offsets), "a crop is not a window of the padded image"
    assert all(0 <= r <= 2 * padding and 0 <= c <= 2 * padding for r, c in offsets)
    assert len(set(offsets)) > 10, "offsets should vary per sample"


def test_crop_with_zero_padding_is_identity(images):
    assert torch.equal(random_crop(images, 0, generator()), images)


def test_flip_mirrors_exactly_or_leaves_alone(images):
    flipped = random_flip(images, generator())
    mirrored = [torch.equal(out, original.flip(1)) for out, original in zip(flipped, images)]
    unchanged = [torch.equal(out, original) for out, original in zip(flipped, images)]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert 10 < sum(mirrored) < 54, "about half the samples should be mirrored"
    # Mirroring is exact: every column j becomes column 31 - j.
    index = mirrored.index(True)
    assert torch.equal(flipped[index][:, 0], images[index][:, 31])


def test_cutout_box_has_the_configured_size_and_moves_between_samples(images):
    size = 8
    out = cutout(images, size, generator())
    fill = torch.tensor([round(m * 255) for m in CIFAR10_MEAN], dtype=torch.uint8)
    boxes = []
    for original, result in zip(images, out):
        changed = (result != original).any(-1)
        rows, cols = torch.nonzero(changed, as_tuple=True)
        # Random pixels may equal the fill colour by chance; the box's bounds are still exact.
        top, left = rows.min().item(), cols.min().item()
        assert rows.max().item() - top + 1 == size and cols.max().item() - left + 1 == size
        assert (result[top : top + size, left : left + size] == fill).all()
        unchanged_outside = result.clone()
        unchanged_outside[top : top + size, left : left + size] = original[top : top + size, left : left + size]
        assert torch.equal(unchanged_outside, original)
        boxes.append((top, left))
    assert len(set(boxes)) > 10, "every sample should draw its own box"


def test_cutout_zero_is_off(images):
    assert torch.equal(cutout(images, 0, generator()), images)


def test_augment_is_reproducible_from_the_seed(images):
    config = AugmentConfig(crop_padding=4, flip=True, cutout=8)
    assert torch.equal(augment(images, config, generator(3)), augment(images, config, generator(3)))
    assert not torch.equal(augment(images, config, generator(3)), augment(images, config, generator(4)))


def test_normalize_uses_cifar_statistics_and_round_trips(images):
    batch = normalize(images)
    assert batch.shape == (64, 3, 32, 32) and batch.dtype == torch.float32
    assert torch.equal(denormalize(batch), images)
    mean_pixel = torch.tensor([round(m * 255) for m in CIFAR10_MEAN], dtype=torch.uint8).expand(1, 32, 32, 3)
    assert normalize(mean_pixel).abs().max() < 0.01
