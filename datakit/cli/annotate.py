"""``datakit annotate``: the annotation app for an in-house crowd."""
from __future__ import annotations

import ipaddress

import click

__all__ = ["annotate"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def annotate() -> None:
    """Serve annotation tasks to an in-house crowd."""


@annotate.command("serve")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (loopback by default; 0.0.0.0 exposes the app to the network).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free port).")
def serve_cmd(dataset: str, host: str, port: int) -> None:
    """Serve DATASET's tasks (tasks.parquet) in the browser; votes go to DATASET/votes.sqlite.

    Create tasks first with `datakit crowd tasks DATASET`; afterwards, pull the
    votes into annotations.parquet with `datakit crowd import DATASET --from app`.
    """
    from datakit.crowd.app import make_server

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        click.echo(f"warning: binding {host}: anyone who can reach this machine can vote (no authentication)", err=True)
    try:
        server = make_server(dataset, host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
    bound_host, bound_port = server.server_address[:2]
    app = server.app
    click.echo(f"Serving {len(app.tasks)} tasks of {dataset} at http://{bound_host}:{bound_port}/ "
               f"(votes in {app.db.path}); Ctrl-C to stop.", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.server_close()
