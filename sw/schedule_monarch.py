"""Former home of the Monarch scheduler, now :mod:`sparsecim.sw.schedule.monarch`.

Kept so that imports written before the move (``sparsecim.sw.schedule_monarch``) still work
until every branch imports the package.
"""

from .schedule.monarch import (  # noqa: F401
    MAPPINGS,
    MonarchCost,
    MonarchSchedule,
    __all__,
    monarch_cost,
    monarch_reference,
    schedule_monarch,
)
