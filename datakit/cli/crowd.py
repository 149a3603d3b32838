"""``datakit crowd``: tasks, import/export, aggregation, agreement, consensus, simulation."""
from __future__ import annotations

from pathlib import Path

import click
import pandas as pd

from datakit.cli._options import emit_table, format_option, progress_bar, quiet_option
from datakit.errors import DatakitError

__all__ = ["crowd"]

dataset_arg = click.argument("dataset", type=click.Path(exists=True, file_okay=False))


def _items(dataset: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``id, label, path`` of a dataset or candidates directory, and its categories."""
    from datakit.crowd.tasks import load_items

    frame, categories = load_items(dataset)
    if frame.attrs.get("ambiguous"):
        click.echo(f"note: {frame.attrs['ambiguous']} extra questions about images that are candidates for more "
                   "than one synset (keyed <synset>:<id>)", err=True)
    return frame, categories


def _read_series(path: str, value_column: str) -> pd.Series:
    """A CSV with ``id`` and ``value_column`` as a Series id -> value."""
    frame = pd.read_csv(path, dtype=str)
    for col in ("id", value_column):
        if col not in frame.columns:
            raise DatakitError(f"{path} needs columns id,{value_column}; it has {list(frame.columns)}")
    return pd.Series(frame[value_column].to_numpy(), index=frame["id"].to_numpy(), name=value_column)


def _votes(dataset: str) -> pd.DataFrame:
    from datakit.crowd.tasks import load_annotations

    votes = load_annotations(dataset)
    if votes.empty:
        raise DatakitError(f"{dataset} has no votes yet (annotations.parquet). Import some with "
                           f"`datakit crowd import`, the app, or `datakit crowd simulate`.")
    return votes


def _gold(dataset: str) -> pd.Series | None:
    from datakit.crowd.tasks import gold_answers, load_tasks

    if not (Path(dataset) / "tasks.parquet").exists():
        return None
    return gold_answers(load_tasks(dataset))


class _CrowdGroup(click.Group):
    """Bad input that the library reports as ValueError becomes a clean message (exit 1)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (DatakitError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_CrowdGroup, context_settings={"help_option_names": ["-h", "--help"]})
def crowd() -> None:
    """Crowd tasks, aggregation, agreement, consensus, simulation."""


def _next_round(previous: pd.DataFrame) -> str:
    """``round<N>``: one more than the highest round tag among the existing task ids (the first round is 1)."""
    rounds = previous["task"].str.extract(r"-round(\d+)-")[0].dropna().astype(int)
    return f"round{int(rounds.max()) + 1 if len(rounds) else 2}"


@crowd.command("tasks")
@dataset_arg
@click.option("--kind", type=click.Choice(["binary", "multiclass"]), default="binary", show_default=True,
              help="binary: ImageNet-style 'which images show X' grids; multiclass: pick the class.")
@click.option("--grid-size", type=click.IntRange(min=1), default=48, show_default=True, help="Items per task.")
@click.option("--gold", "gold_path", type=click.Path(exists=True, dir_okay=False),
              help="CSV id,answer of gold items (binary: yes/no; multiclass: the class id).")
@click.option("--gold-per-task", type=click.IntRange(min=0), default=4, show_default=True)
@click.option("--needing-votes", is_flag=True,
              help="Only the images that DATASET/consensus.parquet says need more votes (the next round).")
@click.option("--from-audit", "report_dir", type=click.Path(exists=True),
              help="Re-annotate the images the label_issues audit of REPORT_DIR/report.json flags "
                   "(multiclass tasks; writes DATASET/relabel.parquet for the build's [relabel] table).")
@click.option("--choices", type=click.Choice(["all", "pair"]), default="all", show_default=True,
              help="--from-audit: every class, or only the given and suggested label (+ none-of-these).")
@click.option("--tag", default="", help="Added to the task ids, e.g. r2 (default with --needing-votes: round<N>; "
                                        "with --from-audit: relabel<N>).")
@click.option("--seed", type=int, default=0, show_default=True)
@format_option
def tasks_cmd(dataset, kind, grid_size, gold_path, gold_per_task, needing_votes, report_dir, choices, tag, seed,
              fmt) -> None:
    """Make tasks for DATASET's images and write DATASET/tasks.parquet.

    With --needing-votes the new tasks are added to the existing ones (new ids),
    so the app and imports keep accepting votes for the earlier rounds; so are
    the re-annotation tasks of --from-audit.
    """
    from datakit.crowd.tasks import load_tasks, make_binary_tasks, make_multiclass_tasks

    if report_dir is not None:
        if needing_votes:
            raise click.UsageError("--from-audit and --needing-votes cannot be combined")
        _relabel_tasks(dataset, report_dir, choices=choices, grid_size=grid_size, gold_path=gold_path,
                       gold_per_task=gold_per_task, tag=tag, seed=seed, fmt=fmt)
        return
    frame, categories = _items(dataset)
    all_items = frame
    previous = None
    if needing_votes:
        path = Path(dataset) / "consensus.parquet"
        if not path.exists():
            raise DatakitError(f"{path} does not exist; run `datakit crowd consensus {dataset}` first")
        plan = pd.read_parquet(path)
        need = set(plan.loc[plan.get("more_votes", pd.Series(0, index=plan.index)) > 0, "item"].astype(str))
        if not need:
            raise DatakitError(f"no image in {path} needs more votes")
        frame = frame[frame["id"].isin(need)]
        if (Path(dataset) / "tasks.parquet").exists():
            previous = load_tasks(dataset)
            tag = tag or _next_round(previous)
    gold = _read_series(gold_path, "answer") if gold_path else None
    if needing_votes and gold is not None:  # keep the gold items to mix in
        frame = pd.concat([frame, all_items[all_items["id"].isin(gold.index) & ~all_items["id"].isin(frame["id"])]])
    if kind == "binary":
        tasks = make_binary_tasks(frame, grid_size=grid_size, gold=gold, gold_per_task=gold_per_task,
                                  categories=categories, tag=tag, seed=seed)
    else:
        classes = _classes(categories, frame)
        tasks = make_multiclass_tasks(frame, classes=classes, grid_size=grid_size, gold=gold,
                                      gold_per_task=gold_per_task, tag=tag, seed=seed)
    path = _append_tasks(dataset, previous, tasks)
    summary = pd.DataFrame([{"tasks": tasks["task"].nunique(), "rows": len(tasks),
                             "items": tasks.loc[tasks["gold"].isna(), "item"].nunique(),
                             "gold_items": tasks.loc[tasks["gold"].notna(), "item"].nunique(), "file": str(path)}])
    emit_table(summary, fmt)


def _classes(categories: pd.DataFrame | None, frame: pd.DataFrame) -> list[str]:
    """Class ids for multiclass choices: categories.csv's order, else the labels present, sorted."""
    if categories is not None and "label" in categories:
        return categories["label"].astype(str).tolist()
    return sorted(frame["label"].dropna().astype(str).unique())


def _append_tasks(dataset: str, previous: pd.DataFrame | None, tasks: pd.DataFrame):
    """Add new tasks to the dataset's tasks.parquet (task ids must be new); return its path."""
    from datakit.crowd.tasks import save_tasks

    if previous is not None:
        clash = set(previous["task"]) & set(tasks["task"])
        if clash:
            raise DatakitError(f"task ids {sorted(clash)[:3]} already exist; choose another --tag")
        tasks = pd.concat([previous, tasks], ignore_index=True)
    return save_tasks(dataset, tasks)


def _relabel_tasks(dataset: str, report_dir: str, *, choices: str, grid_size: int, gold_path: str | None,
                   gold_per_task: int, tag: str, seed: int, fmt: str) -> None:
    """``crowd tasks --from-audit``: re-annotation tasks for the images a label_issues audit flags."""
    from datakit.crowd.relabel import flagged_from_report, make_relabel_tasks, save_relabel
    from datakit.crowd.tasks import load_tasks
    from datakit.store.dataset import Dataset

    root = Path(dataset)
    if not (root / "manifest.parquet").exists():
        raise DatakitError(f"{dataset} is not a built dataset (no manifest.parquet); --from-audit re-annotates the "
                           "images of a dataset built by `datakit build`.")
    ds = Dataset(root)
    manifest = ds.manifest
    flagged = flagged_from_report(report_dir, ds.name, manifest)
    if flagged.empty:
        click.echo(f"no image of {ds.name} is flagged by the label_issues audit in {report_dir}: nothing to "
                   "re-annotate")
        return
    categories = pd.read_csv(root / "categories.csv", dtype=str) if (root / "categories.csv").exists() else None
    classes = _classes(categories, manifest)
    previous = load_tasks(dataset) if (root / "tasks.parquet").exists() else None
    if not tag:
        taken = set() if previous is None else set(previous["task"].str.extract(r"^mc-(relabel\d*)-")[0].dropna())
        tag = next(t for t in (f"relabel{n}" if n > 1 else "relabel" for n in range(1, len(taken) + 2))
                   if t not in taken)
    gold = _read_series(gold_path, "answer") if gold_path else None
    tasks, relabel = make_relabel_tasks(flagged, classes=classes, choices=choices, grid_size=grid_size, tag=tag,
                                        gold=gold, gold_per_task=gold_per_task, seed=seed)
    relabel["report"] = str(Path(report_dir).resolve())
    new = tasks
    path = _append_tasks(dataset, previous, tasks)
    save_relabel(dataset, relabel)
    summary = pd.DataFrame([{"flagged": len(flagged), "tasks": new["task"].nunique(), "rows": len(new),
                             "choices": choices, "tag": tag, "file": str(path)}])
    emit_table(summary, fmt)


@crowd.command("export")
@dataset_arg
@click.option("--to", "target", type=click.Choice(["mturk", "labelstudio"]), required=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="File to write (.csv / .json).")
@click.option("--image-url", default="{path}", show_default=True,
              help="URL template of each image; {path} and {id} are filled in.")
def export_cmd(dataset, target, out, image_url) -> None:
    """Export DATASET's tasks for Mechanical Turk (batch CSV) or Label Studio (tasks JSON + config XML)."""
    from datakit.crowd.io import export_labelstudio, export_mturk
    from datakit.crowd.tasks import load_tasks

    tasks = load_tasks(dataset)
    frame, _ = _items(dataset)
    paths = dict(zip(frame["id"], frame["path"]))
    if target == "mturk":
        export_mturk(tasks, out, image_url=image_url, paths=paths)
        click.echo(f"wrote {out}: {tasks['task'].nunique()} HITs; HIT layout {Path(out).with_suffix('.html')}")
    else:
        js, xml = export_labelstudio(tasks, out, image_url=image_url, paths=paths)
        click.echo(f"wrote {js}: {len(tasks)} Label Studio tasks; labeling config {xml}")


@crowd.command("import")
@dataset_arg
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--from", "source", type=click.Choice(["mturk", "labelstudio", "app"]), required=True,
              help="mturk: batch results CSV; labelstudio: JSON export; app: DATASET/votes.sqlite.")
