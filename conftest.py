"""Imports the compiled modules (``creditflow.native``) before pytest collects any file.

``--doctest-modules`` imports each source file; for a module not yet imported it would load the
``.py`` beside the ``.so`` the rest of the run uses, and two copies of one class (``KpiDelta`` and
``KpiDelta``) refuse each other. Imported first, pytest finds the compiled module in ``sys.modules``
and finds no doctests there (compiled code keeps no docstrings): ``tests/creditflow/test_native.py``
runs those doctests against the compiled module instead.
"""

import importlib

from creditflow.native import NATIVE_MODULES, module_name, status

if status().mode == "native":
    for source in NATIVE_MODULES:
        importlib.import_module(module_name(source))
