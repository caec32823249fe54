import pytest
import torch

from cifar.config import AugmentConfig
from cifar.training.augment import (
    CIFAR10_MEAN,
    _channel_constants,
    augment,
    cutout,
    denormalize,
    normalize,
    random_crop,
    random_flip,
)


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


@pytest.mark.parametrize("padding", [1, 4])
def test_each_crop_is_a_window_within_the_padding_and_every_window_occurs(images, padding):
    cropped = random_crop(images, padding, generator())
    assert cropped.shape == images.shape and cropped.dtype == torch.uint8
    offsets = [crop_offset(original, crop, padding) for original, crop in zip(images, cropped)]
    assert all(offset is not None for offset in offsets), "a crop is not a window of the padded image"
    every_offset = set(range(2 * padding + 1))
    assert {row for row, _ in offsets} == every_offset and {col for _, col in offsets} == every_offset
    assert len(set(offsets)) > 2 * padding + 1, "row and column offsets should be drawn apart"


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


@pytest.mark.parametrize("size", [1, 8])
def test_cutout_box_has_the_configured_size_and_moves_between_samples(images, size):
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


def test_cutout_boxes_land_anywhere_they_fit_edges_included():
    height, width, size = 6, 7, 3
    black = torch.zeros(300, height, width, 3, dtype=torch.uint8)
    boxes = cutout(black, size, generator()).ne(0).all(-1)
    rows, cols = boxes.any(2), boxes.any(1)
    assert (rows.sum(1) == size).all() and (cols.sum(1) == size).all()
    assert set(rows.int().argmax(1).tolist()) == set(range(height - size + 1))
    assert set(cols.int().argmax(1).tolist()) == set(range(width - size + 1))


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


def test_denormalize_saturates_values_beyond_the_image_range():
    """Normalised values outside what an image can hold become 0 or 255, never wrap around."""
    batch = torch.tensor([-50.0, -3.0, 3.0, 50.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    pixels = denormalize(batch)
    assert pixels.dtype == torch.uint8 and pixels.shape == (1, 2, 2, 3)
    assert pixels[0, :, :, 0].tolist() == [[0, 0], [255, 255]]


def test_augmentation_stays_on_the_images_device_whatever_torchs_default_device(images):
    """Every tensor is made on the images' device (a GPU run's images sit on the GPU while
    torch's default device is the CPU): here the images are on the CPU and the default is meta."""
    config = AugmentConfig(crop_padding=4, flip=True, cutout=8)

    def pipeline():
        augmented = augment(images, config, generator(5))
        return augmented, normalize(augmented), denormalize(normalize(augmented))

    # As in a fresh process, the per-device constants are first built for this batch.
    _channel_constants.cache_clear()
    with torch.device("meta"):
        on_meta_default = pipeline()
    expected = pipeline()
    for got, wanted in zip(on_meta_default, expected):
        assert got.device == images.device and torch.equal(got, wanted)
