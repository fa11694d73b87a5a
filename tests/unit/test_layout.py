"""The project's layout rule (STYLE.md: one responsibility per module, split before 500 lines):
no Python module of the project's packages, its tests or its benchmarks is over 500 lines.
A failure names every module over the limit and its length."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "consent", "audit", "adapters", "projections", "exchange", "tests", "bench")
LIMIT = 500


def modules(root: Path = ROOT) -> list[Path]:
    """Every .py file under the project's top-level packages, tests and benchmarks."""
    return sorted(
        path
        for package in PACKAGES
        for path in (root / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def over_limit(paths: list[Path], root: Path = ROOT, limit: int = LIMIT) -> list[str]:
    """Each module longer than ``limit`` lines, as 'path (n lines)' relative to ``root``."""
    return [
        f"{path.relative_to(root)} ({n} lines)" for path in paths if (n := line_count(path)) > limit
    ]


def test_no_module_is_over_500_lines() -> None:
    long = over_limit(modules())
    assert not long, (
        f"split these modules, each over {LIMIT} lines, into modules named for "
        f"what they hold: {', '.join(long)}"
    )


def test_the_walk_finds_every_package_and_this_file() -> None:
    # A walk that found nothing would pass the rule above without checking anything.
    found = modules()
    assert Path(__file__).resolve() in found
    assert {path.relative_to(ROOT).parts[0] for path in found} == set(PACKAGES)


def test_a_module_over_the_limit_is_named_with_its_length(tmp_path: Path) -> None:
    # 500 lines is within the limit; 501 is not, and the message says which file and how long.
    (tmp_path / "bench").mkdir()
    (tmp_path / "domain" / "deep").mkdir(parents=True)
    (tmp_path / "bench" / "fits.py").write_text("x = 1\n" * LIMIT, encoding="utf-8")
    (tmp_path / "domain" / "deep" / "long.py").write_text("x = 1\n" * (LIMIT + 1), encoding="utf-8")
    (tmp_path / "domain" / "__pycache__").mkdir()
    (tmp_path / "domain" / "__pycache__" / "cached.py").write_text("x = 1\n" * 900)
    assert over_limit(modules(tmp_path), root=tmp_path) == [
        str(Path("domain", "deep", "long.py")) + " (501 lines)"
    ]
