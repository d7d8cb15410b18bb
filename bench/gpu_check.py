"""The prepared GPU check (issue 25): everything the first lent GPU minutes should measure, in one
call, so that they are not spent writing scripts.

Three parts, each in its own process (a failing part is reported and the others still run):

* ``anchor``: the plain-PyTorch anchor, ``../shared/bench/anchor_r3d.py --only best``
  (R3D-50 with a duplicated res5, bf16 + channels_last_3d + torch.compile);
* ``step``: the full ConST-CL training step at the paper setting (R3D-50, 2 x 16 clips of
  16 x 224^2, L_c = 5, K = 8) in bf16 + channels_last_3d, eager and compiled
  (``bench/train_throughput.py``), with the host reads per step;
* ``pretrain``: a 200-step ``constcl pretrain`` on the synthetic world with 14 decoding
  workers (same model, clip and batch), reporting clips/s and the share of time waiting for
  data from ``metrics.jsonl`` (first log interval left out: compilation, worker start).

Prints one table (clips/s, TFLOP/s, peak memory, ratio to the anchor) and writes
``gpu_check.json`` into ``--out`` (default ``$OUT``, else ``gpu_check_out``). ``--smoke`` runs
tiny settings on the CPU (the anchor is not run: it needs minutes there; its JSON is read from
``--anchor-json`` when given), so the script is exercised by ``tests/bench``.

    bash bench/gpu_check.sh                      # on a GPU (see BENCHMARKS.md for the device)
    bash bench/gpu_check.sh --smoke --out /tmp/x
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANCHOR_CANDIDATES = ("../shared/bench/anchor_r3d.py", "shared/bench/anchor_r3d.py",
                     ".devcarry/anchor_r3d.py")

# the paper setting of issue 25 and its tiny CPU counterpart
PAPER = {"model": "r3d50", "batch": 16, "frames": 16, "size": 224, "context_length": 5,
         "regions": 8}
SMOKE = {"model": "r3d_tiny", "batch": 2, "frames": 8, "size": 32, "context_length": 3,
         "regions": 4}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny settings on the CPU")
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    p.add_argument("--parts", default="anchor,step,pretrain",
                   help="comma-separated subset of anchor,step,pretrain")
    p.add_argument("--anchor", default="", help="anchor_r3d.py (default: the first of "
                   + ", ".join(ANCHOR_CANDIDATES) + " that exists)")
    p.add_argument("--anchor-json", default="",
                   help="read the anchor's result from this anchor_r3d.json instead of running it")
    p.add_argument("--steps", type=int, default=0, help="pretrain steps (0: 200; smoke 4)")
    p.add_argument("--workers", type=int, default=-1, help="decoding workers (-1: 14; smoke 1)")
    p.add_argument("--work-dir", default="", help="synthetic world and run folder "
                   "(default: /tmp/constcl-gpu-check)")
    p.add_argument("--part-timeout", type=int, default=0,
                   help="seconds per part at most (0: 300 on a GPU, 120 in smoke)")
    p.add_argument("--budget", type=int, default=-1,
                   help="seconds for the whole call (-1: 540 on a GPU, none in smoke); a part "
                        "gets at most what is left, so the JSON is always written")
    return p.parse_args(argv)


class Clock:
    """Per-part time limits within the call's budget."""

    def __init__(self, per_part: int, budget: int) -> None:
        self.per_part, self.budget, self.started = per_part, budget, time.time()

    def limit(self) -> int:
        if self.budget <= 0:
            return self.per_part
        left = self.budget - (time.time() - self.started)
        return max(1, min(self.per_part, int(left)))


