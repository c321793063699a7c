"""The verified evidence table: what the leaderboard measured, read by a person (evidence/README.md).

``table`` loads and validates ``evidence/verified/<record_id>.json``; ``expresses`` decides whether a registry
intervention makes exactly an entry's change (knob, direction, size). The miner's accuracy, the transfer
calibration and the ranking read single-change entries from here.
"""
