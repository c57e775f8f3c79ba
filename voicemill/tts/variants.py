"""Smaller exports of a voice: fp16 and int8 ONNX files beside the fp32 one, measured against it, one picked.

Each variant is ``<voice>.<name>.onnx`` with its own ``<voice>.<name>.onnx.json``,
a copy of the voice's JSON (its ``voicemill`` section adds ``"variant": name``),
so Piper's runtime loads it alone. The fp32 voice's JSON names them in its
``voicemill`` section, relative to itself: ``"variants": {"fp16":
"voice.fp16.onnx", "int8": "voice.int8.onnx"}`` and ``"default_variant"``.

- ``fp16``: weights and activations in half precision, float32 inputs and
  output (:func:`write_fp16`); about half the size.
- ``int8``: weight-only dynamic quantization of the convolutions outside the
  waveform decoder (:func:`write_int8`); about a third of the size.

Every variant, fp32 included, speaks :data:`SENTENCES` with the noise off
(noise_scale 0, noise_w 0: the same input gives the same output), and is
measured (:func:`measure`):

- ``size_mb`` and ``size_vs_fp32``;
- ``rtf``: compute seconds per audio second in ONNX Runtime on the CPU, best
  of a few rounds; the variants take turns within each round, so a busy
  machine slows all alike;
- ``wer``: corpus WER of an ASR round trip (``evaluate.asr_model``, as the
  evaluate stage scores), both sides normalised;
- ``distillmos``: mean Distill-MOS (1-5);
- against the fp32 rendering of the same sentence (noise off), means over the
  sentences (:func:`voicemill.scoring.intrusive`): ``mel_distance_db``
  (0 for fp32), and on the rendering put on fp32's time line (durations may
  differ by a frame) ``pesq`` (wide band; fp32 against itself 4.64) and
  ``stoi`` (1 for fp32).

The default (:func:`choose_default`) is the fastest variant with no
measurable loss against fp32: WER at most ``export.max_wer_increase`` higher,
Distill-MOS at most ``export.max_mos_drop`` lower, mel distance at most
``export.max_mel_distance_db``, PESQ at least ``export.min_pesq``, STOI at
least ``export.min_stoi``. fp32 always qualifies; a variant that does
not gets its reasons in ``rejected``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicemill.errors import VoicemillError
from voicemill.fsutil import atomic_path, write_json
from voicemill.params import defaults_from
from voicemill.scoring import intrusive, mel_distance_db  # noqa: F401 - mel_distance_db: one of the measures

_LOGGER = logging.getLogger(__name__)

NAMES = ("fp16", "int8")

#: What every variant speaks for the measurements: export's check sentences (voicemill.tts.export) and five
#: more, short and long, with numbers, a question and a list, so that each measure averages over some variety.
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "On 3 May 2024 the fare rose to $12.50.",
    "A voice exported to ONNX must say the same thing as the original.",
    "Welcome back to the morning show.",
    "Could you tell me where the nearest train station is?",
    "She bought apples, pears, two loaves of bread and a small jar of honey.",
    "The meeting moved to Thursday at half past nine, in the room upstairs.",
    "Thank you for listening, and see you next week.",
)

#: Node-name scopes of the waveform decoder (HiFi-GAN): Piper's exports call it dec, coqui's waveform_decoder.
DECODER_SCOPES = ("/dec/", "/waveform_decoder/")


@dataclass(frozen=True)
@defaults_from("export", "evaluate")
class VariantOptions:
    variants: list[str]
    max_wer_increase: float
    max_mos_drop: float
    max_mel_distance_db: float
    min_pesq: float
    min_stoi: float
    num_threads: int
    asr_model: str


def variant_path(onnx_path: Path, name: str) -> Path:
    """``models/voice.onnx`` -> ``models/voice.<name>.onnx``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.{name}{onnx_path.suffix}")


