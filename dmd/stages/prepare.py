"""`prepare` stage: the configured images, resized and split, as one Parquet file plus a preview grid."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import typer

from dmd.stages.common import PARAMS_OPTION, setup_logging, user_errors
from dmdlib.data.images import save_grid
from dmdlib.data.io import check_writable
from dmdlib.data.prepared import TRAIN, FolderImages, prepare_images, write_image_parquet
from dmdlib.params import load_params

log = logging.getLogger("prepare")
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    out: Path = typer.Option(Path("data/prepared.parquet"), help="Parquet file to write (index, label, split, image)."),
    preview: Path = typer.Option(Path("data/prepared.png"), help="PNG grid of 64 training images spread over the set."),
) -> None:
    """Write the prepared data set: images as uint8 HWC bytes with label and train/held-out split."""
    setup_logging()
    with user_errors():
        config = load_params(params, "prepare").prepare
        check_writable(out, preview)
        data, folder = prepare_images(config)
        if folder is not None:
            _log_folder(folder, config)
        write_image_parquet(out, data, {"heldout_fraction": config.heldout_fraction, "split_seed": config.seed})
        train = data.subset(TRAIN)
        shown = 64 if data.frames == 1 else 16  # clips: a row of frames each
        save_grid(preview, data.images[train[:: max(1, len(train) // shown)][:shown]], columns=8, scale=4)
    counts = {name: int(np.sum(data.split == name)) for name in ("train", "heldout")}
    log.info(
        "wrote %s: %d %s %dx%dx%d from %s (%s), %d classes, %d skipped",
        out,
        len(data.images),
        "images" if data.frames == 1 else "clips (frames as channels)",
        data.resolution,
        data.resolution,
        data.channels,
        config.source,
        counts,
        len(data.class_names),
        len(folder.unreadable) if folder else 0,
    )


def _log_folder(folder: FolderImages, config) -> None:
    """What was left out of the image folder and why, and what was changed on the way in."""
    if folder.unreadable:
        log.warning(
            "skipped %d unreadable image(s) (prepare.skip_unreadable): %s",
            len(folder.unreadable),
            "; ".join(f"{path} ({reason})" for path, reason in folder.unreadable),
        )
    if folder.ignored:
        log.warning(
            "left out %d file(s) that are not images (no format Pillow reads has their suffix): %s",
            sum(folder.ignored.values()),
            ", ".join(f"{count} {suffix}" for suffix, count in folder.ignored.most_common()),
        )
    if folder.converted:
        log.info(
            "converted to %dx%dx%d: %s",
            config.resolution,
            config.resolution,
            config.channels,
            ", ".join(f"{count} {what}" for what, count in folder.converted.most_common()),
        )


if __name__ == "__main__":
    app()
