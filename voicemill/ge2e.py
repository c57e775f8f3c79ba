"""The GE2E speaker encoder of the ``resemblyzer`` package, run without torch.

resemblyzer ships its weights (``pretrained.pt``, 5.7 MB: a three-layer LSTM
over 40 mel bands and a 256-d projection) and runs them with torch, and
importing torch costs a process about 470 MB before it does anything. The
data stages only need the forward pass, so this module reads the weights from
the package's file itself (no torch, no import of resemblyzer) and does the same
steps: the same
preprocessing (volume raised to -30 dBFS, long silences trimmed by
webrtcvad), the same mel frames (librosa), the same 1.6 s partial windows, the
same LSTM. Embeddings match resemblyzer's to about 1e-6
(``tests/test_scoring.py``).

- ``load_weights(path)``: the state dict of a torch file in the legacy
  (pre-1.6, non-zip) format, as NumPy arrays.
- ``Encoder``: ``embed_utterance(wav)`` -> (embedding, partial embeddings).
- ``preprocess(wav)``: resemblyzer's ``preprocess_wav`` for 16 kHz input.
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
from pathlib import Path

import numpy as np

RATE = 16000
N_MELS = 40
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
PARTIAL_FRAMES = 160  # 1.6 s
VAD_WINDOW = 480  # 30 ms
VAD_SMOOTHING = 8  # windows in the moving average
VAD_MAX_SILENCE = 6  # windows of silence kept between voiced ones
TARGET_DBFS = -30.0
INT16_MAX = 2**15 - 1


def weights_path() -> Path:
    """The weights file inside the installed resemblyzer package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the resemblyzer package is not installed: pip install -r requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


# Element types of torch's legacy storages.
_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Storage:
    """A legacy storage, filled in once the pickles that name it have been read."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor whose storage is read after the object pickle (legacy layout)."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        item = self.storage.dtype.itemsize
        return np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset :], shape=self.size, strides=[s * item for s in self.stride]
        ).copy()


def _rebuild_tensor(storage, offset, size, stride, *_rest):
    return _TensorRef(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    """Reads torch's legacy object pickle with tensors as references and nothing of torch imported."""

    def __init__(self, f, storages: dict):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return name  # the storage type, passed to persistent_load by name
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module.startswith("torch"):
            return lambda *a, **k: None  # anything else of torch (e.g. a device) is not needed
        return super().find_class(module, name)

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel = pid[:5]
        if kind != "storage" or storage_type not in _DTYPES:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(_DTYPES[storage_type])
        return self.storages[key]


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """The ``model_state`` (or the whole dict) of a legacy torch checkpoint, as NumPy arrays."""
    with open(path, "rb") as f:
        raw = f.read()
    f = io.BytesIO(raw)
    for _ in range(3):  # magic number, protocol version, system info
        pickle.load(f)
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(f, storages).load()
    keys = pickle.load(f)
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        st = storages[key]
        st.data = np.frombuffer(f.read(numel * st.dtype.itemsize), dtype=st.dtype)
    state = obj.get("model_state", obj) if isinstance(obj, dict) else obj
    return {k: v.array() for k, v in state.items() if isinstance(v, _TensorRef)}


def normalize_volume(wav: np.ndarray) -> np.ndarray:
    """Raise (never lower) the level to -30 dBFS RMS, as resemblyzer does."""
    rms = np.sqrt(np.mean((wav * INT16_MAX) ** 2))
    change = TARGET_DBFS - 20 * np.log10(rms / INT16_MAX)
    return wav if change < 0 else wav * (10 ** (change / 20))


