"""Fault tests: kills, database outages, duplicate storms and hostile input.

They run in a bounded form in the normal suite; `FAULTS_FULL=1` runs the full
form (more kill cycles, a longer outage, more generated documents).
"""
