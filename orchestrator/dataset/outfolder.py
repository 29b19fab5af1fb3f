"""The out folder of `medsynth dataset build`, protected: the whole folder is replaced, so what it may be is
checked first (checked_out); one build at a time holds it (build_lock); the build is written into a temporary
sibling and swapped into place (swap_into_place); a failed or interrupted build leaves the previous dataset as
it was (building).

`<out>` must be new, empty or an earlier build (it has dataset.json), must not hold the sources and must not
lie inside an image folder. One build at a time per `<out>`: a build holds an flock on `<parent>/.<out>.lock`
from before it reads anything until its swap is done, and a second build of the same `<out>` is refused at
once, so no build ever removes another's `.<out>.building`. Every failure after that (a write error, a full
disk, SIGINT, SIGTERM, SIGHUP once build.build_from_options turns them into Interrupted) removes the
temporary folder and the parent folders the build created, and leaves the previous dataset as it was; a
build killed outright (SIGKILL) leaves them for the next run, which removes the temporary folder.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.common.errors import Interrupted, MedsynthError
from orchestrator.common.filelock import exclusive
from orchestrator.dataset.record import has_record
from orchestrator.dataset.settings import DatasetSettings


@contextmanager
def building(out: Path) -> Iterator[Path]:
    """The temporary folder to build `out` in, under build_lock(out) and with the missing parents created.
    Whatever ends the block early removes what it left and raises an error saying so."""
    created = _make_parents(out)
    tmp = out.with_name(f".{out.name}.building")
    try:
        # a second build of the same out is refused here, before it reads anything or touches the first's work
        with build_lock(out):
            try:
                recover_interrupted(out)  # what a killed build left: safe, the lock says none is running
                yield tmp
            except BaseException as exc:
                explained = _explained(exc, _discard_partial(tmp, out), tmp)
                if explained is exc:
                    raise
                raise explained from (exc.__cause__ if isinstance(exc, MedsynthError) else exc)
    except BaseException:
        _remove_empty(created)
        raise


def swap_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` by `tmp`; the old folder survives until the new one is in place."""
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    if old.exists():
        shutil.rmtree(old)


def recover_interrupted(out: Path) -> None:
    """Undo what an interrupted build left: a half-built temporary folder, or a swap cut in the middle.
    Only under build_lock(out): without it, the "half-built" folder may be a running build's."""
    tmp, old = out.with_name(f".{out.name}.building"), out.with_name(f".{out.name}.old")
    if tmp.exists():
        shutil.rmtree(tmp)
    if old.exists() and not out.exists():
        os.rename(old, out)


def _sources(settings: DatasetSettings) -> list[Path]:
    optional = (settings.duplicates, settings.caption_template, settings.reg_images)
    return [*settings.csv, *settings.images, *(p for p in optional if p is not None)]


def checked_out(settings: DatasetSettings) -> Path:
    """The dataset folder as an absolute path, refused where the swap would destroy what is not an earlier
    build: the whole folder is replaced, so `--out .` or `--out ~/Documents` must not be taken literally."""
    out = Path(os.path.abspath(settings.out))
    if out.parent == out:
        raise MedsynthError(f"out {settings.out}: a file system root cannot be replaced by a dataset")
    target = Path(os.path.realpath(out))
    for source in _sources(settings):
        real = Path(os.path.realpath(source))
        if real == target or target in real.parents:
            raise MedsynthError(f"out {out} holds the source {source}: the build replaces the whole folder; "
                                f"choose another out folder")
    for folder in (*settings.images, *((settings.reg_images,) if settings.reg_images else ())):
        # the dataset, its image cache and lock would be written into the images: a source gains no files
        real = Path(os.path.realpath(folder))
        if real in target.parents:
            raise MedsynthError(f"out {out} is inside the image folder {folder}: source folders must gain no "
                                f"files; choose an out folder outside it")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise MedsynthError(f"out {out} exists and is not a plain folder (a file or a link): "
                            f"choose another out folder")
    if out.is_dir() and any(out.iterdir()) and not has_record(out):
        raise MedsynthError(f"out {out} is a non-empty folder without dataset.json (not an earlier dataset "
                            f"build): the build replaces the whole folder, so choose another out folder or empty it")
    return out


def lock_path(out: Path) -> Path:
    """The lock file of builds of `out`: beside it, in its parent (where the image cache also lives)."""
    return out.with_name(f".{out.name}.lock")


def build_lock(out: Path):
    """Hold the exclusive lock on building `out`, or refuse at once when another build holds it
    (orchestrator.common.filelock)."""
    return exclusive(lock_path(out), cannot_write=f"out {out}: cannot write in {out.parent}",
                     busy=lambda pid: f"out {out}: another medsynth dataset build{pid} is building this folder; "
                                      f"wait for it to finish or stop it, then run again")


def _make_parents(out: Path) -> list[Path]:
    """Create the missing folders above `out`; those created, deepest first (removed again if the build fails)."""
    missing, folder = [], out.parent
    while not folder.exists() and not folder.is_symlink() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    created: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            _remove_empty(created[::-1])
            raise MedsynthError(f"out {out}: cannot create the folder {folder}: {exc.strerror or exc}") from exc
        created.append(folder)
    return created[::-1]


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (the image cache is kept for the re-run), or gone


def _discard_partial(tmp: Path, out: Path) -> str:
    """After a failed or interrupted build (under its lock): remove the temporary folder, finish a swap cut in
    the middle; what was done, for the error message."""
    old = out.with_name(f".{out.name}.old")
    if old.exists() and not out.exists():
        os.rename(old, out)  # cut between the swap's two renames: the previous dataset comes back
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)  # cut after them: the new dataset is in place
    if not (tmp.exists() or tmp.is_symlink()):
        return ""
    for _ in range(3):  # an image worker still draining may add a file while the tree is removed
        shutil.rmtree(tmp, ignore_errors=True)
        if not tmp.exists():
            break
        time.sleep(0.2)
    if tmp.exists():
        return f"could not remove the partial build {tmp} (the next run removes it)"
    kept = f"the previous dataset in {out} is intact" if has_record(out) else f"{out} was not written"
    return f"removed the partial build {tmp}; {kept}"


def _explained(exc: BaseException, note: str, tmp: Path) -> BaseException:
    """The error to show for `exc` once the partial build is gone: a write error or a signal says so."""
    if isinstance(exc, Interrupted):
        return exc.with_detail(note)
    if isinstance(exc, OSError):  # writing the build (a write() that fails has no file name: the build's folder)
        tail = f"; {note}" if note else ""
        return MedsynthError(f"cannot write {exc.filename or tmp}: {exc.strerror or exc}{tail}")
    if not note:
        return exc
    if isinstance(exc, MedsynthError) and isinstance(exc.__cause__, OSError):
        return MedsynthError(f"{exc}; {note}")
    return exc
