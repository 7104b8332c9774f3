import pytest

import isolate


@pytest.fixture
def session(tmp_path):
    with isolate.Session("agent", workspace=tmp_path) as s:
        yield s
