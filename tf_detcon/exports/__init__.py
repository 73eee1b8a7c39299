"""The export's manifest (`manifest.py`), below training and evaluation, which both read it."""
