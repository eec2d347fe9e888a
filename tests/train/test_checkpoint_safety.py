"""Opening a checkpoint never runs code, a damaged one is one line, writes are atomic.

Crafted checkpoints hold only plain data (they load with ``weights_only=True``); their
saved config names something to call. ``evaluate``, ``sample`` and ``predict`` must refuse
each in one line before anything is built, and the sentinel file the payload would have
created must not exist.
"""

from __future__ import annotations

import copy
import errno
import os
import signal
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY, compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rnnexp.atomic import atomic_write, deferred_signals, temporary_path, write_json
from rnnexp.cli.main import main
from rnnexp.config import apply_overrides, buildable, check_saved_config
from rnnexp.errors import RnnexpError
from rnnexp.train import checkpoint
from rnnexp.train.checkpoint import Checkpoint
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny timer run (in-process), with best.pt and last.pt."""
    folder = tmp_path_factory.mktemp("safety-run")
    cfg = compose_config(*TINY, "train.max_steps=4", "train.eval_every=2", "train.histograms=false")
    train(cfg, folder, RunRecord(folder))
    return folder


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``rnnexp ARGS`` in-process through the console entry point; (exit code, output)."""
    argv = sys.argv
    sys.argv = ["rnnexp", *args]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out + captured.err


def assert_one_line(code: int, output: str, *expected: str) -> None:
    assert code != 0, output
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) <= 2, output  # the error line (and a note at most)
    for text in expected:
        assert text in output, output


def touch(sentinel: Path) -> dict[str, Any]:
    """A config node that Hydra's ``instantiate`` turns into ``Path(sentinel).touch()``."""
    return {"_target_": "pathlib.Path.touch", "_args_": [{"_target_": "pathlib.Path",
                                                           "_args_": [str(sentinel)]}]}  # fmt: skip


def shell(sentinel: Path) -> dict[str, Any]:
    """A config node that Hydra's ``instantiate`` turns into ``os.system("touch ...")``."""
    return {"_target_": "os.system", "_args_": [f"touch {sentinel}"]}


# Each edit turns a real saved config into a crafted one; `where` is the key path named.
CRAFTED: dict[str, tuple[Callable[[dict, Path], None], str]] = {
    "top_level_foreign_target": (lambda c, s: c.update(task=touch(s)), "task._target_"),
    "shell_command_target": (lambda c, s: c["task"].update(shell(s)), "task._target_"),
    "nested_target_in_task_data": (
        lambda c, s: c["task"].update(data=touch(s)),
        "task.data._target_",
    ),
    "args_beside_a_valid_target": (
        lambda c, s: c["task"].update(_args_=[f"touch {s}"]),
        "task._args_",
    ),
    "partial_node": (
        lambda c, s: c["task"].update(loader={**shell(s), "_partial_": True}),
        "task.loader._target_",
    ),
    "partial_on_a_group_node": (lambda c, s: c["task"].update(_partial_=True), "task._partial_"),
    "target_inside_a_list": (
        lambda c, s: c["task"].update(items=[1, {"deep": touch(s)}]),
        "task.items[1].deep._target_",
    ),
    "target_in_the_cell_node": (
        lambda c, s: c["cell"].update(_target_="builtins.exec"),
        "cell._target_",
    ),
    "interpolation_string": (
        lambda c, s: c["task"].update(name="${oc.env:HOME}"),
        "task.name",
    ),
    "valid_target_of_another_group": (
        lambda c, s: c["task"].update(_target_="rnnexp.train.clip.NormClip"),
        "task._target_",
    ),
    "convert_key_elsewhere": (lambda c, s: c["model"].update(_convert_="all"), "model._convert_"),
    "target_at_the_root": (lambda c, s: c.update(shell(s)), "_target_"),
}


