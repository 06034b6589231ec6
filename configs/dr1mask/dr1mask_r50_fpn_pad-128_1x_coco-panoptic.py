_base_ = './dr1mask_r50_fpn_1x_coco-panoptic.py'

# Table 5: inputs padded to a multiple of 128 with plain bilinear upsampling
# in DR1Basis (the default pads to 4 and upsamples aligned).
model = dict(
    data_preprocessor=dict(pad_size_divisor=128), basis=dict(aligned=False))
