"""kerasmtl's model zoo: prebuilt models built only from the public kerasmtl API.

```python
import zoo
zoo.list_models()
model = zoo.create_model("tabular_mtl_mlp", hidden_units=(32,))
```
"""

from zoo import multilabel, tabular, tagging, vision  # noqa: F401  (register their models)
from zoo.registry import create_model, list_models, model_card, register_model

__all__ = ["create_model", "list_models", "model_card", "register_model"]
