"""TimeSformer (Bertasius et al., ICML 2021) with the five attention schemes of the paper.

    model = TimeSformer(TimeSformerConfig(num_classes=400))        # divided space-time, 8 x 224
    logits = model(video)                                          # [B, 3, T, H, W] -> [B, 400]

Parameter names equal the official code's (`blocks.3.temporal_attn.qkv.weight`, ...), so official
checkpoints load by stripping their `model.` prefix (see `pipeline.model.weights`).

Inside, patch tokens travel between blocks as `[B, h*w*T, D]` in the official order (spatial-major,
time fastest: index n*T + t), and the factorised schemes keep the cls token `[B, 1, D]` apart (the
MLP is per token, so cls and patches only meet inside the attention groups that include cls). In
that order the divided scheme's temporal groups are free views and its spatial step costs one
copy; the other factorised schemes view the patches as a grid `[B, T, h, w, D]`. `joint` and
`space_only` run plain ViT blocks on one token sequence. Every attention step is "group the grid,
attend inside each group": only the grouping differs between schemes. Attention goes through
`pipeline.model.layers.attention` (`attn_impl`, as in ViViT: SDPA's fused kernels, no mask needed,
written out on CPU for at most 16 tokens).

Schemes (`attention`):
- `space_only` (S): per-frame ViT; each frame keeps its own cls token; cls outputs averaged over T.
- `joint` (ST): one attention over all T*h*w patches and the cls token.
- `divided` (T+S): temporal attention per spatial position (cls excluded) -> `temporal_fc`, then
  spatial attention per frame with the cls token repeated into every frame and averaged back.
- `local_global` (L+G): local attention inside T x h/2 x w/2 windows, then sparse global attention
  over the clip with stride 2 in time, height and width (tokens of equal parity form one group).
- `axial` (T+W+H): attention along time, then along width, then along height, each with its own
  weights.
The cls token skips the purely temporal steps and joins every other group (repeated into each
group, its outputs averaged); in `space_only` every frame has its own.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from pipeline.model.layers import attention, check_attn_impl, drop_path, drop_path_mask

Attention = Literal["divided", "space_only", "joint", "local_global", "axial"]
ATTENTIONS: tuple[str, ...] = ("divided", "space_only", "joint", "local_global", "axial")


@dataclass
class TimeSformerConfig:
    """Architecture of one TimeSformer; `num_frames` and `image_size` size the learned embeddings."""

    num_classes: int = 400
    num_frames: int = 8
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    attention: Attention = "divided"
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    # Stochastic depth granularity in the divided block. False (ours): one keep-mask per video
    # for each residual branch. True: as the official TimeSformer code, which applies drop_path
    # to the attention outputs while they are grouped: the temporal step drops per spatial
    # position (its (b h w) groups), the spatial step per frame (its (b t) groups, the frame's
    # cls output included); the MLP still drops per video. Divided attention only.
    drop_path_per_frame: bool = False
    layer_norm_eps: float = 1e-6
    attn_impl: Literal["auto", "sdpa", "math"] = "auto"  # as ViViT's: pipeline.model.layers.attention
    grad_checkpointing: bool = False  # recompute each block in backward (TimeSformer-L: 96 frames)
    # Init. The official values: trunc-normal(0.02) Linear weights (sized for width 768), zero
    # `time_embed` and `temporal_fc`, so a model built from an image ViT starts equal to it, blind
    # to frame order (with `time_embed` at zero every scheme is invariant to permuting frames);
    # pretrained features and a large corpus get it out. A small model trained from scratch stays
    # stuck there (near-uniform attention, order-blind): it learns motion direction only with
    # wider Linear init (~1/sqrt(width)) and random `time_embed` (configs/debug.yaml: 0.13 / 1.0 /
    # 0.02; docs/DATA.md, "Learnability").
    linear_init_std: float = 0.02
    time_embed_init_std: float = 0.0
    temporal_fc_init_std: float = 0.0
    # Input normalisation the weights expect (applied by the data side, recorded here).
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {list(ATTENTIONS)}, got {self.attention!r}")
        check_attn_impl(self.attn_impl)
        if self.drop_path_per_frame and self.attention != "divided":
            raise ValueError(f"drop_path_per_frame needs divided attention, got {self.attention!r}")
        if self.linear_init_std <= 0:
            raise ValueError(f"linear_init_std must be > 0, got {self.linear_init_std}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        for name in ("num_classes", "num_frames", "image_size", "patch_size", "in_chans", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("time_embed_init_std", "temporal_fc_init_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)

    @property
    def grid(self) -> int:
        """Patches per side at `image_size`."""
        return self.image_size // self.patch_size


# ----------------------------------------------------------------------------------- layers


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (official / timm layout)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float,
                 impl: str = "auto"):
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.impl = impl  # `attn_impl`: "auto" | "sdpa" | "math" (pipeline.model.layers)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, D] -> [B, L, D]."""
        # [B, L, 3*D] -> 3 x [B, heads, L, head_dim]
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        out = attention(q, k, v, dropout=self.attn_drop if self.training else 0.0, impl=self.impl)
        return self.proj_drop(self.proj(rearrange(out, "b h l d -> b l (h d)")))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2, with dropout after each (official names)."""

    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


# Groupings of the patch grid [b, t, h, w, d] into attention sequences [(b groups), len, d].
TEMPORAL = "b t h w d -> (b h w) t d"
SPATIAL = "b t h w d -> (b t) (h w) d"
JOINT = "b t h w d -> b (t h w) d"
WIDTH = "b t h w d -> (b t h) w d"
HEIGHT = "b t h w d -> (b t w) h d"
LOCAL = "b t (wy y) (wx x) d -> (b wy wx) (t y x) d"  # 2 x 2 windows of T x h/2 x w/2
GLOBAL = "b (t st) (y sy) (x sx) d -> (b st sy sx) (t y x) d"  # equal parity = stride-2 lattice
# Patch tokens travel between blocks as [B, h*w*T, D] in the official order (time fastest).
PATCHES_TO_GRID = "b (h w t) d -> b t h w d"
GRID_TO_PATCHES = "b t h w d -> b (h w t) d"


def _inverse(pattern: str) -> str:
    left, right = pattern.split("->")
    return f"{right.strip()} -> {left.strip()}"


def grouped_attention(
    attn: SelfAttention,
    norm: nn.LayerNorm,
    cls: torch.Tensor | None,
    grid: torch.Tensor,
    pattern: str,
    **axes: int,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Attend inside the groups that `pattern` cuts from `grid` [B, T, h, w, D].

    When `cls` [B, 1, D] is given it is prepended to every group and its outputs are averaged
    over the groups. Returns the residual updates (cls [B, 1, D] or None, grid [B, T, h, w, D]).
    """
    b, t, h, w, _ = grid.shape
    names = set(re.findall(r"[a-z]+", pattern))
    sizes = {k: v for k, v in dict(b=b, t=t, h=h, w=w).items() if k in names}
    sizes.update(axes)  # e.g. GLOBAL's `t` is T / stride
    seq = rearrange(grid, pattern, **sizes)  # [(B G), L, D]
    groups = seq.shape[0] // b
    if cls is not None:
        seq = torch.cat([repeat(cls, "b one d -> (b g) one d", g=groups), seq], dim=1)  # [(B G), 1+L, D]
    out = attn(norm(seq))
    cls_out = None
    if cls is not None:
        # [(B G), 1, D] -> [B, 1, D]: mean over the groups
        cls_out = rearrange(out[:, :1], "(b g) one d -> b g one d", b=b).mean(dim=1)
        out = out[:, 1:]
    return cls_out, rearrange(out, _inverse(pattern), **sizes)


