"""Tests of the ``voc`` dataset and the tiny VOC layout writer, on real files."""

from __future__ import annotations

import filecmp
import pickle
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from pctkit.components.contracts import DataError, ParameterError, SampleSource, SegmentationData
from pctkit.components.datasets.voc import VOC_CLASS_NAMES, voc
from pctkit.components.datasets.voc_layout import tiny_voc_names, write_tiny_voc
from pctkit.palette import load_mask_png, save_palette_png

SPLITS = Path("ImageSets/Segmentation")


# --------------------------------------------------------------------------- helpers


def split_names(root: Path, file_name: str) -> list[str]:
    return (root / SPLITS / file_name).read_text().split()


def load(root: Path, **parameters: object) -> SegmentationData:
    parameters.setdefault("num_strong", 2)
    return voc(root=str(root), **parameters)  # type: ignore[arg-type]


def image_size(root: Path, name: str) -> tuple[int, int]:
    """``(height, width)`` of an image of the layout."""
    with Image.open(root / "JPEGImages" / f"{name}.jpg") as image:
        return image.height, image.width


def write_mask(root: Path, folder: str, name: str, values: list[int]) -> npt.NDArray[np.uint8]:
    """Overwrite a mask with one of the image's size holding ``values`` in bands."""
    height, width = image_size(root, name)
    mask = np.zeros((height, width), dtype=np.uint8)
    for band, value in enumerate(values):
        mask[band * 4 : band * 4 + 4] = value
    save_palette_png(mask, root / folder / f"{name}.png")
    return mask


def write_annotation(root: Path, name: str, objects: list[tuple[str, bool]]) -> Path:
    body = "".join(
        f"<object><name>{object_name}</name><difficult>{int(difficult)}</difficult>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object>"
        for object_name, difficult in objects
    )
    path = root / "Annotations" / f"{name}.xml"
    path.write_text(f"<annotation><filename>{name}.jpg</filename>{body}</annotation>")
    return path


def weak_name(root: Path) -> str:
    """A training name that is not in train.txt."""
    strong = set(split_names(root, "train.txt"))
    return next(name for name in split_names(root, "train_aug.txt") if name not in strong)


def index_of(root: Path, name: str) -> int:
    """Where a name of train_aug.txt sits in the training set (same order, no loading)."""
    return split_names(root, "train_aug.txt").index(name)


# --------------------------------------------------------------------------- the layout


def test_tiny_voc_layout_is_complete_and_consistent(tiny_voc: Path) -> None:
    train, val = tiny_voc_names(12, 4)
    assert split_names(tiny_voc, "train_aug.txt") == train
    assert split_names(tiny_voc, "val.txt") == val
    strong = split_names(tiny_voc, "train.txt")
    assert len(strong) == 4 and set(strong) <= set(train)
    assert strong != train[:4]  # reversed and spread, so "first N" is a real choice
    for name in train + val:
        height, width = image_size(tiny_voc, name)
        assert (tiny_voc / "Annotations" / f"{name}.xml").is_file()
        folders = ["SegmentationClassAug"] if name in train else []
        folders += ["SegmentationClass"] if name in strong or name in val else []
        for folder in folders:
            mask = load_mask_png(tiny_voc / folder / f"{name}.png")
            assert mask.shape == (height, width)
            assert set(np.unique(mask)) <= set(range(21)) | {255}
    # VOC masks carry ignore bands; SBD-only masks do not.
    assert (load_mask_png(tiny_voc / "SegmentationClass" / f"{strong[0]}.png") == 255).any()
    weak = weak_name(tiny_voc)
    assert not (load_mask_png(tiny_voc / "SegmentationClassAug" / f"{weak}.png") == 255).any()
    assert {image_size(tiny_voc, name) for name in train} == {(48, 64), (56, 60)}
    assert any(
        "<difficult>1</difficult>" in (tiny_voc / "Annotations" / f"{name}.xml").read_text() for name in train
    )


