"""HTTP serving of an exported scalar RM or rubric judge (`omni-rrm serve`)."""
