"""Imported by Python at start-up in a test's pinsyncd subprocess (this directory is on its
PYTHONPATH): turns on `tests.loopback_guard` once `pinsyncd.kubo` is imported, without
importing anything else up front."""

import importlib.abc
import importlib.util
import os
import sys

if os.environ.get("LOOPBACK_GUARD_DIALS"):

    class _AfterKubo(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "pinsyncd.kubo":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            execute = loader.exec_module

            def exec_module(module):
                execute(module)
                from tests import loopback_guard

                loopback_guard.install()

            loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _AfterKubo())