def test_tiny_voc_is_deterministic(tmp_path: Path) -> None:
    first = write_tiny_voc(tmp_path / "a", num_train=5, num_val=2, num_strong=2, seed=3)
    second = write_tiny_voc(tmp_path / "b", num_train=5, num_val=2, num_strong=2, seed=3)
    other = write_tiny_voc(tmp_path / "c", num_train=5, num_val=2, num_strong=2, seed=4)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all(filecmp.cmp(first / f, second / f, shallow=False) for f in files)
    image = Path("JPEGImages/train_0000.jpg")
    assert not filecmp.cmp(first / image, other / image, shallow=False)


def test_tiny_voc_with_few_classes_uses_generic_names(tmp_path: Path) -> None:
    root = write_tiny_voc(tmp_path / "voc", num_classes=3)
    data = load(root, num_classes=3, image_labels="annotations")
    assert data.class_names == ["class_0", "class_1", "class_2"]
    assert all(set(data.train[i].image_labels) <= {0, 1, 2} for i in range(len(data.train)))


# --------------------------------------------------------------------------- the protocol


def test_strong_set_is_the_first_names_of_train_txt(tiny_voc: Path) -> None:
    data = load(tiny_voc, num_strong=2)
    train_aug = split_names(tiny_voc, "train_aug.txt")
    strong = split_names(tiny_voc, "train.txt")[:2]
    assert isinstance(data.train, SampleSource)
    assert [data.train[i].name for i in range(len(data.train))] == train_aug
    assert data.strong_indices == [train_aug.index(name) for name in strong]
    assert [data.train[i].name for i in data.strong_indices] == strong
    assert data.class_names == list(VOC_CLASS_NAMES) and data.num_classes == 21


def test_only_strong_images_carry_masks(tiny_voc: Path) -> None:
    data = load(tiny_voc, num_strong=2)
    for index in range(len(data.train)):
        sample = data.train[index]
        aug_mask = load_mask_png(tiny_voc / "SegmentationClassAug" / f"{sample.name}.png")
        assert sample.image.dtype == np.uint8 and sample.image.shape[2] == 3
        if index in data.strong_indices:
            assert sample.mask is not None and np.array_equal(sample.mask, aug_mask)
            assert sample.reference_mask is None
        else:
            assert sample.mask is None
            assert sample.reference_mask is not None
            assert np.array_equal(sample.reference_mask, aug_mask)


def test_num_strong_minus_one_takes_all_of_train_txt(tiny_voc: Path) -> None:
    data = load(tiny_voc, num_strong=-1)
    assert [data.train[i].name for i in data.strong_indices] == split_names(tiny_voc, "train.txt")


def test_num_strong_beyond_train_txt_is_an_error(tiny_voc: Path) -> None:
    with pytest.raises(DataError, match=r"num_strong=5.*train\.txt.*only 4"):
        load(tiny_voc, num_strong=5)
    with pytest.raises(ValueError, match="num_strong"):
        load(tiny_voc, num_strong=0)


def test_strong_name_missing_from_training_list_is_appended(tiny_voc: Path) -> None:
    train_aug = split_names(tiny_voc, "train_aug.txt")
    first_strong = split_names(tiny_voc, "train.txt")[0]
    kept = [name for name in train_aug if name != first_strong]
    (tiny_voc / SPLITS / "train_aug.txt").write_text("\n".join(kept) + "\n")
    data = load(tiny_voc, num_strong=2)
    assert len(data.train) == len(train_aug)
    assert data.strong_indices[0] == len(train_aug) - 1
    assert data.train[data.strong_indices[0]].name == first_strong
    assert data.train[data.strong_indices[0]].mask is not None


def test_validation_reads_val_mask_dir(tiny_voc: Path) -> None:
    name = split_names(tiny_voc, "val.txt")[1]
    expected = write_mask(tiny_voc, "SegmentationClass", name, [3, 255, 7])
    data = load(tiny_voc)
    assert [data.val[i].name for i in range(len(data.val))] == split_names(tiny_voc, "val.txt")
    sample = data.val[1]
    assert sample.mask is not None and np.array_equal(sample.mask, expected)
    assert sample.image_labels == [0, 3, 7]


def test_deeplab_style_list_lines_are_read_by_stem(tiny_voc: Path) -> None:
    names = split_names(tiny_voc, "train_aug.txt")
    lines = [f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in names]
    (tiny_voc / SPLITS / "train_aug.txt").write_text("\n".join(lines) + "\n")
    assert load(tiny_voc).train[0].name == names[0]


