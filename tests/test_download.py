"""Official archives: catalogue, and download/resume/check/extract against a local server.

The test serves small zips itself over HTTP on 127.0.0.1 (ephemeral port, its own Range
support), so nothing leaves the machine.
"""

from __future__ import annotations

import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from asdlib import download
from asdlib.download import ArchiveError, DownloadError

PAYLOAD = 64 * 1024   # bytes per fake wav: the zips are stored, not compressed


# ----------------------------------------------------------------- catalogue

def test_official_archive_urls():
    dev = download.official_archives()
    assert [a.machine for a in dev] == list(download.DEV_MACHINES)
    fan = next(a for a in dev if a.machine == "fan")
    assert fan.url == "https://zenodo.org/records/19336329/files/dev_fan.zip"
    assert fan.dest_subdir == "dev_data/raw/fan"
    toycar = next(a for a in dev if a.machine == "ToyCar")
    assert toycar.name == "dev_ToyCar_r2.zip"
    assert toycar.url == "https://zenodo.org/records/19336329/files/dev_ToyCar_r2.zip"
    assert toycar.dest_subdir == "dev_data/raw/ToyCar"
    ev = download.official_archives(["ToyDrone"], splits=("eval_train", "eval_test"))
    assert [(a.name, a.url, a.dest_subdir) for a in ev] == [
        ("eval_data_ToyDrone_train.zip",
         "https://zenodo.org/records/20151556/files/eval_data_ToyDrone_train.zip",
         "eval_data/raw/ToyDrone"),
        ("eval_data_ToyDrone_test.zip",
         "https://zenodo.org/records/20437238/files/eval_data_ToyDrone_test.zip",
         "eval_data/raw/ToyDrone")]
    assert len(download.official_archives(splits=("dev", "eval_train", "eval_test"))) == 7 + 10
    # machines are matched to the splits they belong to; spelling case is forgiven
    mixed = download.official_archives(["toycaremu", "Sander"], splits=("dev", "eval_train"))
    assert [a.name for a in mixed] == ["dev_ToyCarEmu.zip", "eval_data_Sander_train.zip"]


def test_official_archive_errors():
    with pytest.raises(ValueError, match=r"unknown machine 'drill'.*bearingEmu.*ToyDrone"):
        download.official_archives(["drill"])
    with pytest.raises(ValueError, match=r"unknown split.*'dev', 'eval_train', 'eval_test'"):
        download.official_archives(["fan"], splits=("train",))
    with pytest.raises(ValueError, match=r"'ToyDrone' is in none of the splits \['dev'\]"):
        download.official_archives(["ToyDrone"], splits=("dev",))


def test_plan_extraction_relocates_and_rejects_unsafe_paths():
    plan = download.plan_extraction([
        "dev_data/", "dev_data/raw/fan/train/a.wav", "dev_data/raw/fan/test/b.wav",
        "dev_data/raw/fan/attributes_00.csv", "__MACOSX/dev_data/._a.wav", "README.txt"])
    assert plan == {"dev_data/raw/fan/train/a.wav": "train/a.wav",
                    "dev_data/raw/fan/test/b.wav": "test/b.wav",
                    "dev_data/raw/fan/attributes_00.csv": "attributes_00.csv",
                    "README.txt": "README.txt"}
    assert download.plan_extraction(["train/a.wav"]) == {"train/a.wav": "train/a.wav"}
    with pytest.raises(ArchiveError, match="unsafe"):
        download.plan_extraction(["fan/../../evil/train/x.wav"])
    with pytest.raises(ArchiveError, match="several machine folders"):
        download.plan_extraction(["fan/train/a.wav", "valve/train/a.wav"])
    with pytest.raises(ArchiveError, match="no train/ or test/"):
        download.plan_extraction(["fan/a.wav"])


# ----------------------------------------------------------------- local server

