"""Statistics internals: power/MDE, group-sequential design, fresh-seed confirmation."""
