"""What both model families share (pipeline.model.layers): one attention switch, one stochastic depth."""

from __future__ import annotations

import pytest
import torch

from pipeline.model import create
from pipeline.model.layers import SHORT_SEQUENCE, attention
from pipeline.model.timesformer import TimeSformerConfig
from pipeline.model.vivit import ViViTConfig


@pytest.mark.parametrize("length", [SHORT_SEQUENCE, SHORT_SEQUENCE + 1, 50])
def test_every_attention_impl_gives_the_same_numbers(length):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, length, 8) for _ in range(3))
    ref = attention(q, k, v, dropout=0.0, impl="math")
    for impl in ("sdpa", "auto"):
        torch.testing.assert_close(attention(q, k, v, dropout=0.0, impl=impl), ref, atol=1e-5, rtol=0)


def test_auto_writes_short_cpu_attention_out_and_leaves_the_rest_to_sdpa(monkeypatch):
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(a[0].shape[-2]) or sdpa(*a, **kw))
    for length in (SHORT_SEQUENCE, SHORT_SEQUENCE + 1):
        q = torch.randn(1, 2, length, 4)
        attention(q, q, q, dropout=0.0, impl="auto")
    assert calls == [SHORT_SEQUENCE + 1]


@pytest.mark.parametrize("config", [TimeSformerConfig, ViViTConfig])
def test_both_families_take_the_same_attn_impl_values(config):
    assert config().attn_impl == "auto"
    for impl in ("auto", "sdpa", "math"):
        assert config(attn_impl=impl).attn_impl == impl
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        config(attn_impl="flash")


@pytest.mark.parametrize("preset", ["debug", "vivit_debug"])
def test_both_families_compute_the_same_logits_with_every_attn_impl(preset):
    torch.manual_seed(0)
    ref = create(preset, num_classes=3, attn_impl="math").eval()
    x = torch.randn(1, 3, ref.config.num_frames, ref.config.image_size, ref.config.image_size)
    with torch.no_grad():
        want = ref(x)
        for impl in ("sdpa", "auto"):
            net = create(preset, num_classes=3, attn_impl=impl).eval()
            net.load_state_dict(ref.state_dict())
            torch.testing.assert_close(net(x), want, atol=1e-5, rtol=0)
