"""The HTTP API and the web page (FastAPI; ``voicemill serve`` runs it on uvicorn).

Routes (OpenAPI docs at ``/docs``, the schema at ``/openapi.json``):

- ``GET  /``                 the web page: type text, pick a voice and speed, play, download;
- ``GET  /api/voices``       the voices, each with its language, sample rate and default scales;
- ``POST /api/synthesize``   JSON ``{text, voice?, noise_scale?, length_scale?, noise_w?, format?, stream?}``
                             -> ``audio/wav`` or raw 16-bit mono PCM (``audio/L16``); ``stream``
                             sends each sentence as soon as it is synthesized;
- ``POST /v1/audio/speech``  OpenAI's shape ``{model, input, voice, response_format?, speed?}``
                             (mp3, opus, aac, flac through ffmpeg, wav or pcm; always streamed);
                             OpenAI's own voice names (alloy, nova, ...) mean the default voice;
- ``GET  /health``           ok, the voices, the workers and what they are doing;
- ``GET  /metrics``          Prometheus text: requests by route and status, rejections, timeouts,
                             characters, seconds synthesized and of audio.

With a key (``--api-key`` or ``VOICEMILL_API_KEY``) every route but
``/health`` and the page itself answers 401 unless the request carries
``Authorization: Bearer <key>`` (what OpenAI's clients send; compared in
constant time); the page asks for the key once and keeps it in the browser.
Browsers on other origins may call the API only with ``--cors-origin``.

Emoji and other symbols with no reading are skipped (``--symbols``) and named
in the ``X-Voicemill-Skipped`` response header.

Every refusal is a 4xx or 5xx whose JSON ``detail`` says what was wrong and
what to do: text too long (413), text that cannot be read, an empty text or
scales out of range (422), an unknown voice (404), an unsupported format
(400: mp3, opus, aac, flac, wav and pcm are offered), every worker busy and the queue full (503 with ``Retry-After``), past
the deadline (504).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from pathlib import Path
from typing import AsyncIterator, Literal

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from voicemill import __version__
from voicemill.serve.engine import (Reading, Scales, TextError, TextTooLong, Voice, VoiceError, VoiceSet,
                                    first_chunk, to_pcm16, wav_header)
from voicemill.serve.limits import Admission, Busy, ServeOptions, Timeout

_LOGGER = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("page")
#: OpenAI's built-in voice names; a client that sends one gets the default voice.
OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"}
#: Routes open without the key: liveness, and the page (static; it asks for the key before calling the API).
OPEN_PATHS = {"/health", "/"}


class SynthesizeRequest(BaseModel):
    text: str = Field(description="what to say (numbers, dates and money are read as the training text was)")
    voice: str | None = Field(None, description="a name from /api/voices; default: the first voice")
    noise_scale: float | None = Field(None, description="variation, 0 .. 2; default: the voice's")
    length_scale: float | None = Field(None, description="1/speed, 0.25 .. 4; default: the voice's")
    noise_w: float | None = Field(None, description="rhythm variation, 0 .. 2; default: the voice's")
    format: Literal["wav", "pcm"] = Field("wav", description="wav, or pcm: raw 16-bit little-endian mono")
    stream: bool = Field(False, description="send each sentence as soon as it is synthesized")


class SpeechRequest(BaseModel):
    """OpenAI's ``/v1/audio/speech`` body."""

    model: str = Field("voicemill", description="accepted and ignored (the voice picks the model)")
    input: str = Field(description="what to say")
    voice: str = Field("alloy", description="a voicemill voice name; OpenAI's names mean the default voice")
    response_format: str = Field("mp3", description="mp3 (OpenAI's default), opus, aac, flac, wav or pcm")
    speed: float = Field(1.0, description="0.25 .. 4")
    instructions: str | None = Field(None, description="accepted and ignored")


