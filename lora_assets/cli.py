"""`lora-assets`: manage subjects, inspect settings, and run the demo outside the Dagster UI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lora_assets.stages import STAGES
from lora_assets.subjects import IMAGE_EXTENSIONS, InvalidSubjectName, list_photo_files, validate_subject_name

if TYPE_CHECKING:
    from lora_assets.images.dedup import DedupResult

SAMPLE_SUBJECT = "sample"
DAGSTER_HOME_DIR = ".dagster_home"
STARTER_SETTINGS = """\
# Settings for this subject; every key is optional. `lora-assets settings show {name}` prints
# the effective values of every stage. Tables: [ingest] [dedup] [filter] [captions] [dataset] [training].
class_token = "man"
trigger = "{name}"
"""


def _layout(data_root: str | None):  # noqa: ANN202 - keep --help fast
    """The data root as it is (a URL root is listed and read in place)."""
    from lora_assets.layout import default_data_root, view_layout

    return view_layout(data_root or default_data_root())


def ensure_dagster_home() -> Path:
    """`$DAGSTER_HOME`, defaulting to `./.dagster_home` linked to the project's `dagster.yaml`."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / DAGSTER_HOME_DIR))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config, project_config = home / "dagster.yaml", Path.cwd() / "dagster.yaml"
    if not config.exists() and project_config.exists():
        config.symlink_to(project_config.resolve())
    return home


def register_subjects(names: list[str]) -> list[str]:
    """Add missing subject partitions to the instance at `$DAGSTER_HOME`; returns the added ones."""
    import dagster as dg

    from lora_assets.partitions import SUBJECTS_PARTITION

    with dg.DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions(SUBJECTS_PARTITION))
        added = [name for name in names if name not in known]
        if added:
            instance.add_dynamic_partitions(SUBJECTS_PARTITION, added)
    return added


@click.group()
@click.option(
    "--data-root",
    envvar="LORA_ASSETS_DATA_ROOT",
    default=None,
    help="Data root (default: $LORA_ASSETS_DATA_ROOT or ./data).",
)
@click.pass_context
def main(ctx: click.Context, data_root: str | None) -> None:
    """Turn folders of photos into Stable Diffusion LoRAs (Dagster assets, partitioned per subject)."""
    ctx.obj = {"data_root": data_root}


@main.group()
def subjects() -> None:
    """Create, list and register subjects (one folder and one partition each)."""


