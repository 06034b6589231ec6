_base_ = [
    './_base_/coco_panoptic_ms.py', './_base_/schedule_90k.py',
    './_base_/dr1mask_r50_fpn_panoptic.py'
]

# Keep the checkpoint with the best PQ (CocoPanopticMetric's key).
default_hooks = dict(
    checkpoint=dict(save_best='coco_panoptic/PQ', rule='greater'))

# The paper's ablations (Tables 2, 5, 7: 1x panoptic runs) use a basis of
# width 32 (Sec. 4, "Channel width of the DR1Basis is 32"); the 3x configs
# of its main results (Table 9) use 64.
model = dict(basis=dict(channels=32))
