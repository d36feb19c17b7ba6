"""Download Swagger UI and ReDoc from the npm registry into shells/rest/assets/docs/.

The REST API's documentation pages (``/docs``, ``/redoc``) are served from
these packaged files, not from a CDN, so they work on a machine with no
internet access. This script is how they get there and how they are updated:
change a version below and run

    python3 scripts/vendor_docs_assets.py

It fetches each package's metadata for that exact version from
registry.npmjs.org, downloads the tarball it names, checks the tarball
against the metadata's sha512 ``integrity``, refuses a licence other than the
one expected (an update must not change it unnoticed), copies the listed
files out unchanged, and writes the folder's README.md. Only the standard
library is used. Nothing is written unless every package checks out.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGISTRY = "https://registry.npmjs.org"
TARGET = Path(__file__).resolve().parent.parent / "shells" / "rest" / "assets" / "docs"
# Both bundles are a few MB; the registry answers in well under this.
TIMEOUT_SECONDS = 120


@dataclass(frozen=True, slots=True, kw_only=True)
class Package:
    """One npm package to vendor: its exact version, licence, and the files to copy (tarball path -> file name)."""

    name: str
    version: str
    license: str
    files: dict[str, str]
    why: str


PACKAGES = (
    Package(
        name="swagger-ui-dist",
        version="5.35.0",
        license="Apache-2.0",
        files={
            "package/swagger-ui-bundle.js": "swagger-ui-bundle.js",
            "package/swagger-ui.css": "swagger-ui.css",
            # The bundle's first line points to this file for the licences of what it bundles.
            "package/swagger-ui-bundle.js.LICENSE.txt": "swagger-ui-bundle.js.LICENSE.txt",
            "package/LICENSE": "swagger-ui-LICENSE.txt",
            # Apache-2.0, section 4(d): a NOTICE file is passed on with the work.
            "package/NOTICE": "swagger-ui-NOTICE.txt",
        },
        why="Swagger UI at /docs",
    ),
    Package(
        name="redoc",
        # 2.x, not 3.x: 3.x is an ES module with a different start-up API and
        # telemetry settings; 2.x is one classic script with `Redoc.init`.
        version="2.5.4",
        license="MIT",
        files={
            "package/bundles/redoc.standalone.js": "redoc.standalone.js",
            "package/bundles/redoc.standalone.js.LICENSE.txt": "redoc.standalone.js.LICENSE.txt",
            "package/LICENSE": "redoc-LICENSE.txt",
        },
        why="ReDoc at /redoc",
    ),
)


def fetch(url: str) -> bytes:
    """The body of a GET of ``url`` (registry.npmjs.org only)."""
    if urllib.parse.urlsplit(url).netloc != urllib.parse.urlsplit(REGISTRY).netloc:
        raise SystemExit(f"refusing to download from outside the registry: {url}")
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 (https, checked above)
        body: bytes = response.read()
    return body


def metadata(package: Package) -> dict[str, Any]:
    """The registry's metadata of ``package`` at its exact version."""
    url = f"{REGISTRY}/{urllib.parse.quote(package.name, safe='@')}/{package.version}"
    document: dict[str, Any] = json.loads(fetch(url))
    if document.get("version") != package.version:
        raise SystemExit(f"{package.name}: the registry answered version {document.get('version')!r}")
    if document.get("license") != package.license:
        raise SystemExit(
            f"{package.name}@{package.version}: licence {document.get('license')!r}, expected {package.license!r};"
            " review it and update PACKAGES and the README before vendoring"
        )
    return document


def verified_tarball(package: Package, document: dict[str, Any]) -> tuple[bytes, str]:
    """The package's tarball and its integrity string, once the sha512 matches the metadata's."""
    dist = document.get("dist", {})
    integrity = dist.get("integrity", "")
    if not isinstance(integrity, str) or not integrity.startswith("sha512-"):
        raise SystemExit(f"{package.name}@{package.version}: no sha512 integrity in the registry metadata")
    tarball = fetch(dist["tarball"])
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode("ascii")
    if digest != integrity:
        raise SystemExit(f"{package.name}@{package.version}: tarball sha512 {digest} != registry {integrity}")
    return tarball, integrity


def extract(package: Package, tarball: bytes) -> dict[str, bytes]:
    """The listed files of ``package``'s tarball, by target file name; read by name, never extracted to disk."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member_name, file_name in package.files.items():
            member = archive.getmember(member_name)
            stream = archive.extractfile(member) if member.isfile() else None
            if stream is None:
                raise SystemExit(f"{package.name}@{package.version}: {member_name} is not a regular file")
            found[file_name] = stream.read()
    return found


def readme(integrities: dict[str, str]) -> str:
    """The README.md of the assets folder: what each file is, from which version, under which licence."""
    lines = [
        "# Vendored documentation assets",
        "",
        "Swagger UI (`/docs`) and ReDoc (`/redoc`) for Lockgate's REST API, served from these",
        "files so that the pages work on a machine with no internet access (no CDN, no web fonts).",
        "The third-party files are copied unchanged from the npm registry by",
        "`scripts/vendor_docs_assets.py`, which checks each tarball's sha512 against the registry;",
        "to update, change the version there and run `python3 scripts/vendor_docs_assets.py`.",
        "",
        "| Package | Version | Licence | For | Files |",
        "|---|---|---|---|---|",
    ]
    for package in PACKAGES:
        files = ", ".join(f"`{name}`" for name in package.files.values())
        lines.append(f"| `{package.name}` | {package.version} | {package.license} | {package.why} | {files} |")
    lines += ["", "Tarball integrity (from the registry metadata, checked on download):", ""]
    lines += [f"- `{name}`: `{integrity}`" for name, integrity in integrities.items()]
    lines += [
        "",
        "`swagger-init.js` and `redoc-init.js` are Lockgate's own (MIT, like the rest of it): they start",
        "each viewer on `/openapi.json`, and live in files rather than inline scripts so that the pages",
        "work under a Content-Security-Policy of `script-src 'self'`.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    """Download, check and write every package's files; nothing is written if any check fails."""
    files: dict[str, bytes] = {}
    integrities: dict[str, str] = {}
    for package in PACKAGES:
        document = metadata(package)
        tarball, integrity = verified_tarball(package, document)
        files.update(extract(package, tarball))
        integrities[f"{package.name}@{package.version}"] = integrity
        print(f"{package.name}@{package.version}: {integrity} ok", file=sys.stderr)
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (TARGET / name).write_bytes(content)
    (TARGET / "README.md").write_text(readme(integrities), encoding="utf-8")
    print(f"wrote {len(files) + 1} files to {TARGET}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
