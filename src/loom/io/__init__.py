"""Values that tasks pass by reference: files, directories and data frames."""

from . import _codecs  # noqa: F401  (registers the io codecs with the type engine)
from ._dataframe import DataFrame
from ._dir import Dir
from ._file import File
from ._hashing import HashFunction

__all__ = ["DataFrame", "Dir", "File", "HashFunction"]
