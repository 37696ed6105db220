"""Find kernel headers bcc can compile against, even for another kernel version.

bcc insists on a kernel header tree (for its helper includes). brtrace reads no
struct by header layout (offsets come from BTF), so headers of any nearby version
serve. Debian splits a tree in two packages (`linux-headers-X-common` and
`linux-headers-X-amd64`); bcc's BCC_KERNEL_SOURCE takes one directory, so we
merge the two with symlinks into a private cache directory. We never write into
/lib/modules behind the user's back.
"""

from __future__ import annotations

import platform
import re
import shutil
import tempfile
from pathlib import Path

from tracer.errors import KernelFeatureError
from tracer.kernel import switches


def running_build_dir() -> Path | None:
    """The running kernel's own headers, if installed (bcc finds them itself)."""
    build = Path("/lib/modules") / platform.release() / "build"
    return build if (build / "include").is_dir() else None


def _version_key(name: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def debian_header_pairs(src: Path = Path("/usr/src")) -> list[tuple[Path, Path]]:
    """(arch tree, common tree) pairs of Debian header packages, newest first."""
    pairs = []
    for arch in src.glob("linux-headers-*"):
        if arch.name.endswith("-common") or not (arch / "include" / "generated").is_dir():
            continue
        common = src / re.sub(r"-[^-]+$", "-common", arch.name)
        if (common / "include" / "linux").is_dir():
            pairs.append((arch, common))
    return sorted(pairs, key=lambda p: _version_key(p[0].name), reverse=True)


def merge_trees(dest: Path, sources: list[Path]) -> None:
    """Symlink-merge directory trees: recurse only where two sources share a
    directory, so the merge costs a few dozen links, not a copy of 60 MB."""
    dest.mkdir(parents=True, exist_ok=True)
    children: dict[str, list[Path]] = {}
    for src in sources:
        for child in sorted(src.iterdir()):
            children.setdefault(child.name, []).append(child)
    for name, paths in children.items():
        dirs = [p for p in paths if p.is_dir()]
        if len(dirs) > 1:
            merge_trees(dest / name, dirs)
        else:
            # Files present in both (Makefile): the arch tree, listed first, wins.
            (dest / name).symlink_to(paths[0])


def bcc_kernel_source() -> tuple[Path | None, str]:
    """Directory for BCC_KERNEL_SOURCE (None: bcc's default works) and a note
    saying which headers are used, for `brtrace doctor`."""
    own = running_build_dir()
    if own:
        return None, f"running kernel's headers ({own})"
    for kernels in (Path("/usr/src/kernels"),):  # RHEL keeps whole trees here
        for tree in sorted(kernels.glob("*"), key=lambda p: _version_key(p.name), reverse=True):
            if (tree / "include" / "generated").is_dir():
                return tree, f"headers of another kernel ({tree}); offsets come from BTF"
    pairs = debian_header_pairs()
    if not pairs:
        raise KernelFeatureError(
            f"no kernel headers found for bcc (none for {platform.release()}, none in /usr/src)",
            "install some: apt-get install linux-headers-amd64 (scripts/setup does this)")
    arch, common = pairs[0]
    cache = switches.cache_dir()
    dest = cache / "headers" / arch.name
    if not (dest / "include" / "generated").exists():
        try:
            cache.joinpath("headers").mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".merge-", dir=cache / "headers"))
        except OSError as exc:
            raise KernelFeatureError(
                f"cannot prepare kernel headers for bcc in {cache} ({exc.strerror})",
                f"set {switches.CACHE} to a writable directory") from exc
        merge_trees(tmp, [arch, common])
        try:
            tmp.rename(dest)
        except OSError:  # another brtrace merged it first
            shutil.rmtree(tmp, ignore_errors=True)
    return dest, f"{arch.name} merged with {common.name} in {dest}; offsets come from BTF"
