"""The Hugging Face Space: README front matter (read with huggingface_hub's card API) agrees with the code."""

from __future__ import annotations

import ast
import re

from huggingface_hub import RepoCard

from pythia_compare.config import DEFAULT_GGUF_REPO, Settings
from pythia_compare.web.dashboard import DEFAULT_QUANTS
from tests.ui_support import ROOT


def card_data() -> dict:
    return RepoCard.load(ROOT / "README.md").data.to_dict()


def pinned(package: str) -> str:
    text = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    m = re.search(rf"^{re.escape(package)}==(\S+)\s*$", text, re.MULTILINE | re.IGNORECASE)
    assert m, f"requirements.txt does not pin {package}"
    return m.group(1)


def test_the_readme_front_matter_makes_a_gradio_space_on_the_pinned_gradio():
    data = card_data()
    assert data["sdk"] == "gradio"
    assert str(data["sdk_version"]) == pinned("gradio")
    assert data["app_file"] == "app.py" and (ROOT / data["app_file"]).is_file()
    assert str(data["python_version"]) == "3.11"


def test_the_space_preloads_the_dashboards_default_gguf_files():
    entries = card_data()["preload_from_hub"]
    files = {f.strip() for e in entries if e.split()[0] == DEFAULT_GGUF_REPO for f in e.split(None, 1)[1].split(",")}
    assert files, f"preload_from_hub names no file of {DEFAULT_GGUF_REPO}"
    for quant in DEFAULT_QUANTS["pythia"]:
        assert any(f.endswith(f".{quant}.gguf") for f in files), quant
    # The app on the Space (SPACE_ID set, no repo override) reads the repo whose files were preloaded.
    assert Settings.from_env({"SPACE_ID": "someone/pythia-compare"}).gguf_repo == DEFAULT_GGUF_REPO


def test_app_py_builds_demo_at_import_and_launches_only_as_a_script_with_the_hardened_settings():
    tree = ast.parse((ROOT / "app.py").read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, ast.Assign)]
    assert any(t.id == "demo" for n in top for t in n.targets if isinstance(t, ast.Name))
    guard = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    launches = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func).endswith(".launch")]
    assert len(launches) == 1 and guard and launches[0] in list(ast.walk(guard[0]))
    assert "launch_kwargs(" in ast.unparse(launches[0])


def test_a_space_is_a_public_deployment():
    assert Settings.from_env({"SPACE_ID": "someone/pythia-compare"}).public is True
    assert Settings.from_env({}).public is False
