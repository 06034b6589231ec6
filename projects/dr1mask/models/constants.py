"""Values shared by DR1Mask's modules and configs."""

# Label of void pixels in the semantic maps mmdet's ``LoadPanopticAnnotations``
# makes (and the data preprocessor's ``seg_pad_value``): never a target.
IGNORE_INDEX = 255
