"""ipywidgets for the notebook: consortium status, live query progress and a cohort explorer.

One family per module; each is a widget whose state is declared as validated traitlets, so its
logic runs (and is tested) in plain Python without a browser.
"""

from .explorer import CohortExplorer
from .progress import QueryProgress
from .querytext import MEASURES, CohortQuery
from .status import ConsortiumStatus
from .timing import Clock, ThreadClock

__all__ = ["MEASURES", "Clock", "CohortExplorer", "CohortQuery", "ConsortiumStatus", "QueryProgress", "ThreadClock"]
