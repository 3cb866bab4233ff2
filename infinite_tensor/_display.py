"""How tensors and stores show themselves: one line for repr(), a small
table for Jupyter (_repr_html_), built from the same (name, value) rows."""
import html

import torch


def size_text(n):
    """'1.5 MiB' for a byte count."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def callable_name(fn):
    """torch.maximum -> 'torch.maximum'; a lambda -> '<lambda>'."""
    if fn is None:
        return "sum"
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    if fn in (torch.maximum, torch.minimum, torch.max, torch.min, torch.add):
        return f"torch.{fn.__name__}"
    return f"{module}.{name}" if module and module not in ("__main__", "builtins") else name


def html_table(title, rows):
    """A two-column table with a caption, every value escaped."""
    cells = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
        f"<td style='text-align:left'><code>{html.escape(str(v))}</code></td></tr>"
        for k, v in rows)
    return (f"<table><caption style='text-align:left'><b>{html.escape(title)}</b></caption>"
            f"{cells}</table>")
