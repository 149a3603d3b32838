"""DATASHEET.md: a generated card saying how categories, images and labels were chosen.

Rendered from ``datakit.json`` alone (see :func:`datakit.build.build_dataset`),
so it can be regenerated for any dataset directory.
"""
from __future__ import annotations

import json
from typing import Any

__all__ = ["render_datasheet"]

_SPLIT_ORDER = ("train", "val", "test")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def _splits_of(counts: dict) -> list[str]:
    names = list(counts.get("by_split", {}))
    return [s for s in _SPLIT_ORDER if s in names] + sorted(s for s in names if s not in _SPLIT_ORDER)


def _protocol(splits: dict) -> str:
    strategy = splits.get("strategy")
    fr = f"train {splits.get('train')}, val {splits.get('val')}, test {splits.get('test')}"
    if strategy == "fractions":
        text = f"Stratified by class with fractions {fr}"
    elif strategy == "per-class":
        text = (f"Per class, {splits.get('per_class')} training images"
                + (f" and {splits.get('val_per_class')} validation images" if splits.get("val_per_class") else "")
                + ", the rest for test (the Caltech101 protocol)")
    else:
        fb = splits.get("fallback")
        how = (f"stratified fractions ({fr})" if fb == "fractions"
               else f"{splits.get('per_class')} training images per class, the rest for test")
        text = (f"Each source's own split is kept (a near-duplicate group that spans splits goes, whole, to the "
                f"split of its first member that has one); images of sources without a split are split by {how}")
    return (f"{text}; seed {splits.get('seed')}. Near-duplicates (perceptual hashes within "
            f"{splits.get('near_duplicate_distance')} bits, connected components) always share a split.")


