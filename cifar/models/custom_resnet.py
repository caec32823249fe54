"""The "custom ResNet" (ResNet-9) of fast CIFAR-10 training: 6,573,130 parameters."""

from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, pool: bool = False) -> nn.Sequential:
    """3x3 bias-free conv (stride 1, pad 1), optional 2x2 max-pool, BatchNorm, ReLU."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + (conv-bn-relu twice)(x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(channels, channels), conv_bn_relu(channels, channels))

    def forward(self, x):
        return x + self.body(x)


class CustomResNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.prep = conv_bn_relu(3, 64)
        self.layer1 = nn.Sequential(conv_bn_relu(64, 128, pool=True), Residual(128))
        self.layer2 = conv_bn_relu(128, 256, pool=True)
        self.layer3 = nn.Sequential(conv_bn_relu(256, 512, pool=True), Residual(512))
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.fc(self.pool(x).flatten(1))
