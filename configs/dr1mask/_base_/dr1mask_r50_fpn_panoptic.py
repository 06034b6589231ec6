_base_ = './dr1mask_r50_fpn.py'

# Panoptic DR1Mask (Sec. 3.3): D = 64 (Table 6), vector embeddings (Table 7),
# the unified panoptic layer with 53 static stuff channels.
model = dict(
    data_preprocessor=dict(pad_seg=True, seg_pad_value=255),
    basis=dict(channels=64),
    mask_head=dict(attention='vector'),
    panoptic_head=dict(
        type='UnifiedPanopticLayer',
        num_things=80,
        num_stuff=53,
        loss_weight=1.0,
        score_thr=0.4,
        stuff_area_thr=4096))
