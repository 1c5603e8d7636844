"""Vitrine encoders: from a listing's cover image and title to one embedding and a mismatch score.

Serving modules (:mod:`encoders.preprocess`, :mod:`encoders.tokenize`, :mod:`encoders.manifest`,
:mod:`encoders.runtime`) need only Pillow, numpy, tokenizers and onnxruntime. The torch modules
(:mod:`encoders.resnet`, :mod:`encoders.text`, :mod:`encoders.fusion`, :mod:`encoders.losses`,
:mod:`encoders.train`, :mod:`encoders.export`) are for training and export and are imported
only by the commands that need them.
"""
