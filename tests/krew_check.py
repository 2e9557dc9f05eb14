"""krew's own rules, applied locally: manifest validation, archive checks, a simulated install.

Mirrors kubernetes-sigs/krew `internal/index/validation/validate.go` (ValidatePlugin), the extra
checks of `cmd/validate-krew-manifest` (supported os/arch pairs, no overlapping platforms,
a license among the installed files) and `internal/installation` + `internal/download`
(gzip/zip MIME sniffing, regular files only, no path escaping, the bin symlink). krew itself
cannot be installed here (no Go toolchain, no GitHub), hence this reimplementation.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

API_VERSION = "krew.googlecontainertools.github.com/v1alpha2"
NAME_PATTERN = re.compile(r"^[\w-]+$")
RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL"} | {
    "%s%d" % (prefix, n) for prefix in ("COM", "LPT") for n in range(1, 10)
}
SHA256_PATTERN = re.compile(r"^[a-f0-9]{64}$")
#: k8s.io/apimachinery util/version ParseSemantic, after krew's own "starts with v" check.
SEMVER_PATTERN = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
#: validate-krew-manifest's os/arch pairs (every selector must match one).
SUPPORTED_PAIRS = [
    ("windows", "386"), ("windows", "amd64"), ("windows", "arm64"),
    ("linux", "386"), ("linux", "amd64"), ("linux", "arm"), ("linux", "arm64"),
    ("linux", "ppc64le"), ("darwin", "386"), ("darwin", "amd64"), ("darwin", "arm64"),
]  # fmt: skip
#: Installed file names krew-index CI accepts as a license (case-insensitive).
LICENSE_NAMES = {
    "license", "license.txt", "license.md", "licenses", "licenses.txt", "licenses.md",
    "copying", "copying.txt",
}  # fmt: skip
SHORT_DESCRIPTION_MAX = 50  # `krew search` cuts there; the review bot asks for it
DESCRIPTION_LINE_MAX = 80  # the review bot: "word wrap your description to 80-character lines"


class KrewError(Exception):
    """What krew (or krew-index CI) would refuse, in its words where it has them."""


# ---- manifest validation (ValidatePlugin + validate-krew-manifest) -----------------------------


def validate_manifest(doc: Dict[str, Any], file_stem: str) -> List[str]:
    """Every rule the manifest breaks; an empty list means krew-index CI would accept it."""
    problems: List[str] = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(
            "apiVersion %r not supported in this version of krew" % doc.get("apiVersion")
        )
    if doc.get("kind") != "Plugin":
        problems.append("kind %r is not Plugin" % doc.get("kind"))
    name = (doc.get("metadata") or {}).get("name") or ""
    problems += _name_problems(name, file_stem)
    spec = doc.get("spec") or {}
    problems += _version_problems(spec.get("version") or "")
    problems += _description_problems(spec)
    platforms = spec.get("platforms") or []
    if not platforms:
        problems.append("should have a platform")
    for index, platform in enumerate(platforms):
        problems += ["platform[%d]: %s" % (index, p) for p in _platform_problems(platform)]
    problems += _coverage_problems(platforms)
    return problems


def _name_problems(name: str, file_stem: str) -> List[str]:
    problems = []
    if not NAME_PATTERN.match(name):
        problems.append("plugin name %r is not valid" % name)
    if name.upper() in RESERVED_NAMES:
        problems.append("plugin name %r is reserved" % name)
    if name != file_stem:
        problems.append("plugin name %r must equal the manifest file name %r" % (name, file_stem))
    return problems


def _version_problems(version: str) -> List[str]:
    if not version:
        return ["version is empty"]
    if not version.startswith("v"):
        return ["version string %r not starting with 'v'" % version]
    if not SEMVER_PATTERN.match(version):
        return ["failed to parse version %r as semver" % version]
    return []


def _description_problems(spec: Dict[str, Any]) -> List[str]:
    problems = []
    short = spec.get("shortDescription") or ""
    if not short:
        problems.append("should have a short description")
    if "\r" in short or "\n" in short:
        problems.append("should not have a multiline short description")
    if len(short) > SHORT_DESCRIPTION_MAX:
        problems.append("short description is over %d characters" % SHORT_DESCRIPTION_MAX)
    description = spec.get("description") or ""
    if not description.strip():
        problems.append("should have a description")
    for line in description.splitlines():
        if len(line) > DESCRIPTION_LINE_MAX:
            problems.append(
                "description line over %d characters: %r" % (DESCRIPTION_LINE_MAX, line)
            )
    return problems


def _platform_problems(platform: Dict[str, Any]) -> List[str]:
    problems = []
    if not platform.get("uri"):
        problems.append("`uri` has to be set")
    if not SHA256_PATTERN.match(str(platform.get("sha256") or "")):
        problems.append(
            "sha256 %r is not valid (lowercase hex, 64 digits)" % platform.get("sha256")
        )
    binary = platform.get("bin") or ""
    if not binary:
        problems.append("`bin` has to be set")
    elif os.path.isabs(binary) or ".." in Path(binary).parts:
        problems.append("`bin` %r leaves the installation directory" % binary)
    problems += _selector_problems(platform.get("selector"))
    files = platform.get("files")
    if files is not None:
        if not files:
            problems.append("`files` is present but empty")
        for op in files or []:
            if not op.get("from") or not op.get("to"):
                problems.append("`from` and `to` fields required in files: %r" % op)
    return problems


def _selector_problems(selector: Optional[Dict[str, Any]]) -> List[str]:
    if selector is None:
        return ["nil selector is not supported"]
    if not selector:
        return ["empty selector is not supported"]
    problems = []
    for key in ("matchLabels", "matchExpressions"):
        if key in selector and not selector[key]:
            problems.append("%s is present but empty" % key)
    keys = set((selector.get("matchLabels") or {}).keys())
    keys |= {expr.get("key") for expr in selector.get("matchExpressions") or []}
    if keys - {"os", "arch"}:
        problems.append("selector keys %s: only os and arch are supported" % sorted(keys))
    if set(selector) - {"matchLabels", "matchExpressions"}:
        problems.append("unknown selector fields %s" % sorted(set(selector)))
    return problems


def selector_matches(selector: Dict[str, Any], os_name: str, arch: str) -> bool:
    """metav1.LabelSelector semantics over the labels {os, arch}."""
    labels = {"os": os_name, "arch": arch}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _coverage_problems(platforms: List[Dict[str, Any]]) -> List[str]:
    problems = []
    owner: Dict[Tuple[str, str], int] = {}
    for index, platform in enumerate(platforms):
        selector = platform.get("selector") or {}
        pairs = [pair for pair in SUPPORTED_PAIRS if selector_matches(selector, *pair)]
        if not pairs:
            problems.append("platform[%d] matches no supported os/arch" % index)
        for pair in pairs:
            if pair in owner:
                problems.append(
                    "platforms %d and %d overlap on %s/%s" % (owner[pair], index, *pair)
                )
            owner[pair] = index
    return problems


# ---- the release bot's template ----------------------------------------------------------------

_TAG = re.compile(r"\{\{\s*\.TagName\s*\}\}")
_ADD_URI_AND_SHA = re.compile(r'\{\{\s*addURIAndSha\s+"([^"]+)"\s+\.TagName\s*\}\}')


def render_release_template(text: str, tag: str, sha256_for_url: Callable[[str], str]) -> str:
    """krew-release-bot's rendering: `{{ .TagName }}`, and `{{ addURIAndSha "url" .TagName }}`
    → `uri: url` + `sha256: ...` (4-space indented second line), the hash of the asset."""

    def uri_and_sha(match: re.Match) -> str:
        url = _TAG.sub(tag, match.group(1))
        return "uri: %s\n    sha256: %s" % (url, sha256_for_url(url))

    return _TAG.sub(tag, _ADD_URI_AND_SHA.sub(uri_and_sha, text))


# ---- archives and the install ------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sniff_archive_type(path: Path) -> str:
    """net/http.DetectContentType on the first 512 bytes, for the two types krew accepts."""
    head = path.read_bytes()[:512]
    if head.startswith(b"\x1f\x8b\x08"):
        return "application/x-gzip"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    return "text/plain" if head[:2] == b"#!" else "application/octet-stream"


def _safe_members(tar: tarfile.TarFile) -> List[tarfile.TarInfo]:
    members = []
    for member in tar.getmembers():
        if member.name == "pax_global_header":
            continue
        if not (member.isreg() or member.isdir()):
            raise KrewError("unable to handle file type %r of %s" % (member.type, member.name))
        if member.name.startswith("/") or ".." in Path(member.name).parts:
            raise KrewError("file %r would escape the installation directory" % member.name)
        members.append(member)
    return members


def extract(archive: Path, into: Path) -> None:
    """krew's extraction: gzip or zip by MIME sniffing; tar: regular files and dirs only."""
    kind = sniff_archive_type(archive)
    if kind != "application/x-gzip":
        raise KrewError("mime type %r for archive file is not a supported archive format" % kind)
    with tarfile.open(archive, "r:gz") as tar:
        for member in _safe_members(tar):
            target = into / member.name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
            target.chmod(member.mode & 0o777)  # krew keeps the mode from the tar header


