"""``datakit wordnet``: which WordNet datakit uses, and where it is."""
from __future__ import annotations

import click
import pandas as pd

from datakit.cli._options import emit_table, format_option

__all__ = ["wordnet"]


@click.group(help="""WordNet provisioning (nltk's WordNet 3.0 corpus).

datakit uses nltk's WordNet if nltk finds one; else it copies Debian's
/usr/share/wordnet (packages wordnet-base, wordnet-sense-index) into its cache
($DATAKIT_CACHE, else $XDG_CACHE_HOME/datakit, else ~/.cache/datakit) and adds
the lexnames file; else it runs nltk.download("wordnet") when online.
""")
def wordnet() -> None:
    pass


@wordnet.command("status", help="""Say which WordNet is in use (nltk, system-copy, download or missing).

\b
Example:
  datakit wordnet status
  datakit wordnet status --provision --format json
""")
@click.option("--provision", is_flag=True, help="Provision now if needed (copy or download), then report.")
@format_option
def status(provision: bool, fmt: str) -> None:
    from datakit.taxonomy.wordnet import provision as do_provision
    from datakit.taxonomy.wordnet import wordnet_status

    st = do_provision() if provision else wordnet_status()
    if fmt == "table":
        click.echo(f"mode:    {st.mode}")
        click.echo(f"path:    {st.path or '-'}")
        click.echo(f"origin:  {st.origin or '-'}")
        click.echo(f"omw:     {'installed' if st.omw else 'not installed (no translations)'}")
        click.echo(f"message: {st.message}")
    else:
        emit_table(pd.DataFrame([st.as_dict()]), fmt)
    if st.mode == "missing":
        raise click.ClickException(st.message)


@wordnet.command("path", help="""Print the WordNet corpus directory nltk reads (provisioning it if needed).

\b
Example:
  datakit wordnet path
""")
def path() -> None:
    from datakit.taxonomy.wordnet import provision

    click.echo(provision().path)
