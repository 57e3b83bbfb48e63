"""Where an official BEATs checkpoint comes from: a local file, the official link, or a re-host.

The official links (the BEATs release's Azure blob, with a signed query string) have
broken several times, and users fall back on copies on the Hugging Face hub. `resolve`
accepts any of:

- a path to a local file (what to use offline);
- a checkpoint name (``BEATs_iter3``, ``BEATs_iter3_plus_AS2M``, ...): the official link;
- ``<name>@<host>`` (e.g. ``BEATs_iter3_plus_AS2M@huggingface``): a named re-host;
- any ``http(s)://`` URL.

A download goes to a cache folder (resumable, `asdlib.download.fetch_file`); its SHA-256 is
compared with the value recorded for that source where one is known, and every file must
load as a BEATs checkpoint with strict key matching (`asdlib.encoder.load_beats`). When
nothing can be downloaded, the error says which links to fetch on a machine with internet
and to pass the file with ``--encoder``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from asdlib import atomic

_SAS = ("?sv=2020-08-04&st=2023-03-01T07%3A51%3A05Z&se=2033-03-02T07%3A51%3A00Z&sr=c&sp=rl"
        "&sig=QJXmSJG9DbMKf48UDIU1MfzIro8HQOf3sqlNXiflY1I%3D")
_OFFICIAL = "https://valle.blob.core.windows.net/share/BEATs/{file}" + _SAS
_HF = "https://huggingface.co/lpepino/beats_ckpts/resolve/main/{file}"


class CheckpointSourceError(RuntimeError):
    """A checkpoint that cannot be found, downloaded or verified; the message says what to do."""


@dataclass(frozen=True)
class Source:
    """One published checkpoint: its file name, official link, re-hosts and known hashes
    (``sha256``: source name -> hex digest, where one was recorded)."""

    file: str
    rehosts: dict = field(default_factory=dict)
    sha256: dict = field(default_factory=dict)

    @property
    def official(self) -> str:
        return _OFFICIAL.format(file=self.file)

    def url(self, host: str | None = None) -> str:
        if host in (None, "official"):
            return self.official
        if host not in self.rehosts:
            raise CheckpointSourceError(f"{self.file}: no re-host named {host!r}; known: "
                                        f"official, {', '.join(self.rehosts)}")
        return self.rehosts[host]


#: The BEATs checkpoints the pipeline can start from. The iter3+ AS2M hash is the size and
#: SHA-256 recorded for the Hugging Face copy (361,499,833 bytes).
CHECKPOINTS: dict[str, Source] = {
    name: Source(f"{name}.pt", {"huggingface": _HF.format(file=f"{name}.pt")},
                 {"huggingface": digest} if digest else {})
    for name, digest in (
        ("BEATs_iter3", None),
        ("BEATs_iter3_plus_AS20K", None),
        ("BEATs_iter3_plus_AS2M", "d43cbfad4d7b56381c061d7a24774f908d4d94c72961f6eb1d9090ff18cd8d34"),
    )
}
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asdlib" / "checkpoints"


def _offline_hint(name: str, host: str | None) -> str:
    source = CHECKPOINTS[name]
    links = [source.official] + list(source.rehosts.values())
    return (f"Offline: download {source.file} from one of {links} on a machine with internet, "
            f"copy it here and pass its path (--encoder /path/{source.file}).")


def _verify(path: Path, expected: str | None) -> Path:
    from asdlib.encoder import CheckpointError, load_beats

    if expected:
        digest = atomic.file_sha256(path)
        if digest != expected:
            raise CheckpointSourceError(
                f"{path}: SHA-256 {digest[:16]}... differs from the recorded {expected[:16]}...; "
                "the download is damaged or another file: delete it and download again")
    try:
        load_beats(path, device="cpu")
    except CheckpointError as exc:
        raise CheckpointSourceError(f"{path} is not a usable BEATs checkpoint: {exc}") from None
    return path


def resolve(spec: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
            progress: bool = True) -> Path:
    """A verified local checkpoint file for ``spec`` (see the module docstring)."""
    from asdlib.download import DownloadError, fetch_file

    text = str(spec)
    local = Path(text).expanduser()
    if local.is_file():
        return _verify(local, None)
    cache = Path(cache_dir) if cache_dir else CACHE
    if text.startswith(("http://", "https://")):
        target = cache / text.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        try:
            return _verify(fetch_file(text, target, "Offline: pass a local file with --encoder.",
                                      progress), None)
        except DownloadError as exc:
            raise CheckpointSourceError(str(exc)) from None
    name, _, host = text.partition("@")
    if name not in CHECKPOINTS:
        raise CheckpointSourceError(
            f"{text!r} is no file, URL or known checkpoint; known: {', '.join(CHECKPOINTS)} "
            "(optionally @<re-host>, e.g. BEATs_iter3_plus_AS2M@huggingface)")
    source = CHECKPOINTS[name]
    url = source.url(host or None)
    target = cache / (host or "official") / source.file
    try:
        path = fetch_file(url, target, _offline_hint(name, host or None), progress)
    except DownloadError as exc:
        raise CheckpointSourceError(str(exc)) from None
    return _verify(path, source.sha256.get(host or "official"))
