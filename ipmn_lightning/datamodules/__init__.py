"""The LightningDataModule every phase shares (``FaceSwapDataModule``), over the datasets of ``data``."""
