"""Object storage through a real S3 API: moto's server on 127.0.0.1, started here. The endpoint and the
credentials reach the platform only through the standard AWS environment variables, in fresh processes
(each starts its own Ray, whose workers inherit them), as on a cluster."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from core.tools.cluster import free_port

REPO = Path(__file__).resolve().parents[1]
BUCKET = "platform-test"
SMALL = ["optim.epochs=1", "optim.batch_size=64", "model.width=8", "data.image_size=32", "eval.probe_epochs=5",
         "eval.online_knn=false", "eval.few_shot_episodes=10"]

pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """An S3 API on loopback with one bucket; the environment that points the AWS SDKs at it."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        for _ in range(100):
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.1)
        env["_client"] = client
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _run(env: dict, *argv: str, timeout: int = 400) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in env.items() if not k.startswith("_")}
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=clean, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _objects(env: dict, prefix: str) -> dict[str, tuple]:
    """key -> (ETag, LastModified) of every object under ``prefix``."""
    pages = env["_client"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: (o["ETag"], o["LastModified"]) for page in pages for o in page.get("Contents", [])}


def _keys(env: dict, prefix: str) -> list[str]:
    return sorted(_objects(env, prefix))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from core.tools.photos import make_photo_folder

    return Path(make_photo_folder(str(tmp_path_factory.mktemp("photos")), 4, {"train": 40, "val": 10},
                                  size=(48, 40)))


@pytest.mark.slow
def test_shards_written_to_s3_train_a_run_stored_in_s3(s3_env, photos, tmp_path):
    dest = f"s3://{BUCKET}/shards"
    _run(s3_env, "-m", "core.data.shard", str(photos), dest, "--shard-size", "50")
    written = _objects(s3_env, "shards/")
    written_manifest = env_get(s3_env, "shards/train/manifest.json")
    assert "shards/train/manifest.json" in written and sum(k.startswith("shards/train/") and k.endswith(".parquet")
                                                           for k in written) == 4, sorted(written)  # 160 in 50s
    _run(s3_env, "-m", "core.data.shard", str(photos), dest, "--shard-size", "50")
    again = _objects(s3_env, "shards/")
    assert {k: v[0] for k, v in again.items()} == {k: v[0] for k, v in written.items()}  # the same contents
    shards = [k for k in written if k.endswith(".parquet")]
    assert [again[k] for k in shards] == [written[k] for k in shards]  # a rerun of the build rewrites no shard
    # killed mid-build: the progress manifest lists the shards done so far, the next one is not in the store
    client, key = s3_env["_client"], "shards/train/manifest.json"
    progress = json.loads(env_get(s3_env, key))
    lost = sorted(progress["shards"])[-1]
    del progress["shards"][lost]
    progress["class_counts"] = None
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(progress).encode())
    client.delete_object(Bucket=BUCKET, Key=f"shards/train/{lost}")
    _run(s3_env, "-m", "core.data.shard", str(photos), dest, "--shard-size", "50")
    resumed = _objects(s3_env, "shards/")
    assert all(resumed[k] == written[k] for k in shards if not k.endswith(lost))  # done shards not rewritten
    assert resumed[f"shards/train/{lost}"][0] == written[f"shards/train/{lost}"][0]  # the lost one, same bytes
    assert json.loads(env_get(s3_env, key))["class_counts"] == json.loads(written_manifest)["class_counts"]

    home = {"HOME": str(tmp_path / "machine-a")}  # the working copies of runs stored in S3 go under ~/.cache
    _run({**s3_env, **home}, "-m", "core.train", "data.source=parquet", f"data.root={dest}", *SMALL,
         f"storage_path=s3://{BUCKET}/runs")
    stored = _objects(s3_env, "runs/")
    run = next(k.split("/")[1] for k in stored if k.endswith("/summary.json"))
    assert {f"runs/{run}/{n}" for n in ("config.json", "metrics.jsonl", "summary.json", "latest_state.pt")} <= set(stored)
    summary = json.loads(env_get(s3_env, f"runs/{run}/summary.json"))
    assert summary["status"] == "finished" and summary["probe_top1"] > 30

    # another machine (an empty ~/.cache) finds the run finished in the store: nothing is trained again
    other = {**s3_env, "HOME": str(tmp_path / "machine-b")}
    again = _run(other, "-m", "core.train", "data.source=parquet", f"data.root={dest}", *SMALL,
                 f"storage_path=s3://{BUCKET}/runs")
    assert "finished earlier" in again.stdout and _objects(s3_env, "runs/") == stored
    # and re-scores it with another evaluation protocol, written back to the store
    _run(other, "-m", "core.eval", f"s3://{BUCKET}/runs/{run}", "eval.knn_k=5")
    evaluation = json.loads(env_get(s3_env, f"runs/{run}/evaluation.json"))
    assert evaluation["eval_overrides"] == "eval.knn_k=5" and evaluation["run_status"] == "finished"
    config = json.loads(env_get(s3_env, f"runs/{run}/config.json"))
    assert config["config"]["eval"]["knn_k"] == 5  # the protocol it was last scored with


