"""Plots that need no network: DVC's page with the Vega libraries inside it, and static curves in ``reports/``.

``dvc plots show`` writes ``dvc_plots/index.html``, which by default loads
vega, vega-lite and vega-embed from a CDN: on a machine without internet
every curve is blank. :func:`write_dvc_template` writes an HTML template with
the three libraries inlined (``vl-convert-python`` bundles them, from PyPI;
no npm, no network at run time) and SVG as the renderer, and the
repository's ``.dvc/config`` names it (``plots.html_template``), so a plain
``dvc plots show`` works offline. ``scripts/setup.sh`` writes it
(``python -m voicemill.plots template``); it is generated, not committed.

:func:`render_curves` draws the training curves (DVCLive's TSVs under
``metrics/train/plots``) and the evaluation's per-utterance scores as SVG
and PNG files, for people who never open DVC; the evaluate stage writes them
to ``reports/plots``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

from voicemill.errors import VoicemillError
from voicemill.fsutil import atomic_path

_LOGGER = logging.getLogger(__name__)

#: Where the template goes, relative to the repository (``.dvc/config`` names it relative to ``.dvc``).
TEMPLATE = Path(".dvc/offline_plots.html")
#: vega-embed with SVG as the default renderer (a page's curves are then elements that a test can count).
_SNIPPET = """
window.vega = vega;
window.vegaLite = vegaLite;
window.vegaEmbed = (el, spec, opts) => vegaEmbed(el, spec, Object.assign({renderer: "svg"}, opts || {}));
"""
_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>voicemill plots</title>
<!-- vega {vega}, vega-lite {vega_lite}, vega-embed {embed}: inlined by voicemill.plots (no network needed) -->
<script>
{bundle}
</script>
<style>
  body {{ font: 14px system-ui, sans-serif; margin: 1rem; }}
  table {{ border-spacing: 15px; }}
</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def _vl_convert():
    try:
        import vl_convert
    except ImportError as e:
        raise VoicemillError("vl-convert-python is not installed; run scripts/setup.sh (make setup)") from e
    return vl_convert


def write_dvc_template(path: Path = TEMPLATE) -> Path:
    """Write DVC's HTML template with vega, vega-lite and vega-embed inlined (about 0.9 MB)."""
    vlc = _vl_convert()
    page = _PAGE.format(bundle=vlc.javascript_bundle(_SNIPPET).replace("</script", "<\\/script"),
                        vega=vlc.get_vega_version(), vega_lite=vlc.get_vegalite_versions()[-1],
                        embed=vlc.get_vega_embed_version())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))


def _line(title: str, rows: list[dict], y: str) -> dict:
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": title, "width": 480,
            "height": 220, "data": {"values": [{"step": int(r["step"]), y: float(r[y])} for r in rows]},
            "mark": {"type": "line", "point": len(rows) < 40},
            "encoding": {"x": {"field": "step", "type": "quantitative"},
                         "y": {"field": y, "type": "quantitative", "scale": {"zero": False}}}}


def _bars(title: str, rows: list[dict], fields: dict[str, str]) -> dict:
    values = [{"clip": r["clip_id"], "what": label, "value": float(r[f])}
              for r in rows for f, label in fields.items() if r.get(f) not in (None, "", "nan")]
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": title, "width": 480,
            "height": 220, "data": {"values": values}, "mark": "bar",
            "encoding": {"x": {"field": "clip", "type": "nominal", "axis": {"labels": False}},
                         "xOffset": {"field": "what"}, "y": {"field": "value", "type": "quantitative",
                                                             "title": title.split(" per ")[0]},
                         "color": {"field": "what", "type": "nominal"}}}


def curve_specs(live_dir: Path | None, scores_csv: Path | None = None) -> dict[str, dict]:
    """Vega-Lite specs by file stem: each training metric DVCLive logged, and the per-utterance scores."""
    specs = {}
    plots = Path(live_dir) / "plots" / "metrics" if live_dir else None
    titles = {"train": "Training", "eval": "Listening during training"}
    for group in ("train", "eval"):
        for tsv in sorted((plots / group).glob("*.tsv")) if plots and (plots / group).is_dir() else []:
            rows = _rows(tsv)
            if rows and tsv.stem in rows[0]:
                specs[f"{group}_{tsv.stem}"] = _line(f"{titles[group]}: {tsv.stem} per step", rows, tsv.stem)
    if scores_csv and Path(scores_csv).is_file():
        rows = _rows(Path(scores_csv))
        for key, label in (("wer", "WER"), ("distillmos", "Distill-MOS"), ("dnsmos_ovrl", "DNSMOS OVRL")):
            if rows and key in rows[0]:
                specs[f"eval_{key}_per_utterance"] = _bars(f"{label} per utterance, synthesized vs real", rows,
                                                           {key: "synthesized", f"{key}_gt": "real"})
    return specs


def listening_svg(evals: list[dict], keys: list[str]) -> str:
    """The listening evaluations of a run (``voicemill.report.read_evaluations``) as one inline SVG: each of
    their scores ``keys`` per step, in its own panel."""
    values = [{"step": e["step"], "measure": k, "value": float(e["scores"][k])} for e in evals for k in keys]
    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "data": {"values": values},
            "facet": {"field": "measure", "type": "nominal", "title": None}, "columns": 4,
            "spec": {"width": 200, "height": 140, "mark": {"type": "line", "point": True},
                     "encoding": {"x": {"field": "step", "type": "quantitative"},
                                  "y": {"field": "value", "type": "quantitative", "scale": {"zero": False},
                                        "title": None}}},
            "resolve": {"scale": {"y": "independent"}}}
    return _vl_convert().vegalite_to_svg(spec)


def render_curves(specs: dict[str, dict], out_dir: Path) -> list[Path]:
    """Each spec as ``<name>.svg`` and ``<name>.png`` in ``out_dir`` (files of specs no longer given removed)."""
    vlc = _vl_convert()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in specs.items():
        for suffix, render in ((".svg", lambda s: vlc.vegalite_to_svg(s).encode()),
                               (".png", lambda s: vlc.vegalite_to_png(s, scale=1.5))):
            path = out_dir / f"{name}{suffix}"
            with atomic_path(path) as tmp:
                Path(tmp).write_bytes(render(spec))
            written.append(path)
    for stale in out_dir.glob("*"):
        if stale.suffix in (".svg", ".png") and stale not in written:
            stale.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m voicemill.plots", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("template", help="write DVC's offline HTML template (.dvc/offline_plots.html)")
    t.add_argument("--out", default=str(TEMPLATE))
    r = sub.add_parser("render", help="draw the training curves and per-utterance scores as SVG and PNG")
    r.add_argument("--live", default="metrics/train", help="DVCLive's folder (default: %(default)s)")
    r.add_argument("--scores", default="metrics/eval_scores.csv", help="evaluate's per-utterance scores")
    r.add_argument("--out", default="reports/plots")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "template":
            print(write_dvc_template(Path(args.out)))
        else:
            written = render_curves(curve_specs(Path(args.live), Path(args.scores)), Path(args.out))
            print(f"{len(written)} file(s) in {args.out}")
    except VoicemillError as e:
        _LOGGER.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
