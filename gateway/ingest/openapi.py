"""The OpenAPI description of the ingest API, as GET /openapi.json serves it.

``schemas/openapi.json`` describes the endpoints and refers to the event contract's own files
(``batch.schema.json``, ``event.schema.json``) by relative ``$ref``, so the contract keeps one copy and
a tool reading the repository follows the references itself. Over HTTP a tool gets one document, so
``bundle`` copies each referenced file into ``components/schemas`` and points every reference there,
pointers into those files included (``event.schema.json#/$defs/time``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gateway.ingest.contract import SCHEMA_DIR

DOCUMENT = SCHEMA_DIR / "openapi.json"


def bundle(path: Path = DOCUMENT) -> dict[str, Any]:
    """The document at ``path`` with every file it refers to, directly or through another, in components/schemas."""
    document = json.loads(path.read_text("utf-8"))
    schemas = document.get("components", {}).get("schemas", {})
    names: dict[Path, str] = {}  # the files bundled so far, by their name in components/schemas
    files: dict[str, Any] = {}

    def target(ref: str, source: Path) -> str:
        location, _, fragment = ref.partition("#")
        if not location:
            # A pointer into its own file; the document's own pointers are absolute already.
            return ref if source == path else f"#/components/schemas/{names[source]}{fragment}"
        # normpath, not resolve: resolving would leave gateway/_data/schemas, a symlink, for the folder it links to.
        file = Path(os.path.normpath(source.parent / location))
        if file not in names:
            name = file.relative_to(path.parent).as_posix().removesuffix(".schema.json").replace("/", ".")
            if name in schemas:
                raise ValueError(f"{path.name}: components/schemas/{name} is also the name of {location}")
            names[file] = name  # before its own references are followed, so a cycle ends here
            files[name] = rewrite(json.loads(file.read_text("utf-8")), file)
        return f"#/components/schemas/{names[file]}{fragment}"

    def rewrite(node: Any, source: Path) -> Any:
        if isinstance(node, dict):
            return {key: target(value, source) if key == "$ref" and isinstance(value, str) else rewrite(value, source)
                    for key, value in node.items()}
        if isinstance(node, list):
            return [rewrite(item, source) for item in node]
        return node

    bundled = rewrite(document, path)
    bundled.setdefault("components", {}).setdefault("schemas", {}).update(files)
    return bundled
