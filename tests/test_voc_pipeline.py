"""The ``voc`` pipeline end to end on a tiny VOC + SBD folder, with ``recipes/voc_pct.toml``
made CPU-sized by ``--set`` overrides only; and ``pctkit validate`` on that recipe.
Evaluation at full resolution (whole images or sliding windows) is tested in
``test_evaluation.py``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tiny_run import TINY_STAGES, set_options
from typer.testing import CliRunner

import pctkit
from pctkit.cli.main import app
from pctkit.components.augmentations.scale_crop_flip import scale_crop_flip
from pctkit.components.datasets.voc import voc
from pctkit.engine.data import TrainingImages
from pctkit.engine.errors import TrainingInterrupted
from pctkit.palette import load_mask_png, save_palette_png, voc_palette
from pctkit.recipe import RecipeError, load_recipe

RECIPE = Path(pctkit.__file__).parent / "recipes" / "voc_pct.toml"
SPLITS = Path("ImageSets/Segmentation")

TINY_NET = [
    'model.backbone.pretrained=""',
    'model.backbone.model_name="test_resnet"',
    "model.backbone.out_indices=[1, 3]",
    "model.backbone.output_stride=16",
    "model.head.channels=16",
    "model.head.shortcut_channels=8",
    "augmentation.crop_size=32",
]
"""What makes the paper's net CPU-sized: timm's test ResNet, a narrow DeepLabv3+ head."""

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_overrides(root: Path, output_dir: Path) -> list[str]:
    """``--set`` overrides that turn voc_pct.toml into a seconds-long CPU run on ``root``."""
    return [
        f"data.root={root}",
        "data.num_strong=4",
        *TINY_NET,
        f"experiment.output_dir={output_dir}",
        'experiment.device="cpu"',
        'experiment.precision="fp32"',
        "experiment.channels_last=false",
        "experiment.deterministic=true",
        "loader.num_workers=0",
        *TINY_STAGES,
        "retrain.pseudo_labels.flip=false",
        "evaluation.batch_size=1",
        "evaluation.num_pictures=2",
        "evaluation.postprocess_workers=2",  # the CRF in a pool, as on a GPU node, but smaller
        "checkpoint.interval=0",
    ]


def run_cli(*arguments: str) -> Any:
    return CliRunner().invoke(app, [*arguments], catch_exceptions=True)


def validate_json(*overrides: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("validate", str(RECIPE), "--json", *set_options(list(overrides)))
    return result.exit_code, json.loads(result.stdout)


def split_names(root: Path, file_name: str) -> list[str]:
    return (root / SPLITS / file_name).read_text().split()


def image_size(root: Path, name: str) -> tuple[int, int]:
    with Image.open(root / "JPEGImages" / f"{name}.jpg") as image:
        return image.height, image.width


# --------------------------------------------------------------------------- end to end


def test_voc_pct_runs_end_to_end(tiny_voc: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", str(RECIPE), *set_options(tiny_overrides(tiny_voc, tmp_path)), "--out", str(run_dir), "--quiet"
    )
    assert result.exit_code == 0, result.output + repr(result.exception)

    # The run kept the paper's settings except what was overridden.
    saved = json.loads((run_dir / "recipe.json").read_text())
    assert saved["model"]["head"]["type"] == "deeplabv3plus"
    assert saved["model"]["head"]["aspp_rates"] == [6, 12, 18]
    assert saved["optimizer"] == {
        "type": "sgd",
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 4e-5,
        "nesterov": False,
    }
    assert saved["retrain"]["optimizer"]["lr"] == 7e-3
    assert saved["method"]["type"] == "pct" and saved["method"]["score_power"] == 8.0

    # Pseudo labels: one VOC palette PNG per weak image, at the image's size, holding
    # only classes of the image's labels (the class-aware prediction).
    data = voc(root=str(tiny_voc), num_strong=4)
    strong = set(split_names(tiny_voc, "train.txt"))
    weak = [name for name in split_names(tiny_voc, "train_aug.txt") if name not in strong]
    written = sorted(path.stem for path in (run_dir / "pseudo_labels").glob("*.png"))
    assert written == sorted(weak)
    for index in range(len(data.train)):
        sample = data.train[index]
        if sample.name in strong:
            continue
        with Image.open(run_dir / "pseudo_labels" / f"{sample.name}.png") as label:
            assert label.mode == "P"
            assert np.array_equal(np.array(label.getpalette(), dtype=np.uint8), voc_palette(256).reshape(-1))
            assert (label.height, label.width) == sample.image.shape[:2]
            assert set(np.unique(np.asarray(label)).tolist()) <= set(sample.image_labels)

    # Retraining reads its targets from there: a weak image's mask is its pseudo label.
    retraining_images = TrainingImages(data.train, 21, scale_crop_flip(), run_dir / "pseudo_labels")
    index = split_names(tiny_voc, "train_aug.txt").index(weak[0])
    expected = load_mask_png(run_dir / "pseudo_labels" / f"{weak[0]}.png")
    assert np.array_equal(retraining_images[(index, 0)]["mask"].numpy(), expected)

    stages = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("stage") == "retraining" and r.get("iteration") == 2 for r in stages)
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["nets"]) == {"hybrid", "pseudo", "retrained"}
    for summary in results["nets"].values():
        assert 0.0 <= summary["miou"] <= 1.0 and 0.0 <= summary["miou_with_labels"] <= 1.0
        assert set(summary["iou"]) == set(data.class_names)
    assert results["pseudo_labels"]["images"] == len(weak)
    assert (run_dir / "predictions.png").is_file()
    assert {"hybrid_net", "pseudo_net", "retrained_net"} <= {p.stem for p in run_dir.glob("*.safetensors")}


def _unfinish_retraining(run_dir: Path) -> None:
    """Make a finished run one that stopped after its pseudo labels."""
    progress = json.loads((run_dir / "progress.json").read_text())
    progress["completed"] = ["cross_training", "pseudo_labels"]
    (run_dir / "progress.json").write_text(json.dumps(progress))
    for folder in (run_dir / "checkpoints").glob("retraining*"):
        shutil.rmtree(folder)
    (run_dir / "retrained_net.safetensors").unlink()
    (run_dir / "results.json").unlink()


def _trained(overrides: list[str], run_dir: Path) -> dict[str, torch.Tensor]:
    """Run voc_pct with ``overrides`` into ``run_dir``; returns the retrained net's tensors."""
    result = run_cli("run", str(RECIPE), *set_options(overrides), "--out", str(run_dir), "--quiet")
    assert result.exit_code == 0, result.output + repr(result.exception)
    return load_file(str(run_dir / "retrained_net.safetensors"))


