"""HTML listening pages: the evaluation's report, and the training run's evaluations.

:func:`render` (``reports/eval.html``) is one self-contained file: audio
players carry their WAV as a data URI and spectrograms are embedded PNGs, so
the page can be mailed, attached to a review, or opened from a DVC cache as
it is.

:func:`render_training` (``reports/training.html``) shows what each listening
evaluation of a training run heard (``models/checkpoints/eval/step-*``): the
curves, and per sentence each evaluation's audio, linked where the run wrote
it (a long run keeps dozens of evaluations: embedded, they would weigh
hundreds of MB).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf

HEADLINE = (
    ("Word error rate (ASR round trip)", "intelligibility", "wer", "lower is better"),
    ("Character error rate", "intelligibility", "cer", "lower is better"),
    ("DNSMOS overall", "quality", "dnsmos_ovrl", "1-5, higher is better"),
    ("Distill-MOS", "quality", "distillmos", "1-5, higher is better"),
    ("Speaker similarity", "speaker", "similarity", "cosine, higher is better"),
    ("CLAP text-audio score", "clap", "score", "cosine, higher is better"),
)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f4f4f4}.utt{border-top:2px solid #ddd;padding:1rem 0}.pair{display:flex;gap:2rem;flex-wrap:wrap}
.side{flex:1;min-width:20rem}img{max-width:100%}.bad{color:#b00}.note{color:#666;font-size:.9rem}
"""


