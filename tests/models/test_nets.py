import pytest
import torch

from pyro_vae.models.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, build_networks, joined, on_joined


def test_mlp_default_is_784_512_256():
    encoder, decoder = MLPEncoder(), MLPDecoder(z_dim=2)
    widths = [(m.in_features, m.out_features) for m in encoder.net if isinstance(m, torch.nn.Linear)]
    assert widths == [(784, 512), (512, 256)]
    widths = [(m.in_features, m.out_features) for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [(2, 256), (256, 512), (512, 784)]
    assert encoder(torch.rand(5, 784)).shape == (5, 256)
    assert decoder(torch.randn(5, 2)).shape == (5, 784)


def test_mlp_hidden_sizes_are_configurable():
    encoder, decoder = build_networks("mlp", 3, [64, 32, 16])
    assert encoder.out_features == 16
    assert encoder(torch.rand(4, 784)).shape == (4, 16)
    assert decoder(torch.randn(4, 3)).shape == (4, 784)


def test_conv_encoder_feature_maps():
    encoder = ConvEncoder()
    x = torch.rand(3, 784)
    shapes = []
    for layer in encoder.net:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert (32, 14, 14) in shapes and (64, 7, 7) in shapes
    assert x.shape == (3, 16) and encoder.out_features == 16


@pytest.mark.parametrize("z_dim", [2, 3])
def test_conv_decoder_gives_784_logits(z_dim):
    decoder = ConvDecoder(z_dim)
    logits = decoder(torch.randn(6, z_dim))
    assert logits.shape == (6, 784)
    assert torch.isfinite(logits).all()


def test_decoders_output_logits_not_probabilities():
    torch.manual_seed(0)
    decoder = MLPDecoder(2, [8])
    with torch.no_grad():
        decoder.net[-1].bias.fill_(-5.0)
    assert decoder(torch.zeros(1, 2)).max() < 0  # a sigmoid output could not be negative


def test_glorot_init_matches_keras_defaults():
    from pyro_vae.workflow.build import build_model
    from pyro_vae.workflow.config import load_config

    config = load_config(None, ["model.net=conv"])
    vae, guide = build_model(config, 10)
    dense = guide.encoder.net[6]  # Dense(3136 -> 16)
    bound = (6 / (3136 + 16)) ** 0.5
    assert dense.weight.abs().max() <= bound and dense.weight.abs().max() > 0.9 * bound
    assert all((m.bias == 0).all() for m in vae.decoder.modules() if hasattr(m, "bias") and m.bias is not None)
    torch_default = build_model(load_config(None, ["model.net=conv", "model.init=torch"]), 10)[1]
    assert torch_default.encoder.net[6].weight.abs().max() <= 1 / 3136**0.5  # PyTorch's smaller bound


@pytest.mark.parametrize("activation", ["relu", "softplus", "tanh", "elu"])
def test_the_mlp_nets_use_the_activation_named(activation):
    from pyro_vae.models.nets import ACTIVATIONS, build_networks

    torch.manual_seed(0)
    encoder, decoder = build_networks("mlp", 2, [16, 8], activation)
    kinds = {type(m) for net in (encoder, decoder) for m in net.modules() if type(m) in ACTIVATIONS.values()}
    assert kinds == {ACTIVATIONS[activation]}
    x = torch.linspace(-2, 2, 784).repeat(3, 1)
    h = encoder(x)
    assert h.shape == (3, 8) and (h.min() < 0) == (activation in ("tanh", "elu"))  # relu and softplus are >= 0
    assert decoder(torch.randn(3, 2)).shape == (3, 784)


@pytest.mark.parametrize("net, inputs, condition", [
    ("encoder", (7, 12), (4, 1, 4)),  # an image batch with an enumerated label: (C, B, .) out
    ("encoder", (7, 12), (7, 4)),  # labelled images
    ("decoder", (3, 7, 5), (7, 4)),  # K codes per image with the images' labels
    ("decoder", (4, 7, 5), (4, 1, 4)),  # codes drawn per enumerated label
])
def test_the_mlp_nets_take_a_condition_apart_as_if_joined(net, inputs, condition):
    """W [a; c] + b computed as W_a a + W_c c + b: the same values and parameter gradients as the net on the
    joined tensor, at the broadcast shape; a non-MLP module gets the joined tensor."""
    torch.manual_seed(0)
    module = (MLPEncoder([16, 8], in_features=12 + 4, activation="softplus") if net == "encoder"
              else MLPDecoder(5 + 4, [16, 8], out_features=12, activation="softplus"))
    a = torch.randn(inputs, dtype=torch.float64)
    c = torch.nn.functional.one_hot(torch.randint(4, condition[:-1]), 4).to(torch.float64)
    module = module.double()
    apart = module(a, c)
    apart.square().sum().backward()
    grads_apart = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    whole = module.net(joined(a, c))
    whole.square().sum().backward()
    assert apart.shape == whole.shape == (*torch.broadcast_shapes(a.shape[:-1], c.shape[:-1]), whole.shape[-1])
    assert torch.allclose(apart, whole, atol=1e-12)
    for got, expected in zip(grads_apart, (p.grad for p in module.parameters())):
        assert torch.allclose(got, expected, atol=1e-10)
    assert torch.equal(on_joined(module, a, c), apart)
    assert torch.equal(on_joined(module.net, a, c), whole)  # any other module: the joined tensor


def test_a_condition_of_the_wrong_width_is_refused_and_a_float32_label_takes_the_images_dtype():
    encoder = MLPEncoder([8], in_features=12 + 4).double()
    x = torch.rand(3, 12, dtype=torch.float64)
    with pytest.raises(ValueError, match="16 inputs got 12 \\+ 5 joined features"):
        encoder(x, torch.zeros(3, 5))
    label = torch.nn.functional.one_hot(torch.tensor([0, 1, 3]), 4).float()  # float32, as the plots build them
    assert torch.allclose(encoder(x, label), encoder.net(joined(x, label)), atol=1e-12)  # (joining promotes too)
