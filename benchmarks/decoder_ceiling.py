"""Can the imported joe decoder, left as it is, say another voice? Its latent optimised directly.

``benchmarks/adapt.py`` bounds a frozen-decoder recipe by copy-synthesis:
the target's recordings through the aligned posterior and the decoder. That
bound is only as good as the posterior. This one does without it: for each
held-out recording of the target, the decoder's input latent ``z`` (starting
from the posterior's mean) is optimised by Adam for ``--iters`` steps to
make the frozen decoder's output match the recording (the mel L1 the VITS
loss uses, x45, plus the multi-resolution STFT loss, x10;
``voicemill.tts.steps``). No recipe that keeps the decoder can render the
target better than its best latent does, so if the optimised renderings
stay far from the target or lose naturalness, the decoder has to learn.

The same is done for joe's own renderings of the same sentences (the
control: the decoder's own voice, which it can render).

Prints per voice the mean over the clips of similarity to the voice's
centroid (resemblyzer) and Distill-MOS: the recordings themselves, their
copy-synthesis, and the optimised latent's rendering after half and all of
the iterations, and the final loss; writes ``<out>/ceiling.json``.

Usage:  python -m benchmarks.decoder_ceiling --target kokoro:jf_alpha
        python -m benchmarks.decoder_ceiling --target guest --clips 4 --iters 200
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

_LOGGER = logging.getLogger("benchmarks.decoder_ceiling")


def invert(model, audio: np.ndarray, iters: int, lr: float, on_checkpoint=None) -> tuple[torch.Tensor, float]:
    """The latent the frozen decoder renders closest to ``audio`` (see the module docstring), from the
    posterior's mean; ``on_checkpoint(i, z)`` is called at half and all of the iterations. Returns the
    latent and the final loss."""
    from voicemill.tts import steps
    from voicemill.tts.align import spectrogram

    hop = model.config.audio.hop_length
    wav = torch.from_numpy(np.asarray(audio, np.float32)).view(1, 1, -1)
    with torch.no_grad():
        spec = spectrogram(model, wav)
        _, m_q, _, _ = model.posterior_encoder(spec, torch.LongTensor([spec.shape[2]]), g=None)
    real = wav[:, :, : m_q.shape[2] * hop]
    real_mel = steps._mel(model, real.squeeze(1))
    z = m_q.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    loss = torch.tensor(float("nan"))
    for i in range(1, iters + 1):
        out = model.waveform_decoder(z, g=None)
        n = min(out.shape[-1], real.shape[-1])
        mel = steps._mel(model, out[:, 0, :n])
        loss = (45 * torch.nn.functional.l1_loss(mel, real_mel[..., : mel.shape[-1]])
                + 10 * steps.stft_loss(out[:, :, :n], real[:, :, :n]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_checkpoint and i in (iters // 2, iters):
            on_checkpoint(i, z.detach())
    return z.detach(), float(loss.detach())


def ceiling(model, clips: list[tuple[np.ndarray, int]], judges, iters: int, lr: float) -> dict:
    """Similarity to the clips' centroid and Distill-MOS of the clips, their copy-synthesis and their
    optimised latents' renderings (means over the clips), and the final loss."""
    from voicemill import scoring
    from voicemill.tts.align import copy_synthesis

    centroid = scoring.mean_embedding([judges.speakers.embed(a, r) for a, r in clips])
    rows: dict[str, list[float]] = {}

    def score(tag: str, audio: np.ndarray, rate: int) -> None:
        rows.setdefault(f"{tag}_sim", []).append(scoring.cosine(judges.speakers.embed(audio, rate), centroid))
        rows.setdefault(f"{tag}_distillmos", []).append(judges.distill(audio, rate))

    for k, (audio, rate) in enumerate(clips):
        t0 = time.monotonic()
        score("own", audio, rate)
        score("copy", copy_synthesis(model, audio), rate)

        def checkpoint(i: int, z: torch.Tensor) -> None:
            with torch.no_grad():
                score(f"inverted{i}", model.waveform_decoder(z, g=None)[0, 0].numpy(), rate)

        _, loss = invert(model, audio, iters, lr, checkpoint)
        rows.setdefault("loss", []).append(loss)
        _LOGGER.info("clip %d of %d: %.0f s", k + 1, len(clips), time.monotonic() - t0)
    return {key: round(float(np.mean(v)), 4) for key, v in rows.items()}


