"""``loom image build``, ``loom get image``, ``loom delete image``: task images' environments
on the server (see ``loom.server._environments``)."""

from __future__ import annotations

import click

from .. import wire
from .._controller._remote import image_spec
from .._environment import TaskEnvironment
from .._image import current_python
from ..errors import LoomError
from ._common import call_server, settings_for, when
from ._loader import load_module
from ._logs import parse_since
from ._output import Column, OutputFormat, console, emit, output_option, print_table

IMAGE_COLUMNS = (
    Column("KEY", key=True),
    Column("PYTHON", drop_order=3),
    Column("PACKAGES", drop_order=2, min_width=24),
    Column("SIZE", drop_order=4),
    Column("BUILT", drop_order=1),
    Column("LAST USED", drop_order=0),
)


@click.group()
def image() -> None:
    """Task images: the Python environments the server builds for them."""


@image.command("build")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("environments", nargs=-1)
@output_option
def build_image(file: str, environments: tuple[str, ...], output: OutputFormat) -> None:
    """Build on the server, ahead of any run, the environments of the images that FILE's
    task environments declare (all of them, or those named ENVIRONMENTS), and print each
    one's key and size. An environment built already is reused as it is."""
    found = _environments(file)
    unknown = sorted(set(environments) - set(found))
    if unknown:
        raise click.ClickException(
            f"{file} has no task environment {', '.join(map(repr, unknown))}; it has "
            f"{', '.join(map(repr, sorted(found))) or 'none'}"
        )
    wanted: list[tuple[str, wire.ImageSpec]] = []
    skipped: list[str] = []
    for name in environments or sorted(found):
        spec = image_spec(found[name].image)
        # (the server runs the Python this CLI does, as ``loom run --remote`` assumes)
        if spec is None or not wire.needs_environment(spec, current_python()):
            skipped.append(name)
            continue
        parts = wire.container_parts(spec)
        if parts:
            raise click.ClickException(
                f"the image of {name!r} needs a container for {', '.join(parts)}: a loom "
                "server builds Python environments only"
            )
        wanted.append((name, spec))
    infos: list[wire.ImageInfo] = []
    if wanted:
        with console(stderr=True).status(
            f"building {len(wanted)} environment(s) on the server (uv's output goes to the "
            "server's environments directory)"
        ):
            infos = call_server(settings_for(), lambda c: c.build_images([s for _, s in wanted]))
    rows = list(zip([n for n, _ in wanted], infos, strict=True))
    if output.for_scripts:
        emit(
            [{"environment": name, **info.model_dump(mode="json")} for name, info in rows]
            + [{"environment": name, "key": None} for name in skipped],
            output,
        )
        return
    for name, info in rows:
        click.echo(f"{name}: environment {info.key}, {_size(info.size_bytes)}")
    for name in skipped:
        click.echo(f"{name}: no image to build (it runs in the server's own environment)")


@image.command("dockerfile")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("environment")
def image_dockerfile(file: str, environment: str) -> None:
    """Print a Dockerfile that builds the image of FILE's task environment ENVIRONMENT whole,
    container parts included (base image, Debian packages, commands), for Docker, Podman or
    Buildah. It needs no build context; the loom runtime comes from the package index."""
    from .._dockerfile import dockerfile

    found = _environments(file)
    if environment not in found:
        raise click.ClickException(
            f"{file} has no task environment {environment!r}; it has "
            f"{', '.join(map(repr, sorted(found))) or 'none'}"
        )
    spec = image_spec(found[environment].image) or wire.ImageSpec(python=current_python())
    click.echo(dockerfile(spec), nl=False)


def _environments(file: str) -> dict[str, TaskEnvironment]:
    """The task environments a file defines or imports, by name."""
    try:
        module = load_module(file)
    except LoomError as e:
        raise click.ClickException(str(e)) from e
    return {v.name: v for v in vars(module).values() if isinstance(v, TaskEnvironment)}


@click.command("image")
@output_option
def get_image(output: OutputFormat) -> None:
    """List the image environments built on the server, newest first."""
    infos = call_server(settings_for(), lambda c: c.list_images())
    if output.for_scripts:
        emit(infos, output)
        return
    if not infos:
        click.echo(
            "No image environments are built on this server yet: the first run of a task "
            "whose image adds packages builds one, or `loom image build FILE`."
        )
        return
    print_table(
        IMAGE_COLUMNS,
        [
            [
                i.key,
                i.python,
                ", ".join([*i.packages, *(f"-r {r}" for r in i.requirements)]),
                _size(i.size_bytes),
                when(i.built_at),
                when(i.last_used_at) or "never",
            ]
            for i in infos
        ],
    )


@click.command("image")
@click.argument("key", required=False)
@click.option(
    "--unused-for", metavar="DURATION",
    help="Instead of KEY: every environment no action has used for that long (30d, 12h).",
)  # fmt: skip
@output_option
def delete_image(key: str | None, unused_for: str | None, output: OutputFormat) -> None:
    """Delete the image environment KEY, or those unused for a while (an admin's job; the
    next action that needs one builds it again). Delete environments no running action uses."""
    if (key is None) == (unused_for is None):
        raise click.UsageError("give an environment's KEY (`loom get image`), or --unused-for")
    if unused_for is not None:
        cutoff = parse_since(unused_for, "--unused-for")
        gone = call_server(settings_for(), lambda c: c.prune_images(cutoff))
        if output.for_scripts:
            emit(gone, output)
        else:
            for info in gone:
                click.echo(f"deleted image environment {info.key} ({_size(info.size_bytes)})")
            if not gone:
                click.echo(f"no image environment has gone unused for {unused_for}")
        return
    assert key is not None
    call_server(settings_for(), lambda c: c.delete_image(key))
    if output.for_scripts:
        emit({"deleted": "image", "key": key}, output)
    else:
        click.echo(f"deleted image environment {key}")


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
