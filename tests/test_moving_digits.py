"""The moving-digits video data: clips made exactly as described, stored and read back as clips, seen frame by frame
by the classifier, the grids and the metrics, and the whole pipeline on it at a tiny size."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from tiny_project import pipeline_params, run_stages
from typer.testing import CliRunner

from dmd.stages.prepare import app as prepare_app
from dmdlib.data.images import frames_of, make_grid
from dmdlib.data.moving_digits import moving_digit_clips
from dmdlib.data.prepared import ImageSet, read_image_parquet, write_image_parquet
from dmdlib.evaluation.measure import temporal_consistency
from dmdlib.params import PrepareParams


def _digits(count: int = 6) -> np.ndarray:
    rng = np.random.default_rng(1)
    digits = np.zeros((count, 28, 28), np.uint8)
    digits[:, 4:24, 8:20] = rng.integers(60, 256, (count, 20, 12))  # a blob that fills its box: tracked exactly
    return digits


def test_each_digit_slides_one_pixel_per_frame_and_bounces_inside_the_frame():
    clips = moving_digit_clips(_digits(), resolution=16, frames=10, seed=3)
    assert clips.shape == (6, 16, 16, 10) and clips.dtype == np.uint8
    assert np.array_equal(clips, moving_digit_clips(_digits(), 16, 10, seed=3))
    assert not np.array_equal(clips, moving_digit_clips(_digits(), 16, 10, seed=4))
    for clip in clips:
        corners, crops = [], []
        for frame in np.moveaxis(clip, -1, 0):
            rows, cols = np.flatnonzero(frame.any(axis=1)), np.flatnonzero(frame.any(axis=0))
            corners.append((rows[0], cols[0]))
            crops.append(frame[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        assert all(np.array_equal(crop, crops[0]) for crop in crops)  # the same digit, whole, moved
        steps = np.diff(np.array(corners), axis=0)
        assert set(np.abs(steps).ravel()) == {1}  # one pixel per frame along each axis, reflected at the edges


def test_clips_are_stored_as_clips_and_seen_frame_by_frame(tmp_path):
    clips = moving_digit_clips(_digits(4), 16, 5, seed=0)
    split = np.array(["train", "train", "heldout", "train"], dtype=object)
    data = ImageSet(clips, np.arange(4), split, list("abcd"), frames=5)
    write_image_parquet(tmp_path / "clips.parquet", data)
    back = read_image_parquet(tmp_path / "clips.parquet")
    assert back.frames == 5 and np.array_equal(back.images, clips)
    frames = back.frame_view()
    assert frames.images.shape == (20, 16, 16, 1) and list(frames.labels[:6]) == [0] * 5 + [1]
    assert np.array_equal(frames.images[7, ..., 0], clips[1, ..., 2]) and frames.split[10] == "heldout"
    model_range = torch.from_numpy(clips).permute(0, 3, 1, 2).float()
    assert torch.equal(frames_of(model_range, 5)[7, 0], model_range[1, 2])
    grid = make_grid(clips, columns=8, padding=1)  # a clip per row, its frames side by side
    assert grid.shape == (4 * 17 + 1, 5 * 17 + 1, 1)
    assert np.array_equal(grid[1 + 17 : 1 + 17 + 16, 1 + 2 * 17 : 1 + 2 * 17 + 16, 0], clips[1, ..., 2])


def test_video_params_go_together():
    assert PrepareParams(source="moving_mnist", frames=8).frames == 8
    for wrong in (
        {"source": "moving_mnist"},
        {"source": "mnist", "frames": 8},
        {"source": "moving_mnist", "frames": 8, "channels": 3},
    ):
        with pytest.raises(ValidationError):
            PrepareParams(**wrong)


def test_temporal_consistency_of_known_clips():
    still = torch.zeros(2 * 4, 1, 4, 4)
    assert temporal_consistency(still, torch.zeros(8), 4) == {"frame_class_agreement": 1.0, "frame_change": 0.0}
    flicker = torch.tensor([-1.0, 1.0, -1.0, 1.0] * 2).reshape(8, 1, 1, 1).expand(8, 1, 4, 4)
    result = temporal_consistency(flicker, torch.tensor([0, 1, 0, 1, 3, 3, 3, 2]), 4)
    assert result == {"frame_class_agreement": pytest.approx(2 / 6), "frame_change": 1.0}


def test_the_pipeline_on_moving_digits(tmp_path):
    """prepare (moving_mnist) -> features -> teacher (trained on the clips) -> pairs -> distill -> evaluate: per-frame
    FID, the temporal measures for every row and the data's floor, a strip grid and a GIF per model."""
    params = (
        "prepare:\n  source: moving_mnist\n  resolution: 8\n  frames: 4\n"
        "teacher:\n  train:\n    channels: [8, 8]\n    depths: [1, 1]\n    mapping_width: 16\n    steps: 4\n"
        "    batch_size: 4\n    checkpoint_every: 2\n    sample_steps: 2\n"
    )
    (tmp_path / "params.yaml").write_text(params + pipeline_params())
    result = CliRunner().invoke(
        prepare_app,
        [
            "--params",
            str(tmp_path / "params.yaml"),
            "--out",
            str(tmp_path / "data.parquet"),
            "--preview",
            str(tmp_path / "d.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    (tmp_path / "data").mkdir()
    shutil.copyfile(tmp_path / "data.parquet", tmp_path / "data" / "prepared.parquet")  # the teacher's default --data
    run_stages(tmp_path, ["features", "teacher", "pairs", "distill", "evaluate"])
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for row in ("noise_floor", "teacher", "dmd_one_step"):
        assert 0 <= metrics[row]["frame_class_agreement"] <= 1 and metrics[row]["frame_change"] >= 0
        assert metrics[row]["fid_classifier"] > 0
    assert "4 frames, measured frame by frame" in metrics["reference"]
    with Image.open(tmp_path / "eval" / "dmd_one_step.gif") as gif:
        assert gif.n_frames == 4
    with Image.open(tmp_path / "eval" / "dmd_one_step.png") as grid:
        assert grid.width == 4 * (8 * 9 + 1)  # 8 columns: two clips' 4 frames of 8 pixels a row, drawn 4 times wider
