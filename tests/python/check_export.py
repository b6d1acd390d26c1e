"""Read a `prep export` bag back with webdataset, wids and datasets; check every sample's bytes
against the split bag's records.csv. Used by tests/export.rs.

  check_export.py SPLIT_BAG EXPORT_BAG webdataset|wids|datasets

Prints one line per split: `<tool> <split> <n> ok`; exits non-zero with the reason otherwise.
"""
import csv
import glob
import hashlib
import io
import json
import os
import sys


def records(split_bag):
    with open(os.path.join(split_bag, "data", "records.csv"), newline="") as f:
        return list(csv.DictReader(f))


def classes_of(export_bag):
    with open(os.path.join(export_bag, "data", "provenance.json")) as f:
        return json.load(f)["parameters"]["classes"]


def expect(recs, split, classes):
    """(id, sha256) -> (sha256, class index, record) for one split (ids from two input bags may
    be equal; the pair is unique)."""
    return {(r["id"], r["sha256"]): (r["sha256"], classes.index(r["class"]), r)
            for r in recs if r["split"] == split}


def check_sample(want, seen, tool, meta, img_bytes, cls):
    rid = (meta["id"], meta["sha256"])
    if rid not in want:
        sys.exit(f"{tool}: sample {rid!r} is not in records.csv of its split")
    sha, c, rec = want[rid]
    got = hashlib.sha256(img_bytes).hexdigest()
    if got != sha or meta["sha256"] != sha:
        sys.exit(f"{tool}: {rid}: image bytes sha256 {got} != records.csv {sha}")
    if int(cls) != c or meta["label"] != rec["class"]:
        sys.exit(f"{tool}: {rid}: class {cls}/{meta['label']} != {c}/{rec['class']}")
    for k in ("patient_id", "source"):
        if meta[k] != rec[k]:
            sys.exit(f"{tool}: {rid}: {k} {meta[k]!r} != {rec[k]!r}")
    if rid in seen:
        sys.exit(f"{tool}: {rid} read twice")
    seen.add(rid)


def image_of(sample):
    for ext in ("png", "jpg", "jpeg"):
        if ext in sample:
            return sample[ext]
    sys.exit(f"no image member in sample {sample.get('__key__')}: {sorted(sample)}")


def main():
    split_bag, export_bag, tool = sys.argv[1:4]
    recs, classes = records(split_bag), classes_of(export_bag)
    splits = sorted({r["split"] for r in recs})
    data = os.path.join(export_bag, "data")
    if tool == "webdataset":
        import webdataset as wds
        for split in splits:
            want, seen = expect(recs, split, classes), set()
            urls = sorted(glob.glob(os.path.join(data, f"{split}-*.tar")))
            for s in wds.WebDataset(urls, shardshuffle=False):
                meta = json.loads(s["json"])
                if "." in s["__key__"]:
                    sys.exit(f"key {s['__key__']} holds a dot")
                check_sample(want, seen, tool, meta, image_of(s), s["cls"].decode())
            if seen != set(want):
                sys.exit(f"{tool} {split}: read {len(seen)} of {len(want)} samples")
            print(f"{tool} {split} {len(seen)} ok")
    elif tool == "wids":
        import wids
        for split in splits:
            want, seen = expect(recs, split, classes), set()
            index = os.path.join(data, f"{split}.json")
            ds = wids.ShardListDataset(index, transformations=[])  # raw bytes, not PIL
            if len(ds) != len(want):
                sys.exit(f"wids {split}: index says {len(ds)} samples, records {len(want)}")
            for i in range(len(ds)):
                s = ds[i]
                img = image_of({k.lstrip("."): v for k, v in s.items()})
                raw = img.getvalue() if hasattr(img, "getvalue") else (img.read() if hasattr(img, "read") else img)
                meta = s[".json"]
                meta = json.loads(meta.getvalue() if hasattr(meta, "getvalue") else meta) if not isinstance(meta, dict) else meta
                cls = s[".cls"]
                cls = cls.getvalue().decode() if hasattr(cls, "getvalue") else cls
                check_sample(want, seen, tool, meta, raw, cls)
            if seen != set(want):
                sys.exit(f"{tool} {split}: read {len(seen)} of {len(want)} samples")
            print(f"{tool} {split} {len(seen)} ok")
    elif tool == "datasets":
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import datasets
        cache = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"hf-{os.getpid()}")
        # The export's dataset card (data/README.md) gives the splits, features and class names.
        dd = datasets.load_dataset(data, cache_dir=cache)
        if sorted(dd.keys()) != splits:
            sys.exit(f"datasets: splits {sorted(dd.keys())} != {splits}")
        names = dd[splits[0]].features["cls"].names
        if names != classes:
            sys.exit(f"datasets: class names {names} != {classes}")
        exts = {r["path"].rsplit(".", 1)[-1].lower() for r in recs}
        if len(exts) == 1:
            # One image format: the card is not needed, plain data_files work too.
            files = {s: sorted(glob.glob(os.path.join(data, f"{s}-*.tar"))) for s in splits}
            plain = datasets.load_dataset("webdataset", data_files=files, cache_dir=cache + "-plain")
            if {s: len(plain[s]) for s in splits} != {s: len(dd[s]) for s in splits}:
                sys.exit("datasets: plain data_files load differs")
        for split in splits:
            want, seen = expect(recs, split, classes), set()
            ds = dd[split]
            for col in ("png", "jpg", "jpeg"):
                if col in ds.features:
                    ds = ds.cast_column(col, datasets.Image(decode=False))
            for s in ds:
                img = next(s[c] for c in ("png", "jpg", "jpeg") if c in s and s[c] is not None)
                check_sample(want, seen, tool, s["json"], img["bytes"], s["cls"])
            if seen != set(want):
                sys.exit(f"{tool} {split}: read {len(seen)} of {len(want)} samples")
            print(f"{tool} {split} {len(seen)} ok")
    else:
        sys.exit(f"unknown tool {tool}")


if __name__ == "__main__":
    main()
