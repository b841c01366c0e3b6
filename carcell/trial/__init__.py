"""Virtual-trial analysis: endpoints, arm summaries and comparisons (docs/trial-outputs.md)."""
