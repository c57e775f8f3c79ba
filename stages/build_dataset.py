"""build_dataset: normalise transcripts, filter, split, write an LJSpeech dataset and its card.

Reads:  <clips>/manifest.parquet and clips (segment), <transcripts>/manifest.parquet
        (transcribe); optionally <raw>/manifest.parquet (download) for the
        card's titles, speakers and licenses and the speaker ids
Writes: <out>/wavs/<clip_id>.wav    the kept clips
        <out>/metadata.csv          id|raw|normalized, every kept clip (LJSpeech)
        <out>/metadata_train.csv, <out>/metadata_val.csv   the seeded split, same format
        <out>/manifest.parquet      one row per KEPT clip (what train/evaluate use):
                                    the clip and transcript columns, normalized,
                                    n_words, speech_s, chars_per_s, split, wav, joined
                                    (the clips a joined clip is made of, JSON; "" for
                                    the others: neighbours that say one sentence are
                                    joined, build_dataset.join_max_pause_s)
        <out>/clips_all.parquet     one row per clip, kept or dropped: the same
                                    columns plus kept, drop_reason (the first filter
                                    failed), drop_reasons (every filter failed) and
                                    joined_into (the joined clip it is part of)
        <out>/dataset.parquet       kept clips in the Hugging Face audio layout:
                                    audio {bytes, path}, text, raw_text, speaker_id, split
        <out>/phonemes.csv          id|phonemes|ids: the espeak phonemes (voice from
                                    common.language) and Piper ids the voice trains on;
                                    first line: the espeak voice and a digest of the texts
        <out>/README.md             the dataset card, with duration_hist.png and
                                    rate_hist.png beside it
        <metrics>                   hours, clips, joined, train, val, clips_in, dropped
                                    (per reason, all reasons), minutes (per speaker:
                                    segmented_min, kept_min, lost_min per drop reason),
                                    duration_s_median, chars_per_s_median, fingerprint
                                    (sha256 of ids, split, texts and audio), and with
                                    ground truth truth.clip_label_* (each kept clip's
                                    label against the truth words inside it) and
                                    truth.target_speech_kept_share (of the target
                                    speaker's speech, the share in the dataset)
        <plots>                     CSV per clip for dvc plots: clip_id, source_id,
                                    duration_s, speech_s, chars_per_s, n_words, kept,
                                    drop_reason
Params: common.language, common.seed, build_dataset.* (the filters, in the order
        they run: see voicemill/dataset.py; a filter whose column an older
        manifest lacks is inactive and says so in the log and the card)
Usage:  python -m stages.build_dataset [--clips data/clips]
            [--transcripts data/transcripts] [--raw data/raw] [--out data/dataset]
            [--metrics metrics/dataset.json] [--plots metrics/dataset_clips.csv]

On the demo it keeps about 33 of 68 clips (2.6 minutes; the guests' clips,
the two clipped passages, noisy clips and the clips whose label the two ASR
models do not agree on are dropped): enough to fine-tune a Piper voice
briefly, far from a voice of its own, as the card says.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from voicemill import cli, dataset, manifest, params
from voicemill.dataset import DatasetOptions, build_dataset
from voicemill.fsutil import write_json
from voicemill.tts.phonemes import FrontEnd, write_dataset_phonemes

_LOGGER = logging.getLogger("stages.build_dataset")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "build_dataset")
    p.add_argument("--clips", default="data/clips", help="segment output folder (default: %(default)s)")
    p.add_argument("--transcripts", default="data/transcripts", help="transcribe output (default: %(default)s)")
    p.add_argument("--raw", default=None,
                   help="download output folder, for titles, speakers and licenses in the card (optional)")
    p.add_argument("--out", default="data/dataset", help="output folder (default: %(default)s)")
    p.add_argument("--metrics", default="metrics/dataset.json", help="metrics file (default: %(default)s)")
    p.add_argument("--plots", default=None, help="per-clip CSV for dvc plots (optional)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        cli.sweep("build_dataset", args.out, args.metrics, args.plots)
        common, opts = params.load(Path(args.params), "build_dataset")
        clips = manifest.read(Path(args.clips) / "manifest.parquet", "clips")
        transcripts = manifest.read(Path(args.transcripts) / "manifest.parquet", "transcripts")
        sources = manifest.read(Path(args.raw) / "manifest.parquet", "sources") if args.raw else None
        out = Path(args.out)
        if out.exists():
            shutil.rmtree(out)
        result = build_dataset(clips, Path(args.clips), transcripts, out,
                               params.fill(DatasetOptions, opts, common), sources)
        s = result.summary
        front = FrontEnd.create(common.language)
        write_dataset_phonemes(out, front)
        write_json(Path(args.metrics), s)
        if args.plots:
            dataset.write_plot_data(result.clips, Path(args.plots))
        drops = ", ".join(f"{r} {n}" for r, n in s["dropped"].items() if n) or "none"
        _LOGGER.info("build_dataset: kept %d of %d clip(s) (%d train, %d val), %.3f h; dropped: %s; "
                     "fingerprint %s -> %s", s["clips"], s["clips_in"], s["train"], s["val"], s["hours"], drops,
                     s["fingerprint"][:12], out)

    return cli.run("build_dataset", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
