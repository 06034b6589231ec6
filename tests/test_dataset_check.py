"""The panoptic dataset checker: each kind of problem, planted in a copy of
a generated toy set, is reported naming its image and segment, by the
function, the CLI (exit code 1) and training (before the first
iteration); the clean set passes."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CONFIGS, REPO, load_config
from projects.dr1mask.datasets.dataset_check import (check_dataset_config,
                                            check_panoptic_dataset,
                                            class_counts)

CONFIG = CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py'
ENV = dict(os.environ, PYTHONPATH=str(REPO))
IMAGE = '000000000001.jpg'


@pytest.fixture(scope='module')
def toy(tmp_path_factory) -> Path:
    """A clean toy set, laid out as the toy config expects."""
    root = tmp_path_factory.mktemp('toy')
    subprocess.run([
        sys.executable,
        str(REPO / 'tools/misc/generate_toy_panoptic.py'),
        'data/toy_panoptic', '--num-train', '4', '--num-val', '2',
        '--min-size', '48', '--max-size', '64'
    ], cwd=root, check=True, capture_output=True)
    return root


class Copy:
    """A copy of the toy set whose train split is broken in one way."""

    def __init__(self, toy: Path, tmp_path: Path):
        shutil.copytree(toy / 'data', tmp_path / 'data')
        self.root = tmp_path
        self.data = tmp_path / 'data/toy_panoptic'
        self.ann_file = self.data / 'annotations/panoptic_train.json'
        self.seg_dir = self.data / 'annotations/panoptic_train'
        self.img_dir = self.data / 'train'
        self.json = json.loads(self.ann_file.read_text())

    def save(self) -> None:
        self.ann_file.write_text(json.dumps(self.json))

    @property
    def segments(self) -> list:
        """segments_info of the first image."""
        return self.json['annotations'][0]['segments_info']

    def check(self, **kwargs) -> list:
        return check_panoptic_dataset(
            str(self.ann_file), str(self.seg_dir), str(self.img_dir),
            **kwargs)


@pytest.fixture
def copy(toy, tmp_path) -> Copy:
    return Copy(toy, tmp_path)


def only(problems: list, *words: str) -> str:
    """The one problem reported, which must contain each of ``words``."""
    assert len(problems) == 1, problems
    for word in words:
        assert word in problems[0], problems[0]
    return problems[0]


def test_clean_toy_set_passes(toy):
    cfg = load_config(CONFIG.name)
    cfg.train_dataloader.dataset.data_root = str(toy / 'data/toy_panoptic')
    cfg.val_dataloader.dataset.data_root = str(toy / 'data/toy_panoptic')
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        assert check_dataset_config(loader.dataset, cfg.model) == []


def test_class_counts_reads_every_head():
    model = dict(
        bbox_head=dict(num_classes=4),
        roi_head=dict(bbox_head=dict(num_classes=4)),
        rpn_head=dict(num_classes=1),
        panoptic_head=dict(num_things_classes=4, num_stuff_classes=3),
        semantic_head=dict(num_things_classes=4))
    assert class_counts(model) == {
        'model.bbox_head.num_classes': ('thing', 4),
        'model.roi_head.bbox_head.num_classes': ('thing', 4),
        'model.panoptic_head.num_things_classes': ('thing', 4),
        'model.panoptic_head.num_stuff_classes': ('stuff', 3),
        'model.semantic_head.num_things_classes': ('thing', 4),
    }


def test_missing_and_unreadable_files(copy):
    (copy.img_dir / IMAGE).unlink()
    only(copy.check(), IMAGE, 'is missing')
    (copy.img_dir / IMAGE).write_bytes(b'not a jpeg')
    only(copy.check(), IMAGE, 'cannot be decoded')
    png = copy.seg_dir / '000000000001.png'
    png.write_bytes(b'not a png')
    problems = copy.check()
    assert len(problems) == 2
    only(problems[1:], IMAGE, 'PNG', 'cannot be decoded')
    png.unlink()
    only(copy.check()[1:], IMAGE, 'PNG', 'is missing')


def test_segment_in_json_not_in_png_and_reverse(copy):
    removed = copy.segments.pop(0)
    copy.segments.append(dict(removed, id=7777777))
    copy.save()
    problems = copy.check()
    assert len(problems) == 2, problems
    only([p for p in problems if '7777777' in p], IMAGE,
         'segment 7777777: in the json but not in the PNG')
    only([p for p in problems if f'segment {removed["id"]}:' in p], IMAGE,
         'in the PNG', 'not in the json')


def test_unknown_category_and_missing_isthing(copy):
    segment = copy.segments[0]
    segment['category_id'] = 99
    del copy.json['categories'][1]['isthing']
    copy.save()
    problems = copy.check()
    assert len(problems) == 2, problems
    only(problems[:1], "category 2 'square'", 'isthing')
    only(problems[1:], IMAGE, f'segment {segment["id"]}',
         'category_id 99 is not in categories')


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_tools_name_category_problems_before_building_the_dataset(
        copy, tool):
    """mmdet fails on these while it builds the dataset (a bare KeyError),
    before any hook: the tools check the json first."""
    segment = copy.segments[0]
    segment['category_id'] = 99
    del copy.json['categories'][1]['isthing']
    copy.save()
    for split in ('val', 'train'):  # the test config reads val
        (copy.data / f'annotations/panoptic_{split}.json').write_text(
            json.dumps(copy.json))
    args = ['--work-dir', str(copy.root / 'work_dir')]
    if tool == 'test.py':
        args.insert(0, str(copy.root / 'missing.pth'))
    result = subprocess.run([
        sys.executable, str(REPO / 'tools' / tool), str(CONFIG), *args
    ], cwd=copy.root, capture_output=True, text=True, env=ENV)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'tools/misc/check_panoptic_dataset.py lists the same' in output, \
        output[-3000:]
    assert (f"panoptic_val.json: image {IMAGE!r} (id 1), segment "
            f"{segment['id']}: category_id 99 is not in categories") in output
    assert "category 2 'square': no 'isthing' field" in output
    assert 'KeyError' not in output


def test_thing_category_after_stuff(copy):
    cats = copy.json['categories']
    cats.append(cats.pop(0))  # 'disk' last
    copy.save()
    only(copy.check(), "category 1 'disk' is a thing listed after",
         "stuff category 5 'sky'")


def test_config_classes_and_counts(copy):
    cfg = load_config(CONFIG.name)
    classes = list(cfg.metainfo.classes)
    # A thing after stuff in the config: mmdet would number labels in json
    # order, so the order disagrees too.
    reordered = classes[1:] + classes[:1]
    problems = copy.check(classes=reordered)
    assert len(problems) == 2, problems
    assert "thing class 'disk' is listed after the stuff class 'sky'" in \
        problems[0]
    assert 'not in the order of the json categories' in problems[1]

    cfg.model.bbox_head.num_classes = 5
    cfg.model.panoptic_head.num_stuff_classes = 2
    problems = copy.check(classes=classes, model_cfg=cfg.model)
    assert problems == [
        'config model.bbox_head.num_classes = 5, but the dataset has 4 '
        "thing classes ['disk', 'square', 'triangle', 'ring']",
        'config model.panoptic_head.num_stuff_classes = 2, but the dataset has 3 '
        "stuff classes ['sky', 'grass', 'brick']",
    ]


def test_sizes_disagree(copy):
    image = copy.json['images'][0]
    height, width = image['height'], image['width']
    image['height'] += 1
    copy.save()
    only(copy.check(), IMAGE, f'json {height + 1}x{width}',
         f'PNG {height}x{width}', f'image {height}x{width}')


def test_jpeg_name_png_derived_wrongly(copy):
    (copy.img_dir / IMAGE).rename(copy.img_dir / '000000000001.jpeg')
    copy.json['images'][0]['file_name'] = '000000000001.jpeg'
    copy.save()
    only(copy.check(), "'000000000001.jpeg'", 'mmdet reads its PNG as',
         "names '000000000001.png'")


def test_png_image_name_is_derived_right(copy):
    """A '.png' image keeps its name, the PNG's: mmdet finds the PNG."""
    rgb = np.asarray(Image.open(copy.img_dir / IMAGE))
    Image.fromarray(rgb).save(copy.img_dir / '000000000001.png')
    copy.json['images'][0]['file_name'] = '000000000001.png'
    copy.save()
    assert copy.check() == []


