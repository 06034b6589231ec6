"""DR1Mask's dense network exported to ONNX computes what PyTorch does, and
DR1MaskORT, which runs it in ONNX Runtime and hands it to the PyTorch
post-processing, predicts what the model does.

One graph, traced at 72x72, is run on two other input sizes (72x92 and
64x52 after padding to 4; at 64x52 some FPN levels are even where the
trace's are odd, so aligned upsampling pads where the trace did not) and on
a batch of both.
Tolerances: every raw output within 1e-4 absolute (``bbox_pred`` in units of
its level's stride, what the network regresses before the head scales it to
pixels); panoptic ids equal on at least 99.9 % of the pixels; the same
detections (labels equal, scores within 1e-4, boxes within 1e-3 px) with
masks equal on at least 99.9 % of their pixels.
"""
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import (CONFIGS, REPO, build_model, load_config, make_sample,
                      preprocess, seeded_weights, small_model_cfg)
from projects.dr1mask import DR1MaskORT
from projects.dr1mask.deployment.onnx_runtime import (DenseNetwork, export_onnx,
                                           output_names)

ATOL = 1e-4
MIN_AGREEMENT = 0.999
SPECS = [
    dict(img_hw=(70, 90), boxes=[[4, 4, 40, 30], [20, 10, 60, 62]],
         labels=[0, 1], scale=0.5),
    dict(img_hw=(64, 52), boxes=[[4, 4, 30, 30]], labels=[3], scale=1.25),
]


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A small seeded panoptic DR1Mask and its graph, traced at 72x72."""
    torch.manual_seed(0)
    model = build_model(small_model_cfg(panoptic=True)).eval()
    seeded_weights(model)
    model.test_cfg.max_per_img = 20
    onnx_file = str(tmp_path_factory.mktemp('onnx') / 'dr1mask.onnx')
    export_onnx(model, onnx_file, shape=(72, 72))
    return model, DR1MaskORT(model, onnx_file, threads=1), onnx_file


def batches(model):
    """Each spec alone (two input sizes), then both in one batch."""
    images, samples = zip(*[make_sample(**spec) for spec in SPECS])
    for indices in ([0], [1], [0, 1]):
        yield preprocess(model, [images[i] for i in indices],
                         [samples[i] for i in indices], training=False)


def test_raw_outputs_match_pytorch(exported):
    model, runtime, _ = exported
    network = DenseNetwork(model)
    strides = model.bbox_head.strides
    names = output_names(len(strides))
    for data in batches(model):
        with torch.no_grad():
            expected = network(data['inputs'])
        found = runtime.session.run(None,
                                    {'inputs': data['inputs'].numpy()})
        for name, ours, theirs in zip(names, expected, found):
            assert theirs.shape == tuple(ours.shape), name
            scale = strides[int(name[-1])] if 'bbox_pred' in name else 1
            difference = np.abs(theirs - ours.numpy()).max() / scale
            assert difference <= ATOL, (name, tuple(ours.shape), difference)


def test_predictions_match_pytorch(exported):
    model, runtime, _ = exported
    for data in batches(model):
        with torch.no_grad():
            expected = model.predict(
                data['inputs'], [s.clone() for s in data['data_samples']])
        found = runtime.predict(data['inputs'],
                                [s.clone() for s in data['data_samples']])
        for ours, theirs in zip(expected, found):
            ids = ours.pred_panoptic_seg.sem_seg
            assert theirs.pred_panoptic_seg.sem_seg.shape == ids.shape
            agreement = (theirs.pred_panoptic_seg.sem_seg == ids).float()
            assert agreement.mean() >= MIN_AGREEMENT
            a, b = ours.pred_instances, theirs.pred_instances
            assert len(a) == len(b) > 0
            assert torch.equal(a.labels, b.labels)
            torch.testing.assert_close(b.scores, a.scores, atol=ATOL, rtol=0)
            torch.testing.assert_close(b.bboxes, a.bboxes, atol=1e-3, rtol=0)
            assert (a.masks == b.masks).float().mean() >= MIN_AGREEMENT


def test_runtime_refuses_a_graph_of_another_config(exported):
    onnx_file = exported[2]
    cfg = small_model_cfg(panoptic=True)
    cfg.neck.num_outs = 4
    cfg.bbox_head.strides = [8, 16, 32, 64]
    cfg.basis.num_levels = 4
    other = build_model(cfg)
    with pytest.raises(ValueError, match='4 FPN levels'):
        DR1MaskORT(other, onnx_file)


ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')


def test_runtime_without_onnxruntime_says_what_to_install(exported,
                                                          monkeypatch):
    model, _, onnx_file = exported
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(ImportError, match='pinned in requirements.txt'):
        DR1MaskORT(model, onnx_file)


def run_tool(*args):
    return subprocess.run(
        [sys.executable, str(REPO / 'tools/deployment/export_onnx.py'),
         *map(str, args)],
        capture_output=True, text=True, cwd=REPO, env=ENV)


@pytest.mark.slow
def test_export_tool_writes_a_checked_graph_and_refuses_bad_input(tmp_path):
    config = CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py'
    model = build_model(load_config(config.name).model)
    checkpoint = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    out = tmp_path / 'graphs' / 'toy.onnx'

    result = run_tool(config, checkpoint, '--out', out, '--shape', '64x64')
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.stat().st_size > 0
    assert '68x76: max |ONNX Runtime - PyTorch|' in result.stdout

    result = run_tool(config, checkpoint, '--out', out, '--shape', '30x64')
    assert result.returncode != 0
    assert 'pad_size_divisor' in result.stderr
    assert '--shape 32x64' in result.stderr

    state = model.state_dict()
    del state['basis.lateral_convs.0.weight']
    torch.save(dict(state_dict=state), checkpoint)
    result = run_tool(config, checkpoint, '--out', out)
    assert result.returncode != 0
    assert 'does not hold the weights' in result.stderr
    assert 'basis.lateral_convs.0.weight' in result.stderr


@pytest.mark.slow
def test_demo_onnxruntime_backend_writes_what_pytorch_does(tmp_path):
    config = CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py'
    cfg = load_config(config.name)
    model = build_model(cfg.model).eval()
    seeded_weights(model)
    checkpoint = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(cfg.metainfo))), checkpoint)
    onnx_file = tmp_path / 'toy.onnx'
    export_onnx(model, str(onnx_file), shape=(64, 64))
    rng = np.random.default_rng(0)
    images = []
    for name, (h, w) in dict(small=(50, 70), wide=(61, 150)).items():
        images.append(tmp_path / f'{name}.png')
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(
            images[-1])
    outputs = {}
    for backend, extra in (('pytorch', []),
                           ('onnxruntime', ['--onnx', onnx_file])):
        result = subprocess.run(
            [sys.executable, str(REPO / 'demo/image_demo.py'), *images,
             config, '--weights', checkpoint, '--out-dir', tmp_path / backend,
             '--backend', backend, *extra],
            capture_output=True, text=True, cwd=tmp_path, env=ENV)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[backend] = [
            json.loads((tmp_path / backend / f'{p.stem}.json').read_text())
            for p in images]
    assert outputs['onnxruntime'] == outputs['pytorch']
    assert any(out['segments'] for out in outputs['pytorch'])


@pytest.mark.slow
def test_speed_benchmark_times_the_onnxruntime_backend(monkeypatch, tmp_path):
    # The tool imports its sibling benchmark_common, as when run as a script.
    monkeypatch.syspath_prepend(str(REPO / 'tools' / 'analysis_tools'))
    tool = importlib.import_module('benchmark_speed')
    out, table = tmp_path / 'speed.json', tmp_path / 'speed.md'
    threads = torch.get_num_threads()
    try:
        tool.main([
            '--models', 'dr1mask_panoptic', 'dr1mask_instance',
            '--onnxruntime', '--sizes', '64x64', '--detections', '5',
            '--rounds', '1', '--threads', '1', '--batch-sizes', '2',
            '--out', str(out), '--markdown', str(table)
        ])
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(out.read_text())
    by_model = {row['model']: row for row in rows if 'batch' not in row}
    by_batch = {row['model']: row for row in rows if 'batch' in row}
    for model in ('dr1mask_panoptic', 'dr1mask_instance'):
        row = by_model[f'{model}/onnxruntime']
        assert row['median_ms'] > 0 and row['peak_mem_mb'] > 0
        assert row['params_m'] == by_model[model]['params_m']
        # the throughput rounds time the ONNX Runtime entries too
        assert by_batch[f'{model}/onnxruntime']['batch'] == 2
        assert by_batch[f'{model}/onnxruntime']['images_per_s'] > 0
    assert 'PyTorch vs ONNX Runtime:' in table.read_text()
