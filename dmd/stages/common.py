"""What every stage CLI shares: the params option, logging, the compute device, and user errors as messages."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import typer

from dmdlib.data.io import WRITE_ERRNOS, atomic_output, claim_folder
from dmdlib.errors import DmdError, OutputError, ParamsError
from dmdlib.evaluation.curves import plot_curves
from dmdlib.provenance import code_digest

PARAMS_OPTION = typer.Option(
    Path("params.yaml"),
    "--params",
    help="YAML params file; the stage reads its own section and validates the whole file.",
)
TEACHER_OPTION = typer.Option(
    Path("models/teacher"), "--teacher", help="Teacher folder written by the `teacher` stage."
)
PROMPTS_OPTION = typer.Option(
    Path("data/prompts"), "--prompts", help="Prompt embeddings from the `prompts` stage (text-to-image teachers only)."
)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a user-facing error (the project's own types: bad params or files, a missing download, a diverged run;
    and a write that failed for want of space, wherever it happened) as one message and exit with status 2, unless
    DMD_TRACEBACK=1 asks for the traceback; any other error is a bug and keeps its traceback."""
    try:
        yield
    except (DmdError, OSError) as err:
        if os.environ.get("DMD_TRACEBACK") == "1" or not isinstance(err, DmdError) and err.errno not in WRITE_ERRNOS:
            raise
        if isinstance(err, DmdError):
            print(f"error: {err}", file=sys.stderr)
        else:  # a library's own write (dvclive's curves, a grid): its file, if it says, and the cure
            where = f"{err.filename}: could not be written" if err.filename else "a file could not be written"
            print(
                f"error: {where} ({err.strerror}); free space where the outputs, checkpoint and training log go, and "
                "run again (training resumes from its last checkpoint)",
                file=sys.stderr,
            )
        del err
        gc.collect()  # objects the failed run held (DVC's git packs) close now, not in noisy finalisers at exit
        raise typer.Exit(code=2) from None


def code_of(stage: str) -> str:
    """The digest of a stage's code and of all the project's code it imports: what its checkpoints and shards claim,
    so that a stage DVC re-runs after a code change does not hand back the old result."""
    return code_digest(stage, ("dmdlib", "dmd"))


def compute_device() -> torch.device:
    """The GPU when there is one (hide it with CUDA_VISIBLE_DEVICES=''), else the CPU: accelerate's choice for
    `distill`."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Curves:
    """A stage's training curves: dvclive's TSVs (which `dvc plots` reads), the same values in the tracker params
    name (TensorBoard or W&B, off by default), and at the end a PNG picture of them all."""

    def __init__(self, live, folder: Path, picture: Path | None, tracker: str | None, resumed_step: int):
        self.live, self.folder, self.picture = live, folder, picture
        self.step = resumed_step
        # not in the curves' folder, which is in git: trackers/<stage> (`tensorboard --logdir trackers`)
        where = Path("trackers") / folder.name
        self.tracker = None if tracker is None else TRACKERS[tracker](where, resumed_step)

    def log_metric(self, name: str, value: float) -> None:
        self.live.step = self.step
        self.live.log_metric(name, value)
        if self.tracker is not None:
            self.tracker.log(name, value, self.step)

    def end(self) -> None:
        self.live.end()
        if self.tracker is not None:
            self.tracker.close()
        if self.picture is not None:
            curves = read_curves(self.folder)
            if curves:
                plot_curves(curves, self.picture, f"{self.folder.name}: training curves")

    def __enter__(self) -> "Curves":
        return self

    def __exit__(self, *exc) -> None:
        self.end()


class TensorBoardCurves:
    """Event files in `where`; a resumed run first drops the steps past its checkpoint, which it logs again."""

    def __init__(self, where: Path, resumed_step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ParamsError("tracker 'tensorboard': install it with `pip install 'dmd[tensorboard]'`") from None
        self.writer = SummaryWriter(log_dir=str(where), purge_step=resumed_step + 1 if resumed_step else None)

    def log(self, name: str, value: float, step: int) -> None:
        self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbCurves:
    """One W&B run per training (its id kept in `where`), which a resumed training goes on logging into."""

    def __init__(self, where: Path, resumed_step: int):
        try:
            import wandb
        except ImportError:
            raise ParamsError("tracker 'wandb': install it with `pip install 'dmd[wandb]'`") from None
        where.mkdir(parents=True, exist_ok=True)
        record = where / "wandb-run-id"
        if not record.exists():
            record.write_text(wandb.util.generate_id())
        self.run = wandb.init(dir=str(where), name=where.name, id=record.read_text().strip(), resume="allow")

    def log(self, name: str, value: float, step: int) -> None:
        self.run.log({name: value}, step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS = {"tensorboard": TensorBoardCurves, "wandb": WandbCurves}  # params' `tracker` values


def open_live(folder: Path, resumed_step: int, picture: Path | None = None, tracker: str | None = None) -> Curves:
    """The training curves of a stage, in a folder of their own that a fresh run (`resumed_step` 0) empties; a
    resumed run drops the rows past its checkpoint's step, which it logs again. dvclive opens the project's DVC
    repository, whose caches a full disk breaks first: that is one line naming the folder, not a traceback."""
    from dvclive import Live

    claim_folder(folder, clear=not resumed_step)
    try:
        if resumed_step:
            _drop_rows_after(folder, resumed_step)
        live = Live(dir=str(folder), resume=bool(resumed_step), save_dvc_exp=False, dvcyaml=None, report=None)
    except (OSError, sqlite3.Error) as err:
        raise OutputError(
            f"{folder}: the training log could not start ({type(err).__name__}: {err}); free space on the "
            "disk, or make the project folder writable"
        ) from None
    return Curves(live, folder, picture, tracker, resumed_step)


def read_curves(folder: Path) -> dict:
    """name -> (steps, values) of every curve dvclive wrote in `folder` (plots/metrics/<name>.tsv)."""
    curves = {}
    for tsv in sorted((folder / "plots" / "metrics").rglob("*.tsv")):
        header, *rows = tsv.read_text().splitlines()
        columns = header.split("\t")
        name = str(tsv.relative_to(folder / "plots" / "metrics").with_suffix(""))
        cells = [row.split("\t") for row in rows if row]
        step = columns.index("step")  # the value is the last column, after step (and dvclive's timestamp, if any)
        curves[name] = ([int(c[step]) for c in cells], [float(c[-1]) for c in cells])
    return curves


def _drop_rows_after(folder: Path, step: int) -> None:
    """Rows of dvclive's curves (TSV with a `step` column) past `step`: a killed run logged them after its last
    checkpoint, and the resumed run logs those steps again."""
    for curve in sorted((folder / "plots" / "metrics").rglob("*.tsv")):
        header, *rows = curve.read_text().splitlines(keepends=True)
        column = header.rstrip("\n").split("\t").index("step")
        kept = [row for row in rows if int(row.split("\t")[column]) <= step]
        if len(kept) < len(rows):
            with atomic_output(curve) as tmp:
                tmp.write_text(header + "".join(kept))
