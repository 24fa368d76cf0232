"""The README's library example runs as written (in a temporary directory)."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_library_example_runs(tmp_path):
    block = next(b for b in python_blocks() if "hard_sharing" in b)
    # Keep the example's epochs; only make it quiet.
    code = "import os\nos.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n" + block.replace(
        "epochs=3)", "epochs=3, verbose=0)"
    )
    code += (
        "\nimport numpy as np\n"
        "m2 = keras.models.load_model('m.keras')\n"
        "p1, p2 = model.predict(x, verbose=0), m2.predict(x, verbose=0)\n"
        "assert all(np.allclose(p1[k], p2[k]) for k in p1)\n"
        "assert os.path.isdir('exported/demo/1')\n"
        "assert {'loss/tags', 'weight/size', 'species/accuracy'} <= set(history.history)\n"
        "print('README OK')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "README OK" in proc.stdout, proc.stderr[-3000:]


def test_readme_zoo_example_runs(tmp_path):
    block = next(b for b in python_blocks() if "zoo.create_model" in b)
    code = "import os\nos.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n" + block
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "Measured results" in proc.stdout, proc.stderr[-3000:]
