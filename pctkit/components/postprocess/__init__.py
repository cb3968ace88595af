"""Post-processing of predicted class probabilities, applied at evaluation time.

Post-processing contract
------------------------
A post-processing factory (entry-point group ``pctkit.postprocess``) takes only keyword
recipe parameters and returns a picklable callable object::

    refine(image, probabilities) -> probabilities

- ``image``: ``uint8`` numpy array ``(H, W, 3)``, RGB, the image as loaded (not
  normalised, not padded);
- ``probabilities``: ``float32`` numpy array ``(C, H, W)``, a distribution over the C
  classes at every pixel (the softmax of the averaged logits, cropped to the image);
- returns refined ``float32`` probabilities ``(C, H, W)``; the prediction is their
  argmax.

It runs on the CPU, one image at a time, and uses no random numbers. A factory whose
library is an optional extra imports it when called and raises
:class:`~pctkit.components.contracts.ParameterError` (parameter ``type``) with the
install command when it is missing.

Built-in: ``dense_crf`` (the released PCT code's evaluation of the retrained net).
"""
