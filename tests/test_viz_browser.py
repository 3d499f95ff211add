"""``lstmkit inspect`` end to end: a model trained by ``lstmkit train``, its pictures, and the page in Chromium.

The page is opened by a real headless browser (Debian's ``chromium``, installed by ``scripts/test.sh``): a
screenshot must show a drawn page, and the DOM after the script ran must hold the text and the values the
recorder recorded.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from lstmkit.apps.charlm import load_model
from lstmkit.apps.gate_viewer import record_charlm
from lstmkit.cli import main
from lstmkit.inspect import GATE_NAMES

TEXT = "the time traveller was expounding a recondite matter to us. his grey eyes shone and twinkled."
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny character model, trained for a few steps by ``lstmkit train``."""
    root = tmp_path_factory.mktemp("inspect")
    corpus = root / "corpus.txt"
    corpus.write_text((TEXT + "\n") * 30, encoding="utf-8")
    out = root / "run"
    assert main(["train", "--text", str(corpus), "--out", str(out), "--max-steps", "4", "--eval-every", "4",
                 "--hidden-size", "12", "--embedding-dim", "6", "--num-layers", "2", "--dropout", "0",
                 "--seq-len", "16", "--batch-size", "4", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def inspected(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inspected")
    assert main(["inspect", "--checkpoint", str(run_dir), "--text", TEXT, "--out", str(out), "--top-cells", "5"]) == 0
    return out


def test_inspect_writes_pictures_statistics_and_page(inspected, run_dir):
    names = sorted(p.name for p in inspected.iterdir())
    assert names == sorted(["cells.json", "cells_l0.png", "cells_l1.png", "gates_l0.png", "gates_l1.png",
                            "index.html", "saturation.json", "saturation.png"])
    for png in inspected.glob("*.png"):
        image = mpimg.imread(png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert np.unique(image.reshape(-1, image.shape[2]), axis=0).shape[0] > 20  # drawn, not blank
    stats = json.loads((inspected / "saturation.json").read_text())
    assert (stats["low"], stats["high"]) == (0.1, 0.9) and len(stats["layers"]) == 2
    model, vocab, _ = load_model(run_dir)
    gates = record_charlm(model, vocab.encode(TEXT))
    for layer in stats["layers"]:
        f = gates.f[layer["layer"], 0, :, 0]  # (T, H)
        assert layer["f"]["below"] == pytest.approx(float((f < 0.1).float().mean()), abs=1e-5)
        assert layer["f"]["above"] == pytest.approx(float((f > 0.9).float().mean()), abs=1e-5)
        assert len(layer["cells"]["o"]["above"]) == 12
    ranking = json.loads((inspected / "cells.json").read_text())["layers"][0]["ranking"]
    scores = [entry["score"] for entry in ranking]
    assert scores == sorted(scores, reverse=True) and sorted(e["cell"] for e in ranking) == list(range(12))


def test_page_is_self_contained(inspected):
    page = (inspected / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=|<link|<img|@import|url\(|https?://", page)
    assert page.count("<script") == 2  # the data and the script, both inline


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/test.sh installs it)")


@pytest.mark.slow
@needs_chromium
def test_page_draws_in_a_real_browser(inspected, tmp_path):
    shot = tmp_path / "page.png"
    result = _chromium("--window-size=1280,900", f"--screenshot={shot}", (inspected / "index.html").as_uri(),
                       profile=tmp_path / "profile")
    assert shot.exists(), result.stderr[-2000:]
    image = mpimg.imread(shot)[..., :3]  # (900, 1280, 3) in [0, 1]
    assert image.shape[:2] == (900, 1280)
    assert np.unique((image * 255).astype(np.uint8).reshape(-1, 3), axis=0).shape[0] > 200  # many colours
    text_area = image[70:130, :740]  # the first two lines of the coloured text, left of the side panel
    tinted = np.abs(text_area - text_area.mean(axis=2, keepdims=True)).max(axis=2) > 0.03
    assert tinted.mean() > 0.1  # characters sit on coloured backgrounds
    side = image[80:700, 760:1260]
    assert (side.min(axis=2) < 0.6).mean() > 0.02  # the side panel (table, strip, timeline) is drawn


@pytest.mark.slow
@needs_chromium
def test_page_shows_the_recorded_values(inspected, run_dir, tmp_path):
    model, vocab, _ = load_model(run_dir)
    gates = record_charlm(model, vocab.encode(TEXT))
    layer, cell, step = 1, 7, 23
    url = (inspected / "index.html").as_uri() + f"#layer={layer}&cell={cell}&q=f&step={step}"
    result = _chromium("--dump-dom", url, profile=tmp_path / "profile")
    dom = result.stdout
    assert 'data-ready="1"' in dom, result.stderr[-2000:]
    text_box = re.search(r'<section id="text"[^>]*>(.*?)</section>', dom, re.S)
    assert text_box is not None and text_box.group(1).count("<span") == len(TEXT)
    assert f'step {step}: "{TEXT[step]}", cell {cell}' in dom
    shown = dict(re.findall(r'<tr data-name="(\w)"><td>[^<]*</td><td class="num">(-?[\d.]+)</td>', dom))
    assert sorted(shown) == sorted(GATE_NAMES)
    for name in GATE_NAMES:
        expected = float(gates.get(name)[layer, 0, step, 0, cell])
        assert float(shown[name]) == pytest.approx(expected, abs=1.5e-3), name
    assert f"{len(TEXT)} characters, 2 layer(s), 12 cells" in dom
    assert 'class="active"' in dom  # the chosen step is marked in the text


def test_inspect_errors_are_one_line(run_dir, tmp_path, capsys):
    cases = [
        (["--checkpoint", str(tmp_path / "missing"), "--text", "abc"], None),
        (["--checkpoint", str(run_dir), "--text", ""], "empty"),
    ]
    for args, message in cases:
        assert main(["inspect", *args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("lstmkit inspect: error:")
        if message:
            assert message in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_inspect_json_summary(run_dir, tmp_path, capsys):
    assert main(["inspect", "--checkpoint", str(run_dir), "--text", TEXT[:30], "--out", str(tmp_path / "o"),
                 "--json", "--top-cells", "3", "--text-cells", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["chars"] == 30 and summary["engine"] == "reference"
    assert [len(layer["cells"]) for layer in summary["top_cells"]] == [3, 3]
    assert {"i", "f", "o"} <= set(summary["saturation"][0])
    assert 0 <= summary["saturation"][0]["f"]["below"] <= 1


def test_page_keeps_to_its_size_budget(tmp_path, monkeypatch):
    import lstmkit
    import lstmkit.viz.report as report
    from lstmkit.inspect import record
    from lstmkit.viz import inspect_sequence

    monkeypatch.setattr(report, "PAGE_VALUES", 6 * 8 * 2 * 10)  # room for 10 characters of 2 layers x 8 cells
    gates = record(lstmkit.LSTM(3, 8, 2), torch.randn(30, 1, 3))
    result = inspect_sequence(gates, list("abcdefghij" * 3), tmp_path, heatmap_chars=20, text_chars=30)
    assert result.summary["chars"] == 30 and result.summary["page_chars"] == 10
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert len(data["chars"]) == 10 and len(data["layers"][1]["f"]["values"]) == 10 * 8
    torch.testing.assert_close(torch.tensor(data["layers"][1]["f"]["values"]).reshape(10, 8),
                               gates.f[1, 0, :10, 0], atol=5e-4, rtol=0)
    with pytest.raises(ValueError, match="one entry per step"):
        inspect_sequence(gates, list("abc"), tmp_path)
