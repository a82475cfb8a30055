"""What the pipeline tells its operators: Prometheus metrics (`metrics`), alerts posted to a
webhook (`alerts`)."""
