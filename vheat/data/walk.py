"""A split folder's images per class, listed without being led astray by directory links.

torchvision's ImageFolder walks with ``os.walk(followlinks=True)``: a link back up
(``ln -s .. ds/train/1/loop``) lists the whole split again under class 1 (the other classes'
images trained as class 1, the dataset inflated 40x), and two such links in one folder make the
walk exponential. Here a directory link is followed only when it leads outside the split folder,
into no class folder, and to a folder not listed yet (a set of real paths): every image is listed
at most once, under the class whose folder holds it. The links passed over are kept for a report.
"""
from __future__ import annotations

import os

from torchvision.datasets.folder import IMG_EXTENSIONS


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class SplitWalker:
    """Lists ``split_dir/<class>/**`` images; one instance per split, classes in any order."""

    def __init__(self, split_dir: str, classes: list[str]):
        self.split_dir = split_dir
        self.split_real = os.path.realpath(split_dir)
        self.class_reals = [os.path.realpath(os.path.join(split_dir, c)) for c in classes]
        self.seen: set[str] = set()
        self.skipped_links: list[tuple[str, str]] = []  # (link, where it leads)

    def _leads_back(self, real: str) -> bool:
        return (real in self.seen or _inside(real, self.split_real) or _inside(self.split_real, real)
                or any(_inside(real, c) for c in self.class_reals))

    def images(self, class_name: str) -> list[str]:
        """Image paths of one class (dangling links included: image verification reports them),
        in torchvision's order (sorted by folder, then by name)."""
        root = os.path.join(self.split_dir, class_name)
        self.seen.add(os.path.realpath(root))
        found: dict[str, list[str]] = {}
        stack = [root]
        while stack:
            folder = stack.pop()
            names = []
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir():
                        real = os.path.realpath(entry.path)
                        if (entry.is_symlink() and self._leads_back(real)) or real in self.seen:
                            self.skipped_links.append((entry.path, real))
                            continue
                        self.seen.add(real)
                        stack.append(entry.path)
                    elif entry.name.lower().endswith(IMG_EXTENSIONS):
                        names.append(entry.path)
            found[folder] = sorted(names)
        return [path for folder in sorted(found) for path in found[folder]]

    def report(self) -> str:
        """One line on the directory links passed over ('' if none)."""
        if not self.skipped_links:
            return ""
        shown = ", ".join(f"{link} -> {real}" for link, real in self.skipped_links[:3])
        more = f" and {len(self.skipped_links) - 3} more" if len(self.skipped_links) > 3 else ""
        return (f"{self.split_dir}: not following {len(self.skipped_links)} directory link(s) that lead back into "
                f"the dataset or to a folder listed already: {shown}{more}")
