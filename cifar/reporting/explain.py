"""Grad-CAM heatmaps through pytorch-grad-cam."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from cifar.errors import ConfigError, short_repr
from cifar.reporting.predictions import normalized_batches

# Two depths per model: a middle stage with fine maps and the last with coarse ones.
DEFAULT_LAYERS = {"custom_resnet": ["layer2", "layer3"], "resnet18": ["layer3", "layer4"]}
# Images per Grad-CAM pass, so that memory does not grow with explain.images: the
# activations and gradients of 32 images take about 300 MB (ResNet-9 at layer3 on a 2-core
# CPU, 2026-11-30; one batch of 200 took 1.3 GB).
GRAD_CAM_BATCH_SIZE = 32


def feature_map_layers(model: nn.Module) -> list[str]:
    """Modules whose output is a feature map larger than 1x1, where Grad-CAM can look.

    Found by one hooked forward pass of a blank 32x32 image, in eval mode, so it holds for
    any model and changes no state.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def record_shape(name):
        def hook(module, inputs, output) -> None:  # returning None keeps the output as it is
            shapes[name] = tuple(output.shape)

        return hook

    hooks = [module.register_forward_hook(record_shape(name)) for name, module in model.named_modules() if name]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, 32, 32, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return [name for name, shape in shapes.items() if len(shape) == 4 and shape[-1] > 1]


def resolve_layers(model: nn.Module, model_name: str, names: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    """(name, module) for each configured layer; a name Grad-CAM cannot use is a ConfigError."""
    names = list(names or DEFAULT_LAYERS[model_name])
    valid = feature_map_layers(model)
    for name in names:
        if name not in valid:
            top_level = [n for n in valid if "." not in n]
            nested = next(n for n in valid if "." in n)
            raise ConfigError(
                f"explain.layers: {short_repr(name)} is not a feature-map layer of {model_name}; valid names: "
                f"{', '.join(top_level)}, or a module inside them such as {nested!r}"
            )
    modules = dict(model.named_modules())
    return [(name, modules[name]) for name in names]


def grad_cam(
    model: nn.Module, layer: nn.Module, images: np.ndarray, targets: Sequence[Sequence[int]]
) -> list[np.ndarray]:
    """For each entry of `targets` (a class per image), N x H x W maps in [0, 1] of where
    `layer` sees that class in each of the uint8 N x H x W x C `images`.

    The images are normalised as the loaders do, and go through in batches of
    GRAD_CAM_BATCH_SIZE, so memory does not grow with their number (each map is scaled per
    image, so batching changes no map). One GradCAM, hooked on the layer once, serves every
    batch and target (it keeps no state between calls); its context manager removes the
    hooks when done. The model's in-place ReLUs are made out-of-place, which computes the same:
    one after the hooked layer (a BatchNorm's) overwrote the activations Grad-CAM kept, and
    its maps were off by up to 0.93.
    """
    if len(images) == 0:  # pytorch-grad-cam cannot take an empty batch
        return [np.zeros((0, *images.shape[1:3]), dtype=np.float32) for _ in targets]
    device = next(model.parameters()).device
    targets = [np.asarray(classes) for classes in targets]
    maps: list[list[np.ndarray]] = [[] for _ in targets]
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    model.eval()
    with GradCAM(model=model, target_layers=[layer]) as cam:
        for start, batch in normalized_batches(images, device, GRAD_CAM_BATCH_SIZE):
            for found, classes in zip(maps, targets):
                chosen = classes[start : start + GRAD_CAM_BATCH_SIZE]
                found.append(cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(c)) for c in chosen]))
    return [np.concatenate(found) for found in maps]


def overlay(images: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """uint8 N x H x W x 3 images with the heatmaps blended over them."""
    blended = [
        show_cam_on_image(image.astype(np.float32) / 255, heatmap, use_rgb=True) for image, heatmap in zip(images, maps)
    ]
    return np.stack(blended) if blended else images