@click.option("--batch", help="Batch name stored with the votes (default: the file name).")
def import_cmd(dataset, file, source, batch) -> None:
    """Add votes to DATASET/annotations.parquet (a worker's repeat vote on an item counts once).

    Malformed rows are reported on stderr with their line numbers; the rest is imported.
    """
    from datakit.crowd.db import DB_FILE, VoteDB
    from datakit.crowd.io import import_labelstudio, import_mturk
    from datakit.crowd.tasks import load_annotations, load_tasks, save_annotations

    tasks = load_tasks(dataset)
    errors, skipped = [], 0
    if source == "app":
        db_path = Path(dataset) / DB_FILE
        if not db_path.exists():
            raise DatakitError(f"{db_path} does not exist: no votes from `datakit annotate serve` yet")
        votes = VoteDB(db_path).annotations()
    else:
        if file is None:
            raise click.UsageError(f"--from {source} needs FILE")
        result = (import_mturk if source == "mturk" else import_labelstudio)(file, tasks, batch=batch)
        votes, errors, skipped = result.votes, result.errors, result.skipped
    for line, reason in errors:
        click.echo(f"{file}:{line}: {reason} (skipped)", err=True)
    before = len(load_annotations(dataset))
    table = save_annotations(dataset, votes)
    added = len(table) - before
    click.echo(f"imported {added} new votes ({len(votes) - added} duplicates ignored, {len(errors)} malformed rows, "
               f"{skipped} rejected/cancelled skipped); annotations.parquet now has {len(table)} votes")


