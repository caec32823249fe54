import torch

from cifar.config import AugmentConfig, TrainConfig
from cifar.dataset import Split
from cifar.training.augment import augment, denormalize, normalize
from cifar.training.loader import DeviceLoader
from generated import CPU, cpu_recipe, random_split


def numbered_split(size):
    """Images whose first pixel holds their index, so a batch tells which images it holds."""
    split = random_split(size, 0)
    split.images[:, 0, 0, 0] = range(size)
    return Split(split.images, split.labels, split.classes)


def image_numbers(batch):
    """The indices of numbered_split's images in a normalised, unaugmented batch."""
    return denormalize(batch)[:, 0, 0, 0].tolist()


def batches(loader):
    return [(images.clone(), labels.clone()) for images, labels in loader]


def same_batches(first, second):
    return len(first) == len(second) and all(
        torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
        for (a_images, a_labels), (b_images, b_labels) in zip(first, second)
    )


def test_a_batch_as_large_as_the_training_set_makes_one_full_batch_per_epoch():
    loader = DeviceLoader(numbered_split(16), 16, CPU, shuffle=True)
    assert len(loader) == 1 and loader.images_per_epoch == 16
    ((images, _),) = batches(loader)
    assert sorted(image_numbers(images)) == list(range(16))


def test_an_evaluation_loader_keeps_every_image_in_order_with_a_last_partial_batch():
    split = numbered_split(70)
    loader = DeviceLoader(split, 16, CPU)
    assert len(loader) == 5 and loader.images_per_epoch == 70
    epoch = batches(loader)
    assert [image_numbers(images) for images, _ in epoch] == [
        list(range(start, min(start + 16, 70))) for start in range(0, 70, 16)
    ]
    assert torch.equal(torch.cat([labels for _, labels in epoch]), torch.from_numpy(split.labels))


def test_each_shuffled_epoch_is_a_new_order_drawn_from_the_seed():
    split = numbered_split(64)
    loader = DeviceLoader(split, 16, CPU, shuffle=True, seed=3)
    first, second = batches(loader), batches(loader)
    for epoch in (first, second):
        numbers = [number for images, _ in epoch for number in image_numbers(images)]
        assert sorted(numbers) == list(range(64))
        assert torch.equal(torch.cat([labels for _, labels in epoch]), torch.from_numpy(split.labels)[numbers])
    assert image_numbers(first[0][0]) != image_numbers(second[0][0])
    again = DeviceLoader(split, 16, CPU, shuffle=True, seed=3)
    assert same_batches(batches(again), first) and same_batches(batches(again), second)
    assert not same_batches(batches(DeviceLoader(split, 16, CPU, shuffle=True, seed=4)), first)
    assert same_batches(
        batches(DeviceLoader(split, 16, CPU, shuffle=True)), batches(DeviceLoader(split, 16, CPU, shuffle=True, seed=0))
    )


def test_batches_are_augmented_with_the_loaders_seeded_generator():
    split, config = random_split(40, 0), AugmentConfig(crop_padding=4, flip=True, cutout=8)
    generator = torch.Generator().manual_seed(7)
    images = torch.from_numpy(split.images)
    expected = [normalize(augment(images[start : start + 16], config, generator)) for start in range(0, 40, 16)]
    epoch = batches(DeviceLoader(split, 16, CPU, augmentation=config, seed=7))
    assert len(epoch) == len(expected)
    assert all(torch.equal(batch, wanted) for (batch, _), wanted in zip(epoch, expected))


def test_the_recipes_training_loader_is_the_shuffled_augmented_loader_of_the_params():
    recipe = cpu_recipe(
        seed=11, train=TrainConfig(batch_size=16), augment=AugmentConfig(crop_padding=2, flip=False, cutout=4)
    )
    split = random_split(70, 0)
    loader = recipe.train_loader(split)
    assert len(loader) == 4 and loader.images_per_epoch == 64
    explicit = DeviceLoader(split, 16, CPU, augmentation=recipe.params.augment, shuffle=True, seed=11)
    assert same_batches(batches(loader), batches(explicit))


def test_cpu_batches_keep_the_classic_memory_layout():
    for loader in (
        DeviceLoader(random_split(40, 0), 16, CPU, shuffle=True),
        DeviceLoader(random_split(40, 0), 16, CPU),
    ):
        assert all(images.is_contiguous() for images, _ in loader)


def test_batches_stay_on_the_loaders_device_whatever_torchs_default_device():
    """Every tensor is made on the data's device (a GPU run's data sits on the GPU while
    torch's default device is the CPU): here the data is on the CPU and the default is meta."""
    split, config = random_split(40, 0), AugmentConfig()

    def epochs():
        return [
            batches(DeviceLoader(split, 16, CPU, augmentation=config, shuffle=True, seed=1)),
            batches(DeviceLoader(split, 16, CPU)),
        ]

    expected = epochs()
    with torch.device("meta"):
        on_meta_default = epochs()
    for got, wanted in zip(on_meta_default, expected):
        assert all(images.device == CPU and labels.device == CPU for images, labels in got)
        assert same_batches(got, wanted)