class HttpError(Exception):
    def __init__(self, status: int, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def create_app(voices: VoiceSet, options: ServeOptions, admission: Admission | None = None) -> FastAPI:
    """The app over ``voices``, bounded by ``admission`` (shared with the Wyoming server when both run)."""
    admission = admission or Admission(options.worker_count(), options.queue, options.timeout_s)
    app = FastAPI(title="voicemill", version=__version__,
                  description="Speech from voicemill (Piper) voices: synthesis, streaming, OpenAI's speech API.")
    app.state.admission, app.state.voices = admission, voices
    max_body = options.max_chars * 4 + 4096
    key = options.api_key.encode()

    def refused_key(request: Request) -> JSONResponse | None:
        """401 unless the request carries the key (when there is one)."""
        if not key or request.url.path in OPEN_PATHS or request.method == "OPTIONS":
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key):
            return None
        detail = ("this server needs a key: send 'Authorization: Bearer <key>' (the key it was started with, "
                  "--api-key or VOICEMILL_API_KEY)" if not given else "the key sent is not this server's key")
        return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def count_and_bound(request: Request, call_next):
        length = request.headers.get("content-length")
        refusal = refused_key(request)
        if refusal is not None:
            response = refusal
        elif length and length.isdigit() and int(length) > max_body:
            response = JSONResponse({"detail": f"request body of {int(length)} bytes; the most is {max_body} "
                                               f"(text up to {options.max_chars} characters)"}, status_code=413)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        admission.count_status(getattr(route, "path", "other"), response.status_code)
        return response

    @app.exception_handler(HttpError)
    async def http_error(_request, e: HttpError):
        return JSONResponse({"detail": e.detail}, status_code=e.status, headers=e.headers)

    def voice_for(name: str | None) -> Voice:
        try:
            return voices.get(name)
        except KeyError:
            raise HttpError(404, f"unknown voice {name!r}; voices: {', '.join(voices.names())} "
                                 f"(GET /api/voices)") from None
        except VoiceError as e:  # the server's voice files, not the request, are at fault
            raise HttpError(500, f"voice {name!r} cannot be loaded: {e}") from None

    def prepare(voice: Voice, text: str, **scales) -> tuple[Reading, Scales]:
        try:
            chosen = voice.scales.override(**scales)
            return voice.read(text, options.max_chars, options.symbols), chosen
        except TextError as e:
            raise HttpError(413 if isinstance(e, TextTooLong) else 422, str(e)) from None

    def admit():
        try:
            return admission.admit()
        except Busy as e:
            raise HttpError(503, str(e), {"Retry-After": str(e.retry_after)}) from None

    async def whole(voice: Voice, sentences: list[str], scales: Scales) -> bytes:
        with admit() as ticket:
            try:
                pcm = [to_pcm16(await admission.run(ticket, voice.synthesize_sentence, s, scales))
                       for s in sentences]
            except Timeout as e:
                raise HttpError(504, str(e)) from None
            except TextError as e:
                raise HttpError(422, str(e)) from None
        data = b"".join(pcm)
        admission.count_audio(len(sentences), sum(map(len, sentences)), len(data) / 2 / voice.sample_rate)
        return data

    def streamed(voice: Voice, reading: Reading, scales: Scales, fmt: str) -> StreamingResponse:
        sentences = reading.sentences
        ticket = admit()  # a refusal is a plain 503 before any byte is sent

        async def body():
            sent = 0
            try:
                if fmt == "wav":
                    yield wav_header(voice.sample_rate)
                for sentence in first_chunk(sentences, options.first_chunk_chars):
                    ticket.renew()  # a stream's deadline is per sentence: a long text may take its time
                    audio = await admission.run(ticket, voice.synthesize_sentence, sentence, scales)
                    admission.count_audio(1, len(sentence), audio.size / voice.sample_rate)
                    sent += 1
                    yield to_pcm16(audio)
            except (Timeout, TextError) as e:  # the status is sent already: the stream ends short
                _LOGGER.warning("stream stopped after %d of %d sentence(s): %s", sent, len(sentences), e)
            finally:
                ticket.release()
        content = body() if fmt in ("wav", "pcm") else encoded(body(), voice.sample_rate, fmt)
        return StalledClientGuard(content, ticket, admission, media_type=_media(voice, fmt),
                                  headers=_audio_headers(voice, reading))

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(PAGE / "index.html", media_type="text/html")

    @app.get("/api/voices", summary="The voices this server speaks with")
    async def list_voices():
        out = []
        for name in voices.names():
            try:
                out.append({**voices.get(name).info(), "default": name == voices.default})
            except Exception as e:  # noqa: BLE001 - one broken voice is listed with its error, the rest still work
                out.append({"name": name, "error": str(e)})
        return out

    @app.post("/api/synthesize", summary="Text to speech (WAV or raw PCM, whole or streamed by sentence)",
              responses={200: {"content": {"audio/wav": {}, "audio/L16": {}}}})
    async def synthesize(req: SynthesizeRequest):
        voice = voice_for(req.voice)
        reading, scales = prepare(voice, req.text, noise_scale=req.noise_scale,
                                  length_scale=req.length_scale, noise_w=req.noise_w)
        wav = req.format == "wav"
        if req.stream:
            return streamed(voice, reading, scales, req.format)
        data = await whole(voice, reading.sentences, scales)
        body = wav_header(voice.sample_rate, len(data)) + data if wav else data
        return Response(body, media_type=_media(voice, req.format), headers=_audio_headers(voice, reading))

    @app.post("/v1/audio/speech", summary="OpenAI-compatible speech (mp3, opus, aac, flac, wav or pcm; streamed)",
              responses={200: {"content": {"audio/mpeg": {}, "audio/ogg": {}, "audio/aac": {}, "audio/flac": {},
                                            "audio/wav": {}, "audio/L16": {}}}})
    async def openai_speech(req: SpeechRequest):
        name = None if req.voice in OPENAI_VOICES and req.voice not in voices.paths else req.voice
        voice = voice_for(name)
        fmt = req.response_format.lower()
        if fmt not in ("wav", "pcm", *ENCODINGS):
            raise HttpError(400, f"response_format {req.response_format!r} is not offered; use "
                                 f"{', '.join(['wav', 'pcm', *ENCODINGS])} (pcm: 16-bit little-endian mono at "
                                 f"{voice.sample_rate} Hz)")
        if not 0.25 <= req.speed <= 4.0:
            raise HttpError(422, f"speed {req.speed!r} is out of range; allowed 0.25 .. 4")
        reading, scales = prepare(voice, req.input, length_scale=voice.scales.length_scale / req.speed)
        return streamed(voice, reading, scales, fmt)

    @app.get("/health", summary="Liveness, voices and load")
    async def health():
        snap = admission.snapshot()
        return {"status": "ok", "version": __version__, "voices": voices.names(), "max_chars": options.max_chars,
                "key_required": bool(key),
                **{k: snap[k] for k in ("workers", "capacity", "active", "running")}}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(prometheus(admission.snapshot()), media_type="text/plain; version=0.0.4")

    if options.cors_origin:  # outermost: a browser's preflight is answered before the key is asked for
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=[o.strip() for o in options.cors_origin.split(",")],
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["X-Voicemill-Skipped", "X-Sample-Rate", "X-Voice", "Retry-After"])
    return app


