import numpy as np
import torch

from cifar.config import ModelConfig
from cifar.explain import grad_cam, overlay, resolve_layers
from cifar.models import build_model


def test_no_misclassified_images_give_empty_maps_and_overlays():
    model = build_model(ModelConfig()).eval()
    (_, layer), = resolve_layers(model, "custom_resnet", ["layer3"])
    maps = grad_cam(model, layer, torch.zeros(0, 3, 32, 32), [])
    assert maps.shape == (0, 32, 32)
    assert overlay(np.zeros((0, 32, 32, 3), dtype=np.uint8), maps).shape == (0, 32, 32, 3)
