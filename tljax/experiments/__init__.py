"""The experiments wing: many runs -> one comparison. sweep.py (schedules x seeds x grid),
suite.py (VTAB-1k / FGVC with their two-stage protocol: suites.py, fgvc.py, published.py),
search.py (a budgeted search); each with its report; tables.py holds the statistics, tables
and figures they share."""
