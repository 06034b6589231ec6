"""DR1Mask (Chen, Shen, Tian, arXiv 2011.09796) for MMDetection 3.x.

Importing this package registers its modules into mmdet's registries and
changes nothing else. The layout follows mmdet's own tree:

- ``models/``: the network (``layers/``: DR1Conv, DR1Basis, the instance
  prediction module, the unified panoptic layer; ``dense_heads/``: the
  FCOS-derived head and the auxiliary semantic head; ``detectors/``: DR1Mask
  and the same-detector separate-branch baseline;
  ``test_time_augs/``) and its post-processing (pure tensor functions);
- ``datasets/``: Cityscapes panoptic and the dataset checker;
- ``evaluation/``: panoptic mIoU;
- ``engine/``: training hooks and safe checkpoint loading;
- ``deployment/``: the ONNX Runtime model.
"""
from .datasets import *  # noqa: F401,F403
from .deployment import *  # noqa: F401,F403
from .engine import *  # noqa: F401,F403
from .evaluation import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403
