"""The benchmark harness behind ``make bench``: measure (child processes), cases, report."""
