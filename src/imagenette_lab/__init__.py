"""imagenette-lab: a rerunnable study of deep-learning image classification on Imagenette."""

__version__ = "0.1.0"
