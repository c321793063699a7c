"""Statistics internals of the decision gate (the CLI is scripts/causal/statistical_analysis.py).

pairing (runs -> paired differences), paired_tests (t, Wilcoxon, CIs, pooled sigma), multiplicity (Holm, BH),
effect (the record bar in bpb), power (exact noncentral-t power and MDE), decision (confirmed / harmful / null /
inconclusive), prereg (the pre-registration, enforced), calibration (A/A and sanity arms), claims (the two
Parameter Golf claim lines), analysis (``analyze``: one screen), sequential (O'Brien-Fleming boundaries),
sequential_plan (the runner's sequential allocation), confirmation (fresh-seed confirmation, platform transfer).
"""
