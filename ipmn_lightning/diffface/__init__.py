"""DiffFace (Kim et al. 2022) in diffusers: the paper's mask generator, as one self-contained wing (README.md)."""
