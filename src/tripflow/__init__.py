"""tripflow: analytics pipeline for TripClick clinical-search click logs."""

__version__ = "0.1.0"
