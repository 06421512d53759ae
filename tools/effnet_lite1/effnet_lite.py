"""A user's factory for `compress run --model effnet_lite:build --weights <ImageNet .pth>`: EfficientNet-Lite1
(5.4 M parameters, 240 x 240, ReLU6 kept), from the efficientnet-lite-pytorch package."""


def build(input_shape, num_classes):
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite1", num_classes=num_classes)
