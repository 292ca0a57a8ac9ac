"""One parallel map for vcfnb: :func:`pmap` over a local process pool or a Dask cluster.

Every parallel step of vcfnb (feature extraction, permutation tests, mask splitting) runs on
the pool kept here, so there is one place that decides how worker processes start and what
happens when they cannot:

* **workers never re-import the caller's script** -- Python's ``forkserver``/``spawn`` workers
  normally re-run the ``__main__`` file of the calling process before they take work. For a
  script without an ``if __name__ == "__main__":`` guard that starts the pool again inside every
  worker, and for a script piped on stdin (``__main__`` is ``<stdin>``) the file does not exist:
  either way the pool breaks. vcfnb's workers skip that step; the function to call (which may
  be defined in the script or the notebook) is sent by value with ``cloudpickle``;
* **forkserver with preloaded imports** -- workers fork from a server that has pyradiomics,
  SimpleITK and vcfnb imported, so a worker starts in milliseconds; the pool is kept for the
  next call and shut down at exit (or with :func:`shutdown_workers`);
* **in-process when a pool truly cannot start** (no ``/dev/shm``, a sandbox without process
  creation, ...): the work runs in the calling process and a ``RuntimeWarning`` plus a log line
  say so;
* **the same results whatever the parallelism** -- results come back in input order for any
  ``n_jobs`` and on a Dask cluster (``scheduler`` or ``VCFNB_DASK_SCHEDULER``).
"""
from __future__ import annotations

import logging
import math
import os
import pickle
import threading
import warnings
from collections.abc import Callable, Iterable
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

__all__ = ["PRELOAD", "pmap", "resolve_n_jobs", "scheduler_address", "shutdown_workers",
           "start_workers", "start_workers_in_background", "worker_pool"]

logger = logging.getLogger(__name__)

#: modules imported once in the forkserver, so every worker starts with them (each costs a
#: worker ~0.1-0.5 s on first use otherwise)
PRELOAD = ["vcfnb.parallel", "vcfnb.features", "vcfnb.io", "vcfnb.filters", "vcfnb.preprocess",
           "radiomics.featureextractor", "scipy.ndimage", "threadpoolctl", "yaml"]

_POOL: Any = None
_POOL_SIZE = 0
_UNAVAILABLE: str | None = None  # why worker processes cannot start here (remembered)
_LOCK = threading.RLock()
_SPAWNING = threading.local()
_PATCHED = False
_IN_WORKER = False  # True in vcfnb's worker processes: a nested pmap runs in-process there
_STARTING: threading.Thread | None = None  # start_workers_in_background's thread


# ---------------------------------------------------------------------------------------------
# worker processes that do not re-import the caller's __main__
# ---------------------------------------------------------------------------------------------

def _install_main_guard() -> None:
    """Wrap :func:`multiprocessing.spawn.get_preparation_data` once so that processes started by
    vcfnb's pool (and only those: a thread-local flag set while they start) do not re-run the
    caller's ``__main__`` module; ``sys.path`` and the working directory are still passed on."""
    global _PATCHED
    if _PATCHED:
        return
    from multiprocessing import spawn

    original = spawn.get_preparation_data

    def get_preparation_data(name):
        data = original(name)
        if getattr(_SPAWNING, "active", False):
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
        return data

    get_preparation_data.__wrapped__ = original  # type: ignore[attr-defined]
    spawn.get_preparation_data = get_preparation_data
    _PATCHED = True


def _popen_without_main(base: type, process_obj: Any) -> Any:
    _SPAWNING.active = True
    try:
        return base._Popen(process_obj)
    finally:
        _SPAWNING.active = False


try:  # POSIX: forkserver
    from multiprocessing.context import ForkServerContext, ForkServerProcess

    class _ForkServerProcess(ForkServerProcess):
        @staticmethod
        def _Popen(process_obj):
            return _popen_without_main(ForkServerProcess, process_obj)

    class _ForkServerContext(ForkServerContext):
        Process = _ForkServerProcess
except ImportError:  # pragma: no cover - Windows
    _ForkServerContext = None  # type: ignore[assignment,misc]



