"""User errors are the project's own types and print as one line; anything else is a bug and keeps its traceback."""

import pytest
import typer

from dmdlib.errors import DataError, DivergedError, DmdError, MissingWeightsError, PairsError, ParamsError, TeacherError
from stages.common import user_errors


@pytest.mark.parametrize("error", [ParamsError, DataError, TeacherError, PairsError, MissingWeightsError, DivergedError])
def test_project_errors_print_one_line_and_exit_2(error, capsys, monkeypatch):
    monkeypatch.delenv("DMD_TRACEBACK", raising=False)
    assert issubclass(error, DmdError)
    with pytest.raises(typer.Exit) as info, user_errors():
        raise error("data.parquet: what is wrong and what to do")
    assert info.value.exit_code == 2
    assert capsys.readouterr().err == "error: data.parquet: what is wrong and what to do\n"


@pytest.mark.parametrize("error", [ValueError, FileNotFoundError, FloatingPointError, KeyError])
def test_other_errors_are_bugs_and_keep_their_traceback(error):
    with pytest.raises(error), user_errors():
        raise error("a programming bug")


def test_traceback_on_request(monkeypatch):
    monkeypatch.setenv("DMD_TRACEBACK", "1")
    with pytest.raises(ParamsError), user_errors():
        raise ParamsError("params.yaml: distill.steps: ...")
