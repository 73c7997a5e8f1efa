"""JSON results written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ReportError

__all__ = ['write_json']


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON; a failure leaves any earlier file at ``path`` untouched."""
    path = Path(path)
    try:
        text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + '\n'
    except (TypeError, ValueError) as err:
        raise ReportError(f'{path}: result is not JSON-serialisable ({err})') from err
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
        with os.fdopen(fd, 'w') as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise ReportError(f'{path}: cannot write JSON ({err.strerror or err})') from err
