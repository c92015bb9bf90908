"""Where a ``tune`` study lives and how its workers take turns starting trials.

``--storage`` names one of three kinds of storage:

- SQLite (the default, ``sqlite:///OUT/study.db``): the workers of one machine;
- ``journal:PATH``: Optuna's journal file, for the workers of one machine or of several sharing a
  filesystem whose locks work across machines (NFSv4, a cluster filesystem);
- any other database URL (``postgresql://...``, ``mysql+pymysql://...``): workers anywhere.

A worker starts a trial only while it holds the study's reservation lock (:class:`FileLock`: an
exclusive ``flock`` on ``<storage file>.tune.lock``; :class:`RowLock`: a row of the database held with
``SELECT ... FOR UPDATE``), and only while the trials that count (complete, pruned, running)
are fewer than ``--trials``: the study ends with exactly that many finished trials, however many
workers race for the last ones.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .tuning_study import GRACE_SECONDS, HEARTBEAT_SECONDS, optuna_module

JOURNAL_PREFIX = "journal:"
# next to the storage file; not Optuna's own ``<journal>.lock``, which its journal writes take
LOCK_SUFFIX = ".tune.lock"
# SQLite waits this long for another worker's write to end before "database is locked"
SQLITE_BUSY_SECONDS = 120


@dataclass(frozen=True)
class StorageSpec:
    """A parsed ``--storage``: what to open (``url``, or the ``journal`` file) and the file
    whose lock serialises reservations (``None``: a lock row in the database itself)."""

    text: str
    journal: Path | None
    url: str | None
    lock_file: Path | None

    @property
    def heartbeat(self) -> bool:
        """Whether Optuna's heartbeat covers the running trials (databases; not journal files)."""
        return self.url is not None


def parse_storage(storage: str | None, out: Path) -> StorageSpec:
    """The storage ``tune`` uses: ``storage`` (a database URL or ``journal:PATH``), else SQLite in
    ``out``. Checked before anything is written: a malformed URL, or a journal file whose folder
    does not exist, is a one-line error."""
    if storage is None:
        db = (out / "study.db").resolve()
        return StorageSpec(f"sqlite:///{db}", None, f"sqlite:///{db}", db.with_name(db.name + LOCK_SUFFIX))
    if storage.startswith(JOURNAL_PREFIX):
        path = Path(storage.removeprefix(JOURNAL_PREFIX)).expanduser().resolve()
        if not storage.removeprefix(JOURNAL_PREFIX) or not path.parent.is_dir():
            raise UsageError(f"--storage {storage}: the journal file's folder {path.parent} does not exist")
        return StorageSpec(storage, path, None, path.with_name(path.name + LOCK_SUFFIX))
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(storage)
    except ArgumentError:
        raise UsageError(
            f"--storage {storage!r}: not a database URL (e.g. sqlite:///PATH, "
            f"postgresql://user@host/db) nor {JOURNAL_PREFIX}PATH"
        ) from None
    if parsed.get_backend_name() != "sqlite":
        return StorageSpec(storage, None, storage, None)
    if parsed.database in (None, "", ":memory:"):
        raise UsageError(f"--storage {storage}: an in-memory SQLite study is lost at exit; name a file")
    db = Path(parsed.database).expanduser().resolve()
    if not db.parent.is_dir():
        raise UsageError(f"--storage {storage}: the database's folder {db.parent} does not exist")
    return StorageSpec(storage, None, storage, db.with_name(db.name + LOCK_SUFFIX))


def open_storage(spec: StorageSpec) -> Any:
    """The Optuna storage of ``spec``; databases with a heartbeat for every running trial."""
    optuna = optuna_module()
    if spec.journal is not None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(spec.journal)))
    assert spec.url is not None
    kwargs: dict[str, Any] = {}
    if spec.url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_SECONDS}
    with warnings.catch_warnings():  # the heartbeat has been "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            spec.url,
            engine_kwargs=kwargs,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
        )


class FileLock:
    """An exclusive lock on a file, shared by every process that sees the file (``flock``; on
    Windows ``msvcrt.locking``). Held by an open file, so a killed holder releases it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def __enter__(self) -> FileLock:
        self._file = open(self.path, "a+b")  # noqa: SIM115 (held until __exit__)
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            while True:
                try:
                    self._file.seek(0)
                    msvcrt.locking(self._file.fileno(), msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
                    break
                except OSError:  # LK_LOCK gives up after ten seconds
                    continue
        else:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        # closing the file releases the lock
        self._file.close()
        self._file = None


class RowLock:
    """The reservation lock of a study in a database several machines share: one row per study in
    ``moe_retriever_tune_lock``, held by ``SELECT ... FOR UPDATE`` until the reservation's
    transaction ends (the database releases it when the holder's connection drops)."""

    TABLE = "moe_retriever_tune_lock"

    def __init__(self, url: str, study_name: str) -> None:
        import sqlalchemy as sa

        self._sa = sa
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.table = sa.Table(
            self.TABLE, sa.MetaData(), sa.Column("study_name", sa.String(512), primary_key=True)
        )
        self.study_name = study_name
        for attempt in range(5):  # workers starting together race to create the table and row
            try:
                self.table.create(self.engine, checkfirst=True)
                with self.engine.begin() as conn:
                    found = conn.execute(sa.select(self.table).where(self.table.c.study_name == study_name))
                    if found.first() is None:
                        conn.execute(self.table.insert().values(study_name=study_name))
                return
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    @contextmanager
    def _held(self) -> Iterator[None]:
        sa = self._sa
        with self.engine.begin() as conn:
            row = sa.select(self.table).where(self.table.c.study_name == self.study_name).with_for_update()
            conn.execute(row).one()
            yield

    def __enter__(self) -> RowLock:
        self._context = self._held()
        self._context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)


def reservation_lock(spec: StorageSpec, study_name: str) -> AbstractContextManager[Any]:
    """The lock every worker of the study holds while it counts trials and starts one."""
    if spec.lock_file is not None:
        return FileLock(spec.lock_file)
    assert spec.url is not None
    return RowLock(spec.url, study_name)


def process_cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
