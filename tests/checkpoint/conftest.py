"""The official module names that the emulated pickles refer to, registered for one test."""
import pytest

from .official_pickles import _register_official_names


@pytest.fixture
def official_names(monkeypatch):
    """Register importable stand-ins for torch_utils.persistence / dnnlib.util while pickling.

    pickle writes globals by name and checks that the name resolves, so the writer needs these
    modules; the loader under test must not: tests call ``official_names.undo()`` before loading.
    """
    return _register_official_names(monkeypatch)
