"""kerasmtl's model zoo: prebuilt models built only from the public kerasmtl API.

```python
import zoo
zoo.list_models()
model = zoo.create_model("tabular_mtl_mlp", hidden_units=(32,))
zoo.list_presets()                    # trained models shipped in zoo/presets/
model = zoo.create_model("multilabel_mlp", preset="multilabel_mlp_yeast")
```
"""

from zoo import multilabel, tabular, tagging, vision  # noqa: F401  (register their models)
from zoo.preset_loader import (
    get_preset,
    list_presets,
    load_preset,
    preset_card,
)
from zoo.preset_writer import save_preset, save_trained_preset
from zoo.registry import create_model, list_models, model_card, register_model

__all__ = [
    "create_model",
    "get_preset",
    "list_models",
    "list_presets",
    "load_preset",
    "model_card",
    "preset_card",
    "register_model",
    "save_preset",
    "save_trained_preset",
]
