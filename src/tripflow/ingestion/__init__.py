"""tripflow.ingestion"""