def run_part(name: str, cmd: list[str], timeout: int, log_dir: Path) -> tuple[int, str]:
    """Run one part; its output goes to ``<name>.log`` and is echoed; returns (code, text)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PYTHONUNBUFFERED="1")
    print(f"[gpu_check] {name}: {' '.join(cmd)}", flush=True)
    started = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code = 124
        text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
            else (e.stdout or "")
        text += f"\n[gpu_check] {name}: timed out after {timeout} s"
    (log_dir / f"{name}.log").write_text(text)
    tail = "\n".join(text.strip().splitlines()[-6:])
    print(f"[gpu_check] {name}: exit {code} after {time.time() - started:.0f} s\n{tail}",
          flush=True)
    return code, text


def last_json_line(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def anchor_part(args: argparse.Namespace, out: Path, clock: Clock) -> dict:
    """The anchor's best variant: clips/s, TFLOP/s, peak GiB (from its anchor_r3d.json)."""
    if args.anchor_json:
        return read_anchor(Path(args.anchor_json))
    if args.smoke:
        return {"skipped": "smoke: the anchor needs minutes on a CPU (pass --anchor-json)"}
    script = args.anchor or next((c for c in ANCHOR_CANDIDATES if (ROOT / c).is_file()), "")
    if not script or not (ROOT / script).is_file():
        return {"error": f"anchor script not found (looked for {', '.join(ANCHOR_CANDIDATES)}"
                         f"; the ../shared folder does not travel to a device machine: copy "
                         f"it into .devcarry/ and carry that)"}
    code, _ = run_part("anchor", [sys.executable, script, "--only", "best", "--out", str(out)],
                       clock.limit(), out)
    found = read_anchor(out / "anchor_r3d.json")
    if code != 0:
        found.setdefault("error", f"exit {code} (see anchor.log)")
    return found


def read_anchor(path: Path) -> dict:
    if not path.is_file():
        return {"error": f"{path} not written"}
    data = json.loads(path.read_text())
    rows = data.get("rows") or []
    if not rows:
        return {"error": f"{path}: no variant ran", "info": data.get("info")}
    best = max(rows, key=lambda r: r["clips_per_s"])
    return {"variant": best["variant"], "clips_per_s": best["clips_per_s"],
            "tflop_per_s": best.get("tflops"), "peak_memory_gib": best.get("peak_mem_gib"),
            "info": data.get("info")}


def step_part(args: argparse.Namespace, out: Path, clock: Clock) -> list[dict]:
    """The full ConST-CL step, eager and compiled (bench/train_throughput.py)."""
    s = SMOKE if args.smoke else PAPER
    base = [sys.executable, "bench/train_throughput.py", "--model", s["model"],
            "--batch", str(s["batch"]), "--frames", str(s["frames"]), "--size", str(s["size"]),
            "--context-length", str(s["context_length"]), "--regions", str(s["regions"])]
    if args.smoke:
        base += ["--precision", "fp32", "--warmup", "1", "--steps", "2", "--count-steps", "1",
                 "--device", "cpu"]
    else:
        base += ["--precision", "bf16", "--channels-last", "--warmup", "5", "--steps", "20"]
    rows = []
    for compiled in (False, True):
        name = "step_compiled" if compiled else "step_eager"
        cmd = base + (["--compile"] + (["--compile-backend", "eager"] if args.smoke else [])
                      if compiled else [])
        code, text = run_part(name, cmd, clock.limit(), out)
        row = last_json_line(text) or {}
        row["name"] = name
        if code != 0 or "clips_per_s" not in row:
            row["error"] = f"exit {code} (see {name}.log)"
        rows.append(row)
    return rows


def pretrain_part(args: argparse.Namespace, out: Path, clock: Clock) -> dict:
    """A short ``constcl pretrain`` on the synthetic world; clips/s and data wait."""
    s = SMOKE if args.smoke else PAPER
    steps = args.steps or (4 if args.smoke else 200)
    workers = args.workers if args.workers >= 0 else (1 if args.smoke else 14)
    work = Path(args.work_dir or "/tmp/constcl-gpu-check")
    run_name = f"gpu_check-{time.strftime('%Y%m%d-%H%M%S')}"
    overrides = [
        "data.source=synthetic", f"data.synth_dir={work / 'synthetic'}",
        f"data.workers={workers}", f"data.clip_frames={s['frames']}", f"data.size={s['size']}",
        f"data.num_regions={s['regions']}", f"model.backbone={s['model']}",
        f"model.context_length={s['context_length']}", f"train.batch_size={s['batch']}",
        f"train.steps={steps}", f"train.log_every={max(steps // 10, 1)}",
        f"train.checkpoint_every={steps + 1}", f"train.out_dir={work / 'runs'}",
        f"train.run_name={run_name}", "train.progress=plain", "train.deterministic=false"]
    if args.smoke:
        overrides += ["data.synth_videos=8", "data.synth_size=32", "train.device=cpu",
                      "train.cpu_threads=1", "model.sync_bn=false"]
    else:
        overrides += ["train.precision=bf16", "train.channels_last=true"]
    started = time.time()
    code, text = run_part("pretrain", [sys.executable, "-m", "constcl", "pretrain", *overrides],
                          clock.limit(), out)
    metrics = work / "runs" / run_name / "metrics.jsonl"
    lines = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.is_file() else []
    result = {"steps": steps, "workers": workers, "wall_s": round(time.time() - started, 1),
              "clips_per_step": 2 * s["batch"], "log_lines": len(lines)}
    if code != 0 or not lines:
        result["error"] = f"exit {code} (see pretrain.log)"
        return result
    timed = lines[1:] or lines  # the first interval holds start-up and compilation
    result.update(
        clips_per_s=round(sum(r["clips_per_s"] for r in timed) / len(timed), 2),
        data_wait_share=round(sum(r["data_wait_share"] for r in timed) / len(timed), 4),
        final_loss=lines[-1].get("loss"))
    return result


