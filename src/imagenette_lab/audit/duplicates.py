"""Exact and near-duplicate pairs: file hash, perceptual-hash Hamming distance, embedding cosine.

All searches are blocked all-pairs computations (numpy XOR + popcount for the 64-bit hashes, torch
matrix products for the embeddings) with the top-k neighbours kept per image: O(n^2) arithmetic but
O(block x n) memory and no Python loop over pairs. At ImageNet scale swap the exhaustive search for
an approximate-nearest-neighbour index (see the README's audit section).

Rows are global image numbers (the audit's item table); each pair is reported once, (a < b).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

log = logging.getLogger(__name__)

# Elements of one similarity block (rows x n); 2^24 float32 = 64 MiB whatever the dataset size.
BLOCK_ELEMENTS = 1 << 24
# A group of identical files bigger than this is reported as a star around its first member,
# not all m(m-1)/2 pairs (a thousand copies of a placeholder image would be half a million rows).
MAX_EXACT_GROUP = 50
PAIR_COLUMNS = ["a", "b", "methods", "same_file", "phash_dist", "dhash_dist", "cosine"]


def _block_rows(n: int) -> int:
    return max(1, min(n, BLOCK_ELEMENTS // max(n, 1)))


def _top_k_per_row(r: np.ndarray, c: np.ndarray, score: np.ndarray, k: int, larger_better: bool):
    """Keep, for each row r, the k entries with the best score (ties: lower column first)."""
    order = np.lexsort((c, -score if larger_better else score, r))
    r, c, score = r[order], c[order], score[order]
    rank = np.arange(len(r)) - np.searchsorted(r, r, side="left")
    keep = rank < k
    return r[keep], c[keep], score[keep]


def exact_pairs(sha1: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of byte-identical files (same SHA-1); unreadable files (empty hash) are ignored."""
    s = pd.Series(sha1)
    s = s[s != ""]
    a_list, b_list = [], []
    for _, rows in s.groupby(s, sort=False).groups.items():
        rows = np.sort(np.asarray(rows))
        if len(rows) < 2:
            continue
        if len(rows) > MAX_EXACT_GROUP:
            a_list.append(np.full(len(rows) - 1, rows[0]))
            b_list.append(rows[1:])
        else:
            ia, ib = np.triu_indices(len(rows), k=1)
            a_list.append(rows[ia])
            b_list.append(rows[ib])
    if not a_list:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(a_list).astype(np.int64), np.concatenate(b_list).astype(np.int64)


