import pytest
import torch
import torchinfo

from cifar.config import ModelConfig
from cifar.errors import DataError
from cifar.models import build_model, input_normalization, load_trained, save_trained
from generated import save_as_train_would


@pytest.mark.parametrize(
    ("name", "norm", "parameters"),
    [("custom_resnet", "batch", 6_573_130), ("resnet18", "batch", 11_173_962), ("resnet18", "group", 11_173_962)],
)
def test_parameter_count_matches_the_design(name, norm, parameters):
    model = build_model(ModelConfig(name, norm))
    assert torchinfo.summary(model, input_size=(1, 3, 32, 32), verbose=0).total_params == parameters


@pytest.mark.parametrize(("name", "norm"), [("custom_resnet", "batch"), ("resnet18", "batch"), ("resnet18", "group")])
def test_output_is_one_logit_per_class(name, norm):
    model = build_model(ModelConfig(name, norm), num_classes=7).eval()
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 7)


def test_group_norm_variant_really_uses_group_norm():
    model = build_model(ModelConfig("resnet18", "group"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())


def test_saved_model_rebuilds_with_the_same_outputs(tmp_path):
    config = ModelConfig("resnet18", "group")
    model = build_model(config).eval()
    history = [{"epoch": 1, "train_loss": 2.25, "test_accuracy": 0.125}]
    save_trained(tmp_path / "model.pt", model, config, tuple("abcdefghij"), history)
    loaded = load_trained(tmp_path / "model.pt", torch.device("cpu"))
    batch = torch.randn(2, 3, 32, 32)
    assert loaded.classes == tuple("abcdefghij") and loaded.config == config and loaded.history == tuple(history)
    assert not loaded.model.training
    torch.testing.assert_close(loaded.model(batch), model(batch))


def test_reference_resnet18_keeps_layer4_at_8x8_with_the_reference_parameter_count():
    """The GroupNorm reference run's torchinfo summary: 64x32x32 after the stem and layer1,
    then 128x16x16, 256x8x8 and 512x8x8 (layer4's first conv and shortcut at stride 1)."""
    model = build_model(ModelConfig("resnet18", "group", layer4_stride=1))
    summary = torchinfo.summary(model, input_size=(1, 3, 32, 32), verbose=0, depth=1)
    shapes = {layer.var_name: tuple(layer.output_size[1:]) for layer in summary.summary_list if layer.depth == 1}
    assert shapes == {
        "conv": (64, 32, 32),
        "norm": (64, 32, 32),
        "layer1": (64, 32, 32),
        "layer2": (128, 16, 16),
        "layer3": (256, 8, 8),
        "layer4": (512, 8, 8),
        "fc": (10,),
    }
    assert summary.total_params == 11_173_962
    assert model.layer4[0].conv1.weight.numel() == 1_179_648 and model.layer4[0].conv1.stride == (1, 1)
    assert model.layer4[0].shortcut[0].weight.numel() == 131_072


def test_a_model_trained_on_other_input_statistics_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    save_trained(path, build_model(ModelConfig()), ModelConfig(), tuple("abcdefghij"))
    payload = torch.load(path, weights_only=True)
    assert payload["normalization"] == input_normalization()
    payload["normalization"] = {"mean": [0.5] * 3, "std": [0.5] * 3}
    save_as_train_would(payload, path)
    with pytest.raises(DataError) as refused:
        load_trained(path, torch.device("cpu"))
    assert str(refused.value) == (
        f"{path}: trained on images normalised by {{'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]}}, not by the "
        f"loaders' {input_normalization()}; re-create it with `dvc repro train`"
    )


def test_a_model_whose_statistics_were_re_saved_as_tuples_is_loaded(tmp_path):
    """The same values in tuples were refused with a message that showed them equal to the loaders'."""
    path = tmp_path / "model.pt"
    save_trained(path, build_model(ModelConfig()), ModelConfig(), tuple("abcdefghij"))
    payload = torch.load(path, weights_only=True)
    payload["normalization"] = {key: tuple(values) for key, values in payload["normalization"].items()}
    torch.save(payload, path)
    assert load_trained(path, torch.device("cpu")).classes == tuple("abcdefghij")


@pytest.mark.parametrize("history", [{"epoch": 1}, [{"epoch": "1"}], [{"epoch": True}], [[1, 2.5]], "[]"])
def test_a_model_whose_history_is_not_rows_of_numbers_is_refused(tmp_path, history):
    """figures compares each epoch of history.csv with the model's: a history of text ended in a TypeError."""
    path = tmp_path / "model.pt"
    save_trained(path, build_model(ModelConfig()), ModelConfig(), tuple("abcdefghij"))
    payload = torch.load(path, weights_only=True)
    payload["history"] = history
    save_as_train_would(payload, path)
    with pytest.raises(DataError) as refused:
        load_trained(path, torch.device("cpu"))
    assert str(refused.value).startswith(f"{path}: not a model saved by the train stage (history = ")
    assert str(refused.value).endswith("not a list of rows of numbers); re-create it with `dvc repro train`")


def test_a_models_bytes_do_not_depend_on_where_its_history_rows_came_from(tmp_path):
    """A resumed run's history rows come from the checkpoint, each with key strings of its own:
    its model.pt differed in bytes from an uninterrupted run's, and DVC recorded another model."""
    model = build_model(ModelConfig())
    in_one_run = [{"epoch": 1, "test_loss": 2.5}, {"epoch": 2, "test_loss": 1.5}]
    resumed = [{"".join(("ep", "och")): 1, "".join(("test_", "loss")): 2.5}, {"epoch": 2, "test_loss": 1.5}]
    for run, history in (("one-run", in_one_run), ("resumed", resumed)):
        (tmp_path / run).mkdir()
        save_trained(tmp_path / run / "model.pt", model, ModelConfig(), tuple("abcdefghij"), history)
    assert (tmp_path / "one-run/model.pt").read_bytes() == (tmp_path / "resumed/model.pt").read_bytes()


def test_a_model_saved_without_a_history_loads(tmp_path):
    """Models registered before train recorded its history are loaded with `load_trained` (docs/sharing.md)."""
    path = tmp_path / "model.pt"
    save_trained(path, build_model(ModelConfig()), ModelConfig(), tuple("abcdefghij"))
    payload = torch.load(path, weights_only=True)
    del payload["history"], payload["sha256"]
    torch.save(payload, path)
    assert load_trained(path, torch.device("cpu")).history is None