class _SpawnProcess(SpawnProcess):
    @staticmethod
    def _Popen(process_obj):
        return _popen_without_main(SpawnProcess, process_obj)


class _SpawnContext(SpawnContext):
    Process = _SpawnProcess


def _context() -> Any:
    _install_main_guard()
    if _ForkServerContext is not None:
        import multiprocessing as mp

        try:
            mp.get_context("forkserver").set_forkserver_preload(PRELOAD)
            return _ForkServerContext()
        except ValueError:  # pragma: no cover - forkserver unavailable on this platform
            pass
    return _SpawnContext()  # pragma: no cover


#: seconds between a worker's checks that the process which started the pool is still alive
OWNER_CHECK_INTERVAL = 1.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by another user
        return True
    return True


def _watch_owner(owner: int, interval: float) -> None:
    """Worker side: exit as soon as the process that started the pool is gone. Without it, a
    worker in the middle of a long chunk (minutes of extraction or permutations) goes on to the
    end when its notebook kernel is killed or crashes -- an orphan holding a core that nobody
    will read the result of (its cache entries written so far are kept)."""
    import time

    while True:
        time.sleep(interval)
        if not _alive(owner):
            logger.warning("vcfnb worker %d: the process that started it (%d) is gone; exiting",
                           os.getpid(), owner)
            os._exit(1)


def _worker_init(owner: int | None = None, interval: float = OWNER_CHECK_INTERVAL) -> None:
    """Workers ignore Ctrl-C / a kernel interrupt (sent to the whole process group): the
    caller handles it and stops the pool; otherwise every idle worker prints a traceback.
    They also know they are workers, so that a parallel step inside a parallel step (e.g. CV
    folds inside a permutation) runs in the worker instead of starting pools of pools. With
    ``owner`` (the pid that started the pool) a daemon thread ends the worker when that
    process is gone (:func:`_watch_owner`)."""
    import signal

    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if owner is not None:
        threading.Thread(target=_watch_owner, args=(int(owner), float(interval)), daemon=True,
                         name="vcfnb-owner-watch").start()


def _noop() -> int:
    return os.getpid()


def resolve_n_jobs(n_jobs: int | None) -> int:
    """Number of worker processes: ``None`` or a negative value means all CPUs, at least 1;
    always 1 inside one of vcfnb's worker processes."""
    if _IN_WORKER:
        return 1
    if n_jobs is None or int(n_jobs) < 0:
        return os.cpu_count() or 1
    return max(1, int(n_jobs))


def scheduler_address(scheduler: Any = None) -> Any:
    """The Dask scheduler to use: ``scheduler`` or else ``$VCFNB_DASK_SCHEDULER`` (or None)."""
    if scheduler is None:
        scheduler = os.environ.get("VCFNB_DASK_SCHEDULER") or None
    return scheduler


def _say_in_process(reason: str, what: str = "work") -> None:
    msg = (f"vcfnb: worker processes are not available ({reason}); running the {what} in this "
           "process instead (slower, same results)")
    logger.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def worker_pool(n_jobs: int) -> Any:
    """vcfnb's kept process pool of ``n_jobs`` workers, or None when processes cannot start.

    The pool (a :class:`concurrent.futures.ProcessPoolExecutor`, not joblib's shared loky
    executor that scikit-learn reuses) is created on first use, checked with one round trip to a
    worker, kept for later calls with the same ``n_jobs`` and shut down at exit. When no worker
    can start, the reason is remembered (until :func:`shutdown_workers`) and None is returned:
    callers then run in-process and say so.
    """
    global _POOL, _POOL_SIZE, _UNAVAILABLE
    with _LOCK:
        if _UNAVAILABLE is not None:
            return None
        if _POOL is not None and _POOL_SIZE == n_jobs:
            return _POOL
        shutdown_workers()
        import atexit
        from concurrent.futures import ProcessPoolExecutor

        pool = None
        try:
            pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=_context(),
                                       initializer=_worker_init,
                                       initargs=(os.getpid(), OWNER_CHECK_INTERVAL))
            pool.submit(_noop).result(timeout=float(os.environ.get("VCFNB_POOL_TIMEOUT", "300")))
        except Exception as exc:  # noqa: BLE001 - any failure to start means "no pool here"
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            _UNAVAILABLE = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            logger.warning("vcfnb: cannot start worker processes: %s", _UNAVAILABLE)
            return None
        _POOL, _POOL_SIZE = pool, n_jobs
        atexit.register(shutdown_workers)
        return _POOL


