"""Image attacks on protected images: the distortions of Tables 3, 4 and 11 and training's random distortion (bottom layer)."""
