"""Weight initialisation of the DMW networks (``weights_init`` in Deep Model Watermarking's ``main.py``).

Upstream: github.com/ZJZAC/Deep-Model-Watermarking @ 129120d ("DMW").
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def init_normal_(module: M, std: float = 0.02) -> M:
    """Initialise ``module`` in place as DMW's ``weights_init`` does.

    Conv and transposed-conv weights ~ N(0, std); batch/instance norm affine weights ~ N(1, std) and
    their biases 0. Conv biases are also set to 0 (as pix2pix ``init_weights``; DMW leaves PyTorch's
    default). Norm layers without affine parameters and all other layers are left untouched.

    Args:
        module: the network; every submodule is visited.
        std: standard deviation of the normal distributions.

    Returns:
        The same ``module``, for chaining.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORM_TYPES) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module
