"""The ``ipsecfast`` command line (argparse). Errors print a message and exit non-zero;
no traceback reaches the user."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from .exceptions import ConfigError, IpsecError

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config
    from .pcap import Capture
    from .router import Router


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(quiet=args.quiet)


def _load_config(path: str) -> Config:
    from .config import parse_config

    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text configuration (byte {err.start} is not "
                          "UTF-8)") from None
    return parse_config(text, source=path)


def _config_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print a ConfigError as IOS does (the caret under the bad token, so no prefix)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ConfigError as err:
            print(err, file=sys.stderr)
            return 2

    return run


@_config_errors
def _cmd_show(args: argparse.Namespace) -> int:
    from .show import show

    config = _load_config(args.config)
    sys.stdout.write(show(config, " ".join(args.words)))
    return 0


@_config_errors
def _cmd_check(args: argparse.Namespace) -> int:
    from .check import check_config, check_pair, exit_status, findings_json, format_findings

    config = _load_config(args.config)
    if args.peer_config:
        findings = check_pair(config, _load_config(args.peer_config))
    else:
        findings = check_config(config)
    sys.stdout.write(findings_json(findings) if args.json else format_findings(findings))
    return exit_status(findings)


# -- encrypt / decrypt / keys --------------------------------------------------------------

CHUNK_PACKETS = 1 << 16  # frames per router call: bounds the router's working memory
_KEYS_NOTE = ("The keys file is the one place ipsecfast writes keys out: it is created "
              "with mode 0600; keep it as secret as the configuration.")


_allocator_tuned: list[bool] = []


def tune_allocator() -> bool:
    """Keep large freed buffers in this process for reuse (glibc ``mallopt``): every
    buffer up to 32 MB comes from the heap, and up to 1 GB of free heap is kept instead of
    handed back to the kernel. ``run_pcap`` allocates a few such buffers per chunk
    (the router's output, the rebuilt frames, the pcap records); handed back and asked for
    again, each page costs a page fault on every chunk, which on a VM is most of the
    time of a pcap run (measured: ~10,000 faults and a third of the CPU time of a
    300K-packet encrypt). Process-wide and for the life of the process, so it is for a
    command: ``ipsecfast encrypt`` / ``decrypt`` call it (and ``bench/router.py``, which
    measures them); a program that embeds ``run_pcap`` may call it too. True when applied
    (Linux with glibc)."""
    if _allocator_tuned:
        return _allocator_tuned[0]
    ok = False
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
            ok = (mallopt(m_mmap_threshold, 32 << 20) == 1
                  and mallopt(m_trim_threshold, 1 << 30) == 1)
    _allocator_tuned.append(ok)
    return ok


def _pick_interface(config: Config, router: Router, wanted: str | None) -> str:
    """--interface (any spelling IOS accepts), else the only interface with a crypto map."""
    from .config import canonical_interface_name

    candidates = router.crypto_interfaces()
    if wanted is not None:
        name = canonical_interface_name(wanted) or wanted
        if name not in config.interfaces:
            known = ", ".join(config.interfaces) or "none"
            raise ValueError(f"interface {wanted!r} is not in the configuration (interfaces: {known})")
        return name
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError("no interface has a crypto map applied; nothing to "
                         "encrypt or decrypt (apply one with `crypto map NAME` under an interface)")
    raise ValueError(f"{len(candidates)} interfaces have a crypto map ({', '.join(candidates)}): "
                     "choose one with --interface")


def _passthrough(sub: Capture, bypass: Any) -> None:
    """Mark the bypassed IPv4 frames as not IPv4, so that ``replace_ip_packets`` copies
    them whole: link-layer trailers (Ethernet padding, FCS) and wire lengths included."""
    import numpy as np

    mask = sub.is_ipv4.copy()
    mask[np.flatnonzero(mask)[bypass]] = False
    sub.is_ipv4 = mask


def _stop_thread(stop: Any, waiting: Any, thread: Any) -> None:
    """Tell a pipeline thread to stop (its loops poll ``stop``), empty its queue so that
    a blocked ``put`` returns, and wait for it (``thread`` None: none was started)."""
    import queue

    stop.set()
    if thread is not None:
        with contextlib.suppress(queue.Empty):
            while True:
                waiting.get_nowait()
        thread.join()


def _preallocate(fd: int, nbytes: int) -> bool:
    """Allocate blocks for the first ``nbytes`` of the empty regular file ``fd`` at once
    (Linux ``fallocate`` with ``FALLOC_FL_KEEP_SIZE``: the file's size still grows with
    what is written, so a run killed half way leaves its records and nothing after them;
    the blocks past the end go back at ``_Writer.cut``). Writing into allocated blocks
    skips ext4's per-page delayed allocation: a 350 MB capture written in 256 KB pieces
    took 50 - 57 ms instead of 67 ms. Not tried when the file system has less room than
    ``nbytes`` (ext4 would take all of it before it fails). True when blocks were
    allocated (all, or the part a refusal left, which the cut gives back too); False
    where the call is missing or allocated nothing (another system, a file system
    without it). The file is never truncated here (ext4 flushes a file truncated to 0
    when it is closed)."""
    if not sys.platform.startswith("linux") or nbytes <= 0:
        return False
    import ctypes

    try:
        vfs = os.fstatvfs(fd)
        if vfs.f_bavail * vfs.f_frsize < nbytes:
            return False
        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = getattr(libc, "fallocate64", None) or libc.fallocate  # (64-bit offsets)
    except (OSError, AttributeError):
        return False
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fallocate.restype = ctypes.c_int
    keep_size = 1  # FALLOC_FL_KEEP_SIZE, <linux/falloc.h>
    if fallocate(fd, keep_size, 0, nbytes) == 0:
        return True
    try:
        return os.fstat(fd).st_blocks > 0
    except OSError:
        return False


def io_cpu() -> int | None:
    """The CPU that ``run_pcap``'s reader and writer threads share: the last one this
    process may use, when it may use two or more (None otherwise, or where the platform
    has no CPU affinity). Kept on one CPU, they never take the router's (and its crypto
    threads') CPUs from under it: on a 2-CPU machine this measured 3-5 % faster in the
    median of 8 runs of bench/router.py's GCM rows, and steadier."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None
    return max(cpus) if len(cpus) >= 2 else None


def _pin(cpu: int | None) -> None:
    """Keep the calling thread on ``cpu`` (no-op for None; a refusal is ignored)."""
    if cpu is not None:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.sched_setaffinity(0, {cpu})


class _Reader:
    """Scans the input capture a chunk ahead on a second thread while the router works on
    the current chunk (the compiled record scan and link-layer parse release the GIL). At
    most ``depth`` chunks wait. An error met while scanning is raised where its chunk
    would have been taken."""

    def __init__(self, chunks: Iterator[Any], threaded: bool = True, depth: int = 2,
                 cpu: int | None = None) -> None:
        import queue
        import threading

        self._chunks = chunks
        self._threaded = threaded
        self._cpu = cpu
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ipsecfast-reader", daemon=True)
        if threaded:
            self._thread.start()

    def _run(self) -> None:
        import queue

        item: tuple[str, Any]
        _pin(self._cpu)
        try:
            for chunk in self._chunks:
                item = ("chunk", chunk)
                while True:
                    if self._stop.is_set():
                        return
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            item = ("end", None)
        except BaseException as err:  # handed to the main thread by __iter__
            item = ("error", err)
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Any]:
        if not self._threaded:
            yield from self._chunks
            return
        while True:
            kind, item = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item

    def close(self) -> None:
        """Stop the scan (after an error or Ctrl-C on the main thread) and wait for it."""
        _stop_thread(self._stop, self._queue, self._thread if self._threaded else None)


