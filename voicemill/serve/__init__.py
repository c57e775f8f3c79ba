"""Using a voice: the ``voicemill`` command, the HTTP API, the Wyoming server and the web page.

Modules:

- ``engine``: a loaded voice (ONNX Runtime session + the training-time front
  end + the voice's own JSON for scales and sample rate), sentence splitting,
  synthesis of whole texts and sentence by sentence; finding voices.
- ``limits``: what a request may ask (text length, scales) and the admission
  control every front door shares: bounded concurrency, a queue limit, a
  deadline.
- ``http``: the FastAPI app: voices, synthesis (WAV or raw PCM, streamed by
  sentence), OpenAI's ``/v1/audio/speech``, health, metrics, OpenAPI docs,
  and the web page in ``page/``.
- ``wyoming``: Home Assistant's Wyoming protocol over TCP (describe, synthesize,
  streaming synthesize).
- ``cli``: ``voicemill speak``, ``voicemill serve``, ``voicemill voices``.
"""
