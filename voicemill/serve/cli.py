"""The ``voicemill`` command: use a trained voice (``speak``, ``serve``, ``voices``).

The pipeline's own stages run through DVC (``dvc repro``); this command is
what comes after: hear the voice, script it, serve it to other programs.

Voices are found in what ``--voice`` names (a ``NAME.onnx`` beside its
``NAME.onnx.json``, a folder of them, or a name among those found), else in
``$VOICEMILL_VOICES`` or ``models/``; the bundled joe voice is always there
as ``joe``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import socket
import sys
from pathlib import Path

from voicemill import __version__
from voicemill.cli import setup_logging
from voicemill.errors import VoicemillError
from voicemill.params import ParamsError, add_arguments, from_arguments
from voicemill.serve.limits import SYMBOL_MODES

_LOGGER = logging.getLogger("voicemill")

EXAMPLES = """examples:
  voicemill speak "Hello there." -o hello.wav
  echo "Read from stdin." | voicemill speak --raw | aplay -r 22050 -f S16_LE -t raw -
  voicemill speak -f chapter.txt --voice models/voice.onnx --speed 1.1 -o chapter.wav
  voicemill serve --voice models --port 5100 --wyoming-port 10200
  VOICEMILL_API_KEY=$(openssl rand -hex 16) voicemill serve --host 0.0.0.0   # others on the network: with a key
  voicemill voices
