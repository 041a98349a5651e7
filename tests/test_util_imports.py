"""caffessd.util.imports.unimportable: a library's optional import fails inside
the block, works again after it, and a module already loaded is left alone."""
import importlib
import sys

import pytest

from caffessd.util.imports import unimportable


def test_a_module_is_unimportable_only_inside_the_block(tmp_path, monkeypatch):
    (tmp_path / "caffessd_probe_module.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "caffessd_probe_module", raising=False)
    with unimportable("caffessd_probe_module"):
        with pytest.raises(ImportError):
            importlib.import_module("caffessd_probe_module")
    assert "caffessd_probe_module" not in sys.modules
    assert importlib.import_module("caffessd_probe_module").VALUE == 7
    with unimportable("caffessd_probe_module"):  # loaded already: someone uses it
        assert importlib.import_module("caffessd_probe_module").VALUE == 7
    monkeypatch.delitem(sys.modules, "caffessd_probe_module")
