"""DR1Mask end to end on small inputs: losses, gradients, predictions."""
import pytest
import torch

from mmdet.evaluation.functional import INSTANCE_OFFSET

from conftest import (CONFIGS, NUM_STUFF, NUM_THINGS, build_model,
                      load_config, make_sample, preprocess, small_model_cfg)

MANY_BOXES = [[4, 4, 40, 30], [20, 10, 60, 62], [50, 36, 90, 70],
              [0, 0, 96, 80], [70, 2, 94, 20]]
MANY_LABELS = [0, 1, 2, 3, 1]
EXPECTED_LOSSES = {
    'loss_cls', 'loss_bbox', 'loss_centerness', 'loss_mask',
    'loss_aux_semantic', 'loss_panoptic'
}


def compute_losses(model, specs):
    images, samples = zip(*[make_sample(**spec) for spec in specs])
    data = preprocess(model, list(images), list(samples), training=True)
    return model.loss(data['inputs'], data['data_samples'])


def unreached_parameters(model, loss):
    model.zero_grad()
    loss.backward()
    return [
        name for name, p in model.named_parameters()
        if p.requires_grad and p.grad is None
    ]


@pytest.mark.parametrize('attention', ['vector', 'full', 'factored'])
def test_loss_without_instances(attention):
    """Only the classification losses are non-zero, and every parameter is
    still reached, so DDP cannot hang on an image with no instance."""
    panoptic = attention == 'vector'
    model = build_model(small_model_cfg(panoptic, attention))
    losses = compute_losses(
        model, [dict(img_hw=(64, 76), boxes=[], labels=[], stuff_label=255)])
    assert set(losses) == EXPECTED_LOSSES - (
        set() if panoptic else {'loss_panoptic'})
    assert losses['loss_cls'] > 0
    assert losses['loss_aux_semantic'] > 0
    for name in set(losses) - {'loss_cls', 'loss_aux_semantic'}:
        assert losses[name].item() == 0, name
    total = sum(losses.values())
    assert torch.isfinite(total)
    assert unreached_parameters(model, total) == []


@pytest.mark.parametrize('attention', ['vector', 'full', 'factored'])
@pytest.mark.parametrize('boxes,labels', [([[10, 8, 50, 40]], [2]),
                                          (MANY_BOXES, MANY_LABELS)])
def test_loss_with_instances(attention, boxes, labels):
    panoptic = attention == 'vector'
    model = build_model(small_model_cfg(panoptic, attention))
    losses = compute_losses(model, [
        dict(img_hw=(84, 100), boxes=boxes, labels=labels),
        dict(img_hw=(60, 72), boxes=[[5, 5, 30, 40]], labels=[0],
             stuff_label=NUM_THINGS + 2),
    ])
    for name, value in losses.items():
        assert torch.isfinite(value), name
        assert value > 0, name
    assert unreached_parameters(model, sum(losses.values())) == []
    # The positives are read once: no map of this iteration is held into
    # the next, and reading them again is named as the mistake it is.
    assert model.bbox_head._positives == {}
    with pytest.raises(RuntimeError, match='call that first'):
        model.bbox_head.positive_infos([])


@pytest.mark.parametrize('attention', ['vector', 'full', 'factored'])
def test_one_training_step_lowers_the_loss_on_the_same_batch(attention):
    """Each attention mode trains: a few SGD steps on one batch fit it."""
    model = build_model(small_model_cfg(False, attention))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    spec = [dict(img_hw=(64, 64), boxes=[[8, 8, 40, 48]], labels=[1])]
    torch.manual_seed(1)
    images, samples = zip(*[make_sample(**s) for s in spec])
    data = preprocess(model, list(images), list(samples), training=True)
    history = []
    for _ in range(4):
        losses = model.loss(data['inputs'], data['data_samples'])
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(losses['loss_mask'].item())
    assert history[-1] < history[0]


def predict(model, specs, rescale=True):
    images, samples = zip(*[make_sample(**spec) for spec in specs])
    data = preprocess(model, list(images), list(samples), training=False)
    model.eval()
    with torch.no_grad():
        return model.predict(data['inputs'], data['data_samples'], rescale)


PREDICT_SPECS = [
    dict(img_hw=(70, 90), boxes=MANY_BOXES[:2], labels=[0, 1], scale=0.5),
    dict(img_hw=(64, 52), boxes=[[4, 4, 30, 30]], labels=[3], scale=1.25),
]