def make_zip(folder: str, subdirs=("train", "test"), seed: int = 0) -> bytes:
    """A small archive shaped like an official one, members under ``folder``."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        prefix = f"{folder}/" if folder else ""
        for sub in subdirs:
            for i in range(2):
                zf.writestr(f"{prefix}{sub}/section_00_source_{sub}_normal_{i:04d}_spd_1.wav",
                            rng.bytes(PAYLOAD))
        zf.writestr(f"{prefix}attributes_00.csv", "file_name,d1p,d1v\n")
    return buf.getvalue()


class FileServer:
    """Serves ``files`` (name -> bytes) on 127.0.0.1 with optional Range support.

    Records every request's Range header and counts the body bytes sent.
    """

    def __init__(self, files: dict[str, bytes], honour_range: bool = True,
                 cut_first_response_at: int | None = None):
        self.files = files
        self.honour_range = honour_range
        self.cut_first_response_at = cut_first_response_at
        self.requests: list[tuple[str, str | None]] = []
        self.bytes_sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):   # keep test output quiet
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = 0
                if rng and server.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_first_response_at is not None:
                    body = body[:server.cut_first_response_at]   # connection drops mid-way
                    server.cut_first_response_at = None
                    self.close_connection = True
                self.wfile.write(body)
                server.bytes_sent += len(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def closed_port_url() -> str:
    """A loopback URL nobody listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch):
    monkeypatch.setattr(download, "RETRY_PAUSE_S", 0.0)


def _fetch(root, server, machines=("fan",), splits=("dev",), **kw):
    return download.download_archives(root, list(machines), splits, base_url=server.url,
                                      progress=False, timeout=10, **kw)


# ----------------------------------------------------------------- download tests

def test_download_extracts_into_official_layout(tmp_path):
    files = {"dev_fan.zip": make_zip("fan"),
             "dev_ToyCar_r2.zip": make_zip("ToyCar_r2", seed=1),          # renamed folder
             "eval_data_ToyDrone_train.zip": make_zip("ToyDrone", ("train",), seed=2),
             "eval_data_ToyDrone_test.zip": make_zip("eval_data/raw/ToyDrone", ("test",), 3)}
    with FileServer(files) as server:
        res = _fetch(tmp_path, server, ["fan", "ToyCar"])
        res += _fetch(tmp_path, server, ["ToyDrone"], ("eval_train", "eval_test"))
        assert [r.status for r in res] == ["extracted"] * 4
        for machine, dataset, subdirs in [("fan", "dev", ("train", "test")),
                                          ("ToyCar", "dev", ("train", "test")),
                                          ("ToyDrone", "eval", ("train", "test"))]:
            mdir = tmp_path / f"{dataset}_data" / "raw" / machine
            assert (mdir / "attributes_00.csv").is_file()
            for sub in subdirs:
                assert len(list((mdir / sub).glob("*.wav"))) == 2, (machine, sub)
        wav = tmp_path / "dev_data/raw/fan/train/section_00_source_train_normal_0000_spd_1.wav"
        with zipfile.ZipFile(io.BytesIO(files["dev_fan.zip"])) as zf:
            assert wav.read_bytes() == zf.read(
                "fan/train/section_00_source_train_normal_0000_spd_1.wav")
        assert not list((tmp_path / "dev_data" / "raw").glob(".*"))   # no staging left
        # a second call is a no-op without network
        n = len(server.requests)
        again = _fetch(tmp_path, server, ["fan"])
        assert [r.status for r in again] == ["skipped"] and len(server.requests) == n


def test_resume_fetches_only_the_rest(tmp_path):
    data = make_zip("fan")
    have = len(data) // 3
    part = tmp_path / "archives" / "dev_fan.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:have])
    with FileServer({"dev_fan.zip": data}) as server:
        _fetch(tmp_path, server)
        assert server.requests == [("dev_fan.zip", f"bytes={have}-")]
        assert server.bytes_sent == len(data) - have
    assert (tmp_path / "archives" / "dev_fan.zip").read_bytes() == data
    assert not part.exists()
    assert (tmp_path / "dev_data/raw/fan/test").is_dir()


def test_restart_when_server_ignores_range(tmp_path):
    data = make_zip("fan")
    part = tmp_path / "archives" / "dev_fan.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes that must not survive")
    with FileServer({"dev_fan.zip": data}, honour_range=False) as server:
        _fetch(tmp_path, server)
        assert server.bytes_sent == len(data)
    assert (tmp_path / "archives" / "dev_fan.zip").read_bytes() == data


