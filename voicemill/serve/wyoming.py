"""Home Assistant's Wyoming protocol: a voicemill voice used the way Home Assistant uses Piper.

One TCP connection is a sequence of events (``wyoming`` package):

- ``describe`` -> ``info``: one TTS program, ``voicemill``, with every voice and its language, and
  ``supports_synthesize_streaming``;
- ``synthesize {text, voice?}`` -> ``audio-start``, ``audio-chunk``\\* (16-bit mono, 1024 samples each),
  ``audio-stop``;
- streaming, as Home Assistant sends an LLM's answer: ``synthesize-start``, ``synthesize-chunk``\\* (text
  as it is written), then ``synthesize-stop``. Each sentence is spoken as soon as it is complete; the
  plain ``synthesize`` Home Assistant also sends in between, for older servers, is ignored; the reply ends
  with ``audio-stop`` and ``synthesize-stopped``.

Emoji and other symbols with no reading are skipped (or read, or refused: ``--symbols``) as over
HTTP, and logged: Wyoming has no field to report them in. Text the voice cannot read, an unknown voice and
a full queue answer an ``error`` event with the same message as the HTTP API. Wyoming has no
authentication: the server's key guards HTTP only, so keep the Wyoming port on a trusted network. Work is admitted by the same :class:`~voicemill.serve.limits.Admission`
as HTTP when both run in one ``voicemill serve``.
"""

from __future__ import annotations

import logging
import re

from voicemill import __version__
from voicemill.serve.engine import SENTENCE_END, TextError, Voice, VoiceSet, to_pcm16
from voicemill.serve.limits import Admission, Busy, ServeOptions, Timeout

_LOGGER = logging.getLogger(__name__)
SAMPLES_PER_CHUNK = 1024


def describe(voices: VoiceSet):
    from wyoming.info import Attribution, Info, TtsProgram, TtsVoice

    attribution = Attribution(name="voicemill", url="")
    listed = []
    for name in voices.names():
        try:
            voice = voices.get(name)
        except Exception as e:  # noqa: BLE001 - a voice that cannot load is not offered
            _LOGGER.warning("wyoming: voice %s not offered: %s", name, e)
            continue
        listed.append(TtsVoice(name=name, attribution=attribution, installed=True, version=__version__,
                               description=f"{name} ({voice.language}, {voice.variant})",
                               languages=[voice.language.replace("_", "-")]))
    program = TtsProgram(name="voicemill", attribution=attribution, installed=True, version=__version__,
                         description="voicemill voices (Piper-compatible)", voices=listed,
                         supports_synthesize_streaming=True)
    return Info(tts=[program])


def handler_factory(voices: VoiceSet, options: ServeOptions, admission: Admission):
    """What ``AsyncServer.run`` calls for each connection."""
    from wyoming.server import AsyncEventHandler

    class Handler(AsyncEventHandler):
        def __init__(self, reader, writer):
            super().__init__(reader, writer)
            self.streaming = None  # (voice, pending text, audio started) while a streaming request runs

        async def handle_event(self, event) -> bool:
            from wyoming.info import Describe
            from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

            try:
                if Describe.is_type(event.type):
                    await self.write_event(describe(voices).event())
                elif Synthesize.is_type(event.type):
                    if self.streaming is None:  # in a stream, it repeats the chunks for older servers
                        syn = Synthesize.from_event(event)
                        voice = self._voice(syn.voice)
                        sentences = voice.sentences(syn.text, options.max_chars, options.symbols)  # before audio-start
                        await self._start(voice)
                        await self._speak(voice, sentences)
                        await self._stop()
                elif SynthesizeStart.is_type(event.type):
                    start = SynthesizeStart.from_event(event)
                    self.streaming = [self._voice(start.voice), "", False]
                elif SynthesizeChunk.is_type(event.type) and self.streaming is not None:
                    self.streaming[1] += SynthesizeChunk.from_event(event).text
                    await self._speak_complete(final=False)
                elif SynthesizeStop.is_type(event.type) and self.streaming is not None:
                    await self._speak_complete(final=True)
                    from wyoming.tts import SynthesizeStopped
                    await self.write_event(SynthesizeStopped().event())
                    self.streaming = None
            except (TextError, KeyError, Busy, Timeout) as e:
                await self._error(e)
            return True

        def _voice(self, requested) -> Voice:
            name = getattr(requested, "name", None) if requested else None
            if name and name not in voices.paths:
                raise KeyError(f"unknown voice {name!r}; voices: {', '.join(voices.names())}")
            return voices.get(name)

        async def _start(self, voice: Voice) -> None:
            from wyoming.audio import AudioStart

            await self.write_event(AudioStart(rate=voice.sample_rate, width=2, channels=1).event())

        async def _stop(self) -> None:
            from wyoming.audio import AudioStop

            await self.write_event(AudioStop().event())

        async def _speak(self, voice: Voice, sentences: list[str]) -> None:
            from wyoming.audio import AudioChunk

            with admission.admit() as ticket:
                for sentence in sentences:
                    audio = await admission.run(ticket, voice.synthesize_sentence, sentence)
                    admission.count_audio(1, len(sentence), audio.size / voice.sample_rate)
                    pcm = to_pcm16(audio)
                    step = SAMPLES_PER_CHUNK * 2
                    for i in range(0, len(pcm), step):
                        await self.write_event(AudioChunk(rate=voice.sample_rate, width=2, channels=1,
                                                          audio=pcm[i:i + step]).event())

        async def _speak_complete(self, final: bool) -> None:
            """Speak the streamed text up to its last sentence end (all of it when ``final``)."""
            voice, pending, started = self.streaming
            if final:
                done, keep = pending, ""
            else:
                ends = list(SENTENCE_END.finditer(pending))
                if not ends:
                    return
                done, keep = pending[:ends[-1].end()], pending[ends[-1].end():]
            if re.search(r"\w", done):
                sentences = voice.sentences(done, options.max_chars, options.symbols)
                if not started:
                    await self._start(voice)
                    started = True
                await self._speak(voice, sentences)
            self.streaming = [voice, keep, started]
            if final:
                if not started:
                    await self._start(voice)
                await self._stop()

        async def _error(self, e: Exception) -> None:
            from wyoming.error import Error

            message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            code = next((c for kind, c in ((TextError, "bad-text"), (KeyError, "unknown-voice"), (Busy, "busy"),
                                           (Timeout, "timeout")) if isinstance(e, kind)), "error")
            _LOGGER.warning("wyoming: %s", message)
            await self.write_event(Error(text=message, code=code).event())
            self.streaming = None

    return Handler