class Block(nn.Module):
    """One pre-norm transformer block; `attention` picks the attention steps before the MLP.

    Submodule names follow the official code: `norm1`/`attn` is the spatial (or joint) attention,
    `temporal_norm1`/`temporal_attn`/`temporal_fc` the temporal one. The extra schemes add
    `local_norm1`/`local_attn` (L+G) and `width_norm1`/`width_attn` (axial, where `attn` is the
    height step).
    """

    def __init__(self, cfg: TimeSformerConfig, drop_path_rate: float):
        super().__init__()
        self.attention = cfg.attention
        self.drop_path_rate = drop_path_rate
        self.per_frame = cfg.drop_path_per_frame  # divided: masks per attention group (official)
        dim = cfg.embed_dim

        def norm() -> nn.LayerNorm:
            return nn.LayerNorm(dim, eps=cfg.layer_norm_eps)

        def attn() -> SelfAttention:
            return SelfAttention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate, cfg.attn_impl)

        if cfg.attention in ("divided", "axial"):
            self.temporal_norm1, self.temporal_attn = norm(), attn()
        if cfg.attention == "divided":
            self.temporal_fc = nn.Linear(dim, dim)
        if cfg.attention == "local_global":
            self.local_norm1, self.local_attn = norm(), attn()
        if cfg.attention == "axial":
            self.width_norm1, self.width_attn = norm(), attn()
        self.norm1, self.attn = norm(), attn()
        self.norm2 = norm()
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop_rate)

    def _mask(self, x: torch.Tensor) -> torch.Tensor | None:
        return drop_path_mask(x, self.drop_path_rate, self.training)

    def _step(
        self, attn: SelfAttention, norm: nn.LayerNorm, cls: torch.Tensor, grid: torch.Tensor, pattern: str,
        with_cls: bool = True, **axes: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One residual attention step on the grid view; returns the updated (cls, grid)."""
        dcls, dgrid = grouped_attention(attn, norm, cls if with_cls else None, grid, pattern, **axes)
        mask = self._mask(grid)
        if dcls is not None:
            cls = cls + drop_path(dcls, mask)
        return cls, grid + drop_path(dgrid, mask)

    def _divided(self, cls: torch.Tensor, patches: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Divided space-time attention (time, then space) on patches in time-fastest order.

        In that order the temporal groups are views, so the only copy is the one gathering the
        frames (with the repeated cls token) for the spatial step.
        """
        b, nt, _ = patches.shape
        n = nt // t
        # temporal: one group per spatial position; cls takes no part
        seq = rearrange(patches, "b (n t) d -> (b n) t d", t=t)  # [(B n), T, D] (view)
        out = self.temporal_attn(self.temporal_norm1(seq))
        if self.per_frame:  # one mask per (video, spatial position)
            out = drop_path(out, self._mask(out))
        out = rearrange(out, "(b n) t d -> b (n t) d", b=b)  # view
        # drop_path before temporal_fc, as in the official code
        patches = patches + self.temporal_fc(drop_path(out, None if self.per_frame else self._mask(patches)))
        # spatial: one group per frame, the cls token repeated into each
        seq = torch.cat([repeat(cls, "b one d -> b t one d", t=t),
                         rearrange(patches, "b (n t) d -> b t n d", t=t)], dim=2)  # [B, T, 1+n, D]
        out = self.attn(self.norm1(rearrange(seq, "b t l d -> (b t) l d")))  # [(B T), 1+n, D]
        if self.per_frame:  # one mask per (video, frame), the frame's cls output included
            out = drop_path(out, self._mask(out))
        dcls, dpatches = out.split([1, n], dim=1)
        mask = None if self.per_frame else self._mask(patches)
        cls = cls + drop_path(reduce(dcls, "(b t) one d -> b one d", "mean", b=b), mask)  # cls averaged over frames
        grid = rearrange(patches, "b (n t) d -> b n t d", t=t)  # [B, n, T, D] (view)
        grid = grid + drop_path(rearrange(dpatches, "(b t) n d -> b n t d", b=b), mask)
        return cls, rearrange(grid, "b n t d -> b (n t) d")

    def _factorised(self, cls: torch.Tensor, patches: torch.Tensor, t: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention steps of the divided, local-global and axial schemes."""
        kind = self.attention
        if kind == "divided":
            return self._divided(cls, patches, t)
        grid = rearrange(patches, PATCHES_TO_GRID, h=h, w=w)  # [B, T, h, w, D] (view)
        if kind == "local_global":
            st = 2 if t % 2 == 0 else 1  # an odd clip length keeps every frame in the global step
            cls, grid = self._step(self.local_attn, self.local_norm1, cls, grid, LOCAL, wy=2, wx=2, y=h // 2, x=w // 2)
            cls, grid = self._step(self.attn, self.norm1, cls, grid, GLOBAL, t=t // st, st=st, sy=2, sx=2, y=h // 2, x=w // 2)
        elif kind == "axial":
            cls, grid = self._step(self.temporal_attn, self.temporal_norm1, cls, grid, TEMPORAL, with_cls=False)
            cls, grid = self._step(self.width_attn, self.width_norm1, cls, grid, WIDTH)
            cls, grid = self._step(self.attn, self.norm1, cls, grid, HEIGHT)
        else:
            raise AssertionError(kind)
        return cls, rearrange(grid, GRID_TO_PATCHES)

    def forward(
        self, cls: torch.Tensor | None, patches: torch.Tensor, t: int, h: int, w: int
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One block: (cls [B, 1, D], patches [B, h*w*t, D] in time-fastest order) -> same shapes.

        `joint` and `space_only` pass `cls=None` and all tokens (cls included) as `patches`:
        [B, 1 + h*w*t, D], or [(B T), 1 + h*w, D] for space_only (T folded into the batch).
        """
        if cls is None:
            x = patches + drop_path(self.attn(self.norm1(patches)), self._mask(patches))
            return None, x + drop_path(self.mlp(self.norm2(x)), self._mask(x))
        cls, patches = self._factorised(cls, patches, t, h, w)
        # MLP on cls and patches apart (per token: no need to join them), one drop_path mask
        mask = self._mask(patches)
        cls = cls + drop_path(self.mlp(self.norm2(cls)), mask)
        return cls, patches + drop_path(self.mlp(self.norm2(patches)), mask)


# ----------------------------------------------------------------------------------- model


class TimeSformer(nn.Module):
    """TimeSformer video classifier: `forward(x [B, 3, T, H, W]) -> logits [B, num_classes]`."""

    family = "timesformer"

    def __init__(self, config: TimeSformerConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(cfg.in_chans, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid**2 + 1, d))
        if cfg.attention != "space_only":
            self.time_embed = nn.Parameter(torch.zeros(1, cfg.num_frames, d))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # 0 -> rate
        self.blocks = nn.ModuleList([Block(cfg, r) for r in rates])
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(d, cfg.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init (by default): trunc-normal(0.02) linears, cls and pos_embed; zero time_embed
        and temporal_fc. The `*_init_std` config fields change it for training from scratch."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=self.config.linear_init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        cfg = self.config
        if hasattr(self, "time_embed"):
            if cfg.time_embed_init_std > 0:
                nn.init.normal_(self.time_embed, std=cfg.time_embed_init_std)
            else:
                nn.init.zeros_(self.time_embed)
        for blk in self.blocks:
            if hasattr(blk, "temporal_fc"):
                if cfg.temporal_fc_init_std > 0:
                    nn.init.trunc_normal_(blk.temporal_fc.weight, std=cfg.temporal_fc_init_std)
                else:  # the model starts equal to the image ViT
                    nn.init.zeros_(blk.temporal_fc.weight)
                nn.init.zeros_(blk.temporal_fc.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_chans:
            raise ValueError(f"expected input [B, {cfg.in_chans}, T, H, W], got shape {tuple(x.shape)}")
        if x.shape[3] % cfg.patch_size or x.shape[4] % cfg.patch_size:
            raise ValueError(f"H and W ({x.shape[3]}x{x.shape[4]}) must be multiples of patch_size {cfg.patch_size}")
        if not x.is_floating_point():
            raise ValueError(f"expected a float input (normalised), got {x.dtype}")
        if cfg.attention == "local_global" and ((x.shape[3] // cfg.patch_size) % 2 or (x.shape[4] // cfg.patch_size) % 2):
            raise ValueError("local_global attention needs an even number of patches along H and W")

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
        """[B, 3, T, H, W] -> cls [B, 1, D], patches [B, h*w*T, D] (time fastest) with position
        and time embeddings, and the token grid (T, h, w)."""
        b, _, t, _, _ = x.shape
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        feats = self.patch_embed.proj(frames)  # [(B T), D, h, w]
        h, w = feats.shape[2:]
        patches = rearrange(feats, "(b t) d h w -> b (h w t) d", b=b)  # [B, h*w*T, D]
        pos = self.pos_embed[:, 1:]
        g = self.config.grid
        if (h, w) != (g, g):  # nearest on the 2-D grid, as the official forward does
            pos = rearrange(pos, "one (gh gw) d -> one d gh gw", gh=g)
            pos = rearrange(F.interpolate(pos, size=(h, w), mode="nearest"), "one d h w -> one (h w) d")
        pos = rearrange(pos, "one n d -> one n 1 d")  # [1, h*w, 1, D]
        if hasattr(self, "time_embed"):
            time = self.time_embed
            if t != time.shape[1]:  # nearest over time, as the official forward does
                time = rearrange(F.interpolate(rearrange(time, "one t d -> one d t"), size=t, mode="nearest"), "one d t -> one t d")
            pos = pos + rearrange(time, "one t d -> one 1 t d")  # [1, h*w, T, D]
        patches = rearrange(rearrange(patches, "b (n t) d -> b n t d", t=t) + pos, "b n t d -> b (n t) d")
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        return self.pos_drop(cls), self.pos_drop(patches), (t, h, w)

    def _run(
        self, blk: Block, cls: torch.Tensor | None, patches: torch.Tensor, t: int, h: int, w: int
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        if self.config.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(blk, cls, patches, t, h, w, use_reentrant=False)
        return blk(cls, patches, t, h, w)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] -> the final-normed cls embedding [B, D]."""
        self._check_input(x)
        cls, patches, (t, h, w) = self._embed(x)
        b = cls.shape[0]
        attention = self.config.attention
        if attention == "space_only":
            # every frame is its own image with its own cls token: [(B T), 1 + h*w, D]
            tokens = torch.cat([repeat(cls, "b one d -> (b t) one d", t=t),
                                rearrange(patches, "b (n t) d -> (b t) n d", t=t)], dim=1)
            for blk in self.blocks:
                _, tokens = self._run(blk, None, tokens, 1, h, w)
            cls = reduce(tokens[:, :1], "(b t) one d -> b one d", "mean", b=b)  # average the frames
        elif attention == "joint":
            tokens = torch.cat([cls, patches], dim=1)  # [B, 1 + h*w*T, D]
            for blk in self.blocks:
                _, tokens = self._run(blk, None, tokens, t, h, w)
            cls = tokens[:, :1]
        else:  # factorised: cls and patches travel apart, the blocks join them where they attend
            for blk in self.blocks:
                cls, patches = self._run(blk, cls, patches, t, h, w)
        return self.norm(cls[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] float (normalised) -> logits [B, num_classes]."""
        return self.head(self.forward_features(x))


def config_dict(cfg: TimeSformerConfig) -> dict:
    """The config as plain Python values (for checkpoints)."""
    return dataclasses.asdict(cfg)


PRESETS: dict[str, dict] = {
    # tiny, for tests and laptops: 4 frames of 32 x 32, patch 8 -> 16 patches per frame
    "debug": dict(num_classes=4, num_frames=4, image_size=32, patch_size=8, embed_dim=64, depth=2,
                  num_heads=4, drop_path_rate=0.0),
    "timesformer_base": dict(num_frames=8, image_size=224),
    "timesformer_hr": dict(num_frames=16, image_size=448),
    "timesformer_l": dict(num_frames=96, image_size=224),
}