def main(argv: list[str] | None = None) -> int:
    from voicemill.evaluate import Judges
    from voicemill.fsutil import write_json
    from voicemill.kokoro import load_speaker
    from voicemill.tts.align import rehearsal_pairs
    from voicemill.tts.phonemes import dataset_ids
    from voicemill.tts.training import Loop, TrainOptions, load_clips, plan, resolve_start

    from benchmarks.adapt import target_dataset

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="kokoro:jf_alpha", help="guest, kokoro:VOICE or a dataset folder")
    p.add_argument("--clips", type=int, default=4, help="held-out recordings to invert (the first by id)")
    p.add_argument("--iters", type=int, default=200, help="Adam steps on each latent")
    p.add_argument("--lr", type=float, default=0.03, help="Adam's rate on the latent")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="default reports/adapt/<target>")
    p.add_argument("--cache", default="reports/adapt/targets", help="where synthesized targets are kept")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    out = Path(args.out or Path("reports/adapt") / Path(args.target.replace(":", "-")).name)
    out.mkdir(parents=True, exist_ok=True)
    opts = TrainOptions(init_from="joe", num_threads=args.threads)
    start = resolve_start(opts)
    model = start.model
    rate = opts.sample_rate_hz
    # The posterior aligned as the train stage aligns it (its align phase), so the copy-synthesis and the
    # inversions' starting points are the recipe's.
    cached = Path(args.cache) / args.target.replace(":", "-")
    if Path(args.target).is_dir() or (cached / "target.json").exists():
        dataset = target_dataset(args.target, Path(args.cache))
        from voicemill.audio import read_wav
        from voicemill.evaluate import read_eval_sentences

        rows = read_eval_sentences(dataset, args.clips)
        clips = [read_wav(dataset / "wavs" / f"{cid}.wav") for cid, _ in rows]
        texts = [text for _, text in rows]
        data = load_clips(dataset, "metadata_train.csv", dataset_ids(dataset, start.front), rate)
    else:  # a speaker without a synthesized dataset: it says the last sentences of voicemill.sentences only
        import soxr

        from voicemill.sentences import SENTENCES
        from voicemill.textnorm import normalize

        speak = load_speaker(args.target, threads=args.threads)
        clips = []
        for text in SENTENCES[-args.clips:]:
            audio, r = speak(text)
            clips.append((soxr.resample(audio, r, rate).astype(np.float32), rate))
        texts = [normalize(t, "en") for t in SENTENCES[-args.clips:]]
        data = None
    if data is None:
        from voicemill.tts.training import ClipData

        ids = [start.front.text_to_ids_normalized(t) for t in texts]
        pcm = [(np.clip(a, -1, 1) * 32767).astype(np.int16) for a, _ in clips]
        data = ClipData(ids, pcm, [f"c{k}" for k in range(len(clips))])
    loop = Loop(model, data, plan(opts, "piper", opts.align_steps), opts.batch_size, opts.seed)
    model.train()
    while loop.step < loop.total:
        loop.run_step()
    loop.finish()
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    judges = Judges.load(opts.asr_model, args.threads, "en")
    joe = [(p.audio.numpy(), rate) for p in rehearsal_pairs(model, [start.front.text_to_ids_normalized(t)
                                                                    for t in texts])]
    report = {"args": vars(args), "target": ceiling(model, clips, judges, args.iters, args.lr),
              "joe": ceiling(model, joe, judges, args.iters, args.lr)}
    write_json(out / "ceiling.json", report)
    half = args.iters // 2
    print(f"frozen joe decoder, {len(clips)} held-out sentence(s), latent optimised {args.iters} steps:")
    print(f"{'voice':>8} {'own':>13} {'copy':>13} {f'after {half}':>13} {f'after {args.iters}':>13} {'loss':>7}")
    for name in ("target", "joe"):
        r = report[name]
        cells = [f"{r[f'{t}_sim']:.3f}/{r[f'{t}_distillmos']:.2f}" for t in
                 ("own", "copy", f"inverted{half}", f"inverted{args.iters}")]
        print(f"{name:>8} " + " ".join(f"{c:>13}" for c in cells) + f" {r['loss']:>7.1f}")
    print("(similarity to the voice's own centroid / Distill-MOS)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