def start_workers(n_jobs: int | None = None, wait: bool = True) -> None:
    """Start the ``n_jobs`` worker processes (default all CPUs) that :func:`pmap` and
    :func:`vcfnb.features.extract` use, e.g. before timing a step; they are kept for later calls.
    When worker processes cannot start here, says so (warning and log line)."""
    n = resolve_n_jobs(n_jobs)
    pool = worker_pool(n)
    if pool is None:
        _say_in_process(_UNAVAILABLE or "unknown reason")
        return
    futures = [pool.submit(_noop) for _ in range(n)]
    if wait:
        for f in futures:
            f.result()


def _start_all(n: int) -> None:
    pool = worker_pool(n)
    if pool is not None:
        try:
            for f in [pool.submit(_noop) for _ in range(n)]:
                f.result()
        except Exception:  # noqa: BLE001 - the caller's own use of the pool will see it
            pass


def start_workers_in_background(n_jobs: int | None) -> threading.Thread | None:
    """Start the ``n_jobs`` worker processes in a daemon thread and return at once, so that the
    caller's own work (reading headers and scans, hashing files) overlaps the ~1 s the forkserver
    needs to import pyradiomics. Returns the thread, or None when there is nothing to start (a pool
    of at least that size runs, processes cannot start here, one job, or inside a worker). A later
    :func:`worker_pool` call waits for the start to finish (the pool's lock); a failure to start
    is remembered as usual and reported by the caller's own fallback. A start already under way
    is returned as is."""
    global _STARTING
    n = resolve_n_jobs(n_jobs)
    # no lock here: a start under way holds it, and this must return at once
    starting = _STARTING
    if starting is not None and starting.is_alive():
        return starting
    if n <= 1 or _IN_WORKER or _UNAVAILABLE is not None or (
            _POOL is not None and _POOL_SIZE >= n):
        return None
    _STARTING = threading.Thread(target=_start_all, args=(n,), name="vcfnb-start-workers",
                                 daemon=True)
    _STARTING.start()
    return _STARTING


def shutdown_workers() -> None:
    """Stop the kept worker processes (frees their memory) and forget an earlier failure to
    start them, so the next call tries again."""
    global _POOL, _POOL_SIZE, _UNAVAILABLE
    with _LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=True, cancel_futures=True)
        _POOL, _POOL_SIZE, _UNAVAILABLE = None, 0, None


def _broken(pool: Any) -> None:
    """Drop a pool whose workers died (it cannot take work any more)."""
    global _POOL, _POOL_SIZE
    with _LOCK:
        if _POOL is pool:
            _POOL.shutdown(wait=False, cancel_futures=True)
            _POOL, _POOL_SIZE = None, 0


# ---------------------------------------------------------------------------------------------
# pmap
# ---------------------------------------------------------------------------------------------

