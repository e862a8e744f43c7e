"""Summary statistics of repeated timings (pure functions of a list of seconds)."""

import numpy as np


def summarize(seconds):
    """Median, quartiles, IQR, min, max and mean of per-run seconds."""
    t = np.asarray(seconds, dtype=np.float64)
    if t.size == 0:
        raise ValueError("summarize needs at least one timing. Received an empty list.")
    q25, median, q75 = np.percentile(t, [25, 50, 75])
    return {"runs": int(t.size), "median": float(median), "q25": float(q25), "q75": float(q75),
            "iqr": float(q75 - q25), "min": float(t.min()), "max": float(t.max()),
            "mean": float(t.mean())}