def write_fp16(src: Path, dst: Path) -> None:
    """Half-precision weights and activations; inputs and output stay float32 (Piper feeds float32 scales).

    onnxruntime's copy of the converter, not onnxconverter-common 1.16's, because on a VITS graph the latter
    writes models ONNX Runtime refuses to load, and its op_block_list does not mend them: it leaves
    ``Cast(to=float)`` nodes as they are while typing their outputs float16 (blocking Cast makes its
    topological sort run for more than 15 minutes), types RandomNormalLike's output float16 but not its
    ``dtype``, and leaves a float32 initializer shared by a blocked Range and an unblocked Equal float32.
    onnxruntime's copy (the same function and block list: Range and CumSum, which count frames, stay float32;
    float16 counts exactly only to 2048) casts those nodes and shared initializers itself.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet_logging():  # it logs each shared initializer it kept float32, with its nodes in full
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))


@contextlib.contextmanager
def _quiet_logging():
    """Hold back warnings and below while the ONNX tools run: onnxruntime.quantization logs a root-logger
    warning for each integer tensor it does not quantize (hundreds), the fp16 converter whole node protos."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def write_int8(src: Path, dst: Path) -> None:
    """Weight-only int8: ``quantize_dynamic`` of the Conv weights outside the waveform decoder, as uint8.

    Measured on the demo voice (8 sentences, noise off, 2 threads, an AVX-512 VNNI CPU; fp32: RTF 0.044):
    - MatMul: the graph's MatMuls multiply activations (attention), not weights: nothing to quantize;
    - every Conv (ConvInteger): 0.31 of the size, but Distill-MOS 0.46 lower and a mel distance of 6.2 dB:
      the decoder makes the waveform and does not survive 8-bit weights; with int8 weights also 2.7x slower;
    - Conv outside the decoder: the text encoder, duration predictor and flow hold 87% of the weights, so
      0.35 of the size; Distill-MOS and WER as fp32's, 1.1 dB from it. uint8 weights run at fp32's speed
      (RTF 0.041), int8 weights slower (0.067): this CPU's ConvInteger kernel is faster for uint8 x uint8.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src), load_external_data=False)
    decoder = [n.name for n in model.graph.node if n.name.startswith(DECODER_SCOPES)]
    if not decoder:
        _LOGGER.warning("%s: no node under %s; quantizing every Conv, the decoder's too (it loses quality)", src,
                        " or ".join(DECODER_SCOPES))
    with atomic_path(dst) as tmp, _quiet_logging():
        quantize_dynamic(str(src), str(tmp), op_types_to_quantize=["Conv"], weight_type=QuantType.QUInt8,
                         nodes_to_exclude=decoder)


WRITERS = {"fp16": write_fp16, "int8": write_int8}


def session(onnx_path: Path, num_threads: int):
    """An ONNX Runtime CPU session with ``num_threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.log_severity_level = 3  # fp16 graphs warn about every node constant folding skips
    try:
        return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ONNX Runtime's own errors: the file is not a model it runs
        raise VoicemillError(f"{onnx_path}: ONNX Runtime cannot load it: {e!s:.300}") from e


def speak(sess, ids: list[int], length_scale: float, noise_scale: float = 0.0, noise_w: float = 0.0) -> np.ndarray:
    """Piper ids -> float32 samples (noise off unless the two noise scales are given)."""
    (out,) = sess.run(["output"], {"input": np.array([ids], dtype=np.int64),
                                   "input_lengths": np.array([len(ids)], dtype=np.int64),
                                   "scales": np.array([noise_scale, length_scale, noise_w], dtype=np.float32)})
    return out.reshape(-1).astype(np.float32)


def check_piper_loads(onnx_path: Path, json_path: Path) -> None:
    """``PiperVoice.load`` reads the pair and speaks a sentence, or a VoicemillError names the file."""
    from piper import PiperVoice, SynthesisConfig

    try:
        voice = PiperVoice.load(onnx_path, config_path=json_path)
        samples = sum(c.audio_float_array.size for c in voice.synthesize(
            SENTENCES[0], syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)))
    except Exception as e:  # noqa: BLE001 - any failure here means Piper cannot use the variant
        raise VoicemillError(f"{onnx_path}: Piper's runtime cannot load or run it: {e!s:.300}") from e
    if samples == 0:
        raise VoicemillError(f"{onnx_path}: Piper's runtime produced no audio for {SENTENCES[0]!r}")