def _aggregator_names() -> list[str]:
    from datakit.crowd.aggregation import aggregator_names

    return aggregator_names()


@crowd.command("aggregate")
@dataset_arg
@click.option("--method", type=click.Choice(_aggregator_names()), default="dawid_skene", show_default=True,
              help="datakit's own (majority_vote, dawid_skene, one_coin) or crowd-kit's (glad, mace, mmsr, wawa, "
                   "zero_based_skill, crowdkit_*; needs pip install 'datakit[crowdkit]').")
@click.option("--no-gold", is_flag=True, help="Do not clamp gold items to their known answers.")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the result as CSV.")
@format_option
def aggregate_cmd(dataset, method, no_gold, out, fmt) -> None:
    """Aggregate DATASET's votes into one label per item, with its probability.

    \b
    Example:
      datakit crowd aggregate pool --method glad --format csv
    """
    from datakit.crowd.aggregation import get_aggregator
    from datakit.store.atomic import atomic_write_text

    votes = _votes(dataset)
    gold = None if no_gold else _gold(dataset)
    model = get_aggregator(method)()
    labels = model.fit_predict(votes, gold)
    probas = getattr(model, "probas_", None)  # None for methods without probabilities (mmsr)
    probability = (probas.max(axis=1).reindex(labels.index).to_numpy() if probas is not None
                   else [float("nan")] * len(labels))
    result = pd.DataFrame({"task": labels.index, "label": labels.to_numpy(), "probability": probability,
                           "votes": votes.groupby("task").size().reindex(labels.index).to_numpy()})
    if out:
        atomic_write_text(out, result.to_csv(index=False))
    emit_table(result, fmt)