class StalledClientGuard(StreamingResponse):
    """A stream that drops a client who has not taken a write for ``timeout_s`` (its place is given back).

    A client that stops reading fills the socket's buffers; the next write
    then waits. Without a bound it would wait forever, holding the request's
    place in the queue (never a worker: those are held only while a sentence
    is synthesized).
    """

    def __init__(self, content, ticket, admission: Admission, **kwargs):
        super().__init__(content, **kwargs)
        self.ticket, self.admission = ticket, admission

    async def __call__(self, scope, receive, send):
        async def bounded_send(message):
            try:
                await asyncio.wait_for(send(message), self.admission.timeout_s)
            except (asyncio.TimeoutError, TimeoutError):
                self.admission.count_timeout()
                raise ClientStalled(f"client took no audio for {self.admission.timeout_s:g} s; dropped") from None
        try:
            await super().__call__(scope, receive, bounded_send)
        except Exception as e:  # noqa: BLE001 - a stall may arrive wrapped in the task group's ExceptionGroup
            stall = e if isinstance(e, ClientStalled) else next(
                (x for x in getattr(e, "exceptions", ()) if isinstance(x, ClientStalled)), None)
            if stall is None:
                raise
            _LOGGER.warning("%s", stall)
        finally:
            self.ticket.release()