def write_variants(onnx_path: Path, names: list[str]) -> dict[str, Path]:
    """Write each named variant of ``onnx_path`` and its JSON beside it; each must load and speak in Piper's
    runtime (ONNX Runtime on the CPU). Variants not named are removed, so the folder holds no stale one."""
    onnx_path = Path(onnx_path)
    config = json.loads(Path(f"{onnx_path}.json").read_text(encoding="utf-8"))
    ours = config.setdefault("voicemill", {})
    for key in ("variants", "default_variant"):  # a variant is one voice: it names no others
        ours.pop(key, None)
    paths = {}
    for name in NAMES:
        path = variant_path(onnx_path, name)
        if name not in names:
            for stale in (path, Path(f"{path}.json")):
                stale.unlink(missing_ok=True)
            continue
        t0 = time.monotonic()
        WRITERS[name](onnx_path, path)
        own = copy.deepcopy(config)
        own["voicemill"]["variant"] = name
        write_json(Path(f"{path}.json"), own)
        check_piper_loads(path, Path(f"{path}.json"))
        _LOGGER.info("%s: %s, %.1f MB (%.1fs)", name, path, path.stat().st_size / 2**20, time.monotonic() - t0)
        paths[name] = path
    return paths


# --------------------------------------------------------------- measuring