def test_cli_reports_all_problems_and_exit_code(copy):
    tool = [sys.executable, str(REPO / 'tools/misc/check_panoptic_dataset.py'),
            str(copy.ann_file), str(copy.seg_dir), str(copy.img_dir),
            '--config', str(CONFIG)]
    clean = subprocess.run(tool, env=ENV, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout == ''

    copy.segments.append(dict(copy.segments[0], id=7777777))
    copy.json['images'][1]['width'] += 2
    copy.save()
    broken = subprocess.run(tool, env=ENV, capture_output=True, text=True)
    assert broken.returncode == 1
    lines = broken.stdout.splitlines()
    assert len(lines) == 2, broken.stdout
    assert IMAGE in lines[0] and 'segment 7777777' in lines[0]
    assert '000000000002.jpg' in lines[1] and 'disagree' in lines[1]


def test_training_fails_before_the_first_iteration(copy):
    copy.segments.append(dict(copy.segments[0], id=7777777))
    copy.save()
    result = subprocess.run([
        sys.executable, str(REPO / 'tools/train.py'), str(CONFIG),
        '--work-dir', str(copy.root / 'work_dir'), '--cfg-options',
        'train_cfg.max_iters=1', 'train_dataloader.batch_size=1'
    ], cwd=copy.root, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'the dataset has 1 problem(s)' in output, output[-3000:]
    assert (f'panoptic_train.json: image {IMAGE!r} (id 1), segment 7777777: '
            'in the json but not in the PNG') in output
    assert 'Iter(train)' not in output