def trim_long_silences(wav: np.ndarray) -> np.ndarray:
    """Drop silences longer than about 0.2 s (webrtcvad, mode 3, 30 ms windows, smoothed)."""
    import webrtcvad
    from scipy.ndimage import binary_dilation

    wav = wav[: len(wav) - len(wav) % VAD_WINDOW]
    pcm = np.round(wav * INT16_MAX).astype("<i2").tobytes()
    vad = webrtcvad.Vad(3)
    flags = np.array(
        [vad.is_speech(pcm[i * 2 : (i + VAD_WINDOW) * 2], RATE) for i in range(0, len(wav), VAD_WINDOW)], dtype=float
    )
    w = VAD_SMOOTHING
    padded = np.concatenate([np.zeros((w - 1) // 2), flags, np.zeros(w // 2)])
    sums = np.cumsum(padded, dtype=float)
    sums[w:] = sums[w:] - sums[:-w]
    mask = np.round(sums[w - 1 :] / w).astype(bool)
    mask = binary_dilation(mask, np.ones(VAD_MAX_SILENCE + 1))
    return wav[np.repeat(mask, VAD_WINDOW)]


def preprocess(wav: np.ndarray) -> np.ndarray:
    """resemblyzer's preprocessing of a 16 kHz float waveform."""
    return trim_long_silences(normalize_volume(np.asarray(wav, dtype=np.float32)))


def mel_frames(wav: np.ndarray) -> np.ndarray:
    """Power mel spectrogram, frames x 40 (not log), as the encoder was trained on."""
    import librosa

    mel = librosa.feature.melspectrogram(y=wav, sr=RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    return mel.astype(np.float32).T


def partial_slices(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[slice]:
    """Mel-frame slices of the 1.6 s partial windows covering ``n_samples`` (at least one)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((RATE / rate) / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    last = starts[-1] * HOP
    if len(starts) > 1 and (n_samples - last) / (PARTIAL_FRAMES * HOP) < min_coverage:
        starts.pop()
    return [slice(s, s + PARTIAL_FRAMES) for s in starts]


def _gates_onnx(a: np.ndarray) -> np.ndarray:
    """torch's LSTM gate blocks (input, forget, cell, output) in ONNX's order (input, output, forget, cell)."""
    i, f, g, o = np.split(a, 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0).astype(np.float32)


def onnx_model(w: dict[str, np.ndarray]) -> bytes:
    """The encoder as an ONNX graph (three LSTM nodes, Gemm, Relu), built from the weights in memory."""
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], [helper.make_node("Transpose", ["mels"], ["x0"], perm=[1, 0, 2])]  # -> frames first
    layers = sum(1 for k in w if k.startswith("lstm.weight_ih_l"))
    if not layers:
        raise ValueError("no LSTM weights (lstm.weight_ih_l0) in the encoder's weights")
    hidden = w["lstm.weight_hh_l0"].shape[1]
    x = "x0"
    for k in range(layers):
        bias = np.concatenate([_gates_onnx(w[f"lstm.bias_ih_l{k}"]), _gates_onnx(w[f"lstm.bias_hh_l{k}"])])
        for name, a in (("W", _gates_onnx(w[f"lstm.weight_ih_l{k}"])), ("R", _gates_onnx(w[f"lstm.weight_hh_l{k}"])),
                        ("B", bias)):
            inits.append(numpy_helper.from_array(a[None], f"{name}{k}"))
        nodes.append(helper.make_node("LSTM", [x, f"W{k}", f"R{k}", f"B{k}"], [f"y{k}", f"h{k}"], hidden_size=hidden))
        nodes.append(helper.make_node("Squeeze", [f"y{k}", "axis1"], [f"x{k + 1}"]))  # drop the direction axis
        x = f"x{k + 1}"
    nodes += [
        helper.make_node("Squeeze", [f"h{layers - 1}", "axis0"], ["last"]),  # the last frame's hidden state
        helper.make_node("Gemm", ["last", "proj_w", "proj_b"], ["proj"], transB=1),
        helper.make_node("Relu", ["proj"], ["embedding"]),
    ]
    inits += [
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(w["linear.weight"].astype(np.float32), "proj_w"),
        numpy_helper.from_array(w["linear.bias"].astype(np.float32), "proj_b"),
    ]
    graph = helper.make_graph(
        nodes, "ge2e",
        [helper.make_tensor_value_info("mels", TensorProto.FLOAT, ["batch", "frames", N_MELS])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", w["linear.weight"].shape[0]])],
        inits,
    )
    # IR 8 / opset 17: what the pinned ONNX Runtime reads.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


class Encoder:
    """The GE2E forward pass: LSTM(40 -> 256, 3 layers), last hidden state -> linear -> ReLU -> unit norm.

    Run by ONNX Runtime on one thread (the same numbers however many processes
    share the machine; about 1.3x torch's speed on one core).
    """

    def __init__(self, path: Path | None = None):
        import onnxruntime as ort

        path = path or weights_path()
        try:
            model = onnx_model(load_weights(path))
        except (KeyError, ValueError, pickle.UnpicklingError) as e:
            raise ValueError(f"{path}: not a GE2E encoder checkpoint ({e})") from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])

    def forward(self, mels: np.ndarray) -> np.ndarray:
        """Unit-norm embeddings of a batch of mel windows (batch x frames x 40)."""
        e = self.session.run(None, {"mels": np.asarray(mels, dtype=np.float32)})[0]
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    def embed_utterance(self, wav: np.ndarray, rate: float = 1.3, min_coverage: float = 0.75):
        """The utterance's embedding (unit mean of its partials) and its partial windows' embeddings.

        ``rate``: partial windows per second; ``min_coverage``: the share of a
        last, padded window that must hold audio for it to count.
        """
        slices = partial_slices(len(wav), rate, min_coverage)
        end = slices[-1].stop * HOP
        if end >= len(wav):
            wav = np.pad(wav, (0, end - len(wav)))
        mel = mel_frames(wav)
        partials = self.forward(np.stack([mel[s] for s in slices]))
        mean = partials.mean(axis=0)
        return mean / np.linalg.norm(mean), partials


@functools.cache
def encoder() -> Encoder:
    """The package's encoder, loaded once per process."""
    return Encoder()
