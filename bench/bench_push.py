"""Push throughput: `tfrollout push` vs `aws s3 cp --recursive`, same moto endpoint, same run.

    python bench/bench_push.py --out bench/results/push.json [--size-mb 105] [--repeats 9]

Both sides run as CLI subprocesses (interpreter start-up included on both), alternating,
against one moto_server process on 127.0.0.1; each repeat writes to a fresh key prefix so
neither side can skip anything. Also reports an in-process `push_version` timing and the
cost of re-pushing an unchanged version (must send 0 bytes), and the download direction:
`tfrollout storage pull` (every sha256 verified) vs `aws s3 cp --recursive` from S3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"moto_server did not start on port {port}")


def make_model(root: Path, size_mb: int) -> Path:
    """A SavedModel-shaped directory: one big variables shard, a second one, small files."""
    vdir = root / "bench" / "1"
    (vdir / "variables").mkdir(parents=True)
    (vdir / "assets.extra").mkdir()
    second = 8 * MiB
    big = size_mb * 1_000_000 - second - 64 * 1024
    with (vdir / "variables" / "variables.data-00000-of-00002").open("wb") as fh:
        for _ in range(big // MiB):
            fh.write(os.urandom(MiB))
        fh.write(os.urandom(big % MiB))
    (vdir / "variables" / "variables.data-00001-of-00002").write_bytes(os.urandom(second))
    (vdir / "variables" / "variables.index").write_bytes(os.urandom(4 * 1024))
    (vdir / "saved_model.pb").write_bytes(os.urandom(50 * 1024))
    (vdir / "assets.extra" / "tf_serving_warmup_requests").write_bytes(os.urandom(10 * 1024))
    (vdir / "tfrollout.json").write_text(json.dumps({"model_name": "bench", "version": 1}))
    return vdir


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return elapsed, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/push.json"))
    parser.add_argument("--size-mb", type=int, default=105)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--pull-repeats", type=int, default=5)
    args = parser.parse_args()
    if args.size_mb < 100:
        print("note: the acceptance target is a >= 100 MB model directory", file=sys.stderr)

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="bench-push-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TFROLLOUT_"))}
    env.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(work / "none"),
                "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"), "AWS_EC2_METADATA_DISABLED": "true"})
    moto = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        os.environ.update({k: env[k] for k in env if k.startswith("AWS_")})
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        vdir = make_model(work / "exports", args.size_mb)
        total = sum(p.stat().st_size for p in vdir.rglob("*") if p.is_file())
        tfr_common = ["--set", f"storage.endpoint_url={endpoint}", "--set", "storage.addressing_style=path"]
        aws_times, tfr_times, tfr_bytes = [], [], []

        def run_aws(dest: str) -> float:
            return timed([str(BIN / "aws"), "s3", "cp", "--recursive", "--only-show-errors", str(vdir),
                          f"s3://bench/{dest}/bench/1/", "--endpoint-url", endpoint], env, work)[0]

        def run_tfr(dest: str) -> tuple[float, int]:
            t, out = timed([str(BIN / "tfrollout"), "push", "--dir", str(vdir), "--model-name", "bench",
                            "--version", "1", "--uri", f"s3://bench/{dest}", "--json", *tfr_common], env, work)
            return t, json.loads(out)["bytes_uploaded"]

        run_aws("warmup-aws")  # first requests against a fresh moto are slow: warm both sides up
        run_tfr("warmup-tfr")
        for rep in range(1, args.repeats + 1):
            order = ("aws", "tfr") if rep % 2 else ("tfr", "aws")  # alternate who goes first
            for side in order:
                if side == "aws":
                    aws_times.append(run_aws(f"aws{rep}"))
                else:
                    t, sent = run_tfr(f"tfr{rep}")
                    tfr_times.append(t)
                    tfr_bytes.append(sent)
            print(f"repeat {rep}: aws s3 cp {aws_times[-1]:.2f} s, tfrollout push {tfr_times[-1]:.2f} s")
        assert all(b == total for b in tfr_bytes), "tfrollout push must send every byte of a new version"

        t_repush, out = timed([str(BIN / "tfrollout"), "push", "--dir", str(vdir), "--model-name", "bench",
                               "--version", "1", "--uri", "s3://bench/tfr1", "--json", *tfr_common], env, work)
        repush_bytes = json.loads(out)["bytes_uploaded"]

        pull_aws, pull_tfr = [], []
        pulls = work / "pulls"
        for rep in range(1, args.pull_repeats + 1):  # download the same committed version both ways
            order = ("aws", "tfr") if rep % 2 else ("tfr", "aws")
            for side in order:
                if side == "aws":
                    pull_aws.append(timed([str(BIN / "aws"), "s3", "cp", "--recursive", "--only-show-errors",
                                           "s3://bench/tfr1/bench/1/", str(pulls / f"aws{rep}"),
                                           "--endpoint-url", endpoint], env, work)[0])
                else:
                    pull_tfr.append(timed([str(BIN / "tfrollout"), "storage", "pull", "bench", "1", "--dest",
                                           str(pulls / f"tfr{rep}"), "--uri", "s3://bench/tfr1", "--json",
                                           *tfr_common], env, work)[0])
            print(f"pull {rep}: aws s3 cp {pull_aws[-1]:.2f} s, tfrollout storage pull {pull_tfr[-1]:.2f} s "
                  f"(sha256-verified)")
        pulled_total = sum(p.stat().st_size for p in (pulls / "tfr1").rglob("*") if p.is_file())
        assert pulled_total >= total, "tfrollout pull must bring back every file"

        from pipeline.config import StorageConfig
        from pipeline.storage import open_store
        from pipeline.storage.publish import push_version

        store = open_store(StorageConfig(uri="s3://bench/inproc", endpoint_url=endpoint,
                                         addressing_style="path"))
        t0 = time.perf_counter()
        push_version(store, vdir, "bench", 1)
        t_inproc = time.perf_counter() - t0

        aws_med, tfr_med = statistics.median(aws_times), statistics.median(tfr_times)
        pair_ratios = [round(a / t, 3) for a, t in zip(aws_times, tfr_times, strict=True)]  # same repeat
        ratio = aws_med / tfr_med
        report = {
            "model_bytes": total, "files": sum(1 for p in vdir.rglob("*") if p.is_file()),
            "repeats": args.repeats, "endpoint": "moto_server on 127.0.0.1",
            "aws_cli_s": [round(t, 3) for t in aws_times], "tfrollout_push_s": [round(t, 3) for t in tfr_times],
            "aws_cli_median_s": round(aws_med, 3), "tfrollout_median_s": round(tfr_med, 3),
            "aws_cli_mb_s": round(total / aws_med / 1e6, 1), "tfrollout_mb_s": round(total / tfr_med / 1e6, 1),
            "ratio_tfrollout_over_aws": round(ratio, 3), "goal": ">= 1.0",
            "ratio_of_best_runs": round(min(aws_times) / min(tfr_times), 3),
            "pair_ratios": pair_ratios, "pairs_tfrollout_faster": sum(r > 1.0 for r in pair_ratios),
            "pull_aws_cli_s": [round(t, 3) for t in pull_aws], "pull_tfrollout_s": [round(t, 3) for t in pull_tfr],
            "pull_ratio_tfrollout_over_aws": round(statistics.median(pull_aws) / statistics.median(pull_tfr), 3),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "tfrollout_inprocess_s": round(t_inproc, 3),
            "tfrollout_inprocess_mb_s": round(total / t_inproc / 1e6, 1),
            "repush_unchanged_s": round(t_repush, 3), "repush_unchanged_bytes": repush_bytes,
            "storage_defaults": {"multipart_threshold": StorageConfig().multipart_threshold,
                                 "multipart_chunksize": StorageConfig().multipart_chunksize,
                                 "max_concurrency": StorageConfig().max_concurrency,
                                 "checksum_algorithm": StorageConfig().checksum_algorithm,
                                 "sign_payload": StorageConfig().sign_payload},
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{total / 1e6:.0f} MB: aws s3 cp {aws_med:.2f} s ({report['aws_cli_mb_s']} MB/s), "
              f"tfrollout push {tfr_med:.2f} s ({report['tfrollout_mb_s']} MB/s) -> ratio {ratio:.2f}x "
              f"(goal >= 1.0x; faster in {report['pairs_tfrollout_faster']}/{args.repeats} pairs); "
              f"in-process {t_inproc:.2f} s; unchanged re-push sent {repush_bytes} bytes in {t_repush:.2f} s")
        print(f"pull: aws s3 cp {statistics.median(pull_aws):.2f} s, tfrollout storage pull "
              f"{statistics.median(pull_tfr):.2f} s -> ratio {report['pull_ratio_tfrollout_over_aws']:.2f}x")
        print(f"wrote {args.out}")
    finally:
        moto.terminate()
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            moto.kill()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
