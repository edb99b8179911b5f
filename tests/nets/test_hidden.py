import pytest
import torch

from ipmn_lightning.metrics.collections import ExtractionSuccessRate
from ipmn_lightning.metrics.functional import normalized_correlation
from ipmn_lightning.nets.hidden import HiddenDecoder, HiddenDiscriminator, HiddenEncoder, random_messages
from ipmn_lightning.phases import build, embedder_config, extractor_config, watermark_shape


def test_encoder_shapes_range_and_message_forms():
    torch.manual_seed(0)
    encoder = HiddenEncoder(image_size=32, message_length=6, channels=8, blocks=2).eval()
    mask = torch.rand(3, 3, 32, 24)  # any size: fully convolutional
    message = random_messages(3, 6)
    out = encoder(mask, message)
    assert out.shape == mask.shape
    assert out.min() >= 0 and out.max() <= 1
    # an (L,) message is the same message for every image
    shared = encoder(mask, message[0])
    assert torch.allclose(shared[0], out[0])
    # the message reaches the output
    assert not torch.allclose(encoder(mask, -message), out)
    with pytest.raises(ValueError, match="L=6"):
        encoder(mask, torch.ones(5))


def test_decoder_and_discriminator_shapes():
    decoder = HiddenDecoder(message_length=6, channels=8, blocks=3)
    discriminator = HiddenDiscriminator(channels=8, blocks=2)
    images = torch.rand(4, 3, 32, 32)
    assert decoder(images).shape == (4, 6)
    assert discriminator(images).shape == (4,)
    # HiDDeN's block counts: 7 ConvBNReLU(64) + ConvBNReLU(64 -> L) in the decoder
    default = HiddenDecoder()
    convs = [m for m in default.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and convs[-1].out_channels == 30


def test_random_messages_are_pm_one_and_seeded():
    a = random_messages(4, 30, generator=torch.Generator().manual_seed(1))
    b = random_messages(4, 30, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) == {-1.0, 1.0}


def test_bit_nc_rule():
    """NC of the paper on ±1 messages: a perfect decode gives NC 1 and SR_E 1, a random one SR_E 0."""
    message = random_messages(1, 30, generator=torch.Generator().manual_seed(0))[0]
    perfect = message.expand(8, -1) * 0.7  # right signs, any scale
    assert torch.allclose(normalized_correlation(perfect, message), torch.ones(8))
    rate = ExtractionSuccessRate()
    rate.update(perfect, message)
    assert rate.compute() == 1
    one_wrong = message.clone().expand(8, -1).clone()
    one_wrong[:, 0] *= -1  # one bit of 30 wrong: NC = 1 - 2/30 < 0.95
    assert torch.allclose(normalized_correlation(one_wrong, message), torch.full((8,), 1 - 2 / 30))
    random = random_messages(64, 30, generator=torch.Generator().manual_seed(1))
    rate = ExtractionSuccessRate()
    rate.update(random, message)
    assert rate.compute() == 0


def test_registry_builds_hidden_networks_from_hparams():
    hparams = dict(embedder="hidden", image_size=32, message_length=6, channels=8, encoder_blocks=2,
                   decoder_blocks=3)  # fmt: skip
    config = embedder_config(hparams)
    assert config["type"] == "hidden" and config["image_size"] == 32
    assert watermark_shape(config) == (6,)
    assert isinstance(build("embedder", config), HiddenEncoder)
    decoder = build("extractor", extractor_config(hparams))
    assert isinstance(decoder, HiddenDecoder) and decoder.message_length == 6
    # IPMN's own configs are unchanged: no type, an image watermark
    ipmn = embedder_config(dict(image_size=32, ngf=4))
    assert "type" not in ipmn and watermark_shape(ipmn) == (3, 32, 32)
