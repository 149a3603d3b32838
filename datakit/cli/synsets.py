"""``datakit synsets STRATEGY`` (choose categories) and ``datakit queries`` (expand them)."""
from __future__ import annotations

import click

from datakit.cli._options import emit_table, format_option

__all__ = ["synsets", "queries"]

_SHOWN = ["wnid", "name", "depth", "lexname", "lemmas"]


def _common(fn):
    fn = click.option("--out", type=click.Path(dir_okay=False), default=None,
                      help="Write categories.csv here (label, name, wnid, lemmas, gloss, hypernym_path, depth, "
                           "lexname).")(fn)
    fn = format_option(fn)
    return fn


def _emit(synset_list, out, fmt) -> None:
    from datakit.taxonomy.select import categories_frame, write_categories

    frame = categories_frame(synset_list)
    if out:
        write_categories(frame, out)
        click.echo(f"wrote {len(frame)} categories to {out}", err=True)
    emit_table(frame[_SHOWN] if fmt == "table" else frame, fmt)


@click.group(help="""Choose categories from WordNet (the way ImageNet and Caltech101 did).

Strategies: subtree (hyponyms of a root), wnids (an explicit list),
non-overlapping (N synsets none of which is an ancestor of another, the ILSVRC
rule), random-dictionary (Caltech101: random picturable nouns). Synset names
(dog.n.01) and wnids (n02084071) are accepted everywhere.
""")
def synsets() -> None:
    pass


@synsets.command("subtree", help="""The hyponym closure of ROOT (a synset name or wnid).

\b
Example:
  datakit synsets subtree dog.n.01 --leaves-only --count 10 --seed 0 --out categories.csv
""")
@click.argument("root")
@click.option("--leaves-only", is_flag=True, help="Keep only synsets without hyponyms.")
@click.option("--min-depth", type=click.IntRange(min=0), default=1, show_default=True,
              help="Smallest depth below ROOT (0 includes ROOT itself).")
@click.option("--max-depth", type=click.IntRange(min=0), default=None, help="Largest depth below ROOT.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Sample this many (seeded).")
@click.option("--seed", type=int, default=0, show_default=True)
@_common
def subtree(root, leaves_only, min_depth, max_depth, count, seed, out, fmt):
    from datakit.taxonomy.select import select_synsets

    if max_depth is not None and max_depth < min_depth:
        raise click.BadParameter(f"--max-depth {max_depth} is smaller than --min-depth {min_depth}")
    _emit(select_synsets("subtree", root=root, leaves_only=leaves_only, min_depth=min_depth, max_depth=max_depth,
                         count=count, seed=seed), out, fmt)


@synsets.command("wnids", help="""Synsets listed in FILE (one wnid or synset name a line, or a CSV with a wnid column).

\b
Example:
  datakit synsets wnids ilsvrc_wnids.txt --out categories.csv
""")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--count", type=click.IntRange(min=1), default=None, help="Sample this many (seeded).")
@click.option("--seed", type=int, default=0, show_default=True)
@_common
def wnids(file, count, seed, out, fmt):
    from datakit.taxonomy.select import select_synsets

    _emit(select_synsets("wnids", path=file, count=count, seed=seed), out, fmt)


@synsets.command("non-overlapping", help="""COUNT synsets under the ROOTs, none an ancestor of another (ILSVRC's rule).

\b
Example:
  datakit synsets non-overlapping animal.n.01 artifact.n.01 --count 20 --prefer hyponyms
""")
@click.argument("roots", nargs=-1, required=True)
@click.option("--count", type=click.IntRange(min=1), required=True, help="How many synsets.")
@click.option("--prefer", type=click.Choice(["hyponyms", "lemmas", "random"]), default="hyponyms",
              show_default=True, help="Rank candidates by number of hyponyms, of lemmas, or at random.")
@click.option("--leaves-only", is_flag=True, help="Only synsets without hyponyms.")
@click.option("--min-depth", type=click.IntRange(min=0), default=1, show_default=True,
              help="Smallest depth below the roots.")
@click.option("--seed", type=int, default=0, show_default=True)
@_common
def non_overlapping(roots, count, prefer, leaves_only, min_depth, seed, out, fmt):
    from datakit.taxonomy.select import select_synsets

    _emit(select_synsets("non-overlapping", roots=list(roots), count=count, prefer=prefer, leaves_only=leaves_only,
                         min_depth=min_depth, seed=seed), out, fmt)


@synsets.command("random-dictionary", help="""Caltech101's method: random nouns that denote picturable things.

\b
Example:
  datakit synsets random-dictionary --count 101 --seed 0 --out categories.csv
  datakit synsets random-dictionary --count 20 --lexname noun.animal --require animal.n.01
""")
@click.option("--count", type=click.IntRange(min=1), required=True, help="How many synsets.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lexname", "lexnames", multiple=True,
              help="Lexicographer file to keep (repeatable; default noun.animal, noun.artifact, noun.food, "
                   "noun.plant, noun.object).")
@click.option("--require", multiple=True, help="Keep only descendants of this synset (repeatable: all must hold).")
@click.option("--exclude", default=None, help="Regular expression; matching lemmas are skipped.")
@click.option("--any-sense", is_flag=True, help="Accept any sense of a drawn noun, not only its first.")
@_common
def random_dictionary(count, seed, lexnames, require, exclude, any_sense, out, fmt):
    from datakit.taxonomy.select import PICTURABLE_LEXNAMES, select_synsets

    _emit(select_synsets("random-dictionary", count=count, seed=seed, lexnames=lexnames or PICTURABLE_LEXNAMES,
                         require=list(require), exclude=exclude, first_sense_only=not any_sense), out, fmt)


@click.command(help="""Expand categories into search queries (lemmas, lemma + parent word, translations).

CATEGORIES is a categories.csv (from `datakit synsets`) or a text file of
wnids / synset names. Each query records the expansion that made it.
Translations need an Open Multilingual Wordnet for nltk; without one they are
skipped with a note on stderr.

\b
Example:
  datakit queries categories.csv --out queries.csv
""")
@click.argument("categories", type=click.Path(exists=True, dir_okay=False))
@click.option("--no-parent", is_flag=True, help="Do not add 'lemma + parent head word' queries.")
@click.option("--lang", "langs", multiple=True,
              help="OMW language code for translations (repeatable; default cmn, spa, nld, ita).")
@click.option("--no-translations", is_flag=True, help="Do not translate.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the query table as CSV here.")
@format_option
def queries(categories, no_parent, langs, no_translations, out, fmt):
    from datakit.taxonomy.expand import DEFAULT_LANGS, expand_categories
    from datakit.taxonomy.select import read_categories
    from datakit.taxonomy.wordnet import get_wordnet, resolve_synset

    wn = get_wordnet()
    frame = read_categories(categories, wn)
    table, notes = expand_categories([resolve_synset(w, wn) for w in frame["wnid"]], wn, parent=not no_parent,
                                     langs=None if no_translations else (list(langs) or DEFAULT_LANGS))
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if out:
        from datakit.store.atomic import atomic_write

        with atomic_write(out, "w") as fh:
            table.to_csv(fh, index=False)
        click.echo(f"wrote {len(table)} queries for {len(frame)} categories to {out}", err=True)
    emit_table(table, fmt)
