"""Bundle files with a retouched safetensors header, to test how loading validates the header."""

from __future__ import annotations

from pathlib import Path


def retouch(source: Path, target: Path, changes: dict[str, object], raw_config: str | None = None) -> Path:
    """Copy a bundle with header ``config`` fields changed (dotted names; NaN written as JSON ``NaN``)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        header = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    config = json.loads(header["config"])
    for dotted, value in changes.items():
        *path, key = dotted.split(".")
        section = config
        for part in path:
            section = section[part]
        section[key] = value
    header["config"] = raw_config if raw_config is not None else json.dumps(config)
    save_file(tensors, str(target), metadata=header)
    return target