@pytest.fixture(scope="module")
def crafted(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One crafted checkpoint per case of CRAFTED, each saved with plain ``torch.save``."""
    folder = tmp_path_factory.mktemp("crafted")
    base = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    paths = {}
    for name, (edit, _) in CRAFTED.items():
        payload = copy.deepcopy(base)
        edit(payload["config"], folder / f"{name}.pwned")
        torch.save(payload, folder / f"{name}.pt")
        paths[name] = folder / f"{name}.pt"
    return paths


def test_the_payloads_would_run_code_if_instantiated(tmp_path: Path) -> None:
    """The sentinel node is live: built by Hydra (whose blocklist stops os.system, not
    this), it creates its file, also from inside a task node."""
    instantiate(OmegaConf.create({"task": {"data": touch(tmp_path / "a")}}))
    assert (tmp_path / "a").exists()


@pytest.mark.parametrize("command", ["evaluate", "sample", "predict"])
@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_config_is_refused_before_anything_is_built(
    crafted: dict[str, Path], case: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = crafted[case]
    args = [command, str(path), *(["a sentence"] if command == "predict" else [])]
    code, output = cli(*args, capsys=capsys)
    assert_one_line(code, output, "refusing to load", str(path), CRAFTED[case][1])
    assert not path.with_suffix(".pwned").exists()


def test_a_pickled_object_is_still_refused(tmp_path: Path, capsys) -> None:
    sentinel = tmp_path / "pwned"
    torch.save({"format": "x", "hook": _Exploit(str(sentinel))}, tmp_path / "evil.pt")
    code, output = cli("evaluate", str(tmp_path / "evil.pt"), capsys=capsys)
    assert_one_line(code, output, "refusing to load", "pickled")
    assert not sentinel.exists()


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def test_the_registry_is_the_shipped_config_folder() -> None:
    registry = buildable()
    assert "rnnexp.tasks.timer.TimerTask" in registry["task._target_"]
    assert registry["cell._target_"] == {"rnnexp.cells.create"}
    assert registry["optim._partial_"] == {True}
    assert "torch.optim.Adam" not in registry["task._target_"]  # each group its own set


def test_a_saved_config_of_every_shipped_choice_passes() -> None:
    for choice in ("task=ner", "optim=sgd", "sched=step", "clip=hidden", "regularizer=pascanu",
                   "cell=lstm", "memory=long", "experiment=charlm_shakespeare"):  # fmt: skip
        cfg = compose_config(choice)
        check_saved_config(OmegaConf.to_container(cfg, resolve=True), "saved.pt")


@pytest.mark.parametrize(
    "override",
    ["+task.data._target_=os.system", "task={_target_: os.system}",
     "+task.items=[{_target_: os.system}]", "+model._args_=[1]", "+task._partial_=true",
     "+model._recursive_=false", "task.name=${oc.env:HOME}"],
)  # fmt: skip
def test_overrides_cannot_add_what_is_built(run_dir: Path, override: str) -> None:
    saved = Checkpoint.load(run_dir, "best").config
    with pytest.raises(RnnexpError, match="override"):
        apply_overrides(OmegaConf.create(saved), [override])


# --- integrity --------------------------------------------------------------------------


def flip_byte_in_tensor_data(source: Path, dest: Path) -> str:
    """A copy of ``source`` with one bit flipped in the middle of its largest tensor; the
    member's name."""
    with zipfile.ZipFile(source) as archive:
        member = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    raw = bytearray(source.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", raw[member.header_offset + 26 : member.header_offset + 30]
    )
    start = member.header_offset + 30 + name_len + extra_len  # stored: the tensor's bytes
    raw[start + member.file_size // 2] ^= 0x01
    dest.write_bytes(bytes(raw))
    return member.filename


def test_a_flipped_byte_in_the_weights_is_caught(run_dir: Path, tmp_path: Path, capsys) -> None:
    flipped = tmp_path / "flipped.pt"
    member = flip_byte_in_tensor_data(run_dir / "checkpoints" / "best.pt", flipped)
    torch.load(flipped, weights_only=True)  # torch itself loads it without a word
    code, output = cli("evaluate", str(flipped), capsys=capsys)
    assert_one_line(code, output, "is corrupt", f"member {member} fails its CRC check")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (os.urandom(4096), "not a torch checkpoint"),
        (b"", "the file is empty"),
        (b"step: 10\nthis is a text file\n", "not a torch checkpoint"),
    ],
    ids=["random_bytes", "empty", "text"],
)
def test_not_a_checkpoint_is_one_line(
    tmp_path: Path, content: bytes, expected: str, capsys
) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    code, output = cli("evaluate", str(path), capsys=capsys)
    assert_one_line(code, output, expected, str(path))


