"""demo/image_demo.py on images of any format and size: an overlay and a
segment list each, at the size of the image as decoded."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conftest import CONFIGS, REPO, build_model, load_config

CONFIG = CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py'
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def save_images(folder: Path) -> dict:
    """Images the demo must read, and their size after decoding."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb[..., 0]).save(folder / 'gray.png')
    Image.fromarray(
        np.dstack([rgb, np.full((30, 40), 128, np.uint8)]),
        mode='RGBA').save(folder / 'rgba.png')
    deep = (rgb[..., 0].astype(np.uint16) * 257)
    Image.fromarray(deep).save(folder / 'sixteen_bit.png')
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(folder / 'exif_rotated.jpg', exif=exif)
    Image.fromarray(rgb[:1, :1]).save(folder / 'one_pixel.png')
    Image.fromarray(np.tile(rgb[:20, :1], (1, 3000, 1))).save(
        folder / 'thin.png')
    return {
        'gray': (30, 40), 'rgba': (30, 40), 'sixteen_bit': (30, 40),
        'exif_rotated': (40, 30), 'one_pixel': (1, 1), 'thin': (20, 3000)
    }


def test_demo_reads_any_format_and_keeps_the_size(tmp_path):
    cfg = load_config(CONFIG.name)
    model = build_model(cfg.model)
    classes = cfg.metainfo['classes']
    checkpoint = tmp_path / 'model.pth'
    torch.save(
        dict(state_dict=model.state_dict(),
             meta=dict(dataset_meta=dict(cfg.metainfo))), checkpoint)
    sizes = save_images(tmp_path)
    images = [str(tmp_path / f'{name}.{"jpg" if "exif" in name else "png"}')
              for name in sizes]
    result = subprocess.run([
        sys.executable, str(REPO / 'demo/image_demo.py'), *images,
        str(CONFIG), '--weights', str(checkpoint), '--out-dir',
        str(tmp_path / 'out')
    ], capture_output=True, text=True, cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, (height, width) in sizes.items():
        described = json.loads((tmp_path / f'out/{name}.json').read_text())
        assert (described['height'], described['width']) == (height, width)
        assert sum(s['area'] for s in described['segments']) <= \
            height * width
        for segment in described['segments']:
            assert segment['name'] == classes[segment['label']]
            assert segment['isthing'] == ('score' in segment)
        overlay = np.asarray(Image.open(tmp_path / f'out/{name}.png'))
        assert overlay.shape == (height, width, 3), name
