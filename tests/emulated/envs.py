"""Raspberry Pi userlands under qemu user-mode emulation: Debian bookworm's own python3.11 for arm64 and armhf.

No chroot, binfmt or system install: Debian packages are fetched with ``apt-get download`` (its own sources, lists
and architecture, so the machine's apt state is untouched) and unpacked with ``dpkg -x``; wheels with
``pip download --platform``. A static ``qemu-user`` from Debian trixie runs the result: bookworm's qemu 7.2 crashes
creating an ai-edge-litert 2.3 interpreter.

Every pinned package is in ``ENVS`` and ``QEMU`` below, and nowhere else.

    python -m tests.emulated.envs build {arm64,armhf}
    python -m tests.emulated.envs run {arm64,armhf} -- python3.11 -m statelite.cli verify models/x.tflite

The cache is ``$STATELITE_EMU_CACHE``, else ``<repo>/.cache/emulated``. A build is reused while its stamp matches the
pinned lists. Each run copies the checkout's ``runtime/`` in as ``statelite``, so the current code is what runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYOUT_VERSION = 2  # bump when the tree layout changes, so old caches rebuild
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"

# Debian versions are not pinned: deb.debian.org serves only the current point release and security update, so a
# pinned version would stop downloading. The versions a build got are recorded in its stamp.
_PYTHON_DEBS = (
    # python3.11 and every library its Depends name; perl, dpkg, tar and install-info only serve maintainer scripts.
    "python3.11", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    "python3", "python3-minimal", "libpython3-stdlib", "media-types",
    "libc6", "libgcc-s1", "libstdc++6", "gcc-12-base",
    "zlib1g", "libbz2-1.0", "liblzma5", "libexpat1", "libffi8", "libssl3", "libsqlite3-0",
    "libncursesw6", "libtinfo6", "libreadline8", "readline-common", "libuuid1", "libcrypt1",
    "libdb5.3", "libgdbm6", "libgdbm-compat4", "libnsl2", "libtirpc3", "libtirpc-common",
    "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0", "libkeyutils1", "libcom-err2",
)
# hypothesis: the runner's property tests; 6.155.7 is the newest the registry serves for the pinned cp311 target
# platforms (newer ones only show up for the host's own install).
_PYTEST_WHEELS = ("pytest==9.2.0", "pluggy==1.7.0", "iniconfig==2.3.1", "packaging==26.4", "pygments==2.21.0",
                  "hypothesis==6.155.7", "sortedcontainers==2.4.0")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """One emulated device userland.

    Attributes:
        name: ``arm64`` or ``armhf`` (Debian's architecture name).
        device: the Raspberry Pi models and OS this stands for.
        qemu: the qemu-user binary, and ``cpu`` the CPU model it emulates.
        machine: what ``platform.machine()`` reports inside.
        triplet: the multiarch library folder.
        debs: Debian bookworm packages, unpacked into ``root/``.
        wheels: exact PyPI pins, installed without dependency resolution (the list is the whole closure).
        wheel_platforms: ``pip download --platform`` tags for the binary wheels.
        interpreter: the module the smoke test imports: the TFLite interpreter this device uses.
        links: symlinks that maintainer scripts would have made (``update-alternatives``), relative to ``root/``.
    """

    name: str
    device: str
    qemu: str
    cpu: str
    machine: str
    triplet: str
    debs: tuple[str, ...]
    wheels: tuple[str, ...]
    wheel_platforms: tuple[str, ...]
    interpreter: str
    links: tuple[tuple[str, str], ...] = ()

    def pins(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(layout=LAYOUT_VERSION, qemu_package=QEMU.package, qemu_suite=QEMU.suite)
        return d

    def pins_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.pins(), sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class QemuSpec:
    package: str = "qemu-user"  # static binaries since trixie (10.0); bookworm's 7.2 crashes ai-edge-litert 2.3
    suite: str = "trixie"
    arch: str = "amd64"  # the host: the only one this cache knows how to fill


QEMU = QemuSpec()

_BLAS = "usr/lib/arm-linux-gnueabihf"
ENVS: dict[str, EnvSpec] = {
    "arm64": EnvSpec(
        name="arm64",
        device="Raspberry Pi 4/5, 64-bit Raspberry Pi OS (Debian bookworm arm64)",
        qemu="qemu-aarch64",
        cpu="cortex-a72",
        machine="aarch64",
        triplet="aarch64-linux-gnu",
        debs=_PYTHON_DEBS,
        wheels=(
            "ai-edge-litert==2.3.0", "numpy==2.4.6", "flatbuffers==25.12.19", "click==8.5.1",
            "ml-dtypes==0.6.0", "protobuf==7.36.2", "tqdm==4.70.1", "typing-extensions==4.16.0",
            "backports.strenum==1.2.8",
        ) + _PYTEST_WHEELS,
        wheel_platforms=("manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
        interpreter="ai_edge_litert.interpreter",
    ),
    "armhf": EnvSpec(
        name="armhf",
        device="Raspberry Pi 2/3/Zero 2, 32-bit Raspberry Pi OS (Debian bookworm armhf)",
        qemu="qemu-arm",
        cpu="cortex-a7",
        machine="armv7l",
        triplet="arm-linux-gnueabihf",
        # PyPI has no armv7l numpy<2 wheels: the device takes Debian's numpy 1.24 and its BLAS.
        debs=_PYTHON_DEBS + ("python3-numpy", "python3-pkg-resources", "libopenblas0-pthread", "libgfortran5"),
        # tflite-runtime 2.14's armv7l wheel is tagged manylinux_2_34_armv7l (bookworm has glibc 2.36).
        wheels=("tflite-runtime==2.14.0", "flatbuffers==25.12.19", "click==8.5.1") + _PYTEST_WHEELS,
        wheel_platforms=("manylinux_2_34_armv7l", "linux_armv7l"),
        interpreter="tflite_runtime.interpreter",
        links=(
            (f"{_BLAS}/libblas.so.3", "openblas-pthread/libblas.so.3"),
            (f"{_BLAS}/liblapack.so.3", "openblas-pthread/liblapack.so.3"),
            (f"{_BLAS}/libopenblas.so.0", "openblas-pthread/libopenblas.so.0"),
        ),
    ),
}


class EmulationUnavailable(Exception):
    """The environment cannot be built here: no qemu host support, no apt/dpkg, or a registry is unreachable."""


class BuildError(Exception):
    """The environment was fetched but is broken (a package is gone, the smoke test failed): a real failure."""


_NETWORK = re.compile(
    r"(Could not resolve|Temporary failure|Failed to fetch|Connection (refused|reset|timed out)|Network is unreachable"
    r"|Could not connect|timed out|NewConnectionError|Max retries exceeded|ProxyError|SSLError|Name or service not known"
    r"|Could not fetch URL|No route to host)",
    re.IGNORECASE,
)


def cache_root() -> Path:
    return Path(os.environ.get("STATELITE_EMU_CACHE") or REPO / ".cache" / "emulated")


def _log(msg: str) -> None:
    print(f"[emulated] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], what: str, cwd=None, retries: int = 1) -> str:
    """Run a host command; a failure that looks like the network raises ``EmulationUnavailable``."""
    for attempt in range(retries + 1):
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        out = proc.stdout + proc.stderr
        if proc.returncode == 0:
            return out
        if attempt < retries and _NETWORK.search(out):
            time.sleep(3)
            continue
        tail = "\n".join(out.strip().splitlines()[-15:])
        if _NETWORK.search(out):
            raise EmulationUnavailable(f"{what}: registry unreachable:\n{tail}")
        raise BuildError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd[:6])} ...\n{tail}")
    raise AssertionError("unreachable")


def _check_host() -> None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise EmulationUnavailable(
            f"the emulated environments need an x86_64 Linux host (static qemu-user from Debian {QEMU.arch}); "
            f"this is {platform.system()} {platform.machine()}."
        )
    for tool in ("apt-get", "dpkg", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise EmulationUnavailable(f"the emulated environments need Debian's {tool}; it is not on PATH.")
    if not Path(KEYRING).exists():
        raise EmulationUnavailable(f"the emulated environments need Debian's archive keyring {KEYRING}.")


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Apt:
    """apt-get with its own sources, lists, cache and architecture: the machine's apt state is never read or written."""

    def __init__(self, folder: Path, suites: list[tuple[str, str]], arch: str):
        self.folder, self.arch, self.suites = folder, arch, [suite for _, suite in suites]
        for sub in ("lists/partial", "cache/archives/partial", "empty.d"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for empty in ("status", "preferences"):
            (folder / empty).touch()
        (folder / "sources.list").write_text(
            "".join(f"deb [signed-by={KEYRING}] {uri} {suite} main\n" for uri, suite in suites)
        )
        self.options = [
            f"-oDir::Etc::SourceList={folder / 'sources.list'}",
            f"-oDir::Etc::SourceParts={folder / 'empty.d'}",
            f"-oDir::Etc::Preferences={folder / 'preferences'}",
            f"-oDir::Etc::PreferencesParts={folder / 'empty.d'}",
            f"-oDir::State::Lists={folder / 'lists'}",
            f"-oDir::State::status={folder / 'status'}",
            f"-oDir::Cache={folder / 'cache'}",
            f"-oAPT::Architecture={arch}",
            f"-oAPT::Architectures={arch}",
            "-oAcquire::Retries=3",
            "-oAPT::Get::Download-Only=true",
        ]
        if os.geteuid() == 0:
            self.options.append("-oAPT::Sandbox::User=root")  # else apt warns it cannot drop to _apt in our folders
        else:
            self.options.append("-oDebug::NoLocking=1")

    def update(self) -> None:
        """Fetch the indexes. The first suite's is required; a later one (updates, security) may fail: a mirror
        caught mid-sync serves an index that does not match its Release file, and the point release still installs.
        """
        main_lists = f"lists/*_dists_{self.suites[0]}_main_binary-{self.arch}_Packages*"
        for attempt in range(3):
            proc = subprocess.run(["apt-get", *self.options, "-q", "update"], capture_output=True, text=True)
            out = proc.stdout + proc.stderr
            failed = re.findall(r"^[WE]: Failed to fetch (\S+)", out, re.MULTILINE)
            if proc.returncode == 0 and not failed and any(self.folder.glob(main_lists)):
                return
            time.sleep(2 * attempt)
        if any(f"/dists/{self.suites[0]}/" in url for url in failed) or not any(self.folder.glob(main_lists)):
            tail = "\n".join(out.strip().splitlines()[-15:])
            if _NETWORK.search(out):
                raise EmulationUnavailable(f"apt-get update ({self.arch}): registry unreachable:\n{tail}")
            raise BuildError(f"apt-get update ({self.arch}) failed (exit {proc.returncode}):\n{tail}")
        for url in failed:
            _log(f"warning: {self.arch}: skipped an index the mirror served inconsistently: {url}")

    def download(self, packages: tuple[str, ...], dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        for old in dest.glob("*.deb"):
            old.unlink()
        _run(["apt-get", *self.options, "-q", "download", *packages], f"apt-get download ({self.arch})", cwd=dest, retries=2)
        debs = sorted(dest.glob("*.deb"))
        got = {deb_field(d, "Package") for d in debs}
        missing = set(packages) - got
        if missing:
            raise BuildError(f"apt-get download ({self.arch}) did not fetch {sorted(missing)}.")
        return debs


def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True, check=True).stdout.strip()


def _unmet_depends(debs: list[Path]) -> list[str]:
    """Depends of the fetched packages that nothing fetched satisfies: the pinned list may be short (a warning)."""
    have: set[str] = set()
    for d in debs:
        have.add(deb_field(d, "Package"))
        have.update(p.split()[0] for p in deb_field(d, "Provides").split(",") if p.strip())
    unmet = []
    for d in debs:
        depends = ",".join(filter(None, (deb_field(d, "Pre-Depends"), deb_field(d, "Depends"))))
        for clause in filter(None, (c.strip() for c in depends.split(","))):
            names = [alt.split()[0].split(":")[0] for alt in clause.split("|")]
            if not have.intersection(names) and not any(n in _NOT_NEEDED for n in names):
                unmet.append(f"{deb_field(d, 'Package')} -> {clause}")
    return unmet


_NOT_NEEDED = {"perl", "dpkg", "tar", "install-info", "debconf", "mime-support", "ca-certificates", "tzdata"}


# -- qemu ---------------------------------------------------------------------------------------------------------


def qemu_dir(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "qemu"


def ensure_qemu(cache: Path | None = None) -> Path:
    """Fetch and unpack the static qemu-user binaries once; returns their ``usr/bin`` folder."""
    _check_host()
    folder = qemu_dir(cache)
    stamp = folder / "stamp.json"
    key = dataclasses.asdict(QEMU) | {"layout": LAYOUT_VERSION}
    with _locked(folder.parent / "qemu.lock"):
        if stamp.exists() and json.loads(stamp.read_text()).get("pins") == key:
            return folder / "root" / "usr" / "bin"
        shutil.rmtree(folder, ignore_errors=True)
        apt = _Apt(folder / "apt", [(_mirror(), QEMU.suite)], QEMU.arch)
        _log(f"fetching {QEMU.package} from Debian {QEMU.suite}")
        apt.update()
        (deb,) = apt.download((QEMU.package,), folder / "debs")
        _run(["dpkg", "-x", str(deb), str(folder / "root")], "dpkg -x qemu")
        keep = {spec.qemu for spec in ENVS.values()}
        for other in (folder / "root").rglob("*"):  # the package has every target (450 MB); keep the two we run
            if other.name not in keep and (other.is_file() or other.is_symlink()):
                other.unlink()
        version = _run([str(folder / "root/usr/bin/qemu-aarch64"), "--version"], "qemu --version").splitlines()[0]
        stamp.write_text(json.dumps({"pins": key, "kept": sorted(keep), "version": version}, indent=1))
        shutil.rmtree(folder / "debs")
        shutil.rmtree(folder / "apt")
        return folder / "root" / "usr" / "bin"


def _mirror() -> str:
    return os.environ.get("STATELITE_EMU_DEBIAN_MIRROR", DEFAULT_MIRROR)


# -- environments -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Env:
    """A built environment: ``root`` is the Debian tree (``QEMU_LD_PREFIX``), ``site`` the unpacked wheels."""

    spec: EnvSpec
    folder: Path
    qemu: Path

    @property
    def root(self) -> Path:
        return self.folder / "root"

    @property
    def site(self) -> Path:
        return self.folder / "site"

    @property
    def python(self) -> Path:
        """The launcher: a host script that runs the tree's ``python3.11`` under qemu (see ``_write_launcher``)."""
        return self.root / LAUNCHER

    @property
    def stamp(self) -> dict:
        return json.loads((self.folder / "stamp.json").read_text())

    def describe(self) -> str:
        s = self.stamp
        debs = s["debs"]
        return (
            f"{self.spec.name}: {self.spec.device}; python3.11 {debs['python3.11']}, "
            f"{', '.join(self.spec.wheels[:1])}"
            + (f", python3-numpy {debs['python3-numpy']}" if "python3-numpy" in debs else "")
            + f"; {self.spec.qemu} {s['qemu'].split('version ')[-1].split()[0]} -cpu {self.spec.cpu}"
        )


LAUNCHER = "usr/local/bin/python3.11"
_LAUNCHER_TEXT = """#!/bin/sh
# Runs this tree's python3.11 under qemu user-mode emulation. A host script: without binfmt the host kernel cannot
# exec an ARM binary, so this is what python inside sees as sys.executable (qemu -0), and subprocesses work.
here=$(cd "$(dirname "$0")/../../.." && pwd)
export QEMU_LD_PREFIX="$here"
exec "$here/../../qemu/root/usr/bin/{qemu}" -cpu "${{QEMU_CPU:-{cpu}}}" -0 "$0" "$here/usr/bin/python3.11" "$@"
"""


def _write_launcher(env: Env) -> None:
    # python3.11 finds its standard library by searching up from sys.executable: usr/local/bin -> usr/lib/python3.11.
    path = env.root / LAUNCHER
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_LAUNCHER_TEXT.format(qemu=env.spec.qemu, cpu=env.spec.cpu))
    path.chmod(0o755)


def _unpack_wheel(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    # A wheel may keep modules under <name>.data/{purelib,platlib}; an installer moves them to site-packages.
    for data in site.glob("*.data"):
        for kind in ("purelib", "platlib"):
            for item in (data / kind).glob("*") if (data / kind).is_dir() else ():
                shutil.move(str(item), site / item.name)
        shutil.rmtree(data)


def build(name: str, cache: Path | None = None, force: bool = False) -> Env:
    """Build (or reuse) the environment ``name``.

    Args:
        name: a key of ``ENVS``.
        cache: the cache folder; default ``cache_root()``.
        force: rebuild even when the stamp matches.

    Returns:
        The built ``Env``.

    Raises:
        EmulationUnavailable: this host cannot build it (not x86_64 Linux, no apt, registries unreachable).
        BuildError: the build ran but its result is broken.
    """
    if name not in ENVS:
        raise KeyError(f"unknown environment {name!r}; expected one of: {', '.join(ENVS)}.")
    spec = ENVS[name]
    cache = cache or cache_root()
    qemu = ensure_qemu(cache) / spec.qemu
    folder = cache / name
    env = Env(spec, folder, qemu)
    with _locked(cache / f"{name}.lock"):
        stamp = folder / "stamp.json"
        if not force and stamp.exists() and json.loads(stamp.read_text()).get("hash") == spec.pins_hash():
            return env
        started = time.monotonic()
        shutil.rmtree(folder, ignore_errors=True)
        apt = _Apt(
            cache / "apt" / f"bookworm-{spec.name}",
            [(_mirror(), "bookworm"), (_mirror(), "bookworm-updates"), (DEFAULT_SECURITY_MIRROR, "bookworm-security")],
            spec.name,
        )
        _log(f"{name}: apt-get update (bookworm {spec.name})")
        apt.update()
        _log(f"{name}: downloading {len(spec.debs)} Debian packages")
        debs = apt.download(spec.debs, folder / "debs")
        for line in _unmet_depends(debs):
            _log(f"{name}: warning: unmet dependency {line}")
        versions = {}
        for deb in debs:
            _run(["dpkg", "-x", str(deb), str(env.root)], f"dpkg -x {deb.name}")
            versions[deb_field(deb, "Package")] = deb_field(deb, "Version")
        for link, target in spec.links:
            path = env.root / link
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
        shutil.rmtree(folder / "debs")
        _write_launcher(env)

        _log(f"{name}: downloading {len(spec.wheels)} wheels for {spec.wheel_platforms[0]}")
        wheels = folder / "wheels"
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--dest", str(wheels)]
        cmd += ["--python-version", "311", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none"]
        for plat in spec.wheel_platforms:
            cmd += ["--platform", plat]
        _run(cmd + list(spec.wheels), f"pip download ({name})", retries=2)
        env.site.mkdir()
        for wheel in sorted(wheels.glob("*.whl")):
            _unpack_wheel(wheel, env.site)
        wheel_names = sorted(w.name for w in wheels.glob("*.whl"))
        shutil.rmtree(wheels)

        qemu_version = json.loads((qemu_dir(cache) / "stamp.json").read_text())["version"]
        smoke = _smoke(env)
        stamp.write_text(
            json.dumps(
                {
                    "hash": spec.pins_hash(),
                    "pins": spec.pins(),
                    "debs": versions,
                    "wheels": wheel_names,
                    "qemu": qemu_version,
                    "smoke": smoke,
                    "seconds": round(time.monotonic() - started, 1),
                },
                indent=1,
            )
        )
        _log(f"{name}: built in {time.monotonic() - started:.0f} s: {smoke}")
        return env


_SMOKE = """
import platform, ssl, sqlite3, ctypes, zlib, lzma, bz2, decimal, json
import numpy, flatbuffers, click, pytest
import {interpreter}
a = numpy.arange(12, dtype=numpy.float64).reshape(3, 4)
assert float((a @ a.T).sum()) == 1134.0, "numpy matmul"
print(platform.machine(), platform.python_version(), "numpy", numpy.__version__, ssl.OPENSSL_VERSION)
"""


def _smoke(env: Env) -> str:
    proc = run(env, ["python3.11", "-c", _SMOKE.format(interpreter=env.spec.interpreter)], with_checkout=False)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise BuildError(f"{env.spec.name}: the smoke test failed (exit {proc.returncode}):\n{out[-3000:]}")
    if out.split()[0] != env.spec.machine:
        raise BuildError(f"{env.spec.name}: platform.machine() is {out.split()[0]!r}, expected {env.spec.machine!r}.")
    return out.splitlines()[-1]


# -- running ------------------------------------------------------------------------------------------------------

# What describes the host: its libraries, its Python, its CPU (OpenBLAS), the host's tflite-runtime 2.14 venv.
_HOST_ONLY = ("LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "OPENBLAS_CORETYPE",
              "OPENBLAS_L2_SIZE", "PYTHONSTARTUP", "PYTHONUSERBASE", "STATELITE_TFLITE214_PYTHON")


def environ(env: Env, overlay: Path | None = None) -> dict[str, str]:
    """The environment a command inside sees: the host's, less what describes the host, plus the emulation's.

    ``STATELITE_EMULATED=1`` tells the runtime (``statelite bench``) that it runs under emulation, and
    ``STATELITE_EMULATOR`` says which: timings there are the emulator's, not a Raspberry Pi's.
    """
    e = {k: v for k, v in os.environ.items() if k not in _HOST_ONLY and not k.startswith("QEMU_")}
    e.update(
        QEMU_LD_PREFIX=str(env.root),
        QEMU_CPU=env.spec.cpu,
        PYTHONPATH=os.pathsep.join(str(p) for p in (overlay, env.site) if p),
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",
        STATELITE_EMULATED="1",
        STATELITE_EMULATOR=f"{env.spec.qemu} -cpu {env.spec.cpu} ({env.spec.device})",
    )
    return e


def command(env: Env, cmd: list[str]) -> list[str]:
    """The host command line for ``cmd`` inside: ``python``/``python3``/``python3.11`` or a program of the tree."""
    if not cmd:
        raise ValueError("command: expected a program to run inside; received an empty command.")
    prog, args = cmd[0], list(cmd[1:])
    if prog in ("python", "python3", "python3.11"):
        return [str(env.python), *args]
    for folder in ("usr/bin", "bin"):
        if (env.root / folder / prog).exists():
            return [str(env.qemu), "-cpu", env.spec.cpu, str(env.root / folder / prog), *args]
    raise ValueError(f"command: {prog!r} is not a program of the {env.spec.name} tree; use python3.11.")


@contextlib.contextmanager
def checkout_overlay(src: Path = REPO):
    """A temporary folder laid out as ``pip install statelite`` installs the checkout: ``runtime/`` as package
    ``statelite``, ``train/`` and ``convert/`` as its subpackages (present, but needing TensorFlow to import)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    with tempfile.TemporaryDirectory(prefix="statelite-emu-") as tmp:
        package = Path(tmp) / "statelite"
        shutil.copytree(src / "runtime", package, ignore=ignore)
        shutil.copytree(src / "train", package / "train", ignore=ignore)
        shutil.copytree(src / "convert", package / "convert", ignore=ignore)
        yield Path(tmp)


def run(env: Env | str, cmd: list[str], *, with_checkout: bool = True, capture: bool = True, timeout: float | None = None,
        cwd=None) -> subprocess.CompletedProcess:
    """Run ``cmd`` inside the environment (built first if ``env`` is a name).

    Args:
        env: an ``Env`` or the name of one.
        cmd: ``["python3.11", ...]`` or another program of the tree.
        with_checkout: put the checkout's ``runtime/`` on the path as ``statelite``.
        capture: capture stdout and stderr as text (else they pass through).
        timeout: seconds before ``subprocess.TimeoutExpired``.
        cwd: working folder (default: the caller's).

    Returns:
        The ``subprocess.CompletedProcess``; the caller checks its return code.
    """
    if isinstance(env, str):
        env = build(env)
    with checkout_overlay() if with_checkout else contextlib.nullcontext() as overlay:
        return subprocess.run(
            command(env, cmd), env=environ(env, overlay), capture_output=capture, text=True, timeout=timeout, cwd=cwd
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulated.envs", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="build (or reuse) environments")
    b.add_argument("names", nargs="*", metavar="{" + ",".join(ENVS) + "}", help="default: all")
    b.add_argument("--force", action="store_true", help="rebuild even when the cache matches the pins")
    r = sub.add_parser("run", help="run a command inside: run arm64 -- python3.11 -m statelite.cli verify m.tflite")
    r.add_argument("name", choices=list(ENVS))
    r.add_argument("cmd", nargs=argparse.REMAINDER)
    sub.add_parser("info", help="what each built environment holds")
    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            unknown = set(args.names) - set(ENVS)
            if unknown:
                parser.error(f"unknown environment {sorted(unknown)}; expected some of: {', '.join(ENVS)}.")
            for name in args.names or list(ENVS):
                t = time.monotonic()
                env = build(name, force=args.force)
                print(f"{env.describe()} [{time.monotonic() - t:.0f} s] in {env.folder}")
            return 0
        if args.action == "info":
            for name in ENVS:
                env = Env(ENVS[name], cache_root() / name, qemu_dir() / "root/usr/bin" / ENVS[name].qemu)
                print(env.describe() if (env.folder / "stamp.json").exists() else f"{name}: not built")
            return 0
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        return run(args.name, cmd, capture=False).returncode
    except EmulationUnavailable as exc:
        print(f"emulation unavailable: {exc}", file=sys.stderr)
        return 3
    except BuildError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
