"""lesion_lightning: VQ-VAE + Gated PixelCNN for dermoscopic lesion images."""

__version__ = "0.1.0"