def summary_rows(results: dict) -> list[dict]:
    """Rows of the printed table: clips/s, TFLOP/s, peak GiB and the ratio to the anchor."""
    anchor = results.get("anchor", {}).get("clips_per_s")
    rows = []
    if "anchor" in results:
        a = results["anchor"]
        rows.append({"what": f"anchor ({a.get('variant', a.get('error') or a.get('skipped'))})",
                     "clips_per_s": a.get("clips_per_s"), "tflop_per_s": a.get("tflop_per_s"),
                     "peak_memory_gib": a.get("peak_memory_gib")})
    for r in results.get("step", []):
        rows.append({"what": f"ConST-CL step, {r['name'].split('_')[1]}"
                             + (f" ({r['error']})" if "error" in r else ""),
                     "clips_per_s": r.get("clips_per_s"), "tflop_per_s": r.get("tflop_per_s"),
                     "peak_memory_gib": r.get("peak_memory_gib"),
                     "host_reads_per_step": r.get("host_reads_per_step")})
    if "pretrain" in results:
        p = results["pretrain"]
        rows.append({"what": f"constcl pretrain, {p['steps']} steps, {p['workers']} workers"
                             + (f" ({p['error']})" if "error" in p else ""),
                     "clips_per_s": p.get("clips_per_s"),
                     "data_wait_share": p.get("data_wait_share")})
    for row in rows:
        if anchor and row.get("clips_per_s") and not row["what"].startswith("anchor"):
            row["ratio_to_anchor"] = round(row["clips_per_s"] / anchor, 3)
    return rows


def print_table(rows: list[dict]) -> None:
    def fmt(v):
        return "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

    cols = ("clips_per_s", "tflop_per_s", "peak_memory_gib", "ratio_to_anchor",
            "data_wait_share")
    print("| what | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for r in rows:
        print(f"| {r['what']} | " + " | ".join(fmt(r.get(c)) for c in cols) + " |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(args.part_timeout or (120 if args.smoke else 300),
                  args.budget if args.budget >= 0 else (0 if args.smoke else 540))
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"anchor", "step", "pretrain"}
    if unknown:
        print(f"constcl: error: --parts: unknown {sorted(unknown)}; allowed: anchor, step, "
              f"pretrain", file=sys.stderr)
        return 2
    import torch  # after the argument checks: a bad call answers at once

    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "smoke": args.smoke,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available()
        else f"cpu ({platform.machine()})",
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "setting": SMOKE if args.smoke else PAPER}
    print(f"[gpu_check] {results['device']}, torch {results['torch']}, CUDA {results['cuda']}",
          flush=True)
    if "anchor" in parts:
        results["anchor"] = anchor_part(args, out, clock)
    if "step" in parts:
        results["step"] = step_part(args, out, clock)
    if "pretrain" in parts:
        results["pretrain"] = pretrain_part(args, out, clock)
    results["table"] = summary_rows(results)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    print_table(results["table"])
    print(f"[gpu_check] wrote {out / 'gpu_check.json'}")
    failed = [r["what"] for r in results["table"] if "(exit" in r["what"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