def render_datasheet(info: dict) -> str:
    """The Markdown datasheet of a built dataset.

    Parameters
    ----------
    info : dict
        The content of ``datakit.json``.

    Returns
    -------
    str
        Markdown text.
    """
    counts = info.get("counts", {})
    splits = _splits_of(counts)
    out = [f"# Datasheet: {info.get('name')}", ""]
    if info.get("description"):
        out += [info["description"].strip(), ""]
    per_split = ", ".join(f"{s}: {counts.get('by_split', {}).get(s, 0)}" for s in splits)
    out += [f"{counts.get('kept', 0)} images in {len(info.get('classes', []))} classes "
            f"({per_split}); "
            f"{counts.get('rejected', 0)} candidates rejected. Built {info.get('created')} with datakit "
            f"{info.get('versions', {}).get('datakit')}.", ""]

    out += ["## Categories", ""]
    cats = info.get("categories", {})
    out += ["Classes are the dataset labels after each source's label map "
            "(source labels without a mapping are rejected as `unmapped_label`).", ""]
    by_class = counts.get("by_class", {})
    rows = [[c, cats.get(c, c)] + [by_class.get(c, {}).get(s, 0) for s in splits]
            + [by_class.get(c, {}).get("total", 0)] for c in info.get("classes", [])]
    out += [_table(["class", "name", *splits, "total"], rows), ""]

    out += ["## Images: sources and provenance", ""]
    by_source = counts.get("by_source", {})
    rej_src = counts.get("rejected_by_source", {})
    rows = []
    for src in info.get("sources", []):
        name = src["name"]
        opts = ", ".join(f"{k}={json.dumps(v)}" for k, v in (src.get("options") or {}).items()) or "-"
        if src.get("status") in ("skipped", "unused"):
            rows.append([name, src.get("kind"), opts,
                         f"{src['status']}: " + str(src.get("reason", "")).replace("|", "/"), 0, 0, 0])
            continue
        rows.append([name, src.get("kind"), opts, "used", src.get("items", 0),
                     by_source.get(name, {}).get("total", 0), sum(rej_src.get(name, {}).values())])
    out += [_table(["source", "kind", "options", "status", "items", "kept", "rejected"], rows), ""]
    if info.get("data_root"):
        out += [f"Relative source paths were read under `{info['data_root']}`.", ""]
    out += ["Every image records its source and `source_ref` (file and index, or path) in `manifest.parquet`.", ""]

    norm = info.get("normalize", {})
    opts = ", ".join(f"{k}={json.dumps(v)}" for k, v in (norm.get("options") or {}).items())
    out += ["## Normalization", "",
            f"Style `{norm.get('style')}`" + (f" with {opts}" if opts else "") + ". Images are stored once each "
            "as PNG under `images/`, named by the sha256 of their bytes.", ""]

    out += ["## Labels", "",
            "Labels come from the sources (their own annotations) through the recipe's label maps; "
            "no crowd validation was run for this build unless `votes`/`p_correct` are filled in the manifest.", ""]
    for src in info.get("sources", []):
        if src.get("label_map"):
            lm = ", ".join(f"{k} -> {v}" for k, v in list(src["label_map"].items())[:20])
            out += [f"- `{src['name']}`: {lm}" + (" ..." if len(src["label_map"]) > 20 else "")]
    out += [""]

    rel = info.get("relabel")
    if rel:
        changes = ", ".join(f"{k}: {n}" for k, n in sorted(rel.get("changes", {}).items(), key=lambda kv: -kv[1]))
        reasons = rel.get("by_reason", {})
        out += [f"{rel.get('flagged', 0)} images flagged as possibly mislabeled were re-annotated by the crowd "
                f"({rel.get('flagged_in_build', 0)} in this build; {rel.get('votes_used', 0)} votes, aggregated by "
                f"`{rel.get('method')}`; an image needs {rel.get('min_votes')} votes and {rel.get('agreement')} "
                f"agreement to be decided). Labels changed: {rel.get('relabelled', 0)}"
                + (f" ({changes})" if changes else "")
                + f"; labels confirmed: {rel.get('confirmed', 0)}; images dropped: {rel.get('dropped', 0)} "
                f"({reasons.get('none-of-these', 0)} because the crowd chose none of the classes); unresolved: "
                f"{rel.get('unresolved', 0)} ({reasons.get('too-few-votes', 0)} with too few votes, "
                f"{reasons.get('no-consensus', 0)} without consensus), "
                f"{'dropped' if rel.get('unresolved_policy') == 'drop' else 'kept with their label'}. "
                "The label before a change is in the manifest's `original_label`; dropped images are in "
                "`rejected.parquet` (stage `relabel`).", ""]

    out += ["## Splits", "", _protocol(info.get("splits", {})), ""]
    cur = info.get("curation")
    if cur:
        how = {"threshold": f"selection frequency >= {cur.get('threshold')}",
               "top": f"the {cur.get('per_class')} images per class with the highest selection frequency",
               "matched-frequency": f"{cur.get('per_class')} images per class drawn to match the selection-frequency "
                                    f"histogram ({cur.get('bins')} bins) of a reference dataset"}.get(cur.get("strategy"))
        others = ("rejected (stage `curate`)" if cur.get("others") == "reject"
                  else f"kept in the other splits, except {cur.get('rejected', 0)} that could only go to "
                       f"`{cur.get('split')}` and were rejected")
        out += [f"Split `{cur.get('split')}` was curated the ImageNetV2 way from crowd votes: {how} "
                f"(strategy `{cur.get('strategy')}`). {cur.get('selected', 0)} of {cur.get('candidates', 0)} images "
                f"were selected ({cur.get('images_with_votes', 0)} had votes; {cur.get('votes_used', 0)} votes used); "
                f"the others were {others}.", ""]
    dd = info.get("deduplication", {})
    nd = dd.get("near_duplicates", {})
    if nd:
        out += [f"Exact duplicates removed: {dd.get('exact_duplicates', 0)}. Near-duplicate groups with more than "
                f"one image: {nd.get('groups_with_several_images', 0)} ({nd.get('images_in_such_groups', 0)} images; "
                f"largest {nd.get('largest_group', 0)}). Images moved away from their source's split to keep a "
                f"group together: {nd.get('moved_from_source_split', 0)}.", ""]
    rows = [[name] + [by_source[name].get(s, 0) for s in splits] + [by_source[name].get("total", 0)]
            for name in by_source]
    out += [_table(["source", *splits, "total"], rows), ""]

    out += ["## Rejections", ""]
    by_reason = counts.get("rejected_by_reason", {})
    if by_reason:
        out += ["Every candidate that was not kept is listed in `rejected.parquet` with its stage and reason.", ""]
        out += [_table(["reason", "count"], [[r, n] for r, n in sorted(by_reason.items(), key=lambda kv: -kv[1])]), ""]
    else:
        out += ["No candidate was rejected.", ""]
    skipped = info.get("skipped_sources", {})
    if skipped:
        out += ["Skipped sources (optional, files missing):", ""]
        out += [f"- `{k}`: {v}" for k, v in skipped.items()] + [""]

    out += ["## Reproducing", "", "The recipe, verbatim:", "", "```toml", (info.get("recipe") or "").rstrip(), "```", "",
            f"Manifest sha256 `{info.get('checksums', {}).get('manifest_sha256')}`; versions: "
            + ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()) + ".", ""]
    return "\n".join(out)
