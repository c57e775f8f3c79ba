"""download: the sources file, local media, yt-dlp against a local HTTP server, Parquet datasets, increments."""

import http.server
import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import ffmpeg_tone
from voicemill.download import DownloadFailed, FetchOptions, download
from voicemill.sources import Source, SourcesError, read_sources

FAST = FetchOptions(timeout_s=2, retries=2, backoff_s=0.05, max_failed_share=1.0)  # the library reports; tests read it


def write_sources(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(body)
    return path


# ------------------------------------------------------------- sources file


def test_entries_of_each_kind(tmp_path):
    ffmpeg_tone(tmp_path / "a.wav")
    pq.write_table(pa.table({"audio": [{"bytes": b"", "path": "x.wav"}]}), tmp_path / "d.parquet")
    path = write_sources(tmp_path, "sources:\n  - source: demo\n  - source: a.wav\n    speaker: alice\n"
                                   "    start: 0.5\n    end: '0:01.5'\n"
                                   "  - source: https://example.org/v.mp4\n    subtitles: [en, da]\n"
                                   "  - source: d.parquet\n")
    sources = read_sources(path)
    assert [(s.kind, s.line) for s in sources] == [("demo", 2), ("file", 3), ("url", 7), ("parquet", 9)]
    assert (sources[1].start_s, sources[1].end_s, sources[1].meta["speaker"]) == (0.5, 1.5, "alice")
    assert sources[2].subtitles == ("en", "da")


@pytest.mark.parametrize(
    "body, message",
    [
        ("sources:\n  - source: missing.wav\n", "line 2: 'missing.wav': no such file"),
        ("sources:\n  - source: demo\n  - source: ftp://x.org/a.wav\n", "line 3: 'ftp://x.org/a.wav' is not an http"),
        ("sources:\n  - source: demo\n  - source: demo\n", "line 3: duplicate of the entry on line 2"),
        ("sources:\n  - source: demo\n    colour: red\n", "line 2: unknown field"),
        ("sources:\n  - source: demo\n    kind: podcast\n", "line 2: unknown kind 'podcast'"),
        ("sources:\n  - source: https://x.org/v\n    start: 10\n    end: 5\n", "line 2: end"),
        ("sources:\n  - source: https://x.org/v\n    start: soon\n", "line 2: start: expected seconds"),
        ("sources:\n  - source: demo\n    subtitles: [en]\n", "line 2: subtitles can only"),
        ("sources: []\n", "non-empty list"),
    ],
)
def test_bad_entries_are_reported_by_line(tmp_path, body, message):
    with pytest.raises(SourcesError, match=message.replace("(", r"\(")):
        read_sources(write_sources(tmp_path, body))


# --------------------------------------------------------------- local media


def test_local_files_of_every_format_and_a_corrupt_one(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    ffmpeg_tone(media / "a.wav")
    ffmpeg_tone(media / "b.flac")
    ffmpeg_tone(media / "c.mp3", seconds=3)
    ffmpeg_tone(media / "d.m4a")
    ffmpeg_tone(media / "e.ogg", extra=["-c:a", "libvorbis"])
    ffmpeg_tone(media / "f.opus")
    ffmpeg_tone(media / "g.mp4", extra=["-f", "lavfi", "-i", "color=c=black:s=64x64:d=2", "-shortest"])
    ffmpeg_tone(media / "h.mkv", extra=["-f", "lavfi", "-i", "color=c=black:s=64x64:d=2", "-shortest"])
    ffmpeg_tone(media / "i.webm", extra=["-f", "lavfi", "-i", "color=c=black:s=64x64:d=2", "-shortest",
                                          "-c:v", "libvpx", "-c:a", "libopus"])
    ffmpeg_tone(media / "stereo.wav", extra=["-ac", "2"])
    good = (media / "a.wav").read_bytes()
    (media / "truncated.wav").write_bytes(good[:30])
    (media / "z.m4a").write_bytes(b"this is not audio")
    out = tmp_path / "raw"
    rows, failures, counts = download([Source("file", str(media), 3)], out, FAST)
    names = sorted(Path(r["origin"]).name for r in rows)
    assert names == ["a.wav", "b.flac", "c.mp3", "d.m4a", "e.ogg", "f.opus", "g.mp4", "h.mkv", "i.webm", "stereo.wav"]
    assert sorted(Path(f["origin"]).name for f in failures) == ["truncated.wav", "z.m4a"]
    assert all(f["line"] == 3 for f in failures)
    for r in rows:
        assert (out / r["audio_path"]).exists() and r["duration_s"] > 1.5 and len(r["sha256"]) == 64
    assert {r["channels"] for r in rows} == {1, 2}  # kept as is; segment downmixes
    assert counts == {"kept": 0, "fetched": 10, "removed": 0}
    assert not list(out.glob(".tmp-*"))


def test_trim_and_incremental_runs_and_removal(tmp_path):
    a, b = ffmpeg_tone(tmp_path / "a.flac", seconds=4), ffmpeg_tone(tmp_path / "b.flac", seconds=2)
    out = tmp_path / "raw"
    first = [Source("file", str(a), 2, start_s=1.0, end_s=3.0)]
    rows, _, counts = download(first, out, FAST)
    assert abs(rows[0]["duration_s"] - 2.0) < 0.1 and counts["fetched"] == 1
    _write_manifest(out, rows)
    rows, _, counts = download(first + [Source("file", str(b), 3)], out, FAST)
    assert counts == {"kept": 1, "fetched": 1, "removed": 0}
    _write_manifest(out, rows)
    rows, _, counts = download([Source("file", str(b), 2)], out, FAST)
    assert counts == {"kept": 1, "fetched": 0, "removed": 1}
    assert sorted(p.name for p in out.glob("*.wav")) == [rows[0]["audio_path"]]


def _write_manifest(out: Path, rows: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_parquet(out / "manifest.parquet")


# ------------------------------------------------------- URLs through yt-dlp


class _Handler(http.server.SimpleHTTPRequestHandler):
    hits: dict = {}
    log: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).log.append(self.path)
        n = type(self).hits[self.path] = type(self).hits.get(self.path, 0) + 1
        if self.path.startswith("/flaky") and n <= 2:
            self.send_error(503, "busy")
            return
        if self.path.startswith("/slow"):
            time.sleep(4)
        super().do_GET()

    def do_HEAD(self):
        type(self).log.append("HEAD " + self.path)
        super().do_HEAD()


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = type("Handler", (_Handler,), {"hits": {}, "log": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **kw: handler(*a, directory=str(root), **kw))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()


def test_urls_retry_404_timeout_corrupt(tmp_path, server):
    root, base, handler = server
    for name in ("talk.m4a", "flaky.m4a", "slow.m4a"):
        ffmpeg_tone(root / name)
    (root / "corrupt.m4a").write_bytes(b"\x00\x01 not media at all" * 100)
    sources = [Source("url", f"{base}/{name}", i + 2) for i, name in
               enumerate(("talk.m4a", "flaky.m4a", "missing.m4a", "slow.m4a", "corrupt.m4a"))]
    out = tmp_path / "raw"
    rows, failures, _ = download(sources, out, FAST)
    assert sorted(Path(r["origin"]).name for r in rows) == ["flaky.m4a", "talk.m4a"]
    assert handler.hits["/flaky.m4a"] >= 3  # two 503s, then the audio
    reasons = {Path(f["origin"]).name: f["reason"] for f in failures}
    assert set(reasons) == {"missing.m4a", "slow.m4a", "corrupt.m4a"}
    assert "404" in reasons["missing.m4a"]
    assert "timed out" in reasons["slow.m4a"].lower()
    assert handler.hits["/missing.m4a"] == 1  # a 404 is not retried
    assert [f["line"] for f in failures] == [4, 5, 6]
    for r in rows:
        assert (out / r["audio_path"]).suffix == ".wav" and 1.5 < r["duration_s"] < 2.5
    assert not list(out.glob(".tmp-*"))


def test_subtitles_from_an_html_page(tmp_path, server):
    root, base, _ = server
    ffmpeg_tone(root / "lecture.mp4", extra=["-f", "lavfi", "-i", "color=c=black:s=64x64:d=2", "-shortest"])
    (root / "lecture.en.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.500\nHello and welcome.\n")
    (root / "page.html").write_text(
        "<html><head><title>A lecture</title></head><body><video controls src='lecture.mp4'>"
        "<track kind='subtitles' srclang='en' label='English' src='lecture.en.vtt'></video></body></html>")
    rows, failures, _ = download([Source("url", f"{base}/page.html", 2, subtitles=("en",))], tmp_path / "raw", FAST)
    assert not failures, failures
    subs = json.loads(rows[0]["subtitles"])
    assert subs and subs[0].endswith(".en.vtt")
    assert "Hello and welcome." in (tmp_path / "raw" / subs[0]).read_text()


def test_adding_a_url_downloads_only_that_one(tmp_path, server):
    root, base, handler = server
    for name in ("a.m4a", "b.m4a", "c.m4a"):
        ffmpeg_tone(root / name)
    out = tmp_path / "raw"
    first = [Source("url", f"{base}/a.m4a", 2), Source("url", f"{base}/b.m4a", 3)]
    rows, _, _ = download(first, out, FAST)
    _write_manifest(out, rows)
    handler.log.clear()
    rows, _, counts = download(first + [Source("url", f"{base}/c.m4a", 4)], out, FAST)
    assert counts == {"kept": 2, "fetched": 1, "removed": 0}
    assert handler.log and all("c.m4a" in line for line in handler.log), handler.log


def test_cookies_never_reach_outputs(tmp_path, server, monkeypatch):
    root, base, _ = server
    ffmpeg_tone(root / "a.m4a")
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tSECRET-TOKEN-123\n")
    monkeypatch.setenv("VOICEMILL_COOKIES_FILE", str(cookies))
    out = tmp_path / "raw"
    rows, failures, _ = download([Source("url", f"{base}/a.m4a", 2)], out, FAST)
    assert rows and not failures
    _write_manifest(out, rows)
    for path in out.iterdir():
        data = path.read_bytes()
        assert b"SECRET-TOKEN-123" not in data and str(cookies).encode() not in data


# ---------------------------------------------------------- Parquet datasets


def test_parquet_dataset_rows_with_a_corrupt_one(tmp_path):
    wavs = [ffmpeg_tone(tmp_path / f"r{i}.wav", seconds=1 + i) for i in range(3)]
    audio = [{"bytes": w.read_bytes(), "path": w.name} for w in wavs]
    audio.append({"bytes": b"RIFF\x10\x00\x00\x00WAVEbroken", "path": "broken.wav"})
    table = pa.table({"audio": audio, "text": ["en", "to", "tre", "fire"], "speaker_id": ["s1", "s1", "s2", "s2"]})
    pq.write_table(table, tmp_path / "coral.parquet", row_group_size=2)
    rows, failures, _ = download([Source("parquet", str(tmp_path / "coral.parquet"), 2)], tmp_path / "raw", FAST)
    assert [r["text"] for r in rows] == ["en", "to", "tre"]
    assert [r["speaker"] for r in rows] == ["s1", "s1", "s2"]
    assert [round(r["duration_s"]) for r in rows] == [1, 2, 3]
    assert len(failures) == 1 and failures[0]["origin"].endswith("#row=3")


def test_a_page_with_several_videos_is_expanded_like_a_playlist(tmp_path, server):
    root, base, _ = server
    for name in ("one.mp4", "two.mp4"):
        ffmpeg_tone(root / name, extra=["-f", "lavfi", "-i", "color=c=black:s=64x64:d=2", "-shortest"])
    (root / "list.html").write_text("<html><head><title>Two talks</title></head><body>"
                                    "<video src='one.mp4'></video><video src='two.mp4'></video></body></html>")
    out = tmp_path / "raw"
    rows, failures, _ = download([Source("url", f"{base}/list.html", 2)], out, FAST)
    assert not failures, failures
    assert sorted(Path(r["origin"]).name for r in rows) == ["one.mp4", "two.mp4"]
    assert {r["playlist"] for r in rows} == {"Two talks"}
    _write_manifest(out, rows)
    (root / "list.html").write_text("<html><head><title>Two talks</title></head><body><video src='one.mp4'>"
                                    "</video><video src='two.mp4'></video><video src='one.mp4?v=3'></video></body></html>")
    rows, _, counts = download([Source("url", f"{base}/list.html", 2)], out, FAST)
    assert counts == {"kept": 2, "fetched": 1, "removed": 0}  # the list grew by one video
    _write_manifest(out, rows)
    (root / "list.html").unlink()  # the playlist cannot be listed again: its videos must not be deleted
    with pytest.raises(DownloadFailed, match="no usable source"):  # nothing new: the run fails, the folder stays
        download([Source("url", f"{base}/list.html", 2)], out, FAST)
    failures = json.loads((out / "failures.json").read_text())
    assert len(failures) == 1 and "404" in failures[0]["reason"]
    assert sorted(failures[0]["kept_from_last_run"]) == sorted(r["source_id"] for r in rows)
    assert all((out / r["audio_path"]).exists() for r in rows)
    # Beside another source that still works, the playlist's videos stay in the manifest.
    ffmpeg_tone(tmp_path / "local.wav", seconds=2.5)
    again, failures, counts = download([Source("url", f"{base}/list.html", 2),
                                        Source("file", str(tmp_path / "local.wav"), 3)], out, FAST)
    assert len(failures) == 1 and counts["removed"] == 0
    assert {r["source_id"] for r in rows} < {r["source_id"] for r in again}