class _Writer:
    """Rebuilds and writes the output chunks on a second thread while the router works on
    the next chunk: the compiled frame rebuild, the record formatting and the file write
    all release the GIL. At most ``depth`` chunks wait, so memory stays bounded."""

    def __init__(self, fh: IO[bytes], depth: int = 2, threaded: bool = True,
                 cpu: int | None = None, preallocated: bool = False) -> None:
        import queue
        import threading

        import numpy as np

        from .router import Verdict

        self._fh = fh
        self._threaded = threaded
        self._cpu = cpu
        self._queue: queue.Queue[tuple[Capture, Any, Any, Any] | None] = queue.Queue(
            maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._first = True
        # blocks were allocated past what is written (``_preallocate``): cut at close
        self.preallocated = preallocated
        self.packets = self.nbytes = self.snaplen = 0
        self.verdicts = np.zeros(len(Verdict), dtype=np.int64)  # packets put, by verdict
        self.reasons = np.zeros(256, dtype=np.int64)  # dropped packets, by reason
        self._thread = threading.Thread(target=self._run, name="ipsecfast-writer", daemon=True)
        if threaded:
            self._thread.start()

    def put(self, sub: Capture, packets: Any, verdict: Any, reason: Any) -> None:
        """Queue a chunk: its frames, the router's packets (aligned with its IPv4 frames),
        their verdicts and drop reasons (the writer itself counts them and picks what to
        write: less work on the router's thread)."""
        if self._error is not None:
            raise self._error
        if not self._threaded:
            self._write(sub, packets, verdict, reason)
            return
        self._queue.put((sub, packets, verdict, reason))

    def close(self) -> None:
        """Wait for every chunk to be written; re-raise what the writer met."""
        if self._threaded:
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error
        self.cut()
        if self.snaplen > 65535:
            # pcap.write sized the header's SnapLen for the first chunk only.
            self._fh.seek(16)
            self._fh.write(self.snaplen.to_bytes(4, "little"))

    def cut(self, strict: bool = True) -> None:
        """Give back the preallocated blocks past what was written (at the end of the
        records: call it with the writer stopped). ``strict=False``: after a failure,
        errors are ignored."""
        if not self.preallocated:
            return
        self.preallocated = False
        try:
            self._fh.flush()
            os.ftruncate(self._fh.fileno(), self._fh.tell())
        except (OSError, ValueError):
            if strict:
                raise

    def abort(self) -> None:
        """After a failure (Ctrl-C included): drop the chunks still waiting, let the one
        being written finish, and stop the thread; nothing is raised. Idempotent."""
        _stop_thread(self._stop, self._queue, self._thread if self._threaded else None)

    def _run(self) -> None:
        import queue

        _pin(self._cpu)
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return
            if self._error is None and not self._stop.is_set():
                try:
                    self._write(*item)
                except BaseException as err:  # handed to the main thread by put / close
                    self._error = err

    def _write(self, sub: Capture, packets: Any, verdict: Any, reason: Any) -> None:
        import numpy as np

        from .router import Verdict

        self.verdicts += np.bincount(verdict, minlength=len(Verdict))[:len(Verdict)]
        dropped = verdict == Verdict.DROP
        if dropped.any():
            self.reasons += np.bincount(reason[dropped], minlength=256)
        # bypassed frames are copied whole, dropped ones left out; the records straight
        # from the chunk and the router's packets, no rebuilt capture in between; the
        # file header before the first chunk only
        bypass = verdict == Verdict.BYPASS
        if bypass.any():
            _passthrough(sub, bypass)
            packets, verdict = packets[~bypass], verdict[~bypass]
        keep = verdict != Verdict.DROP
        frames, nbytes, longest = sub.write_replaced(self._fh, packets, keep,
                                                     file_header=self._first)
        self._first = False
        self.packets += frames
        self.nbytes += nbytes
        self.snaplen = max(self.snaplen, longest)


def _open_output(target: str) -> IO[bytes]:
    """The output capture, opened for writing. An existing regular file with one link is
    removed first and a new file made in its place, with the old permission bits, and
    never truncated: ext4 flushes a file truncated to 0 and rewritten when it is closed
    (its ``auto_da_alloc`` rule; 0.1 - 0.15 s for a 390 MB capture; even opening a file
    just created, with ``O_TRUNC``, sets it off); a new file is not flushed. A symlink or
    a hard link is written through, as before."""
    mode = None
    try:
        st = os.lstat(target)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
        with contextlib.suppress(OSError):
            os.unlink(target)
            mode = stat.S_IMODE(st.st_mode) & 0o777  # (no setuid / setgid / sticky)
    if mode is not None:
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                         0o600)
        except FileExistsError:  # made again in between: write through it
            return open(target, "wb")
        try:
            os.fchmod(fd, mode)
        except OSError:
            os.close(fd)
            raise
        return os.fdopen(fd, "wb")
    return open(target, "wb")


