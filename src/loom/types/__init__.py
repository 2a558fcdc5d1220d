"""The type engine: validation and lossless encoding of task inputs and outputs.

``codec_for(annotation)`` gives a :class:`Codec` that checks values against the annotation and
encodes them to JSON-compatible data (and back, to exactly the declared type). ``Interface``
binds and validates a task's call arguments. Values that travel by reference go through a
:class:`BlobStore`.
"""

from ._codecs import Codec, codec_for, register_codec_factory, type_name
from ._interface import Interface, Parameter
from ._store import BlobStore, LocalBlobStore

__all__ = [
    "BlobStore",
    "Codec",
    "Interface",
    "LocalBlobStore",
    "Parameter",
    "codec_for",
    "register_codec_factory",
    "type_name",
]
