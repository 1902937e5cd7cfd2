"""Drop the entries of our own distributions from pip-compile's lock files.

authsidecar-client is built from clients/python and installed from the tree (``pip install -e ./clients/python``);
a wheel built here has no stable hash, so it cannot be pinned by one. Its ``# via`` mentions stay harmless.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

LOCAL = ("authsidecar-client",)


def drop(text: str) -> str:
    """The lock text without the requirement blocks (line, hashes, via comments) of LOCAL distributions."""
    blocks = re.split(r"(?m)^(?=\S)", text)
    return "".join(b for b in blocks if not any(re.match(rf"{name}==", b) for name in LOCAL))


def main(paths: list[str]) -> int:
    for path in map(Path, paths):
        path.write_text(drop(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
