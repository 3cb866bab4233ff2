"""Record torch-streamer 0.0.2's and torchaudio's outputs on stream_cases.py into goldens.pt.

Run with an interpreter that has torch-streamer and torchaudio (not the
project's venv), from this folder:

    /tmp/tsvenv/bin/python record_goldens.py
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stream_cases as cases  # noqa: E402
import torchaudio.functional as taf  # noqa: E402
import torchstreamer as ts  # noqa: E402
import torchstreamer.audio as tsa  # noqa: E402

out = {"torch": torch.__version__, "nets": {}, "resample": []}
torch.set_grad_enabled(False)
for name in cases.NETS:
    net, x, blocks = cases.build(name, ts.Residual1d)
    for b in blocks:
        try:
            y = cases.stream_blocks(ts.create_stream(net), x, b)
        except Exception as e:  # record a crash as its class name
            y = type(e).__name__
        out["nets"][(name, b)] = y
for i, (src, dst, method, width, rolloff, beta, _) in enumerate(cases.RESAMPLE):
    x = cases.resample_input(i)
    ref = taf.resample(x, src, dst, lowpass_filter_width=width, rolloff=rolloff, resampling_method=method,
                       beta=beta)
    streamed = cases.stream_blocks(tsa.ResampleStream(src, dst, method, width, rolloff, beta), x, 7)
    out["resample"].append((ref, streamed))
torch.save(out, os.path.join(os.path.dirname(os.path.abspath(__file__)), "goldens.pt"))
print("recorded", len(out["nets"]), "stream cases and", len(out["resample"]), "resample cases")
