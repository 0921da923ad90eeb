"""The one SQL merge engine (engine.py, merge.py, stage.py, tables.py, checkpoints.py) and a dialect per engine."""
