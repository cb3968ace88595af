"""pctkit.artifacts.tensorboard: metrics records as TensorBoard scalars."""

from __future__ import annotations

import pytest
from tiny_run import finished_run

from pctkit.artifacts.run_dir import RunDirectory
from pctkit.artifacts.tensorboard import tensorboard_scalars


def test_a_record_becomes_one_scalar_per_number_tagged_by_its_path() -> None:
    record = {
        "kind": "train",
        "stage": "cross_training",
        "iteration": 3,
        "time": 1.0,
        "terms": {"loss": 2.0, "loss_p2h": 0.5},
        "lr": {"hybrid": 0.1},
        "method": {"J": [0.25, 0.75]},
        "flag": True,
    }
    assert tensorboard_scalars(record, ["background", "one"]) == {
        "cross_training/terms/loss": 2.0,
        "cross_training/terms/loss_p2h": 0.5,
        "cross_training/lr/hybrid": 0.1,
        "cross_training/method/J/background": 0.25,
        "cross_training/method/J/one": 0.75,
    }
    validation = {"kind": "validation", "stage": "retraining", "iteration": 2, "nets": {"r": {"miou": 0.5}}}
    assert tensorboard_scalars({**validation, "selects": "r.miou"}) == {"retraining/nets/r/miou": 0.5}
    assert tensorboard_scalars({"stage": "s", "method": {"J": [0.5]}}) == {"s/method/J/0": 0.5}


@pytest.mark.usefixtures("one_torch_thread")
def test_metrics_go_to_tensorboard_event_files_when_it_is_installed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    pytest.importorskip("sklearn.datasets")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = finished_run(tmp_path_factory)
    events = EventAccumulator(str(RunDirectory(run_dir).tensorboard))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "cross_training/terms/loss_p2h",
        "cross_training/terms/mean_w",
        "retraining/terms/loss_ce",
    } <= tags
    assert {"cross_training/method/J/background", "cross_training/nets/hybrid/miou"} <= tags
    assert {"cross_training/lr/pseudo", "evaluation/nets/retrained/miou_with_labels"} <= tags
    assert [event.step for event in events.Scalars("cross_training/terms/loss")] == [1, 2, 3, 4, 5, 6]
    records = RunDirectory(run_dir).read_records()
    logged = [
        r["terms"]["loss_ce"] for r in records if r.get("stage") == "retraining" and r["kind"] == "train"
    ]
    assert [event.value for event in events.Scalars("retraining/terms/loss_ce")] == pytest.approx(logged)
