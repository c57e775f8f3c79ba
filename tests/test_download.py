import http.server
import threading
from pathlib import Path

import pytest

from tests.conftest import ffmpeg_tone
from voicemill.download import Source, SourcesError, download, read_sources


def write_sources(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(body)
    return path


def test_entries_of_each_kind(tmp_path):
    ffmpeg_tone(tmp_path / "a.wav")
    path = write_sources(tmp_path, "sources:\n  - source: demo\n  - source: a.wav\n    speaker: alice\n"
                                   "  - https://example.org/v.mp4\n")
    kinds = [(s.kind, s.line) for s in read_sources(path)]
    assert kinds == [("demo", 1), ("file", 2), ("url", 3)]


@pytest.mark.parametrize(
    "body, message",
    [
        ("sources:\n  - source: missing.wav\n", "entry 1: 'missing.wav': no such file"),
        ("sources:\n  - source: demo\n  - source: ftp://x.org/a.wav\n", "entry 2: 'ftp://x.org/a.wav' is not an http"),
        ("sources:\n  - source: demo\n  - source: demo\n", "entry 2: duplicate of entry 1"),
        ("sources:\n  - source: demo\n    colour: red\n", "entry 1: unknown field"),
        ("sources: []\n", "non-empty list"),
    ],
)
def test_bad_entries_are_reported_by_number(tmp_path, body, message):
    with pytest.raises(SourcesError, match=message.replace("(", r"\(")):
        read_sources(write_sources(tmp_path, body))


def test_local_files_of_several_formats_and_a_corrupt_one(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    ffmpeg_tone(media / "a.flac")
    ffmpeg_tone(media / "b.mp3", seconds=3)
    ffmpeg_tone(media / "c.mp4", extra=["-f", "lavfi", "-i", "color=c=black:s=64x64:d=2", "-shortest"])
    (media / "d.m4a").write_bytes(b"this is not audio")
    out = tmp_path / "raw"
    rows, failures = download([Source("file", str(media), 1)], out, seed=0, timeout_s=5, retries=0)
    assert sorted(Path(r["origin"]).name for r in rows) == ["a.flac", "b.mp3", "c.mp4"]
    assert [Path(f["origin"]).name for f in failures] == ["d.m4a"]
    assert "d.m4a" in failures[0]["reason"]
    for r in rows:
        assert (out / r["audio_path"]).exists() and r["duration_s"] > 1.5 and len(r["sha256"]) == 64
    assert not list(out.glob(".tmp-*"))


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def media_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **kw: _Handler(*a, directory=str(root), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_through_yt_dlp_and_a_404(tmp_path, media_server):
    root, base = media_server
    ffmpeg_tone(root / "talk.m4a", seconds=2)
    out = tmp_path / "raw"
    sources = [Source("url", f"{base}/talk.m4a", 1), Source("url", f"{base}/missing.m4a", 2)]
    rows, failures = download(sources, out, seed=0, timeout_s=5, retries=0)
    assert len(rows) == 1 and rows[0]["kind"] == "url" and rows[0]["origin"].endswith("talk.m4a")
    assert (out / rows[0]["audio_path"]).suffix == ".wav"
    assert 1.5 < rows[0]["duration_s"] < 2.5
    assert len(failures) == 1 and failures[0]["entry"] == 2 and "404" in failures[0]["reason"]
