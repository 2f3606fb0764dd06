"""Copy the event contract from ../schemas into the package, so ``pip install ./sdk_py`` ships it.

The SDK validates events locally against the same files the gateway reads. Run this after any change
in schemas/; tests/test_sdk_py_contract.py fails while the copy differs from the original.

    python sdk_py/sync_schemas.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "schemas"
TARGET = Path(__file__).resolve().parent / "clicktrail" / "schemas"
#: The contract proper; README.md and the conformance vectors stay in the repository.
PATTERNS = ("*.schema.json", "events/*.schema.json")


def contract_files(root: Path) -> dict[str, bytes]:
    """The contract's files under ``root``, by path relative to it."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for pattern in PATTERNS for p in sorted(root.glob(pattern))}


def main() -> None:
    shutil.rmtree(TARGET, ignore_errors=True)  # a schema removed upstream must disappear here too
    for name, data in contract_files(SOURCE).items():
        path = TARGET / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"copied schemas/{name}")


if __name__ == "__main__":
    main()
