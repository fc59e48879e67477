"""ImageNet: the folder layout and its errors, the official QCFS ImageNet model layouts, and the
model builders (any number of VGG stages, keyword arguments checked per architecture)."""

import json
import os

import numpy as np
import pytest
import torch

import sjconv
from sjconv.cli import eval_cifar
from sjconv.data import IMAGENET_CLASSES, check_same_classes, display_name, get_dataset, num_classes
from sjconv.errors import ConfigError, SjconvError

CLASSES = ["n01440764", "n01443537", "n01484850"]


def write_image_folder(root, split, classes=CLASSES, per_class=2, size=64, seed=0):
    """``root/split/<class>/*.png``: random RGB images, the layout torchvision's ImageFolder reads."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in classes:
        folder = os.path.join(root, split, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"img{i}.png"))


@pytest.fixture
def imagenet(tmp_path):
    root = tmp_path / "imagenet"
    write_image_folder(str(root), "train")
    write_image_folder(str(root), "val", seed=1)
    return root


def test_image_folder_gives_normalized_224_crops(imagenet):
    test_set = get_dataset("imagenet", str(imagenet), train=False)
    assert len(test_set) == len(CLASSES) * 2 and test_set.classes == CLASSES
    image, label = test_set[len(test_set) - 1]
    assert image.shape == (3, 224, 224) and label == len(CLASSES) - 1
    assert image.min() < -1 and image.max() > 1        # normalized, not in [0, 1]
    train_image, _ = get_dataset("imagenet", str(imagenet), train=True)[0]
    assert train_image.shape == (3, 224, 224)
    assert num_classes("imagenet") == IMAGENET_CLASSES == 1000 and display_name("imagenet") == "ImageNet"


def test_missing_or_malformed_folders_are_one_clear_error(tmp_path, imagenet):
    with pytest.raises(SjconvError, match=r"ImageNet not found in .*expected '.*val' to hold one folder per class"):
        get_dataset("imagenet", str(tmp_path / "nowhere"))
    (tmp_path / "empty" / "val").mkdir(parents=True)
    with pytest.raises(SjconvError, match=r"ImageNet folder '.*val' is malformed .*one folder per class"):
        get_dataset("imagenet", str(tmp_path / "empty"))
    (tmp_path / "noimages" / "val" / "n01440764").mkdir(parents=True)
    with pytest.raises(SjconvError, match="is malformed"):
        get_dataset("imagenet", str(tmp_path / "noimages"))
    with pytest.raises(SjconvError, match="cannot be downloaded"):
        get_dataset("imagenet", str(imagenet), download=True)
    write_image_folder(str(tmp_path / "other"), "val", classes=CLASSES[:2] + ["n09999999"], per_class=1)
    with pytest.raises(SjconvError, match=r"different class folders .*n09999999"):
        check_same_classes(get_dataset("imagenet", str(imagenet), train=True),
                           get_dataset("imagenet", str(tmp_path / "other")))


def test_eval_cli_on_imagenet_layout(tmp_path, imagenet, capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "r20_imagenet.pth"
    torch.save(sjconv.models.resnet20(num_classes=1000, L=4).state_dict(), checkpoint)
    out = tmp_path / "res" / "in.json"
    assert eval_cifar.cli(["--arch", "resnet20", "--dataset", "imagenet", "--checkpoint", str(checkpoint),
                           "--L", "4", "--data-dir", str(imagenet), "-T", "1", "2", "--limit", "2", "--device", "cpu",
                           "--workers", "0", "--no-progress", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split("|")[0].strip() == "ImageNet"
    results = json.loads(out.read_text())
    assert results["dataset"] == "imagenet" and results["num_images"] == 2 and results["world_size"] == 1
    assert eval_cifar.cli(["--arch", "resnet20", "--dataset", "imagenet", "--checkpoint", str(checkpoint),
                           "--data-dir", str(tmp_path), "--device", "cpu", "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ImageNet not found") and "train/ and val/" in err[0]


# The official QCFS repository builds its ImageNet models with num_classes=1000: VGG16 with the
# 512·7·7 head, ResNet18/34 with the CIFAR class (3x3 stride-1 stem, no max-pool).
LAYOUTS = {
    "vgg16": {"layer1.0.weight": (64, 3, 3, 3), "layer1.2.thresh": (1,), "layer5.8.weight": (512, 512, 3, 3),
              "layer5.10.thresh": (1,), "classifier.1.weight": (4096, 512 * 7 * 7), "classifier.2.thresh": (1,),
              "classifier.4.weight": (4096, 4096), "classifier.7.weight": (1000, 4096)},
    "resnet18": {"conv1.0.weight": (64, 3, 3, 3), "conv1.2.thresh": (1,),
                 "conv2_x.1.residual_function.3.weight": (64, 64, 3, 3),
                 "conv3_x.0.shortcut.0.weight": (128, 64, 1, 1), "conv5_x.1.act.thresh": (1,),
                 "fc.weight": (1000, 512)},
    "resnet34": {"conv1.0.weight": (64, 3, 3, 3), "conv3_x.3.residual_function.4.running_mean": (128,),
                 "conv4_x.5.act.thresh": (1,), "conv5_x.2.residual_function.0.weight": (512, 512, 3, 3),
                 "conv5_x.0.shortcut.1.weight": (512,), "fc.weight": (1000, 512)},
}
BLOCKS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}


@pytest.mark.parametrize("arch", sorted(LAYOUTS))
def test_official_imagenet_layouts(arch):
    model = sjconv.models.build(arch, num_classes=1000).eval()
    state = model.state_dict()
    for key, shape in LAYOUTS[arch].items():
        assert tuple(state[key].shape) == shape, key
    if arch in BLOCKS:
        assert [len(getattr(model, f"conv{i}_x")) for i in range(2, 6)] == BLOCKS[arch]
        assert model.conv1[0].stride == (1, 1) and not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    else:
        assert sorted({k.split(".")[0] for k in state}) == ["classifier"] + [f"layer{i}" for i in range(1, 6)]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    assert sjconv.load_checkpoint(sjconv.models.build(arch, num_classes=1000), state)  # round trip, strict


@pytest.mark.parametrize("stages,size", [([[8]], 32), ([[8], [16, 16], [16]], 32), ([[4]] * 6, 64)])
def test_vgg_takes_any_number_of_stages(stages, size):
    model = sjconv.models.VGG(stages, num_classes=5, image_size=size).eval()
    side = size // 2 ** len(stages)
    assert model.classifier[1].in_features == stages[-1][-1] * side * side
    assert model(torch.randn(2, 3, size, size)).shape == (2, 5)
    assert sorted(n for n, _ in model.named_children() if n.startswith("layer")) == \
        [f"layer{i}" for i in range(1, len(stages) + 1)]
    snn = sjconv.convert(model, "qcfs", "m")
    assert sjconv.simulate(snn, torch.randn(2, 3, size, size), 2).shape == (2, 2, 5)
    with pytest.raises(ConfigError, match="too small"):
        sjconv.models.VGG(stages, image_size=2 ** len(stages) - 1)


def test_build_checks_keyword_arguments_per_architecture():
    assert isinstance(sjconv.models.build("resnet18", dropout=0.0), sjconv.models.ResNet)   # neutral: ignored
    assert isinstance(sjconv.models.build("resnet20", imagenet=True, image_size=224), sjconv.models.ResNet)
    assert sjconv.models.build("vgg11", dropout=0.3).layer1[3].p == 0.3
    with pytest.raises(ConfigError, match=r"'resnet18' does not take dropout=0.5; it accepts num_classes, L, thresh"):
        sjconv.models.build("resnet18", dropout=0.5)
    with pytest.raises(ConfigError, match=r"does not take width=3; it accepts .*dropout"):
        sjconv.models.build("vgg16", width=3)
    with pytest.raises(ValueError, match="unknown architecture 'alexnet'"):
        sjconv.models.build("alexnet")
