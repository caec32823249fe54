import io

import numpy as np
import pandas as pd
import pytest

from cifar.reporting.plots import confusion_figure, lr_finder_figure, misclassified_figure, per_class_figure
from cifar.reporting.predictions import first_misclassified

CLASSES = tuple(f"class_{i}" for i in range(10))


def shown_images(figure):
    return sum(1 for axis in figure.axes if axis.images)


@pytest.mark.parametrize(("errors", "limit", "expected"), [(30, 20, 20), (7, 20, 7), (0, 20, 0)])
def test_gallery_shows_the_configured_count_or_every_error(errors, limit, expected):
    labels = np.arange(100) % 10
    predicted = labels.copy()
    predicted[:errors] = (predicted[:errors] + 1) % 10
    images = np.zeros((100, 32, 32, 3), dtype=np.uint8)
    predictions = pd.DataFrame({"index": range(100), "label": labels, "predicted": predicted, "confidence": 0.5})
    gallery = first_misclassified(predictions, limit)
    figure = misclassified_figure(
        images[gallery["index"]], gallery["label"], gallery["predicted"], gallery["confidence"], CLASSES, errors
    )
    assert len(gallery) == expected == shown_images(figure)
    assert figure.get_suptitle() == f"first {expected} misclassified test images (of {errors})"
    titles = [axis.get_title() for axis in figure.axes if axis.images]
    if expected:
        assert titles[0] == "true: class_0\npred: class_1 (50%)"


def test_class_names_are_drawn_as_written_not_as_tex():
    """A class named `$\\bogus$` ended figures in matplotlib's ParseFatalException: `$...$` is TeX to it."""
    classes = (r"$\bogus$", "$x$", *CLASSES[2:])
    per_class = pd.DataFrame({"class": classes, "accuracy": 0.5})
    for figure in (per_class_figure(per_class), confusion_figure(np.arange(10), np.arange(10), classes)):
        figure.savefig(io.BytesIO(), format="png")
    assert [label.get_text() for label in figure.axes[0].get_xticklabels()][:2] == [r"$\bogus$", "$x$"]


def test_the_range_tests_log_axis_is_labelled_in_plain_numbers():
    """With TeX off for class names, the log axis's own labels were drawn as their TeX source,
    `$\\mathdefault{10^{-7}}$`, overlapping into one unreadable line."""
    lrs = np.geomspace(1e-7, 0.1, 30)
    figure = lr_finder_figure(lrs, 2.3 - np.linspace(0, 1, 30) ** 2, 1e-3, "min_loss_div10", None, "adam")
    figure.savefig(io.BytesIO(), format="png")
    labels = [label.get_text() for label in figure.axes[0].get_xticklabels() if label.get_text()]
    assert "1e\u221207" in labels and not any("$" in label for label in labels), labels


def test_the_range_test_marks_a_max_lr_given_in_params_as_the_one_trained_at():
    """train.max_lr 0.002: lr_find's pick was marked "chosen max_lr", and nothing said training ran at 0.002."""
    lrs = np.geomspace(1e-7, 0.1, 30)
    figure = lr_finder_figure(lrs, 2.3 - np.linspace(0, 1, 30) ** 2, 1e-3, "min_loss_div10", None, "adam", 0.002)
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "lr_find's pick = 1.00e-03 (min_loss_div10)" in labels and "trained at train.max_lr = 2.00e-03" in labels


def test_a_confusion_matrix_of_many_classes_draws_no_count_per_cell():
    """1,000 classes drew a million texts: figures passed 3 GB, then crashed."""
    classes = tuple(f"c{n}" for n in range(40))
    figure = confusion_figure(np.arange(40), np.arange(40), classes)
    assert not figure.axes[0].texts
    assert len(confusion_figure(np.arange(10), np.arange(10), CLASSES).axes[0].texts) == 100