def test_the_store_is_the_truth_for_every_machines_working_copy(s3_env, tmp_path):
    """A run finished on machine B after machine A's copy went stale: A reported its own stale metrics as the
    run's; and B's copy of the same config in another store's prefix passed for a finished run there."""
    store = f"s3://{BUCKET}/truth"
    a = {**s3_env, "HOME": str(tmp_path / "machine-a")}
    _run(a, "-m", "core.train", *SMALL, f"storage_path={store}")
    run = next(k.split("/")[1] for k in _objects(s3_env, "truth/") if k.endswith("/summary.json"))
    # machine B resumed and finished it later: the store's record is now another than A's working copy
    summary = json.loads(env_get(s3_env, f"truth/{run}/summary.json")) | {"knn_top1": 12.5}
    s3_env["_client"].put_object(Bucket=BUCKET, Key=f"truth/{run}/summary.json", Body=json.dumps(summary).encode())
    again = _run(a, "-m", "core.train", *SMALL, f"storage_path={store}")
    assert "finished earlier" in again.stdout and "knn_top1           12.5" in again.stdout, again.stdout
    # another store holds no run of this config: it trains there, it does not take the first store's copy
    other = _run({**s3_env, "HOME": str(tmp_path / "machine-b")}, "-m", "core.train", *SMALL,
                 f"storage_path=s3://{BUCKET}/empty")
    assert "finished earlier" not in other.stdout and f"empty/{run}/summary.json" in _keys(s3_env, "empty/")
    _run(a, "-m", "core.train", *SMALL, f"storage_path=s3://{BUCKET}/empty2")  # A too, with its copy of the first
    assert f"empty2/{run}/summary.json" in _keys(s3_env, "empty2/")


def test_export_writes_to_object_storage_or_says_why_not(s3_env, tmp_path):
    home = {**s3_env, "HOME": str(tmp_path / "home")}
    _run(home, "-m", "core.train", *SMALL, f"storage_path={tmp_path / 'runs'}")
    (run,) = os.listdir(tmp_path / "runs")
    _run(home, "-m", "core.export", str(tmp_path / "runs" / run), f"s3://{BUCKET}/exported/{run}")
    assert {f"exported/{run}/{n}" for n in ("encoder.pt2", "backbone.pt", "head.pt", "model.json")} <= \
        set(_keys(s3_env, "exported/"))
    assert not (REPO / "s3:").exists()  # not a local folder named after the URI
    proc = subprocess.run([sys.executable, "-m", "core.export", str(tmp_path / "runs" / run), "/dev/null"], cwd=REPO,
                          env={k: v for k, v in home.items() if not k.startswith("_")}, capture_output=True, text=True)
    assert proc.returncode == 2 and "/dev/null: exists and is not a directory" in proc.stderr, proc.stderr[-500:]


def env_get(env: dict, key: str) -> bytes:
    return env["_client"].get_object(Bucket=BUCKET, Key=key)["Body"].read()


LISTING_PROBE = """
import json, sys
from core.data.folders import list_image_folder
out = {}
for root in sys.argv[1:]:
    listing = list_image_folder(root)
    out[root] = [[p[len(root.rstrip('/')) + 1:] for p in listing.paths], listing.labels.tolist(), listing.index.tolist(),
                 listing.classes]
print(json.dumps(out))
"""


