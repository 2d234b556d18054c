"""Typed configuration: ``model.py`` (what rebuilds a model, saved with its weights) and ``train.py`` (a
training run: data, optimiser, schedule, losses, ``--set`` overrides)."""