@subjects.command("add")
@click.argument("name")
@click.option("--from", "source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.pass_context
def subjects_add(ctx: click.Context, name: str, source: Path | None) -> None:
    """Create subjects/NAME/ (and copy photos and caption .txt files in from --from DIR)."""
    try:
        validate_subject_name(name)
    except InvalidSubjectName as exc:
        raise click.UsageError(str(exc)) from None
    layout = _layout(ctx.obj["data_root"])
    images = layout.images_dir(name)
    images.mkdir(parents=True, exist_ok=True)
    settings = layout.settings_file(name)
    if not settings.exists():
        settings.write_text(STARTER_SETTINGS.format(name=name), encoding="utf-8")
    copied = skipped = 0
    if source:
        for path in sorted(source.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS | {".txt"}:
                continue
            target = images / path.relative_to(source)
            if target.exists():
                skipped += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if getattr(target, "protocol", "") in ("", "file", "local"):
                shutil.copy2(path, target)
            else:
                target.write_bytes(path.read_bytes())  # object storage: one atomic PUT
            copied += 1
    click.echo(f"subject {name}: {images} ({copied} files copied, {skipped} already there)")
    if os.environ.get("DAGSTER_HOME"):
        if register_subjects([name]):
            click.echo(f"registered partition {name!r} in {os.environ['DAGSTER_HOME']}")
    else:
        click.echo("set DAGSTER_HOME and run `lora-assets subjects sync` (or let the sensor) register it")


@subjects.command("sync")
@click.pass_context
def subjects_sync(ctx: click.Context) -> None:
    """Register every subject folder as a partition in $DAGSTER_HOME's instance."""
    if not os.environ.get("DAGSTER_HOME"):
        raise click.UsageError("DAGSTER_HOME is not set: there is no instance to register subjects in")
    layout = _layout(ctx.obj["data_root"])
    _warn_invalid_folders(layout)
    names = layout.subject_names()
    added = register_subjects(names)
    click.echo(f"{len(names)} subject folders; registered {len(added)} new: {', '.join(added) or '-'}")


@subjects.command("list")
@click.pass_context
def subjects_list(ctx: click.Context) -> None:
    """Subject folders, their photo counts, and whether the instance knows them."""
    layout = _layout(ctx.obj["data_root"])
    registered: set[str] | None = None
    if os.environ.get("DAGSTER_HOME"):
        import dagster as dg

        from lora_assets.partitions import SUBJECTS_PARTITION

        with dg.DagsterInstance.get() as instance:
            registered = set(instance.get_dynamic_partitions(SUBJECTS_PARTITION))
    _warn_invalid_folders(layout)
    for name in layout.subject_names():
        photos = len(list_photo_files(layout.images_dir(name)))
        state = "" if registered is None else ("registered" if name in registered else "not registered")
        click.echo(f"{name}\t{photos} photos\t{state}".rstrip())


def _warn_invalid_folders(layout: Any) -> None:
    for folder in layout.invalid_subject_folders():
        click.echo(f"warning: subjects/{folder!r} is not a subject: {InvalidSubjectName.RULE}", err=True)


@main.group()
def settings() -> None:
    """Inspect per-subject settings."""


@settings.command("show")
@click.argument("name")
@click.pass_context
def settings_show(ctx: click.Context, name: str) -> None:
    """Print NAME's effective settings (defaults + subject.toml) and each stage's settings version."""
    import tomli_w

    from lora_assets.settings import SettingsError, load_subject_settings

    layout = _layout(ctx.obj["data_root"])
    try:
        loaded = load_subject_settings(layout.settings_file(name), validate_subject_name(name))
    except (SettingsError, InvalidSubjectName) as exc:
        raise click.ClickException(str(exc)) from None
    document = _drop_none(loaded.model_dump(mode="json"))
    click.echo(f"# {layout.settings_file(name)}")
    for stage in STAGES:
        click.echo(f"# {stage} settings version: {loaded.stage_version(stage)}")
    click.echo("# keys not shown are unset (None)")
    click.echo(tomli_w.dumps(document))


def _drop_none(value: object) -> object:
    """TOML has no null: unset options are left out of the printed document."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--similarity", default="medium", show_default=True, help="low, medium, high, or a number 0.5-1."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Processes (default: all cores).")
@click.option("--crop-tolerant/--no-crop-tolerant", default=True, show_default=True)
@click.option("--drop-similar", is_flag=True, help="Also group similar shots (bursts, brackets).")
def dedup(
    directory: Path,
    similarity: str,
    as_json: bool,
    workers: int | None,
    crop_tolerant: bool,
    drop_similar: bool,
) -> None:
    """Find near-duplicates under DIRECTORY (recursively) and say which copy to keep. Touches nothing."""
    import json

    from lora_assets.images.forkserver import start_early

    if (workers or os.cpu_count() or 1) > 1:
        start_early()  # it imports the image stack while this process does
    from lora_assets.images.dedup import Deduplicator
    from lora_assets.images.rules import MAX_PIXELS, DedupRules, parse_similarity, similarity_threshold
    from lora_assets.images.workers import Photo

    try:
        threshold = similarity_threshold(parse_similarity(similarity))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--similarity") from None
    rules = DedupRules(threshold=threshold, crop_tolerant=crop_tolerant, drop_similar=drop_similar)
    files = list_photo_files(directory)
    photos = [Photo(f.relpath, f.path) for f in files]
    with ProgressBars() as progress:
        result = Deduplicator(rules, MAX_PIXELS, workers, progress=progress).run(photos)
    if as_json:
        click.echo(json.dumps(dedup_document(result, directory), indent=2))
    else:
        echo_dedup_table(result, directory, len(files))


class ProgressBars:
    """One `tqdm` bar per stage of a `(stage, done, total)` progress callback, on stderr."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage not in self.bars:
            unit = "pair" if stage.startswith("verifying") else "img"
            self.bars[stage] = tqdm(total=total, desc=stage, unit=unit, leave=False)
        self.bars[stage].update(done - self.bars[stage].n)

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars.values():
            bar.close()


def dedup_document(result: DedupResult, directory: Path) -> dict[str, Any]:
    """`lora-assets dedup --json`: groups (keep, drop, reason, scores), unique, similar, rejected."""

    def shown(key: str) -> str:
        return str(directory / key)

    return {
        "groups": [
            {
                "keep": shown(group.kept[0]),
                "drop": [shown(key) for key in group.dropped],
                "reason": group.reason,
                "reasons": {shown(key): group.reasons[key] for key in [*group.kept, *group.dropped]},
                "scores": {shown(key): value for key, value in group.scores.items()},
            }
            for group in result.groups
        ],
        "unique": [shown(key) for key in result.unique],
        "similar": [{**pair, "a": shown(pair["a"]), "b": shown(pair["b"])} for pair in result.similar],
        "rejected": [{"path": shown(r["path"]), "error": r["error"]} for r in result.rejected],
        "seconds": result.seconds,
    }


def echo_dedup_table(result: DedupResult, directory: Path, files: int) -> None:
    """`lora-assets dedup` without --json: one line per decision, then a summary."""
    for number, group in enumerate(result.groups, 1):
        click.echo(f"group {number}: keep {directory / group.kept[0]}  ({group.reason})")
        for key in group.dropped:
            click.echo(f"    drop {directory / key}  ({group.reasons[key].removeprefix('dropped: ')})")
    for pair in result.similar:
        a, b = directory / pair["a"], directory / pair["b"]
        click.echo(f"similar (review): {a} ~ {b}  (colour {pair['colour']:.2f})")
    for rejected in result.rejected:
        click.echo(f"rejected: {directory / rejected['path']}: {rejected['error']}")
    dropped = sum(len(g.dropped) for g in result.groups)
    click.echo(
        f"{files} files: {len(result.groups)} duplicate groups, {dropped} to drop, "
        f"{len(result.unique)} unique, {len(result.similar)} similar pairs, {len(result.rejected)} rejected"
    )


@main.group()
def models() -> None:
    """Offline models for tests and the demo."""


@models.command("tiny")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the models (default: <data root>/models).",
)
@click.option("--force", is_flag=True, help="Rebuild even if present.")
@click.pass_context
def models_tiny(ctx: click.Context, out: Path | None, force: bool) -> None:
    """Build tiny random models of the real classes (their outputs are noise, not useful models)."""
    root = _layout(ctx.obj["data_root"]).root
    if out is None and getattr(root, "protocol", "") not in ("", "file", "local"):
        raise click.UsageError("the data root is a URL: give a local folder with --out")
    built = build_tiny_models(out or root / "models", force)
    for name, path in built.items():
        click.echo(f"{name}: {path}")


def build_tiny_models(folder: Path, force: bool = False) -> dict[str, Path]:
    """The tiny BLIP and SD 1.5-style pipeline under `folder`, built if missing."""
    from lora_assets.models.tiny import build_tiny_blip, build_tiny_sd

    blip, sd = folder / "tiny-blip", folder / "tiny-sd"
    if force or not (blip / "config.json").exists():
        build_tiny_blip(blip)
    if force or not (sd / "tiny-sd.safetensors").exists():
        build_tiny_sd(sd)
    return {"tiny-blip": blip, "tiny-sd (diffusers folder and single file)": sd}


@main.command()
@click.option("--subject", default=SAMPLE_SUBJECT, show_default=True)
def demo(subject: str) -> None:
    """Register the sample subject and materialize every asset for it through Dagster (SQLite instance)."""
    home = ensure_dagster_home()
    click.echo(f"DAGSTER_HOME={home}")
    layout = _layout(None)
    if subject not in layout.subject_names():
        raise click.ClickException(f"no subject folder {layout.subject_dir(subject)}")
    register_subjects([subject])
    for name, path in build_tiny_models(layout.root / "models").items():
        click.echo(f"offline model {name}: {path}")
    dagster = [sys.executable, "-m", "dagster"]
    module = ["-m", "lora_assets.definitions"]
    steps = [
        [*dagster, "job", "execute", *module, "-j", "observe_subject_inputs"],
        [*dagster, "asset", "materialize", *module, "--select", "*", "--partition", subject],
    ]
    for step in steps:
        click.echo("$ " + " ".join(step[1:]))
        if subprocess.run(step, check=False).returncode != 0:
            raise click.ClickException(f"step failed: {' '.join(step[2:])}")
    click.echo(f"done: outputs under {layout.root / 'work' / subject}; open the UI with `make dev`")


if __name__ == "__main__":
    main()
