"""ViViT (Arnab et al., ICCV 2021): the four video transformers of the paper in one file.

    model = ViViT(ViViTConfig(model="factorised_encoder", num_classes=400))   # ViViT-B FE, 32 x 224
    logits = model(video)                                                       # [B, 3, T, H, W] -> [B, 400]

Tokens. A Conv3d with kernel = stride = (t, p, p) cuts the clip into nt x gh x gw tokens
(nt = T/t, gh = H/p, gw = W/p). `tokenizer="uniform"` is the special case t = 1 (2-D patches per
frame); `"tubelet"` uses t = `tubelet_size`. A 2-D patch embedding becomes a tubelet embedding
with `inflate_patch_weight` ("inflation": copy over t and divide by t; "central_frame": zeros
except the middle slice). Inside, patch tokens are kept as one sequence in (t h w) order, time
slowest, which is also the order of Hugging Face's ViViT (so its weights load by renaming only).

Models (`model`, a number or a name):
1 `spatio_temporal`: cls token + one joint attention over all nt*gh*gw tokens (the HF model).
2 `factorised_encoder`: a spatial ViT runs on each frame's tokens with its own cls token; the nt
  per-frame cls outputs plus a temporal cls token go through a temporal encoder; head on that cls.
3 `factorised_self_attention`: every block attends spatially (within a frame), then temporally
  (within a spatial position), then the MLP. No cls token: the head sees the token mean.
4 `factorised_dot_product`: every block runs one multi-head attention whose first half of the
  heads attend within the query's frame and whose second half attend within the query's spatial
  position; the head outputs are concatenated and projected. No cls token: mean pooling.

Position embeddings are learned at (num_frames, image_size) and resampled to the real input
(bicubic over the spatial grid, linear over time) when T, H or W differ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from pipeline.model.layers import attention, check_attn_impl, drop_path, drop_path_mask

MODEL_NAMES: dict[str, int] = {
    "spatio_temporal": 1,
    "factorised_encoder": 2,
    "factorised_self_attention": 3,
    "factorised_dot_product": 4,
}


def model_number(model: int | str) -> int:
    """1..4 from a model number or one of `MODEL_NAMES`; anything else is a ValueError."""
    if isinstance(model, str) and model in MODEL_NAMES:
        return MODEL_NAMES[model]
    if isinstance(model, int) and not isinstance(model, bool) and model in (1, 2, 3, 4):
        return model
    raise ValueError(f"model must be 1, 2, 3, 4 or one of {list(MODEL_NAMES)}, got {model!r}")


@dataclass
class ViViTConfig:
    """Architecture of one ViViT; `num_frames` and `image_size` size the learned position embeddings."""

    model: int | str = 2  # 1..4 or a name in MODEL_NAMES; stored as the number
    num_classes: int = 400
    num_frames: int = 32  # the paper's Kinetics clips: 32 frames at stride 2
    image_size: int = 224
    in_chans: int = 3
    tokenizer: Literal["uniform", "tubelet"] = "tubelet"
    tubelet_size: int = 2  # frames per token for "tubelet" (paper's ViViT-B/16x2); "uniform" uses 1
    patch_size: int = 16
    embed_dim: int = 768  # ViT-B
    depth: int = 12  # blocks (Model 2: the spatial encoder's L_s)
    temporal_depth: int = 4  # Model 2 only: the temporal encoder's L_t (the paper's choice is 4)
    num_heads: int = 12  # Model 4 gives half of them to space and half to time: must be even
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    # GELU variant: the original JAX/Scenic code (and HF's "gelu_fast") use the tanh approximation.
    gelu: Literal["tanh", "exact"] = "tanh"
    drop_rate: float = 0.0  # dropout after position embeddings, attention projections and MLPs
    attn_drop_rate: float = 0.0  # dropout on attention weights
    drop_path_rate: float = 0.1  # stochastic depth, rising linearly from 0 over the blocks
    layer_norm_eps: float = 1e-6  # as ViT / Scenic / HF ViViT
    attn_impl: Literal["auto", "sdpa", "math"] = "auto"  # as TimeSformer's: pipeline.model.layers.attention
    grad_checkpointing: bool = False  # recompute each block in backward (saves activation memory)
    # Input normalisation the weights expect, on [0, 1] pixels: the original (Scenic) pipeline
    # zero-centres pixels to [-1, 1]. (HF's VivitImageProcessor rescales to [-1, 1] and then also
    # applies mean/std 0.5, giving [-3, 1]; check which one a converted checkpoint was tuned on.)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        self.model = model_number(self.model)
        if self.tokenizer not in ("uniform", "tubelet"):
            raise ValueError(f"tokenizer must be 'uniform' or 'tubelet', got {self.tokenizer!r}")
        if self.gelu not in ("tanh", "exact"):
            raise ValueError(f"gelu must be 'tanh' or 'exact', got {self.gelu!r}")
        check_attn_impl(self.attn_impl)
        for name in ("num_classes", "num_frames", "image_size", "in_chans", "tubelet_size", "patch_size",
                     "embed_dim", "depth", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.model == 4 and self.num_heads % 2:
            raise ValueError(f"model 4 splits heads between space and time: num_heads must be even, got {self.num_heads}")
        if self.model == 2 and self.temporal_depth < 1:
            raise ValueError(f"model 2 needs temporal_depth >= 1, got {self.temporal_depth}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.num_frames % self.t:
            raise ValueError(f"num_frames {self.num_frames} is not divisible by the tubelet length {self.t}")
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)

    @property
    def t(self) -> int:
        """Frames per token: 1 for uniform frame sampling, `tubelet_size` for tubelets."""
        return 1 if self.tokenizer == "uniform" else self.tubelet_size

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """(nt, gh, gw) tokens at `num_frames` x `image_size`."""
        g = self.image_size // self.patch_size
        return self.num_frames // self.t, g, g


# ------------------------------------------------------------------------- pure functions


def inflate_patch_weight(weight: torch.Tensor, t: int, method: Literal["inflation", "central_frame"]) -> torch.Tensor:
    """A 2-D patch-embedding kernel [D, C, p, p] (or [D, C, 1, p, p]) -> a tubelet kernel [D, C, t, p, p].

    "inflation": the 2-D kernel repeated over t and divided by t, so a clip of identical frames
    embeds exactly as one frame. "central_frame": zeros except slice t // 2, so each tubelet embeds
    as its middle frame. The bias is unchanged by either.
    """
    if weight.ndim == 5:
        if weight.shape[2] != 1:
            raise ValueError(f"expected a 2-D kernel [D, C, p, p] or [D, C, 1, p, p], got {tuple(weight.shape)}")
        weight = weight[:, :, 0]
    if weight.ndim != 4:
        raise ValueError(f"expected a 2-D kernel [D, C, p, p], got {tuple(weight.shape)}")
    if t < 1:
        raise ValueError(f"t must be >= 1, got {t}")
    if method == "inflation":
        return repeat(weight, "d c ph pw -> d c t ph pw", t=t) / t  # [D, C, t, p, p]
    if method == "central_frame":
        out = weight.new_zeros(weight.shape[0], weight.shape[1], t, *weight.shape[2:])  # [D, C, t, p, p]
        out[:, :, t // 2] = weight
        return out
    raise ValueError(f"method must be 'inflation' or 'central_frame', got {method!r}")


def resize_pos_grid(pos: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Resample a position-embedding grid [1, nt, gh, gw, D] to `size` = (nt', gh', gw').

    Bicubic over (gh, gw) per time step, then linear over time per spatial position; an axis whose
    size already matches is left untouched (exactly).
    """
    nt, gh, gw = size
    if pos.shape[2:4] != (gh, gw):
        frames = rearrange(pos, "one t h w d -> (one t) d h w")  # [nt, D, gh, gw]
        frames = F.interpolate(frames, size=(gh, gw), mode="bicubic", align_corners=False)
        pos = rearrange(frames, "t d h w -> 1 t h w d")  # [1, nt, gh', gw', D]
    if pos.shape[1] != nt:
        series = rearrange(pos, "one t h w d -> (one h w) d t")  # [gh' gw', D, nt]
        series = F.interpolate(series, size=nt, mode="linear", align_corners=False)
        pos = rearrange(series, "(h w) d t -> 1 t h w d", h=gh)  # [1, nt', gh', gw', D]
    return pos


