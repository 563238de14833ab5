"""Small pure-PyTorch nets used by the reparam tests."""
import torch
import torch.nn as nn

from mmgpd.testing import randomize_norms  # noqa: F401  (shared with the zoo)


class TinyNet(nn.Module):
    """conv-BN-ReLU, a residual 3×3 block, depthwise + ReLU6, GAP, MLP with GELU + LN."""

    def __init__(self, width=8, num_classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width)
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc0 = nn.Linear(width, width)
        self.gelu = nn.GELU()
        self.ln = nn.LayerNorm(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)) + y)
        y = self.act(self.dw(y))
        y = self.pool(y).flatten(1)
        y = self.ln(self.gelu(self.fc0(y))) + y
        return self.fc(y)


class GatedNet(nn.Module):
    """A squeeze-excitation gate and a functional sigmoid: no exact rule."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.se_fc = nn.Conv2d(8, 8, 1)
        self.se_gate = nn.Sigmoid()
        self.mystery = _Mystery()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.conv(x)
        y = y * self.se_gate(self.se_fc(y.mean((2, 3), keepdim=True)))
        y = self.mystery(y)
        y = torch.sigmoid(y)
        return self.fc(y.mean((2, 3)))


class _Mystery(nn.Module):
    """A custom leaf op with no rule."""

    def forward(self, x):
        return x * x
