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


def test_every_zoo_model_has_a_card_written_for_users():
    import zoo

    cards = README.parent / "zoo" / "cards"
    missing = [n for n in zoo.list_models() if not (cards / f"{n}.md").is_file()]
    assert not missing, f"no model card for {missing}"
    internal = re.compile(r"\bissue \d|\bissue's\b|/tmp\b", re.I)
    for card in sorted(cards.glob("*.md")):
        found = internal.search(card.read_text())
        assert not found, f"{card.name} mentions {found.group()!r}"


def test_det_seg_card_gives_the_split_the_cli_prints():
    import inspect

    from zoo.vision import SHAPES_DEV, SHAPES_TRAIN, vision_data

    total = SHAPES_TRAIN + SHAPES_DEV  # what the shapes recipe makes, then splits
    fraction = inspect.signature(vision_data).parameters["dev_fraction"].default
    dev = round(total * fraction)
    card = (README.parent / "zoo" / "cards" / "det_seg_resnet_fpn.md").read_text()
    recipe = card[card.index("Recipes:"):card.index("## Measured results")]
    assert f"{total - dev} train / {dev} dev" in recipe


def test_readme_presets_example_tags_english_with_no_training(tmp_path):
    # A fresh clone's shipped presets: loaded by name, no training, no network.
    block = next(b for b in python_blocks() if "preset_card" in b)
    code = "import os\nos.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n" + block + (
        "\nprint('POS', [t.decode() for t in out['pos_tags'].numpy()[0]])"
        "\nprint('NER', [t.decode() for t in out['ner_tags'].numpy()[0]])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the tags the README's comment promises
    assert "POS ['PROPN', 'PROPN', 'VERB', 'PROPN', 'PUNCT']" in proc.stdout
    assert "NER ['B-PER', 'I-PER', 'O', 'B-LOC', 'O']" in proc.stdout
