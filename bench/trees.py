"""Generated freelancer folder trees, the input of the local agent's benchmarks (issue 11).

A tree looks like a freelancer's work folder: client folders holding projects, nested 1 to 4
deep (`Acme Corp/Website redesign/meetings/2026 Q1/2026-03-02 kickoff.md`), plus an `Inbox`.
Most files are `.md` and `.txt` notes with what the agent extracts: TODO lines and
checklists (`TODO: ...`, `- [ ] ...`, `- [x] ...`), dated lines (`2026-04-01 launch review`),
headed sections (`## Decisions`) with prose. About 1% of the text files are ~200 KB meeting
logs, the files a prompt budget must split. Task titles repeat within a project (the same
TODO in two files, checked in one of them) but are mostly distinct across the tree. The
rest are binaries (`.png`, `.pdf`: a magic number and random bytes) and files the agent's
default extensions (.md, .txt) skip (`.docx`, `.json`, `.log`).

The same `files` and `seed` give the same paths and bytes (only `random.Random(seed)`):

    .venv/bin/python -m bench.trees OUT_DIR --files 1000 [--seed 0]
"""

import argparse
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

TEXT = "text"  # an .md or .txt note of a few KB
LONG_TEXT = "long_text"  # a ~200 KB meeting log (.md or .txt)
BINARY = "binary"  # .png, .pdf
EXCLUDED = "excluded"  # .docx, .json, .log: not in the agent's default extensions
KINDS = (TEXT, LONG_TEXT, BINARY, EXCLUDED)

BINARY_SHARE = 0.08
EXCLUDED_SHARE = 0.07
LONG_SHARE = 0.01  # of the text files
LONG_BYTES = (195_000, 225_000)
FILES_PER_CLIENT = 120  # on average, at 10,000 files (fewer at small sizes)
TASK_REUSE = 0.2  # chance a TODO line repeats one already written in its project
INBOX = "Inbox"

