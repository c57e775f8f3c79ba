"""Text-to-speech voices: what a voicemill voice is, how it is trained, loaded and exported.

A voicemill voice is a Piper voice: a VITS generator that reads Piper's
phoneme ids (espeak-ng phonemes through Piper's ``phoneme_id_map``), trained
with coqui-tts's ``Vits`` and shipped as ``voice.onnx`` + ``voice.onnx.json``
that Piper's runtime loads.

Modules:

- ``phonemes``: the front end, text -> normalised text -> espeak phonemes ->
  Piper ids, the same at training and at synthesis; the dataset's phoneme file.
- ``presets``: model sizes (``tiny`` for tests, Piper's ``piper-low``,
  ``piper-medium``, ``piper-high``, coqui's ``full``).
- ``piper_import``: Piper ONNX weights -> a coqui ``Vits`` (checked against the ONNX).
- ``coqui``: building, saving and loading coqui ``Vits`` voices; synthesis.
- ``align``: the posterior encoder taught the imported decoder's latent
  (rehearsal pairs the generator speaks), and copy-synthesis.
- ``training``: the fine-tuning loop and its phases (align, warm-up, adaptation),
  and a run: resume, evaluations, the best checkpoint, early stop, precision.
- ``checkpoints``: checkpoints written whole, kept and resumed; what makes
  two runs the same run.
- ``listening``: held-out sentences spoken and scored during training (WER,
  Distill-MOS, similarity) and the composite that picks the best checkpoint.
- ``distributed``: ``train.devices``, data-parallel ranks over
  ``torch.distributed`` (NCCL on GPUs, gloo on the CPU).
- ``export``: ONNX export checked against PyTorch, and Piper's voice JSON.
- ``variants``: the exported voice's fp16 and int8 variants, measured against
  it (size, speed, WER, Distill-MOS, mel distance), and the default one.
"""
