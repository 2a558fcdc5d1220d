"""Readable, unique run names such as ``brisk-otter-4k7q2m``."""

from __future__ import annotations

import secrets

_ADJECTIVES = (
    "amber", "bold", "brisk", "calm", "clever", "crisp", "daring", "eager", "fair", "fancy",
    "gentle", "glad", "grand", "happy", "hardy", "keen", "kind", "lively", "lucky", "merry",
    "mighty", "nimble", "noble", "proud", "quick", "quiet", "rapid", "bright", "sharp", "shy",
    "silent", "sleek", "smooth", "snappy", "steady", "sunny", "swift", "tidy", "vivid", "witty",
)  # fmt: skip
_NOUNS = (
    "badger", "beaver", "bison", "crane", "falcon", "ferret", "finch", "gecko", "heron", "ibis",
    "jaguar", "koala", "lemur", "lynx", "marten", "moose", "newt", "ocelot", "otter", "owl",
    "panda", "puffin", "quail", "raven", "robin", "salmon", "seal", "shrew", "sparrow", "stoat",
    "tapir", "tern", "tiger", "toucan", "trout", "vole", "walrus", "weasel", "wren", "yak",
)  # fmt: skip
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_run_name() -> str:
    """An adjective, an animal and six random characters (about 2 billion per pair)."""
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{suffix}"