def apply_file_operations(
    extracted: Path, files: Optional[List[Dict[str, str]]], dest: Path
) -> None:
    """The `files` list (default: everything to `.`), glob `from`, moves that cannot escape."""
    dest.mkdir(parents=True, exist_ok=True)
    for op in files or [{"from": "*", "to": "."}]:
        matched = [p for p in sorted(extracted.rglob("*")) if fnmatch.fnmatch(
            p.relative_to(extracted).as_posix(), op["from"])]  # fmt: skip
        for path in matched:
            target = (dest / op["to"]).resolve()
            if dest.resolve() not in (target, *target.parents):
                raise KrewError("move target %s escapes %s" % (target, dest))
            if target.is_dir():
                target = target / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(target))


def matching_platform(doc: Dict[str, Any], os_name: str, arch: str) -> Dict[str, Any]:
    for platform in doc["spec"]["platforms"]:  # the first match wins, as in krew
        if selector_matches(platform["selector"], os_name, arch):
            return platform
    raise KrewError(
        "plugin %r does not offer installation for this platform" % doc["metadata"]["name"]
    )


def install(doc: Dict[str, Any], archive: Path, krew_root: Path, os_name: str, arch: str) -> Path:
    """`kubectl krew install --manifest=... --archive=...` with KREW_OS/KREW_ARCH set; returns
    the bin symlink ($KREW_ROOT/bin/kubectl-<name>)."""
    platform = matching_platform(doc, os_name, arch)
    actual = sha256_of(archive)
    if actual != platform["sha256"]:
        raise KrewError("checksum does not match, want: %s, got %s" % (platform["sha256"], actual))
    name, version = doc["metadata"]["name"], doc["spec"]["version"]
    store = krew_root / "store" / name / version
    krew_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=krew_root) as scratch:
        extract(archive, Path(scratch))
        apply_file_operations(Path(scratch), platform.get("files"), store)
    installed = {p.name.lower() for p in store.rglob("*") if p.is_file()}
    if not installed & LICENSE_NAMES:
        raise KrewError("no license file among the installed files %s" % sorted(installed))
    binary = store / platform["bin"]
    if not binary.is_file() or store.resolve() not in binary.resolve().parents:
        raise KrewError("bin %s is not an installed file" % platform["bin"])
    link = krew_root / "bin" / ("kubectl-" + name.replace("-", "_"))
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(binary)
    return link
