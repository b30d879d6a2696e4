"""Data for training and inpainting: image files (``images``), MAT's free-form hole masks
(``holes``) and the deterministic training dataset (``dataset``).

"Mask" here always means a hole mask of an image (1 = known pixel, 0 = hole); the token masks of
the attention ops live with the ops.
"""
from .dataset import ImageFolderMaskDataset, StepSampler, item_rng, list_image_files, load_image, reflect_pad_bottom_right

__all__ = ["ImageFolderMaskDataset", "StepSampler", "item_rng", "list_image_files", "load_image",
           "reflect_pad_bottom_right"]
