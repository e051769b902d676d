"""One config schema: shared sections (`sections.py`) composed by each task (`tasks.py`)."""
