"""Export a trained VITS voice to ONNX and prove the ONNX voice matches PyTorch.

The voice ships as ``voice.onnx`` plus ``voice.onnx.json``, which tells a
runtime how to feed it: the sample rate, the symbol table (text is lowercased,
then each character maps to its id, with a blank id between characters when
``add_blank`` is true), and the default scales.

ONNX inputs:  input (int64 [1, n] symbol ids), input_lengths (int64 [1]),
              scales (float32 [3]: noise_scale, length_scale, noise_scale_dp)
ONNX output:  output (float32 [1, 1, samples]) in [-1, 1] at sample_rate
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path

import numpy as np
import torch

from voicemill.errors import VoicemillError
from voicemill.fsutil import atomic_path, write_json
from voicemill.tts import load_voice, synthesize, text_to_ids

_LOGGER = logging.getLogger(__name__)

CHECK_SENTENCES = (
    "the quick brown fox jumps over the lazy dog.",
    "a voice exported to onnx must say the same thing as the original.",
)


def export_onnx(voice_dir: Path, onnx_path: Path, max_abs_diff: float, num_threads: int = 2) -> dict:
    """Export, then compare ONNX and PyTorch on fixed sentences with the noise off."""
    import onnxruntime as ort

    torch.set_num_threads(num_threads)
    model, config = load_voice(voice_dir)
    with atomic_path(onnx_path) as tmp:
        # export_onnx prints the whole graph even with verbose=False on some versions.
        with contextlib.redirect_stdout(io.StringIO()):
            model.export_onnx(output_path=str(tmp), verbose=False)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    # Noise off on both sides: VITS samples its latent, so only then are outputs comparable.
    scales = np.array([0.0, float(model.length_scale), 0.0], dtype=np.float32)
    diffs, onnx_s, audio_s = [], 0.0, 0.0
    for text in CHECK_SENTENCES:
        ids = np.array([text_to_ids(model, text)], dtype=np.int64)
        t0 = time.perf_counter()
        (onnx_out,) = session.run(["output"], {"input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
                                               "scales": scales})
        onnx_s += time.perf_counter() - t0
        onnx_wav = onnx_out.reshape(-1)
        audio_s += onnx_wav.size / config.audio.sample_rate
        torch_wav = synthesize(model, text, noise_scale=0.0, noise_scale_dp=0.0).reshape(-1)
        if torch_wav.size != onnx_wav.size:
            raise VoicemillError(f"ONNX and PyTorch outputs differ in length ({onnx_wav.size} vs {torch_wav.size}) "
                               f"for {text!r}: the export is broken")
        diffs.append(float(np.max(np.abs(torch_wav - onnx_wav))) if onnx_wav.size else 0.0)
    worst = max(diffs)
    if worst > max_abs_diff:
        raise VoicemillError(f"ONNX output differs from PyTorch by {worst:.4f} > export.max_abs_diff={max_abs_diff}")

    chars = config.characters
    voice_config = {
        "format": "voicemill-vits-onnx/1",
        "sample_rate": int(config.audio.sample_rate),
        "text_cleaner": config.text_cleaner,
        "use_phonemes": bool(config.use_phonemes),
        "add_blank": bool(config.add_blank),
        "blank_id": model.tokenizer.characters.blank_id if config.add_blank else None,
        "pad_id": model.tokenizer.characters.pad_id,
        "symbols": list(model.tokenizer.characters.vocab),
        "characters": chars.characters if chars else None,
        "punctuations": chars.punctuations if chars else None,
        "scales": {"noise_scale": float(config.model_args.inference_noise_scale),
                   "length_scale": float(config.model_args.length_scale),
                   "noise_scale_dp": float(config.model_args.inference_noise_scale_dp)},
        "inputs": ["input", "input_lengths", "scales"],
        "output": "output",
    }
    write_json(Path(str(onnx_path) + ".json"), voice_config)
    return {"max_abs_diff": worst, "rtf_onnx": onnx_s / max(audio_s, 1e-9),
            "size_mb": onnx_path.stat().st_size / 2**20, "symbols": len(voice_config["symbols"])}
