"""Training curves: dvclive's TSVs, a PNG of them at the end, and the same values in TensorBoard's event files."""

from pathlib import Path

import pytest
from PIL import Image

from dmd.stages.common import open_live, read_curves


def log_steps(curves, steps):
    for step in steps:
        curves.step = step
        curves.log_metric("loss", 1.0 / (step + 1))
        curves.log_metric("diversity/spread", float(step))


def test_curves_as_a_picture_and_in_tensorboard_resumed_without_duplicates():
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path("dvclive/distill")
    with open_live(folder, 0, Path("reports/curves.png"), "tensorboard") as curves:
        log_steps(curves, range(6))
    with open_live(folder, 3, Path("reports/curves.png"), "tensorboard") as curves:  # resumed from step 3's checkpoint
        log_steps(curves, range(4, 8))
    expected = list(range(4)) + list(range(4, 8))
    found = read_curves(folder)
    assert found["loss"][0] == expected and found["diversity/spread"] == (expected, [float(s) for s in expected])
    assert Image.open("reports/curves.png").size[0] > 400  # two panels side by side
    events = EventAccumulator("trackers/distill")
    events.Reload()
    scalars = events.Scalars("loss")
    assert [e.step for e in scalars] == expected  # TensorBoard drops the killed run's steps past the checkpoint too
    assert [e.value for e in scalars] == pytest.approx([1.0 / (s + 1) for s in expected])


def test_an_unknown_tracker_is_refused_by_params(tmp_path):
    from dmdlib.errors import ParamsError
    from dmdlib.params import load_params

    (tmp_path / "params.yaml").write_text("tracker: mlflow\n")
    with pytest.raises(ParamsError, match="tracker"):
        load_params(tmp_path / "params.yaml")
