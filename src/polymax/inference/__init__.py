"""Inference: the predictor and its runners, evaluation, output files, flip TTA, BatchNorm folding and oneDNN
fusion for fast CPU inference. (The drawing primitives are ``polymax.tasks.visualize``: each task draws its own
pictures.)"""
