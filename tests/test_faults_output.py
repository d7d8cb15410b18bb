"""Issue 23, cases 5 and 7: writes that fail on the output side, and one-line messages.

Checkpoint, export and evaluation results are written under a real file-size limit
(``RLIMIT_FSIZE`` in a subprocess; Python ignores SIGXFSZ, so writes fail with EFBIG, the
``[Errno 27]`` of the issue): the error names the file, no temporary file is left, and the
command prints it once. Then the messages of case 7: a NaN row of an OTB
``groundtruth_rect.txt`` stops before any tracking naming file and line; a garbage ``.pt`` gives
one line instead of PyTorch's paragraph about ``weights_only``.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from constcl.cli import main
from constcl.engine.checkpoint import CheckpointReadError, load_checkpoint
from constcl.errors import user_message

WRITES = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import torch
    out = Path(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    from constcl.engine.checkpoint import save_checkpoint
    from constcl.engine.export import export_backbone
    from constcl.errors import user_message
    from constcl.eval.outputs import write_json
    from constcl.models import build_model

    model = build_model("r3d_tiny", variant="constcl", local_source="y", context_length=3)
    config = {"model": {"backbone": "r3d_tiny", "variant": "constcl", "local_source": "y"}}
    writes = {
        "checkpoint": lambda: save_checkpoint({"model": model.state_dict()}, out / "run", 3, 2),
        "export": lambda: export_backbone(model, out / "backbone.safetensors", config),
        "results": lambda: write_json(out / "results.json", {"x": list(range(3000))}),
    }
    messages = {}
    for name, write in writes.items():
        try:
            write()
            messages[name] = None
        except Exception as err:
            messages[name] = [type(err).__name__, user_message(err)]
    print(json.dumps(messages))
""")


def test_writes_under_a_file_size_limit_name_their_file(tmp_path):
    """Before: ``[Errno 27] File too large`` with no path (and the export's safetensors error
    said only "I/O error")."""
    proc = subprocess.run([sys.executable, "-c", WRITES, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    messages = json.loads(proc.stdout.strip().splitlines()[-1])
    wanted = {"checkpoint": tmp_path / "run" / "checkpoints" / "step_00000003.pt",
              "export": tmp_path / "backbone.safetensors", "results": tmp_path / "results.json"}
    for name, path in wanted.items():
        assert messages[name] is not None, f"{name} was written despite the limit"
        kind, text = messages[name]
        assert str(path) in text and ("File too large" in text or "os error 27" in text), text
        assert not path.exists()
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == [], leftovers  # no half-written temporary files


def test_an_eval_command_under_a_file_size_limit_prints_one_line_with_the_path(tmp_path):
    """The whole command: ``eval track`` writes boxes, plots, then results.json."""
    world = tmp_path / "world"
    from constcl.data.synth import generate_world

    generate_world(world, num_videos=2, seed=0, size=64, frames=8, workers=1, tracks="all")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "constcl", "eval", "track", "--checkpoint",
                           "random", "--backbone", "r3d_tiny", "--data", str(world), "--out",
                           str(out), "--sequences", "1", "--workers", "0"],
                          capture_output=True, text=True, timeout=180, preexec_fn=limit,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith("constcl: error:"), errors
    assert "File too large" in errors[0] and str(out) in errors[0], errors[0]
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- case 7 messages


def test_nan_row_in_otb_groundtruth_stops_before_tracking(tmp_path, caplog, monkeypatch):
    from constcl.data.synth import generate_world
    from constcl.eval.track import task as track_task

    world = tmp_path / "world"
    generate_world(world, num_videos=2, seed=0, size=64, frames=8, workers=1, tracks="all")
    seq = sorted((world / "otb").iterdir())[0]
    gt = seq / "groundtruth_rect.txt"
    lines = gt.read_text().splitlines()
    lines[3] = "nan,nan,nan,nan"
    gt.write_text("\n".join(lines) + "\n")

    def no_tracking(*args, **kwargs):
        raise AssertionError("tracking started before the annotation was checked")

    monkeypatch.setattr(track_task, "run_tracker", no_tracking)
    code = main(["eval", "track", "--checkpoint", "random", "--backbone", "r3d_tiny",
                 "--data", str(world), "--out", str(tmp_path / "out"), "--workers", "0"])
    errors = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"{gt}:4:") and "finite" in errors[0]


def test_garbage_pt_gives_one_line_without_weights_only_advice(tmp_path):
    path = tmp_path / "step_00000001.pt"
    path.write_bytes(b"\x80\x02c__builtin__\neval\nq\x00.")  # a pickle that calls eval
    with pytest.raises(CheckpointReadError) as err:
        load_checkpoint(path)
    message = user_message(err.value)
    assert str(path) in message and "weights_only" not in message and len(message) < 300
    random = tmp_path / "random.pt"
    random.write_bytes(os.urandom(2000))
    with pytest.raises(CheckpointReadError) as err:
        load_checkpoint(random)
    message = str(err.value)
    assert "\n" not in message and "cannot be read: not a" in message and len(message) < 300


def test_resume_from_a_garbage_pt_is_one_line(tmp_path, caplog):
    """``train.resume=PATH`` is where a user hands constcl a ``.pt``."""
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"\x80\x02c__builtin__\neval\nq\x00.")
    code = main(["pretrain", f"train.out_dir={tmp_path}", "train.run_name=r",
                 "train.device=cpu", f"train.resume={bad}", "data.source=synthetic",
                 f"data.synth_dir={tmp_path / 'world'}", "data.synth_videos=2",
                 "data.synth_size=32"])
    errors = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
    assert code == 2 and len(errors) == 1, errors
    assert str(bad) in errors[0] and "weights_only" not in errors[0]



BLOCKED = textwrap.dedent("""
    import datetime, socket, sys
    import constcl.cli as cli
    import constcl.sigterm as sigterm
    sigterm.GRACE_SECONDS = 1.0

    def blocked(parser, args):  # a rank waiting for a peer that never comes, inside C++
        import torch.distributed as dist
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        print("ready", flush=True)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                                world_size=2, timeout=datetime.timedelta(seconds=120))

    cli._dispatch = blocked
    sys.exit(cli.main(["info"]))
""")


def test_sigterm_ends_a_process_blocked_in_c_code():
    """SIGTERM unwinds through Python; a process blocked in C++ (a collective waiting for a
    dead rank) never gets there, so a watchdog ends it after the grace period, one line."""
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # inside the rendezvous wait
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("constcl: error: stopped by SIGTERM"), lines
