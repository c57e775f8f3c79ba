"""segment: cut every downloaded recording into utterance clips at pauses, and measure them.

Reads:  <raw>/manifest.parquet and the audio it lists (written by download);
        sources with role "reference" are not cut: they are the target voice
Writes: <out>/wavs/<clip_id>.wav        16-bit PCM mono at common.sample_rate_hz,
                                        loudness-normalised to segment.target_lufs
        <out>/manifest.parquet          one row per clip (the "clips" manifest):
            clip_id, source_id, path     ids; path relative to <out>
            start_s, end_s               the clip in the source, padding included (s)
            speech_start_s, speech_end_s where the VAD found speech to start and end (s)
            duration_s, sample_rate      of the written clip
            source_text                  the dataset's transcript when a Parquet row
                                         became exactly one clip, else ""
            loudness_lufs, peak          integrated loudness and sample peak, before
                                         normalisation
            clipped_share                share of samples at full scale (>= 0.999)
            peak_pileup                  how much the half-cycle peaks pile up at one
                                         level, both polarities together: clipping at
                                         any level, after any codec (clean speech of
                                         seven voices <= 1.6, clipped >= 2.8; NaN when
                                         short; voicemill.audio.peak_pileup)
            silence_share                share of non-speech VAD frames in the clip
            snr_db                       SNR estimate from frame levels (capped at 60)
            bandwidth_hz                 highest frequency within 50 dB of the peak
            dnsmos_sig, dnsmos_bak,      DNSMOS P.835 of the normalised clip (1..5);
            dnsmos_ovrl                  NaN when segment.dnsmos is false
            speaker_similarity           cosine similarity (resemblyzer) to the target
                                         voice; NaN when segment.speaker is false
            speaker_reference            "reference" (the target came from reference
                                         sources) or "cluster" (the dominant speaker of
                                         the clip's source); "" when off
            speaker_consistency          lowest similarity of a 1.6 s window to the
                                         whole clip; low = two voices
            speaker_change               consistency below segment.speaker_change_below
        <out>/truth/<source_id>.json    ground-truth sidecars of the sources that have
                                        one (the demo), for later stages' checks
        <out>/subtitles/<source_id>.<lang>.vtt   human subtitles, as downloaded (cue
                                        times in the source; the source's start_s
                                        trim is recorded in <out>/sources.json)
        <out>/sources.json              per source: id, role, trim start_s, duration,
                                        speech share, clips, dropped regions
        metrics/segment.json            clips, hours, drops, failures, and a "truth"
                                        group when the sources carry ground truth:
                                        sentences_whole_share, boundary_error_median_ms,
                                        boundary_error_p95_ms, cuts_inside_words,
                                        speaker_purity, target_speech_kept_share
                                        (see voicemill/truth.py)
Params: common.sample_rate_hz, segment.* (see voicemill/segment.py), and
        build_dataset.{min_speaker_similarity, max_clipped_share, max_peak_pileup} (which
        clips the truth check counts as kept; the clipped counts);
        common.executor and ray.* say where the sources are cut (one task per source;
        the outputs are the same either way, see voicemill/executor.py)
Usage:  python -m stages.segment [--raw data/raw] [--out data/clips] [--metrics metrics/segment.json]
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from voicemill import cli, executor, params
from voicemill.fsutil import write_json
from voicemill.segment import segment

_LOGGER = logging.getLogger("stages.segment")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "segment")
    p.add_argument("--raw", default="data/raw", help="download output folder (default: %(default)s)")
    p.add_argument("--out", default="data/clips", help="output folder (default: %(default)s)")
    p.add_argument("--metrics", default="metrics/segment.json", help="metrics file (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        cli.sweep("segment", args.out, args.metrics)
        sections = params.load_all(Path(args.params))
        common, opts = sections["common"], sections["segment"]
        ex = executor.make(common, sections["ray"], opts.workers)
        try:
            s = segment(Path(args.raw), Path(args.out), common.sample_rate_hz, opts, sections["build_dataset"], ex,
                        sections["ray"].segment_cpus)
        finally:
            ex.close()
        write_json(Path(args.metrics), s)
        t = s.get("truth")
        if t:
            _LOGGER.info("segment vs ground truth: %.1f%% of sentences whole, boundary error median %.0f ms "
                         "(p95 %.0f), %d cut(s) inside words, speaker purity %s, target speech kept %s",
                         100 * t["sentences_whole_share"], t["boundary_error_median_ms"],
                         t["boundary_error_p95_ms"], t["cuts_inside_words_count"],
                         t.get("speaker_purity", "n/a"), t.get("target_speech_kept_share", "n/a"))
        _LOGGER.info("segment: %d clip(s) from %d source(s), %.2f h; %d short region(s) dropped, %d two-voice "
                     "clip(s) flagged, %d source(s) unreadable -> %s", s["clips"], s["sources"], s["hours"],
                     s["dropped_short"], s["speaker_change_clips"], len(s["failed"]), args.out)

    return cli.run("segment", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