# ----------------------------------------------------------------------------------- layers


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm layout: q, k, v stacked)."""

    def __init__(self, cfg: ViViTConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.attn_drop = cfg.attn_drop_rate
        self.impl = cfg.attn_impl
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.proj_drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, D] -> [B, L, D]: every token attends to all L tokens."""
        # [B, L, 3*D] -> 3 x [B, heads, L, head_dim]
        q, k, v = rearrange(self.qkv(x), "b l (three h e) -> three b h l e", three=3, h=self.num_heads)
        out = attention(q, k, v, dropout=self.attn_drop if self.training else 0.0, impl=self.impl)
        return self.proj_drop(self.proj(rearrange(out, "b h l e -> b l (h e)")))  # [B, L, D]


class FactorisedDotProductAttention(Attention):
    """Model 4: heads [0, H/2) attend within the query's frame, heads [H/2, H) within its spatial position.

    Same parameters as `Attention` (the paper: Model 4 has Model 1's parameter count).
    """

    def split_heads(self, x: torch.Tensor, nt: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, nt*n, D] in (t n) order -> (spatial heads, temporal heads), each [B, H/2, nt*n, head_dim].

        Kept apart from `forward` so tests can check what each half sees.
        """
        half = self.num_heads // 2
        # [B, nt*n, 3*D] -> 3 x [B, H, nt, n, head_dim]
        q, k, v = rearrange(self.qkv(x), "b (t n) (three h e) -> three b h t n e", three=3, h=self.num_heads, t=nt)
        p = self.attn_drop if self.training else 0.0
        # spatial half: [B, H/2, nt, n, e], attention over n (the query's frame)
        ys = attention(q[:, :half], k[:, :half], v[:, :half], dropout=p, impl=self.impl)
        # temporal half: [B, H/2, n, nt, e], attention over nt (the query's spatial position)
        qt, kt, vt = (rearrange(z[:, half:], "b h t n e -> b h n t e") for z in (q, k, v))
        yt = rearrange(attention(qt, kt, vt, dropout=p, impl=self.impl), "b h n t e -> b h t n e")
        flat = "b h t n e -> b h (t n) e"
        return rearrange(ys, flat), rearrange(yt, flat)

    def forward(self, x: torch.Tensor, nt: int) -> torch.Tensor:
        """[B, nt*n, D] -> [B, nt*n, D]: concatenate both halves of the heads, then project."""
        ys, yt = self.split_heads(x, nt)
        out = torch.cat([ys, yt], dim=1)  # [B, H, nt*n, head_dim]
        return self.proj_drop(self.proj(rearrange(out, "b h l e -> b l (h e)")))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2, with dropout after each."""

    def __init__(self, cfg: ViViTConfig):
        super().__init__()
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.embed_dim, hidden)
        self.act = nn.GELU(approximate="tanh" if cfg.gelu == "tanh" else "none")
        self.fc2 = nn.Linear(hidden, cfg.embed_dim)
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    Models 1 and 2 use plain attention over the whole sequence; Model 4 (`factorised_heads`) splits
    the heads between space and time and needs the number of frames `nt` of the (t n) sequence.
    """

    def __init__(self, cfg: ViViTConfig, drop_path_rate: float, factorised_heads: bool = False):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        self.factorised_heads = factorised_heads
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.attn = FactorisedDotProductAttention(cfg) if factorised_heads else Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(cfg)

    def forward(self, x: torch.Tensor, nt: int = 1) -> torch.Tensor:
        """[B, L, D] -> [B, L, D]."""
        h = self.norm1(x)
        y = self.attn(h, nt) if self.factorised_heads else self.attn(h)
        x = x + drop_path(y, drop_path_mask(y, self.drop_path_rate, self.training))
        y = self.mlp(self.norm2(x))
        return x + drop_path(y, drop_path_mask(y, self.drop_path_rate, self.training))


class FactorisedSelfAttentionBlock(nn.Module):
    """Model 3 block: spatial attention (per frame), temporal attention (per position), MLP; each pre-norm residual.

    `norm1`/`attn` are the spatial step (named as in an image ViT, so they can be initialised from
    one); `temporal_norm1`/`temporal_attn` the temporal step.
    """

    def __init__(self, cfg: ViViTConfig, drop_path_rate: float):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.temporal_norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.temporal_attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(cfg)

    def forward(self, x: torch.Tensor, nt: int) -> torch.Tensor:
        """[B, nt*n, D] in (t n) order -> the same."""
        b = x.shape[0]

        def dp(y: torch.Tensor) -> torch.Tensor:
            return drop_path(y, drop_path_mask(y, self.drop_path_rate, self.training))

        frames = rearrange(x, "b (t n) d -> (b t) n d", t=nt)  # [B nt, n, D]
        frames = frames + dp(self.attn(self.norm1(frames)))
        tubes = rearrange(frames, "(b t) n d -> (b n) t d", b=b)  # [B n, nt, D]
        tubes = tubes + dp(self.temporal_attn(self.temporal_norm1(tubes)))
        x = rearrange(tubes, "(b n) t d -> b (t n) d", b=b)  # [B, nt*n, D]
        return x + dp(self.mlp(self.norm2(x)))


# ----------------------------------------------------------------------------------- model


class ViViT(nn.Module):
    """ViViT video classifier: `forward(x [B, 3, T, H, W]) -> logits [B, num_classes]`.

    Parameters by model (D = embed_dim, N = nt*gh*gw tokens at the config's size, n = gh*gw):
    - all: `patch_embed.proj` (Conv3d, kernel (t, p, p)), `norm` (the final LayerNorm; in Model 2 the
      spatial encoder's), `head`.
    - 1: `cls_token` [1, 1, D], `pos_embed` [1, 1+N, D] (cls first), `blocks.i` (joint).
    - 2: spatial encoder `cls_token`, `pos_embed` [1, 1+n, D], `blocks.i`, `norm` (image-ViT
      names); temporal encoder `temporal_cls_token`, `temporal_pos_embed` [1, 1+nt, D],
      `temporal_blocks.i`, `temporal_norm`.
    - 3: `pos_embed` [1, N, D], `blocks.i` = FactorisedSelfAttentionBlock.
    - 4: `pos_embed` [1, N, D], `blocks.i` with FactorisedDotProductAttention.
    """

    family = "vivit"

    def __init__(self, config: ViViTConfig):
        super().__init__()
        self.config = cfg = config
        d, (nt, gh, gw) = cfg.embed_dim, cfg.token_grid
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(cfg.in_chans, d, kernel_size=(cfg.t, cfg.patch_size, cfg.patch_size),
                                          stride=(cfg.t, cfg.patch_size, cfg.patch_size))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        depth = cfg.depth + (cfg.temporal_depth if cfg.model == 2 else 0)
        rates = [cfg.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # 0 -> rate, spatial first
        if cfg.model == 1:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + nt * gh * gw, d))
            self.blocks = nn.ModuleList([Block(cfg, r) for r in rates])
        elif cfg.model == 2:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + gh * gw, d))
            self.blocks = nn.ModuleList([Block(cfg, r) for r in rates[: cfg.depth]])
            self.temporal_cls_token = nn.Parameter(torch.zeros(1, 1, d))
            self.temporal_pos_embed = nn.Parameter(torch.zeros(1, 1 + nt, d))
            self.temporal_blocks = nn.ModuleList([Block(cfg, r) for r in rates[cfg.depth:]])
            self.temporal_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        elif cfg.model == 3:
            self.pos_embed = nn.Parameter(torch.zeros(1, nt * gh * gw, d))
            self.blocks = nn.ModuleList([FactorisedSelfAttentionBlock(cfg, r) for r in rates])
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, nt * gh * gw, d))
            self.blocks = nn.ModuleList([Block(cfg, r, factorised_heads=True) for r in rates])
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(d, cfg.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ViT init: trunc-normal(0.02) for linears, the patch kernel, cls tokens and position embeddings."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv3d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if "cls_token" in name or "pos_embed" in name:
                nn.init.trunc_normal_(p, std=0.02)

    # -------------------------------------------------------------------------- pieces

    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_chans:
            raise ValueError(f"expected input [B, {cfg.in_chans}, T, H, W], got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected a float input (normalised), got {x.dtype}")
        t, h, w = x.shape[2:]
        if t % cfg.t or h % cfg.patch_size or w % cfg.patch_size:
            raise ValueError(f"T x H x W = {t} x {h} x {w} must be multiples of the token size "
                             f"{cfg.t} x {cfg.patch_size} x {cfg.patch_size}")

    def _pos(self, param: torch.Tensor, grid: tuple[int, int, int], size: tuple[int, int, int], cls: bool) -> torch.Tensor:
        """A flat position embedding [1, (1+) nt*gh*gw, D] learned on `grid`, resampled to `size`."""
        if grid == size:
            return param
        nt, gh, gw = grid
        head, body = (param[:, :1], param[:, 1:]) if cls else (param[:, :0], param)
        body = rearrange(body, "one (t h w) d -> one t h w d", t=nt, h=gh, w=gw)  # [1, nt, gh, gw, D]
        body = rearrange(resize_pos_grid(body, size), "one t h w d -> one (t h w) d")  # [1, nt'*gh'*gw', D]
        return torch.cat([head, body], dim=1)

    def _run(self, blocks: nn.ModuleList, x: torch.Tensor, nt: int) -> torch.Tensor:
        """Apply `blocks` in turn, recomputing each in backward when grad_checkpointing is on."""
        for blk in blocks:
            if self.config.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, nt, use_reentrant=False)
            else:
                x = blk(x, nt)
        return x

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """[B, 3, T, H, W] -> patch tokens [B, nt*gh*gw, D] in (t h w) order, and (nt, gh, gw)."""
        self._check_input(x)
        tokens = self.patch_embed.proj(x)  # [B, D, nt, gh, gw]
        size = tuple(tokens.shape[2:])
        return rearrange(tokens, "b d t h w -> b (t h w) d"), size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] -> the pooled, final-normed feature [B, D] the head classifies."""
        cfg = self.config
        tokens, (nt, gh, gw) = self.embed(x)
        b = tokens.shape[0]
        grid = cfg.token_grid
        if cfg.model == 1:
            x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)  # [B, 1+N, D]
            x = self.pos_drop(x + self._pos(self.pos_embed, grid, (nt, gh, gw), cls=True))
            return self.norm(self._run(self.blocks, x, nt))[:, 0]
        if cfg.model == 2:
            frames = rearrange(tokens, "b (t n) d -> (b t) n d", t=nt)  # [B nt, n, D]
            frames = torch.cat([self.cls_token.expand(frames.shape[0], -1, -1), frames], dim=1)  # [B nt, 1+n, D]
            frames = frames + self._pos(self.pos_embed, (1,) + grid[1:], (1, gh, gw), cls=True)
            frames = self.norm(self._run(self.blocks, self.pos_drop(frames), 1))
            x = rearrange(frames[:, 0], "(b t) d -> b t d", b=b)  # [B, nt, D]: one cls output per frame
            x = torch.cat([self.temporal_cls_token.expand(b, -1, -1), x], dim=1)  # [B, 1+nt, D]
            x = x + self._pos(self.temporal_pos_embed, (grid[0], 1, 1), (nt, 1, 1), cls=True)
            return self.temporal_norm(self._run(self.temporal_blocks, self.pos_drop(x), 1))[:, 0]
        # models 3 and 4: no cls token; the normed tokens are averaged
        x = self.pos_drop(tokens + self._pos(self.pos_embed, grid, (nt, gh, gw), cls=False))
        return self.norm(self._run(self.blocks, x, nt)).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] float (normalised) -> logits [B, num_classes]."""
        return self.head(self.head_drop(self.forward_features(x)))


def config_dict(cfg: ViViTConfig) -> dict:
    """The config as plain Python values (for checkpoints)."""
    return dataclasses.asdict(cfg)


PRESETS: dict[str, dict] = {
    # tiny, for tests and laptops: 4 frames of 32 x 32, tubelets 2 x 8 x 8 -> 2 x 4 x 4 tokens
    "vivit_debug": dict(model=2, num_classes=4, num_frames=4, image_size=32, patch_size=8, tubelet_size=2,
                        embed_dim=64, depth=2, temporal_depth=1, num_heads=4, drop_path_rate=0.0),
    # ViViT-B factorised encoder (Model 2), the paper's Kinetics-400 setting: 32 frames x 224,
    # tubelets 2 x 16 x 16, L_s = 12 spatial + L_t = 4 temporal layers. Cheapest of the four in FLOPs.
    "vivit_b": dict(model=2, num_frames=32, image_size=224, tokenizer="tubelet", tubelet_size=2, patch_size=16),
    # ViViT-B/16x2 Model 1 (joint attention): the layout of HF `google/vivit-b-16x2-kinetics400`,
    # so `weights.load_hf_vivit` output loads into it directly.
    "vivit_b_joint": dict(model=1, num_frames=32, image_size=224, tokenizer="tubelet", tubelet_size=2, patch_size=16),
}
