"""tmtcam: Transferable Mask Transformer and Prompt-CAM on PyTorch Lightning + timm.

Import-safe: importing the package does no I/O and touches no network.
"""

__version__ = "0.1.0"
