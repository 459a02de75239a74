"""`features` stage: train the small classifier whose penultimate activations are the offline FID feature space."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import typer

from dmd.stages.common import PARAMS_OPTION, setup_logging, user_errors
from dmdlib.data.images import to_model_range
from dmdlib.data.io import atomic_output, check_writable
from dmdlib.data.prepared import HELDOUT, TRAIN, UNLABELLED, read_image_parquet
from dmdlib.errors import DataError
from dmdlib.evaluation.classifier import predict, save_classifier, train_classifier
from dmdlib.params import load_params

log = logging.getLogger("features")
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    data: Path = typer.Option(Path("data/prepared.parquet"), help="Prepared, labelled data."),
    out: Path = typer.Option(Path("models/classifier.safetensors"), help="Classifier weights (config in metadata)."),
    metrics: Path = typer.Option(Path("metrics/classifier.json"), help="Held-out accuracy of the classifier."),
) -> None:
    """Train on the train split; report accuracy on the held-out split."""
    setup_logging()
    with user_errors():
        config = load_params(params, "features").features
        check_writable(out, metrics)
        dataset = read_image_parquet(data).frame_view()  # video data: a classifier of single frames
        if not dataset.class_names:
            raise DataError(f"{data}: {UNLABELLED}")
        if len(dataset.class_names) == 1:
            log.warning(
                "%s: one class (%s): a classifier of one class learns nothing that tells images apart, so FID in "
                "its feature space (fid_classifier) means little; add classes, or read fid_inception "
                "(evaluate.inception_path)",
                data,
                dataset.class_names[0],
            )
        train, heldout = dataset.subset(TRAIN), dataset.subset(HELDOUT)
        images, labels = to_model_range(dataset.images), torch.from_numpy(dataset.labels)
        model = train_classifier(
            images[train],
            labels[train],
            len(dataset.class_names),
            config.steps,
            config.batch_size,
            config.lr,
            config.seed,
        )
        accuracy = float((predict(model, images[heldout]) == labels[heldout]).float().mean())
        save_classifier(out, model)
        with atomic_output(metrics) as tmp:
            tmp.write_text(json.dumps({"classifier_heldout_accuracy": round(accuracy, 4)}, indent=2))
    log.info("classifier: held-out accuracy %.3f on %d images", accuracy, len(heldout))


if __name__ == "__main__":
    app()