def run_pcap(
    router: Router,
    ifname: str,
    direction: str,
    source: str,
    target: str,
    *,
    chunk_packets: int = CHUNK_PACKETS,
    progress: bool = True,
    threaded: bool = True,
) -> dict[str, Any]:
    """Run the capture ``source`` through ``router.outbound`` (direction ``encrypt``) or
    ``router.inbound`` (``decrypt``) on ``ifname`` and write ``target``; returns the
    summary. Non-IPv4 and bypassed frames are copied unchanged, dropped ones left out,
    timestamps and link type kept. ``threaded``: scan (and prepare) the input a chunk
    ahead on one more thread and write the output on another, both kept to one CPU
    (``io_cpu``), while the router works on the current chunk, in tapered chunks
    (``pcap.iter_chunks(taper=True)``). An empty regular output file gets its blocks up
    front (``_preallocate``). The file header and the first chunk are read before the
    output file is made; a corrupt record further on stops the run and removes the
    partial output."""
    import numpy as np
    from tqdm import tqdm

    from . import pcap
    from .router import Verdict

    if chunk_packets < 1:
        raise ValueError("the chunk size must be at least 1 packet")
    if os.path.exists(target) and os.path.samefile(source, target):
        raise ValueError(f"{target}: the output would overwrite the input")
    process = router.outbound if direction == "encrypt" else router.inbound
    # the router's stateless first step (classification / SPI lookup), done for a chunk on
    # the reader thread while the router works on the one before (when it offers it)
    prepare = getattr(router, "prepare_outbound" if direction == "encrypt"
                      else "prepare_inbound", None)
    if prepare is not None and not _takes_prepared(process):
        prepare = None  # (a wrapped or stand-in router: its own first step only)

    def staged(chunks: Iterator[Capture]) -> Iterator[tuple[Capture, Any, Any]]:
        for sub in chunks:
            ip = sub.ip_packets()
            yield sub, ip, prepare(ifname, ip) if prepare is not None else None

    start = time.perf_counter()
    buf = pcap.map_file(source)
    chunks = staged(pcap.iter_chunks(buf, chunk_packets, taper=threaded))
    # the file header and the first chunk's records are checked before any output exists
    first = next(chunks)
    linktype = first[0].linktype
    n = n_ip = bytes_in = 0
    made: os.stat_result | None = None  # the output file, once this run has opened it
    try:
        with _open_output(target) as fh, tqdm(
            total=int(buf.size), unit="B", unit_scale=True, file=sys.stderr,
            disable=not progress, delay=0.5, leave=False, desc=direction,
        ) as bar:
            made = os.fstat(fh.fileno())
            # the output's blocks at once (a capture grows by about a quarter when
            # encrypted, shrinks when decrypted); the writer gives back what is unused
            preallocated = stat.S_ISREG(made.st_mode) and made.st_size == 0 and _preallocate(
                fh.fileno(), int(buf.size) + (int(buf.size) >> 2 if direction == "encrypt"
                                              else 0))
            cpu = io_cpu() if threaded else None
            writer = _Writer(fh, threaded=threaded, cpu=cpu, preallocated=preallocated)
            try:  # (the writer is stopped before the file is closed, whatever happens)
                reader = _Reader(chunks, threaded=threaded, cpu=cpu)
                try:
                    for sub, ip, pre in itertools.chain((first,), reader):
                        res = (process(ifname, ip) if pre is None
                               else process(ifname, ip, prepared=pre))
                        verdict = np.asarray(res.verdict)
                        n += len(sub)
                        n_ip += verdict.size
                        bytes_in += sub.frames.nbytes
                        # (the writer counts the verdicts and drop reasons)
                        writer.put(sub, res.packets, verdict, np.asarray(res.reason))
                        bar.update(sub.frames.nbytes + 16 * len(sub))
                finally:
                    reader.close()
                writer.close()
            except BaseException:
                writer.abort()
                writer.cut(strict=False)  # (what another link to the file keeps)
                raise
    except BaseException:
        # no half-written capture is left behind (Ctrl-C included): the regular file this
        # run opened and wrote, still at its path (through a symlink, the file it points
        # to); nothing it could not open, and never a device or other special file
        if made is not None and stat.S_ISREG(made.st_mode):
            with contextlib.suppress(OSError):
                real = os.path.realpath(target)
                now = os.lstat(real)
                if (now.st_dev, now.st_ino) == (made.st_dev, made.st_ino):
                    os.unlink(real)
        raise
    n_out, bytes_out = writer.packets, writer.nbytes
    verdicts, reasons = writer.verdicts, writer.reasons
    seconds = time.perf_counter() - start
    drops = {_reason_label(int(code)): int(reasons[code]) for code in np.flatnonzero(reasons)}
    return {
        "command": direction,
        "interface": ifname,
        "input": source,
        "output": target,
        "linktype": linktype,
        "packets_in": n,
        "ipv4": n_ip,
        "non_ipv4": n - n_ip,
        "protected": int(verdicts[Verdict.PROTECT]),
        "bypassed": int(verdicts[Verdict.BYPASS]),
        "dropped": int(verdicts[Verdict.DROP]),
        "dropped_by_reason": drops,
        "packets_out": n_out,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "seconds": round(seconds, 6),
        "packets_per_second": round(n / seconds, 1) if seconds > 0 else 0.0,
        "megabits_per_second": round(bytes_in * 8 / seconds / 1e6, 3) if seconds > 0 else 0.0,
    }


