"""Loss functions of the IPMN paper, eqs. 10-26, one module per phase.

- :mod:`~ipmn_lightning.losses.watermark`: phase 1, eqs. 10-18 (H, R and D; the MSE reductions).
- :mod:`~ipmn_lightning.losses.mask`: phase 2, eqs. 19-22 (the privacy loss of the INN).
- :mod:`~ipmn_lightning.losses.enhance`: phase 3b, eqs. 23-26 (R's enhanced extracting loss).
"""

from ipmn_lightning.losses.enhance import enhanced_extracting_loss
from ipmn_lightning.losses.mask import privacy_loss
from ipmn_lightning.losses.watermark import (
    GanMode,
    consistency_loss,
    discriminator_loss,
    generator_adversarial_loss,
    scaled_mse,
    sum_mse,
    watermark_embedding_loss,
    watermark_extracting_loss,
)

__all__ = [
    "GanMode",
    "consistency_loss",
    "discriminator_loss",
    "enhanced_extracting_loss",
    "generator_adversarial_loss",
    "privacy_loss",
    "scaled_mse",
    "sum_mse",
    "watermark_embedding_loss",
    "watermark_extracting_loss",
]
