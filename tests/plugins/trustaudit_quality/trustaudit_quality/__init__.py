"""An example trustaudit plugin: one check family in one file (``checks.py``)."""

__all__: list[str] = []
