"""``python -m intake.pages.assets``: vendor the U.S. Web Design System's built assets.

The pages are built on USWDS (``@uswds/uswds`` on npm, public domain): its compiled CSS, its
JavaScript, fonts and images are served by the intake itself from ``static/uswds/`` — nothing
is loaded from a CDN. This downloads the pinned release's tarball from the npm registry,
checks it against the registry's published sha512 integrity (:data:`INTEGRITY`), and copies
``package/dist/{css,js,fonts,img}`` there. ``make install`` runs it; it does nothing when the
pinned version is already in place. No Node.js is needed.

To move to a new release: set :data:`VERSION` and :data:`INTEGRITY` from
``npm view @uswds/uswds@<version> dist.integrity`` and run ``make assets``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "3.14.0"
INTEGRITY = ("sha512-kwZ50TqGszxj3+MQhm+c84hI0y8rIKoc7ZLKbuHg+8rTkFisp9lXOMRD2wclyyuYZahpADxMv"
             "aPong7bwL7cew==")
TARBALL = f"https://registry.npmjs.org/@uswds/uswds/-/uswds-{VERSION}.tgz"
TARGET = Path(__file__).parent / "static" / "uswds"
KEPT = ("dist/css/uswds.min.css", "dist/js/uswds.min.js", "dist/js/uswds-init.min.js",
        "dist/fonts/", "dist/img/")
"""What is copied out of the package (its Sass sources and docs are left behind)."""
STAMP = ".version"


class AssetsError(Exception):
    """The tarball could not be fetched, or is not the one the registry published."""


def installed(target: Path = TARGET) -> bool:
    stamp = target / STAMP
    return stamp.exists() and stamp.read_text().strip() == VERSION


def check_integrity(data: bytes, integrity: str = INTEGRITY) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise AssetsError(f"unsupported integrity algorithm {algorithm!r}")
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != expected:
        raise AssetsError(f"{TARBALL} does not match its published integrity {integrity} "
                          f"(got sha512-{digest}): refusing to install it")


def extract(data: bytes, target: Path = TARGET) -> int:
    """Copy the kept files of the tarball ``data`` into ``target``; the number copied."""
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    copied = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix("package/")
            if not member.isfile() or not name.startswith(KEPT) or ".." in Path(name).parts:
                continue
            destination = staging / Path(name).relative_to("dist")
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            destination.write_bytes(source.read())
            copied += 1
    (staging / STAMP).write_text(VERSION + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return copied


def vendor(target: Path = TARGET) -> str:
    if installed(target):
        return f"USWDS {VERSION} already in {target}"
    try:
        with urllib.request.urlopen(TARBALL, timeout=120) as response:
            data = response.read()
    except OSError as exc:
        raise AssetsError(f"cannot download {TARBALL} ({exc}); the npm registry must be "
                          "reachable once, at install") from exc
    check_integrity(data)
    copied = extract(data, target)
    return f"USWDS {VERSION}: {copied} files in {target}"


def main() -> None:
    try:
        print(vendor())
    except AssetsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
