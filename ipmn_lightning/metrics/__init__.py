"""Metrics of the paper (§4): tensor functions in ``functional``, accumulating torchmetrics in ``collections``.

Nothing is imported here, so ``ipmn_lightning.metrics.functional`` loads without torchmetrics.
"""
