"""demo/image_demo.py on a grayscale image: an overlay and a segment list."""
import json
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from conftest import CONFIGS, REPO, build_model, load_config

CONFIG = CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py'


def test_demo_on_a_grayscale_image(tmp_path):
    cfg = load_config(CONFIG.name)
    model = build_model(cfg.model)
    classes = cfg.metainfo['classes']
    checkpoint = tmp_path / 'model.pth'
    torch.save(
        dict(state_dict=model.state_dict(),
             meta=dict(dataset_meta=dict(cfg.metainfo))), checkpoint)
    image = tmp_path / 'gray.png'
    ramp = np.tile(np.linspace(0, 255, 90, dtype=np.uint8), (70, 1))
    Image.fromarray(ramp, mode='L').save(image)

    subprocess.run([
        sys.executable, str(REPO / 'demo/image_demo.py'), str(image),
        str(CONFIG), '--weights', str(checkpoint), '--out-dir',
        str(tmp_path / 'out')
    ], check=True, capture_output=True, cwd=tmp_path)

    overlay = np.asarray(Image.open(tmp_path / 'out/gray.png'))
    assert overlay.shape == (70, 90, 3)
    segments = json.loads((tmp_path / 'out/gray.json').read_text())['segments']
    assert segments
    assert sum(s['area'] for s in segments) <= 70 * 90
    for segment in segments:
        assert segment['name'] == classes[segment['label']]
        assert segment['isthing'] == ('score' in segment)
