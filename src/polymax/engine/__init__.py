"""Training and evaluation around the model.

- ``train``: the loop (:func:`~polymax.engine.train.fit`) and the CLI-level :func:`~polymax.engine.train.train`.
- ``train_config``: the typed :class:`~polymax.engine.train_config.TrainConfig`, YAML recipes, ``--set``.
- ``optim``: Keras-legacy AdamW, parameter groups, warm-up + polynomial schedule.
- ``checkpoint``: atomic checkpoints (model directory + training state) and RNG capture.
- ``sampler``: the resumable, rank-sharded training stream with per-sample augmentation seeds.
- ``distributed``: torchrun / DDP set-up. ``criterion``: the objective of each task.
- ``assemble``: TrainConfig → model, data, evaluation. ``evaluate``: metrics of a model on a data set.
- ``reporting``: progress bar and scalar logs.

Submodules are imported on demand, so ``import polymax.engine`` stays cheap.
"""
