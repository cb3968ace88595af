"""Tests of the augmentation components (``pctkit.components.augmentations``): the
contract (types, seeds, no global random state, picklable), the released code's strong
and weak streams, and ``scale_crop_flip``'s bit-identity with pctkit's old augmentation."""

from __future__ import annotations

import hashlib
import pickle
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pctkit import registry
from pctkit.components.augmentations._random_ops import JOINT_OPS, PHOTOMETRIC_OPS, RandomOpsCrop
from pctkit.components.augmentations.random_ops import crop, random_ops_crop
from pctkit.components.augmentations.scale_crop_flip import scale_crop_flip
from pctkit.components.contracts import ParameterError
from pctkit.constants import IGNORE_INDEX

VALUE_STEP = 12
"""Image value per label value in :func:`encoded_pair` (labels 0..20 -> 0..240)."""

# Geometry only: no photometric op, so that the image keeps encoding its mask.
GEOMETRY_ONLY: dict[str, Any] = {
    "scale_range": (0.5, 2.0),
    "shear_range": (-0.3, 0.3),
    "rotation_range": (-45, 45),
}


def random_pair(height: int, width: int, seed: int = 0, classes: int = 21) -> tuple[Tensor, Tensor]:
    """A noise image and a noise mask (some 255) from numpy's stable PCG64 stream."""
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))
    mask = torch.from_numpy(rng.integers(0, classes, (height, width))).long()
    mask[mask == classes - 1] = IGNORE_INDEX
    return image, mask


def encoded_pair(height: int = 120, width: int = 160, block: int = 20) -> tuple[Tensor, Tensor]:
    """A mask of square blocks with labels differing left/right and top/bottom, and an
    image whose three channels hold ``label * VALUE_STEP``: the image encodes its mask."""
    rows = torch.arange(height)[:, None] // block
    columns = torch.arange(width)[None, :] // block
    mask = (rows * 5 + columns * 3) % 21
    image = (mask * VALUE_STEP).to(torch.uint8).expand(3, height, width).clone()
    return image, mask.long()


def interior(mask: Tensor, radius: int) -> Tensor:
    """Pixels whose whole ``(2 radius + 1)``-square neighbourhood has one label (not 255):
    away from label edges, where resampling blends two blocks or the fill. Radius 3:
    bicubic upscaling (no antialiasing, as the released code) rings for two pixels."""
    framed = F.pad(mask[None, None].float(), [radius] * 4, value=IGNORE_INDEX)
    size = 2 * radius + 1
    highest = F.max_pool2d(framed, size, stride=1)
    lowest = -F.max_pool2d(-framed, size, stride=1)
    return ((highest == lowest) & (mask[None, None] != IGNORE_INDEX))[0, 0]


def digest(image: Tensor, mask: Tensor) -> str:
    """sha256 of shapes, dtypes and bytes of an augmented pair."""
    hasher = hashlib.sha256()
    for tensor in (image, mask):
        hasher.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        hasher.update(tensor.contiguous().numpy().tobytes())
    return hasher.hexdigest()


def every_augmentation() -> dict[str, Any]:
    return {
        "scale_crop_flip": scale_crop_flip(
            scale_range=(0.5, 2.0), crop_size=48, horizontal_flip=True, color_jitter=0.4, rotation=20.0
        ),
        "random_ops_crop": random_ops_crop(crop_size=48),
        "crop": crop(crop_size=48),
    }


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", ["scale_crop_flip", "random_ops_crop", "crop"])
def test_types_sizes_and_crop_size_attribute(name: str) -> None:
    augmentation = every_augmentation()[name]
    assert augmentation.crop_size == 48
    for height, width in [(30, 70), (90, 40), (48, 48)]:
        image, mask = random_pair(height, width)
        for seed in range(6):
            out_image, out_mask = augmentation(image, mask, seed)
            assert type(out_image) is Tensor and type(out_mask) is Tensor  # no tv_tensors leak
            assert out_image.dtype == torch.uint8 and out_mask.dtype == torch.int64
            assert out_image.shape == (3, 48, 48) and out_mask.shape == (48, 48)


@pytest.mark.parametrize("name", ["scale_crop_flip", "random_ops_crop", "crop"])
def test_a_seed_decides_everything(name: str) -> None:
    augmentation = every_augmentation()[name]
    image, mask = random_pair(50, 64)
    outputs = [augmentation(image, mask, seed) for seed in (3, 3, 2**63 - 1, 4)]
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    assert not torch.equal(outputs[0][0], outputs[3][0])  # another seed, another sample
    assert outputs[2][0].shape == (3, 48, 48)  # the largest seed works