def _wav_uri(audio: np.ndarray, rate: int) -> str:
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1, 1), rate, subtype="PCM_16", format="WAV")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def _spectrogram_uri(synth: tuple[np.ndarray, int], real: tuple[np.ndarray, int]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 2.6), sharey=True)
    for ax, (audio, rate), title in zip(axes, (synth, real), ("synthesized", "real recording")):
        if audio.size > 256:
            with np.errstate(divide="ignore"):  # digital silence has no level in dB
                ax.specgram(audio, NFFT=512, Fs=rate, noverlap=384, cmap="magma", vmin=-120)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("s", fontsize=8)
    axes[0].set_ylabel("Hz", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"
    return html.escape(str(value))


def render(metrics: dict, rows: list[dict], synth: dict, real: dict, title: str) -> str:
    """The report page as a string."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
           f"<p class='note'>{metrics['n_utterances']} validation sentences; every metric is also computed on "
           "the real recordings of the same sentences.</p>",
           "<table id='headline'><tr><th>metric</th><th>synthesized</th><th>real recordings</th><th>gap</th>"
           "<th></th></tr>"]
    for label, group, key, note in HEADLINE:
        g = metrics.get(group, {})
        if key not in g:
            if group == "clap":
                out.append(f"<tr><td>{label}</td><td colspan='4'>unavailable: no CLAP model configured</td></tr>")
            continue
        ours, ref = g.get(key), g.get(f"{key}_gt")
        gap = ours - ref if isinstance(ours, float) and isinstance(ref, float) else None
        ci = g.get(f"{key}_ci95")
        ci_text = f" ± {_fmt(ci)}" if isinstance(ci, float) else ""
        out.append(f"<tr><td>{label}</td><td>{_fmt(ours)}{ci_text}</td><td>{_fmt(ref)}</td><td>{_fmt(gap)}</td>"
                   f"<td class='note'>{note}</td></tr>")
    for name, fad in metrics.get("fad", {}).items():
        if "value" in fad:
            out.append(f"<tr><td>FAD ({html.escape(name)})</td><td>{_fmt(fad['value'])}</td>"
                       f"<td>noise floor {_fmt(fad['noise_floor'])}</td><td></td><td class='note'>"
                       f"{fad['vectors_synth']} vs {fad['vectors_real']} vectors; lower is better</td></tr>")
    speed = metrics.get("speed", {})
    if "rtf_torch" in speed:
        out.append(f"<tr><td>Real-time factor (PyTorch, CPU)</td><td>{_fmt(speed['rtf_torch'])}</td><td></td>"
                   "<td></td><td class='note'>seconds of compute per second of audio</td></tr>")
    out.append(f"<tr><td>Invalid outputs</td><td>{metrics['validity']['failed']}</td><td></td><td></td>"
               "<td class='note'>empty, silent, clipped or too long</td></tr></table>")

    for row in rows:
        cid = row["clip_id"]
        bad = " <span class='bad'>(" + html.escape(row["invalid"]) + ")</span>" if row.get("invalid") else ""
        out.append(f"<div class='utt' id='utt-{html.escape(cid)}'><h3>{html.escape(cid)}{bad}</h3>"
                   f"<p>{html.escape(row['text'])}</p><div class='pair'>")
        for side, clip, tag in (("synthesized", synth[cid], ""), ("real recording", real[cid], "_gt")):
            out.append(f"<div class='side'><b>{side}</b><br><audio controls preload='metadata' "
                       f"src='{_wav_uri(*clip)}'></audio><br><span class='note'>heard as: "
                       f"{html.escape(row.get('asr_text' + tag, ''))}</span><br>WER {_fmt(row.get('wer' + tag))}, "
                       f"DNSMOS {_fmt(row.get('dnsmos_ovrl' + tag))}, Distill-MOS "
                       f"{_fmt(row.get('distillmos' + tag))}</div>")
        out.append(f"</div><p>speaker similarity {_fmt(row.get('similarity'))}</p>"
                   f"<img alt='spectrograms of {html.escape(cid)}' src='{_spectrogram_uri(synth[cid], real[cid])}'>"
                   "</div>")
    out.append("</body></html>")
    return "\n".join(out)


# ------------------------------------------------------------------ the training page

TRAINING_KEYS = (("composite", "listening composite"), ("wer", "WER"), ("distillmos", "Distill-MOS"),
                 ("similarity", "similarity"))


def read_evaluations(eval_root: Path) -> list[dict]:
    """The listening evaluations a training run kept (``<checkpoints>/eval/step-*/scores.json``), by step."""
    evals = []
    for d in sorted(Path(eval_root).glob("step-*")) if Path(eval_root).is_dir() else []:
        scores = d / "scores.json"
        if scores.is_file():
            data = json.loads(scores.read_text(encoding="utf-8"))
            evals.append({"step": int(d.name.split("-")[1]), "dir": d, **data})
    return evals


def render_training(evals: list[dict], html_path: Path, title: str = "voicemill training: what each evaluation "
                    "heard") -> str:
    """A page of a run's listening evaluations: the curves, then per sentence each evaluation's audio (linked
    from where the run wrote it, relative to ``html_path``) with its scores, so the voice is heard changing."""
    from voicemill.plots import listening_svg

    best = max(evals, key=lambda e: e["scores"]["composite"]) if evals else None
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{STYLE} audio{{width:14rem}} td.best{{background:#eef8ee}}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    if not evals:
        out.append("<p>No listening evaluation was kept (train.eval_every 0, or the run has not reached one).</p>"
                   "</body></html>")
        return "\n".join(out)
    out.append(f"<p class='note'>{len(evals)} evaluation(s), each speaking the same {len(evals[0]['sentences'])} "
               f"validation sentences. The train stage exported step {best['step']}, the best listening composite "
               f"({_fmt(best['scores']['composite'])}).</p>")
    out.append(listening_svg(evals, [k for k, _ in TRAINING_KEYS]))
    out.append("<table id='evaluations'><tr><th>step</th>" + "".join(f"<th>{label}</th>" for _, label in
                                                                        TRAINING_KEYS) + "</tr>")
    for e in evals:
        cls = " class='best'" if e is best else ""
        out.append(f"<tr{cls} data-step='{e['step']}'><td>{e['step']}</td>" + "".join(
            f"<td data-key='{k}'>{_fmt(e['scores'][k])}</td>" for k, _ in TRAINING_KEYS) + "</tr>")
    out.append("</table><table id='sentences'><tr><th>sentence</th>" +
               "".join(f"<th>step {e['step']}</th>" for e in evals) + "</tr>")
    for first in evals[0]["sentences"]:
        cid = first["clip_id"]
        out.append(f"<tr><td>{html.escape(cid)}</td>")
        for e in evals:
            s = next((s for s in e["sentences"] if s["clip_id"] == cid), None)
            wav = e["dir"] / f"{cid}.wav"
            if s is None or not wav.is_file():
                out.append("<td class='note'>not kept</td>")
                continue
            src = os.path.relpath(wav, Path(html_path).parent)
            out.append(f"<td><audio controls preload='metadata' src='{html.escape(src)}'></audio><br>"
                       f"<span class='note'>heard as: {html.escape(s.get('heard', ''))}</span><br>WER "
                       f"{_fmt(s.get('wer'))}, Distill-MOS {_fmt(s.get('distillmos'))}, similarity "
                       f"{_fmt(s.get('similarity'))}</td>")
        out.append("</tr>")
    out.append("</table></body></html>")
    return "\n".join(out)


# ------------------------------------------------------------------ the cloning page

CLONING_SIDES = (("recording", "the target's recording"), ("voice", "the voice"), ("base", "the base voice"),
                 ("reconstruction", "reconstruction (posterior -> decoder)"))


def render_cloning(summary: dict, rows: list[dict], clips: dict, title: str = "voicemill cloning: did the voice "
                   "become the speaker?") -> str:
    """The target's recordings, the voice, the base voice and the reconstruction per sentence, each with its
    similarity to the target, WER and Distill-MOS, under a summary of how far the voice moved
    (``voicemill.cloning``); one self-contained file, as :func:`render`."""
    sides = [(k, label) for k, label in CLONING_SIDES if any(f"{k}_wer" in r for r in rows)]
    base = summary.get("base", "none")
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{STYLE} audio{{width:15rem}} #sentences td:first-child{{min-width:14rem}}</style></head><body>"
           f"<h1>{html.escape(title)}</h1>"]
    moved = summary.get("moved")
    if base == "none":
        verdict = "The voice was trained from scratch: there is no base voice to compare with."
    elif isinstance(moved, float) and np.isfinite(moved):
        verdict = (f"Starting from <b>{html.escape(base)}</b>, the voice moved {moved:.0%} of the way toward the "
                   f"target: similarity to the target's recordings {_fmt(summary['base_similarity'])} -> "
                   f"{_fmt(summary['voice_similarity'])}, where the recordings themselves score "
                   f"{_fmt(summary['recording_similarity'])}; it sounds like its base at "
                   f"{_fmt(summary['similarity_to_base'])} (cosine of the two renderings of each sentence).")
    else:
        verdict = (f"The base voice <b>{html.escape(base)}</b> already sounds like the target (similarity "
                   f"{_fmt(summary['base_similarity'])}, the recordings {_fmt(summary['recording_similarity'])}): "
                   "there was no way to move.")
    out.append(f"<p id='verdict'>{verdict}</p>")
    out.append("<table id='summary'><tr><th></th><th>similarity to the target</th><th>WER</th><th>Distill-MOS</th>"
               "</tr>")
    for key, label in sides:
        out.append(f"<tr data-side='{key}'><td>{label}</td>" + "".join(
            f"<td data-score='{score}'>{_fmt(summary.get(f'{key}_{score}'))}</td>"
            for score in ("similarity", "wer", "distillmos"))
            + "</tr>")
    out.append("</table>")
    if "reconstruction_pesq" in summary:
        out.append(f"<p class='note'>The reconstruction is the target's recording through the voice's posterior "
                   f"encoder and decoder: what the decoder can render of the target. Against the recording: PESQ "
                   f"{_fmt(summary['reconstruction_pesq'])} (wide band, 1-4.64), STOI "
                   f"{_fmt(summary['reconstruction_stoi'])}. Similarity is the resemblyzer cosine to the centroid "
                   f"of the other held-out recordings.</p>")
    out.append("<table id='sentences'><tr><th>sentence</th>" + "".join(f"<th>{label}</th>" for _, label in sides)
               + "</tr>")
    for row in rows:
        cid = row["clip_id"]
        out.append(f"<tr data-clip='{html.escape(cid)}'><td><b>{html.escape(cid)}</b><br>"
                   f"{html.escape(row['text'])}</td>")
        for key, _ in sides:
            if cid not in clips.get(key, {}):
                out.append("<td class='note'>n/a</td>")
                continue
            extra = (f"<br>PESQ {_fmt(row.get('reconstruction_pesq'))}, STOI {_fmt(row.get('reconstruction_stoi'))}"
                     if key == "reconstruction" else "")
            out.append(f"<td data-side='{key}'><audio controls preload='metadata' src='{_wav_uri(*clips[key][cid])}'>"
                       f"</audio><br><span class='note'>heard as: {html.escape(row.get(key + '_heard', ''))}</span>"
                       f"<br>similarity {_fmt(row.get(key + '_similarity'))}, WER {_fmt(row.get(key + '_wer'))}, "
                       f"Distill-MOS {_fmt(row.get(key + '_distillmos'))}{extra}</td>")
        out.append("</tr>")
    out.append("</table></body></html>")
    return "\n".join(out)