def test_truncated_plain_zip_and_folder_are_one_line(run_dir: Path, tmp_path: Path) -> None:
    whole = (run_dir / "checkpoints" / "best.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    with zipfile.ZipFile(tmp_path / "plain.pt", "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    (tmp_path / "folder.pt").mkdir()
    cases = {
        "truncated.pt": "truncated",
        "plain.pt": "zip archive but not a torch",
        "folder.pt": "a folder",
    }
    for name, expected in cases.items():
        with pytest.raises(RnnexpError, match=expected):
            Checkpoint.load(tmp_path / name)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_checkpoint_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "locked.pt"
    path.write_bytes((run_dir / "checkpoints" / "best.pt").read_bytes())
    path.chmod(0)
    with pytest.raises(RnnexpError, match="Permission denied"):
        Checkpoint.load(path)


def test_a_run_without_best_falls_back_to_last(run_dir: Path, tmp_path: Path, caplog) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(
        (run_dir / "checkpoints" / "last.pt").read_bytes()
    )
    assert checkpoint.resolve(tmp_path, "best") == tmp_path / "checkpoints" / "last.pt"
    assert "no best.pt" in caplog.text
    with pytest.raises(RnnexpError, match="no checkpoint at"):
        checkpoint.resolve(tmp_path, "other")


# --- atomic writes ----------------------------------------------------------------------


def test_a_stale_temporary_file_is_removed_at_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    dead = os.fork()
    if dead == 0:  # a child that exits at once: its pid is then free
        os._exit(0)
    os.waitpid(dead, 0)
    stale, live = temporary_path(target, dead), temporary_path(target, os.getppid())
    stale.write_bytes(b"partial")
    live.write_bytes(b"a writer still at work")
    Checkpoint(step=1, config={}, model={}).save(target)
    assert not stale.exists() and live.exists()
    assert torch.load(target, weights_only=True)["step"] == 1


def test_a_signal_during_a_write_is_delivered_after_it(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    delivered: list[bool] = []

    def interrupt(signum: int, frame: Any) -> None:
        delivered.append(target.is_file())  # the handler runs once the file is in place
        raise KeyboardInterrupt

    def write(handle: Any) -> None:
        torch.save({"weights": torch.arange(10_000)}, handle)
        signal.raise_signal(signal.SIGTERM)  # a preemption in the middle of the write
        assert not target.exists()  # the handler has not run: the write goes on

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic_write(target, write)
        assert signal.getsignal(signal.SIGTERM) is interrupt  # the handler is back
    finally:
        signal.signal(signal.SIGTERM, before)
    assert delivered == [True]
    assert torch.equal(torch.load(target, weights_only=True)["weights"], torch.arange(10_000))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_nested_deferrals_deliver_once_at_the_outermost(tmp_path: Path) -> None:
    calls: list[int] = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    try:
        with deferred_signals():
            write_json(tmp_path / "metrics.json", {"step": 1})
            atomic_write(tmp_path / "x", lambda h: signal.raise_signal(signal.SIGINT))
            assert calls == []
        assert calls == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize(
    ("code", "fix"),
    [(errno.ENOSPC, "free space"), (errno.EROFS, "read-only"), (errno.EACCES, "not writable")],
)
def test_an_oserror_while_writing_is_one_line(tmp_path: Path, code: int, fix: str) -> None:
    def fail(handle: Any) -> None:
        handle.write(b"half")
        raise OSError(code, os.strerror(code))

    target = tmp_path / "run" / "metrics.json"
    with pytest.raises(RnnexpError, match=f"cannot write {target}: .*{fix}") as info:
        atomic_write(target, fail)
    assert "\n" not in str(info.value)
    assert list((tmp_path / "run").iterdir()) == []  # no temporary file stays behind


def test_torch_save_on_a_full_disk_is_one_line(tmp_path: Path) -> None:
    """torch.save reports a failed write as a RuntimeError; the writer finds the OSError."""
    import resource

    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    xfsz = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, limits[1]))
    try:
        with pytest.raises(RnnexpError, match="File too large"):
            Checkpoint(step=1, config={}, model={"w": torch.zeros(100_000)}).save(
                tmp_path / "last.pt"
            )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, xfsz)
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_a_folder_should_be_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "outputs").write_text("a file")
    with pytest.raises(RnnexpError, match="a file stands where a folder is needed"):
        write_json(tmp_path / "outputs" / "run" / "metrics.json", {})