def _seed_globals(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def test_no_global_random_state_is_read_or_changed() -> None:
    image, mask = random_pair(40, 56)
    augmentations = every_augmentation()

    def run_all() -> list[Tensor]:
        return [tensor for aug in augmentations.values() for s in range(8) for tensor in aug(image, mask, s)]

    _seed_globals(1)
    states = (torch.get_rng_state(), pickle.dumps(np.random.get_state()), random.getstate())
    first = run_all()
    assert torch.equal(torch.get_rng_state(), states[0])
    assert pickle.dumps(np.random.get_state()) == states[1]
    assert random.getstate() == states[2]
    _seed_globals(2)
    second = run_all()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("name", ["scale_crop_flip", "random_ops_crop", "crop"])
def test_picklable_and_same_in_dataloader_workers(name: str) -> None:
    augmentation = every_augmentation()[name]
    restored = pickle.loads(pickle.dumps(augmentation))
    assert restored == augmentation
    image, mask = random_pair(40, 56)

    class Samples(torch.utils.data.Dataset[tuple[Tensor, Tensor]]):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, seed: int) -> tuple[Tensor, Tensor]:
            return restored(image, mask, seed)

    loader = torch.utils.data.DataLoader(Samples(), batch_size=None, num_workers=2)
    for seed, (out_image, out_mask) in enumerate(loader):
        expected_image, expected_mask = augmentation(image, mask, seed)
        assert torch.equal(out_image, expected_image) and torch.equal(out_mask, expected_mask)


@pytest.mark.parametrize("name", ["scale_crop_flip", "random_ops_crop", "crop"])
def test_inputs_outside_the_contract_are_refused(name: str) -> None:
    augmentation = every_augmentation()[name]
    image, mask = random_pair(20, 20)
    with pytest.raises(TypeError, match="uint8"):
        augmentation(image.float(), mask, 0)
    with pytest.raises(TypeError, match="int64"):
        augmentation(image, mask.to(torch.uint8), 0)
    with pytest.raises(ValueError, match="seed"):
        augmentation(image, mask, -1)