@crowd.command("quality")
@dataset_arg
@click.option("--min-gold-accuracy", type=click.FloatRange(0, 1), default=0.6, show_default=True)
@click.option("--max-spam-score", type=click.FloatRange(0, 1), default=0.8, show_default=True)
@format_option
def quality_cmd(dataset, min_gold_accuracy, max_spam_score, fmt) -> None:
    """Per-worker accuracy (gold, agreement, Dawid-Skene) and spammer flags."""
    from datakit.crowd.quality import worker_quality

    table = worker_quality(_votes(dataset), _gold(dataset), min_gold_accuracy=min_gold_accuracy,
                           max_spam_score=max_spam_score)
    emit_table(table.round(3), fmt)


@crowd.command("agreement")
@dataset_arg
@click.option("--min-common", type=click.IntRange(min=1), default=5, show_default=True,
              help="Tasks two workers must share for a Cohen's kappa.")
@format_option
def agreement_cmd(dataset, min_common, fmt) -> None:
    """Fleiss' kappa, Krippendorff's alpha and mean pairwise Cohen's kappa, overall and per class."""
    from datakit.crowd.agreement import agreement_report

    votes = _votes(dataset)
    classes = None
    if set(votes["label"].astype(str)) <= {"yes", "no"}:  # verification votes: group by the class asked about
        frame, _ = _items(dataset)
        classes = pd.Series(frame["label"].astype(str).to_numpy(), index=frame["id"].to_numpy())
    emit_table(agreement_report(votes, classes=classes, min_common=min_common).round(4), fmt)


@crowd.command("frequency")
@dataset_arg
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the table as CSV.")
@format_option
def frequency_cmd(dataset, out, fmt) -> None:
    """ImageNetV2's selection frequency (share of workers who said yes) per item."""
    from datakit.crowd.frequency import selection_frequency
    from datakit.store.atomic import atomic_write_text

    table = selection_frequency(_votes(dataset)).reset_index()
    if out:
        atomic_write_text(out, table.to_csv(index=False))
    emit_table(table.round(4), fmt)


