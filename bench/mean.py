"""Workload 14 (issue 15): blend="mean" against the sum blend.

A cold read of 2048x2048 from 64x64 float32 windows at stride 32 (each pixel
covered by four windows), f trivial; the framework time (the read's time
less a plain loop of the same f calls) of the weighted mean with linear
weights, against the sum's.  Target: at most 1.3x.
"""

import infinite_tensor as it
import measure as m

SIZE, WINDOW, STRIDE = 2048, 64, 32
WARMUP = 1
MEAN_TARGET = m.Target(1.3, "x the sum's framework time")


def w14_mean_blend(repeat):
    """Cold 2048x2048, 64x64 windows at stride 32: mean (linear) vs sum."""
    calls = m.Calls()
    f = m.trivial_f((WINDOW, WINDOW), calls)

    window = it.TensorWindow((WINDOW, WINDOW), stride=(STRIDE, STRIDE))

    def cold(**kwargs):
        def run():
            calls.reset()
            t = it.InfiniteTensor((None, None), f, window, **kwargs)
            return m.stopwatch(lambda: t[0:SIZE, 0:SIZE])
        return run

    rows, times = [], {}
    for name, kwargs in (("sum", {}), ("mean, linear weights", dict(blend="mean", weight="linear"))):
        with m.PeakRSS() as rss:
            times[name] = m.median(m.timed_runs(cold(**kwargs), repeat, WARMUP))
        rows.append((name, rss, m.take_usage()))
    n = calls.n
    ctxs = list(window.intersecting_windows((slice(0, SIZE), slice(0, SIZE))))
    f_floor = m.call_floor(f, ctxs, repeat)
    frame = {k: v - f_floor for k, v in times.items()}
    ratio = frame["mean, linear weights"] / frame["sum"]
    out_rows = []
    for name, rss, usage in rows:
        is_mean = name != "sum"
        out_rows.append(m.Row(f"cold {SIZE}x{SIZE}, {WINDOW}x{WINDOW} windows stride {STRIDE}: {name}",
                              time=times[name], floor=f_floor, runs=repeat, warmup=WARMUP, rss=rss, usage=usage,
                              value=ratio if is_mean else None, target=MEAN_TARGET if is_mean else None,
                              text=None if is_mean else f"{frame[name] / n * 1e6:.2f} us/window beyond f",
                              note=(f"{n:,} windows; beyond f: sum {m.fmt_seconds(frame['sum'])}, mean "
                                    f"{m.fmt_seconds(frame[name])}") if is_mean else None))
    return out_rows
