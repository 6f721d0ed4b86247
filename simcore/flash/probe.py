"""``simcore probe-flash``: measure a storage device's random-read throughput by request size and queue
depth, the way fio's ``randread`` does, and write it as a device profile's ``flash_curve``.

A test file of incompressible data is written and fsync'd, then read at random offsets aligned to
4096 bytes. A queue depth of N is N threads, each issuing blocking ``pread`` on its own file descriptor
(``pread`` releases the GIL, so N requests are in flight). The OS cache is bypassed where the OS allows
it (Linux and Android: ``O_DIRECT``; macOS: ``F_NOCACHE``); where the file system refuses (tmpfs), the
reads are buffered, the cache is dropped before each point as far as ``posix_fadvise`` can, and the
result says the figures may include the OS cache. The test file is always removed.
"""

from __future__ import annotations

import datetime
import errno
import json
import mmap
import os
import platform
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

import click

from simcore.errors import ConfigError
from simcore.units import format_bytes, parse_bandwidth, parse_size

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

ALIGN = 4096
"""Offsets and request sizes are multiples of this (O_DIRECT needs the logical block; 4096 covers 512 too)."""
DEFAULT_SIZES = tuple(ALIGN << i for i in range(9))
"""Request sizes measured by default: 4 KiB, 8 KiB, ... 1 MiB."""
DEFAULT_QUEUE_DEPTHS = (1, 4, 16, 32)
MAX_QUEUE_DEPTH = 256
DEFAULT_FILE_BYTES = 10**9
FREE_MARGIN_BYTES = 256 * 10**6
"""Free space the test file leaves on its file system."""
MIN_FILE_REQUESTS = 16
"""The test file holds at least this many of the largest requests, so offsets are spread out."""
WRITE_CHUNK = 8 << 20
DEFAULT_SECONDS = 0.5
DEFAULT_TIME_LIMIT = 300.0
RAM_FILE_SYSTEMS = ("tmpfs", "ramfs", "devtmpfs")
_F_NOCACHE = getattr(fcntl, "F_NOCACHE", 48 if sys.platform == "darwin" else None)
_F_RDAHEAD = getattr(fcntl, "F_RDAHEAD", 45 if sys.platform == "darwin" else None)


# --- validation of the user's settings ------------------------------------------------------------------


def parse_request_sizes(values: Sequence[int | str]) -> list[int]:
    """Request sizes in bytes, increasing and without repeats, from ``4KiB``-like strings or ints; each a
    positive multiple of 4096 (a ConfigError otherwise)."""
    if not values:
        raise ConfigError("no request sizes given: give --sizes such as 4KiB,64KiB,1MiB")
    out = set()
    for v in values:
        n = parse_size(str(v).strip() if isinstance(v, str) else v, "request size")
        if n <= 0 or n % ALIGN:
            hint = (
                f"; write {v.strip().upper().replace('B', 'iB')} (KB is 1000 bytes, KiB 1024)"
                if isinstance(v, str) and re.search(r"[kKmM][bB]\s*$", v)
                else ""
            )
            raise ConfigError(f"request size {v} is {n} bytes, not a positive multiple of {ALIGN}{hint}")
        out.add(n)
    return sorted(out)


def parse_queue_depths(values: Sequence[int | str]) -> list[int]:
    """Queue depths, increasing and without repeats: whole numbers from 1 to 256 (a ConfigError otherwise)."""
    if not values:
        raise ConfigError("no queue depths given: give --queue-depths such as 1,4,16,32")
    out = set()
    for v in values:
        try:
            q = int(str(v).strip())
        except ValueError:
            raise ConfigError(f"queue depth {v!r} is not a whole number; give depths such as 1,4,16,32") from None
        if not 1 <= q <= MAX_QUEUE_DEPTH:
            raise ConfigError(f"queue depth {q} is out of range: give whole numbers from 1 to {MAX_QUEUE_DEPTH}")
        out.add(q)
    return sorted(out)


