"""The two data sources, the Parquet round trip and the `prepare` stage CLI."""

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dmdlib.data.prepared import (
    HELDOUT,
    TRAIN,
    ImageSet,
    load_image_folder,
    load_mnist_digits,
    prepare_images,
    read_image_parquet,
    resize_center_crop,
    split_train_heldout,
    write_image_parquet,
)
from dmdlib.errors import DataError
from dmdlib.params import PrepareParams


def make_folder(root, classes=("cat", "dog"), per_class=3, size=(40, 30)):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_mnist_digits_are_resized_and_labelled():
    images, labels = load_mnist_digits(resolution=16, channels=1)
    assert images.shape == (5000, 16, 16, 1) and images.dtype == np.uint8
    assert sorted(np.unique(labels)) == list(range(10))
    assert images.max() > 200 and images.min() == 0
    rgb, _ = load_mnist_digits(resolution=8, channels=3)
    assert rgb.shape == (5000, 8, 8, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_resize_center_crop_keeps_the_centre():
    image = np.zeros((20, 40), np.uint8)
    image[:, 10:30] = 255  # a bright square in the middle of a wide image
    out = np.asarray(resize_center_crop(Image.fromarray(image), 10))
    assert out.shape == (10, 10)
    assert out.min() > 200


def test_image_folder_labels_and_reports_corrupt_file(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    folder = load_image_folder(root, resolution=12, channels=3)
    assert folder.images.shape == (6, 12, 12, 3)
    assert folder.class_names == ["cat", "dog"]
    assert sorted(folder.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert len(folder.unreadable) == 1 and folder.unreadable[0][0].name == "broken.png"


def test_image_folder_without_classes_and_bad_folders(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    Image.fromarray(np.full((9, 9), 7, np.uint8)).save(root / "a.png")
    folder = load_image_folder(root, resolution=8, channels=1)
    assert folder.images.shape == (1, 8, 8, 1) and folder.labels.tolist() == [-1] and folder.class_names == []
    with pytest.raises(DataError, match="not found"):
        load_image_folder(tmp_path / "missing", 8, 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "bad.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable"):
        load_image_folder(empty, 8, 1)


def test_every_pillow_format_symlinked_classes_and_exif_orientation(tmp_path):
    """#40: WebP, BMP, GIF and TIFF read; other files counted by suffix; a symlinked class folder followed (a link to
    an ancestor read once); a phone photo turned upright by its EXIF orientation."""
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    pixels = np.zeros((4, 6), np.uint8)
    pixels[0, 5] = 255  # top right, wide
    for suffix in ("webp", "bmp", "gif", "tiff", "png"):
        Image.fromarray(pixels).save(root / "a" / f"x.{suffix}", **({"lossless": True} if suffix == "webp" else {}))
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    elsewhere = tmp_path / "b-images"
    elsewhere.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: to be shown turned 90 degrees clockwise
    stored = np.zeros((8, 8), np.uint8)
    stored[:4, 4:] = 255  # top right as stored
    Image.fromarray(stored).save(elsewhere / "phone.jpg", exif=exif, quality=100)
    (root / "b").symlink_to(elsewhere, target_is_directory=True)
    folder = load_image_folder(root, resolution=4, channels=1)
    assert folder.class_names == ["a", "b"] and sorted(folder.labels.tolist()) == [0] * 5 + [1]
    assert folder.ignored == {".txt": 1} and not folder.unreadable
    assert folder.converted["turned upright by their EXIF orientation"] == 1
    upright = load_image_folder(elsewhere, resolution=8, channels=1).images[0, ..., 0]
    assert upright[4:, 4:].min() > 200 and upright[:4, 4:].max() < 50  # turned clockwise: bottom right


def test_prepare_refuses_what_later_stages_cannot_use(tmp_path):
    """#40: an unlabelled folder and a split with no held-out images stop at `prepare`, before any training."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(2):
        Image.fromarray(np.full((9, 9), i, np.uint8)).save(flat / f"{i}.png")
    with pytest.raises(DataError, match="flat: no class labels; .* one sub-folder per class"):
        prepare_images(PrepareParams(source="image_folder", image_folder=str(flat), resolution=8, channels=1))
    labelled = make_folder(tmp_path / "two", per_class=1)
    with pytest.raises(DataError, match=r"heldout_fraction 0.2 of 2 images leaves 2 to train on and 0 held out"):
        prepare_images(PrepareParams(source="image_folder", image_folder=str(labelled), resolution=8, channels=1))


def test_split_is_deterministic_and_sized():
    split = split_train_heldout(1000, 0.2, seed=3)
    assert (split == HELDOUT).sum() == 200 and (split == TRAIN).sum() == 800
    assert np.array_equal(split, split_train_heldout(1000, 0.2, seed=3))
    assert not np.array_equal(split, split_train_heldout(1000, 0.2, seed=4))


def test_parquet_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    data = ImageSet(
        images=rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8),
        labels=np.arange(7) % 2,
        split=split_train_heldout(7, 0.3, 0),
        class_names=["a", "b"],
        source="image_folder",
    )
    path = tmp_path / "set.parquet"
    write_image_parquet(path, data, {"split_seed": 0})
    back = read_image_parquet(path)
    assert np.array_equal(back.images, data.images)
    assert np.array_equal(back.labels, data.labels)
    assert list(back.split) == list(data.split)
    assert back.class_names == ["a", "b"] and back.resolution == 8 and back.channels == 3


def test_reader_names_file_and_problem(tmp_path):
    with pytest.raises(DataError, match="run the `prepare` stage"):
        read_image_parquet(tmp_path / "absent.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="junk.parquet: corrupt or not Parquet"):
        read_image_parquet(junk)
    foreign = tmp_path / "foreign.parquet"
    import pyarrow as pa

    pq.write_table(pa.table({"x": [1]}), foreign)
    with pytest.raises(DataError, match="foreign.parquet: no 'dmd' metadata"):
        read_image_parquet(foreign)


def run_stage(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dmd.stages.prepare", *args], cwd=cwd, capture_output=True, text=True)


def test_prepare_stage_from_image_folder(tmp_path, repo_root):
    root = make_folder(tmp_path / "imgs")
    params = tmp_path / "params.yaml"
    params.write_text(f"prepare:\n  source: image_folder\n  image_folder: {root}\n  resolution: 8\n  channels: 3\n")
    out = tmp_path / "out" / "prepared.parquet"
    result = run_stage(
        "--params", str(params), "--out", str(out), "--preview", str(tmp_path / "out" / "p.png"), cwd=repo_root
    )
    assert result.returncode == 0, result.stderr
    data = read_image_parquet(out)
    assert data.images.shape == (6, 8, 8, 3)
    assert (tmp_path / "out" / "p.png").exists()


def test_prepare_stage_bad_params_stops_before_writing(tmp_path, repo_root):
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  resolution: 2\n")
    out = tmp_path / "prepared.parquet"
    result = run_stage("--params", str(params), "--out", str(out), cwd=repo_root)
    assert result.returncode == 2
    assert f"{params}: prepare.resolution" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_unreadable_images_named(tmp_path, caplog):
    """A corrupt file at the top level got a wrong error without its name; one inside a class folder was skipped
    with exit 0. Now: named wherever it sits, prepare stops unless skip_unreadable, conversions get one line."""
    import logging

    from typer.testing import CliRunner

    from dmd.stages.prepare import app

    root = make_folder(tmp_path / "imgs")
    Image.fromarray(np.zeros((16, 16, 4), np.uint8), mode="RGBA").save(root / "cat" / "alpha.png")
    Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(root / "dog" / "grey.png")
    (root / "stray.png").write_bytes(b"not an image")
    params = tmp_path / "params.yaml"

    def prepare(extra: str = ""):
        params.write_text(
            f"prepare:\n  source: image_folder\n  image_folder: {root}\n  resolution: 16\n  channels: 3\n{extra}"
        )
        return CliRunner().invoke(
            app, ["--params", str(params), "--out", str(tmp_path / "p.parquet"), "--preview", str(tmp_path / "p.png")]
        )

    result = prepare()
    assert result.exit_code == 2 and "1 file(s) at the top level beside class sub-folders (stray.png)" in result.output
    (root / "stray.png").unlink()
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    result = prepare()
    assert result.exit_code == 2 and "1 unreadable image(s): " in result.output and "dog/broken.png" in result.output
    assert "prepare.skip_unreadable: true" in result.output and not (tmp_path / "p.parquet").exists()
    with caplog.at_level(logging.INFO):
        result = prepare("  skip_unreadable: true\n")
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image(s) (prepare.skip_unreadable): " in caplog.text and "broken.png" in caplog.text
    assert "converted to 16x16x3: 6 40x30 resized and centre-cropped, 1 RGBA to RGB, 1 L to RGB" in caplog.text
