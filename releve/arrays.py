"""The numpy array types every package annotates with, defined once, and sums in the server's order.

``FloatArray`` (float64), ``IntArray`` (int64) and ``BoolArray`` are what the simulators' blocks
and the theft signals pass around (meters × days, meters × intervals, …); the shape is said where
the array is, the element type here. Not called ``typing`` or ``types``: a module of the standard
library's name in ``releve/`` would shadow it for ``python releve/cli.py``.

:func:`sum_in_order` adds values one after the other, as PostgreSQL's ``+`` chain or ``sum()``
over ordered float8 does, so a total kept by the database and one made here agree to the bit.
"""

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]


def sum_in_order(values: FloatArray) -> FloatArray:
    """The sum over the last axis, added one value after the other (NaN where any value is NaN).

    numpy's own ``sum`` adds in pairs and can differ in the last bit from a total the database
    keeps (migration 0033's day totals: ``h0 + h1 + … + h23`` in SQL).
    """
    out = np.array(values[..., 0], dtype=np.float64)
    for k in range(1, values.shape[-1]):
        out += values[..., k]
    return out
