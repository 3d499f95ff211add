"""Pictures of what an LSTM does: PNG heatmaps (matplotlib, Agg) and a self-contained HTML gate viewer.

Applications of :mod:`lstmkit.inspect`: they read a :class:`lstmkit.inspect.GateRecord` and the characters the
LSTM read, nothing else. The library (``lstmkit.LSTM``) knows nothing of plotting, and this package nothing of
the apps, checkpoints or text files (``lstmkit.apps.gate_viewer`` joins it to the character model).
"""

from .heatmaps import plot_gate_heatmaps, plot_saturation, plot_text_cells
from .page import page_data, render_page, write_page
from .report import SCORE_DEFINITION, Inspection, inspect_sequence

__all__ = [
    "SCORE_DEFINITION",
    "Inspection",
    "inspect_sequence",
    "page_data",
    "plot_gate_heatmaps",
    "plot_saturation",
    "plot_text_cells",
    "render_page",
    "write_page",
]
