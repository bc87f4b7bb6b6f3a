"""Encoder bodies and decoders (plain ``torch.nn.Module``).

An encoder *body* maps images ``(B, 784)`` to features ``(B, out_features)``; the
guide owns the heads that turn features into the parameters of q(z|x). A decoder maps
``z`` ``(B, z_dim)`` to Bernoulli-style logits ``(B, 784)`` (no sigmoid inside: the
likelihood takes logits, which is stabler).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 28
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE)  # MNIST and Fashion-MNIST
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
UNLABELLED = -1  # the label of an image without one (binarized MNIST)


ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "elu": nn.ELU}  # of the MLP nets


def _mlp(widths: Sequence[int], activation: str = "relu") -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


def joined(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[a, b]`` along the last dimension after broadcasting their other dimensions (a one-hot label
    ``(B, C)`` against codes ``(K, B, z_dim)`` of K particles, or an enumerated ``(C, 1, C)`` against ``(B, D)``)."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*shape, a.shape[-1]), b.expand(*shape, b.shape[-1])], dim=-1)


def on_joined(net: nn.Module, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``net([a, c])``: the MLP nets take the condition ``c`` apart (:func:`linear_of_joined`), any other
    module the joined tensor."""
    if isinstance(net, (MLPEncoder, MLPDecoder)):
        return net(a, c)
    return net(joined(a, c))


def linear_of_joined(layer: nn.Linear, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``layer([a, c])`` without building ``[a, c]``:  W [a; c] + b = W_a a + (W_c c + b),  each product at its
    own batch shape and the two broadcast in the sum. An image ``(B, D)`` with an enumerated label ``(C, 1, C)``
    costs B rows of the D-wide product, not C x B; codes ``(K, B, z_dim)`` with a label ``(B, C)`` K x B. ``c`` takes
    ``a``'s dtype, as concatenating would promote it."""
    split = a.shape[-1]
    if split + c.shape[-1] != layer.in_features:
        raise ValueError(f"a layer of {layer.in_features} inputs got {split} + {c.shape[-1]} joined features; "
                         f"the net was built for another condition width")
    return F.linear(a, layer.weight[:, :split]) + F.linear(c.to(a.dtype), layer.weight[:, split:], layer.bias)


def _layers_on_joined(layers: Sequence[nn.Module], a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``layers`` (a Linear first) applied to ``[a, c]``, the first through :func:`linear_of_joined`."""
    h = linear_of_joined(layers[0], a, c)
    for layer in layers[1:]:
        h = layer(h)
    return h


class MLPEncoder(nn.Module):
    """``784 -> hidden[0] -> ... -> hidden[-1]``, each layer followed by ``activation`` (one of
    :data:`ACTIVATIONS`); the reference is 784-512-256 with ReLU."""

    def __init__(self, hidden: Sequence[int] = (512, 256), in_features: int = NUM_PIXELS, activation: str = "relu"):
        super().__init__()
        self.net = _mlp([in_features, *hidden], activation)
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Features ``(..., hidden[-1])`` of ``x`` ``(..., D)``, or of ``[x, condition]`` (a conditional encoder's
        input) when a condition is given: the two broadcast, e.g. ``(C, B, hidden[-1])`` for images ``(B, D)`` and
        an enumerated label ``(C, 1, C)``."""
        if condition is None:
            return self.net(x)
        return _layers_on_joined(self.net, x, condition)


class MLPDecoder(nn.Module):
    """``z -> hidden[-1] -> ... -> hidden[0] -> 784`` logits (``activation`` after each hidden layer);
    the reference is z-256-512-784 with ReLU."""

    def __init__(self, z_dim: int, hidden: Sequence[int] = (512, 256), out_features: int = NUM_PIXELS,
                 activation: str = "relu"):
        super().__init__()
        self.net = nn.Sequential(_mlp([z_dim, *reversed(hidden)], activation), nn.Linear(hidden[0], out_features))

    def forward(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(..., 784)`` of ``z``, or of ``[z, condition]`` (a conditional decoder's input)."""
        if condition is None:
            return self.net(z)
        return _layers_on_joined([*self.net[0], self.net[1]], z, condition)


class ConvEncoder(nn.Module):
    """Conv(32, 3x3, s2) -> 14x14x32, Conv(64, 3x3, s2) -> 7x7x64, Dense(16), all ReLU."""

    def __init__(self, features: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Unflatten(1, (1, IMAGE_SIZE, IMAGE_SIZE)),
            nn.Conv2d(1, 32, 3, stride=2, padding=1),
            nn.ReLU(),  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),  # (B, 64, 7, 7)
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, features),
            nn.ReLU(),
        )
        self.out_features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 16)


class ConvDecoder(nn.Module):
    """Dense(7*7*64) -> ConvT(64, s2) -> ConvT(32, s2) -> ConvT(1) -> 28x28 logits."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(z_dim, 64 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),  # (B, 64, 14, 14)
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),  # (B, 32, 28, 28)
            nn.ConvTranspose2d(32, 1, 3, stride=1, padding=1),
            nn.Flatten(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]  # any leading dims, e.g. (K, B) importance samples
        return self.net(z.reshape(-1, z.shape[-1])).reshape(*batch, NUM_PIXELS)  # (..., 784) logits


def glorot_init_(module: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every dense and conv layer (Keras' defaults).

    The reference experiments were trained with this initialisation. With PyTorch's default
    (smaller) initialisation the conv encoder's 16-unit ReLU bottleneck dies in the first
    hundred steps and the posterior collapses (test loss stuck near 206 nats, KL near 0).
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


INITS = ("glorot", "torch")


def build_networks(net: str, z_dim: int, hidden: Sequence[int], activation: str = "relu",
                   condition_features: int = 0) -> tuple[nn.Module, nn.Module]:
    """``(encoder_body, decoder)`` for ``net`` in ``{"mlp", "conv"}`` (``activation``: the MLP's; the
    conv nets are the reference's, ReLU). With ``condition_features`` C > 0 (MLP only) the encoder takes
    ``[x, c]`` (784 + C inputs) and the decoder ``[z, c]`` (z_dim + C): a conditional VAE's nets."""
    if condition_features and net != "mlp":
        raise ValueError(f"only the MLP nets take a condition (condition_features = {condition_features}), "
                         f"not net {net!r}")
    if net == "mlp":
        return (MLPEncoder(hidden, in_features=NUM_PIXELS + condition_features, activation=activation),
                MLPDecoder(z_dim + condition_features, hidden, activation=activation))
    if net == "conv":
        return ConvEncoder(), ConvDecoder(z_dim)
    raise KeyError(net)


NETS = ("mlp", "conv")


def network_size(net: str, z_dim: int, hidden: Sequence[int]) -> tuple[int, int]:
    """``(parameters of both networks, encoder features)`` of :func:`build_networks`, counted
    without building them, so absurd widths can be refused before any memory is asked for."""
    if net == "mlp":
        encoder = list(zip([NUM_PIXELS, *hidden], hidden))
        decoder = list(zip([z_dim, *reversed(hidden)], [*reversed(hidden), NUM_PIXELS]))
        return sum(fan_in * fan_out + fan_out for fan_in, fan_out in encoder + decoder), hidden[-1]
    if net == "conv":
        with torch.device("meta"):  # shapes only, no memory
            encoder, decoder = build_networks("conv", 1, hidden)
        fixed = sum(p.numel() for module in (encoder, decoder) for p in module.parameters())
        return fixed + (z_dim - 1) * 64 * 7 * 7, encoder.out_features  # the decoder's first layer grows with z
    raise KeyError(net)