def _comma_list(option: str, text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [s.strip() for s in text.split(",")]
    if not all(items):
        raise ConfigError(f"{option} {text!r} has an empty item; give a comma-separated list such as 1,4,16")
    return items


def _test_file(path: str | os.PathLike) -> Path:
    """Where the test file goes: inside ``path`` if it is a directory, else at ``path`` (which must not exist)."""
    p = Path(path)
    if p.is_dir():
        target = p / f".simcore-probe-{os.getpid()}-{random.getrandbits(32):08x}.tmp"
    elif p.exists() or p.is_symlink():
        raise ConfigError(
            f"{p} already exists and is not a directory; give a directory or the name of a file that does not "
            "exist yet (the test file is created there and removed at the end)"
        )
    elif not p.parent.is_dir():
        raise ConfigError(f"directory {p.parent} does not exist; give an existing directory on the storage to measure")
    else:
        target = p
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create a test file in {target.parent}: permission denied; give a writable directory")
    return target


def _file_bytes(size: int | str | None, directory: Path, largest: int) -> int:
    """The test file's size: ``size`` (or 1 GB, capped by the free space), rounded down to 4096 bytes; a
    ConfigError when it does not fit in the free space less FREE_MARGIN_BYTES or cannot hold the requests."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    room = free - FREE_MARGIN_BYTES
    if size is None:
        want = min(DEFAULT_FILE_BYTES, room)
    else:
        want = parse_size(size, "--size")
        if want > room:
            raise ConfigError(
                f"--size {format_bytes(want)} does not fit: {directory} has {format_bytes(free)} free and "
                f"{format_bytes(FREE_MARGIN_BYTES)} must stay free; give --size {format_bytes(max(room, 0))} or less"
            )
    need = max(MIN_FILE_REQUESTS * largest, 2 * ALIGN)
    if want < need:
        why = f"--size {format_bytes(want)}" if size is not None else f"only {format_bytes(free)} free in {directory}"
        raise ConfigError(
            f"{why}: the test file needs at least {format_bytes(need)} ({MIN_FILE_REQUESTS} requests of "
            f"{_size_label(largest)}); free some space, give a larger --size or smaller --sizes"
        )
    return want // ALIGN * ALIGN


# --- the platform: cache bypass, file system, host ----------------------------------------------------


def _no_cache(fd: int) -> bool:
    """Turn off the OS cache for ``fd`` where the OS can (macOS F_NOCACHE, and no read-ahead); False if not."""
    if fcntl is None or _F_NOCACHE is None:
        return False
    try:
        fcntl.fcntl(fd, _F_NOCACHE, 1)
    except OSError:
        return False
    if _F_RDAHEAD is not None:
        with suppress(OSError):
            fcntl.fcntl(fd, _F_RDAHEAD, 0)
    return True


def _advise(fd: int, *advice: str) -> None:
    """``posix_fadvise`` of the whole file, where the OS has it (not macOS)."""
    for name in advice:
        if hasattr(os, "posix_fadvise") and hasattr(os, name):
            with suppress(OSError):
                os.posix_fadvise(fd, 0, 0, getattr(os, name))


def _filesystem(directory: Path) -> str | None:
    """The type of the file system holding ``directory`` (``ext4``, ``f2fs``, ``tmpfs``), from
    /proc/self/mounts where there is one (Linux, Android); None elsewhere."""
    try:
        real = os.path.realpath(directory)
        best, kind = "", None
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, fields[2]
        return kind
    except OSError:
        return None


def _os_description() -> str:
    if hasattr(sys, "getandroidapilevel"):
        return f"Android (API {sys.getandroidapilevel()}) {platform.machine()}"
    if sys.platform == "darwin":
        return f"macOS {platform.mac_ver()[0]} {platform.machine()}"
    return f"{platform.system()} {platform.release()} {platform.machine()}"


def host_name() -> str:
    """A profile name for this machine: the phone model on Android (``getprop``), else the host name."""
    name = ""
    if "ANDROID_ROOT" in os.environ or hasattr(sys, "getandroidapilevel"):
        with suppress(OSError, subprocess.SubprocessError):
            name = subprocess.run(
                ["getprop", "ro.product.model"], capture_output=True, text=True, timeout=5, check=False
            ).stdout.strip()
    name = name or platform.node()
    name = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return name or "my-device"


# --- the measurement ------------------------------------------------------------------------------------


class _Reader:
    """One file descriptor of the test file and a page-aligned buffer of ``capacity`` bytes to read into."""

    def __init__(self, path: Path, capacity: int, direct: bool):
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | (os.O_DIRECT if direct else 0)
        self.fd = os.open(path, flags)
        self.buf = mmap.mmap(-1, capacity)  # anonymous maps are page-aligned, as O_DIRECT needs
        self.views: dict[int, memoryview] = {}

    def read(self, offset: int, nbytes: int) -> None:
        """Read ``nbytes`` at ``offset``; OSError on failure or a short read."""
        if hasattr(os, "preadv"):
            view = self.views.get(nbytes)
            if view is None:
                view = self.views[nbytes] = memoryview(self.buf)[:nbytes]
            got = os.preadv(self.fd, [view], offset)
        else:  # no preadv (older macOS Pythons): F_NOCACHE needs no aligned buffer
            got = len(os.pread(self.fd, nbytes, offset))
        if got != nbytes:
            raise OSError(errno.EIO, f"short read: {got} of {nbytes} bytes at offset {offset}")

    def close(self) -> None:
        for view in self.views.values():
            view.release()
        self.views.clear()
        with suppress(OSError):
            os.close(self.fd)
        self.buf.close()


def _open_readers(path: Path, count: int, capacity: int) -> tuple[list[_Reader], str]:
    """``count`` readers of ``path`` and how they bypass the cache: ``"O_DIRECT"``, ``"F_NOCACHE"`` or
    ``"buffered"`` (when the file system refuses O_DIRECT, e.g. tmpfs, or the OS has no bypass)."""
    mode = "buffered"
    if hasattr(os, "O_DIRECT"):
        try:
            trial = _Reader(path, ALIGN, direct=True)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
        else:
            try:
                trial.read(0, ALIGN)
                mode = "O_DIRECT"
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
            finally:
                trial.close()
    readers: list[_Reader] = []
    try:
        for _ in range(count):
            r = _Reader(path, capacity, direct=mode == "O_DIRECT")
            readers.append(r)
            if mode != "O_DIRECT":
                mode = "F_NOCACHE" if _no_cache(r.fd) else "buffered"
                _advise(r.fd, "POSIX_FADV_RANDOM")
    except BaseException:
        for r in readers:
            r.close()
        raise
    return readers, mode


def _write_test_file(fd: int, nbytes: int, deadline: float, bar) -> None:
    """Fill ``fd`` with ``nbytes`` of random (incompressible) data in large chunks, fsync it and drop it
    from the OS cache; a ConfigError if the disk fills up or ``deadline`` (time.monotonic) passes."""
    _no_cache(fd)
    written = 0
    try:
        while written < nbytes:
            view = memoryview(os.urandom(min(WRITE_CHUNK, nbytes - written)))
            while view:
                k = os.write(fd, view)
                view = view[k:]
                written += k
                if bar is not None:
                    bar.update(k)
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"writing the {format_bytes(nbytes)} test file took longer than the time limit allows "
                    f"({format_bytes(written)} written); give a smaller --size or a larger --time-limit"
                )
        os.fsync(fd)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ConfigError(
                f"the file system filled up after {format_bytes(written)} of the {format_bytes(nbytes)} test file; "
                "give a smaller --size"
            ) from None
        raise
    _advise(fd, "POSIX_FADV_DONTNEED")


def _measure_point(readers: list[_Reader], request_bytes: int, file_bytes: int, seconds: float) -> dict:
    """Random aligned reads of ``request_bytes`` by ``len(readers)`` threads for about ``seconds``; each
    thread issues at least one request. Returns requests, seconds (first start to last finish) and GB/s.
    An error in any thread stops the others and is raised here."""
    depth = len(readers)
    slots = (file_bytes - request_bytes) // ALIGN + 1
    barrier = threading.Barrier(depth)
    stop = threading.Event()
    starts, ends, counts = [0.0] * depth, [0.0] * depth, [0] * depth
    errors: list[BaseException] = []

    def work(i: int) -> None:
        reader, rng, n = readers[i], random.Random(), 0
        try:
            barrier.wait()
            starts[i] = t = time.perf_counter()
            deadline = t + seconds
            while True:
                reader.read(rng.randrange(slots) * ALIGN, request_bytes)
                n += 1
                if stop.is_set() or time.perf_counter() >= deadline:
                    break
        except threading.BrokenBarrierError:
            return
        except BaseException as e:  # noqa: BLE001 -- raised again in the main thread
            errors.append(e)
            stop.set()
            barrier.abort()
        finally:
            ends[i], counts[i] = time.perf_counter(), n

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(depth)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.1)  # a short wait keeps Ctrl-C responsive
    finally:
        stop.set()
        barrier.abort()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    elapsed = max(ends) - min(starts)
    requests = sum(counts)
    return {
        "request_bytes": request_bytes,
        "queue_depth": depth,
        "requests": requests,
        "seconds": round(elapsed, 6),
        "gbps": float(f"{requests * request_bytes / elapsed / 1e9:.4g}"),
    }


def probe(
    path: str | os.PathLike,
    *,
    size: int | str | None = None,
    sizes: Sequence[int | str] = DEFAULT_SIZES,
    queue_depths: Sequence[int | str] = DEFAULT_QUEUE_DEPTHS,
    seconds: float = DEFAULT_SECONDS,
    time_limit: float = DEFAULT_TIME_LIMIT,
    progress: bool = False,
) -> dict:
    """Measure random-read throughput of the storage holding ``path`` at every request size of ``sizes``
    and queue depth of ``queue_depths``, for ``seconds`` each.

    ``path`` is a directory (the test file is created inside it) or a file name that does not exist yet.
    ``size``: the test file, ``256MB``-like or bytes (default 1 GB, capped by the free space less 256 MB).
    The reads plus writing the test file take at most about ``time_limit`` seconds (a ConfigError up
    front when the reads alone cannot fit). The test file is removed at the end, also on error or Ctrl-C.

    Returns a JSON-ready dict: ``points`` (one per size and depth: request_bytes, queue_depth, requests,
    seconds, gbps), ``curves`` ({queue depth: [[request bytes, GB/s], ...] by increasing size}), ``io``
    (``O_DIRECT``, ``F_NOCACHE`` or ``buffered``), ``cached`` (True when the OS cache may have answered
    some reads) and ``note`` (why, or ""), and how it was measured (``os``, ``directory``,
    ``filesystem``, ``block_bytes``, ``file_bytes``, ``seconds_per_point``, ``date``).
    """
    if not hasattr(os, "pread"):
        raise ConfigError("probe-flash needs os.pread, which this OS lacks; run it on Linux, Android or macOS")
    nbytes = parse_request_sizes(sizes)
    depths = parse_queue_depths(queue_depths)
    if not (seconds > 0 and seconds < float("inf")):
        raise ConfigError(f"--seconds must be a positive number of seconds per point, got {seconds}")
    if not time_limit > 0:
        raise ConfigError(f"--time-limit must be a positive number of seconds, got {time_limit}")
    points = [(b, q) for b in nbytes for q in depths]
    reads_seconds = len(points) * seconds
    if not reads_seconds < time_limit:
        raise ConfigError(
            f"{len(points)} points of {seconds:g} s take {reads_seconds:g} s, more than --time-limit {time_limit:g} s; "
            "give fewer --sizes or --queue-depths, a smaller --seconds or a larger --time-limit"
        )
    started = time.monotonic()
    target = _test_file(path)
    file_bytes = _file_bytes(size, target.parent, nbytes[-1])
    block_bytes = os.statvfs(target.parent).f_bsize
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise ConfigError(
            f"{target} appeared while probe-flash started; give a file name that does not exist"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot create the test file {target}: {e.strerror}; give a writable directory") from None
    readers: list[_Reader] = []
    bar = None
    try:
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=file_bytes, unit="B", unit_scale=True, desc="test file", file=sys.stderr, leave=False)
        try:
            _write_test_file(fd, file_bytes, started + time_limit - reads_seconds, bar)
        finally:
            os.close(fd)
            if bar is not None:
                bar.close()
        readers, io = _open_readers(target, depths[-1], nbytes[-1])
        filesystem = _filesystem(target.parent)
        if progress:
            bar = tqdm(total=len(points), unit="point", desc="reads", file=sys.stderr, leave=False)
        measured = []
        for b, q in points:
            if bar is not None:
                bar.set_postfix_str(f"{_size_label(b)} QD{q}")
            if io == "buffered":
                _advise(readers[0].fd, "POSIX_FADV_DONTNEED")
            measured.append(_measure_point(readers[:q], b, file_bytes, seconds))
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
        for r in readers:
            r.close()
        with suppress(FileNotFoundError):
            os.unlink(target)
    note = ""
    if filesystem in RAM_FILE_SYSTEMS:
        note = f"the file system is {filesystem}, in RAM: these are not Flash figures"
    elif io == "buffered":
        note = "buffered reads (the file system refused O_DIRECT): the figures may include the OS cache"
    return {
        "points": measured,
        "curves": {q: [[p["request_bytes"], p["gbps"]] for p in measured if p["queue_depth"] == q] for q in depths},
        "io": io,
        "cached": bool(note),
        "note": note,
        "os": _os_description(),
        "directory": str(target.parent.resolve()),
        "filesystem": filesystem,
        "block_bytes": block_bytes,
        "file_bytes": file_bytes,
        "seconds_per_point": seconds,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --- the device profile -----------------------------------------------------------------------------------


def device_profile(
    measured: dict,
    *,
    dram_bw_gbps: float | str | None = None,
    base: str | os.PathLike | None = None,
    name: str | None = None,
    queue_depth: int | None = None,
    page_bytes: int | str | None = None,
) -> dict:
    """A complete device profile (a dict in file order, validated by :class:`simcore.device.Device`) from
    ``probe``'s result: ``flash_curve`` at ``queue_depth`` (default the largest measured),
    ``flash_bw_gbps`` = its throughput at the largest request, ``flash_page_bytes`` (default 4096, or
    the file system's block if larger). The DRAM fields come from ``dram_bw_gbps`` and/or the profile
    ``base`` (a bundled name or YAML; ``dram_bw_gbps`` wins); one of the two is required."""
    from pydantic import ValidationError

    from simcore.device import Device, load_device

    if dram_bw_gbps is None and base is None:
        raise ConfigError(
            "a device profile needs the DRAM bandwidth: give --dram-bw GB/s (e.g. 60) or --base DEVICE to copy it from"
        )
    curves = measured["curves"]
    depth = max(curves) if queue_depth is None else queue_depth
    if depth not in curves:
        raise ConfigError(
            f"--queue-depth {depth} was not measured; choose one of --queue-depths {','.join(map(str, curves))}"
        )
    page = max(ALIGN, measured["block_bytes"]) if page_bytes is None else parse_size(page_bytes, "--page-bytes")
    if page <= 0:
        raise ConfigError(f"--page-bytes must be a positive number of bytes, got {page_bytes!r}")
    curve = [list(p) for p in curves[depth]]
    how = f"{measured['io']} reads" + (f" ({measured['note']})" if measured["note"] else "")
    where = f"{measured['filesystem']} at {measured['directory']}" if measured["filesystem"] else measured["directory"]
    description = f"measured by simcore probe-flash on {measured['os']}, file system {where}, {how}, {measured['date']}"
    source = (
        f"simcore probe-flash, {measured['date']}: random {ALIGN}-byte-aligned reads of a "
        f"{format_bytes(measured['file_bytes'])} test file, {measured['seconds_per_point']:g} s per point, "
        f"queue depth {depth} of {', '.join(map(str, curves))}; {how}"
    )
    profile: dict = {"name": name or host_name(), "description": description}  # in file order
    sources = [source]
    if dram_bw_gbps is not None:
        profile["dram_bw_gbps"] = parse_bandwidth(dram_bw_gbps, "--dram-bw")
        sources.append(f"dram_bw_gbps {profile['dram_bw_gbps']:g} given by the user (--dram-bw)")
    if base is not None:  # its Flash fields (the peak and energy too) describe another Flash part
        b = load_device(base)
        copied = {
            k: v
            for k, v in b.model_dump(exclude={"name", "description", "sources"}).items()
            if v is not None and not k.startswith("flash_") and k not in profile
        }
        profile.update(copied)
        sources.append(f"{', '.join(copied) or 'nothing'} from device {b.name} (--base; see its sources)")
    profile.update(
        {
            "flash_bw_gbps": curve[-1][1],
            "flash_page_bytes": page,
            "flash_queue_depth": depth,
            "flash_curve": curve,
            "sources": sources,
        }
    )
    try:
        Device.model_validate(profile)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(map(str, err["loc"]))
        why = err["msg"].removeprefix("Value error, ")
        raise ConfigError(
            f"the measured profile is not valid ({field + ': ' if field else ''}{why}); check --dram-bw or --base "
            "(Flash measured faster than DRAM usually means the OS cache answered the reads)"
        ) from None
    return profile


def profile_yaml(profile: dict) -> str:
    """The profile as YAML in the bundled files' layout: block lists, one ``[bytes, GB/s]`` curve point a line."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    class Point(list):
        pass

    Dumper.add_representer(Point, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
    data = dict(profile, flash_curve=[Point(p) for p in profile["flash_curve"]])
    head = "# Written by simcore probe-flash: Flash fields measured (see description and sources).\n"
    return head + yaml.dump(
        data, Dumper=Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000
    )


def format_table(measured: dict) -> str:
    """Request size x queue depth -> MB/s (10^6 bytes/s), plus how the reads were made."""
    curves = measured["curves"]
    sizes = [b for b, _ in next(iter(curves.values()))]
    lines = [f"{'request':>9}" + "".join(f"{'QD' + str(q):>10}" for q in curves) + "   MB/s"]
    for i, b in enumerate(sizes):
        lines.append(f"{_size_label(b):>9}" + "".join(f"{curves[q][i][1] * 1e3:>10.1f}" for q in curves))
    fs = f" ({measured['filesystem']})" if measured["filesystem"] else ""
    lines.append(
        f"{measured['io']} reads, {format_bytes(measured['file_bytes'])} test file in {measured['directory']}{fs}, "
        f"{measured['seconds_per_point']:g} s per point, {measured['os']}"
    )
    if measured["note"]:
        lines.append(f"warning: {measured['note']}")
    return "\n".join(lines)


def _size_label(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


# --- the command ------------------------------------------------------------------------------------------


@click.command(name="probe-flash")
@click.argument("path")
@click.option("--size", help="test file size, e.g. 256MB  [default: 1GB, capped by the free space less 256 MB]")
@click.option("--sizes", help="request sizes, comma-separated multiples of 4KiB  [default: 4KiB,8KiB,...,1MiB]")
@click.option("--queue-depths", default="1,4,16,32", show_default=True, help="queue depths (threads), comma-separated")
@click.option("--seconds", type=float, default=DEFAULT_SECONDS, show_default=True, help="time per point")
@click.option(
    "--time-limit", type=float, default=DEFAULT_TIME_LIMIT, show_default=True, help="bound on the whole run, s"
)
@click.option("--out", help="write a device profile YAML here (needs --dram-bw or --base)")
@click.option("--dram-bw", help="DRAM bandwidth of the device, GB/s, for the profile")
@click.option("--base", help="device (bundled name or YAML) whose non-Flash fields the profile copies")
@click.option("--name", help="profile name  [default: the phone model or host name]")
@click.option(
    "--queue-depth", type=int, help="measured queue depth whose curve goes in the profile  [default: the largest]"
)
@click.option(
    "--page-bytes", help="flash_page_bytes of the profile  [default: 4096, or the file system block if larger]"
)
@click.option("--json", "as_json", is_flag=True, help="print the measurement (and profile) as JSON")
@click.option("--progress/--no-progress", default=None, help="bars on stderr (default: when stderr is a terminal)")
def probe_flash(
    path,
    size,
    sizes,
    queue_depths,
    seconds,
    time_limit,
    out,
    dram_bw,
    base,
    name,
    queue_depth,
    page_bytes,
    as_json,
    progress,
):
    """Measure random-read throughput of the storage holding PATH (a directory, or a new file name) by
    request size and queue depth, and write it as a device profile for `simcore replay --device FILE`.

    \b
    Example (Termux on a phone; 60 GB/s is the phone's DRAM bandwidth):
      simcore probe-flash ~/ --size 1GB --dram-bw 60 --out my-phone.yaml
    """
    from simcore.results import atomic_write_bytes, check_output

    depths = _comma_list("--queue-depths", queue_depths)
    size_list = _comma_list("--sizes", sizes) or DEFAULT_SIZES
    profile_only = {"--out": out, "--name": name, "--queue-depth": queue_depth, "--page-bytes": page_bytes}
    wants_profile = dram_bw is not None or base is not None
    if not wants_profile and any(v is not None for v in profile_only.values()):
        given = next(k for k, v in profile_only.items() if v is not None)
        raise ConfigError(
            f"{given} shapes the device profile, which needs the DRAM bandwidth: give --dram-bw GB/s or --base DEVICE"
        )
    if wants_profile:  # settings of the profile are checked now, not after the measurement
        if dram_bw is not None:
            parse_bandwidth(dram_bw, "--dram-bw")
        if base is not None:
            from simcore.device import load_device

            load_device(base)
        if queue_depth is not None and queue_depth not in parse_queue_depths(depths):
            raise ConfigError(f"--queue-depth {queue_depth} is not among --queue-depths {queue_depths}; add it there")
        if page_bytes is not None and parse_size(page_bytes, "--page-bytes") <= 0:
            raise ConfigError(f"--page-bytes must be a positive number of bytes, got {page_bytes!r}")
        if out:
            check_output(out)
    measured = probe(
        path,
        size=size,
        sizes=size_list,
        queue_depths=depths,
        seconds=seconds,
        time_limit=time_limit,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    profile = None
    if wants_profile:
        profile = device_profile(
            measured, dram_bw_gbps=dram_bw, base=base, name=name, queue_depth=queue_depth, page_bytes=page_bytes
        )
        if out:
            atomic_write_bytes(out, profile_yaml(profile).encode())
    if as_json:
        click.echo(json.dumps({"measurement": measured, "profile": profile}, indent=2))
        return
    click.echo(format_table(measured))
    if profile is not None and out:
        click.echo(f"wrote {out} (flash_curve at queue depth {profile['flash_queue_depth']})")
    elif profile is not None:
        click.echo(profile_yaml(profile), nl=False)