def hamming(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between int64 hash codes (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(x.view(np.uint64), y.view(np.uint64))).astype(np.int16)


def hamming_pairs(codes: np.ndarray, rows: np.ndarray, max_dist: int, top_k: int):
    """(a, b, dist) of hash codes within `max_dist` bits, at most `top_k` neighbours per image.

    `codes` are the 64-bit hashes of the images numbered `rows` (decodable images only).
    """
    n = len(codes)
    out_r, out_c, out_d = [], [], []
    step = _block_rows(n)
    for s in range(0, n, step):
        d = hamming(codes[s:s + step, None], codes[None, :])
        d[np.arange(d.shape[0]), np.arange(s, s + d.shape[0])] = 99  # not its own neighbour
        r, c = np.nonzero(d <= max_dist)
        r, c, dist = _top_k_per_row(r + s, c, d[r, c], top_k, larger_better=False)
        out_r.append(r)
        out_c.append(c)
        out_d.append(dist)
    r, c, dist = (np.concatenate(v) if v else np.empty(0, np.int64) for v in (out_r, out_c, out_d))
    return rows[r], rows[c], dist


def normalise(x: Tensor) -> Tensor:
    """Unit-length rows. Not centred: on real photos, centring lowered the cosine of edited copies
    (resized, re-encoded, cropped, flipped) more than that of different photos (README audit section)."""
    return torch.nn.functional.normalize(x.float(), dim=1)


def cosine_pairs(emb: Tensor, rows: np.ndarray, split_id: np.ndarray, threshold: float, top_k: int):
    """Blocked cosine search over normalised embeddings `emb` (rows `rows`).

    Returns ((a, b, cos) for the top-k neighbours per image with cos >= threshold,
    (row, best cross-split row, cos) for every image that has another split to compare with).
    """
    n = emb.shape[0]
    sid = torch.as_tensor(split_id[rows])
    k = min(top_k, n - 1)
    out_r, out_c, out_s = [], [], []
    best_c, best_s = torch.full((n,), -1, dtype=torch.int64), torch.full((n,), float("nan"))
    step = _block_rows(n)
    with torch.inference_mode():
        for s in range(0, n, step):
            sim = emb[s:s + step] @ emb.T
            b = sim.shape[0]
            sim[torch.arange(b), torch.arange(s, s + b)] = -2.0  # not its own neighbour
            if k > 0:
                vals, idx = sim.topk(k, dim=1)
                r, j = torch.nonzero(vals >= threshold, as_tuple=True)
                out_r.append((r + s).numpy())
                out_c.append(idx[r, j].numpy())
                out_s.append(vals[r, j].numpy())
            cross = sim.masked_fill(sid[s:s + b, None] == sid[None, :], -2.0)
            v, c = cross.max(dim=1)
            ok = v > -2.0
            best_c[s:s + b] = torch.where(ok, c, -1)
            best_s[s:s + b] = torch.where(ok, v, float("nan"))
    r, c, sc = (np.concatenate(v) if v else np.empty(0) for v in (out_r, out_c, out_s))
    r, c = r.astype(np.int64), c.astype(np.int64)
    has = (best_c >= 0).numpy()
    best = (rows[np.nonzero(has)[0]], rows[best_c.numpy()[has]], best_s.numpy()[has])
    return (rows[r], rows[c], sc.astype(np.float32)), best


def merge_pairs(found: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """One row per unordered pair (a < b) with the '+'-joined methods that found it."""
    parts = []
    for method, (a, b) in found.items():
        if len(a):
            parts.append(pd.DataFrame({"a": np.minimum(a, b), "b": np.maximum(a, b), "method": method}))
    if not parts:
        return pd.DataFrame(columns=["a", "b", "methods"])
    df = pd.concat(parts, ignore_index=True).drop_duplicates()
    order = {m: i for i, m in enumerate(found)}
    return (df.groupby(["a", "b"], sort=True)["method"]
              .agg(lambda m: "+".join(sorted(set(m), key=order.get))).rename("methods").reset_index())


def score_pairs(pairs: pd.DataFrame, sha1: list[str], phash: np.ndarray, dhash: np.ndarray,
                decoded: np.ndarray, emb: Tensor | None, emb_pos: np.ndarray) -> pd.DataFrame:
    """Every score for every pair, whichever method found it (NaN where one side lacks it)."""
    a, b = pairs["a"].to_numpy(np.int64), pairs["b"].to_numpy(np.int64)
    sha = np.asarray(sha1, dtype=object)
    both = decoded[a] & decoded[b]
    out = pairs.copy()
    out["same_file"] = (sha[a] == sha[b]) & (sha[a] != "")
    out["phash_dist"] = np.where(both, hamming(phash[a], phash[b]), -1)
    out["dhash_dist"] = np.where(both, hamming(dhash[a], dhash[b]), -1)
    cos = np.full(len(a), np.nan, dtype=np.float32)
    if emb is not None and len(a):
        pa, pb = emb_pos[a], emb_pos[b]
        ok = (pa >= 0) & (pb >= 0)
        cos[ok] = (emb[pa[ok]] * emb[pb[ok]]).sum(1).numpy()
    out["cosine"] = np.round(cos, 4)
    return out[PAIR_COLUMNS]


def find_duplicates(items: pd.DataFrame, scan: pd.DataFrame, emb: Tensor | None, emb_rows: np.ndarray,
                    *, phash_max: int, dhash_max: int, cos_min: float, top_k: int):
    """All duplicate pairs (scored) and each image's closest other-split image by embedding.

    `items` holds split_id per row; `scan` the hashes; `emb` the raw embeddings of `emb_rows`.
    """
    n = len(items)
    decoded = (scan["error"] == "").to_numpy()
    rows = np.nonzero(decoded)[0]
    phash = scan["phash"].to_numpy(np.int64)
    dhash = scan["dhash"].to_numpy(np.int64)
    split_id = items["split_id"].to_numpy()
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {"exact": exact_pairs(scan["sha1"].tolist())}
    # pHash finds the candidates; dHash (a different, gradient-based code) must agree, which removes
    # the plain-background photos that pHash alone lumps together.
    a, b, _ = hamming_pairs(phash[rows], rows, phash_max, top_k)
    keep = hamming(dhash[a], dhash[b]) <= dhash_max
    found["phash"] = (a[keep], b[keep])
    emb_pos = np.full(n, -1, dtype=np.int64)
    best = (np.empty(0, np.int64),) * 2 + (np.empty(0, np.float32),)
    unit = None
    if emb is not None and len(emb_rows) > 1:
        unit = normalise(emb)
        emb_pos[emb_rows] = np.arange(len(emb_rows))
        (ca, cb, _), best = cosine_pairs(unit, emb_rows, split_id, cos_min, top_k)
        found["embedding"] = (ca, cb)
    pairs = score_pairs(merge_pairs(found), scan["sha1"].tolist(), phash, dhash, decoded, unit, emb_pos)
    closest = pd.DataFrame({"a": best[0], "b": best[1], "cosine": best[2]})
    return pairs, closest


def count_pairs(pairs: pd.DataFrame, items: pd.DataFrame, splits: list[str]) -> dict[str, Any]:
    """Pair counts per split pair ('train-train', 'train-val', ...) for each method and in total."""
    sid = items["split_id"].to_numpy()
    label = items["label"].to_numpy()
    names = [f"{splits[i]}-{splits[j]}" for i in range(len(splits)) for j in range(i, len(splits))]
    a, b = pairs["a"].to_numpy(np.int64), pairs["b"].to_numpy(np.int64)
    key = np.array([f"{splits[min(x, y)]}-{splits[max(x, y)]}" for x, y in zip(sid[a], sid[b])], dtype=object)
    methods = pairs["methods"].astype(str)

    def by_split(mask: np.ndarray) -> dict[str, int]:
        return {k: int(((key == k) & mask).sum()) for k in names}

    everything = np.ones(len(pairs), dtype=bool)
    cross = sid[a] != sid[b]
    per_method = {m: by_split(methods.str.contains(m, regex=False).to_numpy())
                  for m in ("exact", "phash", "embedding")}
    return {
        "pairs": by_split(everything),
        "by_method": per_method,
        "total_pairs": int(len(pairs)),
        "cross_split_pairs": int(cross.sum()),
        "cross_split_images": int(len(np.unique(np.concatenate([a[cross], b[cross]])))),
        "label_conflicts": int((label[a] != label[b]).sum()),
    }
