"""Server-side check of file-system arguments against the agent's directories and extensions.

Paths are compared lexically after normalisation: the server cannot see the device's disk,
so it refuses `..` escapes and foreign roots; the device checks again against its real disk
(invariant 11).
"""

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tools.catalog import DeviceTool

OUTSIDE_DIRECTORIES = "Refused: {path!r} is outside the agent's directories ({roots})."
EXTENSION_NOT_ALLOWED = "Refused: {path!r} does not have one of the allowed extensions ({exts})."
RELATIVE_PATH = "Refused: {path!r} is not an absolute path."


class PolicyViolation(ValueError):
    """A tool argument the agent's configuration does not allow."""


def normalize_extension(ext: str) -> str:
    """`md`, `.MD` and `.md` all mean `.md`."""
    ext = ext.strip().lower()
    return ext if ext.startswith(".") else f".{ext}"


@dataclass(frozen=True)
class PathPolicy:
    """The directories and extensions one agent may touch."""

    directories: tuple[str, ...]
    extensions: tuple[str, ...] = ()

    @classmethod
    def build(cls, directories: Iterable[str], extensions: Iterable[str] = ()) -> "PathPolicy":
        return cls(
            tuple(posixpath.normpath(d) for d in directories),
            tuple(normalize_extension(e) for e in extensions),
        )

    def inside(self, path: str) -> bool:
        normal = posixpath.normpath(path)
        return any(
            normal == root or normal.startswith(root.rstrip("/") + "/") for root in self.directories
        )

    def allows_file(self, path: str) -> bool:
        """Whether the agent may read the file `path`: inside its folders, with one of its
        extensions."""
        extension = posixpath.splitext(path)[1].lower()
        return self.inside(path) and (not self.extensions or extension in self.extensions)

    def check(self, tool: DeviceTool, args: Mapping[str, Any]) -> None:
        """Raise `PolicyViolation` when `args` reach outside what the agent may touch."""
        if tool.path_kind is None:
            return
        path = str(args.get("path", ""))
        if not posixpath.isabs(path):
            raise PolicyViolation(RELATIVE_PATH.format(path=path))
        if not self.inside(path):
            raise PolicyViolation(
                OUTSIDE_DIRECTORIES.format(path=path, roots=", ".join(self.directories))
            )
        extension = posixpath.splitext(path)[1].lower()
        if tool.path_kind == "file" and self.extensions and extension not in self.extensions:
            raise PolicyViolation(
                EXTENSION_NOT_ALLOWED.format(path=path, exts=", ".join(self.extensions))
            )
        if tool.name == "scan_directory" and self.extensions:
            asked = {normalize_extension(e) for e in args.get("extensions") or []}
            if not asked or not asked <= set(self.extensions):
                raise PolicyViolation(
                    EXTENSION_NOT_ALLOWED.format(path=path, exts=", ".join(self.extensions))
                )
