"""Inference: the predictor and its runners, evaluation, output files and pictures, flip TTA, BatchNorm folding
and oneDNN fusion for fast CPU inference."""