def _assert_retrained_as(run_dir: Path, reference: dict[str, torch.Tensor]) -> None:
    resumed = load_file(str(run_dir / "retrained_net.safetensors"))
    assert all(torch.equal(resumed[key], reference[key]) for key in reference)


def test_a_stage_restarted_from_its_beginning_trains_as_in_one_run(tiny_voc: Path, tmp_path: Path) -> None:
    """A crash after the pseudo labels and before retraining's first checkpoint: the
    resumed process starts retraining afresh. The head's dropout draws from generators
    seeded by (seed, stage), not by what the process ran before, so the weights match."""
    run_dir = tmp_path / "run"
    reference = _trained(tiny_overrides(tiny_voc, tmp_path), run_dir)
    assert load_recipe(RECIPE).model.head.dropout > 0  # type: ignore[union-attr]
    _unfinish_retraining(run_dir)
    assert run_cli("resume", str(run_dir), "--quiet").exit_code == 0
    _assert_retrained_as(run_dir, reference)


def test_resume_finds_inputs_moved_and_refuses_others(tiny_voc: Path, tmp_path: Path) -> None:
    """data.root and the backbone's pretrained file are locations: a resume may move them
    (inputs staged to a node-local disk), and the run ends as if they had not moved;
    other data or other weights there, or another key, are refused."""
    weights = tmp_path / "weights" / "test_resnet.safetensors"
    weights.parent.mkdir()
    save_file(timm.create_model("test_resnet").state_dict(), str(weights))
    run_dir = tmp_path / "run"
    overrides = [*tiny_overrides(tiny_voc, tmp_path), f'model.backbone.pretrained="{weights}"']
    reference = _trained(overrides, run_dir)
    recorded = json.loads((run_dir / "inputs.json").read_text())
    assert recorded["data"]["train_images"] == 12 and recorded["data"]["strong_images"] == 4
    assert set(recorded["files"]) == {"model.backbone.pretrained", "retrain.model.backbone.pretrained"}
    _unfinish_retraining(run_dir)

    staged = tmp_path / "scratch"
    shutil.copytree(tiny_voc, staged / "VOC2012")
    shutil.copy(weights, staged / weights.name)
    shutil.rmtree(tiny_voc)
    shutil.rmtree(weights.parent)  # the old paths are gone
    moved = set_options(
        [f"data.root={staged / 'VOC2012'}", f'model.backbone.pretrained="{staged / weights.name}"']
    )
    # The retrained net's copy of the path was not moved: named, with the way on.
    result = run_cli("resume", str(run_dir), *moved)
    assert result.exit_code == 1
    assert f"retrain.model.backbone.pretrained: {weights} is missing" in " ".join(
        str(result.exception).split()
    )
    moved += set_options([f'retrain.model.backbone.pretrained="{staged / weights.name}"'])
    result = run_cli("resume", str(run_dir), *moved)
    assert result.exit_code == 0, result.output + repr(result.exception)
    output = " ".join(result.output.split())
    assert f"inputs moved (data.root: '{tiny_voc}' -> '{staged / 'VOC2012'}';" in output
    assert "they are the run's own" in output
    _assert_retrained_as(run_dir, reference)

    # Other data at the new location: refused before anything is trained.
    _unfinish_retraining(run_dir)
    root = staged / "VOC2012"
    weak = [name for name in split_names(root, "train_aug.txt") if name not in split_names(root, "train.txt")]
    kept = [name for name in split_names(root, "train_aug.txt") if name != weak[-1]]
    original = (root / SPLITS / "train_aug.txt").read_text()
    (root / SPLITS / "train_aug.txt").write_text("\n".join(kept) + "\n")  # one weak image fewer
    result = run_cli("resume", str(run_dir), *moved)
    assert result.exit_code == 1
    message = " ".join(str(result.exception).split())
    assert f"the inputs found at the new location (data.root: '{tiny_voc}' -> '{root}';" in message
    assert "are not the ones the run started with:" in message and "train_images: 12 then, 11 now" in message
    assert not (run_dir / "retrained_net.safetensors").exists()
    (root / SPLITS / "train_aug.txt").write_text(original)  # mended

    # Other weights under the moved path: refused too.
    other = staged / "other.safetensors"
    save_file({key: value + 1 for key, value in load_file(str(staged / weights.name)).items()}, str(other))
    elsewhere = [
        *moved[:2],
        *set_options(
            [f'model.backbone.pretrained="{other}"', f'retrain.model.backbone.pretrained="{other}"']
        ),
    ]
    result = run_cli("resume", str(run_dir), *elsewhere)
    assert result.exit_code == 1
    problems = str(result.exception).splitlines()[1:-1]  # the data is the run's again
    assert len(problems) == 2 and all(
        "holds other bytes than the file the run started with" in p for p in problems
    )
    # A key that changes what the run computes may not change on resume.
    result = run_cli("resume", str(run_dir), *moved, "--set", "optimizer.lr=0.5")
    assert result.exit_code == 1 and "optimizer.lr: 0.001 -> 0.5" in str(result.exception)