def _dumps(obj: Any) -> bytes:
    """Pickle by value what lives in ``__main__`` (a script's or notebook's functions)."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - cloudpickle comes with dask.distributed
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _run_chunk(payload: bytes, threads: int) -> list:
    """Worker side: unpickle ``(fn, items)`` and map, with BLAS/OpenMP threads limited so that
    ``n_jobs`` workers do not oversubscribe the CPUs."""
    fn, chunk = pickle.loads(payload)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return [fn(x) for x in chunk]
    with threadpool_limits(limits=threads):
        return [fn(x) for x in chunk]


def _bar(total: int, desc: str | None, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc or "pmap", disable=not progress or total == 0,
                leave=False)


def _dask_map(fn: Callable, items: list, scheduler: Any, bar) -> list:
    from dask.distributed import Client, as_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = client.map(fn, items, pure=False)
        for _ in as_completed(futures):
            bar.update()
        return client.gather(futures)
    finally:
        if client is not scheduler:
            client.close()


def pmap(fn: Callable[[Any], Any], items: Iterable, *, n_jobs: int | None = 1,
         scheduler: Any = None, desc: str | None = None, progress: bool = False) -> list:
    """``[fn(x) for x in items]``, optionally in worker processes or on a Dask cluster.

    Parameters
    ----------
    fn : callable
        Function of one item. It may be defined anywhere, including a notebook or a script's
        ``__main__`` (it is sent to the workers by value).
    items : iterable
        The inputs; consumed once.
    n_jobs : int or None
        Worker processes of vcfnb's local pool (1: in this process, the default; None or
        negative: all CPUs). Results do not depend on it.
    scheduler : str or dask.distributed.Client, optional
        Dask scheduler address or client to run on instead of the local pool; default
        ``$VCFNB_DASK_SCHEDULER`` when set.
    desc : str, optional
        Label of the progress bar.
    progress : bool
        Show a progress bar.

    Returns
    -------
    list
        ``fn(x)`` for every item, in input order. The first exception raised by ``fn`` (in input
        order) is re-raised. When worker processes cannot start, or the pool breaks, the
        remaining items run in this process and a ``RuntimeWarning`` and a log line say so.

    Examples
    --------
    >>> pmap(abs, [-3, 1, -2])
    [3, 1, 2]
    >>> pmap(pow, [], n_jobs=2)
    []
    """
    items = list(items)
    scheduler = scheduler_address(scheduler)
    bar = _bar(len(items), desc, progress)
    try:
        if not items:
            return []
        if scheduler is not None:
            return _dask_map(fn, items, scheduler, bar)
        n = min(resolve_n_jobs(n_jobs), len(items))
        results: list[list | None] = []
        chunks: list[list] = []
        pool = worker_pool(n) if n > 1 else None
        if pool is None and n > 1:
            _say_in_process(_UNAVAILABLE or "unknown reason", desc or "map")
        if pool is not None:
            size = max(1, math.ceil(len(items) / (4 * n)))
            chunks = [items[i:i + size] for i in range(0, len(items), size)]
            results = [None] * len(chunks)
            try:
                payloads = [_dumps((fn, c)) for c in chunks]
            except Exception as exc:  # noqa: BLE001 - e.g. a lambda holding an open file
                _say_in_process(f"cannot send the function to workers: {exc}", desc or "map")
                pool = None
        if pool is None:
            out = []
            for x in items:
                out.append(fn(x))
                bar.update()
            return out
        return _pool_map(pool, fn, chunks, payloads, results, n, bar, desc)
    finally:
        bar.close()


def _pool_map(pool: Any, fn: Callable, chunks: list[list], payloads: list[bytes],
              results: list, n: int, bar, desc: str | None) -> list:
    from concurrent.futures import FIRST_EXCEPTION, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // n)
    futures = {}
    try:
        for i, p in enumerate(payloads):
            futures[pool.submit(_run_chunk, p, threads)] = i
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                if fut.exception() is None:
                    results[futures[fut]] = fut.result()
                    bar.update(len(chunks[futures[fut]]))
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                break
            failed = [futures[f] for f in done if f.exception() is not None]
            if failed:  # fn raised: re-raise the first one in input order
                for f in pending:
                    f.cancel()
                first = min(failed)
                raise next(f for f, i in futures.items() if i == first).exception()
    except BrokenProcessPool:
        pass
    except BaseException:  # KeyboardInterrupt: drop the queued work, keep the pool
        for f in futures:
            f.cancel()
        raise
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:  # the pool broke (a worker died): finish here, and say so
        _broken(pool)
        _say_in_process("the process pool broke (a worker died)", desc or "map")
        for i in missing:
            out = []
            for x in chunks[i]:
                out.append(fn(x))
                bar.update()
            results[i] = out
    return [r for chunk in results for r in chunk]
