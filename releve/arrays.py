"""The numpy array types every package annotates with, defined once.

``FloatArray`` (float64), ``IntArray`` (int64) and ``BoolArray`` are what the simulators' blocks
and the theft signals pass around (meters × days, meters × intervals, …); the shape is said where
the array is, the element type here. Not called ``typing`` or ``types``: a module of the standard
library's name in ``releve/`` would shadow it for ``python releve/cli.py``.
"""

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
