"""Training checkpoints: what settings made them, which one a run resumes, the ones kept for other settings or shorter
runs, and pruning those."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dmdlib.data.io import load_tensors
from dmdlib.errors import DataError, ParamsError

log = logging.getLogger(__name__)
CORRUPT_CHECKPOINT = "delete it to start this stage's training over"


def flat_settings(settings: dict, prefix: str = "") -> dict:
    """Nested settings as one level of dotted keys (`distill.fake_lr`), the form checkpoints record and compare."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def fingerprint(settings: dict) -> str:
    """SHA-256 of the settings a training run learns from (JSON, sorted keys): equal settings, equal fingerprint."""
    return hashlib.sha256(_settings_json(settings).encode()).hexdigest()


def checkpoint_identity(settings: dict, last_step: int) -> dict:
    """What a checkpoint records of the run that made it: the settings' fingerprint, the settings themselves (to name
    changes) and the step the run was to end at (a run's last checkpoint is kept when a longer run goes on from it)."""
    return {"fingerprint": fingerprint(settings), "settings": _settings_json(settings), "last_step": last_step}


def _settings_json(settings: dict) -> str:
    return json.dumps(flat_settings(settings), sort_keys=True, default=str)


@dataclass(frozen=True, order=True)
class Kept:
    """A checkpoint kept beside the current one: `<name>.<12 hex of its fingerprint>.step-<N>.pt`."""

    path: Path
    fingerprint: str
    step: int


def kept_checkpoints(checkpoint: str | os.PathLike) -> list[Kept]:
    """The checkpoints kept beside `checkpoint`, by name."""
    checkpoint = Path(checkpoint)
    stem, suffix = re.escape(checkpoint.stem), re.escape(checkpoint.suffix)
    pattern = re.compile(rf"{stem}\.([0-9a-f]{{12}}|unknown)\.step-(\d+){suffix}")
    found = [(path, pattern.fullmatch(path.name)) for path in checkpoint.parent.glob(f"{checkpoint.stem}.*")]
    return sorted(Kept(path, match[1], int(match[2])) for path, match in found if match)


def _kept_name(checkpoint: Path, digest: str, step: int) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}.{digest[:12]}.step-{step:06d}{checkpoint.suffix}")


def resumable_step(checkpoint: str | os.PathLike, fingerprint: str) -> int:
    """The step a training run would resume from: its checkpoint's if present and made with `fingerprint`, else 0."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        return 0
    state = load_tensors(checkpoint, DataError, CORRUPT_CHECKPOINT)
    return int(state["step"]) if state.get("fingerprint") == fingerprint else 0


def claim_checkpoint(checkpoint: str | os.PathLike, settings: dict, last_step: int, steps_key: str) -> int:
    """Make `checkpoint` the one of a run with `settings` (what it learns from; run length excluded) and return the
    step it resumes from, saying in one log line what it did. Nothing is overwritten: a checkpoint of other settings,
    or one past `last_step`, is kept beside it (`Kept`); the kept one of these settings furthest along but not past
    `last_step` is taken back; and a finished run's last checkpoint stays kept when a longer run goes on from it, so
    that the shorter run can come back. Only when none of these settings is at or below `last_step` does the run stop,
    naming `steps_key`."""
    checkpoint, wanted = Path(checkpoint), fingerprint(settings)
    said, step, state, set_aside = [], 0, None, False
    if checkpoint.is_file():
        state = load_tensors(checkpoint, DataError, CORRUPT_CHECKPOINT)
        step = int(state.get("step", 0))
        if state.get("fingerprint") != wanted or step > last_step:
            aside = _kept_name(checkpoint, state.get("fingerprint") or "unknown", step)
            os.replace(checkpoint, aside)
            why = (
                f"made with other settings ({_differing_keys(state.get('settings'), settings)})"
                if state.get("fingerprint") != wanted
                else f"at step {step}, past {steps_key} = {last_step}"
            )
            said.append(f"{checkpoint.name} was {why}: kept as {aside.name}")
            state, step, set_aside = None, 0, True
    if state is None:
        usable = [kept for kept in kept_checkpoints(checkpoint) if kept.fingerprint == wanted[:12]]
        usable = [kept for kept in usable if kept.step <= last_step]
        if usable:
            back = max(usable, key=lambda kept: kept.step)
            os.replace(back.path, checkpoint)
            said.append(f"taking back {back.path.name}, made with these settings")
            state = load_tensors(checkpoint, DataError, CORRUPT_CHECKPOINT)
            step = int(state["step"])
        elif any(kept.fingerprint == wanted[:12] for kept in kept_checkpoints(checkpoint)):
            raise ParamsError(
                f"{checkpoint}: every checkpoint kept of these settings is past {steps_key} = {last_step}; raise "
                f"{steps_key} to go on from one, or move them away to train {last_step} steps from the start"
            )
    if state is not None and 0 < step < last_step and state.get("last_step") == step:
        _keep_finished(checkpoint, wanted, step, said)
    said.append(f"resuming from step {step}" if step else "starting from step 0")
    if not checkpoint.is_file() and not said[:-1]:
        said.insert(0, f"no checkpoint at {checkpoint} (checkpoints live outside git and DVC: a fresh clone has none)")
    log.log(logging.WARNING if set_aside and state is None else logging.INFO, "%s", "; ".join(said))
    return step


def _keep_finished(checkpoint: Path, wanted: str, step: int, said: list[str]) -> None:
    """A finished run's last checkpoint, about to be trained further, stays kept: as a hard link, which costs no
    space until the longer run's first save replaces the file."""
    kept = _kept_name(checkpoint, wanted, step)
    try:
        os.link(checkpoint, kept)
    except FileExistsError:
        return
    except OSError as err:  # a file system without hard links: say so rather than copy tens of GB
        said.append(f"the finished run at step {step} could not be kept ({err.strerror})")
        return
    said.append(f"the finished run at step {step} kept as {kept.name}")


def prune_kept(checkpoint: str | os.PathLike, keep: int) -> list[Kept]:
    """Delete the checkpoints kept beside `checkpoint` but the `keep` most recently written; return those deleted."""
    kept = sorted(kept_checkpoints(checkpoint), key=lambda kept: kept.path.stat().st_mtime_ns, reverse=True)
    for old in kept[keep:]:
        old.path.unlink()
    return kept[keep:]


def _differing_keys(recorded: str | None, settings: dict) -> str:
    """The flat keys whose values differ between a checkpoint's recorded settings and `settings`, with both values."""
    if recorded is None:
        return "it records no settings"
    recorded, current = json.loads(recorded), json.loads(_settings_json(settings))
    keys = sorted(key for key in {*recorded, *current} if recorded.get(key) != current.get(key))
    return ", ".join(f"{key}: {_short(recorded.get(key))!r} -> {_short(current.get(key))!r}" for key in keys[:8]) + (
        f" and {len(keys) - 8} more" if len(keys) > 8 else ""
    )


def _short(value):
    """A SHA-256 (of code, a teacher, a split) as its first 12 hex digits, as the kept checkpoints are named."""
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return value[:12]
    return [_short(item) for item in value] if isinstance(value, list) else value
