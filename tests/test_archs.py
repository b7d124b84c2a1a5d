"""``tasks.get(name, arch=...)``: every image architecture builds a model whose output fits the
task; the default architecture is unchanged; unknown names are a clear error."""
from __future__ import annotations

import pytest
import torch

from lossforge import tasks
from lossforge.training.stacked import supports_batched
from lossforge.tasks import check_output_shape, models


@pytest.mark.parametrize("arch", models.IMAGE_ARCHS)
@pytest.mark.parametrize("shape", [(3, 32), (1, 28), (1, 8)])
def test_image_model_output_shape(arch, shape):
    channels, size = shape
    torch.manual_seed(0)
    model = models.image_model(arch, 10, channels, size, width=8)
    out = model(torch.rand(4, channels, size, size))
    assert out.shape == (4, 10)


@pytest.mark.parametrize("arch", models.IMAGE_ARCHS)
def test_shapes_cls_archs_fit_the_task(arch):
    task = tasks.get("shapes-cls", arch=arch, n_train=20, n_val=10, n_test=10)
    d = task.data()
    assert (len(d.train), len(d.val), len(d.test)) == (20, 10, 10)
    x, y = d.train.x[:5], d.train.y[:5]
    check_output_shape(task, task.make_model()(x), y)
    assert task.arch == arch


def test_default_archs_are_the_previous_models():
    assert tasks.get("shapes-cls").arch == "cnn"
    assert isinstance(tasks.get("shapes-cls").make_model(), torch.nn.Sequential)
    assert tasks.get("fashion-mnist").arch == "glo-cnn"
    assert tasks.get("digits").arch == "digits-cnn"
    # the default shapes-cls model is small_cnn(width=16), parameter for parameter
    ref = models.small_cnn(10, width=16)
    got = tasks.get("shapes-cls").make_model()
    assert [p.shape for p in got.parameters()] == [p.shape for p in ref.parameters()]


@pytest.mark.parametrize("arch", ["digits-cnn", *models.IMAGE_ARCHS])
def test_digits_archs_fit_the_task(arch):
    task = tasks.get("digits", arch=arch)
    d = task.data()
    check_output_shape(task, task.make_model()(d.train.x[:3]), d.train.y[:3])


@pytest.mark.parametrize("arch", ["glo-cnn", *models.IMAGE_ARCHS])
def test_fashion_mnist_archs_build_for_28x28(arch):
    task = tasks.get("fashion-mnist", arch=arch)  # no data needed to build the model
    out = task.make_model()(torch.rand(2, 1, 28, 28))
    check_output_shape(task, out, torch.zeros(2, dtype=torch.long))


def test_resnet_is_residual_and_batchable():
    net = models.TinyResNet(10, width=8)
    assert any(isinstance(m, models._ResBlock) for m in net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert supports_batched(tasks.get("shapes-cls", arch="resnet", n_train=20, n_val=10,
                                      n_test=10))


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(ValueError, match="lenet"):
        tasks.get("shapes-cls", arch="vgg")
    with pytest.raises(ValueError, match="glo-cnn"):
        tasks.get("fashion-mnist", arch="vgg")
    with pytest.raises(ValueError, match="mlp"):
        models.image_model("vgg", 10, 3, 32)
