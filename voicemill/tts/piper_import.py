"""Start a coqui-tts VITS voice from the weights of a Piper voice.

No pretrained coqui VITS checkpoint can be downloaded on our machines, but
every Piper voice (``voice.onnx`` + ``voice.onnx.json``) is a VITS generator
whose ONNX file carries its weights as initializers. This module names those
initializers after coqui-tts 0.28 ``Vits`` parameters, loads them into a model
of the matching size, and proves the result by running both on the same
phoneme ids with the noise off.

Sizes, from Piper's training code (``piper/train/vits/config.py`` and
``lightning.py`` in piper-tts 1.8, whose defaults are the medium model; the
``--quality`` switch of rhasspy/piper's ``piper_train/__main__.py``):

- medium: inter = hidden = 192 channels, FFN 768, 2 heads, 6 layers, the
  "low_quality" HiFi-GAN (resblock "2", 256 channels, upsampling 8*8*4).
- low: no size of its own (the trainer's choices are x-low, medium and
  high); a "low" voice is the medium model trained at 16 kHz, so it takes the
  medium args with its own sample rate.
- x_low: inter = hidden = 96, FFN 384, the rest as medium. It does NOT fit
  coqui's ``Vits``: VITS's stochastic duration predictor makes itself as wide
  as its input (``filter_channels = in_channels`` in Piper's
  ``StochasticDurationPredictor``), 96 here, while coqui's ``Vits`` builds it
  192 wide whatever ``hidden_channels`` is, and no ``VitsArgs`` field changes
  that: 109 duration-predictor tensors mismatch (everything else fits). So
  there is no x_low preset; ``preset_for_voice`` says why.
- high: the medium encoder with HiFi-GAN v1 (resblock "1", 512 channels,
  upsampling 8*8*2*2), which is coqui's default decoder.

Checked: medium on the bundled joe voice (audio parity 1.5e-5); high and the
16 kHz "low" on randomly initialised, perturbed Piper generators exported the
way Piper exports (TorchScript exporter, opset 15): every weight placed, audio
parity < 1e-7, the duration predictor's log-durations equal. No released low
or high voice was at hand to try.

How the ONNX initializers map (Piper name -> coqui name):

- ``enc_p.*`` -> ``text_encoder.*``; the text embedding is the initializer
  consumed by ``/enc_p/emb/Gather`` (the exporter named it ``sid``).
- ``dec.*`` -> ``waveform_decoder.*``. Piper removes weight norm before export;
  coqui keeps it on ``ups`` and the resblock convs, through
  ``torch.nn.utils.parametrizations.weight_norm`` (keys
  ``<conv>.parametrizations.weight.original0`` = g and ``.original1`` = v;
  a model on the old API gets ``weight_g``/``weight_v`` instead). A folded
  weight ``w`` becomes ``v = w`` and ``g = ||w||`` over every axis but the
  first (``dim=0``; for a ConvTranspose that axis is the input channels),
  which rebuilds ``w`` exactly.
- ``flow.flows.{2i}.*`` -> ``flow.flows.{i}.*``: Piper counts its ``Flip``
  layers, coqui flips inside each coupling layer. The WaveNet conv weights of
  the flow are anonymous (``onnx::Conv_NNNN``, weight norm folded by the
  exporter); each is named after the Conv node that consumes it
  (``/flow/flows.0/enc/in_layers.2/Conv`` -> ``...in_layers.2.weight``) and
  split into ``g``/``v`` as above.
- ``dp.*`` -> ``duration_predictor.*``; Piper's ``dp.flows`` are
  ``[affine, conv, flip, conv, flip, ...]``, coqui's ``[affine, conv, conv,
  ...]``, so ``dp.flows.{2k-1}`` -> ``flows.{k}``; ``dp.flows.0.m`` ->
  ``flows.0.translation`` and ``flows.0.log_scale = -ln(/dp/flows.0/Exp_output_0)``
  (the exporter folded ``exp(-logs)`` into a constant; torch 2.11's exporter
  folds only ``-logs``, the input of ``/dp/flows.0/Exp``).
- Any other float tensor in the ONNX (a speaker embedding, another
  architecture) is an error rather than a silently partial import.

Not in the ONNX, so left as coqui initialised them (the training-only parts):
the posterior encoder, the discriminator, the duration predictor's posterior
(``duration_predictor.post_*``) and its first conv flow
(``duration_predictor.flows.1``, which VITS skips at inference).

Usage::

    voice = read_piper_voice(onnx_path)
    model = build_vits(PIPER_PRESETS[preset_for_voice(voice)], voice.num_symbols,
                       voice.sample_rate, symbols=voice.symbols)
    report = import_piper_voice(model, onnx_path)   # raises unless parity < 1e-3
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from voicemill.errors import VoicemillError

if TYPE_CHECKING:
    from TTS.tts.models.vits import Vits

_LOGGER = logging.getLogger(__name__)

#: VitsArgs overrides for Piper's "medium" model (also used by "low" voices).
#: ``num_chars`` is not here: it is the voice's ``num_symbols`` (256 for every
#: voice Piper's trainer makes), passed to :func:`build_vits`.
PIPER_MEDIUM_ARGS: dict = {
    "hidden_channels": 192,
    "hidden_channels_ffn_text_encoder": 768,
    "num_heads_text_encoder": 2,
    "num_layers_text_encoder": 6,
    "kernel_size_text_encoder": 3,
    "resblock_type_decoder": "2",
    "resblock_kernel_sizes_decoder": [3, 5, 7],
    "resblock_dilation_sizes_decoder": [[1, 2], [2, 6], [3, 12]],
    "upsample_rates_decoder": [8, 8, 4],
    "upsample_initial_channel_decoder": 256,
    "upsample_kernel_sizes_decoder": [16, 16, 8],
    "use_sdp": True,
}

#: Piper's "high": the medium encoder with HiFi-GAN v1 (coqui's own decoder defaults).
PIPER_HIGH_ARGS: dict = {
    **PIPER_MEDIUM_ARGS,
    "resblock_type_decoder": "1",
    "resblock_kernel_sizes_decoder": [3, 7, 11],
    "resblock_dilation_sizes_decoder": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "upsample_rates_decoder": [8, 8, 2, 2],
    "upsample_initial_channel_decoder": 512,
    "upsample_kernel_sizes_decoder": [16, 16, 4, 4],
}

PIPER_PRESETS: dict[str, dict] = {
    "piper-low": PIPER_MEDIUM_ARGS,  # same model as medium, trained at 16 kHz
    "piper-medium": PIPER_MEDIUM_ARGS,
    "piper-high": PIPER_HIGH_ARGS,
}

# Piper's mel settings (piper/train/vits/config.py, MelAudioConfig); the hop
# is the product of the decoder's upsample rates, which coqui asserts.
_FFT_SIZE = 1024
_WIN_LENGTH = 1024
_NUM_MELS = 80

# Parts of a coqui Vits used only in training (the posterior encoder feeds the
# flow from spectrograms; the discriminator judges the audio): not in a Piper
# ONNX, and not counted as the generator.
_NOT_GENERATOR = ("disc.", "posterior_encoder.")

# Convs that coqui wraps in weight norm (and Piper's ONNX carries folded).
_WEIGHT_NORMED = re.compile(
    r"^(waveform_decoder\.ups\.\d+"
    r"|waveform_decoder\.resblocks\.\d+\.convs\d*\.\d+"
    r"|flow\.flows\.\d+\.enc\.(in_layers|res_skip_layers)\.\d+"
    r"|flow\.flows\.\d+\.enc\.cond_layer)\.weight$"
)

_EMBEDDING_NODE = "/enc_p/emb/Gather"
# dp.flows.0 (ElementwiseAffine) in reverse computes (x - m) * exp(-logs); the
# exporter folds logs into the input of one of these two nodes.
_DP_AFFINE_MUL = "/dp/flows.0/Mul"
_DP_AFFINE_EXP = "/dp/flows.0/Exp"
_CONV_OPS = ("Conv", "ConvTranspose")


@dataclass(frozen=True)
class PiperVoiceFile:
    """A Piper voice on disk: the ONNX model and what its JSON config says."""

    onnx_path: Path
    json_path: Path
    config: dict
    sample_rate: int
    num_symbols: int
    num_speakers: int
    phoneme_id_map: dict[str, list[int]]
    espeak_voice: str | None
    quality: str | None

    @property
    def symbols(self) -> list[str]:
        """One symbol per id, in id order; ids no phoneme uses get a private-use placeholder.

        A coqui tokenizer built from this list gives each Piper phoneme its
        Piper id, so coqui's embedding rows stay in Piper's order.
        """
        return symbol_table(self.phoneme_id_map, self.num_symbols, str(self.json_path))


def symbol_table(id_map: dict, num_symbols: int, source: str = "phoneme_id_map") -> list[str]:
    """One character per id for coqui's tokenizer, in id order; ids no phoneme uses get private-use placeholders."""
    table = [chr(0xE000 + i) for i in range(num_symbols)]
    for symbol, ids in id_map.items():
        if len(symbol) != 1:
            # coqui's character table is a string: one code point per symbol.
            _LOGGER.warning("%s: phoneme %r is not one character; its ids %s get placeholders", source, symbol, ids)
            continue
        for i in ids:
            table[i] = symbol
    return table


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_piper_voice` placed in the coqui model.

    "Generator" is the model less the posterior encoder and the discriminator:
    the part that turns ids into audio, which is what a Piper voice carries.
    """

    onnx_path: Path
    filled_tensors: int
    generator_tensors: int
    filled_parameters: int
    generator_parameters: int
    #: parameter count per model part left at coqui's initialisation
    untrained: dict[str, int] = field(default_factory=dict)
    #: max |coqui - ONNX| on the parity ids, noise off
    parity_max_abs_diff: float = float("nan")

    @property
    def filled_share(self) -> float:
        """Share of the generator's parameters taken from the ONNX."""
        return self.filled_parameters / self.generator_parameters if self.generator_parameters else 0.0


def read_piper_voice(onnx_path: Path, json_path: Path | None = None) -> PiperVoiceFile:
    """Read a Piper voice's JSON config (default: ``<onnx_path>.json``, Piper's convention)."""
    onnx_path = Path(onnx_path)
    json_path = Path(json_path) if json_path is not None else onnx_path.with_name(onnx_path.name + ".json")
    if not onnx_path.exists():
        raise VoicemillError(f"{onnx_path}: Piper voice model not found")
    if not json_path.exists():
        raise VoicemillError(f"{json_path}: Piper voice config not found; a voice ships as voice.onnx plus "
                             "voice.onnx.json, or pass json_path")
    try:
        config = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VoicemillError(f"{json_path}: not a JSON Piper voice config ({e})") from e
    if not isinstance(config, dict):
        raise VoicemillError(f"{json_path}: expected a JSON object, got {type(config).__name__}")

    def need(*keys: str):
        value = config
        for depth, key in enumerate(keys):
            if not isinstance(value, dict) or key not in value:
                raise VoicemillError(f"{json_path}: missing '{'.'.join(keys[:depth + 1])}', which every Piper "
                                     "voice config has; is this the voice's .onnx.json?")
            value = value[key]
        return value

    try:
        sample_rate = int(need("audio", "sample_rate"))
        num_symbols = int(need("num_symbols"))
        num_speakers = int(config.get("num_speakers", 1))
    except (TypeError, ValueError) as e:
        raise VoicemillError(f"{json_path}: audio.sample_rate, num_symbols and num_speakers must be integers "
                             f"({e})") from e
    id_map = need("phoneme_id_map")
    if not isinstance(id_map, dict) or not id_map:
        raise VoicemillError(f"{json_path}: 'phoneme_id_map' must map phonemes to lists of ids")
    phoneme_id_map = {}
    for symbol, ids in id_map.items():
        ids = [ids] if isinstance(ids, int) else list(ids)
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < num_symbols]
        if bad:
            raise VoicemillError(f"{json_path}: phoneme {symbol!r} has ids {bad} outside 0..{num_symbols - 1} "
                                 "(num_symbols)")
        phoneme_id_map[symbol] = ids
    espeak_voice = None
    if config.get("phoneme_type", "espeak") == "espeak":
        espeak_voice = str(need("espeak", "voice"))
    quality = config["audio"].get("quality")
    return PiperVoiceFile(onnx_path=onnx_path, json_path=json_path, config=config, sample_rate=sample_rate,
                          num_symbols=num_symbols, num_speakers=num_speakers, phoneme_id_map=phoneme_id_map,
                          espeak_voice=espeak_voice, quality=quality)


def preset_for_voice(voice: PiperVoiceFile) -> str:
    """The ``PIPER_PRESETS`` key for a voice, from ``audio.quality`` in its JSON."""
    if not voice.quality:
        raise VoicemillError(f"{voice.json_path}: no 'audio.quality'; choose one of {', '.join(PIPER_PRESETS)} "
                             "yourself")
    name = "piper-" + str(voice.quality).replace("-", "_")
    if name == "piper-x_low":
        raise VoicemillError(f"{voice.json_path}: an x_low voice's duration predictor is 96 channels wide and "
                             "coqui's Vits always builds it 192 wide; only low, medium and high voices import")
    if name not in PIPER_PRESETS:
        raise VoicemillError(f"{voice.json_path}: audio.quality={voice.quality!r} has no preset; known: "
                             f"{', '.join(PIPER_PRESETS)}")
    return name


def build_vits(preset_args: dict, num_chars: int, sample_rate: int, symbols: Sequence[str] | None = None) -> "Vits":
    """A coqui ``Vits`` (with discriminator, for training) shaped like a Piper voice.

    ``symbols`` (one per id, e.g. :attr:`PiperVoiceFile.symbols`) becomes the
    coqui tokenizer's table, so coqui id i is Piper id i; without it the table
    is placeholders. Either way the embedding has ``num_chars`` rows: coqui
    sizes it from the tokenizer, not from ``VitsArgs.num_chars``. Ids are
    expected with Piper's pads already in them, so coqui's ``add_blank`` is off.
    """
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    symbols = list(symbols) if symbols is not None else [chr(0xE000 + i) for i in range(num_chars)]
    if len(symbols) != num_chars or any(len(s) != 1 for s in symbols):
        raise ValueError(f"symbols must be {num_chars} single characters, got {len(symbols)}")
    characters = CharactersConfig(
        # Graphemes reads is_sorted from the config (VitsCharacters always sorts),
        # which keeps the table in id order.
        characters_class="TTS.tts.utils.text.characters.Graphemes",
        pad=symbols[0],
        characters="".join(symbols[1:]),
        punctuations="",
        eos=None,
        bos=None,
        blank=None,
        is_unique=False,
        is_sorted=False,
    )
    audio = BaseAudioConfig(sample_rate=sample_rate, fft_size=_FFT_SIZE, win_length=_WIN_LENGTH,
                            hop_length=math.prod(preset_args.get("upsample_rates_decoder", [8, 8, 2, 2])),
                            num_mels=_NUM_MELS, mel_fmin=0, mel_fmax=None)
    config = VitsConfig(model_args=VitsArgs(**{**preset_args, "num_chars": num_chars}), audio=audio,
                        characters=characters, add_blank=False, use_phonemes=False, text_cleaner=None)
    model = Vits(config)
    if model.args.num_chars != num_chars:  # coqui derives it from the tokenizer; make sure it took
        raise VoicemillError(f"coqui built an embedding of {model.args.num_chars} symbols, expected {num_chars}")
    return model


def _onnx_initializers(onnx_path: Path) -> tuple[dict[str, np.ndarray], dict[str, list[tuple[str, str, int]]]]:
    """Initializers by name, and for each the nodes that read it: (op, node name, input index)."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as e:  # onnx raises DecodeError, OSError, ... for a bad file
        raise VoicemillError(f"{onnx_path}: cannot read as ONNX ({e})") from e
    consumers: dict[str, list[tuple[str, str, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node.op_type, node.name, index))
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}, consumers


def _coqui_name(piper_name: str) -> str | None:
    """Coqui's name for a Piper generator parameter; None for Piper's parameter-free Flip layers."""
    if piper_name.startswith("enc_p."):
        return "text_encoder." + piper_name[len("enc_p."):]
    if piper_name.startswith("dec."):
        return "waveform_decoder." + piper_name[len("dec."):]
    if m := re.match(r"flow\.flows\.(\d+)\.(.+)$", piper_name):
        index = int(m.group(1))
        return f"flow.flows.{index // 2}.{m.group(2)}" if index % 2 == 0 else None
    if piper_name == "dp.flows.0.m":
        return "duration_predictor.flows.0.translation"
    if m := re.match(r"dp\.flows\.(\d+)\.(.+)$", piper_name):
        index = int(m.group(1))
        return f"duration_predictor.flows.{(index + 1) // 2}.{m.group(2)}" if index % 2 == 1 else None
    if piper_name.startswith("dp."):
        return "duration_predictor." + piper_name[len("dp."):]
    return None


def _weight_norm_split(key: str, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """``v = w``, ``g = ||w||`` over all axes but the first: torch's weight_norm(dim=0) rebuilds ``w``."""
    prefix = key[: -len(".weight")]
    g = torch.linalg.vector_norm(w, dim=tuple(range(1, w.dim())), keepdim=True)
    return {f"{prefix}.parametrizations.weight.original0": g, f"{prefix}.parametrizations.weight.original1": w}


def _mapped_state(onnx_path: Path) -> dict[str, tuple[str, torch.Tensor]]:
    """Coqui name -> (ONNX initializer name, tensor) for every weight of the Piper generator."""
    arrays, consumers = _onnx_initializers(onnx_path)
    mapped: dict[str, tuple[str, torch.Tensor]] = {}
    unmapped: list[str] = []
    for name, array in arrays.items():
        uses = consumers.get(name, [])
        nodes = {node for _, node, _ in uses}
        tensor = torch.from_numpy(np.array(array))
        key: str | None = None
        if _EMBEDDING_NODE in nodes:
            key = "text_encoder.emb.weight"
        elif _DP_AFFINE_MUL in nodes:
            # The exporter folded exp(-logs) of the duration flow's affine layer
            # (Piper's released voices); coqui keeps log_scale.
            key, tensor = "duration_predictor.flows.0.log_scale", -torch.log(tensor)
        elif _DP_AFFINE_EXP in nodes:
            # A newer exporter folds only the negation: this is -logs.
            key, tensor = "duration_predictor.flows.0.log_scale", -tensor
        elif re.match(r"(enc_p|dec|flow|dp)\.", name):
            key = _coqui_name(name)
        elif (conv := next(((node, i) for op, node, i in uses if op in _CONV_OPS and i in (1, 2)), None)) and \
                (m := re.match(r"^/(enc_p|dec|flow|dp)/(.+)/Conv(?:Transpose)?$", conv[0])):
            # An anonymous weight folded by the exporter: name it by the conv that reads it.
            key = _coqui_name(f"{m.group(1)}.{m.group(2).replace('/', '.')}.{'weight' if conv[1] == 1 else 'bias'}")
            name = f"{name} (read by {conv[0]})"
        if key is None:
            # Scalars and integer tensors are graph constants (epsilons, shapes,
            # pads); any other float tensor is a weight this mapping does not
            # know (a speaker embedding, another architecture): fail rather than
            # import part of a voice.
            if array.dtype.kind == "f" and array.size > 1:
                unmapped.append(name)
            continue
        if key in mapped:
            raise VoicemillError(f"{onnx_path}: initializers {mapped[key][0]} and {name} both map to {key}")
        if _WEIGHT_NORMED.match(key):
            for k, t in _weight_norm_split(key, tensor).items():
                mapped[k] = (name, t)
        else:
            mapped[key] = (name, tensor)
    if unmapped:
        raise VoicemillError(f"{onnx_path}: {len(unmapped)} weight(s) with no coqui Vits counterpart: "
                             f"{', '.join(unmapped[:8])}{' ...' if len(unmapped) > 8 else ''}; multi-speaker "
                             "voices and other architectures are not supported")
    if "text_encoder.emb.weight" not in mapped:
        raise VoicemillError(f"{onnx_path}: no text embedding (an initializer read by {_EMBEDDING_NODE}); "
                             "is this a Piper VITS voice?")
    return mapped


def piper_state_dict(onnx_path: Path) -> dict[str, torch.Tensor]:
    """The weights of a Piper voice's ONNX under coqui-tts ``Vits`` names (weight-norm convs as g/v)."""
    return {key: tensor for key, (_, tensor) in _mapped_state(Path(onnx_path)).items()}


def _legacy_weight_norm_keys(state: dict, model_keys: set[str]) -> dict:
    """Rename ``parametrizations.weight.original0/1`` to ``weight_g/weight_v`` for a model using the old API."""
    renamed = {}
    for key, value in state.items():
        old = key.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v")
        renamed[old if key not in model_keys and old in model_keys else key] = value
    return renamed


def _part(key: str) -> str:
    """The model part a parameter belongs to, for the untrained summary."""
    if key.startswith("duration_predictor.post_"):
        return "duration_predictor.post_*"
    if m := re.match(r"(duration_predictor\.flows\.\d+)\.", key):
        return m.group(1)
    return key.split(".", 1)[0]


def default_parity_ids(voice: PiperVoiceFile, num_phonemes: int = 40) -> list[int]:
    """Ids laid out as Piper's ``phonemes_to_ids`` does (``^ _ p _ p _ ... $``), over the voice's first phonemes.

    Language-neutral: no phonemizer is needed to check an import.
    """
    specials = {"_", "^", "$"}
    missing = specials - set(voice.phoneme_id_map)
    if missing:
        raise VoicemillError(f"{voice.json_path}: phoneme_id_map lacks Piper's {sorted(missing)} ids; pass parity_ids")
    pad = voice.phoneme_id_map["_"]
    ids = list(voice.phoneme_id_map["^"]) + pad
    for symbol in [s for s in voice.phoneme_id_map if s not in specials][:num_phonemes]:
        ids += voice.phoneme_id_map[symbol] + pad
    return ids + list(voice.phoneme_id_map["$"])


@torch.inference_mode()
def check_parity(model: "Vits", onnx_path: Path, phoneme_ids: Sequence[int], num_threads: int | None = None) -> float:
    """Max |coqui - ONNX| on the same ids with the noise off (length scale 1), trimmed to the shorter output.

    The model's scales and train/eval mode are restored afterwards.
    """
    import onnxruntime as ort

    ids = np.asarray([list(phoneme_ids)], dtype=np.int64)
    if ids.size == 0:
        raise ValueError("phoneme_ids is empty")
    saved = (model.inference_noise_scale, model.length_scale, model.inference_noise_scale_dp, model.training)
    # VITS samples its latent and its durations: only with both noises at 0 are outputs comparable.
    model.inference_noise_scale, model.length_scale, model.inference_noise_scale_dp = 0.0, 1.0, 0.0
    model.eval()
    try:
        device = next(model.parameters()).device
        x = torch.from_numpy(ids).to(device)
        coqui = model.inference(x, aux_input={"x_lengths": torch.tensor([x.shape[1]], device=device)})
        coqui = coqui["model_outputs"].reshape(-1).float().cpu().numpy()
    finally:
        model.inference_noise_scale, model.length_scale, model.inference_noise_scale_dp = saved[:3]
        model.train(saved[3])

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(["output"], {"input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
                                           "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32)})
    onnx_wav = onnx_out.reshape(-1)  # Piper's [b, 1, 1, n]; coqui's export gives [b, 1, n]
    n = min(coqui.size, onnx_wav.size)
    if coqui.size != onnx_wav.size:
        _LOGGER.warning("parity: coqui gave %d samples, the ONNX %d; compared the first %d",
                        coqui.size, onnx_wav.size, n)
    return float(np.max(np.abs(coqui[:n] - onnx_wav[:n]))) if n else 0.0


def import_piper_voice(model: "Vits", onnx_path: Path, json_path: Path | None = None,
                       parity_ids: Sequence[int] | None = None, max_abs_diff: float = 1e-3) -> ImportReport:
    """Load a Piper voice's weights into ``model`` (in place) and prove it speaks like the ONNX.

    ``model`` must have the voice's size (see :data:`PIPER_PRESETS` and
    :func:`build_vits`). Raises VoicemillError, naming the tensor, when a
    weight has no place or a different shape in the model; and when the
    model's audio differs from the ONNX's by more than ``max_abs_diff`` on
    ``parity_ids`` (default: :func:`default_parity_ids`). Shapes are all
    checked before anything is loaded; after a parity failure the model holds
    the imported weights.
    """
    onnx_path = Path(onnx_path)
    voice = read_piper_voice(onnx_path, json_path)
    if voice.num_speakers != 1:
        raise VoicemillError(f"{voice.json_path}: num_speakers={voice.num_speakers}; only single-speaker Piper "
                             "voices can be imported")
    model_rate = int(model.config.audio.sample_rate)
    if model_rate != voice.sample_rate:
        raise VoicemillError(f"{onnx_path}: the voice runs at {voice.sample_rate} Hz but the model is configured "
                             f"for {model_rate} Hz; build it with build_vits(..., sample_rate={voice.sample_rate})")

    mapped = _mapped_state(onnx_path)
    model_state = model.state_dict()
    state = _legacy_weight_norm_keys({k: t for k, (_, t) in mapped.items()}, set(model_state))
    sources = dict(zip(state, (src for src, _ in mapped.values())))
    unused = [f"{sources[k]} -> {k}" for k in state if k not in model_state]
    if unused:
        raise VoicemillError(f"{onnx_path}: {len(unused)} ONNX weight(s) have no place in the coqui model: "
                             f"{'; '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}; is the model built "
                             "with the voice's preset?")
    mismatched = [f"{k} (model {tuple(model_state[k].shape)}, ONNX {sources[k]} {tuple(t.shape)})"
                  for k, t in state.items() if tuple(model_state[k].shape) != tuple(t.shape)]
    if mismatched:
        raise VoicemillError(f"{onnx_path}: {len(mismatched)} shape mismatch(es): {'; '.join(mismatched[:5])}"
                             f"{' ...' if len(mismatched) > 5 else ''}; build the model with the voice's preset "
                             f"({voice.quality or 'unknown quality'})")
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:  # cannot happen after the checks above; never load silently partial
        raise VoicemillError(f"{onnx_path}: coqui refused {result.unexpected_keys[:5]}")

    generator = {k: t for k, t in model_state.items() if not k.startswith(_NOT_GENERATOR)}
    untrained: dict[str, int] = {}
    for key, tensor in model_state.items():
        if key not in state:
            untrained[_part(key)] = untrained.get(_part(key), 0) + tensor.numel()
    ids = list(parity_ids) if parity_ids is not None else default_parity_ids(voice)
    diff = check_parity(model, onnx_path, ids)
    report = ImportReport(
        onnx_path=onnx_path,
        filled_tensors=len(state),
        generator_tensors=len(generator),
        filled_parameters=sum(t.numel() for t in state.values()),
        generator_parameters=sum(t.numel() for t in generator.values()),
        untrained=untrained,
        parity_max_abs_diff=diff,
    )
    _LOGGER.info("imported %s: %d of %d generator tensors, %.2f M of %.2f M parameters (%.1f %%); untrained: %s; "
                 "parity max |diff| %.2e on %d ids", onnx_path.name, report.filled_tensors, report.generator_tensors,
                 report.filled_parameters / 1e6, report.generator_parameters / 1e6, 100 * report.filled_share,
                 ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in untrained.items()), diff, len(ids))
    if not diff <= max_abs_diff:  # also catches NaN
        raise VoicemillError(f"{onnx_path}: the imported coqui model differs from the ONNX by {diff:.2e} "
                             f"> {max_abs_diff:g} (noise off, {len(ids)} ids); the mapping is wrong for this voice")
    return report
