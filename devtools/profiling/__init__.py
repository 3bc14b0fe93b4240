"""Tools that count where the time goes, kept apart from the benchmark (bench/)."""
