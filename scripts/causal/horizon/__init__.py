"""Effects along the training horizon: paired Δ per horizon from branched-cooldown runs (``curves``), the
horizon-unstable flag (``curves.stability``), predictors of the H100 sign from a curve chosen by leave-one-
intervention-out agreement (``predict``), and their rendering (``render``)."""
