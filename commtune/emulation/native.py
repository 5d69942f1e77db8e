"""Compiling the small C helpers shipped with the package, cached by content hash."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from commtune.errors import CommtuneError

NFQ_INSTALL_HINT = "apt-get install -y libnetfilter-queue-dev iptables"


def _source(name: str) -> bytes:
    return resources.files("commtune.emulation").joinpath(name).read_bytes()


def compile_helper(source_name: str, out_dir: Path, *, shared: bool, libs: tuple[str, ...] = (),
                   source: bytes | None = None) -> Path:
    """Compile ``source_name`` (package data; or the text ``source`` under that name, e.g. an older
    revision of it) into ``out_dir``; reuse a build of identical source and flags."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise CommtuneError("the emulated cluster compiles small C helpers but no gcc/cc is on PATH; install: apt-get install -y gcc")
    src = _source(source_name) if source is None else source
    flags = ["-O2", "-Wall", *(["-shared", "-fPIC"] if shared else [])]
    digest = hashlib.sha256(src + repr((flags, libs)).encode()).hexdigest()[:16]
    stem = Path(source_name).stem
    out = out_dir / f"{stem}-{digest}{'.so' if shared else ''}"
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    src_path = out_dir / f"{stem}-{digest}.c"
    src_path.write_bytes(src)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    argv = [cc, *flags, "-o", str(tmp), str(src_path), *[f"-l{lib}" for lib in libs]]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        err = " ".join(proc.stderr.split())
        if "libnetfilter_queue" in err or "nfnetlink" in err:
            raise CommtuneError(f"latency emulation needs libnetfilter_queue; install: {NFQ_INSTALL_HINT}")
        raise CommtuneError(f"compiling {source_name} failed: {' '.join(argv)}: {err[:400]}")
    os.replace(tmp, out)
    return out


def pacing_shim(out_dir: Path) -> Path:
    """The LD_PRELOAD shim that caps each TCP socket's pacing rate (``COMMTUNE_PACING_BPS``)."""
    return compile_helper("pacing_shim.c", out_dir, shared=True, libs=("dl",))


def nfq_delay(out_dir: Path, source: bytes | None = None) -> Path:
    """The NFQUEUE delay program (holds each packet a fixed time); ``source``: another text of it."""
    return compile_helper("nfq_delay.c", out_dir, shared=False, libs=("netfilter_queue", "nfnetlink"), source=source)
