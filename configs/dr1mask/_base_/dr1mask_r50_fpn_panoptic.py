_base_ = './dr1mask_r50_fpn.py'

# Panoptic DR1Mask (Sec. 3.3): D = 64 (Table 6), vector embeddings (Table 7),
# the unified panoptic layer with 53 static stuff channels.
model = dict(
    data_preprocessor=dict(pad_seg=True, seg_pad_value=255),
    basis=dict(channels=64),
    mask_head=dict(attention='vector'),
    panoptic_head=dict(
        type='UnifiedPanopticLayer',
        num_things_classes=80,
        num_stuff_classes=53,
        loss_weight=1.0),
    # Detections scoring >= score_thr become thing channels; an instance
    # whose own mask has IoU > mask_overlap with a higher-scored one's is
    # dropped; stuff segments under stuff_area_limit pixels become void.
    test_cfg=dict(
        panoptic=dict(score_thr=0.4, mask_overlap=0.5,
                      stuff_area_limit=4096)))
