"""Cityscapes panoptic segmentation, as
``tools/dataset_converters/cityscapes_panoptic.py`` writes it."""
import os.path as osp
from typing import List

from cityscapesscripts.helpers.labels import labels, name2label
from mmdet.datasets import CocoPanopticDataset
from mmdet.registry import DATASETS

# The 19 evaluated classes (not ``ignoreInEval``), things first: mmdet's
# panoptic heads take labels 0..7 as things, 8..18 as stuff.
_EVALUATED = [label for label in labels if not label.ignoreInEval]
_THINGS = [label for label in _EVALUATED if label.hasInstances]
_STUFF = [label for label in _EVALUATED if not label.hasInstances]


@DATASETS.register_module()
class CityscapesPanopticDataset(CocoPanopticDataset):
    """``CocoPanopticDataset`` for the converted Cityscapes.

    Its classes, their thing / stuff split and colours are those of
    ``cityscapesscripts.helpers.labels``. Two things differ from COCO:

    * images sit in city folders (``file_name`` is ``<city>/<name>.png``),
      their panoptic PNGs in one folder, named as the image (the name
      ``CocoPanopticMetric`` looks for), so the PNG path is the seg prefix
      joined with the image's base name;
    * the annotation file must list its categories, with Cityscapes' label
      ids as category ids, in ``classes``' order, since
      ``CocoPanopticDataset`` numbers them in the file's order: a file in
      cityscapesscripts' order (stuff first) or with train ids is refused.
    """

    METAINFO = {
        'classes': tuple(label.name for label in _THINGS + _STUFF),
        'thing_classes': tuple(label.name for label in _THINGS),
        'stuff_classes': tuple(label.name for label in _STUFF),
        'palette': [label.color for label in _THINGS + _STUFF],
    }

    def load_data_list(self) -> List[dict]:
        data_list = super().load_data_list()
        expected = [name2label[name].id for name in self.metainfo['classes']]
        if self.cat_ids != expected:
            raise ValueError(
                f'{self.ann_file}: categories must be the label ids '
                f'{expected} of {list(self.metainfo["classes"])}, in that '
                'order (things first, as '
                'tools/dataset_converters/cityscapes_panoptic.py writes '
                f'them), got {self.cat_ids}')
        return data_list

    @staticmethod
    def seg_map_name(img_file_name: str) -> str:
        """The PNG name of an image: its base name."""
        return osp.basename(img_file_name)

    def parse_data_info(self, raw_data_info: dict) -> dict:
        data_info = super().parse_data_info(raw_data_info)
        if data_info['seg_map_path'] is not None:
            data_info['seg_map_path'] = osp.join(
                self.data_prefix['seg'],
                self.seg_map_name(raw_data_info['raw_img_info']['file_name']))
        return data_info
