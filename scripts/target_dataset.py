"""Write a target speaker's dataset: a Kokoro voice (or the demo's joe/guest) saying known sentences.

The sentences are ``voicemill.sentences.SENTENCES`` (160 to train on, the
last 10 held out); the folder gets the LJSpeech layout that ``train`` reads
(see ``voicemill.kokoro.write_target_dataset``). A complete folder is left as it is.

    python -m scripts.target_dataset reports/adapt/target-kokoro-jf_alpha --speaker kokoro:jf_alpha

jf_alpha: 9.2 minutes of training speech, 4.5 s of CPU per sentence (about 13 minutes on 2 free cores).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from voicemill.kokoro import VOICES, write_target_dataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="dataset folder to write")
    p.add_argument("--speaker", default="kokoro:jf_alpha",
                   help=f"joe, guest, or kokoro:<voice> with <voice> one of {', '.join(VOICES)} (default: %(default)s)")
    p.add_argument("--held-out", type=int, default=10, help="last sentences kept for validation (default: %(default)s)")
    p.add_argument("--rate", type=int, default=22050, help="sample rate of the WAVs, Hz (default: %(default)s)")
    p.add_argument("--debug", action="store_true", help="more log output")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    write_target_dataset(Path(args.out), args.speaker, held_out=args.held_out, rate=args.rate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
