"""Reading and writing model folders (``config.json`` + ``model.safetensors``)."""