def test_broken_stream_is_resumed(tmp_path):
    data = make_zip("fan")
    cut = len(data) // 2
    with FileServer({"dev_fan.zip": data}, cut_first_response_at=cut) as server:
        _fetch(tmp_path, server)
        assert server.requests == [("dev_fan.zip", None), ("dev_fan.zip", f"bytes={cut}-")]
        assert server.bytes_sent == len(data)
    assert (tmp_path / "dev_data/raw/fan/train").is_dir()


def test_corrupt_zip_is_reported_and_not_extracted(tmp_path):
    data = bytearray(make_zip("fan"))
    data[200] ^= 0xFF                      # inside the first member's bytes: bad CRC
    with FileServer({"dev_fan.zip": bytes(data)}) as server:
        with pytest.raises(ArchiveError, match=r"dev_fan\.zip is corrupt.*Nothing was extracted"):
            _fetch(tmp_path, server)
    assert not (tmp_path / "dev_data").exists()
    assert (tmp_path / "archives" / "dev_fan.zip.corrupt").is_file()
    assert not (tmp_path / "archives" / "dev_fan.zip").exists()
    # a truncated file that is no zip at all
    with FileServer({"dev_fan.zip": make_zip("fan")[:1000]}) as server:
        with pytest.raises(ArchiveError, match="not a valid zip"):
            _fetch(tmp_path, server)
    assert not (tmp_path / "dev_data").exists()


def test_offline_gives_clear_message(tmp_path):
    url = closed_port_url()
    with pytest.raises(DownloadError) as info:
        download.download_archives(tmp_path, ["fan"], ("dev",), base_url=url, progress=False,
                                   timeout=5)
    msg = str(info.value)
    assert f"{url}/dev_fan.zip" in msg and "offline" in msg
    assert "https://zenodo.org/records/19336329/files/dev_fan.zip" in msg   # what to fetch
    assert str(tmp_path / "archives" / "dev_fan.zip") in msg              # where to put it
    assert not (tmp_path / "dev_data").exists()


def test_missing_file_on_server(tmp_path):
    with FileServer({}) as server:
        with pytest.raises(DownloadError, match=r"dev_fan\.zip failed: HTTP 404"):
            _fetch(tmp_path, server)


def test_archive_placed_by_hand_needs_no_network(tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    (archives / "dev_valveEmu.zip").write_bytes(make_zip("valveEmu"))
    res = download.download_archives(tmp_path, ["valveEmu"], ("dev",),
                                     base_url=closed_port_url(), progress=False,
                                     keep_archives=False)
    assert res[0].status == "extracted"
    assert res[0].path == tmp_path / "dev_data" / "raw" / "valveEmu"
    assert len(list((res[0].path / "train").glob("*.wav"))) == 2
    assert not (archives / "dev_valveEmu.zip").exists()      # keep_archives=False


def test_complete_part_needs_no_bytes(tmp_path):
    data = make_zip("fan")
    part = tmp_path / "archives" / "dev_fan.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)                   # interrupted just before the rename
    with FileServer({"dev_fan.zip": data}) as server:
        _fetch(tmp_path, server)
        assert server.bytes_sent == 0        # the server answered 416: nothing left
    assert (tmp_path / "dev_data/raw/fan/train").is_dir()


def test_earlier_years_archives():
    from asdlib import download

    dev2023 = download.official_archives(splits=("dev",), year=2023)
    assert [a.machine for a in dev2023] == ["bearing", "fan", "gearbox", "slider", "ToyCar",
                                             "ToyTrain", "valve"]
    assert dev2023[0].url == "https://zenodo.org/records/7882613/files/dev_bearing.zip"
    names = {a.machine: a.name for a in download.official_archives(splits=("eval_train",), year=2024)}
    assert names["3DPrinter"] == "eval_data_3DPrinter_train_r2.zip"
    assert names["ToothBrush"] == "eval_data_ToothBrush_train.zip"
    assert download.official_archives(["toyrccar"], ("eval_test",), year=2025)[0].url == \
        "https://zenodo.org/records/15519362/files/eval_data_ToyRCCar_test.zip"
    assert download.YEARS[2026].stereo and not download.YEARS[2025].stereo
    with pytest.raises(ValueError, match="unknown year"):
        download.official_archives(year=2019)
    with pytest.raises(ValueError, match="unknown machine 'bearingEmu' in 2024"):
        download.official_archives(["bearingEmu"], year=2024)