"""


def _voice_paths(given: list[str] | None) -> dict[str, Path]:
    from voicemill.serve.engine import default_voice_paths, find_voices

    paths = [Path(g) for g in given] if given else default_voice_paths()
    return find_voices(paths)


def _pick(given: str | None) -> tuple[str, Path]:
    """A voice named by path or by name (default: the first voice found)."""
    from voicemill.serve.engine import VoiceError

    if given and (Path(given).exists() or given.endswith(".onnx")):
        return next(iter(_voice_paths([given]).items()))
    found = _voice_paths(None)
    if given and given not in found:
        raise VoiceError(f"unknown voice {given!r}; found: {', '.join(found) or 'none'} (voicemill voices; "
                         f"or pass a path to NAME.onnx)")
    name = given or next(iter(found))
    return name, found[name]


def _read_text(args) -> str:
    if args.text is not None and args.file is not None:
        raise VoicemillError("give the text as an argument or with --file, not both")
    if args.file is not None:
        if args.file == "-":
            return sys.stdin.read()
        try:
            return Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise VoicemillError(f"{args.file}: cannot read it as UTF-8 text ({e})") from e
    if args.text is not None:
        return args.text
    if sys.stdin.isatty():
        raise VoicemillError("no text: give it as an argument, with --file FILE, or on stdin")
    return sys.stdin.read()


def cmd_speak(args) -> int:
    from voicemill.fsutil import atomic_path
    from voicemill.serve.engine import Voice, to_pcm16, wav_header

    text = _read_text(args)
    name, path = _pick(args.voice)
    voice = Voice.load(path, name, args.variant or None, threads=args.threads)
    length = voice.scales.length_scale / args.speed if args.speed else args.length_scale
    scales = voice.scales.override(noise_scale=args.noise_scale, length_scale=length, noise_w=args.noise_w)
    reading = voice.read(text, max_chars=len(text) + 1, symbols=args.symbols)  # checked before any output is opened
    sentences = reading.sentences
    if reading.skipped:
        _LOGGER.warning("skipped %d symbol(s) with no reading: %s (--symbols read says their names)",
                        len(reading.skipped), ", ".join(reading.skipped))
    to_stdout = args.output in (None, "-")
    if to_stdout and sys.stdout.isatty():
        raise VoicemillError("the audio would go to the terminal; give -o FILE.wav, or pipe it (--raw | aplay ...)")
    if args.raw:
        out = sys.stdout.buffer if to_stdout else open(args.output, "wb")
        try:
            for sentence in sentences:  # each sentence as soon as it is ready: a pipe plays while the rest is made
                out.write(to_pcm16(voice.synthesize_sentence(sentence, scales)))
                out.flush()
        finally:
            if not to_stdout:
                out.close()
        _LOGGER.info("raw PCM: 16-bit little-endian mono, %d Hz", voice.sample_rate)
        return 0
    pcm = b"".join(to_pcm16(voice.synthesize_sentence(s, scales)) for s in sentences)
    wav = wav_header(voice.sample_rate, len(pcm)) + pcm
    if to_stdout:
        sys.stdout.buffer.write(wav)
        sys.stdout.buffer.flush()
    else:
        with atomic_path(Path(args.output)) as tmp:
            Path(tmp).write_bytes(wav)
        _LOGGER.info("%s: %.1f s of speech (%s, %d sentence(s))", args.output, len(pcm) / 2 / voice.sample_rate,
                     voice.name, len(sentences))
    return 0


def cmd_voices(args) -> int:
    import json

    from voicemill.serve.engine import Voice

    rows = []
    for name, path in _voice_paths(args.voice).items():
        try:
            rows.append(Voice.load(path, name).info())
        except VoicemillError as e:
            rows.append({"name": name, "path": str(path), "error": str(e)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<24} cannot load: {r['error']}")
        else:
            print(f"{r['name']:<24} {r['language']:<6} {r['sample_rate']:>6} Hz  {r['variant']:<5} {r['path']}")
    return 0


def cmd_serve(args) -> int:
    from voicemill.serve.limits import ServeOptions

    options = from_arguments(ServeOptions, args, "voicemill serve")
    if not options.api_key and os.environ.get("VOICEMILL_API_KEY", "").strip():
        options = dataclasses.replace(options, api_key=os.environ["VOICEMILL_API_KEY"].strip())
    return asyncio.run(serve(options, _voice_paths(args.voice)))


def public_without_key(options) -> str | None:
    """The warning for a server that anyone on the network may use (a non-loopback address and no key)."""
    import ipaddress

    if options.api_key:
        return None
    try:
        loopback = ipaddress.ip_address(options.host).is_loopback
    except ValueError:  # a host name
        loopback = options.host == "localhost"
    if loopback:
        return None
    return (f"listening on {options.host} with no API key: anyone who can reach port {options.port or 'the port'} "
            f"can use this server. Set one with VOICEMILL_API_KEY=... (or --api-key), or bind to 127.0.0.1"
            + ("; Wyoming has no authentication: keep its port on a trusted network" if options.wyoming_port
               else ""))


async def serve(options, voice_paths: dict[str, Path]) -> int:
    """Run the HTTP server (and the Wyoming one when ``options.wyoming_port``) until interrupted."""
    import uvicorn

    from voicemill.serve.engine import VoiceSet
    from voicemill.serve.http import create_app
    from voicemill.serve.limits import Admission

    voices = VoiceSet(voice_paths, options.threads, options.variant or None)
    voices.get(voices.default)  # load the default voice now: a broken voice fails at start, not at first use
    admission = Admission(options.worker_count(), options.queue, options.timeout_s)
    app = create_app(voices, options, admission)
    sock = socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
    except OSError as e:
        raise VoicemillError(f"cannot listen on {options.host}:{options.port} ({e.strerror}); pick another "
                             f"--port") from e
    port = sock.getsockname()[1]
    if (warning := public_without_key(options)) is not None:
        _LOGGER.warning("%s", warning)
    config = uvicorn.Config(app, log_level="warning", timeout_keep_alive=5, access_log=False)
    server = uvicorn.Server(config)
    sock.listen(2048)  # connections wait in the backlog from here on, not refused while uvicorn starts
    tasks = [asyncio.create_task(server.serve(sockets=[sock]))]
    while not server.started:
        if tasks[0].done():
            tasks[0].result()
            raise VoicemillError("the HTTP server stopped while starting")
        await asyncio.sleep(0.02)
    if options.wyoming_port:
        from wyoming.server import AsyncTcpServer

        from voicemill.serve.wyoming import handler_factory

        try:
            await AsyncTcpServer(options.host, options.wyoming_port).start(handler_factory(voices, options, admission))
        except OSError as e:
            raise VoicemillError(f"cannot listen on {options.host}:{options.wyoming_port} for Wyoming ({e.strerror}); "
                                 f"pick another --wyoming-port") from e
    print(f"voicemill {__version__}: serving {', '.join(voices.names())} at http://{options.host}:{port} "
          f"(docs /docs)" + (f", Wyoming at tcp://{options.host}:{options.wyoming_port}" if options.wyoming_port
                             else "")
          + f"; {admission.workers} worker(s), queue {options.queue}", flush=True)
    try:
        await asyncio.gather(*tasks)
    finally:
        admission.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from voicemill.serve.limits import ServeOptions

    p = argparse.ArgumentParser(prog="voicemill", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"voicemill {__version__}")
    p.add_argument("--debug", action="store_true", help="verbose logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    speak = sub.add_parser("speak", help="text to speech: a WAV file, WAV or raw PCM on stdout",
                           description="Speak text with a voice. Text: the argument, --file, or stdin. Audio: "
                                       "-o FILE.wav, or WAV on stdout; --raw gives 16-bit mono PCM at the voice's "
                                       "rate, sentence by sentence, for a pipe into aplay.")
    speak.add_argument("text", nargs="?", help="what to say (default: --file, else stdin)")
    speak.add_argument("-f", "--file", help="read the text from this UTF-8 file ('-': stdin)")
    speak.add_argument("-o", "--output", help="write here ('-' or none: stdout, when it is not a terminal)")
    speak.add_argument("--raw", action="store_true", help="raw 16-bit little-endian mono PCM instead of WAV")
    speak.add_argument("--voice", help="a voice name (voicemill voices) or a NAME.onnx path (default: the first)")
    speak.add_argument("--variant", help="export variant: fp32, fp16 or int8 (default: the voice's)")
    speak.add_argument("--speed", type=float, help="speaking rate, 0.25 .. 4 (1 = the voice's own)")
    speak.add_argument("--length-scale", type=float, help="1/speed (default: the voice's)")
    speak.add_argument("--noise-scale", type=float, help="variation, 0 .. 2 (default: the voice's)")
    speak.add_argument("--noise-w", type=float, help="rhythm variation, 0 .. 2 (default: the voice's)")
    speak.add_argument("--symbols", choices=SYMBOL_MODES, default="skip", help="emoji and other symbols with no "
                       "reading: skip them (named on stderr), read their Unicode names, or refuse the text "
                       "(default: %(default)s)")
    speak.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime threads "
                       "(default: %(default)s)")
    speak.set_defaults(fn=cmd_speak)

    serve_p = sub.add_parser("serve", help="HTTP API (with OpenAI's speech route), web page, Wyoming",
                             description="Serve voices over HTTP (web page at /, API docs at /docs, OpenAI's "
                                         "POST /v1/audio/speech) and, with --wyoming-port, Home Assistant's "
                                         "Wyoming protocol.", formatter_class=argparse.RawDescriptionHelpFormatter)
    serve_p.add_argument("--voice", action="append", help="a NAME.onnx or a folder of voices; repeat for more "
                         "(default: $VOICEMILL_VOICES, else models/; the bundled joe voice is always added)")
    add_arguments(serve_p, ServeOptions)
    serve_p.set_defaults(fn=cmd_serve)

    voices = sub.add_parser("voices", help="list the voices found")
    voices.add_argument("--voice", action="append", help="where to look (default: $VOICEMILL_VOICES, else models/)")
    voices.add_argument("--json", action="store_true", help="JSON instead of a table")
    voices.set_defaults(fn=cmd_voices)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    try:
        return args.fn(args)
    except (VoicemillError, ParamsError, ValueError) as e:
        _LOGGER.error("voicemill %s: %s", args.command, e)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `voicemill speak --raw | head -c 1000`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