class ClientStalled(Exception):
    pass


#: OpenAI's compressed formats: ffmpeg's muxer and encoder arguments, and the media type.
ENCODINGS = {
    "mp3": (["-f", "mp3", "-c:a", "libmp3lame", "-b:a", "64k"], "audio/mpeg"),
    "opus": (["-f", "ogg", "-c:a", "libopus", "-b:a", "32k"], "audio/ogg"),
    "aac": (["-f", "adts", "-c:a", "aac", "-b:a", "64k"], "audio/aac"),
    "flac": (["-f", "flac"], "audio/flac"),
}


async def encoded(pcm: AsyncIterator[bytes], sample_rate: int, fmt: str) -> AsyncIterator[bytes]:
    """16-bit mono PCM chunks -> ``fmt`` through an ffmpeg process, passed on as ffmpeg writes them.

    The PCM is fed as it is synthesized, so a compressed stream starts with
    the first sentence too. However the stream ends (done, client gone,
    stalled), ffmpeg is stopped and waited for.
    """
    args, _ = ENCODINGS[fmt]
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(sample_rate), "-ac", "1",
        "-i", "pipe:0", *args, "pipe:1", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)

    async def feed():
        try:
            async for chunk in pcm:
                proc.stdin.write(chunk)
                await proc.stdin.drain()
        finally:
            proc.stdin.close()

    feeder = asyncio.create_task(feed())
    try:
        while chunk := await proc.stdout.read(16384):
            yield chunk
        await feeder
        if await proc.wait() != 0:
            _LOGGER.warning("ffmpeg (%s) failed: %s", fmt, (await proc.stderr.read()).decode(errors="replace")[-500:])
    finally:
        if not feeder.done():
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
        await pcm.aclose()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _media(voice: Voice, fmt: str) -> str:
    if fmt in ENCODINGS:
        return ENCODINGS[fmt][1]
    return "audio/wav" if fmt == "wav" else f"audio/L16;rate={voice.sample_rate};channels=1"


def _audio_headers(voice: Voice, reading: Reading) -> dict:
    headers = {"X-Sample-Rate": str(voice.sample_rate), "X-Voice": voice.name, "Cache-Control": "no-store"}
    if reading.skipped:
        headers["X-Voicemill-Skipped"] = reading.skipped_header()
    return headers


def prometheus(snap: dict) -> str:
    """Counters and gauges in Prometheus's text format."""
    lines = ["# HELP voicemill_requests_total HTTP requests by route and status",
             "# TYPE voicemill_requests_total counter"]
    for (route, status), n in sorted(snap["by_status"].items()):
        lines.append(f'voicemill_requests_total{{route="{route}",status="{status}"}} {n}')
    for name, kind, key, doc in (
            ("admitted_total", "counter", "admitted", "requests given a place"),
            ("rejected_busy_total", "counter", "rejected_busy", "requests turned away with 503 (queue full)"),
            ("timeouts_total", "counter", "timeouts", "requests stopped at their deadline"),
            ("sentences_total", "counter", "sentences", "sentences synthesized"),
            ("characters_total", "counter", "chars", "characters of normalised text synthesized"),
            ("synthesis_seconds_total", "counter", "synth_seconds", "seconds spent synthesizing"),
            ("audio_seconds_total", "counter", "audio_seconds", "seconds of audio produced"),
            ("active", "gauge", "active", "requests admitted and not finished (waiting, running, streaming)"),
            ("running", "gauge", "running", "syntheses running now"),
            ("workers", "gauge", "workers", "syntheses that may run at once"),
            ("capacity", "gauge", "capacity", "requests admitted at most (workers + queue)")):
        lines += [f"# HELP voicemill_{name} {doc}", f"# TYPE voicemill_{name} {kind}",
                  f"voicemill_{name} {snap[key]}"]
    return "\n".join(lines) + "\n"
