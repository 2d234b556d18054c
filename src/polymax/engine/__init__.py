"""Training only (inference lives in ``polymax.inference``).

- ``train``: the loop (:func:`~polymax.engine.train.fit`) and the CLI-level :func:`~polymax.engine.train.train`.
- ``optim``: Keras-legacy AdamW, parameter groups, warm-up + polynomial schedule.
- ``checkpoint``: atomic checkpoints (model directory + training state) and RNG capture.
- ``sampler``: the resumable, rank-sharded training stream with per-sample augmentation seeds.
- ``distributed``: torchrun / DDP set-up; ``local_ranks``: the same ranks on this machine's cores, without torchrun.
- ``objective``: the training objective over the model's tasks (one criterion per task, terms summed).
- ``assemble``: TrainConfig → model, data, evaluation.
- ``reporting``: progress bar and scalar logs; ``precise_bn``: BatchNorm statistics re-estimation.

Submodules are imported on demand, so ``import polymax.engine`` stays cheap.
"""
