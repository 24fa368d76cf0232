"""Input handling that runs inside a model's serving signature.

`images`: the image converter of exported SavedModels (channels, padding to
the backbone's size multiple) and the `ImageGeometry` that tasks use to map
their outputs back to the request's image.
"""

from kerasmtl.preprocessors.images import (
    ImageGeometry,
    ImageInput,
    input_names,
    serving_image_inputs,
)

__all__ = ["ImageGeometry", "ImageInput", "input_names", "serving_image_inputs"]
