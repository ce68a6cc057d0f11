"""relaxit's built-in methods, one module per method (or tight family).

Each module is declared under the ``relaxit`` entry-point group in ``pyproject.toml``,
exactly as a third-party plugin declares its own, and uses only the public API of
:mod:`relaxit_core`.  Importing this package imports no method module.
"""