def test_factories_are_valid_components_and_light() -> None:
    factories: list[tuple[str, Callable[..., Any]]] = [
        ("scale_crop_flip", scale_crop_flip),
        ("random_ops_crop", random_ops_crop),
        ("crop", crop),
    ]
    for name, factory in factories:
        model = registry.parameters_model("augmentations", name, factory)
        assert all(field.description for field in model.model_fields.values()), name
        assert model().model_dump() is not None  # every parameter has a default
    code = (
        "import sys\n"
        "import pctkit.components.augmentations.random_ops\n"
        "import pctkit.components.augmentations.scale_crop_flip\n"
        "import pctkit.components.postprocess.dense_crf\n"
        "heavy = [m for m in ('torch', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- scale_crop_flip

GOLDEN_INPUT = (37, 53)
GOLDEN_SETTINGS: dict[str, dict[str, Any]] = {
    "crop_flip": {"crop_size": 48, "horizontal_flip": True},
    "voc_recipe": {"scale_range": (0.5, 2.0), "crop_size": 48, "horizontal_flip": True},
    "everything": {
        "scale_range": (0.5, 2.0),
        "crop_size": 32,
        "horizontal_flip": True,
        "color_jitter": 0.4,
        "gaussian_blur": 1.0,
        "rotation": 30.0,
    },
}
GOLDEN_SEEDS = (0, 1, 2**63 - 1)
GOLDEN_DIGESTS: dict[tuple[str, int], str] = {
    ("crop_flip", 0): "cc03427c5aed87e14257ef32ab422a1b7e6455cef05b0446128c807a469cdc40",
    ("crop_flip", 1): "11b7cbbeeb66536ab7729c76776a452f8b54bf670627de6cbe94ff4f3c0d2374",
    ("crop_flip", 2**63 - 1): "d1bc3716f87519981b1d5a173a525bc9e17015c0f7e7715d0f3e907938c003f5",
    ("everything", 0): "ec7b7e07448bd2d3b1a58c608a9da1276ca24299dd2f7623d6136545432d676e",
    ("everything", 1): "c51e62c68ed608847ff5ebcd0440dcea083c9c566bec9aa4538886366b8f842c",
    ("everything", 2**63 - 1): "7af0ca560cba3bb6f68c79f9a2c3426acd7161d960e91a0bbdee1a153149c560",
    ("voc_recipe", 0): "ab80d3c5005427da699b4583771fcf40d4ae5d84c0585acb3e405d9da4b01a77",
    ("voc_recipe", 1): "105e33bb17b5696d61763978240858e809e6c76925a47ab086de322686a6e923",
    ("voc_recipe", 2**63 - 1): "4dcfabf4376d0011fcfa0df4bb098126a4ea11e904583a22c9b1e8aa5047b6a3",
}
"""Computed once with pctkit's old ``pctkit.engine.data.augment(image, mask, settings,
numpy.random.default_rng(seed))`` on ``random_pair(37, 53)``: ``scale_crop_flip`` must
reproduce it bit for bit (old runs resume and reproduce)."""


@pytest.mark.parametrize("setting", sorted(GOLDEN_SETTINGS))
@pytest.mark.parametrize("seed", GOLDEN_SEEDS)
def test_scale_crop_flip_is_bit_identical_to_the_old_augmentation(setting: str, seed: int) -> None:
    image, mask = random_pair(*GOLDEN_INPUT)
    out_image, out_mask = scale_crop_flip(**GOLDEN_SETTINGS[setting])(image, mask, seed)
    assert digest(out_image, out_mask) == GOLDEN_DIGESTS[(setting, seed)]


def test_scale_crop_flip_defaults_change_nothing() -> None:
    image, mask = random_pair(30, 40)
    augmentation = scale_crop_flip()
    assert augmentation.crop_size == 0
    out_image, out_mask = augmentation(image, mask, 5)
    assert torch.equal(out_image, image) and torch.equal(out_mask, mask)


def test_scale_crop_flip_pads_with_black_at_the_bottom_right() -> None:
    image = torch.full((3, 20, 30), 200, dtype=torch.uint8)
    mask = torch.ones(20, 30, dtype=torch.long)
    out_image, out_mask = scale_crop_flip(crop_size=40)(image, mask, 0)
    assert torch.equal(out_image[:, :20, :30], image) and torch.equal(out_mask[:20, :30], mask)
    assert (out_image[:, 20:] == 0).all() and (out_image[:, :, 30:] == 0).all()
    assert (out_mask[20:] == IGNORE_INDEX).all() and (out_mask[:, 30:] == IGNORE_INDEX).all()


@pytest.mark.parametrize(
    ("arguments", "parameter"),
    [
        ({"scale_range": (2.0, 0.5)}, "scale_range"),
        ({"scale_range": (0.0, 1.0)}, "scale_range"),
        ({"crop_size": -1}, "crop_size"),
        ({"color_jitter": 1.5}, "color_jitter"),
        ({"gaussian_blur": -0.1}, "gaussian_blur"),
        ({"rotation": 200.0}, "rotation"),
    ],
)
def test_scale_crop_flip_rejects_what_the_recipe_rejected(arguments: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ParameterError) as caught:
        scale_crop_flip(**arguments)
    assert caught.value.parameter == parameter


# --------------------------------------------------------------------------- random_ops_crop


def test_operation_counts_follow_the_released_draw() -> None:
    augmentation = random_ops_crop()
    counts: Counter[int] = Counter()
    photometric: Counter[str] = Counter()
    joint: Counter[str] = Counter()
    seeds = 3000
    for seed in range(seeds):
        image_ops, joint_ops = augmentation.operations(seed)
        assert len(image_ops) + len(joint_ops) == 2
        counts[len(image_ops)] += 1
        photometric.update(image_ops)
        joint.update(joint_ops)
    # k uniform over {0, 1, 2}: 1000 each, +-4.5 standard deviations (26 each).
    assert all(abs(counts[k] - seeds / 3) < 120 for k in range(3)), counts
    assert set(photometric) == set(PHOTOMETRIC_OPS) and set(joint) == set(JOINT_OPS)
    # Drawn with replacement and uniformly: every op near its share.
    for table in (photometric, joint):
        share = sum(table.values()) / len(table)
        assert all(abs(count - share) < 0.2 * share for count in table.values()), table


def test_num_ops_sets_the_number_of_operations() -> None:
    for num_ops in (0, 1, 3):
        augmentation = random_ops_crop(num_ops=num_ops)
        lengths = {sum(map(len, augmentation.operations(seed))) for seed in range(50)}
        assert lengths == {num_ops}
    image, mask = random_pair(48, 48)
    unchanged = random_ops_crop(num_ops=0, crop_size=0)
    assert all(torch.equal(unchanged(image, mask, seed)[0], image) for seed in range(5))


def _seed_with_operations(
    augmentation: RandomOpsCrop, wanted: tuple[tuple[str, ...], tuple[str, ...]]
) -> list[int]:
    return [seed for seed in range(4000) if augmentation.operations(seed) == wanted]


@pytest.mark.parametrize("name", PHOTOMETRIC_OPS)
def test_every_photometric_op_is_reachable_and_touches_the_image_only(name: str) -> None:
    augmentation = random_ops_crop(num_ops=1, crop_size=0)
    seeds = _seed_with_operations(augmentation, ((name,), ()))[:4]
    assert seeds, f"{name} never drawn"
    image, mask = random_pair(32, 40)
    changed = 0
    for seed in seeds:
        out_image, out_mask = augmentation(image, mask, seed)
        assert torch.equal(out_mask, mask)
        changed += not torch.equal(out_image, image)
    assert changed  # e.g. posterize keeping 8 bits is the identity, but not every time


@pytest.mark.parametrize("name", JOINT_OPS)
def test_every_joint_op_is_reachable_and_moves_image_and_mask_together(name: str) -> None:
    augmentation = random_ops_crop(num_ops=1, crop_size=0, **GEOMETRY_ONLY)
    seeds = _seed_with_operations(augmentation, ((), (name,)))[:6]
    assert seeds, f"{name} never drawn"
    image, mask = encoded_pair()
    moved = 0
    for seed in seeds:
        out_image, out_mask = augmentation(image, mask, seed)
        moved += out_mask.shape != mask.shape or not torch.equal(out_mask, mask)
        # Away from label edges the image still encodes the mask it travelled with.
        checked = interior(out_mask, radius=3)
        assert checked.sum() > 30
        expected = out_mask[checked].float() * VALUE_STEP
        assert torch.allclose(out_image[0][checked].float(), expected, atol=8.0)
    assert moved


def test_image_and_mask_move_together_through_ops_and_crop() -> None:
    augmentation = random_ops_crop(crop_size=96, **GEOMETRY_ONLY)
    image, mask = encoded_pair()
    geometric_seeds = [s for s in range(200) if not augmentation.operations(s)[0]][:10]
    for seed in geometric_seeds:
        out_image, out_mask = augmentation(image, mask, seed)
        checked = interior(out_mask, radius=3)
        expected = out_mask[checked].float() * VALUE_STEP
        for channel in out_image:
            assert torch.allclose(channel[checked].float(), expected, atol=8.0)


def test_a_mismatch_would_be_caught() -> None:
    """The check above is sharp: a mask flipped on its own disagrees with its image."""
    image, mask = encoded_pair()
    flipped = mask.flip(-1)
    checked = interior(flipped, radius=3)
    disagree = (image[0][checked].float() - flipped[checked].float() * VALUE_STEP).abs() > 8.0
    assert disagree.float().mean() > 0.3


@pytest.mark.parametrize("seed", range(12))
def test_masks_keep_their_classes_or_ignore(seed: int) -> None:
    image, mask = random_pair(45, 61, seed=seed, classes=7)
    out_mask = random_ops_crop(crop_size=64)(image, mask, seed)[1]
    allowed = set(mask.unique().tolist()) | {IGNORE_INDEX}
    assert set(out_mask.unique().tolist()) <= allowed


def test_no_flip_when_disabled() -> None:
    # Every operation but the flip is the identity here, so a changed mask is a flip.
    identity: dict[str, Any] = {
        "scale_range": (1.0, 1.0),
        "shear_range": (0.0, 0.0),
        "rotation_range": (0, 0),
        "crop_size": 0,
    }
    image, mask = random_pair(24, 31)
    mirrored = mask.flip(-1)
    with_flips = random_ops_crop(horizontal_flip=True, **identity)
    without = random_ops_crop(horizontal_flip=False, **identity)
    assert "horizontal_flip" not in without.joint_ops
    flips = [torch.equal(with_flips(image, mask, s)[1], mirrored) for s in range(60)]
    assert any(flips)  # the control: the flip happens when enabled
    for seed in range(60):
        out_mask = without(image, mask, seed)[1]
        assert torch.equal(out_mask, mask)


def test_released_crop_places_a_small_image_at_a_random_offset_with_mean_fill() -> None:
    image = torch.full((3, 20, 30), 200, dtype=torch.uint8)
    mask = torch.ones(20, 30, dtype=torch.long)
    offsets = set()
    for augmentation in (crop(crop_size=40), random_ops_crop(crop_size=40, num_ops=0)):
        for seed in range(20):
            out_image, out_mask = augmentation(image, mask, seed)
            labelled = (out_mask == 1).nonzero()
            top, left = labelled.min(0).values.tolist()
            assert (out_mask == 1).sum() == 20 * 30  # the whole image is inside the window
            assert (out_image[:, top : top + 20, left : left + 30] == 200).all()
            outside = out_mask == IGNORE_INDEX
            assert outside.sum() == 40 * 40 - 20 * 30
            assert torch.equal(out_image[:, outside][:, 0], torch.tensor([124, 116, 104], dtype=torch.uint8))
            offsets.add((top, left))
    assert len(offsets) > 5


def test_crop_of_a_large_image_is_a_window_of_it() -> None:
    image, mask = random_pair(70, 90)
    out_image, out_mask = crop(crop_size=32)(image, mask, 11)
    windows = image.unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 39, 59, 32, 32)
    matches = (windows == out_image[:, None, None]).flatten(3).all(-1).all(0).nonzero()
    assert len(matches) == 1
    top, left = matches[0].tolist()
    assert torch.equal(out_mask, mask[top : top + 32, left : left + 32])