def test_predict_returns_original_size_outputs():
    model = build_model(small_model_cfg(panoptic=True))
    results = predict(model, PREDICT_SPECS)
    for result in results:
        ori_h, ori_w = result.ori_shape
        instances = result.pred_instances
        assert len(instances) > 0
        assert instances.masks.dtype == torch.bool
        assert tuple(instances.masks.shape[-2:]) == (ori_h, ori_w)
        assert instances.bboxes[:, [0, 2]].max() <= ori_w + 1e-3
        assert instances.bboxes[:, [1, 3]].max() <= ori_h + 1e-3
        assert tuple(result.pred_panoptic_seg.sem_seg.shape) == (1, ori_h,
                                                                 ori_w)


def test_predict_boxes_are_rescaled_by_the_scale_factor():
    model = build_model(small_model_cfg(panoptic=False))
    at_input = predict(model, PREDICT_SPECS, rescale=False)
    at_original = predict(model, PREDICT_SPECS, rescale=True)
    for spec, small, big in zip(PREDICT_SPECS, at_input, at_original):
        torch.testing.assert_close(big.pred_instances.bboxes,
                                   small.pred_instances.bboxes / spec['scale'])
        assert tuple(small.pred_instances.masks.shape[-2:]) == spec['img_hw']


def test_panoptic_ids_decode_to_valid_classes():
    model = build_model(small_model_cfg(panoptic=True))
    void = NUM_THINGS + NUM_STUFF
    for result in predict(model, PREDICT_SPECS):
        ids = result.pred_panoptic_seg.sem_seg.unique()
        things = ids[ids >= INSTANCE_OFFSET]
        stuff = ids[ids < INSTANCE_OFFSET]
        assert ((things % INSTANCE_OFFSET) < NUM_THINGS).all()
        assert ((stuff >= NUM_THINGS) & (stuff <= void)).all()
        assert len(things) > 0
        instance_numbers = things // INSTANCE_OFFSET
        assert len(instance_numbers.unique()) == len(instance_numbers)
        assert instance_numbers.max() <= len(result.pred_instances)


def test_tensor_mode_needs_no_ground_truth():
    model = build_model(small_model_cfg(panoptic=True))
    outputs = model(torch.rand(2, 3, 68, 92), mode='tensor')
    assert len(outputs.cls_scores) == len(outputs.box_feats) == 5
    assert len(outputs.contexts) == len(outputs.fpn) == 5
    assert outputs.basis.shape == (2, model.basis.channels, 17, 23)


