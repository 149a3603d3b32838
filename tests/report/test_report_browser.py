"""report.html as a person sees it: headless Chromium loads every figure and shows the summary numbers."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from datakit import open_dataset
from datakit.report import run_audits, write_report
from datakit.report.format import format_value
from datakit.store.writer import write_dataset

from browser_helpers import headless_chrome



@pytest.fixture
def driver(tmp_path):
    drv = headless_chrome(tmp_path, "--window-size=1200,900")
    yield drv
    drv.quit()


@pytest.mark.browser
def test_report_renders_in_chromium(driver, tmp_path):
    d = load_digits()
    x = np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((16, 16), Image.BILINEAR))
                  for im in d.images[:300]])
    x[150:] = (x[150:] * 0.5).astype(np.uint8)
    root = write_dataset(tmp_path / "digits", x, d.target[:300].tolist(), "train", source=["a"] * 150 + ["b"] * 150)
    run = run_audits([open_dataset(root)], ["balance", "average_image", "orientation_artifacts", "name_that_dataset",
                                            "cross_dataset"],
                     options={"name_that_dataset": {"probes": "linear", "learning_curve": [10, 50]},
                              "cross_dataset": {"model": "linear"}})
    assert run.status["cross_dataset"] == "ok"
    write_report(run, tmp_path / "rep", ["html"])
    driver.get((tmp_path / "rep" / "report.html").as_uri())
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);")
    n_figures = sum(len(r.figures) for r in run.results)
    assert len(images) == n_figures >= 8
    broken = [alt for alt, complete, w, h in images if not (complete and w > 0 and h > 0)]
    assert not broken, f"figures that did not load: {broken}"
    text = driver.find_element("tag name", "body").text
    for r in run.results:
        assert r.name in text
        for key, value in r.summary.items():
            assert key in text and format_value(value) in text, (r.name, key, value)
    summary_rows = driver.execute_script("return document.querySelectorAll('#summary tbody tr').length;")
    assert summary_rows == len(run.results)
