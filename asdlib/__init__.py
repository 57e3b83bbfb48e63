"""asdlib: helpers for the WISTLAB DCASE 2026 Task 2 anomalous sound detection notebooks.

Modules are imported explicitly (``from asdlib import metrics``); importing the package
does no work.
"""

__version__ = "0.1.0"
