"""The array types of annotations, defined once (numpy.typing)."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

Array: TypeAlias = NDArray[Any]
"""Any dtype (character ids, or floats of either width)."""
FloatArray: TypeAlias = NDArray[np.floating[Any]]
"""Parameters, gradients, activations and states: float64, or float32 when the config says so."""
Float64Array: TypeAlias = NDArray[np.float64]
"""The per-timestep oracle's arrays (NumPy's default float)."""
