import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("APR_PROFILE", "tiny")

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def reference_cases() -> list[dict]:
    """Traces written by the public APR reference implementation, with what its parsers returned."""
    return json.loads((FIXTURES / "apr_reference_traces.json").read_text())
