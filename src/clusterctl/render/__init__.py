"""Terminal output with rich, and nothing else: tables, progress, summaries."""
