"""Model building: torchvision/timm ImageNet models, Imagenette classifiers, offline Lite0 weights."""

from imagenette_lab.models.factory import (
    HEADS,
    Classifier,
    create_classifier,
    create_imagenet_model,
    data_config,
    list_models,
    load_weights_file,
    read_state_dict,
    resolve_name,
)
from imagenette_lab.models.lite0 import load_lite0_package_weights

__all__ = [
    "HEADS",
    "Classifier",
    "create_classifier",
    "create_imagenet_model",
    "data_config",
    "list_models",
    "load_lite0_package_weights",
    "load_weights_file",
    "read_state_dict",
    "resolve_name",
]
