# Type stub for the C extension infinite_tensor._core (csrc/python), so that
# type checkers resolve the module; its functions and classes are untyped.
from typing import Any

def __getattr__(name: str) -> Any: ...
