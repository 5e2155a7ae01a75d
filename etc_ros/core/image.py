"""The one image resize of the project (numpy + PIL only).

Every image on its way to the model or into a dataset is resized here, with ONE filter (PIL bicubic): the
policy's input (etc_ros.core.processor and the training frame cache), teleop recordings
(etc_ros.teleop.recorder) and imported bags (etc_ros.data.bag_import). A stored episode and a live camera
frame thus reach the model through the same filter (no train/serve skew from interpolation).

Bicubic is the filter the shipped policy was trained with: the model input path is unchanged bit for bit.
"""
from __future__ import annotations

import numpy as np


def resize_image(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxWx3 uint8 -> height x width x 3 uint8: the whole image (no crop, the aspect ratio may change),
    PIL bicubic. An image already at that size is returned as is (no copy)."""
    if img.shape[:2] == (height, width):
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((int(width), int(height)), Image.BICUBIC))
