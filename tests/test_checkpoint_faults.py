"""Faults during a training run (issue 18 item 5), on the tiny random model with real TRL and MLflow (SQLite):

- the disk fills while checkpoint-2 is written: on a real 16 MB tmpfs filled up while training is held
  after checkpoint-1 (root only: it mounts one), and with the safetensors writer patched to write half the
  file and raise ENOSPC (runs everywhere). The stage fails with a one-line message, checkpoint-1 stays the
  resume point, and the rerun (space freed) resumes from it and completes the trajectory;
- a corrupted checkpoint folder (truncated ``trainer_state.json``, truncated ``model.safetensors``, a
  truncated ``optimizer.pt``, no weights at all): resume skips it with a warning and uses the one before;
  when none is usable the warning says the run starts again from step 0.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from valuedrift import cli
from valuedrift.core.rundir import TRAINER_STATE, RunDir, checkpoint_problem

from .conftest import ROOT
from .reliability_helpers import (
    CORPUS,
    prepare_processed,
    reliability_params,
    sft_args,
    wait_for,
    write_params,
)
from .training_hold import Hold


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("checkpoint_faults")
    params_file = write_params(root / "params.yaml", reliability_params(tiny_model_dir, max_steps=3))
    return params_file, prepare_processed(params_file, root / "processed")


def steps(run_dir: Path) -> list[int]:
    return [c["step"] for c in RunDir(run_dir).checkpoint_records()]


def assert_failed_then_resumes(setup, tiny_model_dir, out: Path, rc: int, err: str, caplog, capsys) -> None:
    """After a failed checkpoint-2: the message, checkpoint-1 as resume point, and a rerun that resumes."""
    params_file, processed = setup
    run_dir = out / CORPUS
    assert rc == 1, err
    assert "no space left on device" in err and "resumes from the last complete checkpoint" in err, err
    assert "Traceback" not in err
    assert not (run_dir / "final").exists()
    ckpt1 = run_dir / "checkpoints" / "checkpoint-1"
    assert RunDir(run_dir).last_checkpoint() == ckpt1 and checkpoint_problem(ckpt1) is None
    caplog.clear()
    caplog.set_level("INFO")
    assert cli.main(sft_args(params_file, tiny_model_dir, processed, out)) == 0, capsys.readouterr().err
    assert f"resuming from {ckpt1}" in caplog.text
    assert steps(run_dir) == [0, 1, 2, 3]
    assert RunDir(run_dir).has_final_model()


@pytest.fixture()
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); "
                    "test_disk_full_in_the_checkpoint_writer_* covers the same path with a patched writer")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_on_a_real_tmpfs_fails_clearly_and_the_rerun_resumes(
    setup, tiny_model_dir, small_disk, tmp_path, mlflow_uri, monkeypatch, caplog, capsys
):
    params_file, processed = setup
    monkeypatch.chdir(ROOT)
    out = small_disk / "runs" / "sft"
    filler = small_disk / "filler"
    hold = Hold(tmp_path / "hold", step=1)  # checkpoint-1 is on disk; step 2 and its checkpoint are next
    hold.install(monkeypatch)

    def fill_then_release() -> None:
        try:
            wait_for(hold.is_held, 300, "training to finish step 1")
            st = os.statvfs(small_disk)
            # leave 48 KB: the stance tables of step 2 fit, the checkpoint's weights (~130 KB) do not
            with filler.open("wb") as f:
                f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 48 * 1024))
        finally:
            hold.release()

    filling = threading.Thread(target=fill_then_release, daemon=True)
    filling.start()
    capsys.readouterr()
    rc = cli.main(sft_args(params_file, tiny_model_dir, processed, out))
    err = capsys.readouterr().err
    filling.join(timeout=60)
    filler.unlink()
    assert_failed_then_resumes(setup, tiny_model_dir, out, rc, err, caplog, capsys)


def test_disk_full_in_the_checkpoint_writer_fails_clearly_and_the_rerun_resumes(
    setup, tiny_model_dir, tmp_path, mlflow_uri, monkeypatch, caplog, capsys
):
    import transformers.modeling_utils as mu

    params_file, processed = setup
    monkeypatch.chdir(ROOT)
    out = tmp_path / "runs" / "sft"
    real_save = mu.safe_save_file

    def save_half_then_enospc(tensors, filename, metadata=None):
        if f"{os.sep}checkpoint-2{os.sep}" not in str(filename):
            return real_save(tensors, filename, metadata=metadata)
        real_save(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])  # what a full disk leaves behind
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))

    monkeypatch.setattr(mu, "safe_save_file", save_half_then_enospc)
    capsys.readouterr()
    rc = cli.main(sft_args(params_file, tiny_model_dir, processed, out))
    err = capsys.readouterr().err
    half = out / CORPUS / "checkpoints" / "checkpoint-2"
    assert "model.safetensors" in err and checkpoint_problem(half) is not None, err  # half-written: no trainer state
    monkeypatch.setattr(mu, "safe_save_file", real_save)
    assert_failed_then_resumes(setup, tiny_model_dir, out, rc, err, caplog, capsys)


# --------------------------------------------------------------------------------------------------
# Corrupted checkpoints
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_checkpoints(setup, tiny_model_dir, tmp_path_factory, empty_mlflow_db):
    """A run folder interrupted after checkpoint-2 of 3 (complete checkpoints 1 and 2, no final/)."""
    from .conftest import fresh_mlflow_uri

    params_file, processed = setup
    root = tmp_path_factory.mktemp("two_checkpoints")
    out = root / "runs" / "sft"
    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)
    mp.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(root / "store", empty_mlflow_db))

    class Stop(RuntimeError):
        pass

    from transformers import Trainer, TrainerCallback

    class StopAt3(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise Stop("interrupted before step 3")

    original = Trainer.__init__

    def init(trainer, *a, **kw):
        original(trainer, *a, **kw)
        trainer.add_callback(StopAt3())

    mp.setattr(Trainer, "__init__", init)
    try:
        with pytest.raises(Stop):
            cli.main(sft_args(params_file, tiny_model_dir, processed, out))
    finally:
        mp.undo()
    run_dir = out / CORPUS
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    return run_dir


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


CORRUPTIONS = {
    "trainer_state_truncated": lambda c: truncate(c / TRAINER_STATE),
    "weights_truncated": lambda c: truncate(c / "model.safetensors"),
    "weights_header_only": lambda c: truncate(c / "model.safetensors", keep=0.01),
    "optimizer_truncated": lambda c: truncate(c / "optimizer.pt"),
    "weights_missing": lambda c: (c / "model.safetensors").unlink(),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupted_checkpoint_is_skipped_for_the_one_before(two_checkpoints, corruption, tmp_path, caplog):
    run_dir = tmp_path / CORPUS
    shutil.copytree(two_checkpoints, run_dir)
    ckpt1, ckpt2 = (run_dir / "checkpoints" / f"checkpoint-{n}" for n in (1, 2))
    assert RunDir(run_dir).last_checkpoint() == ckpt2
    CORRUPTIONS[corruption](ckpt2)
    caplog.set_level(logging.WARNING)
    assert RunDir(run_dir).last_checkpoint() == ckpt1
    assert f"skipping resume checkpoint {ckpt2}" in caplog.text


def test_resume_after_corruption_trains_from_the_checkpoint_before(
    setup, two_checkpoints, tiny_model_dir, tmp_path, monkeypatch, caplog
):
    params_file, processed = setup
    out = tmp_path / "runs" / "sft"
    run_dir = out / CORPUS
    shutil.copytree(two_checkpoints, run_dir)
    shutil.copy(two_checkpoints.parents[2] / "store" / "mlflow.db", tmp_path / "mlflow.db")  # the run's MLflow store
    truncate(run_dir / "checkpoints" / "checkpoint-2" / "model.safetensors")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    caplog.set_level("INFO")
    assert cli.main(sft_args(params_file, tiny_model_dir, processed, out)) == 0
    assert f"resuming from {run_dir / 'checkpoints' / 'checkpoint-1'}" in caplog.text
    assert steps(run_dir) == [0, 1, 2, 3] and RunDir(run_dir).has_final_model()


def test_no_usable_checkpoint_says_so(two_checkpoints, tmp_path, caplog):
    run_dir = tmp_path / CORPUS
    shutil.copytree(two_checkpoints, run_dir)
    for c in (run_dir / "checkpoints").glob("checkpoint-*"):
        truncate(c / "model.safetensors")
    caplog.set_level(logging.WARNING)
    assert RunDir(run_dir).last_checkpoint() is None
    assert "no usable resume checkpoint" in caplog.text and "starts again from step 0" in caplog.text
    assert json.loads((run_dir / "checkpoints" / "checkpoint-1" / TRAINER_STATE).read_text())["global_step"] == 1
