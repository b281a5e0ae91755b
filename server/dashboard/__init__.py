"""The live aggregation dashboard: a read-only web view of a run store (`fedrp dashboard`)."""
