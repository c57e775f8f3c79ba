"""Speak the evaluation sentences with the bundled Piper voice, as a quality anchor.

Writes <out>/<clip_id>.wav for the validation sentences that `evaluate`
scores, so that the Piper voice can be scored like any other system:

    python -m scripts.synthesize_piper --out reports/piper
    python -m stages.evaluate --synth-dir reports/piper --metrics reports/piper.json \\
        --scores reports/piper.csv --html reports/piper.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

from voicemill.audio import write_wav
from voicemill.demo import load_voice, synthesize
from voicemill.evaluate import read_eval_sentences
from voicemill.params import load


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="data/dataset", help="LJSpeech dataset (default: %(default)s)")
    p.add_argument("--params", default="params.yaml", help="for evaluate.max_utterances (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder for the WAVs")
    args = p.parse_args(argv)
    _, opts = load(Path(args.params), "evaluate")
    voice = load_voice()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sentences = read_eval_sentences(Path(args.dataset), opts.max_utterances)
    for clip_id, text in sentences:
        write_wav(out / f"{clip_id}.wav", *synthesize(voice, text))
    print(f"wrote {len(sentences)} WAVs to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
