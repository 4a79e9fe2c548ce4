"""The shared part of weight import: resampling and the generic strict fit against a model's own
state dict (the families' loaders are tested beside it)."""

from __future__ import annotations

import pytest
import torch

from pipeline.model.weights import LoadReport, WeightError, fit_expected, resize_pos_embed, resize_time_embed


def test_pos_embed_is_resampled_on_the_2d_grid():
    """Rows stay rows: a 1-D resample of the flattened sequence would mix them up."""
    g, d = 4, 2
    rows, cols = torch.meshgrid(torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32), indexing="ij")
    pos = torch.cat([torch.full((1, 1, d), -9.0), torch.stack([rows, cols], -1).reshape(1, g * g, d)], dim=1)
    out = resize_pos_embed(pos, 8)
    assert out.shape == (1, 65, 2) and torch.equal(out[:, 0], pos[:, 0])
    grid = out[0, 1:].reshape(8, 8, 2)
    assert torch.allclose(grid[..., 0], grid[:, :1, 0].expand(8, 8), atol=1e-5)  # row value constant along a row
    assert torch.allclose(grid[..., 1], grid[:1, :, 1].expand(8, 8), atol=1e-5)  # col value constant down a column
    assert (grid[1:, 0, 0] > grid[:-1, 0, 0]).all() and (grid[0, 1:, 1] > grid[0, :-1, 1]).all()


def test_time_embed_is_interpolated_over_time():
    time = torch.linspace(0, 3, 4).reshape(1, 4, 1).repeat(1, 1, 3)
    out = resize_time_embed(time, 8)
    assert out.shape == (1, 8, 3)
    assert (out[0, 1:, 0] >= out[0, :-1, 0]).all() and out[0, 0, 0] == 0 and out[0, -1, 0] == 3


def expected() -> dict[str, torch.Tensor]:
    """A toy model's own state dict: an embedding, two layers, a head."""
    return {"embed": torch.zeros(1, 4, 2), "a.weight": torch.zeros(3, 2), "b.weight": torch.zeros(3, 2),
            "head.weight": torch.zeros(5, 2), "head.bias": torch.zeros(5)}


def test_fit_copies_derives_resizes_and_reports_every_key():
    source = {"embed": torch.ones(1, 2, 2), "a.weight": torch.full((3, 2), 2.0),
              "head.weight": torch.ones(7, 2), "head.bias": torch.ones(7), "old.weight": torch.ones(1)}
    report = LoadReport(source="toy")
    out = fit_expected(source, expected(), report, "Toy()", resize={"embed": lambda e: e.repeat(1, 2, 1)},
                       derive={"b.weight": "a.weight"}, drop_ok={"old.weight"})
    assert list(out) == list(expected())  # the model's order
    assert torch.equal(out["b.weight"], source["a.weight"]) and torch.equal(out["embed"], torch.ones(1, 4, 2))
    assert torch.equal(out["head.weight"], torch.zeros(5, 2))  # other class count: fresh
    assert report.copied == 2 and report.resized == [("embed", (1, 2, 2), (1, 4, 2))]
    assert report.initialized_from == [("b.weight", "a.weight")]
    assert report.fresh == ["head.weight", "head.bias"]
    assert report.dropped == ["head.weight [7, 2] (class count differs)", "head.bias [7] (class count differs)",
                              "old.weight"]


def test_fit_names_missing_unexpected_and_misshapen_keys():
    source = {"embed": torch.zeros(1, 4, 3), "a.weight": torch.zeros(3, 2), "extra": torch.zeros(1),
              "head.weight": torch.zeros(5, 2), "head.bias": torch.zeros(5)}
    with pytest.raises(WeightError) as e:
        fit_expected(source, expected(), LoadReport(source="toy"), "Toy()", shape_hint=" (hint)")
    assert str(e.value) == ("toy does not fit Toy(): missing 1 keys: b.weight | unexpected 1 keys: extra | "
                            "shape mismatch (hint): embed: checkpoint [1, 4, 3] vs model [1, 4, 2]")
    fixed = {**source, "embed": torch.zeros(1, 4, 2), "b.weight": torch.zeros(3, 2)}
    report = LoadReport(source="toy")
    assert list(fit_expected(fixed, expected(), report, "Toy()", drop_ok={"extra"})) == list(expected())
    assert report.dropped == ["extra"] and report.copied == 5
