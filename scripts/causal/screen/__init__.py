"""Screen internals: intervention registry, executors, trainer adapter, ledger."""