def test_an_s3_image_folder_lists_as_the_same_folder_on_disk(s3_env, tmp_path):
    """One recursive listing of the split, grouped by class folder (not a listing per class folder):
    the same paths, labels, ids and classes as the tree on disk, nested, hidden and stray entries included."""
    client = s3_env["_client"]
    files = ["a/1.jpg", "a/deep/2.JPEG", "b/3.png", "b/.hidden/4.jpg", "b/_tmp.jpg", "c/5.jpg", "c/notes.txt",
             "stray.jpg", ".ipynb_checkpoints/6.jpg"]
    for rel in files:
        (tmp_path / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / rel).write_bytes(b"x")
        client.put_object(Bucket=BUCKET, Key=f"listing/{rel}", Body=b"x")
    proc = _run(s3_env, "-c", LISTING_PROBE, str(tmp_path / "tree"), f"s3://{BUCKET}/listing")
    local, remote = json.loads(proc.stdout.splitlines()[-1]).values()
    assert remote == local and local[0] == ["a/1.jpg", "a/deep/2.JPEG", "b/3.png", "c/5.jpg"]
    assert local[1] == [0, 0, 1, 2] and local[3] == ["a", "b", "c"]


@pytest.mark.slow
def test_an_image_folder_in_s3_is_listed_and_read_through_pyarrow(s3_env, photos, tmp_path):
    client = s3_env["_client"]
    for path in sorted(photos.rglob("*.jpg")):
        client.upload_file(str(path), BUCKET, f"photos/{path.relative_to(photos)}")
    client.put_object(Bucket=BUCKET, Key="photos/train/.ipynb_checkpoints/x.jpg", Body=b"not an image")  # hidden
    s3_env = {**s3_env, "HOME": str(tmp_path / "home")}
    local = _run(s3_env, "-m", "core.train", "data.source=imagefolder", f"data.root={photos}", *SMALL,
                 f"storage_path={tmp_path / 'local'}")
    remote = _run(s3_env, "-m", "core.train", "data.source=imagefolder", f"data.root=s3://{BUCKET}/photos", *SMALL,
                  f"storage_path={tmp_path / 'remote'}")
    summaries = [json.loads(next((tmp_path / d).glob("*/summary.json")).read_text()) for d in ("local", "remote")]
    assert summaries[0]["status"] == summaries[1]["status"] == "finished", (local.stdout[-2000:], remote.stdout[-2000:])
    # the same images, labels and ids, read from the store: the same run, to the last digit
    for key in ("loss", "knn_top1", "probe_top1"):
        assert summaries[0][key] == summaries[1][key], key


TINY_STUDY = ["studies/augmentation_robustness.py", "--losses", "supcon", "cross_entropy", "--policies", "simaugment",
              "--strengths", "1.0", "--seeds", "0", "--epochs", "1", "eval.probe_epochs=5",
              "data.train_limit=512", "optim.batch_size=128", "--max-concurrent", "1"]


@pytest.mark.slow
def test_a_study_stored_in_s3_killed_resumes_without_rerunning(s3_env, tmp_path):
    """The driver (and its Ray) SIGKILLed once a trial has finished; ``--resume`` finds Tune's state and the
    finished runs in the store and trains only what was left."""
    clean = {k: v for k, v in s3_env.items() if not k.startswith("_")} | {"HOME": str(tmp_path / "home")}
    cmd = [sys.executable, *TINY_STUDY, "--results-dir", str(tmp_path / "results"),
           "--storage", f"s3://{BUCKET}/study"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=clean, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any(k.endswith("/summary.json") for k in _keys(s3_env, "study/runs/")):
        assert proc.poll() is None
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {k: v for k, v in _objects(s3_env, "study/runs/").items() if k.endswith(("/summary.json", "/metrics.jsonl"))}
    assert sum(k.endswith("/summary.json") for k in done) == 1  # of 2
    assert any(k.startswith("study/tune/") for k in _keys(s3_env, "study/tune/"))  # Tune's state is in the store
    out = subprocess.run([*cmd, "--resume"], cwd=REPO, env=clean, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "results" / "trials.parquet")
    assert len(df) == 2 and (df["status"] == "finished").all()
    after = _objects(s3_env, "study/runs/")
    assert sum(k.endswith("/summary.json") for k in after) == 2
    for key, stamp in done.items():  # what had finished was not trained or written again
        assert after[key] == stamp, key