def _takes_prepared(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (a router's outbound / inbound) takes ``prepared=``."""
    import inspect

    try:
        return "prepared" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _reason_label(code: int) -> str:
    from .status import Status

    try:
        return Status(code).label
    except ValueError:
        return f"code-{code}"


def format_summary(s: dict[str, Any]) -> str:
    did = "protected" if s["command"] == "encrypt" else "decapsulated"
    drops = ", ".join(f"{k} {v}" for k, v in sorted(s["dropped_by_reason"].items()))
    lines = [
        f"{s['command']} on {s['interface']}: {s['packets_in']} packets in "
        f"({s['ipv4']} IPv4, {s['non_ipv4']} other), {s['packets_out']} out",
        f"  {did:<13}{s['protected']}",
        f"  {'bypassed':<13}{s['bypassed']} (+ {s['non_ipv4']} non-IPv4 passed through)",
        f"  {'dropped':<13}{s['dropped']}" + (f" ({drops})" if drops else ""),
        f"  {s['seconds']:.3f} s, {s['packets_per_second'] / 1e3:.1f} Kpps, "
        f"{s['megabits_per_second']:.1f} Mbit/s",
    ]
    return "\n".join(lines) + "\n"


def _router(config: Config, crypto_threads: int | None = None) -> Router:
    from .router import Router

    return Router(config, crypto_threads=crypto_threads)


def _sas(router: Router) -> list[Any]:
    return list(router.sad.sas())


# `check` findings that change what encrypt / decrypt do: printed on stderr before a run,
# so a typo that leaves an entry incomplete does not silently send traffic in the clear.
_DATA_PLANE_RULES = frozenset({
    "entry-incomplete", "empty-acl", "no-crypto-endpoint", "no-local-address",
    "undefined-acl", "undefined-crypto-map", "undefined-dynamic-map", "undefined-interface",
    "undefined-transform-set",
})


def _warn_config(config: Config, per_rule: int = 3) -> None:
    """The findings of ``_DATA_PLANE_RULES`` and every error, on stderr: at most
    ``per_rule`` of one rule, then one line with how many more (``ipsecfast check`` lists
    them all)."""
    from .check import check_config

    shown: dict[str, int] = {}
    for f in check_config(config):
        if f.severity == "error" or f.rule in _DATA_PLANE_RULES:
            shown[f.rule] = shown.get(f.rule, 0) + 1
            if shown[f.rule] <= per_rule:
                print(f"ipsecfast: {f}", file=sys.stderr)
    for rule, count in shown.items():
        if count > per_rule:
            print(f"ipsecfast: ... and {count - per_rule} more [{rule}] "
                  "(ipsecfast check lists them all)", file=sys.stderr)


@_config_errors
def _cmd_pcap(args: argparse.Namespace) -> int:
    tune_allocator()
    config = _load_config(args.config)
    _warn_config(config)
    # deletes the SAs and wipes their keys at the end; --peer-config: IKE with a simulated B
    with _router(config, args.crypto_threads) as router, _peer_router(args, router):
        return _run_pcap_command(args, config, router)


def _run_pcap_command(args: argparse.Namespace, config: Config, router: Router) -> int:
    ifname = _pick_interface(config, router, args.interface)
    summary = run_pcap(router, ifname, args.command, args.input, args.output,
                       chunk_packets=args.chunk_packets, progress=not args.quiet)
    show_sa = router.show("crypto ipsec sa") if args.show_sa else None
    if args.export_keys:
        from .wireshark import write_esp_sa

        summary["keys_exported"] = write_esp_sa(args.export_keys, _sas(router))
    if args.json:
        if show_sa is not None:
            summary["show_crypto_ipsec_sa"] = show_sa
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        sys.stdout.write(format_summary(summary))
        if show_sa is not None:
            sys.stdout.write("\n" + show_sa + ("" if show_sa.endswith("\n") else "\n"))
    return 0


@_config_errors
def _cmd_keys(args: argparse.Namespace) -> int:
    from .wireshark import write_esp_sa

    target = args.output or "-"
    with _router(_load_config(args.config)) as router:
        count = write_esp_sa(target, _sas(router))
    if target != "-":
        print(f"wrote {count} Wireshark ESP SA entries to {target}", file=sys.stderr)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a thread count (1-64)")
    return value


def _add_pcap_parser(sub: Any, name: str) -> None:
    what = {"encrypt": ("outbound", "protects the traffic its crypto map selects"),
            "decrypt": ("inbound", "decapsulates ESP / AH for its SAs and checks the inner flow")}
    way, does = what[name]
    p = sub.add_parser(
        name, help=f"run a pcap through the router's {way} path",
        description=f"Run IN.pcap through router.{way} on one interface (the router {does}) "
        "and write OUT.pcap: non-IPv4 and bypassed frames unchanged, dropped packets left out "
        "and counted, timestamps and link type kept. Output is classic pcap. Exit status 0, "
        "or 2 for a bad configuration or capture.",
        epilog=_KEYS_NOTE,
    )
    p.add_argument("--config", required=True, metavar="CFG", help="IOS configuration file")
    p.add_argument("--interface", metavar="IF",
                   help="interface (default: the only one with a crypto map)")
    p.add_argument("input", metavar="IN.pcap", help="capture to read (pcap or pcapng)")
    p.add_argument("output", metavar="OUT.pcap", help="capture to write (classic pcap)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    p.add_argument("--show-sa", action="store_true",
                   help="print `show crypto ipsec sa` after the run")
    p.add_argument("--export-keys", metavar="FILE",
                   help="write Wireshark's esp_sa table for the SAs of the run to FILE "
                   "(holds the keys, see below)")
    p.add_argument("--chunk-packets", type=int, default=CHUNK_PACKETS, metavar="N",
                   help=f"frames per router call (default {CHUNK_PACKETS})")
    p.add_argument("--crypto-threads", type=_positive_int, default=None, metavar="N",
                   help="threads for the crypto of different SAs (default: the CPUs less "
                   "one, at most 4; AES-CBC gains from 2 even on a 2-CPU machine)")
    if name == "encrypt":
        p.add_argument("--peer-config", metavar="B.cfg",
                       help="the peer's configuration: negotiate SAs with a simulated B "
                       "(IKE) when the traffic needs them; --export-keys then writes the "
                       "negotiated keys")
    p.set_defaults(func=_cmd_pcap)


# -- IKE: encrypt --peer-config, simulate (issue 6) ------------------------------------------


@contextlib.contextmanager
def _peer_router(args: argparse.Namespace, router: Router) -> Any:
    """``encrypt --peer-config B.cfg``: a simulated B on a ``Network`` with the router, so
    that the ACQUIREs of the run negotiate real SAs with it (``ipsecfast.ike``). The
    negotiations and failures go to stderr; B's SAs are deleted at the end."""
    path = getattr(args, "peer_config", None)
    if not path:
        yield None
        return
    from .ike import Network
    from .router import Router

    peer = Router(_load_config(path))
    net = Network()
    net.add(router)
    net.add(peer)
    try:
        yield net
    finally:
        if not getattr(args, "quiet", False) or net.failures:
            for neg in net.negotiations:
                print(f"negotiated: {neg}", file=sys.stderr)
            for f in net.failures:
                print(f"negotiation failed: {f}", file=sys.stderr)
        peer.close()


def _write_hop(cap: Capture, packets: Any, keep: Any, path: str) -> None:
    from . import pcap

    pcap.write(path, cap.replace_ip_packets(packets, keep))


def _simulate_way(sender: Router, s_if: str, receiver: Router, r_if: str, packets: Any
                  ) -> dict[str, Any]:
    """Packets out of ``sender`` and into ``receiver`` in the sender's order (the order it
    numbers them in); results aligned with ``packets``."""
    import numpy as np

    from .router import Verdict

    out = sender.outbound(s_if, packets)
    back = receiver.inbound(r_if, out.packets)
    recv_packets = back.packets
    recv_verdict = back.verdict
    sent = out.verdict
    prot = np.nonzero(sent == Verdict.PROTECT)[0]
    ok = recv_verdict[prot] == Verdict.PROTECT
    good = prot[ok]
    same = (recv_packets.lengths[good] == packets.lengths[good])
    idx = good[same]
    intact = int(recv_packets[idx].equals(packets[idx]).sum())
    clear = np.nonzero(sent == Verdict.BYPASS)[0]
    return {
        "sent": out, "packets": out.packets, "received": recv_packets,
        "received_verdict": recv_verdict,
        "protected": int(prot.size), "intact": intact,
        "lost": int(prot.size) - intact,
        "not_sent": int((sent == Verdict.DROP).sum()),
        "clear": int(clear.size),
        "clear_dropped": int((recv_verdict[clear] == Verdict.DROP).sum()),
    }


@_config_errors
def _cmd_simulate(args: argparse.Namespace) -> int:
    from . import pcap
    from .demo import mirror_flows
    from .ike import Network
    from .router import Router, Verdict
    from .wireshark import write_esp_sa

    ca, cb = _load_config(args.config_a), _load_config(args.config_b)
    with Router(ca) as a, Router(cb) as b:
        net = Network()
        net.add(a)
        net.add(b)
        if_a = _pick_interface(ca, a, args.interface_a)
        if_b = _pick_interface(cb, b, args.interface_b)
        cap = pcap.read(args.input)
        pk = cap.ip_packets()
        os.makedirs(args.out, exist_ok=True)
        fwd = _simulate_way(a, if_a, b, if_b, pk)
        rev = _simulate_way(b, if_b, a, if_a, mirror_flows(pk))
        drop = Verdict.DROP
        hops = [
            ("1-a-outbound.pcap", fwd["packets"], fwd["sent"].verdict != drop),
            ("2-b-inbound.pcap", fwd["received"],
             (fwd["sent"].verdict != drop) & (fwd["received_verdict"] != drop)),
            ("3-b-outbound.pcap", rev["packets"], rev["sent"].verdict != drop),
            ("4-a-inbound.pcap", rev["received"],
             (rev["sent"].verdict != drop) & (rev["received_verdict"] != drop)),
        ]
        for name, packets, keep in hops:
            _write_hop(cap, packets, keep, os.path.join(args.out, name))
        seen: set[tuple[int, str, str]] = set()
        sas = []
        for rec in list(a.sad.sas()) + list(b.sad.sas()):
            key = (rec.spi, rec.source, rec.destination)
            if key not in seen:
                seen.add(key)
                sas.append(rec)
        write_esp_sa(os.path.join(args.out, "esp_sa"), sas)
        for r, name in ((a, "a"), (b, "b")):
            with open(os.path.join(args.out, f"show-{name}.txt"), "w", encoding="utf-8") as fh:
                for cmd in ("show crypto isakmp sa", "show crypto session",
                            "show crypto ipsec sa"):
                    fh.write(f"{net.name(r)}# {cmd}\n{net.show(r, cmd)}\n")
        for neg in net.negotiations:
            print(f"negotiated: {neg}")
        for f in net.failures:
            print(f"negotiation failed: {f}")
        if not net.negotiations and not net.failures:
            print("no negotiation: no packet of the capture needed protection")
        bad = 0
        for label, way in (("A -> B", fwd), ("B -> A (mirrored flows)", rev)):
            print(f"{label}: {way['protected']} protected, {way['intact']} arrived intact, "
                  f"{way['lost']} lost or altered, {way['not_sent']} dropped by the sender "
                  f"({way['clear']} clear, {way['clear_dropped']} of them dropped by the "
                  "receiver)")
            bad += way["lost"] + way["not_sent"]
        print(f"wrote {args.out}/1-a-outbound.pcap .. 4-a-inbound.pcap, "
              f"{args.out}/esp_sa ({len(sas)} SAs; holds keys), {args.out}/show-a.txt, "
              f"{args.out}/show-b.txt")
        return 1 if bad else 0


def _add_simulate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate", help="two routers: negotiate with IKE and run a capture both ways",
        description="A.cfg and B.cfg negotiate SAs (ipsecfast.ike: ISAKMP policies, "
        "pre-shared keys, Diffie-Hellman, quick mode) when A's traffic needs them. The "
        "IPv4 packets of IN.pcap leave A (A's outbound), arrive at B (B's inbound); then the "
        "mirrored flows (every packet with its addresses and TCP / UDP ports swapped) "
        "leave B and arrive at A. Writes into DIR: 1-a-outbound.pcap, 2-b-inbound.pcap, "
        "3-b-outbound.pcap, 4-a-inbound.pcap (the capture's link headers kept), esp_sa "
        "(Wireshark's key table for every negotiated SA), show-a.txt and show-b.txt "
        "(show crypto isakmp sa / session / ipsec sa). Prints the negotiated transform "
        "sets and flows. Exit status 0, 1 if a packet the sender's crypto map selected did "
        "not arrive intact (lost, altered, or dropped for want of SAs), 2 for a bad "
        "configuration or capture.",
        epilog=_KEYS_NOTE,
    )
    p.add_argument("config_a", metavar="A.cfg", help="the sending router's configuration")
    p.add_argument("config_b", metavar="B.cfg", help="its peer's configuration")
    p.add_argument("input", metavar="IN.pcap", help="A's outbound traffic (pcap or pcapng)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the results")
    p.add_argument("--interface-a", metavar="IF", help="A's interface (default: the only "
                   "one with a crypto map)")
    p.add_argument("--interface-b", metavar="IF", help="B's interface")
    p.set_defaults(func=_cmd_simulate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipsecfast", description="IPsec data plane with Cisco IOS crypto-map semantics"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the built-in demonstration")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser(
        "show", help="an IOS show command over a configuration",
        description="Print what IOS would for: crypto map [interface I | tag M], "
        "crypto dynamic-map [tag M], crypto ipsec transform-set [tag T], crypto isakmp "
        "policy, crypto ipsec security-association lifetime, access-lists [N], running-config.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="IOS configuration file")
    p.add_argument("words", nargs="+", metavar="WORD", help="the show command, e.g. crypto map")
    p.set_defaults(func=_cmd_show)
    p = sub.add_parser(
        "check", help="lint a crypto map configuration (and its peer's)",
        description="Findings with severity, line and reason. Exit status 0 clean (or only "
        "info), 1 warnings, 2 errors or a configuration that does not load.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="IOS configuration file")
    p.add_argument("--peer-config", metavar="FILE2",
                   help="the other IPsec peer's configuration: check how the two fit")
    p.add_argument("--json", action="store_true", help="findings as JSON")
    p.set_defaults(func=_cmd_check)
    _add_pcap_parser(sub, "encrypt")
    _add_pcap_parser(sub, "decrypt")
    p = sub.add_parser(
        "keys", help="export the SA keys for Wireshark / tshark",
        description="Write Wireshark's ESP SA table (the esp_sa UAT file, Wireshark 4.0 "
        "format) for every SA of the configuration, both directions, so that Wireshark and "
        "tshark open ipsecfast's captures decrypted. SAs Wireshark cannot decode are listed "
        "as comments saying why. " + _KEYS_NOTE,
    )
    p.add_argument("--config", required=True, metavar="CFG", help="IOS configuration file")
    p.add_argument("--format", choices=["wireshark"], default="wireshark",
                   help="output format (wireshark: the esp_sa table)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default stdout)")
    p.set_defaults(func=_cmd_keys)
    _add_simulate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except IpsecError as err:
        print(f"ipsecfast: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        print(f"ipsecfast: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
