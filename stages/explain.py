"""explain: Grad-CAM of misclassified test images, for the correct and the predicted class (with
none misclassified, of the least confident correct predictions, for their class)."""

if not __package__:  # `python stages/explain.py` leaves the repository root, and cifar/, off sys.path
    raise SystemExit("error: run it from the repository root as `python -m stages.explain` (or `dvc repro explain`)")

import logging

from cifar.atomic import atomic_path, save_figure
from cifar.cli import run_stage
from cifar.config import load_params
from cifar.dataset import check_same_classes, load_split
from cifar.models import load_trained
from cifar.reporting.explain import grad_cam, overlay, resolve_layers
from cifar.reporting.plots import image_grid
from cifar.reporting.predictions import check_the_models_predictions, first_misclassified, load_predictions
from cifar.runtime import resolve_device
from stages import paths

log = logging.getLogger("explain")


def main() -> None:
    params = load_params(paths.PARAMS)
    device = resolve_device(params.train.device)
    trained = load_trained(paths.MODEL, device)
    layers = resolve_layers(trained.model, trained.config.name, params.explain.layers)
    test = load_split(paths.DATA, "test")
    check_same_classes(
        trained.classes, paths.MODEL, test, f"{paths.DATA}/test.npz", "re-run the pipeline with `dvc repro`"
    )
    predictions = load_predictions(paths.PREDICTIONS, paths.PREDICTIONS_DIGEST, test, paths.DATA)
    wrong = first_misclassified(predictions, params.explain.images)
    names = test.classes
    if len(wrong):
        if len(wrong) < params.explain.images:
            log.info(
                "only %d misclassified test images, fewer than explain.images = %d", len(wrong), params.explain.images
            )
        chosen, kind = wrong, "misclassified test images"
        titles = [f"true: {names[t]}\npred: {names[p]}" for t, p in zip(wrong["label"], wrong["predicted"])]
        targets = (("correct", "label"), ("predicted", "predicted"))
    else:
        chosen, kind = predictions.nsmallest(params.explain.images, "confidence"), "least confident correct predictions"
        log.info("no misclassified test images: explaining the %d %s instead", len(chosen), kind)
        titles = [f"{names[t]}\nconfidence {c:.2f}" for t, c in zip(chosen["label"], chosen["confidence"])]
        targets = (("correct", "label"),)  # the predicted class is the same one
    grids = tuple(f"{layer_name}_{target}.png" for layer_name, _ in layers for target, _ in targets)
    paths.refuse_files_dvc_would_ignore("gradcam_images", grids, "explain.layers")
    pixels = test.images[chosen["index"].to_numpy()]
    check_the_models_predictions(trained.model, chosen, test, paths.PREDICTIONS, paths.MODEL)
    with atomic_path(paths.GRADCAM_IMAGES) as folder:
        folder.mkdir()
        for layer_name, layer in layers:
            maps_per_target = grad_cam(trained.model, layer, pixels, [chosen[column] for _, column in targets])
            for (target, _), maps in zip(targets, maps_per_target):
                save_figure(
                    folder / f"{layer_name}_{target}.png",
                    image_grid(
                        overlay(pixels, maps),
                        titles,
                        columns=5,
                        suptitle=f"Grad-CAM at {layer_name} for the {target} class of {kind} ({trained.config.name})",
                    ),
                )
    log.info(
        "wrote Grad-CAM grids of %d %s at %s to %s",
        len(chosen),
        kind,
        ", ".join(name for name, _ in layers),
        paths.GRADCAM_IMAGES,
    )


if __name__ == "__main__":
    run_stage(main, **paths.as_declared("explain"))