@pytest.mark.parametrize('attention', ['vector', 'factored'])
def test_detections_carry_the_dense_top_layer_embedding_of_their_location(
        attention):
    """Embeddings computed only at the kept locations equal the dense top
    layer's output there, on every level."""
    model = build_model(small_model_cfg(panoptic=False, attention=attention))
    model.eval()
    head = model.bbox_head
    for param in head.top_layer.parameters():
        torch.nn.init.normal_(param)
    # Keep every location (non-empty boxes, no NMS), so that every level has
    # detections.
    torch.nn.init.constant_(head.conv_reg.bias, 1.0)
    head.test_cfg.update(nms=dict(type='nms', iou_threshold=1.0),
                         max_per_img=10000)
    inputs = torch.rand(1, 3, 96, 160)
    with torch.no_grad():
        feats = model.extract_feat(inputs)
        cls_scores, bbox_preds, centernesses, box_feats, _ = head(feats)
        detections = head.predict_by_feat(
            cls_scores, bbox_preds, centernesses, box_feats,
            batch_img_metas=[dict(img_shape=(96, 160))])[0]
        # the top layer's embedding channels, densely
        dense = [head.top_layer(f)[0, :head.embedding_channels]
                 for f in box_feats]
    assert len(detections) > 20
    assert set(detections.strides.tolist()) == set(head.strides)
    expected = torch.stack([
        dense[head.strides.index(stride)][:, int(y // stride),
                                          int(x // stride)]
        for (x, y), stride in zip(detections.points.tolist(),
                                  detections.strides.tolist())
    ])
    torch.testing.assert_close(detections.embeddings, expected,
                               rtol=1e-4, atol=1e-4)


def test_checkpoints_with_the_top_layer_named_controller_still_load():
    model = build_model(small_model_cfg(panoptic=False))
    state = {key: value.clone() for key, value in model.state_dict().items()}
    old_style = {
        key.replace('bbox_head.top_layer.', 'bbox_head.controller.'): value
        + 1 for key, value in state.items()
    }
    model.load_state_dict(old_style)
    torch.testing.assert_close(model.bbox_head.top_layer.weight,
                               state['bbox_head.top_layer.weight'] + 1)


def test_rescale_false_gives_every_output_at_the_input_size():
    model = build_model(small_model_cfg(panoptic=True))
    for spec, result in zip(PREDICT_SPECS,
                            predict(model, PREDICT_SPECS, rescale=False)):
        assert tuple(result.pred_instances.masks.shape[-2:]) == spec['img_hw']
        assert tuple(result.pred_panoptic_seg.sem_seg.shape[-2:]) \
            == spec['img_hw']


def test_thresholds_come_from_test_cfg():
    """Raising test_cfg's thresholds past every score and probability
    empties the masks and leaves no instance in the panoptic map."""
    cfg = small_model_cfg(panoptic=True)
    before = predict(build_model(cfg), PREDICT_SPECS[:1])[0]
    assert before.pred_instances.masks.any()
    assert (before.pred_panoptic_seg.sem_seg >= INSTANCE_OFFSET).any()
    cfg.test_cfg.mask_thr = 1.01
    cfg.test_cfg.panoptic.score_thr = 1.01
    after = predict(build_model(cfg), PREDICT_SPECS[:1])[0]
    assert len(after.pred_instances) == len(before.pred_instances)
    assert not after.pred_instances.masks.any()
    assert (after.pred_panoptic_seg.sem_seg < INSTANCE_OFFSET).all()


def test_panoptic_model_needs_vector_embeddings():
    cfg = small_model_cfg(panoptic=True, attention='factored')
    with pytest.raises(ValueError, match="attention='vector'"):
        build_model(cfg)


def test_two_heads_naming_a_loss_alike_is_an_error(monkeypatch):
    model = build_model(small_model_cfg(panoptic=False))
    monkeypatch.setattr(model.semantic_head, 'loss',
                        lambda *args: dict(loss_mask=torch.zeros(())))
    with pytest.raises(KeyError, match='loss_mask'):
        compute_losses(model, [dict(img_hw=(64, 64), boxes=[[8, 8, 40, 48]],
                                    labels=[1])])


@pytest.mark.parametrize('source', ['box_tower', 'cls_tower', 'fpn'])
def test_contexts_come_from_the_configured_source(source):
    """Table 3: the context part of the top layer reads the box tower, the
    class tower or the FPN level itself."""
    cfg = small_model_cfg(panoptic=False, attention='vector')
    cfg.bbox_head.context_source = source
    model = build_model(cfg).eval()
    head = model.bbox_head
    torch.nn.init.normal_(head.top_layer.weight)
    with torch.no_grad():
        x = model.extract_feat(torch.rand(1, 3, 64, 96))[0]
        towers = dict(fpn=x, box_tower=x, cls_tower=x)
        for conv in head.reg_convs:
            towers['box_tower'] = conv(towers['box_tower'])
        for conv in head.cls_convs:
            towers['cls_tower'] = conv(towers['cls_tower'])
        *_, context = head.forward_single(x, head.scales[0], head.strides[0])
        channels = slice(head.embedding_channels, None)
        expected = torch.nn.functional.conv2d(
            towers[source], head.top_layer.weight[channels],
            head.top_layer.bias[channels], padding=1)
    assert context.shape[1] == model.basis.context_channels
    torch.testing.assert_close(context, expected)


def test_candidates_are_ranked_by_class_times_centerness():
    """As AdelaiDet's FCOS: of two locations above the class threshold, the
    one kept by nms_pre=1 is the better cls * centerness, not the better
    cls, and its score is sqrt(cls * centerness)."""
    model = build_model(small_model_cfg(panoptic=False, attention='vector'))
    head = model.bbox_head.eval()
    sizes = [(1, 2)] * len(head.strides)
    cls_scores = [torch.full((1, NUM_THINGS, *s), -10.0) for s in sizes]
    centernesses = [torch.zeros(1, 1, *s) for s in sizes]
    cls_scores[0][0, 0, 0] = torch.tensor([2.0, 1.0])  # 0.88, 0.73
    centernesses[0][0, 0, 0] = torch.tensor([-5.0, 5.0])  # 0.007, 0.993
    bbox_preds = [torch.full((1, 4, *s), 8.0) for s in sizes]
    box_feats = [torch.zeros(1, head.feat_channels, *s) for s in sizes]
    head.test_cfg.update(nms_pre=1, score_thr=0.05)
    detections = head.predict_by_feat(
        cls_scores, bbox_preds, centernesses, box_feats,
        batch_img_metas=[dict(img_shape=(64, 64))])[0]
    assert len(detections) == 1
    assert detections.points.tolist() == [[12.0, 4.0]]  # the second location
    expected = (torch.tensor(1.0).sigmoid() * torch.tensor(5.0).sigmoid())
    torch.testing.assert_close(detections.scores, expected.sqrt()[None])


def test_bf16_autocast_trains_with_fp32_losses_and_logits():
    """Mixed precision, as --amp runs it (bf16 autocast on the CPU here,
    fp16 on a GPU: the same code path): the convolutions run in half
    precision, DR1Conv's products, the mask logits and every loss in fp32,
    and a few steps keep every loss and gradient finite."""
    model = build_model(small_model_cfg(panoptic=True))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtypes = {}
    model.basis.lateral_convs[0].register_forward_hook(
        lambda module, args, out: dtypes.update(lateral=out.dtype))
    model.basis.dr1_convs[0].register_forward_hook(
        lambda module, args, out: dtypes.update(dr1_conv=out.dtype))
    model.mask_head.register_forward_hook(
        lambda module, args, out: dtypes.update(mask_logits=out.dtype))
    images, samples = zip(*[make_sample(**spec) for spec in [
        dict(img_hw=(84, 100), boxes=MANY_BOXES, labels=MANY_LABELS),
        dict(img_hw=(60, 72), boxes=[[5, 5, 30, 40]], labels=[0])]])
    data = preprocess(model, list(images), list(samples), training=True)
    for _ in range(3):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            losses = model.loss(data['inputs'], data['data_samples'])
        assert dtypes == dict(lateral=torch.bfloat16, dr1_conv=torch.float32,
                              mask_logits=torch.float32)
        for name, value in losses.items():
            assert value.dtype == torch.float32, name
            assert torch.isfinite(value), name
        optimizer.zero_grad()
        sum(losses.values()).backward()
        for name, param in model.named_parameters():
            if param.grad is not None:
                assert torch.isfinite(param.grad).all(), name
        optimizer.step()


def test_aux_semantic_head_with_stuff_reads_the_panoptic_ground_truth():
    """With num_stuff_classes the auxiliary targets are gt_sem_seg's thing
    and stuff classes at the level's stride (void ignored); without, the
    things painted from the masks on background."""
    cfg = small_model_cfg(panoptic=True)
    cfg.semantic_head.num_stuff_classes = NUM_STUFF
    model = build_model(cfg)
    assert model.semantic_head.conv_seg.out_channels == NUM_THINGS + NUM_STUFF
    spec = dict(img_hw=(64, 76), boxes=[[8, 8, 40, 32]], labels=[2],
                stuff_label=NUM_THINGS + 1)
    images, samples = zip(*[make_sample(**spec)])
    data = preprocess(model, list(images), list(samples), training=True)
    head = model.semantic_head
    # the level of the padded (64, 76) input: stride 8, (8, 10)
    targets = head.panoptic_targets(data['data_samples'], (8, 10))
    sem_seg = data['data_samples'][0].gt_sem_seg.sem_seg[0]
    assert torch.equal(targets[0], sem_seg[::8, ::8].long())
    assert targets[0, 1, 1] == 2 and targets[0, 6, 8] == NUM_THINGS + 1
    things_only = build_model(small_model_cfg(panoptic=True)).semantic_head
    painted = things_only.targets(
        [s.gt_instances for s in data['data_samples']], (8, 10))
    assert painted[0, 1, 1] == 2 and painted[0, 6, 8] == NUM_THINGS
    losses = compute_losses(model, [spec])
    assert set(losses) == EXPECTED_LOSSES
    assert torch.isfinite(losses['loss_aux_semantic'])


def test_separate_branch_baseline_names_what_it_needs():
    from mmdet.registry import MODELS
    cfg = load_config(CONFIGS.parent /
                      'baselines/separate-branch_r18_fpn_toy-panoptic.py')
    unified = cfg.model.copy()
    unified.panoptic_head = dict(type='UnifiedPanopticLayer')
    with pytest.raises(ValueError, match='model.panoptic_head=None'):
        MODELS.build(unified)
    no_thresholds = cfg.model.copy()
    no_thresholds.test_cfg = dict(no_thresholds.test_cfg, panoptic=None)
    with pytest.raises(ValueError, match='model.test_cfg.panoptic='):
        MODELS.build(no_thresholds)
