"""tripflow.db"""
