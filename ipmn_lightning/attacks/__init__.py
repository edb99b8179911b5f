"""Image attacks on protected images (bottom layer).

The distortions of Tables 3, 4 and 11, and training's random distortion (:mod:`~ipmn_lightning.attacks.distortions`).
"""
