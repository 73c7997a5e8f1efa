from __future__ import annotations

import json

import pytest

from mmfusion_ros.errors import ReportError
from mmfusion_ros.io.json_file import write_json


def test_writes_and_replaces(tmp_path):
    path = tmp_path / 'deep' / 'result.json'
    write_json(path, {'frames': 3})
    write_json(path, {'frames': 4})
    assert json.loads(path.read_text()) == {'frames': 4}
    assert [p.name for p in path.parent.iterdir()] == ['result.json']


@pytest.mark.parametrize('bad', [{'latency': float('nan')}, {'array': object()}])
def test_unserialisable_result_leaves_the_old_file(tmp_path, bad):
    path = tmp_path / 'result.json'
    write_json(path, {'frames': 1})
    with pytest.raises(ReportError, match=r'result\.json: result is not JSON-serialisable'):
        write_json(path, bad)
    assert json.loads(path.read_text()) == {'frames': 1}
    assert len(list(tmp_path.iterdir())) == 1
