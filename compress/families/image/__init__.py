"""The image classifier family: the bundled ResNet-style CNN or a user's own module."""