def break_mask(root: Path, name: str, problem: str) -> str:
    """Spoil the training mask of ``name``; returns what the error must say."""
    height, width = image_size(root, name)
    path = root / "SegmentationClassAug" / f"{name}.png"
    if problem == "label values":
        mask = load_mask_png(path)
        mask[:3] = 30
        save_palette_png(mask, path)
        return rf"{name}\.png has label values \[30\]"
    save_palette_png(np.zeros((height - 5, width), dtype=np.uint8), path)
    return rf"{name}\.png is {width}x{height - 5} but its image .*{name}\.jpg is {width}x{height}"


@pytest.mark.parametrize(
    ("split", "position", "problem", "workers"),
    [
        ("train.txt", 3, "label values", 0),
        ("train.txt", 2, "size", 1),
        ("train_aug.txt", 6, "size", 0),
    ],
    ids=["strong-mask-label-values", "strong-mask-size-in-a-loader-worker", "weak-mask-size"],
)
def test_a_broken_mask_stops_the_run_naming_the_file(
    tiny_voc: Path, tmp_path: Path, split: str, position: int, problem: str, workers: int
) -> None:
    # None of these is an image validate loads, so the run is the first to read it: a
    # strong one in the first iterations (2 x 2 strong draws cover all 4), a weak one
    # in training or, at the latest, when the pseudo labels are made.
    expected = break_mask(tiny_voc, split_names(tiny_voc, split)[position], problem)
    assert validate_json(*tiny_overrides(tiny_voc, tmp_path))[0] == 0
    overrides = [*tiny_overrides(tiny_voc, tmp_path), f"loader.num_workers={workers}"]
    result = run_cli("run", str(RECIPE), *set_options(overrides), "--out", str(tmp_path / "run"), "--quiet")
    # The run stops with the file's name (no worker traceback around it), after a
    # checkpoint of what it trained, and says how to go on.
    error = result.exception
    assert isinstance(error, TrainingInterrupted) and error.exit_code == 1
    assert error.run_dir == tmp_path / "run"
    assert re.match(rf"data error in \w+ at iteration \d+: mask .*{expected}", str(error)), str(error)
    assert str(error).endswith("fix or replace the file, then resume")


