"""Model sizes: VitsArgs overrides per preset.

- ``tiny``: a few hundred thousand parameters, for the tests; it learns
  little in minutes but runs every code path a real run does.
- ``piper-low``, ``piper-medium``, ``piper-high``: Piper's architectures
  (``voicemill.tts.piper_import`` says where the sizes come from), so a voice
  of these sizes starts from a Piper voice's weights and ships as a Piper
  voice. ``piper-medium`` (16 M parameters) is the demo's and the default.
  Piper's ``x_low`` does not fit coqui's ``Vits`` (its duration predictor is
  narrower than coqui can build).
- ``full``: coqui's LJSpeech recipe sizes (HiFi-GAN v1 at 512 channels), for
  training from scratch on many hours; no Piper voice has this shape.
"""

from __future__ import annotations

from voicemill.tts.piper_import import PIPER_PRESETS

PRESETS: dict[str, dict] = {
    "tiny": {
        "hidden_channels": 64,
        "hidden_channels_ffn_text_encoder": 128,
        "num_layers_text_encoder": 2,
        "num_layers_posterior_encoder": 4,
        "num_layers_flow": 2,
        "kernel_size_flow": 3,
        "upsample_initial_channel_decoder": 64,
        "resblock_kernel_sizes_decoder": [3],
        "resblock_dilation_sizes_decoder": [[1, 3, 5]],
        "periods_multi_period_discriminator": [2, 3],
        "use_sdp": False,
    },
    **PIPER_PRESETS,
    "full": {},
}


def preset_args(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"train.preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return dict(PRESETS[name])