def measure(paths: dict[str, Path], config: dict, asr_model: str, num_threads: int, sentences=SENTENCES,
            rounds: int = 3) -> dict[str, dict]:
    """Measure each voice file of ``paths`` (``fp32`` first, the reference) on ``sentences``; see the module
    docstring for the keys. ``config`` is the voice's JSON (ids, sample rate, length scale, language)."""
    from voicemill import asr, scoring
    from voicemill.tts.phonemes import FrontEnd

    if next(iter(paths)) != "fp32":
        raise ValueError("measure: the first voice must be fp32, the reference")
    language = (config.get("voicemill") or {}).get("language") or config["language"]["family"]
    front = FrontEnd(language=language, voice=config["espeak"]["voice"], id_map=config["phoneme_id_map"])
    rate = int(config["audio"]["sample_rate"])
    length = float(config["inference"]["length_scale"])
    ids = [front.text_to_ids(text) for text in sentences]
    sessions = {name: session(path, num_threads) for name, path in paths.items()}

    audio = {name: [speak(s, i, length) for i in ids] for name, s in sessions.items()}  # also warms each up
    rtf = {name: float("inf") for name in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            t0 = time.perf_counter()
            seconds = sum(speak(s, i, length).size for i in ids) / rate
            rtf[name] = min(rtf[name], (time.perf_counter() - t0) / max(seconds, 1e-9))

    # A clip that is empty or not finite (an fp16 overflow, say) is heard as nothing, scores the lowest MOS and
    # has no mel distance (NaN, which choose_default rejects).
    usable = {name: [a.size > rate // 10 and bool(np.isfinite(a).all()) for a in clips]
              for name, clips in audio.items()}
    recognizer = asr.load_model(asr_model, device="cpu", cpu_threads=num_threads)
    distill = scoring.DistillMOS()
    fp32_mb = paths["fp32"].stat().st_size / 2**20
    out = {}
    for name, clips in audio.items():
        ok = usable[name]
        heard = [asr.transcribe(recognizer, scoring.to_16k(a, rate), language)["text"] if good else ""
                 for a, good in zip(clips, ok)]
        counts = [scoring.error_counts(text, hyp, language) for text, hyp in zip(sentences, heard)]
        nan = {"mel_distance_db": float("nan"), "pesq": float("nan"), "stoi": float("nan")}
        against = [intrusive(ref, a, rate) if good and good_ref else nan
                   for ref, a, good, good_ref in zip(audio["fp32"], clips, ok, usable["fp32"])]
        size_mb = paths[name].stat().st_size / 2**20
        out[name] = {
            "file": paths[name].name,
            "size_mb": size_mb,
            "size_vs_fp32": size_mb / fp32_mb,
            "rtf": rtf[name],
            "wer": sum(c["word_errors"] for c in counts) / max(1, sum(c["words"] for c in counts)),
            "distillmos": float(np.mean([distill(a, rate) if good else 1.0 for a, good in zip(clips, ok)])),
            **{k: float(np.mean([m[k] for m in against])) for k in ("mel_distance_db", "pesq", "stoi")},
            "unusable": ok.count(False),
        }
    return out


def choose_default(measured: dict[str, dict], max_wer_increase: float, max_mos_drop: float,
                   max_mel_distance_db: float, min_pesq: float = 1.0, min_stoi: float = 0.0
                   ) -> tuple[str, dict[str, str]]:
    """The fastest variant with no measurable loss against fp32, and the reason each other one failed.

    A measure that is not a number (NaN) fails its test.
    """
    ref = measured["fp32"]
    rejected = {}
    for name, m in measured.items():
        if name == "fp32":
            continue
        reasons = [f"{m['unusable']} sentence(s) without usable audio"] if m.get("unusable") else []
        if not m["wer"] - ref["wer"] <= max_wer_increase:
            reasons.append(f"WER {m['wer']:.3f} vs fp32 {ref['wer']:.3f} (+{m['wer'] - ref['wer']:.3f}) > "
                           f"export.max_wer_increase {max_wer_increase}")
        if not ref["distillmos"] - m["distillmos"] <= max_mos_drop:
            reasons.append(f"Distill-MOS {m['distillmos']:.2f} vs fp32 {ref['distillmos']:.2f} "
                           f"(-{ref['distillmos'] - m['distillmos']:.2f}) > export.max_mos_drop {max_mos_drop}")
        if not m["mel_distance_db"] <= max_mel_distance_db:
            reasons.append(f"mel distance {m['mel_distance_db']:.2f} dB > export.max_mel_distance_db "
                           f"{max_mel_distance_db}")
        if not m.get("pesq", 4.64) >= min_pesq:
            reasons.append(f"PESQ {m['pesq']:.2f} < export.min_pesq {min_pesq}")
        if not m.get("stoi", 1.0) >= min_stoi:
            reasons.append(f"STOI {m['stoi']:.3f} < export.min_stoi {min_stoi}")
        if reasons:
            rejected[name] = "; ".join(reasons)
    accepted = [name for name in measured if name not in rejected]
    return min(accepted, key=lambda name: measured[name]["rtf"]), rejected


def export_variants(onnx_path: Path, opts: VariantOptions = VariantOptions(), sentences=SENTENCES,
                    rounds: int = 3) -> dict:
    """Write, check and measure the variants of an exported voice, pick the default, and name them in the
    voice's JSON; returns ``{"variants": {name: measures}, "default_variant": name}`` (no variants: fp32,
    unmeasured)."""
    onnx_path = Path(onnx_path)
    json_path = Path(f"{onnx_path}.json")
    paths = {"fp32": onnx_path, **write_variants(onnx_path, opts.variants)}
    config = json.loads(json_path.read_text(encoding="utf-8"))
    measured, default = {}, "fp32"
    if len(paths) > 1:
        measured = measure(paths, config, opts.asr_model, opts.num_threads, sentences, rounds)
        default, rejected = choose_default(measured, opts.max_wer_increase, opts.max_mos_drop,
                                           opts.max_mel_distance_db, opts.min_pesq, opts.min_stoi)
        for name, m in measured.items():
            m["accepted"] = name not in rejected
            if name in rejected:
                m["rejected"] = rejected[name]
                _LOGGER.warning("%s is no candidate for the default: %s", name, rejected[name])
    ours = config.setdefault("voicemill", {})
    ours["variants"] = {name: path.name for name, path in paths.items() if name != "fp32"}
    ours["default_variant"] = default
    write_json(json_path, config)
    return {"variants": measured, "default_variant": default}