def test_crop_size_zero_is_the_identity() -> None:
    image, mask = random_pair(33, 17)
    augmentation = crop(crop_size=0)
    assert augmentation.crop_size == 0
    out_image, out_mask = augmentation(image, mask, 3)
    assert torch.equal(out_image, image) and torch.equal(out_mask, mask)


def test_fill_is_a_parameter() -> None:
    image, mask = random_pair(10, 10)[0], torch.zeros(10, 10, dtype=torch.long)
    out_image, out_mask = crop(crop_size=16, fill=(1, 2, 3))(image, mask, 0)
    padded = out_mask == IGNORE_INDEX
    assert padded.any()
    assert torch.equal(out_image[:, padded].unique(dim=1), torch.tensor([[1], [2], [3]], dtype=torch.uint8))


@pytest.mark.parametrize(
    ("arguments", "parameter"),
    [
        ({"num_ops": -1}, "num_ops"),
        ({"crop_size": -5}, "crop_size"),
        ({"brightness_range": (1.5, 0.5)}, "brightness_range"),
        ({"invert_range": (-0.5, 1.0)}, "invert_range"),
        ({"posterize_bits": (0, 8)}, "posterize_bits"),
        ({"solarize_range": (0.0, 2.0)}, "solarize_range"),
        ({"scale_range": (0.0, 2.0)}, "scale_range"),
        ({"shear_range": (-1.0, 0.3)}, "shear_range"),
        ({"rotation_range": (10, -10)}, "rotation_range"),
        ({"fill": (0, 0, 300)}, "fill"),
    ],
)
def test_random_ops_crop_names_the_bad_parameter(arguments: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ParameterError) as caught:
        random_ops_crop(**arguments)
    assert caught.value.parameter == parameter


