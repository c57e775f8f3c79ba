"""transcribe: write what is said in every clip: human subtitles first, else faster-whisper.

Reads:  <clips>/manifest.parquet and the clips (written by segment); optional
        side files that segment copies there: <clips>/subtitles/<source_id>.<lang>.vtt
        (human subtitles, cue times in the video), <clips>/sources.json (each
        source's trim start_s, which shifts the cues), <clips>/truth/<source_id>.json
        (ground truth: the demo)
Writes: <out>/manifest.parquet   one row per readable clip (the "transcripts" manifest):
            clip_id
            text                 the transcript (see text_source)
            text_source          "subtitles" (human subtitle cues that fit the clip,
                                 see voicemill/subtitles.py), "dataset" (a Parquet
                                 dataset's own transcript, ASR skipped) or "asr"
            asr_text             what the ASR heard ("" for dataset rows); equals text
                                 for asr rows
            language             language of the ASR decoding: common.language, or the
                                 detected one with transcribe.language: auto
            language_probability detection probability; 1.0 when not detected (a fixed
                                 language or an English-only model); NaN for dataset rows
            language_mismatch    detected language is not common.language, with more
                                 than transcribe.language_mismatch_probability
            avg_logprob          mean over the clip's words of log(word probability),
                                 NaN when no word was heard (see voicemill/asr.py)
            confidence           exp(avg_logprob): geometric mean of word probabilities
            no_speech_prob       Whisper's no-speech probability of the decoding window
                                 (shared by packed_clips clips)
            compression_ratio    gzip ratio of the clip's ASR text
            words                JSON list of {word, start_s, end_s, probability}, times
                                 within the clip
            packed_clips         clips decoded together in the clip's window (1 = alone)
            edge_check           "" or, for a packed clip with a doubtful edge (a word's
                                 time in the silence beside it) decoded again alone:
                                 "confirmed" (the same words) or "mended" (other words;
                                 the alone result is kept)
            verify_text          what transcribe.verify_model heard ("" when off)
            label_agrees         the two models heard the same words (normalised for
                                 scoring, spaces ignored); None when not checked
            arbitration          where they did not: "model" or "verify_model" (the
                                 transcript both models score higher on the clip's audio,
                                 teacher forced, kept in text with its words and scores),
                                 "balanced" (undecided: build_dataset drops it), "" when
                                 not disputed (see transcribe.arbitration_margin)
            arbitration_margin   the winner's summed log-likelihood margin under the two
                                 models (nats; the absolute sum when balanced), NaN when
                                 not disputed
            sentence_goes_on     "yes" when the clip's sentence goes on into the next clip
                                 of its source, "no" when it ends there, as transcribe.model
                                 heard the two decoded together with the pause between
                                 them (transcribe.sentence_check_max_pause_s); "" when not
                                 checked or undecided. build_dataset joins on it.
            model                transcribe.model ("" for dataset rows)
            chosen_model         the model whose result is in asr_text and the scores:
                                 transcribe.model, or transcribe.fallback_model when its
                                 result scored better ("" for dataset rows)
            primary_text, primary_avg_logprob     transcribe.model's own result
            fallback_text, fallback_avg_logprob   transcribe.fallback_model's result, for
                                 the clips below transcribe.fallback_below ("" / NaN for
                                 the others); the better-scored of the two is in asr_text
            hallucination        comma-separated flags on text, "" when none: repeat,
                                 compression, silence, too_long, too_short (see
                                 voicemill/asr.py; the clip's silence share is segment's
                                 silence_share, else estimated from its frame levels)
            beam_size, asr_options   decoding options (asr_options as JSON: model,
                                 device, compute_type, beam_size, batch_size,
                                 initial_prompt, language, fallback)
        <metrics>                clips, failed, empty, by_text_source, mean_confidence,
                                 flagged (per hallucination flag, language_mismatch),
                                 fallback (tried, chosen), verify (model, clips, agree,
                                 agree_share, arbitration: disputed, model, verify_model,
                                 balanced), sentences (checked, goes_on, ends), edge (checked, mended), subtitles.asr_wer
                                 (ASR against the subtitles it replaced), and when ground
                                 truth exists truth.{wer, cer, word_errors, words,
                                 char_errors, chars, sources, sentences, sentences_covered}:
                                 per source, the truth sentences mostly inside clips against
                                 the clip transcripts in time order, both normalised for
                                 scoring; truth.clip_label_{exact_share, wer},
                                 clip_edge_word_errors: each clip's label against the truth
                                 words inside it (voicemill/truth.py)
Params: common.language (the dataset's language), common.seed (sampling fallback),
        transcribe.{model, device, compute_type, cpu_threads} (the model),
        transcribe.{beam_size, batch_size, initial_prompt} (decoding; batch_size packs clips),
        transcribe.{verify_model, arbitration_margin} (a second model's opinion on every
        label, and how a disagreement is settled), transcribe.sentence_check_max_pause_s,
        transcribe.{language, language_mismatch_probability}, transcribe.{fallback_model,
        fallback_below}, transcribe.{use_subtitles, subtitle_tolerance_s,
        subtitle_min_coverage}, transcribe.{max_compression_ratio, max_repeats,
        max_silence_share, min_chars_per_s, max_chars_per_s} (flags); see voicemill/params.py
Sizes:  the demo's 50 clips (4.5 min) take about 10 s with tiny.en on 2 CPU cores; truth
        WER 2.8% (CER 1.5%)
Usage:  python -m stages.transcribe [--clips data/clips] [--out data/transcripts]
            [--metrics metrics/transcribe.json]
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from voicemill import cli, executor, params
from voicemill.fsutil import write_json
from voicemill.transcription import transcribe

_LOGGER = logging.getLogger("stages.transcribe")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "transcribe")
    p.add_argument("--clips", default="data/clips", help="segment output folder (default: %(default)s)")
    p.add_argument("--out", default="data/transcripts", help="output folder (default: %(default)s)")
    p.add_argument("--metrics", default="metrics/transcribe.json", help="metrics file (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        cli.sweep("transcribe", args.out, args.metrics)
        sections = params.load_all(Path(args.params))
        common, opts = sections["common"], sections["transcribe"]
        ex = executor.make(common, sections["ray"])
        try:
            s = transcribe(Path(args.clips), Path(args.out), common.language, opts, common.seed, ex, sections["ray"])
        finally:
            ex.close()
        timing = s.pop("_timing")
        write_json(Path(args.metrics), s)
        src = s["by_text_source"]
        truth_part = f", truth WER {s['truth']['wer']:.1%} CER {s['truth']['cer']:.1%}" if "truth" in s else ""
        _LOGGER.info("transcribe: %d clip(s) (%d asr with %s, %d subtitles, %d dataset), %d empty, %d flagged, "
                     "%d unreadable; %.0f s of audio in %.0f s%s -> %s", s["clips"], src["asr"], opts.model,
                     src["subtitles"], src["dataset"], s["empty"], s["flagged"]["hallucination"], s["failed"],
                     timing["audio_s"], timing["asr_s"], truth_part, args.out)

    return cli.run("transcribe", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
