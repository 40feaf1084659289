"""Stands in for the compiled extension ``gastrt._native`` (csrc/bindings/) when it was not built.

The import system prefers an extension module to a source file of the same name in the same
folder, so with a built install this file is never executed; without one, ``import
gastrt._native`` fails here with the reason, and ``backends.base.native_module()`` returns None.
Having the module in the source tree also lets import analysis see ``gastrt._native`` as the
leaf module it is (it imports only ``gastrt.errors``), not as the package root.
"""
raise ImportError("gastrt._native (the compiled runtime) is not built in this install: reinstall "
                  "gastrt with a C++ compiler (pip install .)")
