"""The HTML report of a project: runs, parameters, a picture per output, every plot a run wrote."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np

from tomoweave.api import Project
from tomoweave.formats.mrc import mmap_mrc
from tomoweave.inspect_project import run_summary
from tomoweave.model.sets import TaskState
from tomoweave.store.project_dir import atomic_write_text

ASSETS = "report_assets"
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
h2{border-bottom:1px solid #ccc;padding-top:1em} .state{padding:2px 8px;border-radius:4px}
.finished{background:#cfc}.failed{background:#fcc}.finished.with.failures{background:#ffc}
table{border-collapse:collapse;font-size:90%} td,th{border:1px solid #ddd;padding:2px 8px}
figure{display:inline-block;margin:.5em;vertical-align:top} img{max-width:360px;border:1px solid #aaa}
figcaption{font-size:85%;color:#555;max-width:360px}"""


def write_report(project: Project, path: str | Path | None = None) -> Path:
    """Write ``report.html`` in the project folder (pictures in ``report_assets/``)."""
    path = Path(path) if path else project.root / "report.html"
    assets = project.root / ASSETS
    assets.mkdir(exist_ok=True)
    runs = project.runs()
    sections = [_run_section(project, run, assets, path.parent) for run in runs]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>tomoweave report</title>"
            f"<style>{STYLE}</style></head><body><h1>tomoweave project {html.escape(project.root.name)}"
            f"</h1><p>{len(sections)} runs · written {time.strftime('%Y-%m-%d %H:%M')}</p>"
            + _contents(project, runs) + "".join(sections) + "</body></html>")
    return atomic_write_text(path, page)


def _contents(project: Project, runs) -> str:
    """One line per run: state, time, outputs; the names link to the sections below."""
    rows = []
    for run in runs:
        summary = run_summary(project, run)
        record = run.record
        seconds = (f"{record.finished - record.started:.0f} s"
                   if record.finished and record.started else "")
        outputs = ", ".join(f"{o['count']} {n}" for n, o in summary["outputs"].items())
        rows.append(f"<tr><td>{run.id}</td><td><a href='#run{run.id}'>{html.escape(run.name)}</a>"
                    f"</td><td>{html.escape(run.protocol)}</td><td><span class='state "
                    f"{summary['state']}'>{summary['state']}</span></td><td>{seconds}</td>"
                    f"<td>{html.escape(outputs)}</td></tr>")
    return ("<table><tr><th>#</th><th>run</th><th>protocol</th><th>state</th><th>time</th>"
            "<th>outputs</th></tr>" + "".join(rows) + "</table>")


def _run_section(project: Project, run, assets: Path, page_dir: Path) -> str:
    summary = run_summary(project, run)
    record = run.record
    duration = (f"{record.finished - record.started:.1f} s"
                if record.finished and record.started else "")
    params = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(json.dumps(v))}</td></tr>"
                     for k, v in record.params.items() if v not in (None, [], {}))
    outputs = "".join(f"<li>{html.escape(n)}: {o['count']} {html.escape(o['type'])}</li>"
                      for n, o in summary["outputs"].items())
    figures = _output_previews(project, run, assets, page_dir)
    figures += _run_plots(project.root / run.folder / "outputs", page_dir)
    summaries = _run_summaries(project.root / run.folder / "outputs")
    failed = "".join(f"<li>{html.escape(t)}: {html.escape(str(j['error']))}</li>"
                     for t, j in project.catalog.journal(run.id).items() if j["state"] == TaskState.FAILED)
    return (f"<h2 id='run{run.id}'>{run.id}. {html.escape(run.name)} "
            f"<small>({html.escape(run.protocol)})</small> "
            f"<span class='state {summary['state']}'>{summary['state']}</span></h2>"
            f"<p>{summary['items_done']} items done, {summary['items_failed']} failed {duration}. "
            f"Inputs: {html.escape(json.dumps(summary['inputs']))}</p>"
            + (f"<table><tr><th>parameter (set or default)</th><th>value</th></tr>{params}</table>"
               if params else "")
            + f"<ul>{outputs}</ul>" + summaries
            + (f"<p>Failed items:</p><ul>{failed}</ul>" if failed else "")
            + "".join(figures))


def _run_summaries(outputs: Path) -> str:
    """The agreement summaries (``*_summary.txt``) a run wrote, e.g. the consensus protocols'."""
    if not outputs.exists():
        return ""
    texts = [p.read_text(errors="replace") for p in sorted(outputs.glob("*_summary.txt"))[:24]]
    return "".join(f"<pre class='summary'>{html.escape(t.strip())}</pre>" for t in texts)


def _run_plots(outputs: Path, page_dir: Path) -> list[str]:
    if not outputs.exists():
        return []
    pngs = sorted(outputs.rglob("*.png"))[:24]
    return [_figure(p, page_dir, p.stem.replace("_", " ")) for p in pngs]


def _output_previews(project: Project, run, assets: Path, page_dir: Path) -> list[str]:
    figures = []
    for output_set in project.catalog.sets_of_run(run.id):
        records = project.catalog.items(output_set.id)[:2]
        for record in records:
            picture = _preview(project, output_set.item_type, record.data,
                               assets / f"run{run.id:04d}_{output_set.output}_{_safe(record.key)}.png")
            if picture is not None:
                caption = f"{output_set.output}: {record.key}"
                if output_set.item_type == "Average" and record.data.get("resolution_a"):
                    caption += (f" — {record.data['resolution_a']:.1f} Å (FSC "
                                f"{record.data.get('fsc_threshold', 0.143):g}), "
                                f"{record.data.get('particle_count') or '?'} particles")
                figures.append(_figure(picture, page_dir, caption))
    return figures


def _preview(project: Project, item_type: str, data: dict, target: Path) -> Path | None:
    """A PNG of an item: the 0° tilt of a series, the central slice of a volume."""
    try:
        if item_type == "TiltSeries":
            tilts = data["tilts"]
            zero = min(range(len(tilts)), key=lambda i: abs(tilts[i]["tilt_deg"]))
            tilt = tilts[zero]
            if not tilt.get("image_path"):
                return None
            with mmap_mrc(project.path(tilt["image_path"])) as mrc:
                image = np.asarray(mrc.data[tilt.get("image_index", 0)] if mrc.data.ndim == 3
                                   else mrc.data)
            return _save_image(image, target, f"{data['name']} at {tilt['tilt_deg']:.1f}°")
        if item_type in ("Tomogram", "Volume", "Average") and data.get("path"):
            with mmap_mrc(project.path(data["path"])) as mrc:
                volume = mrc.data
                image = np.asarray(volume[volume.shape[0] // 2]) if volume.ndim == 3 else volume
            return _save_image(image, target, f"{data['name']}: central XY slice")
    except Exception:  # a preview must never break the report
        return None
    return None


def _save_image(image: np.ndarray, target: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(image, [1, 99]) if image.size else (0, 1)
    figure, axes = plt.subplots(figsize=(4, 4 * image.shape[0] / max(1, image.shape[1])))
    axes.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, origin="lower")
    axes.set_title(title, fontsize=9)
    axes.axis("off")
    figure.savefig(target, dpi=90, bbox_inches="tight")
    plt.close(figure)
    return target


def _figure(path: Path, page_dir: Path, caption: str) -> str:
    try:
        source = path.relative_to(page_dir).as_posix()
    except ValueError:
        source = path.as_posix()
    return (f"<figure><a href='{html.escape(source)}'><img src='{html.escape(source)}'></a>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
