"""``datakit annotate``: the annotation app for an in-house crowd."""
from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import click

__all__ = ["annotate"]

_DATASET = click.argument("dataset", type=click.Path(exists=True, file_okay=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def annotate() -> None:
    """Serve annotation tasks to an in-house crowd: invite workers, serve, watch, revoke."""


def _store(dataset: str):
    from datakit.crowd.credentials import CredentialStore
    from datakit.crowd.db import DB_FILE

    return CredentialStore(Path(dataset) / DB_FILE)


def _link(url: str, token: str) -> str:
    return f"{url.rstrip('/')}/join?token={token}"


def _read_csv_workers(path: str) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if not rows:
        raise click.ClickException(f"{path} has no workers: give one name a line, or a 'worker' column")
    header = [c.strip().lower() for c in rows[0]]
    col = header.index("worker") if "worker" in header else None
    if col is None:
        return [r[0].strip() for r in rows]
    return [r[col].strip() for r in rows[1:] if len(r) > col and r[col].strip()]


@annotate.command("invite")
@_DATASET
@click.option("--workers", default="", help="Comma-separated worker names, e.g. alice,bob.")
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False),
              help="A CSV with a 'worker' column (or one name a line).")
@click.option("--operator", is_flag=True, help="Also make a new operator link (the previous one stops working).")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="The address workers will open (the host and port you will serve on).")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Also write worker,link to this CSV (readable by you only).")
def invite_cmd(dataset: str, workers: str, csv_path: str | None, operator: bool, url: str, out: str | None) -> None:
    """Invite workers to DATASET's app: print one secret link per worker.

    Only a hash of each secret is kept (in DATASET/votes.sqlite), so the links
    are shown only now. Inviting a worker again replaces their link. Once
    anyone is invited, the app requires a link's credential for every call.
    """
    from datakit.store.atomic import atomic_write_text

    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http(s) address, e.g. http://10.0.0.5:8000",
                                 param_hint="--url")
    names = [w.strip() for w in workers.split(",") if w.strip()]
    if csv_path:
        names += _read_csv_workers(csv_path)
    if not names and not operator:
        raise click.UsageError("name the workers: --workers alice,bob or --csv FILE (or --operator)")
    store = _store(dataset)
    try:
        tokens = store.invite(names) if names else {}
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    links = {w: _link(url, t) for w, t in tokens.items()}
    if operator:
        links["operator"] = _link(url, store.operator())
    for w, link in links.items():
        click.echo(f"{w}\t{link}")
    if out:
        lines = ["worker,link"] + [f"{w},{link}" for w, link in links.items()]
        atomic_write_text(out, "\n".join(lines) + "\n")
        os.chmod(out, 0o600)
    click.echo(f"invited {len(tokens)} worker(s){' and the operator' if operator else ''}; only hashes are kept in "
               f"{store.path}, so these links are shown only now. Send each person their own link.", err=True)


@annotate.command("revoke")
@_DATASET
@click.option("--worker", "names", multiple=True, required=True, help="Worker whose link stops working (repeatable).")
def revoke_cmd(dataset: str, names: tuple[str, ...]) -> None:
    """End workers' invitations: their links stop working at once (their votes are kept)."""
    store = _store(dataset)
    invited = store.workers()
    for name in names:
        if not store.revoke(name):
            active = ", ".join(w for w, revoked in invited.items() if not revoked) or "none"
            raise click.ClickException(f"{name!r} has no active invitation (active: {active})")
        click.echo(f"revoked {name}: their link no longer works; their votes are kept", err=True)


@annotate.command("unpause")
@_DATASET
@click.option("--worker", "names", multiple=True, required=True, help="Paused worker to let back in (repeatable).")
def unpause_cmd(dataset: str, names: tuple[str, ...]) -> None:
    """Let workers paused for failing check items annotate again (their votes stop being flagged)."""
    from datakit.crowd.db import DB_FILE, VoteDB

    db = VoteDB(Path(dataset) / DB_FILE)
    for name in names:
        if not db.unpause(name):
            raise click.ClickException(f"{name!r} is not paused (paused: {', '.join(db.paused()) or 'none'})")
        click.echo(f"unpaused {name}", err=True)


@annotate.command("serve")
@_DATASET
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (loopback by default; 0.0.0.0 exposes the app to the network and needs invitations).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free port).")
@click.option("--pause-below", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="Pause workers whose share of correct check (gold) items falls below this; 0: never.")
@click.option("--min-gold", type=click.IntRange(1), default=6, show_default=True,
              help="Check items a worker must have answered before they can be paused.")
@click.option("--rate", type=click.FloatRange(0), default=10.0, show_default=True,
              help="API requests a second per worker (token bucket; 0: no limit).")
@click.option("--burst", type=click.IntRange(1), default=40, show_default=True, help="Requests allowed back to back.")
@click.option("--max-body", type=click.IntRange(1), default=1 << 20, show_default=True, help="Largest request body (bytes).")
def serve_cmd(dataset: str, host: str, port: int, pause_below: float, min_gold: int, rate: float, burst: int,
              max_body: int) -> None:
    """Serve DATASET's tasks (tasks.parquet) in the browser; votes go to DATASET/votes.sqlite.

    Create tasks first with `datakit crowd tasks DATASET` and invite workers
    with `datakit annotate invite DATASET --workers alice,bob`; new rounds
    (`crowd tasks --needing-votes`) are served without a restart. Afterwards,
    pull the votes into annotations.parquet with `datakit crowd import DATASET --from app`.
    """
    from datakit.crowd.app import AnnotateServer, AnnotationApp
    from datakit.crowd.app.auth import is_loopback

    app = AnnotationApp(dataset, pause_below=pause_below or None, min_gold=min_gold)
    creds = app.credentials
    invited = creds.workers()
    if not invited and not is_loopback(host):
        raise click.ClickException(
            f"refusing to serve {host} without invitations: anyone who can reach it could vote under any name. "
            f"Invite workers first (`datakit annotate invite {dataset} --workers alice,bob --url http://HOST:{port}`), "
            "or serve on 127.0.0.1 for yourself.")
    try:
        server = AnnotateServer(app, host, port, max_body=max_body, rate=rate or None, burst=burst)
    except OSError as exc:
        raise click.ClickException(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    reach = socket.gethostname() if bound_host in ("0.0.0.0", "::") else shown  # an address a browser can open
    click.echo(f"Serving {len(app.tasks)} tasks of {dataset} at http://{shown}:{bound_port}/ "
               f"(votes in {app.db.path}); Ctrl-C to stop.", err=True)
    if invited:
        active = sum(not r for r in invited.values())
        click.echo(f"Invitations: {active} active worker link(s), {len(invited) - active} revoked; every call needs a "
                   "link's credential.", err=True)
        if not creds.has_operator():
            click.echo(f"Operator page (keep this link to yourself): "
                       f"http://{reach}:{bound_port}/join?token={creds.operator()}", err=True)
        else:
            click.echo("Operator page: open your operator link (new one: "
                       f"`datakit annotate invite {dataset} --operator`).", err=True)
    else:
        click.echo(f"Open mode: no invitations, so anyone on THIS machine can vote under any name they type; "
                   f"fine for one person. For a crowd: `datakit annotate invite {dataset} --workers ...`. "
                   f"Operator page: http://{shown}:{bound_port}/operator", err=True)
    if app.pause_below is not None:
        click.echo(f"Workers below {app.pause_below:.0%} on check items (after {min_gold}) are paused.", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        click.echo("stopped", err=True)
