"""A break-it probe: hostile inputs and environments against the command lines, each case classified
as OK, clear error (exit 2, one ``error:`` line), silent (exit 0 with a wrong result), crash (a
traceback) or hang (past its time limit).

    python tests/break_it.py [OUT_DIR]        # ~10 minutes on 2 cores; root for the tmpfs cases

Families: odd image sizes and modes, swapped or edited run files, overlapping results and storage
directories, symbolic links, a tiny disk (a 40 MiB tmpfs), read-only directories, hostile YAML.
Prints one line per case and the counts per verdict; writes ``OUT_DIR/break_it.json``.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from core.runs.identity import run_name

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SMALL = ["optim.epochs=1", "eval.probe_epochs=2", "data.train_limit=256", "model.width=8", "eval.online_knn=false",
         "eval.few_shot_episodes=10"]
TINY_STUDY = ["--losses", "supcon", "--policies", "simaugment", "--strengths", "1.0", "--seeds", "0", "--epochs", "1",
              "eval.probe_epochs=2", "data.train_limit=256", "eval.corruption_suite=fast", "eval.corruptions=[contrast]"]
RESULTS: list[dict] = []


def run(args: list[str], timeout: float = 180) -> tuple[int | None, str, str]:
    try:
        out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        return out.returncode, out.stdout, out.stderr
    except subprocess.TimeoutExpired as exc:
        return None, str(exc.stdout or ""), str(exc.stderr or "")


def verdict(rc: int | None, out: str, err: str, ok: Callable[[str, str], bool] | None = None,
            want_error: bool = False) -> str:
    if rc is None:
        return "hang"
    if "Traceback (most recent call last)" in err:
        return "crash"
    if rc == 2 and "error:" in err:
        return "clear error"
    if rc == 0:
        if want_error:
            return "silent"
        return "OK" if ok is None or ok(out, err) else "silent"
    return "crash"


def case(family: str, name: str, args: list[str], ok=None, want_error: bool = False, timeout: float = 180) -> str:
    t0 = time.perf_counter()
    rc, out, err = run(args, timeout)
    v = verdict(rc, out, err, ok, want_error)
    line = next((x for x in err.splitlines() if x.startswith("error:")), err.strip().splitlines()[-1] if err.strip()
                else "")
    RESULTS.append({"family": family, "case": name, "verdict": v, "rc": rc, "seconds": round(time.perf_counter() - t0),
                    "message": line[:240]})
    print(f"{v:12s} {family:10s} {name:55s} {line[:110]}", flush=True)
    return v


def train(*overrides: str) -> list[str]:
    return [PY, "-m", "core.train", *SMALL, *overrides]


def folder_of(root: Path, images: dict[str, bytes]) -> Path:
    for split in ("train", "val"):
        for rel, data in images.items():
            path = root / split / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root


def encoded(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    from PIL import Image

    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def images_family(tmp: Path) -> None:
    """Odd sizes and every mode, decoded by both decoders (in-process: fast)."""
    sys.path.insert(0, str(REPO))
    from core.data.decode import decode_eval, decode_views

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 40 * 52).reshape(40, 52)
    modes = {"RGB": encoded(rng.integers(0, 255, (375, 501, 3), dtype=np.uint8), "JPEG"),
             "L": encoded((ramp * 255).astype(np.uint8), "PNG"),
             "LA": encoded((ramp * 255).astype(np.uint8), "PNG", "LA"),
             "P": encoded((ramp * 255).astype(np.uint8), "PNG", "P"),
             "RGBA": encoded(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8), "PNG", "RGBA"),
             "CMYK": encoded(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8), "JPEG", "CMYK"),
             "1": encoded((ramp * 255).astype(np.uint8), "PNG", "1"),
             "I;16": encoded((ramp * 65535).astype(np.uint16), "PNG"),
             "I": encoded((ramp * 65535).astype(np.int32), "TIFF"),
             "F": encoded(ramp.astype(np.float32), "TIFF")}
    for w, h in ((1, 1), (1, 500), (500, 1), (97, 101), (499, 375), (501, 376), (1023, 1021)):
        modes[f"JPEG {w}x{h}"] = encoded(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "JPEG")
    for name, data in modes.items():
        try:
            views = decode_views(data, 3, size=64, views=2, strength=1.0, seed=0, epoch=0, min_area=0.08)
            view = decode_eval(data, 64)
            flat = name not in ("1",) and name.split()[0] != "JPEG" and view.std() < 1 and views.std() < 1
            v = "silent" if flat else "OK"
            message = f"mean {view.mean():.0f}, std {view.std():.0f}"
        except Exception as exc:
            v, message = "crash", f"{type(exc).__name__}: {exc}"
        RESULTS.append({"family": "images", "case": name, "verdict": v, "message": message})
        print(f"{v:12s} {'images':10s} {name:55s} {message}", flush=True)


def run_files_family(tmp: Path) -> None:
    runs = tmp / "runs"
    for temp in ("0.1", "0.2"):
        run(train(f"storage_path={runs}", f"loss.temperature={temp}"))
    a, b = sorted(runs.iterdir(), key=lambda p: json.loads((p / "config.json").read_text())["config"]["loss"]["temperature"])
    for name, edit in (
            ("another run's latest_state.pt", lambda d: shutil.copy(b / "latest_state.pt", d / "latest_state.pt")),
            ("config.json: image size edited", lambda d: _edit_config(d, ("data", "image_size"), 24)),
            ("config.json: loss name edited", lambda d: _edit_config(d, ("loss", "name"), "varcon")),
            ("config.json: not JSON", lambda d: (d / "config.json").write_text("{oops")),
            ("config.json: removed", lambda d: (d / "config.json").unlink()),
            ("both checkpoints unreadable", lambda d: [(d / f).write_bytes(b"x") for f in ("latest_state.pt",
                                                                                         "latest_state.pt.previous")]),
            ("summary.json: not JSON", lambda d: (d / "summary.json").write_text("{oops"))):
        d = tmp / f"edit-{len(RESULTS)}"
        shutil.copytree(a, d)
        edit(d)
        want_error = "summary" not in name
        case("run files", f"evaluate: {name}", [PY, "-m", "core.eval", str(d)], want_error=want_error)
    case("run files", "evaluate: --device cuda on a CPU machine", [PY, "-m", "core.eval", str(a), "--device", "cuda"],
         want_error=True)
    case("run files", "train: name= shared with another config",
         train(f"storage_path={runs}", f"name={a.name}", "loss.temperature=0.3"), want_error=True)
    case("run files", "train: the same config again", train(f"storage_path={runs}", "loss.temperature=0.1"),
         ok=lambda out, err: "finished earlier" in out)


def _edit_config(run_dir: Path, key: tuple[str, str], value) -> None:
    saved = json.loads((run_dir / "config.json").read_text())
    saved["config"][key[0]][key[1]] = value
    (run_dir / "config.json").write_text(json.dumps(saved))


def overlap_family(tmp: Path) -> None:
    study = [PY, "studies/augmentation_robustness.py", *TINY_STUDY]
    a = tmp / "A"
    run([*study, "--results-dir", str(a)], timeout=300)
    (a / "keep.txt").write_text("A's")
    case("overlap", "--results-dir B --storage A --overwrite (A finished)",
         [*study, "--results-dir", str(tmp / "B"), "--storage", str(a), "--overwrite"], want_error=True)
    case("overlap", "--results-dir B --storage A (no --overwrite)",
         [*study, "--results-dir", str(tmp / "B2"), "--storage", str(a)], want_error=True)
    case("overlap", "the same study again without --resume", [*study, "--results-dir", str(a)], want_error=True)
    case("overlap", "--resume with other flags", [*study, "--results-dir", str(a), "--resume", "model.width=12"],
         want_error=True)
    (a / "study.json").unlink()
    case("overlap", "--resume without study.json", [*study, "--results-dir", str(a), "--resume", "model.width=12"],
         want_error=True)
    case("overlap", "--seeds 0 0", [*study, "--results-dir", str(tmp / "C"), "--seeds", "0", "0"], want_error=True)
    case("overlap", "--epochs 0", [*study, "--results-dir", str(tmp / "C"), "--epochs", "0"], want_error=True)
    case("overlap", "results dir inside a run dir", [*study, "--results-dir", str(a / "runs")], want_error=False,
         ok=lambda out, err: True, timeout=300)
    print(f"{'':12s} overlap    A's files intact: {(a / 'keep.txt').exists() and (a / 'tune').exists()}")


def symlink_family(tmp: Path) -> None:
    precious = tmp / "precious"
    precious.mkdir()
    (precious / "important.txt").write_text("keep")
    runs = tmp / "sl-runs"
    sys.path.insert(0, str(REPO))
    from core.config import RunConfig

    cfg = RunConfig().with_overrides([*SMALL, f"storage_path={runs}"])
    runs.mkdir()
    (runs / run_name(cfg)).symlink_to(precious)
    case("symlinks", "train --overwrite through a symlinked run dir",
         [*train(f"storage_path={runs}"), "--overwrite"], want_error=True)
    (tmp / "results-link").symlink_to(precious)
    case("symlinks", "study --overwrite into a symlinked results dir",
         [PY, "studies/augmentation_robustness.py", *TINY_STUDY, "--results-dir", str(tmp / "results-link"),
          "--overwrite"], want_error=True)
    photos = tmp / "photos"
    sys.path.insert(0, str(REPO))
    from core.tools.photos import make_photo_folder

    make_photo_folder(str(photos), 2, {"train": 4, "val": 2}, size=(60, 45))
    (tmp / "photos-link").symlink_to(photos)
    case("symlinks", "data.root is a symlink (fine)",
         train("data.source=imagefolder", f"data.root={tmp / 'photos-link'}", "optim.batch_size=4", "data.image_size=16",
               "eval.knn_k=2", "data.train_limit=8", f"storage_path={tmp / 'r2'}"),
         ok=lambda out, err: "finished" in out)
    (photos / "train" / "class_00" / "dangling.jpg").symlink_to(tmp / "nowhere.jpg")
    case("symlinks", "a dangling image symlink",
         train("data.source=imagefolder", f"data.root={photos}", "optim.batch_size=4", "data.image_size=16",
               "eval.knn_k=2", "data.train_limit=8", f"storage_path={tmp / 'r3'}"), want_error=True)
    (photos / "train" / "class_00" / "dangling.jpg").unlink()
    print(f"{'':12s} symlinks   precious intact: {(precious / 'important.txt').exists()}")


def _mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


def disk_family(tmp: Path) -> None:
    small, ro = tmp / "small", tmp / "ro"
    if not (_mount(small, "size=40m") and _mount(ro, "ro,size=1m")):
        print("(no tmpfs mounts here: disk and read-only cases skipped)")
        return
    try:
        with open(small / "filler", "wb", buffering=0) as fh:  # fill the disk to the last block
            try:
                while True:
                    fh.write(b"\0" * (1 << 16))
            except OSError:
                pass
        case("tiny disk", "train into a full 40 MiB tmpfs", train(f"storage_path={small / 'runs'}"), want_error=True)
        case("tiny disk", "shard into a full tmpfs",
             [PY, "-m", "core.data.shard", str(tmp / "photos"), str(small / "shards")], want_error=True)
        case("read-only", "train into a read-only dir", train(f"storage_path={ro}"), want_error=True)
        case("read-only", "study into a read-only results dir",
             [PY, "studies/augmentation_robustness.py", *TINY_STUDY, "--results-dir", str(ro / "s")], want_error=True)
        case("read-only", "shard into a read-only dir", [PY, "-m", "core.data.shard", str(tmp / "photos"), str(ro / "x")],
             want_error=True)
        runs = next((tmp / "runs").iterdir(), None) if (tmp / "runs").exists() else None
        if runs is not None:
            subprocess.run(["mount", "-o", "remount,rw", str(ro)])
            shutil.copytree(runs, ro / "run", symlinks=True)
            subprocess.run(["mount", "-o", "remount,ro", str(ro)])
            case("read-only", "evaluate a run in a read-only dir", [PY, "-m", "core.eval", str(ro / "run")],
                 want_error=True)
    finally:
        for d in (small, ro):
            subprocess.run(["umount", str(d)], capture_output=True)


def yaml_family(tmp: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(8):
        lines.append(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]")
    files = {"alias bomb": "\n".join(lines) + "\n",
             "python tag": "optim: !!python/object/apply:os.system ['true']\n",
             "duplicate key": "optim: {lr: 0.1}\noptim: {lr: 0.2}\n",
             "not a mapping": "- 1\n- 2\n",
             "deep nesting": "x: " + "[" * 5000 + "]" * 5000 + "\n",
             "huge file": "x: '" + "a" * (3 << 20) + "'\n"}
    for name, text in files.items():
        path = tmp / f"{name.replace(' ', '_')}.yaml"
        path.write_text(text)
        case("yaml", f"--config with a {name}", [PY, "-m", "core.train", "--config", str(path), "--print-config"],
             want_error=True, timeout=60)
    (tmp / "latin1.yaml").write_bytes("optim: {lr: 0.1}  # caf\xe9\n".encode("latin-1"))
    case("yaml", "--config not UTF-8", [PY, "-m", "core.train", "--config", str(tmp / "latin1.yaml"), "--print-config"],
         want_error=True, timeout=60)
    case("yaml", "override with an alias bomb",
         [PY, "-m", "core.train", "--print-config", "eval.corruptions=[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,"
          "*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], "
          "[*e,*e,*e,*e,*e,*e,*e,*e,*e]]"], want_error=True, timeout=60)


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # one directory: later families reuse the runs and photos of earlier ones
        for family in (images_family, yaml_family, run_files_family, symlink_family, disk_family, overlap_family):
            family(Path(tmp))
    counts = Counter(r["verdict"] for r in RESULTS)
    print("\n" + ", ".join(f"{k}: {counts.get(k, 0)}" for k in ("OK", "clear error", "silent", "crash", "hang")))
    (out_dir / "break_it.json").write_text(json.dumps({"counts": counts, "cases": RESULTS}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/break_it"))