def test_samples_pickle_for_data_loader_workers(tiny_voc: Path) -> None:
    data = load(tiny_voc)
    copy = pickle.loads(pickle.dumps(data.train))
    assert copy[3].name == data.train[3].name
    assert np.array_equal(copy[3].image, data.train[3].image)


def test_class_names_are_checked(tiny_voc: Path) -> None:
    assert load(tiny_voc, num_classes=21, class_names=tuple("abcdefghijklmnopqrstu")).class_names[:2] == [
        "a",
        "b",
    ]
    # Parameter errors name their parameter, so that validate points at its recipe key.
    with pytest.raises(ParameterError, match="class_names: has 2 names but num_classes is 21") as raised:
        load(tiny_voc, class_names=("background", "thing"))
    assert raised.value.parameter == "class_names"
    with pytest.raises(ParameterError, match="num_classes") as raised:
        load(tiny_voc, num_classes=256)
    assert raised.value.parameter == "num_classes"


# --------------------------------------------------------------------------- image labels


def test_mask_labels_come_from_the_mask_file(tiny_voc: Path) -> None:
    weak = weak_name(tiny_voc)
    write_mask(tiny_voc, "SegmentationClassAug", weak, [7, 255, 12, 7])
    data = load(tiny_voc)
    sample = data.train[index_of(tiny_voc, weak)]
    # Background is included even where the mask has none; 255 never is.
    assert sample.image_labels == [0, 7, 12]
    for index in range(len(data.train)):
        other = data.train[index]
        source = other.mask if other.mask is not None else other.reference_mask
        assert source is not None
        expected = {0} | {int(v) for v in np.unique(source)} - {255}
        assert other.image_labels == sorted(expected)


def test_annotation_labels_and_skip_difficult(tiny_voc: Path) -> None:
    weak = weak_name(tiny_voc)
    write_annotation(tiny_voc, weak, [("dog", True), ("cat", False), ("cat", False)])
    write_mask(tiny_voc, "SegmentationClassAug", weak, [5])  # must not leak into labels
    data = load(tiny_voc, image_labels="annotations")
    assert data.train[index_of(tiny_voc, weak)].image_labels == [0, 8, 12]
    data = load(tiny_voc, image_labels="annotations", skip_difficult=True)
    sample = data.train[index_of(tiny_voc, weak)]
    assert sample.image_labels == [0, 8]
    assert sample.reference_mask is not None  # still there, for scoring only


def test_strong_and_val_labels_are_the_union_with_the_mask(tiny_voc: Path) -> None:
    strong = split_names(tiny_voc, "train.txt")[0]
    write_annotation(tiny_voc, strong, [("cat", False), ("person", True)])
    write_mask(tiny_voc, "SegmentationClassAug", strong, [3, 255])
    val = split_names(tiny_voc, "val.txt")[0]
    write_annotation(tiny_voc, val, [])
    write_mask(tiny_voc, "SegmentationClass", val, [20])
    data = load(tiny_voc, image_labels="annotations", skip_difficult=True)
    assert data.train[data.strong_indices[0]].image_labels == [0, 3, 8]
    assert data.val[0].image_labels == [0, 20]


def test_weak_image_without_mask_is_fine_with_annotation_labels(tiny_voc: Path) -> None:
    weak = weak_name(tiny_voc)
    (tiny_voc / "SegmentationClassAug" / f"{weak}.png").unlink()
    data = load(tiny_voc, image_labels="annotations")
    sample = data.train[index_of(tiny_voc, weak)]
    assert sample.mask is None and sample.reference_mask is None
    with pytest.raises(DataError, match=rf"{weak}\.png.*image_labels='masks'"):
        load(tiny_voc, image_labels="masks")


def test_unknown_object_name_is_an_error(tiny_voc: Path) -> None:
    weak = weak_name(tiny_voc)
    write_annotation(tiny_voc, weak, [("unicorn", False)])
    data = load(tiny_voc, image_labels="annotations")
    with pytest.raises(DataError) as error:
        data.train[index_of(tiny_voc, weak)]
    assert f"{weak}.xml" in str(error.value) and "'unicorn'" in str(error.value)
    assert "aeroplane" in str(error.value) and "tvmonitor" in str(error.value)


