"""Test kits shared by several test packages: data, reference models, checks."""
