"""lstmkit's forecaster, the public entry point: ``from lstmkit.forecast import Forecaster``.

Frames in Nixtla's long format (``unique_id, ds, y``) in and out; see docs/forecast.md. Importing this module
imports pandas; ``import lstmkit`` does not.
"""

from .apps.forecast import ForecastConfig, mase, smape
from .apps.forecast.api import Forecaster

__all__ = ["ForecastConfig", "Forecaster", "mase", "smape"]
