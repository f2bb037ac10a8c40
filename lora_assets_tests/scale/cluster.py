"""A CPU host and a GPU host on one machine, for the multi-host tests and benchmark.

The servers (PostgreSQL, SeaweedFS, Redis) and the CPU-side processes (orchestrators, CPU Celery
workers) run here; the GPU Celery worker runs in its own network namespace, joined to this one
by a veth pair, and in a private mount namespace where this side's folders (the orchestrator's
DAGSTER_HOME, the CPU workers' scratch, the servers' data) are hidden by empty tmpfs mounts. It
shares nothing with the CPU side but the code, the models and the servers' addresses. Every
process gets its own scratch folder, as separate machines would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from lora_assets_tests.scale.servers import Stack

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def netns_available() -> bool:
    """Network namespaces need root and iproute2."""
    return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("unshare") is not None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class NamespaceHost:
    """Another machine: a network namespace `10.<n>.<m>.2` behind a veth pair whose host side is
    `.1` (its default route), in a private mount namespace for the processes it runs."""

    def __init__(self, role: str) -> None:
        tag = uuid.uuid4().hex[:6]
        octet = int(tag[:2], 16) % 200 + 20
        self.name, self.veth = f"lora-{role}-{tag}", f"l{role[:3]}{tag}"
        self.host_ip, self.ns_ip = f"10.{octet}.{int(tag[2:4], 16)}.1", f"10.{octet}.{int(tag[2:4], 16)}.2"

    def create(self) -> NamespaceHost:
        inside = f"{self.veth}n"
        _ip("netns", "add", self.name)
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.veth)
        _ip("link", "set", self.veth, "up")
        _ip("netns", "exec", self.name, "ip", "addr", "add", f"{self.ns_ip}/24", "dev", inside)
        _ip("netns", "exec", self.name, "ip", "link", "set", inside, "up")
        _ip("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        _ip("netns", "exec", self.name, "ip", "route", "add", "default", "via", self.host_ip)
        return self

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def shape(self, rate: str | None) -> None:
        """Limit what this machine sends (e.g. "2mbit": a slow uplink), or lift the limit."""
        device = f"{self.veth}n"
        subprocess.run(["ip", "netns", "exec", self.name, "tc", "qdisc", "del", "dev", device, "root"],
                       capture_output=True)  # fmt: skip
        if rate:
            add = ["tc", "qdisc", "add", "dev", device, "root", "tbf", "rate", rate, "burst", "32kbit"]
            subprocess.run(["ip", "netns", "exec", self.name, *add, "latency", "400ms"], check=True)

    def command(self, hidden: list[Path], command: list[str]) -> list[str]:
        """`command` run in the namespace, with `hidden` folders covered by empty tmpfs mounts."""
        mounts = " && ".join(f"mount -t tmpfs tmpfs {folder}" for folder in hidden)
        script = f'mount --make-rprivate / && {mounts} && exec "$@"'
        return ["ip", "netns", "exec", self.name, "unshare", "-m", "--", "sh", "-c", script, "sh", *command]


class Cluster:
    """The servers, a Postgres instance folder, CPU workers here and a GPU worker 'elsewhere'."""

    def __init__(self, base: Path, cpu_workers: int = 2, gpu_host: bool = True) -> None:
        self.base = base
        self.cpu_workers = cpu_workers
        self.gpu = NamespaceHost("gpu") if gpu_host else None
        self.hosts: dict[str, NamespaceHost] = {}
        self.stack: Stack | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.daemon: subprocess.Popen | None = None
        self.home = base / "cpu-host" / "dagster_home"
        self.data_root = ""

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> Cluster:
        host = "127.0.0.1"
        if self.gpu:
            host = self.gpu.create().host_ip
        self.stack = Stack(host=host).start()  # under /tmp: the postgres user must reach its folder
        self.home.mkdir(parents=True, exist_ok=True)
        instance = (REPO / "deploy" / "dagster.postgres.yaml").read_text()
        # The deployment's file, with monitoring intervals a test can wait for.
        instance = instance.replace("poll_interval_seconds: 30", "poll_interval_seconds: 5")
        instance = instance.replace(
            "free_slots_after_run_end_seconds: 30", "free_slots_after_run_end_seconds: 5"
        )
        (self.home / "dagster.yaml").write_text(instance)
        self.data_root = f"s3://{self.stack.s3.bucket}/root-{uuid.uuid4().hex[:8]}"
        for number in range(1, self.cpu_workers + 1):
            self.start_worker(f"cpu{number}", "dagster")
        self.start_worker("gpu1", "gpu")
        self.wait_for_workers()
        return self

    def stop(self) -> None:
        self.stop_daemon()
        for name in list(self.workers):
            self.stop_worker(name)
        if self.stack:
            self.stack.stop()
        for host in [self.gpu, *self.hosts.values()]:
            if host:
                host.destroy()

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- environment ---------------------------------------------------------------------------
    def env(self, scratch: Path, **extra: str) -> dict[str, str]:
        """What every process of the deployment has: the data root URL, the servers, the settings
        of `deploy/` (no shared folder)."""
        stack = self.stack
        env = {
            **os.environ,
            **stack.s3.env(),
            "LORA_ASSETS_DATA_ROOT": self.data_root,
            "LORA_ASSETS_SCRATCH": str(scratch),
            "LORA_ASSETS_CELERY_BROKER": stack.redis.url,
            "LORA_ASSETS_PIPES_BUCKET": stack.s3.bucket,
            "LORA_ASSETS_PG_USER": stack.pg.user,
            "LORA_ASSETS_PG_PASSWORD": "",
            "LORA_ASSETS_PG_HOST": stack.pg.host,
            "LORA_ASSETS_PG_PORT": str(stack.pg.port),
            "LORA_ASSETS_PG_DB": stack.pg.db,
            "LORA_ASSETS_LOGS_BUCKET": stack.s3.bucket,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        }
        env.pop("PYTEST_CURRENT_TEST", None)
        return {**env, **extra}

    def orchestrator_env(self, **extra: str) -> dict[str, str]:
        return self.env(self.base / "cpu-host" / "scratch-orchestrator", DAGSTER_HOME=str(self.home), **extra)

    # -- workers -------------------------------------------------------------------------------
    def start_worker(self, name: str, queue: str, host: NamespaceHost | None = None) -> None:
        """A Celery worker on `queue`: GPU workers on the GPU host, CPU workers here or on `host`."""
        host = self.gpu if queue == "gpu" else host
        machine = self.base / (f"{host.name}-host" if host else "cpu-host")
        home = machine / f"{name}-home"
        home.mkdir(parents=True, exist_ok=True)
        command = [
            str(VENV_BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
            "-y", str(REPO / "deploy" / "celery.yaml"), "-q", queue, "-n", f"{name}@%h",
            "--", f"--concurrency={2 if queue == 'gpu' else 1}", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        if host:
            command = host.command([self.base / "cpu-host", self.stack.base], command)
        env = self.env(machine / f"{name}-scratch", DAGSTER_HOME=str(home))
        log = open(machine / f"{name}.log", "ab")  # noqa: SIM115 - the worker's log while it runs
        self.workers[name] = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
        )

    def stop_worker(self, name: str, kill: bool = False) -> None:
        """Stop a worker and its pool (SIGKILL: as a machine that lost power)."""
        process = self.workers.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def celery_app(self):
        from celery import Celery

        return Celery("dagster", broker=self.stack.redis.url, backend=self.stack.redis.url)

    def wait_for_workers(self, timeout: float = 120.0) -> None:
        expected = set(self.workers)
        app = self.celery_app()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0)
            names = {name.split("@")[0] for reply in replies for name in reply}
            if expected <= names:
                return
            for name, process in self.workers.items():
                if process.poll() is not None:
                    raise RuntimeError(f"worker {name} exited: see {self.base}")
        raise TimeoutError(f"workers {expected} did not answer within {timeout:.0f} s")

    def start_daemon(self) -> None:
        """dagster-daemon on the CPU host: run monitoring, slot freeing, the lost-worker sensor
        (checking every 5 s). The automation sensors are stopped first: the tests launch runs. A
        daemon a failed test left running is stopped too: two would both launch queued runs."""
        self.stop_daemon()
        for sensor in ("subject_folders", "lora_automation"):
            stop = self.dagster("sensor", "stop", sensor, "-m", "lora_assets.definitions")
            stop.communicate()
        log = open(self.base / "cpu-host" / "daemon.log", "ab")  # noqa: SIM115 - open while it runs
        self.daemon = subprocess.Popen(
            [str(VENV_BIN / "dagster-daemon"), "run", "-m", "lora_assets.definitions"],
            env=self.orchestrator_env(LORA_ASSETS_WORKER_CHECK_SECONDS="5"),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop_daemon(self) -> None:
        if self.daemon and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
        self.daemon = None

    # -- runs ----------------------------------------------------------------------------------
    def dagster(self, *args: str, **popen: object) -> subprocess.Popen:
        """A `dagster` CLI process on the CPU host (orchestrator: the instance is Postgres)."""
        return subprocess.Popen(
            [str(VENV_BIN / "dagster"), *args],
            env=self.orchestrator_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **popen,
        )

    def backfill(self, job: str, subjects: list[str]) -> None:
        """A backfill of `job` over `subjects`: the daemon queues one run per subject and runs
        them `max_concurrent_runs` at a time (what "Materialize all" in the UI does)."""
        process = self.dagster(
            "job", "backfill", "-m", "lora_assets.definitions", "-j", job, "--partitions", ",".join(subjects),
            "--noprompt",
        )  # fmt: skip
        output = process.communicate(timeout=300)[0].decode(errors="replace")
        assert process.returncode == 0, output[-3000:]

    def materialize(self, subject: str, select: str = "*") -> subprocess.Popen:
        return self.dagster("asset", "materialize", "-m", "lora_assets.definitions", "--select", select,
                            "--partition", subject)  # fmt: skip

    def register(self) -> None:
        """Every subject folder of the data root registered, every source observed."""
        subprocess.run(
            [str(VENV_BIN / "lora-assets"), "subjects", "sync"], env=self.orchestrator_env(), check=True,
            capture_output=True, cwd=REPO,
        )  # fmt: skip
        observe = self.dagster(
            "job", "execute", "-m", "lora_assets.definitions", "-j", "observe_subject_inputs"
        )
        output = observe.communicate()[0].decode()
        assert observe.returncode == 0, output[-3000:]
