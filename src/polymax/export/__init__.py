"""Export of polymax models to deployment formats (ONNX: :mod:`polymax.export.onnx`)."""
