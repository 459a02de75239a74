"""`checkpoints` command (beside the pipeline): list the training checkpoints kept beside the current ones (made with
other settings, or a shorter run's last one, each `<name>.<fingerprint>.step-<N>.pt`), and with --keep delete all but
the newest. A stage takes a kept checkpoint back when its settings return, so delete only what you will not run again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dmd.stages.common import setup_logging, user_errors
from dmdlib.data.checkpoints import kept_checkpoints, prune_kept

log = logging.getLogger("checkpoints")
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    folder: Path = typer.Option(Path("checkpoints"), help="Folder of checkpoints, searched with its sub-folders."),
    keep: int | None = typer.Option(
        None, min=0, help="Delete all but the KEEP most recently written kept checkpoints of each current one."
    ),
) -> None:
    """List each current checkpoint's kept ones (step, size); with --keep, delete the older ones."""
    setup_logging()
    with user_errors():
        # `distill.pt` for `distill.pt` itself and for every `distill.<fingerprint>.step-<N>.pt`
        currents = sorted({path.with_name(path.name.split(".")[0] + ".pt") for path in folder.rglob("*.pt")})
        for current in currents:
            kept = kept_checkpoints(current)
            deleted = prune_kept(current, keep) if keep is not None else []
            log.info("%s: %d kept beside it%s", current, len(kept), f", {len(deleted)} deleted" if deleted else "")
            for entry in kept:
                gone = entry in deleted
                size = entry.path.stat().st_size if not gone else None
                log.info(
                    "  %s  step %d  %s", entry.path.name, entry.step, "deleted" if gone else f"{size / 2**20:.1f} MiB"
                )
        if not currents:
            log.info("%s: no checkpoints", folder)


if __name__ == "__main__":
    app()
