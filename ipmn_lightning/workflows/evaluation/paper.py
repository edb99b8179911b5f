"""The paper's reported numbers and the names of the evaluation's image pairs and sources (Tables 2-11)."""

from __future__ import annotations

from typing import Any

from ipmn_lightning.faces.privacy import (
    TABLE11_BLUR_KERNEL,
    TABLE11_BLUR_SIGMA,
    TABLE11_JPEG_QUALITY,
    TABLE11_NOISE_STD,
)

__all__ = ["ATTACKS", "CLEAN", "PAIRS", "PAPER", "PAPER_COLUMNS", "TABLE2_COLUMNS", "WATERMARKED"]

PAPER: dict[str, Any] = {
    "table2": {
        "recovered": {"psnr": 41.05, "ssim": 0.982, "lpips": 0.005262},
        "masked": {"psnr": 53.65, "ssim": 0.998, "lpips": 0.000092},
        "recovered_mask": {"psnr": 55.97, "ssim": 0.998, "lpips": 0.000070},
        "masked_vs_mask": {"psnr": 37.33, "ssim": 0.969, "lpips": 0.022964},  # Table 5, w embedded on x_m
    },
    "table3": {"nc": 0.99, "sr_e": 1.0},
    "table4": {"phase1": 0.0, "enhanced": 1.0},
    "table10": {"cnet": 0.74, "res9": 0.92, "res16": 0.93, "unet": 1.0},
    "false_positive_rate": 0.0,
    "table11": {"none": 1.0, "gaussian_noise": 1.0, "gaussian_blur": 1.0, "jpeg": 1.0},
    "table11_you": {"none": 1.0, "gaussian_noise": 1.0, "gaussian_blur": 1.0, "jpeg": 1.0},  # mosaic, ref. [36]
}
ATTACKS = {"none": "without attack", "gaussian_noise": f"Gaussian noise σ {TABLE11_NOISE_STD}",
           "gaussian_blur": f"Gaussian blur {TABLE11_BLUR_KERNEL}×{TABLE11_BLUR_KERNEL} σ {TABLE11_BLUR_SIGMA}",
           "jpeg": f"JPEG {TABLE11_JPEG_QUALITY}"}  # fmt: skip
PAIRS = {"recovered": "(x_p, x'_p)", "masked": "(x_wm, x_wmf)", "recovered_mask": "(x_wm, x'_wm)",
         "masked_vs_mask": "(x_m, x_wmf)"}  # fmt: skip
WATERMARKED = {"masked_face": "x_wmf", "recovered_mask": "x'_wm", "stolen": "x_sm"}
CLEAN = {"mask": "x_m", "protected": "x_p", "recovered_face": "x'_p"}
TABLE2_COLUMNS = ("PSNR", "SSIM", "LPIPS")
PAPER_COLUMNS = tuple(f"paper {c}" for c in TABLE2_COLUMNS)
