"""Import model weights from other layouts, strictly and loudly.

    state_dict, report = load_weights(model, "official", "TimeSformer_divST_8x32_224_K400.pyth")
    model.load_state_dict(state_dict)   # strict: every key matches
    print(report)

Each loader returns a state dict in this package's layout, already fitted to the target config,
plus a `LoadReport` that names every key that was renamed from another layout, resized,
initialised from another key, freshly initialised, or dropped. A key that no rule explains
(missing or unexpected) raises `WeightError`: nothing is skipped in silence. Sources: a path / URI
(read with `torch.load(weights_only=True)` or safetensors) or an in-memory dict.

Modules: `common` (report, reading, resampling, the generic strict fit, HF folders), `timesformer`
(official, Hugging Face, timm ViT, ours; export to HF), `vivit` (Hugging Face ViViT, ours; export to
HF), `table` (`LOADERS` by (family, source) and `load_weights`; `hf_folder_config`, `export_hf`). Checkpoint key layouts: docs/WEIGHTS.md.
"""

from pipeline.model.weights.common import (
    LoadReport, StateDict, WeightError, fit_expected, read_hf_folder, read_state, resize_pos_embed,
    resize_time_embed,
)
from pipeline.model.weights.table import (
    LOADERS, export_hf, family_and_config, hf_folder_config, load_weights, sources,
)
from pipeline.model.weights.timesformer import (
    fit_state_dict, hf_key_to_official, hf_timesformer_config, hf_vit_to_timm, load_hf, load_official,
    load_timm_vit, official_key_to_hf, to_hf_timesformer,
)
from pipeline.model.weights.vivit import fit_vivit, hf_vivit_config, load_hf_vivit, to_hf_vivit

__all__ = [
    "LOADERS", "LoadReport", "StateDict", "WeightError", "export_hf", "family_and_config", "fit_expected",
    "fit_state_dict", "fit_vivit", "hf_folder_config", "hf_key_to_official", "hf_timesformer_config",
    "hf_vit_to_timm", "hf_vivit_config", "load_hf", "load_hf_vivit",
    "load_official", "load_timm_vit", "load_weights", "official_key_to_hf", "read_hf_folder", "read_state",
    "resize_pos_embed", "resize_time_embed", "sources", "to_hf_timesformer", "to_hf_vivit",
]
