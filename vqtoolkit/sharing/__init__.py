"""Sharing and deploying: the Hugging Face folder layout, the Hub, and ONNX export of the two halves.

:mod:`.pretrained` writes and reads a model folder (``model.safetensors``, ``config.json``, a
``README.md`` model card); :mod:`.hub` moves such folders to and from the Hugging Face Hub
(``pip install "vqtoolkit[hub]"``); :mod:`.onnx` exports the encoder and decoder for ONNX Runtime
(``pip install "vqtoolkit[onnx]"``). The guide is ``docs/sharing.md``.
"""
