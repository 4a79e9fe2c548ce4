"""torch.compile of the transformer blocks: equal to HF and to eager, one graph for every batch size,
checkpointing, DDP, autocast, and the eager fallback.

The fast tests compile with the `aot_eager` backend: Dynamo's capture, guards and dynamic shapes
and AOTAutograd's forward/backward split (what decides recompiles, checkpointing and DDP behaviour)
without Inductor's code generation, which costs ~1 min per graph on the 2-core machine. The slow
test runs the real Inductor (C++ on CPU) once.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.distributed as dist
from einops import rearrange
from hf_oracles import hf_timesformer
from torch._dynamo.utils import counters
from torch.nn.parallel import DistributedDataParallel

from pipeline.model import create
from pipeline.model.compile import _probe, blocks_of, compile_blocks, is_compiled
from pipeline.model.weights import load_hf

FAST = "aot_eager"


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def clip(b: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def twins(preset: str = "debug", **overrides) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two copies of one model (same weights): one to compile, one to stay eager."""
    torch.manual_seed(0)
    a, b = create(preset, **overrides), create(preset, **overrides)
    b.load_state_dict(a.state_dict())
    return a, b


def graphs() -> int:
    """Graphs Dynamo has compiled so far (each new one is a compile)."""
    return counters["stats"]["unique_graphs"]


def train_grads(model: torch.nn.Module, x: torch.Tensor, seed: int = 1) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same drop-path masks for both models
    model(x).square().mean().backward()
    return {n: p.grad for n, p in model.named_parameters()}


def assert_same_grads(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], scale: float = 1.0) -> None:
    """Equal gradients, to 1e-6 absolute (x `scale`: Inductor's fused kernels reorder float32
    sums, ~2e-6 apart from eager on gradients of ~1; a wrong gradient is off by its own size)."""
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6 * scale, rtol=1e-5 * scale, msg=name)


def assert_matches_hf_and_eager_without_recompiles(compiled, eager, hf, grad_scale: float = 1.0) -> None:
    """At batch sizes 2 then 3: HF's logits (<= 1e-5) and eager's gradients; size 2 makes two
    graphs (eval and train, shared by both blocks), size 3 none (symbolic batch dims)."""
    before = graphs()  # (the probe's, the first time in a process)
    for b in (2, 3):
        x = clip(b, seed=b)
        compiled.eval()
        with torch.no_grad():
            ref = hf(pixel_values=rearrange(x, "b c t h w -> b t c h w")).logits
            torch.testing.assert_close(compiled(x), ref, atol=1e-5, rtol=0)
        assert_same_grads(train_grads(compiled, x), train_grads(eager, x), grad_scale)
        if b == 2:
            assert graphs() - before == 2  # eval and train, shared by both blocks
    assert graphs() - before == 2


def test_compiled_timesformer_equals_hf_and_eager_at_every_batch_size():
    """Divided attention with activation checkpointing: HF's logits and eager's gradients at batch
    sizes 2 and 3, and size 3 compiles nothing new (batch dims are symbolic from the first call)."""
    hf = hf_timesformer("divided")
    compiled, eager = twins(depth=2, grad_checkpointing=True)
    state, _ = load_hf(hf.state_dict(), compiled.config)
    compiled.load_state_dict(state), eager.load_state_dict(state)
    keys = list(compiled.state_dict())
    assert compile_blocks(compiled, "cpu", backend=FAST) and is_compiled(compiled)
    assert list(compiled.state_dict()) == keys  # checkpoints keep their key names
    assert_matches_hf_and_eager_without_recompiles(compiled, eager, hf)


@pytest.mark.extended
@pytest.mark.parametrize("attention", ["joint", "space_only", "local_global", "axial"])
def test_every_timesformer_scheme_compiles_without_a_graph_per_block_or_batch(attention):
    """Drop-path rates differ per block (0 ... 0.1): still one train graph for rate 0 and one for
    the others, shared by the blocks and by every batch size."""
    compiled, eager = twins(attention=attention, depth=3, drop_path_rate=0.1)
    compile_blocks(compiled, "cpu", backend=FAST)
    before = graphs()
    for b in (2, 3):
        x = clip(b, seed=b)
        compiled.eval(), eager.eval()
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), eager(x), atol=1e-6, rtol=1e-5)
        assert_same_grads(train_grads(compiled, x), train_grads(eager, x))
        if b == 2:
            assert graphs() - before == 3  # eval; train with rate 0 (block 0); train with rate > 0
    assert graphs() - before == 3