@crowd.command("simulate")
@dataset_arg
@click.option("--truth", "truth_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="CSV id,label with each item's true class.")
@click.option("--workers", "n_workers", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--accuracy", default="0.7-0.95", show_default=True, help="Honest accuracy, a value or LOW-HIGH.")
@click.option("--spammers", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Share of spammers.")
@click.option("--adversaries", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--assignments", type=click.IntRange(min=1), default=3, show_default=True, help="Workers per task.")
@click.option("--truth-column", default="label", show_default=True, help="Column of --truth with the true class.")
@click.option("--all", "answer_all", is_flag=True, help="Answer every task, not only those without votes yet.")
@click.option("--seed", type=int, default=0, show_default=True)
def simulate_cmd(dataset, truth_path, n_workers, accuracy, spammers, adversaries, assignments, truth_column,
                 answer_all, seed) -> None:
    """Answer DATASET's tasks with a simulated crowd; votes are added to annotations.parquet (batch 'simulated').

    By default only tasks that have no votes yet are answered (e.g. a new round
    made with `datakit crowd tasks --needing-votes`).
    """
    from datakit.crowd.simulate import SimulatedCrowd, truth_for_tasks
    from datakit.crowd.tasks import load_annotations, load_tasks, save_annotations

    try:
        acc = tuple(float(x) for x in accuracy.split("-")) if "-" in accuracy else float(accuracy)
    except ValueError:
        raise click.BadParameter(f"{accuracy!r} is not a number or LOW-HIGH", param_hint="--accuracy") from None
    tasks = load_tasks(dataset)
    if not answer_all:
        answered = set(load_annotations(dataset)["hit"].dropna())
        tasks = tasks[~tasks["task"].isin(answered)]
        if tasks.empty:
            raise DatakitError("every task already has votes; pass --all to answer them again")
    truth = truth_for_tasks(tasks, _read_series(truth_path, truth_column))
    sim = SimulatedCrowd(n_workers=n_workers, accuracy=acc, spammer_share=spammers, adversary_share=adversaries,
                         seed=seed)
    votes = sim.answer_tasks(tasks, truth, assignments=assignments)
    before = len(load_annotations(dataset))
    table = save_annotations(dataset, votes)
    kinds = sim.workers_["kind"].value_counts().to_dict()
    added = len(table) - before
    click.echo(f"simulated {len(votes)} votes on {tasks['task'].nunique()} tasks from {n_workers} workers {kinds}; {added} new "
               f"({len(votes) - added} repeats of a worker on the same item ignored); "
               f"annotations.parquet now has {len(table)} votes")


@crowd.command("consensus")
@dataset_arg
@click.option("--source", type=click.Choice(["annotations", "app", "simulate"]), default="annotations",
              show_default=True,
              help="annotations/app: plan from votes already collected; simulate: run the loop with a simulated crowd.")
@click.option("--threshold", type=click.FloatRange(0.5, 1, min_open=True, max_open=True), default=0.95,
              show_default=True)
@click.option("--initial-votes", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--max-votes", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--subset", type=float, default=0.1, show_default=True, help="Share of each class in the fitted subset.")
@click.option("--min-subset", type=click.IntRange(min=1), default=20, show_default=True,
              help="Images per class in the fitted subset at least.")
@click.option("--truth", "truth_path", type=click.Path(exists=True, dir_okay=False),
              help="simulate: CSV id,label with each item's true class.")
@click.option("--truth-column", default="label", show_default=True, help="Column of --truth with the true class.")
@click.option("--workers", "n_workers", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--items", "show_items", is_flag=True, help="Print one row per item instead of per class.")
@format_option
@quiet_option
def consensus_cmd(dataset, source, threshold, initial_votes, max_votes, subset, min_subset, truth_path, truth_column,
                  n_workers, seed,
                  show_items, fmt, quiet) -> None:
    """ImageNet's adaptive consensus per class; writes DATASET/consensus.parquet.

    With collected votes it says which images need how many more votes
    (column more_votes); with --source simulate it runs the whole loop.
    """
    from datakit.crowd.consensus import AdaptiveConsensus, SimulatedOracle, plan_votes
    from datakit.crowd.db import DB_FILE, VoteDB
    from datakit.crowd.simulate import SimulatedCrowd, truth_for_tasks
    from datakit.crowd.tasks import load_annotations
    from datakit.store.atomic import atomic_write_parquet

    if not 0 < subset <= 1:
        raise click.BadParameter(f"{subset} is not in (0, 1]", param_hint="--subset")
    frame, _ = _items(dataset)
    frame = frame[frame["label"].notna()]
    items = pd.DataFrame({"item": frame["id"], "question": frame["label"].astype(str)})
    if source == "simulate":
        if not truth_path:
            raise click.UsageError("--source simulate needs --truth CSV (id,label)")
        fake = items.assign(kind="binary")
        truth = truth_for_tasks(fake, _read_series(truth_path, truth_column))
        items = items[items["item"].isin(truth.index)]
        oracle = SimulatedOracle(SimulatedCrowd(n_workers=n_workers, seed=seed), truth)
        with progress_bar(len(items), "consensus", quiet=quiet) as bar:
            result = AdaptiveConsensus(threshold=threshold, initial_votes=initial_votes, max_votes=max_votes,
                                       subset=subset, min_subset=min_subset, seed=seed).run(items, oracle, progress=bar)
        result["more_votes"] = 0
    else:
        if source == "app":
            path = Path(dataset) / DB_FILE
            if not path.exists():
                raise DatakitError(f"{path} does not exist: no votes from `datakit annotate serve` yet")
            votes = VoteDB(path).annotations()
        else:
            votes = load_annotations(dataset)
        result = plan_votes(votes, items, threshold=threshold, initial_votes=initial_votes, max_votes=max_votes,
                            subset=subset, min_subset=min_subset, seed=seed)
    atomic_write_parquet(Path(dataset) / "consensus.parquet", result)
    if show_items:
        emit_table(result.round(4), fmt)
        return
    summary = result.groupby("question").agg(
        images=("item", "size"), votes=("votes", "sum"), mean_votes=("votes", "mean"),
        accepted=("decision", lambda s: int((s == "accepted").sum())),
        rejected=("decision", lambda s: int((s == "rejected").sum())),
        open=("decision", lambda s: int((~s.isin(["accepted", "rejected"])).sum())),
        more_votes=("more_votes", "sum")).reset_index()
    emit_table(summary.round(2), fmt)
