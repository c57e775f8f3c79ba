"""transcribe: write what is said in every clip, with faster-whisper.

Reads:  <clips>/manifest.parquet and the clips (written by segment)
Writes: <out>/manifest.parquet   one row per clip: clip_id, text, language,
                                 language_probability, confidence (exp of the
                                 mean token log-probability), avg_logprob,
                                 no_speech_prob, compression_ratio, words (JSON
                                 list of {word, start_s, end_s, probability},
                                 times within the clip), model, beam_size,
                                 text_source ("asr", or "dataset" when a Parquet
                                 dataset's own transcript was kept)
Params: common.language, transcribe.model, transcribe.device,
        transcribe.compute_type, transcribe.beam_size, transcribe.cpu_threads
Usage:  python -m stages.transcribe [--clips data/clips] [--out data/transcripts]
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pandas as pd
import soxr
from tqdm import tqdm

from voicemill import asr, cli, manifest, params
from voicemill.audio import AudioError, read_wav
from voicemill.fsutil import atomic_dir

_LOGGER = logging.getLogger("stages.transcribe")


def transcribe(clips_dir: Path, out_dir: Path, language: str, opts: params.TranscribeParams) -> dict:
    clips = manifest.read(clips_dir / "manifest.parquet", "clips")
    model = asr.load_model(opts.model, opts.device, opts.compute_type, opts.cpu_threads)
    rows, failed = [], []
    for clip in tqdm(clips.itertuples(), total=len(clips), desc="transcribe", unit="clip", disable=None):
        try:
            samples, rate = read_wav(clips_dir / clip.path)
        except AudioError as e:
            _LOGGER.warning("skipped %s: %s", clip.clip_id, e)
            failed.append(clip.clip_id)
            continue
        source_text = str(getattr(clip, "source_text", "") or "")
        if source_text:
            # The dataset brought its own transcript for this clip: keep it, no ASR.
            rows.append({"clip_id": clip.clip_id, "text": source_text, "language": language,
                         "language_probability": 1.0, "avg_logprob": 0.0, "confidence": 1.0,
                         "no_speech_prob": 0.0, "compression_ratio": 0.0, "words": "[]", "model": "",
                         "beam_size": 0, "text_source": "dataset"})
            continue
        audio = soxr.resample(samples, rate, asr.ASR_RATE) if rate != asr.ASR_RATE else samples
        result = asr.transcribe(model, audio, language, opts.beam_size)
        result["words"] = json.dumps(result["words"])
        rows.append({"clip_id": clip.clip_id, **result, "model": opts.model, "beam_size": opts.beam_size,
                     "text_source": "asr"})
    if not rows:
        raise cli.StageError(f"no clip in {clips_dir} could be read; rerun 'dvc repro segment'")
    with atomic_dir(out_dir) as tmp:
        manifest.write(pd.DataFrame(rows), tmp / "manifest.parquet", "transcripts")
    empty = sum(1 for r in rows if not r["text"])
    return {"clips": len(rows), "failed": len(failed), "empty": empty,
            "mean_confidence": sum(r["confidence"] for r in rows) / len(rows)}


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "transcribe")
    p.add_argument("--clips", default="data/clips", help="segment output folder (default: %(default)s)")
    p.add_argument("--out", default="data/transcripts", help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        common, opts = params.load(Path(args.params), "transcribe")
        s = transcribe(Path(args.clips), Path(args.out), common.language, opts)
        _LOGGER.info("transcribe: %d clip(s) with %s, %d empty, %d unreadable, mean confidence %.2f -> %s",
                     s["clips"], opts.model, s["empty"], s["failed"], s["mean_confidence"], args.out)

    return cli.run("transcribe", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
