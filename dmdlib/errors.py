"""The project's own exception types: errors a user can act on, each naming the file, key or value and what to do.

The stages print these as one line; any other exception is a bug and keeps its traceback.
"""


class DmdError(Exception):
    """Base of every user-facing error."""


class ParamsError(DmdError, ValueError):
    """A params file or combination of params that cannot be used; names the file or key and what is expected."""


class DataError(DmdError, ValueError):
    """Input data (images, prompts, prepared Parquet) that cannot be used; names the file and the fault."""


class TeacherError(DmdError, ValueError):
    """A teacher that is missing, not in the expected layout, or unfit for the asked-for option."""


class PairsError(DmdError, ValueError):
    """A pair shard that cannot be used with this teacher; names the file and the mismatch."""


class OutputError(DmdError, OSError):
    """An output that cannot be written (a folder not writable, a full disk, a file too large); names the path."""


class MissingWeightsError(DmdError, FileNotFoundError):
    """A pretrained weights file that must be downloaded beforehand is not on disk."""


class DivergedError(DmdError, FloatingPointError):
    """A training loss became NaN or infinite; the last good checkpoint is kept."""