@pytest.mark.parametrize("weight", [0.3, 0.7, 1.3])
def test_photometric_ops_match_the_released_pil_calls(weight: float) -> None:
    """Each op equals, within one grey level, the PIL call of the released transform.py
    (enhance(factor), or Image.blend(op(image), image, weight))."""
    from PIL import Image, ImageEnhance, ImageOps

    from pctkit.components.augmentations._random_ops import _PHOTOMETRIC

    image = random_pair(48, 64, seed=5)[0]
    picture = Image.fromarray(image.permute(1, 2, 0).numpy())
    released = {
        "autocontrast": lambda: Image.blend(ImageOps.autocontrast(picture), picture, weight),
        "brightness": lambda: ImageEnhance.Brightness(picture).enhance(weight),
        "color": lambda: ImageEnhance.Color(picture).enhance(weight),
        "contrast": lambda: ImageEnhance.Contrast(picture).enhance(weight),
        "equalize": lambda: Image.blend(ImageOps.equalize(picture), picture, weight),
        "invert": lambda: Image.blend(ImageOps.invert(picture), picture, weight),
        "sharpness": lambda: ImageEnhance.Sharpness(picture).enhance(weight),
        # The released code passes a float threshold (transform.py:218-220).
        "solarize": lambda: ImageOps.solarize(picture, min(weight, 1.0) * 255),  # type: ignore[arg-type]
    }
    assert set(released) | {"posterize"} == set(PHOTOMETRIC_OPS)
    for name, reference in released.items():
        ours = _PHOTOMETRIC[name](image, min(weight, 1.0) if name == "solarize" else weight)
        expected = torch.from_numpy(np.asarray(reference()).copy()).permute(2, 0, 1)
        assert (ours.int() - expected.int()).abs().max() <= 1, name
