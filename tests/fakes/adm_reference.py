"""A guided-diffusion (ADM) DiffFace UNet for tests: a random state dict in its key layout, and its forward.

Written from the structure of DiffFace's guided-diffusion ADM UNet (github.com/hxngiee/DiffFace @ b7bef83) and
our diffusers port (ResBlocks with scale-shift norm and avg-pool/nearest
resampling, legacy per-head qkv attention, [cos, sin] timestep embedding, identity MLP added to the time
embedding), not copied from guided-diffusion.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ipmn_lightning.diffface.unet import attention_levels

TINY = {
    "image_size": 16,
    "in_channels": 3,
    "model_channels": 32,
    "channel_mult": (1, 2, 2),
    "num_res_blocks": 2,
    "attention_resolutions": (8, 4),
    "num_head_channels": 16,
    "id_dim": 12,
    "learn_sigma": True,
    "dropout": 0.0,
    "norm_num_groups": 32,
}


# ------------------------------------------------------------------ an ADM-shaped random state dict


def make_adm_state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def rnd(*shape: int, scale: float | None = None) -> torch.Tensor:
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        s = scale if scale is not None else 1.0 / math.sqrt(fan_in)
        return torch.randn(*shape, generator=g, dtype=torch.float64) * s

    def linear(name: str, out: int, inp: int) -> None:
        sd[f"{name}.weight"], sd[f"{name}.bias"] = rnd(out, inp), rnd(out, scale=0.1)

    def conv(name: str, out: int, inp: int, k: int) -> None:
        sd[f"{name}.weight"], sd[f"{name}.bias"] = rnd(out, inp, k, k), rnd(out, scale=0.1)

    def norm(name: str, ch: int) -> None:
        sd[f"{name}.weight"], sd[f"{name}.bias"] = 1 + rnd(ch, scale=0.1), rnd(ch, scale=0.1)

    def resblock(name: str, inp: int, out: int, emb: int) -> None:
        norm(f"{name}.in_layers.0", inp)
        conv(f"{name}.in_layers.2", out, inp, 3)
        linear(f"{name}.emb_layers.1", 2 * out, emb)
        norm(f"{name}.out_layers.0", out)
        conv(f"{name}.out_layers.3", out, out, 3)
        if inp != out:
            conv(f"{name}.skip_connection", out, inp, 1)

    def attention(name: str, ch: int) -> None:
        norm(f"{name}.norm", ch)
        sd[f"{name}.qkv.weight"], sd[f"{name}.qkv.bias"] = rnd(3 * ch, ch, 1), rnd(3 * ch, scale=0.1)
        sd[f"{name}.proj_out.weight"], sd[f"{name}.proj_out.bias"] = rnd(ch, ch, 1), rnd(ch, scale=0.1)

    c, mult, n_res = cfg["model_channels"], cfg["channel_mult"], cfg["num_res_blocks"]
    emb = 4 * c
    attn = attention_levels(cfg["image_size"], len(mult), cfg["attention_resolutions"])
    linear("time_embed.0", emb, c)
    linear("time_embed.2", emb, emb)
    linear("id_embed.0", emb, cfg["id_dim"])
    linear("id_embed.2", emb, emb)
    ch = mult[0] * c
    conv("input_blocks.0.0", ch, cfg["in_channels"], 3)
    chans, idx = [ch], 0
    for level, m in enumerate(mult):
        for _ in range(n_res):
            idx += 1
            resblock(f"input_blocks.{idx}.0", ch, m * c, emb)
            ch = m * c
            if attn[level]:
                attention(f"input_blocks.{idx}.1", ch)
            chans.append(ch)
        if level != len(mult) - 1:
            idx += 1
            resblock(f"input_blocks.{idx}.0", ch, ch, emb)
            chans.append(ch)
    resblock("middle_block.0", ch, ch, emb)
    attention("middle_block.1", ch)
    resblock("middle_block.2", ch, ch, emb)
    idx = 0
    for level, m in reversed(list(enumerate(mult))):
        for i in range(n_res + 1):
            resblock(f"output_blocks.{idx}.0", ch + chans.pop(), m * c, emb)
            ch = m * c
            k = 1
            if attn[level]:
                attention(f"output_blocks.{idx}.1", ch)
                k = 2
            if level and i == n_res:
                resblock(f"output_blocks.{idx}.{k}", ch, ch, emb)
            idx += 1
    norm("out.0", ch)
    conv("out.2", cfg["in_channels"] * 2, ch, 3)
    return sd


# ------------------------------------------------------------------------- the reference forward


def _gn(sd, name, x):
    return F.group_norm(x, 32, sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)


def _res(sd, name, x, emb, down=False, up=False):
    h = F.silu(_gn(sd, f"{name}.in_layers.0", x))
    if up:
        h, x = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x, scale_factor=2, mode="nearest")
    if down:
        h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
    h = F.conv2d(h, sd[f"{name}.in_layers.2.weight"], sd[f"{name}.in_layers.2.bias"], padding=1)
    e = F.linear(F.silu(emb), sd[f"{name}.emb_layers.1.weight"], sd[f"{name}.emb_layers.1.bias"])
    scale, shift = e[:, :, None, None].chunk(2, dim=1)
    h = _gn(sd, f"{name}.out_layers.0", h) * (1 + scale) + shift
    h = F.conv2d(F.silu(h), sd[f"{name}.out_layers.3.weight"], sd[f"{name}.out_layers.3.bias"], padding=1)
    if f"{name}.skip_connection.weight" in sd:
        x = F.conv2d(x, sd[f"{name}.skip_connection.weight"], sd[f"{name}.skip_connection.bias"])
    return x + h


def _attn(sd, name, x, head_ch, order):
    b, c, hh, ww = x.shape
    xf = x.reshape(b, c, -1)
    qkv = F.conv1d(_gn(sd, f"{name}.norm", xf), sd[f"{name}.qkv.weight"], sd[f"{name}.qkv.bias"])
    heads, t = c // head_ch, xf.shape[-1]
    if order == "legacy":
        q, k, v = qkv.reshape(b * heads, 3 * head_ch, t).split(head_ch, dim=1)
    else:
        q, k, v = (z.reshape(b * heads, head_ch, t) for z in qkv.chunk(3, dim=1))
    s = 1 / math.sqrt(math.sqrt(head_ch))
    w = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s), dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, t)
    h = F.conv1d(a, sd[f"{name}.proj_out.weight"], sd[f"{name}.proj_out.bias"])
    return (xf + h).reshape(b, c, hh, ww)


def _timestep_embedding(t, dim):
    # ADM computes the sinusoids in float32 (and so does diffusers): at t ~ 900 that is a 1e-5 difference
    # from float64, so the reference must do the same to compare at 1e-9.
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _mlp(sd, name, x):
    h = F.linear(x, sd[f"{name}.0.weight"], sd[f"{name}.0.bias"])
    return F.linear(F.silu(h), sd[f"{name}.2.weight"], sd[f"{name}.2.bias"])


def adm_forward(sd, cfg, x, t, identity, order="legacy"):
    c, mult, n_res, hc = cfg["model_channels"], cfg["channel_mult"], cfg["num_res_blocks"], cfg["num_head_channels"]
    attn = attention_levels(cfg["image_size"], len(mult), cfg["attention_resolutions"])
    temb = _timestep_embedding(t, c).to(x.dtype)
    emb = _mlp(sd, "time_embed", temb) + _mlp(sd, "id_embed", identity)
    h = F.conv2d(x, sd["input_blocks.0.0.weight"], sd["input_blocks.0.0.bias"], padding=1)
    hs, idx = [h], 0
    for level in range(len(mult)):
        for _ in range(n_res):
            idx += 1
            h = _res(sd, f"input_blocks.{idx}.0", h, emb)
            if attn[level]:
                h = _attn(sd, f"input_blocks.{idx}.1", h, hc, order)
            hs.append(h)
        if level != len(mult) - 1:
            idx += 1
            h = _res(sd, f"input_blocks.{idx}.0", h, emb, down=True)
            hs.append(h)
    h = _res(sd, "middle_block.0", h, emb)
    h = _attn(sd, "middle_block.1", h, hc, order)
    h = _res(sd, "middle_block.2", h, emb)
    idx = 0
    for level in reversed(range(len(mult))):
        for i in range(n_res + 1):
            h = _res(sd, f"output_blocks.{idx}.0", torch.cat([h, hs.pop()], dim=1), emb)
            k = 1
            if attn[level]:
                h = _attn(sd, f"output_blocks.{idx}.1", h, hc, order)
                k = 2
            if level and i == n_res:
                h = _res(sd, f"output_blocks.{idx}.{k}", h, emb, up=True)
            idx += 1
    h = F.silu(_gn(sd, "out.0", h))
    return F.conv2d(h, sd["out.2.weight"], sd["out.2.bias"], padding=1)


def _inputs(cfg):
    g = torch.Generator().manual_seed(1)
    s = cfg["image_size"]
    x = torch.randn(2, 3, s, s, generator=g, dtype=torch.float64)
    t = torch.tensor([7.0, 901.0], dtype=torch.float64)
    identity = F.normalize(torch.randn(2, cfg["id_dim"], generator=g, dtype=torch.float64), dim=1)
    return x, t, identity