@pytest.mark.extended
def test_compiled_vivit_matches_eager_for_every_model():
    for number in (1, 2, 3, 4):
        compiled, eager = twins("vivit_debug", model=number, drop_path_rate=0.1, grad_checkpointing=True)
        compile_blocks(compiled, "cpu", backend=FAST)
        assert len(blocks_of(compiled)) == (3 if number == 2 else 2)
        x = clip(2)
        compiled.eval(), eager.eval()
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), eager(x), atol=1e-6, rtol=1e-5)
        assert_same_grads(train_grads(compiled, x), train_grads(eager, x))


@pytest.mark.extended
def test_compiled_under_bf16_autocast_matches_eager():
    compiled, eager = twins(depth=2)
    compile_blocks(compiled, "cpu", backend=FAST)
    x = clip(2)
    compiled.eval(), eager.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, ref = compiled(x), eager(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, ref, atol=0, rtol=0)


@pytest.mark.extended
def test_ddp_around_compiled_blocks_trains_like_eager(tmp_path):
    """Compile first, then DDP (the order of pipeline/train/loop.py): gradients reach every
    parameter through DDP's hooks and equal eager DDP's."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        compiled, eager = twins(depth=2, grad_checkpointing=True)
        compile_blocks(compiled, "cpu", backend=FAST)
        x = clip(2)
        grads = [train_grads(DistributedDataParallel(m), x) for m in (compiled, eager)]
    finally:
        dist.destroy_process_group()
    assert all(g is not None for g in grads[0].values())
    assert_same_grads({k.removeprefix("module."): v for k, v in grads[0].items()},
                      {k.removeprefix("module."): v for k, v in grads[1].items()})


def test_no_cpp_compiler_means_one_warning_and_eager():
    """Inductor pointed at a C++ compiler that does not exist: the probe fails, the model runs eager."""
    import torch._inductor.config as inductor_config

    compiled, eager = twins(depth=2)
    _probe.cache_clear()
    try:
        with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++")}), warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert compile_blocks(compiled, "cpu") is False
    finally:
        _probe.cache_clear()
    ours = [str(w.message) for w in seen if w.category is RuntimeWarning]
    assert len(ours) == 1 and ours[0].startswith("torch.compile cannot run on cpu"), ours
    assert not is_compiled(compiled)
    x = clip(2)
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(x), eager.eval()(x), atol=0, rtol=0)


def test_a_block_the_compiler_rejects_falls_back_to_eager_once():
    """A backend that cannot compile attention (passes the probe, fails on the block): the first
    call warns once and every block runs eager from then on, with the right result."""

    def no_attention(gm: torch.fx.GraphModule, inputs):
        if any("scaled_dot_product" in str(n.target) for n in gm.graph.nodes):
            raise NotImplementedError("this backend has no attention kernel")
        return gm.forward

    compiled, eager = twins(depth=2)
    x = clip(2)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert compile_blocks(compiled, "cpu", backend=no_attention)
        compiled.eval(), eager.eval()
        with torch.no_grad():
            for _ in range(2):
                torch.testing.assert_close(compiled(x), eager(x), atol=0, rtol=0)
    ours = [str(w.message) for w in seen if w.category is RuntimeWarning]
    assert len(ours) == 1 and "this backend has no attention kernel" in ours[0], ours
    assert not is_compiled(compiled)


@pytest.mark.slow
def test_inductor_compiled_step_equals_hf_and_eager():
    """The real Inductor (C++ kernels on CPU): HF's logits, eager's gradients, no recompile."""
    hf = hf_timesformer("divided")
    compiled, eager = twins(depth=2, grad_checkpointing=True)
    state, _ = load_hf(hf.state_dict(), compiled.config)
    compiled.load_state_dict(state), eager.load_state_dict(state)
    assert compile_blocks(compiled, "cpu")
    assert_matches_hf_and_eager_without_recompiles(compiled, eager, hf, grad_scale=10.0)
