"""FSFMViT computes FSFM's forward: ViT blocks, mean of patch tokens, fc_norm, head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from streamguard.model import ARCHS, build_fsfm_vit, infer_arch


def manual_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official FSFM fine-tune forward written out with plain ops, from a state dict."""
    eps = 1e-6
    n = x.shape[0]
    dim = sd["cls_token"].shape[-1]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)  # [N, D, g, g]
    t = t.flatten(2).transpose(1, 2)  # [N, L, D]
    t = torch.cat([sd["cls_token"].expand(n, -1, -1), t], dim=1) + sd["pos_embed"]  # [N, 1 + L, D]
    tokens = t.shape[1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(t, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])  # [N, T, 3D]
        q, k, v = qkv.reshape(n, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)  # each [N, H, T, d]
        attn = (q @ k.transpose(-2, -1) * (dim // heads) ** -0.5).softmax(dim=-1)  # [N, H, T, T]
        h = (attn @ v).transpose(1, 2).reshape(n, tokens, dim)
        t = t + F.linear(h, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(t, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))  # [N, T, 4D]
        t = t + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    pooled = t[:, 1:].mean(dim=1)  # patch tokens only: the class token is excluded
    embedding = F.layer_norm(pooled, (dim,), sd["fc_norm.weight"], sd["fc_norm.bias"], eps)
    return F.linear(embedding, sd["head.weight"], sd["head.bias"]), embedding


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_fsfm_vit("tiny", img_size=64).eval()
    with torch.no_grad():  # make every norm and the head matter
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.2 * torch.randn_like(param))
        model.head.weight.normal_(0, 0.5)
    return model


def test_structure_matches_fsfm_finetune(tiny):
    keys = tiny.state_dict().keys()
    assert isinstance(tiny.norm, nn.Identity) and not any(k.startswith("norm.") for k in keys)
    assert {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"} <= set(keys)
    assert tiny.fc_norm.eps == 1e-6 and tiny.blocks[0].norm1.eps == 1e-6
    assert tiny.blocks[0].attn.qkv.bias is not None
    assert tiny.pos_embed.shape == (1, 1 + 4 * 4, 192)
    assert tiny.head.out_features == 2


def test_forward_equals_manual_fsfm_computation(tiny):
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits, embedding = tiny.forward_with_embedding(x)
        ref_logits, ref_embedding = manual_forward(tiny.state_dict(), x, heads=ARCHS["tiny"].num_heads)
        plain = tiny(x)
    torch.testing.assert_close(embedding, ref_embedding, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plain, logits)
    # Pooling over the class token too (a plausible mistake) would give other numbers.
    assert not torch.allclose(logits[:, 0], logits[:, 1])


def test_pooling_is_mean_of_patch_tokens_then_fc_norm_then_head(tiny):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = tiny.forward_features(x)  # [N, 1 + L, D]
        pooled = tokens[:, 1:].mean(dim=1)
        expected_embedding = tiny.fc_norm(pooled)
        logits, embedding = tiny.forward_with_embedding(x)
        with_cls = tiny.fc_norm(tokens.mean(dim=1))
    torch.testing.assert_close(embedding, expected_embedding)
    torch.testing.assert_close(logits, tiny.head(expected_embedding))
    assert not torch.allclose(embedding, with_cls, atol=1e-3)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_infer_arch(arch):
    spec = ARCHS[arch]
    sd = {"patch_embed.proj.weight": torch.empty(spec.embed_dim, 3, 16, 16, device="meta")}
    sd |= {f"blocks.{i}.norm1.weight": torch.empty(spec.embed_dim, device="meta") for i in range(spec.depth)}
    assert infer_arch(sd) == arch


def test_infer_arch_rejects_unknown_shapes():
    sd = {"patch_embed.proj.weight": torch.empty(384, 3, 16, 16, device="meta"), "blocks.0.norm1.weight": torch.empty(1)}
    with pytest.raises(ValueError, match="dim 384, depth 1, patch 16 matches no known arch"):
        infer_arch(sd)
    with pytest.raises(ValueError, match="not a ViT state dict"):
        infer_arch({"fc.weight": torch.empty(2, 2)})


def test_build_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown arch 'huge'"):
        build_fsfm_vit("huge")
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        build_fsfm_vit("tiny", img_size=100)


def test_fsfm_small_is_the_mocov3_variant():
    assert (ARCHS["small"].embed_dim, ARCHS["small"].num_heads) == (384, 12)
    assert (ARCHS["large"].embed_dim, ARCHS["large"].depth, ARCHS["large"].num_heads) == (1024, 24, 16)
