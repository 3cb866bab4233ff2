"""Benchmark of exact networks (issue 20): prints numbers, asserts nothing.

    make bench-nn                                 # also makes .bench/torch-streamer
    .venv/bin/python bench/nn_bench.py --samples 1000000 --side 1024

1. Streaming.  A Conv1d network (64 -> 128 -> 128 channels, kernels 3 and
   5, ReLU) over --samples samples (default 10^7) fed in blocks of --block
   (4096) through infinite_tensor.stream.Sequential1dStream, against the
   network run once on the whole input (the time target: within 1.2x), and
   against torch-streamer 0.0.2's Sequential1dStream on the same blocks
   (run by this script under .bench/torch-streamer's python, which has
   torch-streamer installed without dependencies and reuses the project's
   torch).  Peak memory growth is measured for each (the target: the
   receptive field plus one block, not the input).
2. Windows over an infinite tensor.  infinite_tensor.nn.apply of a 5-layer
   Conv2d network (3 -> 16 -> 16 -> 16 -> 16 -> 3, 3x3, ReLU) read over a
   --side x --side region (default 4096), against the network run once on
   that region plus its halo (the time target: within 1.3x).

Torch uses its default threads (both sides alike).  Best of --repeat runs,
after one untimed run.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
import measure as m  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=10_000_000, help="samples streamed (default 10^7)")
    ap.add_argument("--block", type=int, default=4096, help="samples per block (4096)")
    ap.add_argument("--side", type=int, default=4096, help="side of the nn.apply region (4096)")
    ap.add_argument("--tile", type=int, default=512, help="nn.apply's tile (512)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs after one untimed (3)")
    ap.add_argument("--impl", choices=["ours", "torchstreamer"], default="ours", help=argparse.SUPPRESS)
    ap.add_argument("--streamer-python", default=os.environ.get("INFINITE_TENSOR_BENCH_TORCHSTREAMER"),
                    help="a python with torch-streamer (default: .bench/torch-streamer/bin/python if present)")
    return ap.parse_args(argv)


def conv1d_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(64, 128, 3), torch.nn.ReLU(), torch.nn.Conv1d(128, 128, 5)).eval()


def best(run, repeat):
    run()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def stream_measure(stream_cls, opts):
    """Seconds and peak memory growth streaming the network block by block
    (outputs summed so that nothing is kept), and a checksum."""
    net = conv1d_net()
    n, block = opts.samples, opts.block
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, n, generator=g)
    out = {}

    def run():
        s = stream_cls(net)
        total, count = torch.zeros((), dtype=torch.float64), 0
        with torch.no_grad():
            for i in range(0, n, block):
                y = s(x[:, i:i + block], final=i + block >= n)
                if y is not None:
                    total += y.double().sum()
                    count += y.shape[1]
        out["sum"], out["count"] = total.item(), count

    with m.PeakRSS() as peak:
        run()
    seconds = best(run, opts.repeat)
    return {"seconds": seconds, "peak": peak.growth, "sum": out["sum"], "count": out["count"]}


def whole_measure(opts):
    net = conv1d_net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, opts.samples, generator=g)
    out = {}

    def run():
        with torch.no_grad():
            y = net(x[None])[0]
        out["sum"], out["count"] = y.double().sum().item(), y.shape[1]

    with m.PeakRSS() as peak:
        run()
    seconds = best(run, opts.repeat)
    return {"seconds": seconds, "peak": peak.growth, "sum": out["sum"], "count": out["count"]}


def run_torchstreamer(opts):
    python = opts.streamer_python
    if not python:
        cand = os.path.join(ROOT, ".bench", "torch-streamer", "bin", "python")
        python = cand if os.path.exists(cand) else None
    if not python:
        return None
    cmd = [python, os.path.abspath(__file__), "--impl", "torchstreamer", "--samples", str(opts.samples),
           "--block", str(opts.block), "--repeat", str(opts.repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"torch-streamer run failed:\n{proc.stderr[-2000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def conv2d_net():
    torch.manual_seed(0)
    layers, c = [], 3
    for i, out in enumerate([16, 16, 16, 16, 3]):
        layers.append(torch.nn.Conv2d(c, out, 3, padding=1))
        if i < 4:
            layers.append(torch.nn.ReLU())
        c = out
    return torch.nn.Sequential(*layers).eval()


def apply_measure(opts):
    import infinite_tensor as it
    from infinite_tensor import nn as inn
    side, tile = opts.side, opts.tile
    net = conv2d_net()
    g = torch.Generator().manual_seed(2)
    pad = 64  # coordinate c is source[..., c + pad]: room for the halo on both sides
    source = torch.randn(3, side + 2 * pad, side + 2 * pad, generator=g)

    def f(ctx):  # windows of the prebuilt input: the input costs a copy, no compute
        _, wy, wx = ctx
        return source[:, pad + wy * 32:pad + (wy + 1) * 32, pad + wx * 32:pad + (wx + 1) * 32]
    x = it.InfiniteTensor((3, None, None), f, it.TensorWindow((3, 32, 32)))
    halo = 5  # five 3x3 layers
    region = (slice(None), slice(0, side), slice(0, side))  # whole tiles
    out = {}

    def ours():
        y = inn.apply(net, x, tile=tile)  # a fresh tensor (and cache) each run
        out["ours"] = y[region]

    def theirs():  # the region plus its halo, coordinates -halo .. side + halo
        with torch.no_grad():
            out["net"] = net(source[None, :, pad - halo:pad + side + halo, pad - halo:pad + side + halo])[0]

    t_ours = best(ours, opts.repeat)
    t_net = best(theirs, opts.repeat)
    exact = out["net"][:, halo:halo + side, halo:halo + side]  # where the net's own padding does not reach
    err = (out["ours"] - exact).abs().max().item()
    spec = inn.window_spec(net, 2, tile=tile)
    return {"ours": t_ours, "net": t_net, "err": err, "overhead": spec.overhead, "spec": repr(spec)}


def child_main(opts):
    import torchstreamer
    res = stream_measure(lambda net: torchstreamer.Sequential1dStream(net), opts)
    print(json.dumps(res))


def main():
    opts = parse_args()
    if opts.impl == "torchstreamer":
        return child_main(opts)
    import infinite_tensor as it
    from infinite_tensor import stream as its
    print(f"{m.source_version(it)}; {m.machine_facts()}")
    print(f"torch threads: {torch.get_num_threads()}; best of {opts.repeat} after one untimed run\n")

    print(f"## 1. Streaming a Conv1d network (64 -> 128 -> 128, k 3 and 5) over {opts.samples:,} samples in "
          f"blocks of {opts.block}")
    whole = whole_measure(opts)
    ours = stream_measure(lambda net: its.Sequential1dStream(net), opts)
    theirs = run_torchstreamer(opts)
    rows = [("the network once on the whole input", whole), ("infinite_tensor.stream", ours)]
    if theirs:
        rows.append(("torch-streamer 0.0.2", theirs))
    print("\n| run | seconds | vs whole input | peak memory growth | outputs | checksum |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['seconds']:.2f} | {r['seconds'] / whole['seconds']:.2f}x | "
              f"{m.fmt_bytes(r['peak']) if r['peak'] is not None else 'n/a'} | {r['count']:,} | {r['sum']:.6g} |")
    same = ours["count"] == whole["count"] and abs(ours["sum"] - whole["sum"]) <= 1e-6 * abs(whole["sum"]) + 1e-3
    verdict = "PASS" if ours["seconds"] <= 1.2 * whole["seconds"] else "MISS"
    print(f"\n  {verdict}  streaming {ours['seconds'] / whole['seconds']:.2f}x the whole-input run (target <= 1.2x); "
          f"same outputs: {same}")
    if theirs:
        print(f"  ours takes {ours['seconds'] / theirs['seconds']:.2f}x torch-streamer's time, "
              f"{m.fmt_bytes(ours['peak'])} against its {m.fmt_bytes(theirs['peak'])} of memory")

    print(f"\n## 2. nn.apply of a 5-layer Conv2d network (3 -> 16 x4 -> 3, 3x3) over {opts.side}x{opts.side}, "
          f"tile {opts.tile}")
    r = apply_measure(opts)
    ratio = r["ours"] / r["net"]
    print(f"\n{r['spec']} (halo overhead {r['overhead'] * 100:.1f}%)")
    print("| run | seconds |\n|---|---|")
    print(f"| the network once on the region plus its halo | {r['net']:.2f} |")
    print(f"| nn.apply, read cold | {r['ours']:.2f} |")
    verdict = "PASS" if ratio <= 1.3 else "MISS"
    print(f"\n  {verdict}  nn.apply {ratio:.2f}x the network's own time (target <= 1.3x); largest difference "
          f"{r['err']:.2g}")


if __name__ == "__main__":
    main()
