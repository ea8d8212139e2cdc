"""Search algorithms over `SearchContext`, step-score aggregation and answer selection."""
