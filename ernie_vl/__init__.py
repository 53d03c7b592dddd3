"""ernie_vl: ERNIE-4.5-VL-MoE in plain PyTorch, numerically identical to transformers 5.23.0.

    model = ernie_vl.load_model(path)              # None -> the embedded tiny checkpoint
    processor = ernie_vl.Processor.from_pretrained(path)
"""

from .config import ModelConfig, TextConfig, VisionConfig, named_config
from .model import ErnieVLForConditionalGeneration
from .weights import CheckpointError, load_model

__all__ = [
    "ModelConfig", "TextConfig", "VisionConfig", "named_config",
    "ErnieVLForConditionalGeneration", "CheckpointError", "load_model", "Processor",
]
__version__ = "0.1.0"


def __getattr__(name):  # the processor pulls in video/image libraries: import it on first use
    if name == "Processor":
        from .processor import Processor

        return Processor
    raise AttributeError(f"module 'ernie_vl' has no attribute {name!r}")