# --------------------------------------------------------------------------- validate


def test_validate_without_data_reports_root_and_weights_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the recipe's relative paths now point nowhere
    code, report = validate_json()
    assert code == 1 and report["valid"] is False
    issues = {issue["path"]: issue for issue in report["issues"]}
    assert set(issues) == {"data.root", "model.backbone.pretrained"}
    assert "data/VOCdevkit/VOC2012" in issues["data.root"]["message"]
    assert "--set data.root=" in issues["data.root"]["message"]
    assert "weights/resnet101s.gluon_in1k.safetensors" in issues["model.backbone.pretrained"]["message"]
    assert "timm.create_model('resnet101s'" in issues["model.backbone.pretrained"]["hint"]


def test_validate_passes_on_the_tiny_layout(tiny_voc: Path, tmp_path: Path) -> None:
    code, report = validate_json(f"data.root={tiny_voc}", "data.num_strong=4", *TINY_NET)
    assert code == 0, report["issues"]
    checked = "\n".join(report["checked"])
    assert "12 training (4 strong), 4 validation images, 21 classes" in checked
    assert "first strong training image 'train_0011' loads" in checked
    assert "first weak training image 'train_0001' loads" in checked


def missing(relative: str, expected: str) -> Any:
    def spoil(root: Path) -> str:
        (root / relative).unlink()
        return expected

    return spoil


def empty_val_list(root: Path) -> str:
    (root / SPLITS / "val.txt").write_text("\n")
    return r"split file .*val\.txt is empty"


@pytest.mark.parametrize(
    "spoil",
    [
        missing("JPEGImages/train_0005.jpg", r"train_aug\.txt.*train_0005\.jpg \(line 6\)"),
        missing("SegmentationClassAug/train_0007.png", r"strong mask.*train_0007\.png"),
        missing("SegmentationClass/val_0002.png", r"val\.txt.*SegmentationClass/val_0002\.png"),
        empty_val_list,
        lambda root: break_mask(root, "train_0011", "size"),
        lambda root: break_mask(root, "train_0001", "label values"),
    ],
    ids=[
        "missing-image",
        "missing-strong-mask",
        "missing-val-mask",
        "empty-split",
        "mask-size",
        "label-values",
    ],
)
def test_validate_names_the_broken_file(tiny_voc: Path, spoil: Any) -> None:
    """Construction-time problems, and load-time ones in the images validate loads."""
    expected = spoil(tiny_voc)
    code, report = validate_json(f"data.root={tiny_voc}", "data.num_strong=4", *TINY_NET)
    assert code == 1
    data_issues = [issue for issue in report["issues"] if issue["path"].startswith("data")]
    assert len(data_issues) == 1 and re.search(expected, data_issues[0]["message"])


def test_split_file_errors_point_at_their_parameter(tiny_voc: Path) -> None:
    code, report = validate_json(
        f"data.root={tiny_voc}", 'data.strong_list="ImageSets/Segmentation/nope.txt"', *TINY_NET
    )
    assert code == 1
    assert [issue["path"] for issue in report["issues"]] == ["data.strong_list"]
    code, report = validate_json(f"data.root={tiny_voc}", "data.num_strong=92", *TINY_NET)
    assert [issue["path"] for issue in report["issues"]] == ["data.num_strong"]
    assert "lists only 4 names" in report["issues"][0]["message"]


def test_sliding_mode_is_declared_in_the_recipe(tiny_voc: Path) -> None:
    recipe = load_recipe(
        RECIPE, ['evaluation.mode="sliding"', "evaluation.window=321", "evaluation.stride=214"]
    )
    assert (recipe.evaluation.mode, recipe.evaluation.window, recipe.evaluation.stride) == (
        "sliding",
        321,
        214,
    )
    with pytest.raises(RecipeError) as error:
        load_recipe(RECIPE, ['evaluation.mode="tiles"'])
    assert [issue.path for issue in error.value.issues] == ["evaluation.mode"]
    with pytest.raises(RecipeError) as error:
        load_recipe(RECIPE, ["evaluation.window=100", "evaluation.stride=200"])
    assert "stride 200 is larger than window 100" in str(error.value)
