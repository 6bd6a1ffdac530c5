"""LightningModules, addressed from YAML by ``class_path: tmtcam.tasks.<Name>``."""

from tmtcam.tasks.promptcam_classifier import PromptCAMClassifier
from tmtcam.tasks.tmt_segmentation import TMTSegmentation

__all__ = ["PromptCAMClassifier", "TMTSegmentation"]