CLIENTS = (
    "Acme Corp",
    "Bluebird Bakery",
    "Café Lumière",
    "Northwind Traders",
    "Greenleaf Studio",
    "Harbor Dental",
    "Kestrel Labs",
    "Maple & Finch",
    "Nordlicht GmbH",
    "Orchid Wellness",
    "Pinecrest School",
    "Quillon Press",
    "Redwood Realty",
    "Saltwater Surf Co",
    "Tandem Bikes",
    "Umbra Architects",
    "Vela Robotics",
    "Willow Yoga",
    "Yarrow Farms",
    "Zenith Legal",
    "Atlas Movers",
    "Brightside Clinic",
    "Copperpot Kitchen",
    "Driftwood Hotel",
    "Ember Coffee",
    "Fieldnotes Co",
    "Golden Hour Films",
    "Hollow Oak Brewery",
    "Indigo Fashion",
    "Juniper Health",
)
# Names of the clients after the 30 above, `Aurora Bakery` and the like.
CLIENT_WORDS = (
    "Aurora",
    "Basalt",
    "Cedar",
    "Delta",
    "Elm",
    "Fjord",
    "Granite",
    "Heron",
    "Iris",
    "Jade",
    "Kite",
    "Lark",
    "Meadow",
    "Nimbus",
    "Oak",
    "Pebble",
    "Quartz",
    "River",
    "Sparrow",
    "Tide",
)
CLIENT_TRADES = (
    "Bakery",
    "Studio",
    "Consulting",
    "Dental",
    "Foods",
    "Gallery",
    "Law",
    "Media",
    "Partners",
    "Realty",
    "Apparel",
    "Fitness",
    "Books",
    "Interiors",
    "Travel",
    "Records",
    "Florist",
)
PROJECTS = (
    "Website redesign",
    "Brand refresh",
    "Spring campaign",
    "Mobile app",
    "Newsletter",
    "Annual report",
    "Product launch",
    "Photo shoot",
    "Menu redesign",
    "Booking system",
    "SEO audit",
    "Social media",
    "Packaging",
    "Trade show",
    "Onboarding guide",
    "Pitch deck",
    "Podcast",
    "Online shop",
    "Grant application",
    "Video series",
    "Style guide",
    "Intranet",
)
PEOPLE = (
    "Dana",
    "Marco",
    "Priya",
    "Tom",
    "Lena",
    "Sam",
    "Aiko",
    "Jonas",
    "Fatima",
    "Olivier",
    "Grace",
    "Ravi",
    "Sofia",
    "Ben",
    "Chloé",
    "Mateo",
    "Hannah",
    "Yusuf",
    "Ines",
    "Kofi",
)
ITEMS = (
    "homepage",
    "pricing page",
    "about page",
    "contact form",
    "logo",
    "color palette",
    "hero image",
    "footer",
    "checkout flow",
    "signup email",
    "product photos",
    "blog layout",
    "landing page",
    "brochure",
    "business cards",
    "menu",
    "poster",
    "banner ads",
    "icon set",
    "typography",
    "onboarding screens",
    "settings screen",
    "dashboard",
    "search results",
    "FAQ",
    "case study",
    "press kit",
    "invoice template",
    "proposal",
    "timeline",
    "budget",
    "sitemap",
    "navigation",
    "newsletter template",
    "social posts",
    "video script",
    "storyboard",
    "podcast intro",
    "cover art",
    "price list",
    "booking form",
    "gallery",
    "testimonials",
    "team page",
    "careers page",
    "event page",
    "packaging label",
    "shipping page",
    "return policy",
    "cookie banner",
    "404 page",
    "mobile menu",
)
ARTIFACTS = (
    "copy",
    "mockups",
    "wireframes",
    "draft",
    "final files",
    "specs",
    "assets",
    "feedback",
    "estimate",
    "layout",
    "illustrations",
    "translations",
    "alt texts",
    "animations",
    "print proofs",
    "prototype",
    "content plan",
    "review notes",
    "export",
    "style notes",
)
VERBS = (
    "Draft",
    "Finalize",
    "Review",
    "Update",
    "Fix",
    "Export",
    "Polish",
    "Prepare",
    "Check",
    "Rework",
    "Proofread",
    "Archive",
    "Upload",
    "Simplify",
    "Redo",
    "Tidy up",
    "Resize",
    "Test",
    "Document",
    "Approve",
    "Sketch",
    "Compare options for",
    "Estimate",
    "Reorder",
)
QUALIFIERS = (
    "",
    "",
    "",
    "for mobile",
    "before handoff",
    "after the feedback round",
    "(round 2)",
    "(round 3)",
    "for print",
    "with final numbers",
    "in Figma",
    "for the German version",
    "for dark mode",
    "with the new logo",
    "for the client call",
    "before invoicing",
    "for accessibility",
    "in two sizes",
    "for the launch",
    "as PDF",
)
PERSON_TASKS = (
    "Send {person} the {item} {artifact}",
    "Ask {person} about the {item} {artifact}",
    "Follow up with {person} on the {item} {artifact}",
    "Go through {person}'s comments on the {item} {artifact}",
    "Book a call with {person} about the {item}",
    "Get sign-off from {person} on the {item} {artifact}",
)
MILESTONES = (
    "kickoff",
    "launch review",
    "first draft due",
    "client sign-off",
    "invoice sent",
    "handoff",
    "content freeze",
    "beta to testers",
    "feedback round",
    "print deadline",
    "go live",
    "retainer renewal",
    "photo shoot",
    "workshop",
    "final payment due",
)
MEETINGS = (
    "kickoff",
    "weekly sync",
    "design review",
    "feedback call",
    "check-in",
    "workshop",
    "planning",
    "retro",
    "status call",
    "content review",
)
SECTIONS = (
    "Notes",
    "Decisions",
    "Open questions",
    "Context",
    "Next steps",
    "Risks",
    "Feedback",
    "Ideas",
    "Summary",
    "Background",
)
SENTENCES = (
    "{person} asked whether the {item} {artifact} could be ready before the end of the month.",
    "We agreed to keep the {item} simple and to revisit the details after launch.",
    "The {item} {artifact} took longer than estimated, mostly because of back-and-forth.",
    "{person} liked the second option for the {item} but wants to see it with real content.",
    "Budget is still open; {person} will confirm with finance by {weekday}.",
    "I should block two hours on {weekday} for the {item} {artifact}.",
    "On small screens the current {item} still looks cramped.",
    "{person} mentioned that their customers often ask about the {item}.",
    "We looked at three competitors and none of them handles the {item} well.",
    "Scope creep again: the original estimate did not include the {item}.",
    "Everyone agreed we are close on the {item}, only small changes are left.",
    "{person} will send the missing {artifact} for the {item} by {weekday}.",
    "Hosting and domain renewals are due soon, worth mentioning on the next call.",
    "The deadline moved by a week, which gives room to polish the {item}.",
    "I need to charge for the extra revisions on the {item} {artifact}.",
    "The {project} timeline still looks realistic if feedback arrives on time.",
    "Feedback from {person} was mostly about tone, less about layout.",
    "Testing the {item} with five users showed that the labels confuse people.",
    "We dropped the idea of a separate {item} for now.",
    "{person} prefers fewer colors and more white space around the {item}.",
    "The old files for the {item} are in the shared drive, in a folder nobody remembers.",
    "Next time, ask for the {artifact} before starting on the {item}.",
    "Payment for the last invoice arrived, {number} days late.",
    "About {number} more hours for the {item}, fewer if {person} signs off the {artifact}.",
    "{person} forwarded an email from their boss with more changes to the {item}.",
    "Work on the {item} {artifact} is on hold until the new photos arrive.",
    "I sent a first version of the {item} {artifact} on {weekday} and have not heard back.",
    "{person} wants the {item} to feel friendlier, closer to the new brand.",
    "Invoicing this milestone separately keeps the {project} budget easier to follow.",
    "The printer needs the {item} {artifact} at least {number} days before the deadline.",
    "We spent most of the call on the {item}; the rest moves to next week.",
    "Nobody could say who owns the {item} on their side, {person} will find out.",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
# Where each kind of file lives, relative to its project ("" is the project folder).
NOTE_FOLDERS = ("", "", "notes", "notes", "research", "admin", "deliverables")
MEETING_FOLDERS = ("meetings", "meetings", "meetings/{year} Q{quarter}")
LOG_FOLDERS = ("", "meetings")
DESIGN_FOLDERS = ("design", "design/assets")
INVOICE_FOLDERS = ("admin", "admin/invoices")
DELIVERABLE_FOLDERS = ("deliverables", "deliverables/final", "research")
EXPORT_FOLDERS = ("", "exports", "admin")
START = date(2025, 6, 1)


@dataclass(frozen=True)
class TreeStats:
    """What `generate` wrote: files by kind (`KINDS`) and by extension, and their sizes."""

    files: dict[str, int]
    extensions: dict[str, int]
    total_bytes: int
    text_bytes: int  # of the .md and .txt files, what the agent reads

    @property
    def count(self) -> int:
        return sum(self.files.values())


@dataclass
class _Project:
    """One project of a client (`name` is "" for the work kept in the client folder itself)."""

    client: str
    name: str
    people: list[str]
    items: list[str]
    start: date
    days: int
    tasks: list[str] = field(default_factory=list)

    def folder(self) -> str:
        return f"{self.client}/{self.name}" if self.name else self.client


class _Writer:
    """Draws the content of one tree from one `random.Random`."""

    def __init__(self, root: Path, files: int, seed: int) -> None:
        self.root = root
        self.files = files
        self.rng = random.Random(seed)
        self.projects = self._projects(files)
        self.weights = [self.rng.uniform(0.3, 3.0) for _ in self.projects]
        self.inbox = _Project(INBOX, "", [], list(ITEMS), START, 365)
        self.titles: set[str] = set()
        self.paths: set[str] = set()
        self.folders: set[Path] = set()

    # ── Layout ───────────────────────────────────────────────────────────────

    def _projects(self, files: int) -> list[_Project]:
        rng = self.rng
        more = [f"{word} {trade}" for word in CLIENT_WORDS for trade in CLIENT_TRADES]
        clients = max(2, min(len(CLIENTS) + len(more), round(files / FILES_PER_CLIENT) + 2))
        names = [*CLIENTS[:clients], *rng.sample(more, max(0, clients - len(CLIENTS)))]
        projects: list[_Project] = []
        for client in names:
            count = rng.choice((1, 1, 2, 2, 3, 4, 5))
            for name in rng.sample(PROJECTS, count):
                start = START + timedelta(days=rng.randrange(300))
                people = rng.sample(PEOPLE, rng.randint(1, 3))
                items = rng.sample(ITEMS, rng.randint(6, 12))
                days = rng.randint(45, 240)
                projects.append(_Project(client, name, people, items, start, days))
                # A single-project client keeps some work in the client folder itself.
                if count == 1 and rng.random() < 0.5:
                    projects.append(_Project(client, "", people, items, start, days))
        return projects

    def _place(
        self, project: _Project, folders: Sequence[str], name: str, day: date | None = None
    ) -> str:
        """A path in one of `folders` no other file has (a second `a.md` there is `a 2.md`).

        `day` names a quarter folder (`meetings/2026 Q1`); a random one of the project if unset.
        """
        day = day or self._day(project)
        folder = self.rng.choice(folders).format(year=day.year, quarter=(day.month - 1) // 3 + 1)
        base = "/".join(p for p in (project.folder(), folder) if p)
        stem, dot, ext = name.rpartition(".")
        path, copy = f"{base}/{name}", 1
        while path.casefold() in self.paths:
            copy += 1
            path = f"{base}/{stem} {copy}{dot}{ext}"
        self.paths.add(path.casefold())
        return path

    def _day(self, project: _Project) -> date:
        return project.start + timedelta(days=self.rng.randrange(project.days))

    # ── Text ─────────────────────────────────────────────────────────────────

    def _task(self, project: _Project) -> str:
        """A task title: often one of the project's earlier ones, else a new one."""
        rng = self.rng
        if project.tasks and rng.random() < TASK_REUSE:
            return rng.choice(project.tasks)
        for _ in range(8):
            item, artifact = rng.choice(project.items), rng.choice(ARTIFACTS)
            if project.people and rng.random() < 0.25:
                title = rng.choice(PERSON_TASKS).format(
                    person=rng.choice(project.people), item=item, artifact=artifact
                )
            else:
                qualifier = rng.choice(QUALIFIERS)
                title = f"{rng.choice(VERBS)} the {item} {artifact} {qualifier}".rstrip()
            if title not in self.titles:
                break
        self.titles.add(title)
        project.tasks.append(title)
        return title

    def _todo_line(self, project: _Project) -> str:
        title = self._task(project)
        form = self.rng.random()
        if form < 0.35:
            return f"TODO: {title}"
        if form < 0.8:
            return f"- [ ] {title}"
        return f"- [x] {title}"

    def _dated_line(self, project: _Project) -> str:
        """`2026-04-01 launch review`, often with what or who it is about."""
        rng = self.rng
        line = f"{self._day(project).isoformat()} {rng.choice(MILESTONES)}"
        about = rng.random()
        if about < 0.45:
            return f"{line}: {rng.choice(project.items)}"
        if about < 0.6 and project.people:
            return f"{line} with {rng.choice(project.people)}"
        return line

    def _paragraph(self, project: _Project, sentences: int) -> str:
        """`sentences` different sentences about the project."""
        rng = self.rng
        people = project.people or ["I"]
        return " ".join(
            template.format(
                person=rng.choice(people),
                item=rng.choice(project.items),
                artifact=rng.choice(ARTIFACTS),
                project=project.name or project.client,
                weekday=rng.choice(WEEKDAYS),
                number=rng.randint(2, 30),
            )
            for template in rng.sample(SENTENCES, sentences)
        )

    def _section(self, project: _Project, heading: str, level: str = "##") -> list[str]:
        rng = self.rng
        lines = [f"{level} {heading}", "", self._paragraph(project, rng.randint(2, 6)), ""]
        if rng.random() < 0.4:
            lines += [self._paragraph(project, rng.randint(2, 5)), ""]
        return lines

    def _meeting(self, project: _Project, day: date, meeting: str, level: str) -> list[str]:
        rng = self.rng
        title = project.name or project.client
        lines = [f"{level} {day.isoformat()} {meeting} ({title})", ""]
        if project.people:
            lines += [f"Attendees: {', '.join(project.people)}, me", ""]
        sub = level + "#"
        for heading in rng.sample(SECTIONS, rng.randint(1, 3)):
            lines += self._section(project, heading, sub)
        lines += [f"{sub} Action items", ""]
        lines += [self._todo_line(project) for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.5:
            lines += ["", f"Next: {self._dated_line(project)}"]
        return [*lines, ""]

    def _note(self, project: _Project) -> tuple[str, str]:
        """A few-KB text note: its path and content."""
        rng = self.rng
        item = rng.choice(project.items)
        shape = rng.random()
        lines: list[str]
        if shape < 0.3:
            day, meeting = self._day(project), rng.choice(MEETINGS)
            name = f"{day.isoformat()} {meeting}.md"
            return self._place(project, MEETING_FOLDERS, name, day), _join(
                self._meeting(project, day, meeting, "#")
            )
        if shape < 0.5:
            name = rng.choice(("notes.md", f"{item} notes.md", "brief.md", f"{item}.md"))
            lines = [f"# {project.name or project.client}: {item}", ""]
            for heading in rng.sample(SECTIONS, rng.randint(2, 4)):
                lines += self._section(project, heading)
                if rng.random() < 0.5:
                    lines += [self._todo_line(project) for _ in range(rng.randint(1, 3))] + [""]
        elif shape < 0.65:
            name = rng.choice(("todo.txt", "TODO.txt", "tasks.txt", f"{item} todo.txt"))
            lines = [self._todo_line(project) for _ in range(rng.randint(3, 15))]
            if rng.random() < 0.5:
                lines += ["", self._paragraph(project, rng.randint(1, 3))]
        elif shape < 0.8:
            name = rng.choice(("checklist.md", "launch checklist.md", f"{item} checklist.md"))
            lines = [f"# {name.removesuffix('.md').capitalize()}", ""]
            for heading in rng.sample(
                ("Before", "During", "After", "Content", "Design", "Tech"), rng.randint(1, 3)
            ):
                lines += [f"## {heading}", ""]
                lines += [self._todo_line(project) for _ in range(rng.randint(2, 8))] + [""]
        elif shape < 0.88:
            name = rng.choice(("timeline.md", "dates.txt", "schedule.md"))
            lines = [f"# Timeline: {project.name or project.client}", ""]
            dated = sorted(self._dated_line(project) for _ in range(rng.randint(3, 10)))
            lines += [f"- {line}" if name.endswith(".md") else line for line in dated]
            if rng.random() < 0.5:
                lines += ["", self._paragraph(project, rng.randint(1, 3))]
        else:
            name = rng.choice(("ideas.txt", "scratch.txt", f"{item}.txt", "call notes.txt"))
            lines = [self._paragraph(project, rng.randint(1, 4)), ""]
            lines += [self._todo_line(project) for _ in range(rng.randint(0, 3))]
            if rng.random() < 0.5:
                lines += [self._dated_line(project)]
        return self._place(project, NOTE_FOLDERS, name), _join(lines)

    def _long_log(self, project: _Project) -> tuple[str, str]:
        """A ~200 KB log of many meetings, one after the other."""
        rng = self.rng
        size = rng.randint(*LONG_BYTES)
        name = rng.choice(
            (
                f"meeting log {project.start.year}.md",
                "standup log.txt",
                "call notes.md",
                "weekly syncs.md",
            )
        )
        lines = [f"# {name.rsplit('.', 1)[0].capitalize()}: {project.name or project.client}", ""]
        day, written = project.start, 0
        while written < size:
            day += timedelta(days=rng.randint(1, 7))
            meeting = self._meeting(project, day, rng.choice(MEETINGS), "##")
            lines += meeting
            written += sum(len(line) + 1 for line in meeting)
        return self._place(project, LOG_FOLDERS, name), _join(lines)

    # ── Other files ──────────────────────────────────────────────────────────

    def _binary(self, project: _Project) -> tuple[str, bytes]:
        """A picture or a PDF: its magic number, then random bytes."""
        rng = self.rng
        item, day = rng.choice(project.items), self._day(project)
        choices: list[tuple[str, tuple[str, ...]]] = [
            (f"{item} mockup v{rng.randint(1, 6)}.png", DESIGN_FOLDERS),
            (f"screenshot {day.isoformat()}.png", ("", *DESIGN_FOLDERS)),
            (f"{item}.png", DESIGN_FOLDERS),
            (f"invoice {rng.randint(1000, 9999)}.pdf", INVOICE_FOLDERS),
            ("contract signed.pdf", INVOICE_FOLDERS),
            (f"{item} spec.pdf", DELIVERABLE_FOLDERS),
            (f"{item} proof.pdf", DELIVERABLE_FOLDERS),
        ]
        name, folders = rng.choice(choices)
        head = b"\x89PNG\r\n\x1a\n" if name.endswith(".png") else b"%PDF-1.4\n"
        data = head + rng.randbytes(rng.randint(2_000, 60_000))
        return self._place(project, folders, name, day), data

    def _excluded(self, project: _Project) -> tuple[str, bytes]:
        """A file of an extension the agent skips by default: .docx, .json or .log."""
        rng = self.rng
        item, day = rng.choice(project.items), self._day(project)
        ext = rng.choice(("docx", "json", "log"))
        folders: tuple[str, ...]
        if ext == "docx":
            name = rng.choice((f"{item} brief.docx", f"proposal v{rng.randint(1, 4)}.docx"))
            folders = ("", *DELIVERABLE_FOLDERS)
            data = b"PK\x03\x04" + rng.randbytes(rng.randint(5_000, 40_000))
        elif ext == "json":
            name = rng.choice((f"export {day.isoformat()}.json", "settings.json", f"{item}.json"))
            folders = EXPORT_FOLDERS
            # A TODO in a skipped file: the agent must not see it.
            record = {
                "client": project.client,
                "item": item,
                "note": self._todo_line(project),
                "updated": day.isoformat(),
                "values": [rng.randint(0, 999) for _ in range(20)],
            }
            data = json.dumps(record, indent=2).encode()
        else:
            name = rng.choice((f"sync {day.isoformat()}.log", "build.log", "upload.log"))
            folders = EXPORT_FOLDERS
            lines = [
                f"{day.isoformat()}T{rng.randint(0, 23):02}:{rng.randint(0, 59):02}:00 INFO "
                f"uploaded {rng.choice(project.items)} ({rng.randint(1, 900)} KB)"
                for _ in range(rng.randint(10, 200))
            ]
            data = _join(lines).encode()
        return self._place(project, folders, name, day), data

    # ── The tree ─────────────────────────────────────────────────────────────

    def write(self) -> TreeStats:
        rng, files = self.rng, self.files
        binaries = round(files * BINARY_SHARE)
        excluded = round(files * EXCLUDED_SHARE)
        long_texts = round((files - binaries - excluded) * LONG_SHARE)
        kinds = [BINARY] * binaries + [EXCLUDED] * excluded + [LONG_TEXT] * long_texts
        kinds += [TEXT] * (files - len(kinds))
        rng.shuffle(kinds)
        by_kind: Counter[str] = Counter()
        by_extension: Counter[str] = Counter()
        total = text = 0
        for kind in kinds:
            project = rng.choices(self.projects, self.weights)[0]
            if kind == TEXT and rng.random() < 0.03:
                project = self.inbox
            data: bytes
            if kind == TEXT:
                path, content = self._note(project)
                data = content.encode()
            elif kind == LONG_TEXT:
                path, content = self._long_log(project)
                data = content.encode()
            elif kind == BINARY:
                path, data = self._binary(project)
            else:
                path, data = self._excluded(project)
            target = self.root / path
            if target.parent not in self.folders:
                target.parent.mkdir(parents=True, exist_ok=True)
                self.folders.add(target.parent)
            target.write_bytes(data)
            by_kind[kind] += 1
            by_extension[target.suffix] += 1
            total += len(data)
            if kind in (TEXT, LONG_TEXT):
                text += len(data)
        return TreeStats(
            files={k: by_kind[k] for k in KINDS},
            extensions=dict(sorted(by_extension.items())),
            total_bytes=total,
            text_bytes=text,
        )


def _join(lines: list[str]) -> str:
    return "\n".join(lines).rstrip("\n") + "\n"


def generate(root: Path, files: int, seed: int = 0) -> TreeStats:
    """Write a tree of `files` files under `root` (absent or empty); same seed, same tree."""
    if files < 0:
        raise ValueError(f"files must be at least 0, not {files}")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    root.mkdir(parents=True, exist_ok=True)
    return _Writer(root, files, seed).write()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.trees", description=__doc__.split("\n")[0]
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="absent or empty folder")
    parser.add_argument("--files", type=int, required=True, metavar="N", help="files to write")
    parser.add_argument("--seed", type=int, default=0, metavar="S")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    stats = generate(args.out_dir, args.files, args.seed)
    seconds = time.perf_counter() - started
    kinds = ", ".join(f"{kind} {count}" for kind, count in stats.files.items())
    print(f"{stats.count} files in {args.out_dir} ({kinds}) in {seconds:.2f} s")
    print(f"{stats.total_bytes:,} bytes, {stats.text_bytes:,} of them in .md and .txt files")


if __name__ == "__main__":
    main()
