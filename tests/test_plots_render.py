"""`dvc plots show` renders in a real browser: every declared CSV plot becomes a chart and
every image loads (headless Chromium, Debian's `chromium` package)."""

import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from dvc_internals import resolved_pipeline
from pipeline_repo import dvc

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.full,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium); .ci/run installs it"
    ),
]
# dvc-render's page loads vega from a CDN, which these machines cannot reach.
CDN_SCRIPT = re.compile(r"https://cdn\.jsdelivr\.net/npm/([\w-]+)@([\d.]+)")
REPORT_SCRIPT = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const report = {
    charts: Object.fromEntries([...document.body.children]
      .filter(d => d.tagName === "DIV" && d.id && !d.querySelector("img"))
      .map(d => [d.id, d.querySelector("canvas, svg") !== null])),
    images: Object.fromEntries([...document.images]
      .map(i => [i.getAttribute("src"), i.complete && i.naturalWidth > 0])),
  };
  const out = document.createElement("pre");
  out.id = "render-report";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
}, 3000));
</script>"""


def fetch_script(package: str, version: str, cache: Path) -> Path:
    """The file the CDN serves for package@version, from the npm registry's tarball."""
    folder = cache / f"{package}-{version}"
    if not folder.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        packed = subprocess.run(
            ["npm", "pack", f"{package}@{version}", "--silent"], cwd=cache, capture_output=True, text=True, check=True
        )
        with tarfile.open(cache / packed.stdout.strip().splitlines()[-1]) as archive:
            archive.extractall(folder, filter="data")
    manifest = json.loads((folder / "package/package.json").read_text())
    return folder / "package" / manifest.get("jsdelivr", manifest["main"])


@pytest.fixture(scope="module")
def rendered(repro, request):
    root, _ = repro
    dvc(root, "plots", "show")
    page = root / "dvc_plots/index.html"
    html = page.read_text()
    cache = Path(request.config.cache.mkdir("vega-scripts"))
    html = CDN_SCRIPT.sub(lambda m: fetch_script(m[1], m[2], cache).as_uri(), html)
    offline = page.with_name("offline.html")
    offline.write_text(html.replace("</body>", REPORT_SCRIPT + "</body>"))
    browser = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={root / 'chromium-profile'}",
            "--allow-file-access-from-files",
            "--virtual-time-budget=30000",
            "--dump-dom",
            offline.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="render-report">(.*?)</pre>', browser.stdout, re.S)
    assert found, f"the page never reported back\n{browser.stderr[-2000:]}"
    return json.loads(found[1].replace("&quot;", '"').replace("&amp;", "&"))


def declared_plots():
    """Chart ids (top-level definitions, then stage CSVs) and image paths (stage PNGs or folders)."""
    pipeline = resolved_pipeline()
    charts = [next(iter(entry)) for entry in pipeline["plots"]]
    images = []
    for definition in pipeline["stages"].values():
        for entry in definition.get("plots", []):
            path = entry if isinstance(entry, str) else next(iter(entry))  # a DVC-cached plot is a bare path
            (charts if path.endswith(".csv") else images).append(path)
    return charts, images


def test_every_declared_csv_plot_renders_as_a_chart(rendered):
    charts, _ = declared_plots()
    # dvc-render names each chart's element after its plot id, with '/' and '.' made '_'.
    assert sorted(rendered["charts"]) == sorted(re.sub(r"[^\w-]", "_", chart) for chart in charts)
    not_drawn = [name for name, drawn in rendered["charts"].items() if not drawn]
    assert not not_drawn, f"no chart drawn for {not_drawn}"


def test_every_image_plot_loads(rendered, repro):
    root, _ = repro
    _, declared = declared_plots()
    expected = sum(len(list((root / path).glob("*.png"))) if (root / path).is_dir() else 1 for path in declared)
    assert len(rendered["images"]) == expected == 12
    broken = [src for src, loaded in rendered["images"].items() if not loaded]
    assert not broken, f"images that did not load: {broken}"
