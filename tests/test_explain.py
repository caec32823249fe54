import copy

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from cifar.config import ModelConfig
from cifar.models import build_model
from cifar.reporting.explain import grad_cam, overlay, resolve_layers
from cifar.training.augment import normalize
from generated import random_split


def test_no_misclassified_images_give_empty_maps_and_overlays():
    model = build_model(ModelConfig()).eval()
    ((_, layer),) = resolve_layers(model, "custom_resnet", ["layer3"])
    (maps,) = grad_cam(model, layer, np.zeros((0, 32, 32, 3), dtype=np.uint8), [[]])
    assert maps.shape == (0, 32, 32)
    assert overlay(np.zeros((0, 32, 32, 3), dtype=np.uint8), maps).shape == (0, 32, 32, 3)


@pytest.mark.parametrize("layer_name", ["layer2", "layer3"])
def test_one_grad_cam_per_layer_gives_each_target_the_maps_a_fresh_one_would(layer_name):
    model = build_model(ModelConfig()).eval()
    ((_, layer),) = resolve_layers(model, "custom_resnet", [layer_name])
    split = random_split(6, 0)
    targets = [split.labels.tolist(), [3] * 6]
    shared = grad_cam(model, layer, split.images, targets)
    batch = normalize(torch.from_numpy(split.images)).contiguous()
    for classes, maps in zip(targets, shared):
        with GradCAM(model=model, target_layers=[layer]) as fresh:
            expected = fresh(input_tensor=batch, targets=[ClassifierOutputTarget(c) for c in classes])
        assert maps.shape == (6, 32, 32) and np.array_equal(maps, expected)
    assert not np.array_equal(*shared)


def test_a_layer_followed_by_an_in_place_relu_gets_the_maps_of_its_own_output():
    """layer2.2, a BatchNorm, is followed by ReLU(inplace=True), which overwrote the output the
    Grad-CAM hook had kept: the maps were those of the ReLU's output."""
    model = build_model(ModelConfig()).eval()
    out_of_place = copy.deepcopy(model)
    for module in out_of_place.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    split = random_split(6, 0)
    ((_, layer),) = resolve_layers(out_of_place, "custom_resnet", ["layer2.2"])
    (expected,) = grad_cam(out_of_place, layer, split.images, [split.labels.tolist()])
    ((_, layer),) = resolve_layers(model, "custom_resnet", ["layer2.2"])
    (maps,) = grad_cam(model, layer, split.images, [split.labels.tolist()])
    assert np.allclose(maps, expected, atol=1e-6)