def test_malformed_annotation_is_an_error(tiny_voc: Path) -> None:
    weak = weak_name(tiny_voc)
    (tiny_voc / "Annotations" / f"{weak}.xml").write_text("<annotation><object>")
    data = load(tiny_voc, image_labels="annotations")
    with pytest.raises(DataError, match=rf"cannot read annotation .*{weak}\.xml"):
        data.train[index_of(tiny_voc, weak)]


# --------------------------------------------------------------------------- construction


def test_missing_root_suggests_the_setting(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        voc(root=str(tmp_path / "nowhere"))
    assert "nowhere" in str(error.value) and "--set data.root=" in str(error.value)
    assert error.value.parameter == "root"


@pytest.mark.parametrize(
    ("parameter", "file_name"),
    [("train_list", "train_aug.txt"), ("strong_list", "train.txt"), ("val_list", "val.txt")],
)
def test_missing_split_file(tiny_voc: Path, parameter: str, file_name: str) -> None:
    (tiny_voc / SPLITS / file_name).unlink()
    with pytest.raises(DataError, match=rf"split file .*{file_name} not found.*{parameter}") as error:
        load(tiny_voc)
    assert error.value.parameter == parameter


def test_a_missing_split_file_gets_the_setting_the_folder_suggests(tiny_voc: Path, tmp_path: Path) -> None:
    # The root one level above VOC2012.
    devkit = tmp_path / "VOCdevkit"
    devkit.mkdir()
    tiny_voc.rename(devkit / "VOC2012")
    with pytest.raises(DataError, match=r"It is in .*VOC2012: --set data.root=.*VOC2012$"):
        load(devkit)
    root = devkit / "VOC2012"
    # The released code's list name.
    (root / SPLITS / "train_aug.txt").rename(root / SPLITS / "trainaug.txt")
    with pytest.raises(DataError, match=r"has trainaug.txt: --set data.train_list=.*trainaug.txt$"):
        load(root)
    # VOC 2012 without SBD.
    (root / SPLITS / "trainaug.txt").unlink()
    with pytest.raises(DataError, match=r"Without the SBD masks") as error:
        load(root)
    assert "--set data.mask_dir=SegmentationClass" in str(error.value)


@pytest.mark.parametrize("file_name", ["train_aug.txt", "train.txt", "val.txt"])
def test_empty_split_file(tiny_voc: Path, file_name: str) -> None:
    (tiny_voc / SPLITS / file_name).write_text("\n  \n")
    with pytest.raises(DataError, match=rf"split file .*{file_name} is empty"):
        load(tiny_voc)


def test_duplicate_name_in_split_file(tiny_voc: Path) -> None:
    names = split_names(tiny_voc, "val.txt")
    (tiny_voc / SPLITS / "val.txt").write_text("\n".join([*names, names[1]]) + "\n")
    with pytest.raises(DataError, match=rf"val\.txt: name '{names[1]}' appears twice.*2 and 5"):
        load(tiny_voc)


@pytest.mark.parametrize(("split", "position"), [("train_aug.txt", 5), ("val.txt", 2)])
def test_missing_image(tiny_voc: Path, split: str, position: int) -> None:
    name = split_names(tiny_voc, split)[position]
    (tiny_voc / "JPEGImages" / f"{name}.jpg").unlink()
    with pytest.raises(DataError) as error:
        load(tiny_voc)
    assert f"{name}.jpg (line {position + 1})" in str(error.value)
    assert split in str(error.value)


def test_every_missing_image_is_counted(tiny_voc: Path) -> None:
    for name in split_names(tiny_voc, "train_aug.txt"):
        (tiny_voc / "JPEGImages" / f"{name}.jpg").unlink()
    with pytest.raises(DataError, match=r"^12 image file\(s\).*and 7 more"):
        load(tiny_voc)


def test_missing_image_of_appended_strong_name_names_train_txt(tiny_voc: Path) -> None:
    strong = split_names(tiny_voc, "train.txt")[0]
    kept = [n for n in split_names(tiny_voc, "train_aug.txt") if n != strong]
    (tiny_voc / SPLITS / "train_aug.txt").write_text("\n".join(kept) + "\n")
    (tiny_voc / "JPEGImages" / f"{strong}.jpg").unlink()
    with pytest.raises(DataError, match=rf"listed in .*train\.txt not found: .*{strong}\.jpg"):
        load(tiny_voc)


def test_missing_strong_mask(tiny_voc: Path) -> None:
    strong = split_names(tiny_voc, "train.txt")[1]
    (tiny_voc / "SegmentationClassAug" / f"{strong}.png").unlink()
    with pytest.raises(DataError, match=rf"strong mask .*train\.txt.*{strong}\.png"):
        load(tiny_voc, num_strong=2)


def test_missing_val_mask(tiny_voc: Path) -> None:
    name = split_names(tiny_voc, "val.txt")[3]
    (tiny_voc / "SegmentationClass" / f"{name}.png").unlink()
    with pytest.raises(DataError, match=rf"val\.txt.*SegmentationClass/{name}\.png"):
        load(tiny_voc)


def test_missing_annotation_with_annotation_labels(tiny_voc: Path) -> None:
    name = split_names(tiny_voc, "train_aug.txt")[0]
    (tiny_voc / "Annotations" / f"{name}.xml").unlink()
    load(tiny_voc)  # mask labels do not need annotations
    with pytest.raises(DataError, match=rf"annotation .*{name}\.xml"):
        load(tiny_voc, image_labels="annotations")


# --------------------------------------------------------------------------- loading


def test_mask_of_wrong_size(tiny_voc: Path) -> None:
    weak = weak_name(tiny_voc)
    height, width = image_size(tiny_voc, weak)
    save_palette_png(
        np.zeros((height + 3, width), dtype=np.uint8),
        tiny_voc / "SegmentationClassAug" / f"{weak}.png",
    )
    data = load(tiny_voc)
    with pytest.raises(DataError) as error:
        data.train[index_of(tiny_voc, weak)]
    message = str(error.value)
    assert f"{weak}.png" in message and f"{weak}.jpg" in message
    assert f"{width}x{height + 3}" in message and f"{width}x{height}" in message


def test_label_values_out_of_range(tiny_voc: Path) -> None:
    weak = weak_name(tiny_voc)
    write_mask(tiny_voc, "SegmentationClassAug", weak, [3, 255, 30, 21])
    data = load(tiny_voc)
    with pytest.raises(DataError, match=rf"{weak}\.png has label values \[21, 30\]"):
        data.train[index_of(tiny_voc, weak)]
    write_mask(tiny_voc, "SegmentationClassAug", weak, [1, 5])
    data = load(tiny_voc, num_classes=4)
    with pytest.raises(DataError, match=rf"{weak}\.png has label values \[5\].*0\.\.3"):
        data.train[index_of(tiny_voc, weak)]


def test_corrupt_image(tiny_voc: Path) -> None:
    train_aug = split_names(tiny_voc, "train_aug.txt")
    (tiny_voc / "JPEGImages" / f"{train_aug[0]}.jpg").write_bytes(b"not a jpeg at all")
    jpeg = tiny_voc / "JPEGImages" / f"{train_aug[1]}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    data = load(tiny_voc)
    with pytest.raises(DataError, match=rf"{train_aug[0]}\.jpg: cannot identify image file"):
        data.train[0]
    with pytest.raises(DataError, match=rf"(?i){train_aug[1]}\.jpg: .*truncated"):
        data.train[1]


def test_corrupt_or_rgb_mask(tiny_voc: Path) -> None:
    strong = split_names(tiny_voc, "train.txt")[0]
    (tiny_voc / "SegmentationClassAug" / f"{strong}.png").write_bytes(b"\x89PNG broken")
    val = split_names(tiny_voc, "val.txt")[0]
    height, width = image_size(tiny_voc, val)
    Image.new("RGB", (width, height)).save(tiny_voc / "SegmentationClass" / f"{val}.png")
    data = load(tiny_voc)
    with pytest.raises(DataError, match=rf"cannot read mask .*{strong}\.png: cannot identify"):
        data.train[data.strong_indices[0]]
    with pytest.raises(DataError, match=rf"cannot read mask .*{val}\.png.*mode 'RGB'"):
        data.val[0]
